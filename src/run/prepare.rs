//! Offline preparation: every step of every host rendered with stand-in facts and secrets and
//! checked before any connection ([`prepare`]), and the render of a host's steps and handlers
//! with its real facts and secrets once the probe brought them ([`render`]).

use super::mask::Mask;
use crate::error::{ConfigError, ConfigErrors};
use crate::inventory::{Host, Inventory};
use crate::playbook::{Playbook, Step};
use crate::resource::{self, Desired, Sources, StepError, command};
use crate::secret::Secret;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// One step of one host, ready to probe.
#[derive(Debug, Clone)]
pub struct PreparedStep {
    /// The step as written (rendered again with the host's facts and secrets after the probe).
    pub step: Step,
    /// Rendered offline with stand-in facts and secrets: what the first probe asks about.
    /// None when `when` is false with the stand-ins.
    pub probe_desired: Option<Desired>,
    /// Neither the step (arguments, `when`) nor its template names `facts` or `secrets`: the
    /// render with the host's real facts and secrets would be the same as `probe_desired`, so
    /// it is reused instead of rendered again.
    pub context_free: bool,
    /// The step (arguments, `when`) or its template names `secrets`: a file it writes is
    /// sensitive (never diffed in clear), whatever form the secret takes in it.
    pub names_secrets: bool,
}

/// Whether a step's text can bring a secret value into its script: it names `secrets` (or
/// Tera's whole-context variable). Such scripts are never shown (`-vv`), masked or not: a
/// filter (`shell_quote`, `upper`, ...) can change a value past recognition.
pub(super) fn uses_secrets(step: &Step) -> bool {
    fn mentions(s: &str) -> bool {
        s.contains("secrets") || s.contains("__tera_context")
    }
    fn any(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => mentions(s),
            toml::Value::Array(a) => a.iter().any(any),
            toml::Value::Table(t) => t.iter().any(|(k, v)| mentions(k) || any(v)),
            _ => false,
        }
    }
    step.when.as_deref().is_some_and(mentions) || step.args.values().any(any)
}

/// Whether a step or its template names `secrets` (see [`PreparedStep::names_secrets`]).
/// Conservative: a template whose name is itself templated, or cannot be read, counts.
fn names_secrets(step: &Step, templates_dir: &std::path::Path) -> bool {
    if uses_secrets(step) {
        return true;
    }
    if step.kind.renders_template_file() {
        let Some(src) = step.args.get("src").and_then(|v| v.as_str()) else {
            return true;
        };
        if src.contains("{{") || src.contains("{%") {
            return true;
        }
        return std::fs::read_to_string(templates_dir.join(src)).map_or(true, |t| {
            tera_code(&t).any(|c| c.contains("secrets") || c.contains("__tera_context"))
        });
    }
    false
}

/// The code of a template's `{{ }}` and `{% %}` blocks (not its text or `{# #}` comments).
fn tera_code(t: &str) -> impl Iterator<Item = &str> {
    let mut rest = t;
    std::iter::from_fn(move || {
        loop {
            let i = rest.find('{')?;
            let close = match rest.as_bytes().get(i + 1) {
                Some(b'{') => "}}",
                Some(b'%') => "%}",
                _ => {
                    rest = &rest[i + 1..];
                    continue;
                }
            };
            let body = &rest[i + 2..];
            let end = body.find(close).unwrap_or(body.len());
            rest = &body[(end + close.len()).min(body.len())..];
            return Some(&body[..end]);
        }
    })
}

/// Whether a step's rendering can depend on the facts or secrets (see
/// [`PreparedStep::context_free`]). Conservative: any mention of either name counts.
fn context_free(step: &Step, templates_dir: &std::path::Path) -> bool {
    fn mentions(s: &str) -> bool {
        s.contains("facts") || s.contains("secrets")
    }
    fn strings_free(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => !mentions(s),
            toml::Value::Array(a) => a.iter().all(strings_free),
            toml::Value::Table(t) => t.iter().all(|(k, v)| !mentions(k) && strings_free(v)),
            _ => true,
        }
    }
    if step.when.as_deref().is_some_and(mentions)
        || !strings_free(&toml::Value::Table(step.args.clone()))
    {
        return false;
    }
    if step.kind.renders_template_file() {
        let Some(src) = step.args.get("src").and_then(|v| v.as_str()) else {
            return false;
        };
        if src.contains("{{") || src.contains("{%") {
            return false;
        }
        return std::fs::read_to_string(templates_dir.join(src)).is_ok_and(|t| !mentions(&t));
    }
    true
}

