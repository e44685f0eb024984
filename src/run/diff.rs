//! Phases 4–5 of a host: the plan, diffed from what the host answered (pure), checked against
//! the disk space and a saved plan; then the current contents of changed files, to show diffs.
//! Also why a probe answer is stale by the time its step runs ([`stale_after`]).

use super::HostOutcome;
use super::failure::{HostFailure, NoSpace, StepFailure};
use super::host::{HostRun, Known, Probed};
use super::mask::Mask;
use crate::fact::{Observed, ProbeScript};
use crate::plan::{Change, HostPlan, StepPlan};
use crate::playbook::Step;
use crate::remote::{Remote, RemoteError};
use crate::resource::Desired;
use std::time::Duration;

impl HostRun<'_> {
    /// 4. Diff (pure).
    // The phases share `HostFailure` (large: a `RemoteError`, a `StepError` inside); only a
    // failure builds one.
    #[allow(clippy::result_large_err)]
    pub(super) fn diff(
        &self,
        o: &mut HostOutcome,
        probed: &Probed,
        known: &Known,
    ) -> Result<HostPlan, HostFailure> {
        let (ctx, p) = (self.ctx, self.p);
        let mut plan = HostPlan {
            pending_handlers: (probed.first.journal.iter())
                .filter(|_| !p.playbook.task)
                .filter(|j| known.rendered.handlers.iter().any(|(h, _, _)| h == *j))
                .cloned()
                .collect(),
            ..HostPlan::default()
        };
        for (i, s) in p.steps.iter().enumerate() {
            let change = match (&known.desired[i], &known.observed[i]) {
                (Some(_), _) if s.step.rescue => {
                    Change::skip(String::new(), "rescue: runs only if a step before it fails")
                }
                (Some(d), Some(obs)) => self.diff_step(i, d, obs, &plan, known)?,
                _ => Change::skip(String::new(), known.skip[i].clone()),
            };
            // A housekeeping change (what the step manages is as wanted) notifies nobody.
            let notify = if change.housekeeping {
                vec![]
            } else {
                s.step.notify.clone()
            };
            plan.steps.push(StepPlan {
                name: s.step.name.clone(),
                kind: s.step.kind.to_string(),
                change,
                makes_watchers_stale: s.step.kind.makes_watchers_stale(),
                notify,
                output: None,
                not_here: known.desired[i].is_none()
                    && s.step.not_selected.is_none()
                    && s.step.when.is_some(),
            });
        }
        check_space(&probed.probe, &probed.first.preflight, &plan)
            .map_err(|e| HostFailure::new("preflight", e))?;
        if let Some(key) = &ctx.opts.fingerprint {
            plan.probed = Some(crate::saved_plan::probed(
                key,
                &probed.facts,
                &known.observed,
                &known.received,
            ));
        }
        if let Some(saved) = &ctx.opts.saved
            && let Err(why) = saved.check_host(self.name, &plan)
        {
            o.probe_time = probed.started.elapsed();
            o.plan = Some(plan);
            return Err(HostFailure::new("drift", why));
        }
        Ok(plan)
    }

    /// The change of step `i` (desired `d`, the host's answers `obs`) after the steps of
    /// `plan` before it, as shown.
    // The phases share `HostFailure` (large: a `RemoteError`, a `StepError` inside); only a
    // failure builds one.
    #[allow(clippy::result_large_err)]
    fn diff_step(
        &self,
        i: usize,
        d: &Desired,
        obs: &[Observed],
        plan: &HostPlan,
        known: &Known,
    ) -> Result<Change, HostFailure> {
        let (s, mask) = (&self.p.steps[i], &known.mask);
        let diffed = d.diff(&obs.iter().collect::<Vec<_>>());
        // An earlier change makes the answer stale: whatever it says now (even an
        // error, e.g. a file an earlier step creates), the step is probed again.
        // A value generated on another host in this run flows into it: known after that apply.
        let stale = (known.awaits[i].clone()).or_else(|| stale_after(d, &s.step, plan));
        let mut c = match (stale, diffed) {
            (Some(why), Ok(c)) => Change::deferred(c.target, why),
            (Some(why), Err(_)) => Change::deferred(d.paths().join(", "), why),
            (None, diffed) => {
                let mut c = diffed.map_err(|e| HostFailure::new(&s.step.name, e))?;
                // The leftovers of interrupted uploads in a directory are removed by
                // the first step that changes something there for them: a later step
                // with nothing else to do is up to date.
                if c.housekeeping
                    && c.tidies.iter().all(|d| {
                        (plan.steps.iter())
                            .filter(|x| x.change.action.changes())
                            .any(|x| x.change.tidies.contains(d))
                    })
                {
                    let warnings = std::mem::take(&mut c.warnings);
                    c = Change::noop(
                        c.target,
                        "up to date (an earlier step removes the leftovers of an interrupted upload here)",
                    );
                    c.warnings = warnings;
                }
                if c.action == crate::plan::Action::Deferred
                    && !plan.steps.iter().any(|x| x.change.action.changes())
                {
                    let unselected =
                        (self.p.steps[..i].iter()).any(|x| x.step.not_selected.is_some());
                    return Err(HostFailure::new(
                        &s.step.name,
                        StepFailure::NeverKnown {
                            reason: mask.text(&c.reason),
                            unselected,
                        },
                    ));
                }
                c
            }
        };
        mask.content(&mut c, s.names_secrets, &known.rendered.tainted[i]);
        Ok(c)
    }

    /// 5. Current contents of changed files, only to show diffs (one more round trip).
    pub(super) async fn fetch_diffs(
        &self,
        plan: &mut HostPlan,
        mask: &Mask,
    ) -> Result<(), HostFailure> {
        if self.ctx.opts.fetch_diffs {
            fetch_old_contents(self.remote, plan, self.default_timeout, mask)
                .await
                .map_err(|e| HostFailure::new("diff", mask.error(e)))?;
        }
        Ok(())
    }
}