/// What every host of a run shares from the playbook.
#[derive(Debug)]
pub struct PlaybookInfo {
    pub path: std::path::PathBuf,
    pub name: String,
    pub files_dir: std::path::PathBuf,
    pub templates_dir: std::path::PathBuf,
    pub handlers: Vec<Step>,
    pub operator_secrets: Vec<(String, Secret)>,
    /// Names of the `secret` steps' secrets (for the stand-ins).
    pub secret_names: Vec<String>,
    /// A task runs (`--task`): handlers left pending by an earlier apply wait for the next
    /// plain apply (an operation such as `status` must not restart a daemon).
    pub task: bool,
    /// `[rollout]` (apply only).
    pub rollout: crate::rollout::Rollout,
    /// The `inventory` variable, the same for every host.
    pub inventory: Value,
    /// The local images read for `image` steps: once per reference per run (prepare and every
    /// host's render after its probe share it).
    pub images: crate::resource::image::LocalImages,
    /// The run's parsed templates and memoised renders (shared as `images` is).
    pub templates: crate::template::Cache,
    /// The values that cross hosts (`secret` steps with a `source`).
    pub links: super::cross::Links,
}

/// A host with its steps checked and ready to probe.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub host: Host,
    pub steps: Vec<PreparedStep>,
    /// The host's variables and `host` (without `inventory`, shared in [`PlaybookInfo`], and
    /// without `facts` and `secrets`).
    pub base: Map<String, Value>,
    pub playbook: Arc<PlaybookInfo>,
}

/// A handler as rendered for a host: its name, its timeout, its command.
pub(super) type Handler = (String, Option<Duration>, command::Desired);

/// Why a step of a render has no desired state; displayed as the reason its plan shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum NotRun {
    /// Left out by the operator's selection (`--tags`, `--skip-tags`, `--step`): why
    /// (`Step::not_selected`).
    #[error("{0}")]
    NotSelected(String),
    /// Its `when` expression (as written) is false on this host.
    #[error("when: {0}")]
    When(String),
    /// It does not render: its error goes with the render's errors.
    #[error("")]
    Failed,
}

/// The steps and handlers of a host rendered with one context.
pub(super) struct Rendered {
    /// Per step: the desired state, or why it does not run.
    pub(super) steps: Vec<Result<Desired, NotRun>>,
    pub(super) handlers: Vec<Handler>,
    /// Per step: the texts of its rendering a secret flowed into (see `Renderer::track`).
    pub(super) tainted: Vec<Vec<crate::template::Tainted>>,
    /// The handlers a secret flowed into.
    pub(super) tainted_handlers: Vec<String>,
    /// Every text rendered from a secret, with its display rendering.
    pub(super) found: Vec<crate::template::Tainted>,
}

/// Renders a host's steps and handlers with `ctx`; errors come per step (name, message).
/// `reuse`: the render after the probe, which reuses what cannot have changed, skips the
/// steps not selected (the offline check before it renders every step) and tracks which
/// renderings a secret flowed into (the offline one has stand-ins only).
pub(super) fn render(
    steps: &[PreparedStep],
    pb: &PlaybookInfo,
    ctx: &Map<String, Value>,
    reuse: bool,
) -> Result<Rendered, Vec<(usize, String)>> {
    let renderer = crate::template::Renderer::new(&pb.templates);
    let sources = Sources {
        files_dir: &pb.files_dir,
        templates_dir: &pb.templates_dir,
        images: &pb.images,
        templates: &renderer,
    };
    let mut errors = Vec::new();
    let mut tracker = Tracker {
        reuse,
        found: Vec::new(),
    };
    let (out, tainted) = render_steps(steps, ctx, &sources, &mut tracker, &mut errors);
    let (handlers, tainted_handlers) =
        render_handlers(steps.len(), pb, ctx, &sources, &mut tracker, &mut errors);
    let found = tracker.found;
    if errors.is_empty() {
        Ok(Rendered {
            steps: out,
            handlers,
            tainted,
            tainted_handlers,
            found,
        })
    } else {
        // An error may quote a text rendered from a secret (a path it refuses, say).
        let m = Mask::new(&[], &found);
        Err(errors.into_iter().map(|(i, e)| (i, m.text(&e))).collect())
    }
}

/// Which texts of a render a secret flowed into (only when `reuse`: the render after the
/// probe; see [`render`]).
struct Tracker {
    reuse: bool,
    /// Every text a secret flowed into so far, each once.
    found: Vec<crate::template::Tainted>,
}

impl Tracker {
    /// The desired state of a step or handler, and the texts of it a secret flowed into.
    fn desired(
        &mut self,
        templates: &crate::template::Renderer<'_>,
        f: &mut dyn FnMut() -> Result<Desired, StepError>,
    ) -> (Result<Desired, StepError>, Vec<crate::template::Tainted>) {
        if !self.reuse {
            return (f(), Vec::new());
        }
        let (r, t) = templates.track(f);
        for x in &t {
            if !self.found.contains(x) {
                self.found.push(x.clone());
            }
        }
        (r, t)
    }
}

/// The steps of [`render`]: per step its desired state (or the reason it is skipped) and the
/// texts a secret flowed into; errors go to `errors`.
fn render_steps(
    steps: &[PreparedStep],
    ctx: &Map<String, Value>,
    sources: &Sources,
    tracker: &mut Tracker,
    errors: &mut Vec<(usize, String)>,
) -> (
    Vec<Result<Desired, NotRun>>,
    Vec<Vec<crate::template::Tainted>>,
) {
    let reuse = tracker.reuse;
    let mut out = Vec::new();
    let mut tainted = vec![Vec::new(); steps.len()];
    for (i, ps) in steps.iter().enumerate() {
        let step = &ps.step;
        if let (true, Some(why)) = (reuse, &step.not_selected) {
            out.push(Err(NotRun::NotSelected(why.clone())));
            continue;
        }
        if reuse && ps.context_free {
            match (&ps.probe_desired, &step.when) {
                (Some(d), _) => {
                    out.push(Ok(d.clone()));
                    continue;
                }
                (None, Some(w)) => {
                    out.push(Err(NotRun::When(w.clone())));
                    continue;
                }
                (None, None) => {}
            }
        }
        if let Some(w) = &step.when {
            match sources.templates.eval_when(w, ctx) {
                Ok(true) => {}
                Ok(false) => {
                    out.push(Err(NotRun::When(w.clone())));
                    continue;
                }
                Err(e) => {
                    errors.push((i, e.to_string()));
                    out.push(Err(NotRun::Failed));
                    continue;
                }
            }
        }
        let (r, t) = tracker.desired(sources.templates, &mut || {
            resource::desired(&step.kind, &step.args, ctx, sources)
        });
        tainted[i] = t;
        match r {
            Ok(d) => out.push(Ok(d)),
            Err(e) => {
                errors.push((i, e.to_string()));
                out.push(Err(NotRun::Failed));
            }
        }
    }
    (out, tainted)
}

/// The handlers of [`render`] that run on this host (their `when`), and those a secret flowed
/// into; errors go to `errors` (numbered after the `n_steps` steps).
fn render_handlers(
    n_steps: usize,
    pb: &PlaybookInfo,
    ctx: &Map<String, Value>,
    sources: &Sources,
    tracker: &mut Tracker,
    errors: &mut Vec<(usize, String)>,
) -> (Vec<Handler>, Vec<String>) {
    let mut tainted_handlers = Vec::new();
    let mut handlers = Vec::new();
    for (j, h) in pb.handlers.iter().enumerate() {
        // A handler whose `when` is false on this host is never run there.
        if let Some(w) = &h.when {
            match sources.templates.eval_when(w, ctx) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    errors.push((n_steps + j, e.to_string()));
                    continue;
                }
            }
        }
        let (r, t) = tracker.desired(sources.templates, &mut || {
            resource::desired(&h.kind, &h.args, ctx, sources)
        });
        if !t.is_empty() {
            tainted_handlers.push(h.name.clone());
        }
        match r {
            Ok(Desired::Command(c)) => handlers.push((h.name.clone(), h.timeout, c)),
            Ok(_) => {}
            Err(e) => errors.push((n_steps + j, e.to_string())),
        }
    }
    (handlers, tainted_handlers)
}