/// Why a step's probe answer will be stale by the time it runs: an earlier step of the plan
/// changes a file it watches, ships an image (what `compose` runs), or removes or replaces a
/// directory (or a link) above a path it manages.
pub(super) fn stale_after(d: &Desired, step: &Step, plan: &HostPlan) -> Option<String> {
    if let Some(s) = plan
        .steps
        .iter()
        .find(|s| s.change.action.changes() && step.recheck_after.contains(&s.name))
    {
        return Some(format!("step `{}` changes something first", s.name));
    }
    let paths = d.paths();
    if let Some((s, c)) = plan.steps.iter().find_map(|s| {
        let c = s
            .change
            .clears
            .as_deref()
            .filter(|_| s.change.action.changes())?;
        let below = |p: &str| p.strip_prefix(c).is_some_and(|r| r.starts_with('/')) || c == "/";
        paths.iter().any(|p| below(p)).then_some((s, c))
    }) {
        return Some(format!("step `{}` removes or replaces {c} first", s.name));
    }
    let watched = d.watches();
    if watched.is_empty() {
        return None;
    }
    plan.steps
        .iter()
        .filter(|s| s.change.action.changes())
        .find_map(|s| {
            if s.makes_watchers_stale {
                return Some(format!("step `{}` ships an image first", s.name));
            }
            let path = s.change.content.as_ref().map(|c| c.path.as_str())?;
            watched
                .iter()
                .any(|w| w == path)
                .then(|| format!("step `{}` changes {path} first", s.name))
        })
}

/// Refuses uploads that do not fit on the target's file systems.
fn check_space(
    probe: &ProbeScript,
    pre: &crate::fact::preflight::Preflight,
    plan: &HostPlan,
) -> Result<(), NoSpace> {
    let dirs = probe.upload_dirs();
    let mut need = vec![0u64; dirs.len()];
    for s in &plan.steps {
        if let Some(d) = &s.change.upload_dir
            && let Some(i) = dirs.iter().position(|x| x == d)
        {
            need[i] += s.change.upload_bytes;
        }
    }
    for (i, d) in dirs.iter().enumerate() {
        let free = pre.free_kb.get(i).copied().unwrap_or(u64::MAX / 1024) * 1024;
        // Keep a margin: the temp file and the old file exist side by side for a moment.
        if need[i] > 0 && need[i] + 1024 * 1024 > free {
            return Err(NoSpace {
                dir: d.clone(),
                need_kib: need[i] / 1024 + 1024,
                free_kib: free / 1024,
            });
        }
    }
    Ok(())
}