/// The template context of a host once its facts and secrets are known.
pub(super) fn full_context(
    base: &Map<String, Value>,
    inventory: &Value,
    facts: &crate::fact::HostFacts,
    secrets: &[(String, Secret)],
) -> Map<String, Value> {
    let mut ctx = base.clone();
    ctx.insert("inventory".into(), inventory.clone());
    ctx.insert("facts".into(), facts.to_json());
    let s: Map<String, Value> = secrets
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.expose().to_string())))
        .collect();
    ctx.insert("secrets".into(), Value::Object(s));
    ctx
}

fn step_error(pb: &Playbook, step: &Step, host: &Host, msg: &str) -> ConfigError {
    // Template errors already name their own file and line; keep the step and host as context.
    ConfigError::new(
        &pb.path,
        step.line,
        0,
        format!("step `{}` on host `{}`: {msg}", step.name, host.name),
    )
}

/// What every host of a run shares from the playbook (its operator secrets loaded).
fn playbook_info(inv: &Inventory, pb: &Playbook) -> Result<PlaybookInfo, ConfigErrors> {
    let operator_secrets = pb.load_operator_secrets()?;
    let secret_names: Vec<String> = pb
        .steps
        .iter()
        .filter(|s| s.kind.provides_secret())
        .filter_map(|s| {
            s.args
                .get("secret")
                .and_then(|n| n.as_str())
                .map(String::from)
        })
        .collect();
    Ok(PlaybookInfo {
        path: pb.path.clone(),
        name: pb.name.clone(),
        files_dir: pb.dir.clone(),
        templates_dir: pb.templates_dir.clone(),
        handlers: pb.handlers.clone(),
        secret_names,
        operator_secrets,
        task: pb.task.is_some(),
        rollout: pb.rollout.clone(),
        inventory: crate::vars::inventory_value(inv),
        images: Default::default(),
        templates: Default::default(),
        links: Default::default(),
    })
}

/// Checks every step for every host offline (with stand-in facts and secrets) and works out
/// what the first probe asks, and which values cross hosts (`cross::link`: the sources outside
/// `hosts` are prepared too, to be found). All problems are returned together.
pub fn prepare(
    inv: &Inventory,
    pb: &Playbook,
    hosts: &[&Host],
    extra: &[(String, String)],
) -> Result<Vec<Prepared>, ConfigErrors> {
    let mut info = playbook_info(inv, pb)?;
    let stand_in_secrets: Vec<(String, Secret)> = info
        .secret_names
        .iter()
        .chain(info.operator_secrets.iter().map(|(k, _)| k))
        .map(|k| (k.clone(), Secret::new(format!("<secret {k}>"))))
        .collect();
    let free: Vec<(bool, bool)> = (pb.steps.iter())
        .map(|s| {
            (
                context_free(s, &pb.templates_dir),
                names_secrets(s, &pb.templates_dir),
            )
        })
        .collect();
    let mut errors = check_rollout_groups(inv, pb);
    let outside = super::cross::candidates(inv, pb, hosts);
    // A host outside the run is prepared to find the sources; its errors are reported too (a
    // render that fails says nothing of which steps run there).
    let done: Vec<(&Host, Vec<PreparedStep>, Map<String, Value>)> = (hosts.iter().copied())
        .chain(outside)
        .map(|host| {
            let base = crate::vars::host_context(inv, host, pb, extra);
            let ctx = full_context(
                &base,
                &info.inventory,
                &crate::fact::HostFacts::placeholder(),
                &stand_in_secrets,
            );
            let steps = prepare_host(pb, host, &free, &info, &ctx, &mut errors);
            (host, steps, base)
        })
        .collect();
    let seen: Vec<super::cross::Seen<'_>> = (done.iter().enumerate())
        .map(|(k, (host, steps, _))| super::cross::Seen {
            host,
            in_run: k < hosts.len(),
            steps: steps.iter().map(|s| s.probe_desired.as_ref()).collect(),
        })
        .collect();
    match super::cross::link(inv, pb, &seen) {
        Ok(links) => info.links = links,
        Err(es) => errors.extend(es),
    }
    drop(seen);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let info = Arc::new(info);
    Ok((done.into_iter().take(hosts.len()))
        .map(|(host, steps, base)| Prepared {
            host: host.clone(),
            steps,
            base,
            playbook: info.clone(),
        })
        .collect())
}