/// Largest file whose current content is fetched to show a diff.
const MAX_DIFF_BYTES: u64 = 512 * 1024;

/// Whether content read back for a diff is the file the probe hashed. Between the probe and
/// this read another account owning the directory may have swapped the file (for a link to a
/// file only root may read, say): what does not match the probed sha256 is never shown.
fn old_content_is_the_probed_one(c: &crate::plan::ContentChange, body: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    c.old_sha256
        .as_deref()
        .is_some_and(|h| h.eq_ignore_ascii_case(&hex::encode(Sha256::digest(body))))
}

async fn fetch_old_contents(
    remote: &Remote,
    plan: &mut HostPlan,
    timeout: Duration,
    mask: &Mask,
) -> Result<(), RemoteError> {
    let mut script = String::new();
    let mut wanted = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        // A sensitive file only when it is an env file: its keys are compared, never shown.
        if let Some(c) = &s.change.content
            && c.old_sha256.is_some()
            && (!c.sensitive || crate::plan::env_lines(&c.new).is_some())
            && s.change.action == crate::plan::Action::Update
        {
            script.push_str(&format!(
                "[ -f {p} ] && [ ! -L {p} ] && s=$(wc -c < {p}) && [ \"$s\" -le {MAX_DIFF_BYTES} ] && {{ printf '@%s\\t%s\\n' {i} \"$s\"; cat -- {p}; }}\n",
                p = crate::quote::quote(&c.path)
            ));
            wanted.push(i);
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    script.push_str("exit 0\n");
    // Bounded by what was asked: each file's header and at most MAX_DIFF_BYTES.
    let max = wanted.len() * (MAX_DIFF_BYTES as usize + 64) + 4096;
    let limits = crate::ssh::Limits {
        stdout: crate::ssh::Keep::Whole { max },
        ..crate::ssh::Limits::PROBE
    };
    let out = remote.run_with(&script, &[], limits, timeout).await?;
    let mut data: &[u8] = &out.stdout;
    while let Some(nl) = data.iter().position(|b| *b == b'\n') {
        let header = String::from_utf8_lossy(&data[..nl]).to_string();
        let Some((i, n)) = header.strip_prefix('@').and_then(|h| h.split_once('\t')) else {
            break;
        };
        let (Ok(i), Ok(n)) = (i.parse::<usize>(), n.trim().parse::<usize>()) else {
            break;
        };
        let body = &data[nl + 1..];
        if body.len() < n || i >= plan.steps.len() {
            break;
        }
        if let Some(c) = plan.steps[i].change.content.as_mut()
            && old_content_is_the_probed_one(c, &body[..n])
        {
            if c.sensitive {
                c.keys = crate::plan::env_keys(Some(&body[..n]), &c.new);
            } else {
                c.old = Some(body[..n].to_vec());
                mask.old_content(c);
            }
        }
        data = &body[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{file_change, pb_step, step};
    use super::*;
    use crate::plan::ContentChange;
    use crate::resource::{self, Sources};
    use serde_json::Map;
    use std::sync::Arc;

    #[test]
    fn old_content_is_shown_only_when_it_is_the_probed_file() {
        use sha2::{Digest, Sha256};
        let mut c = ContentChange {
            path: "/srv/app/conf".into(),
            old_sha256: Some(hex::encode(Sha256::digest(b"old\n"))),
            new: Arc::new(b"new\n".to_vec()),
            sensitive: false,
            old: None,
            keys: None,
        };
        assert!(old_content_is_the_probed_one(&c, b"old\n"));
        // Swapped after the probe (a link to another file, say): not the file the probe hashed.
        assert!(!old_content_is_the_probed_one(
            &c,
            b"root:$6$...:19000::::::\n"
        ));
        c.old_sha256 = None;
        assert!(!old_content_is_the_probed_one(&c, b"old\n"));
    }

    #[test]
    fn compose_is_probed_again_after_its_files_or_images_change() {
        let t = toml::from_str::<toml::Table>(
            "project = \"p\"\nfile = \"/opt/p/compose.yml\"\nenv_file = \"/opt/p/.env\"\n",
        )
        .unwrap();
        let d = resource::desired(
            &"compose".parse().unwrap(),
            &t,
            &Map::new(),
            &Sources {
                files_dir: std::path::Path::new("."),
                templates_dir: std::path::Path::new("."),
                images: &Default::default(),
                templates: &crate::template::Renderer::new(&Default::default()),
            },
        )
        .unwrap();
        let plan = |steps: Vec<StepPlan>| HostPlan {
            steps,
            ..HostPlan::default()
        };
        // (earlier steps, expected reason)
        let cases = [
            (
                vec![step("template", file_change("/opt/p/compose.yml"))],
                Some("changes /opt/p/compose.yml"),
            ),
            (
                vec![step("template", file_change("/opt/p/.env"))],
                Some("changes /opt/p/.env"),
            ),
            (
                vec![step("template", file_change("/opt/p/nginx.conf"))],
                None,
            ),
            (
                vec![step(
                    "template",
                    Change::noop("/opt/p/compose.yml", "up to date"),
                )],
                None,
            ),
            (
                vec![step(
                    "image",
                    Change::new(crate::plan::Action::Create, "img", "", "x".into()),
                )],
                Some("ships an image first"),
            ),
            (vec![], None),
        ];
        for (steps, want) in cases {
            let got = stale_after(&d, &pb_step(&[]), &plan(steps));
            match want {
                Some(w) => assert!(got.as_deref().is_some_and(|g| g.contains(w)), "{got:?}"),
                None => assert_eq!(got, None),
            }
        }
        // Other kinds watch nothing.
        let dir = toml::from_str::<toml::Table>("path = \"/opt/p\"\n").unwrap();
        let dd = resource::desired(
            &"dir".parse().unwrap(),
            &dir,
            &Map::new(),
            &Sources {
                files_dir: std::path::Path::new("."),
                templates_dir: std::path::Path::new("."),
                images: &Default::default(),
                templates: &crate::template::Renderer::new(&Default::default()),
            },
        )
        .unwrap();
        assert!(dd.watches().is_empty());
        // `recheck_after`: stale when a named step changes something, whatever the kind.
        let build = |c: Change| {
            let mut s = step("command", c);
            s.name = "build".into();
            s
        };
        let run = Change::new(crate::plan::Action::Run, "make", "", "make".into());
        let got = stale_after(&dd, &pb_step(&["build"]), &plan(vec![build(run.clone())]));
        assert_eq!(got.as_deref(), Some("step `build` changes something first"));
        assert_eq!(
            stale_after(
                &dd,
                &pb_step(&["build"]),
                &plan(vec![build(Change::noop("make", ""))])
            ),
            None
        );
        assert_eq!(
            stale_after(&dd, &pb_step(&["other"]), &plan(vec![build(run)])),
            None
        );
    }

    /// A path below a directory (or link) an earlier step removes or replaces was probed
    /// before that: it is probed again when reached (a link's target had answered for it).
    #[test]
    fn paths_below_a_replaced_directory_are_probed_again() {
        let cache = crate::template::Cache::default();
        let src = Sources {
            files_dir: std::path::Path::new("."),
            templates_dir: std::path::Path::new("."),
            images: &Default::default(),
            templates: &crate::template::Renderer::new(&cache),
        };
        let desired = |kind: &str, t: &str| {
            let kind = kind.parse().unwrap();
            resource::desired(&kind, &toml::from_str(t).unwrap(), &Map::new(), &src).unwrap()
        };
        let parent = desired("dir", "path = \"/srv/a\"\nforce = true\n");
        let child = desired("file", "path = \"/srv/a/f\"\ncontent = \"x\"\n");
        let sibling = desired("file", "path = \"/srv/ab\"\ncontent = \"x\"\n");
        let plan = |c: Change| HostPlan {
            steps: vec![step("dir", c)],
            ..HostPlan::default()
        };
        let replaced = match &parent {
            Desired::Dir(d) => d.diff(&crate::fact::PathState::Link).unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(replaced.clears.as_deref(), Some("/srv/a"));
        let got = stale_after(&child, &pb_step(&[]), &plan(replaced.clone()));
        assert_eq!(
            got.as_deref(),
            Some("step `a dir` removes or replaces /srv/a first")
        );
        assert_eq!(stale_after(&sibling, &pb_step(&[]), &plan(replaced)), None);
        assert_eq!(
            stale_after(&child, &pb_step(&[]), &plan(Change::noop("/srv/a", "ok"))),
            None
        );
    }
}