/// `[rollout] groups` names groups of the inventory.
fn check_rollout_groups(inv: &Inventory, pb: &Playbook) -> Vec<ConfigError> {
    let known: Vec<&str> = inv.groups.keys().map(String::as_str).collect();
    (pb.rollout.groups.iter())
        .filter(|g| *g != "all" && !inv.groups.contains_key(*g))
        .map(|g| {
            ConfigError::new(
                &pb.path,
                pb.rollout.groups_line,
                0,
                format!(
                    "rollout: `groups`: the inventory has no group `{g}` (its groups: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })
        .collect()
}

/// One host's steps rendered with the stand-ins (`ctx`); its errors go to `errors`.
fn prepare_host(
    pb: &Playbook,
    host: &Host,
    free: &[(bool, bool)],
    info: &PlaybookInfo,
    ctx: &Map<String, Value>,
    errors: &mut Vec<ConfigError>,
) -> Vec<PreparedStep> {
    let mut steps: Vec<PreparedStep> = pb
        .steps
        .iter()
        .zip(free)
        .map(|(s, (free, names))| PreparedStep {
            step: s.clone(),
            probe_desired: None,
            context_free: *free,
            names_secrets: *names,
        })
        .collect();
    match render(&steps, info, ctx, false) {
        Ok(r) => {
            for (ps, d) in steps.iter_mut().zip(r.steps) {
                // A step not selected is checked, but not probed.
                ps.probe_desired = d.ok().filter(|_| ps.step.not_selected.is_none());
            }
        }
        Err(es) => {
            for (i, e) in es {
                let s = pb
                    .steps
                    .get(i)
                    .unwrap_or_else(|| &pb.handlers[i - pb.steps.len()]);
                errors.push(step_error(pb, s, host, &e));
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{file_change, pb_step};
    use super::*;

    #[test]
    fn steps_not_selected_are_checked_but_not_probed() {
        let dir = tempfile::tempdir().unwrap();
        let inv_path = dir.path().join("inv.toml");
        std::fs::write(&inv_path, "[defaults]\nuser = \"u\"\n[hosts.h1]\n").unwrap();
        let inv = Inventory::load_with(&inv_path, &crate::inventory::SshConfigChoice::Off).unwrap();
        let hosts: Vec<&Host> = inv.hosts.iter().collect();
        let src = |second: &str| {
            format!(
                "name = \"p\"\n[[steps]]\nname = \"a\"\nkind = \"dir\"\npath = \"/a\"\ntags = [\"x\"]\n\
                 [[steps]]\nname = \"b\"\nkind = \"dir\"\npath = \"{second}\"\ntags = [\"y\"]\n"
            )
        };
        let filter = crate::select::StepFilter {
            tags: vec!["x".into()],
            ..Default::default()
        };
        let mut pb = Playbook::parse(&dir.path().join("pb.toml"), &src("/b")).unwrap();
        crate::select::select_steps(&mut pb, &filter).unwrap();
        let p = prepare(&inv, &pb, &hosts, &[]).unwrap();
        assert!(p[0].steps[0].probe_desired.is_some());
        assert!(p[0].steps[1].probe_desired.is_none(), "not probed");
        // The render after the probe skips it, with the reason the plan shows.
        let ctx = full_context(
            &p[0].base,
            &p[0].playbook.inventory,
            &crate::fact::HostFacts::placeholder(),
            &[],
        );
        let r = render(&p[0].steps, &p[0].playbook, &ctx, true).unwrap();
        assert!(r.steps[0].is_ok());
        assert_eq!(
            r.steps[1].as_ref().unwrap_err().to_string(),
            "not selected: no tag of --tags x"
        );
        // Bad input in a step not selected still stops the run before any connection.
        let mut pb = Playbook::parse(&dir.path().join("pb.toml"), &src("{{ nope }}")).unwrap();
        crate::select::select_steps(&mut pb, &filter).unwrap();
        let e = prepare(&inv, &pb, &hosts, &[]).unwrap_err().to_string();
        assert!(e.contains("step `b` on host `h1`"), "{e}");
    }

    #[test]
    fn rollout_groups_name_groups_of_the_inventory() {
        let dir = tempfile::tempdir().unwrap();
        let inv_path = dir.path().join("inv.toml");
        std::fs::write(
            &inv_path,
            "[defaults]\nuser = \"u\"\n[groups.data]\n[groups.app]\n[hosts.h1]\ngroups = [\"app\"]\n",
        )
        .unwrap();
        let inv = Inventory::load_with(&inv_path, &crate::inventory::SshConfigChoice::Off).unwrap();
        let hosts: Vec<&Host> = inv.hosts.iter().collect();
        let src = |groups: &str| {
            format!(
                "name = \"p\"\n[rollout]\nserial = 1\ngroups = {groups}\n\
                 [[steps]]\nname = \"a\"\nkind = \"dir\"\npath = \"/a\"\n"
            )
        };
        let pb = Playbook::parse(&dir.path().join("pb.toml"), &src("[\"data\", \"all\"]")).unwrap();
        assert!(prepare(&inv, &pb, &hosts, &[]).is_ok());
        let pb =
            Playbook::parse(&dir.path().join("pb.toml"), &src("[\"data\", \"edge\"]")).unwrap();
        let e = prepare(&inv, &pb, &hosts, &[]).unwrap_err().to_string();
        assert!(
            e.contains("pb.toml:4: rollout: `groups`: the inventory has no group `edge` (its groups: app, data)"),
            "{e}"
        );
    }

    #[test]
    fn steps_naming_secrets_write_sensitive_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            (
                "plain.tera",
                "# the .env holds the secrets\nlisten {{ port }};\n",
            ),
            ("secret.tera", "auth={{ secrets.k | urlencode }}\n"),
            (
                "loop.tera",
                "{% for k, v in secrets %}{{ k }}{% endfor %}\n",
            ),
            ("comment.tera", "{# secrets #}x={{ a }}\n"),
        ];
        for (f, t) in files {
            std::fs::write(dir.path().join(f), t).unwrap();
        }
        let with = |kind: &str, args: &str| {
            let mut s = pb_step(&[]);
            s.kind = kind.parse().unwrap();
            s.args = toml::from_str(args).unwrap();
            names_secrets(&s, dir.path())
        };
        let t = |src: &str| with("template", &format!("src = {src:?}\npath = \"/x\""));
        assert!(!t("plain.tera"));
        assert!(!t("comment.tera"));
        assert!(t("secret.tera"));
        assert!(t("loop.tera"));
        assert!(t("{{ name }}.tera"));
        assert!(t("missing.tera"));
        assert!(with(
            "file",
            "content = \"k={{ secrets.k }}\"\npath = \"/x\""
        ));
        assert!(!with("file", "content = \"k={{ k }}\"\npath = \"/x\""));
        // The mask then hides the content, whatever form the secret took in it: a common
        // encoding is found by the search, anything else by the step's marking.
        let mask = Mask::new(&[("k".into(), Secret::new("value-of-k"))], &[]);
        let mut c = file_change("/x");
        c.content.as_mut().unwrap().new = Arc::new(b"auth=dmFsdWUtb2Ytaw==\n".to_vec());
        mask.content(&mut c, false, &[]);
        assert!(
            c.content.as_ref().unwrap().sensitive,
            "base64 is searched for"
        );
        let mut c = file_change("/x");
        c.content.as_mut().unwrap().new = Arc::new(b"auth=k-fo-eulav\n".to_vec());
        mask.content(&mut c, false, &[]);
        assert!(!c.content.as_ref().unwrap().sensitive);
        mask.content(&mut c, true, &[]);
        assert!(c.content.as_ref().unwrap().sensitive);
    }

    #[test]
    fn rendering_marks_tainted_steps_and_masks_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let pb = Playbook::parse(
            &dir.path().join("pb.toml"),
            "name = \"p\"\n\
             [[steps]]\nname = \"plain\"\nkind = \"command\"\nrun = \"echo {{ secrets.K | length > 0 }}\"\n\
             [[steps]]\nname = \"tainted\"\nkind = \"command\"\nrun = \"echo {{ secrets.K | upper | shell_quote }}\"\n\
             [[steps]]\nname = \"bad\"\nkind = \"command\"\nrun = \"true\"\ncreates = \"x/{{ secrets.K | reverse }}\"\n\
             [[handlers]]\nname = \"h\"\nkind = \"command\"\nrun = \"echo {{ secrets.K | lower }}\"\n",
        )
        .unwrap();
        let info = PlaybookInfo {
            path: pb.path.clone(),
            name: pb.name.clone(),
            files_dir: dir.path().into(),
            templates_dir: dir.path().into(),
            handlers: pb.handlers.clone(),
            operator_secrets: vec![],
            secret_names: vec![],
            task: false,
            rollout: Default::default(),
            inventory: Value::Null,
            images: Default::default(),
            templates: Default::default(),
            links: Default::default(),
        };
        let steps: Vec<PreparedStep> = (pb.steps.iter())
            .map(|s| PreparedStep {
                step: s.clone(),
                probe_desired: None,
                context_free: false,
                names_secrets: true,
            })
            .collect();
        let ctx = serde_json::json!({"secrets": {"K": "key-Value-123"}})
            .as_object()
            .unwrap()
            .clone();
        let r = render(&steps[..2], &info, &ctx, true).unwrap();
        assert_eq!(r.tainted[0], vec![], "a test of the value shows none of it");
        assert_eq!(r.tainted[1].len(), 1);
        assert_eq!(r.tainted[1][0].display, "echo '<SECRET:K>'");
        assert_eq!(r.tainted_handlers, ["h"]);
        assert_eq!(r.found.len(), 2);
        // The offline render (stand-ins) is not tracked.
        let r = render(&steps[..2], &info, &ctx, false).unwrap();
        assert!(r.found.is_empty() && r.tainted[1].is_empty());
        // An error quoting a tainted text (here reversed: no form the search knows).
        let Err(e) = render(&steps, &info, &ctx, true) else {
            panic!("a relative `creates` is an error")
        };
        assert_eq!(e.len(), 1);
        assert!(e[0].1.contains("x/>K:terces<"), "{e:?}");
        assert!(!e[0].1.contains("321-eulaV"), "{e:?}");
    }

    #[test]
    fn context_free_steps() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain.tera"), "listen {{ port }};\n").unwrap();
        std::fs::write(dir.path().join("secret.tera"), "KEY={{ secrets.k }}\n").unwrap();
        let with = |kind: &str, args: &str, when: Option<&str>| {
            let mut s = pb_step(&[]);
            s.kind = kind.parse().unwrap();
            s.args = toml::from_str(args).unwrap();
            s.when = when.map(String::from);
            context_free(&s, dir.path())
        };
        assert!(with("command", "run = \"echo {{ app }}\"", None));
        assert!(with(
            "template",
            "src = \"plain.tera\"\npath = \"/x\"",
            Some("app == \"a\"")
        ));
        assert!(!with("command", "run = \"echo {{ facts.arch }}\"", None));
        assert!(!with("command", "env = { A = \"{{ secrets.k }}\" }", None));
        assert!(!with("command", "run = \"true\"", Some("facts.docker")));
        assert!(!with(
            "template",
            "src = \"secret.tera\"\npath = \"/x\"",
            None
        ));
        assert!(!with(
            "template",
            "src = \"{{ name }}.tera\"\npath = \"/x\"",
            None
        ));
        assert!(!with(
            "template",
            "src = \"missing.tera\"\npath = \"/x\"",
            None
        ));
    }
}
