//! `compose`: a Docker Compose project kept up.
//!
//! `docker compose up -d --remove-orphans --wait` runs only when the compose file, the env file or
//! the image a service uses differ from the last successful up (recorded on the target in
//! `/var/lib/claw-provision/compose/PROJECT`: hashes and image IDs only, never the env file's
//! values), or when a declared service is not running (or not healthy). Config files mounted into
//! containers are their own steps with handlers (a reload recreates nothing). When the wait fails,
//! compose's last error line and, one line per service that is not running or not healthy, its
//! last 20 log lines (joined by ` | `) are shown: the failure message keeps the last lines of stderr.

use super::StepError;
use crate::fact::compose::{ComposeState, Inputs, Query, STATE_DIR};
use crate::plan::{Action, Change};
use crate::quote::quote;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    /// Pull images that are not present.
    #[default]
    Missing,
    /// Never pull (images are shipped, e.g. `docker load`).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComposeStateArg {
    /// Up, running and healthy.
    #[default]
    Up,
    /// Declared stopped: containers kept, none running (`docker compose stop`).
    Stopped,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Compose project name (`-p`).
    pub project: String,
    /// Path of the compose file on the target.
    pub file: String,
    /// Path of the env file on the target (`--env-file`).
    pub env_file: Option<String>,
    /// "missing" (default) or "never"; a string, so that it can be templated
    /// (`"{% if ship_images %}never{% else %}missing{% endif %}"`), checked once rendered.
    pub pull: Option<String>,
    /// How long `up --wait` waits for the services to be running and healthy (`90s`, `3m`).
    pub wait_timeout: Option<String>,
    /// "up" (default) or "stopped"; a string, so that it can be templated.
    pub state: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub query: Query,
    pub pull: Pull,
    pub wait_secs: u64,
    pub state: ComposeStateArg,
}

/// `90`, `90s`, `3m`, `1h` → seconds; `arg` names the argument, for the error.
pub(crate) fn parse_duration(arg: &'static str, s: &str) -> Result<u64, StepError> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 'h')) => (&t[..i], 3600),
        _ => (t, 1),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 && n.checked_mul(mult).is_some_and(|v| v <= 86_400) => Ok(n * mult),
        _ => Err(StepError::Duration {
            arg,
            value: s.to_string(),
        }),
    }
}

fn check_project(p: &str) -> Result<(), StepError> {
    let ok = p.len() <= 64
        && p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StepError::arg(format!(
            "`project = \"{p}\"`: a compose project name is lowercase letters, digits, `-` and `_`, starting with a letter or digit"
        )))
    }
}

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, StepError> {
        check_project(&a.project)?;
        super::check_path(&a.file).map_err(|e| StepError::in_arg("file", e))?;
        if let Some(e) = &a.env_file {
            super::check_path(e).map_err(|e| StepError::in_arg("env_file", e))?;
        }
        let wait_secs = parse_duration("wait_timeout", a.wait_timeout.as_deref().unwrap_or("3m"))?;
        Ok(Desired {
            query: Query {
                project: a.project,
                file: a.file,
                env_file: a.env_file,
            },
            pull: match a.pull.as_deref().map(str::trim) {
                None | Some("missing") => Pull::Missing,
                Some("never") => Pull::Never,
                Some(other) => {
                    return Err(StepError::arg(format!(
                        "`pull = \"{other}\"`: expected \"missing\" or \"never\""
                    )));
                }
            },
            wait_secs,
            state: match a.state.as_deref().map(str::trim) {
                None | Some("up") => ComposeStateArg::Up,
                Some("stopped") => ComposeStateArg::Stopped,
                Some(other) => {
                    return Err(StepError::arg(format!(
                        "`state = \"{other}\"`: expected \"up\" or \"stopped\""
                    )));
                }
            },
        })
    }

    /// A project declared stopped: `docker compose stop` when a container runs.
    fn diff_stopped(&self, o: &ComposeState) -> Change {
        let target = self.target();
        let running: Vec<&str> = match o {
            ComposeState::Found { containers, .. } => containers
                .iter()
                .filter(|c| c.state == "running" || c.state == "restarting")
                .map(|c| c.service.as_str())
                .collect(),
            _ => vec![],
        };
        if running.is_empty() {
            return Change::noop(target, "stopped (declared `state = \"stopped\"`)");
        }
        let mut c = Change::new(
            Action::Update,
            target,
            "declared stopped: docker compose stop",
            format!(
                "set -e\n{}dc --ansi never stop\n",
                crate::fact::compose::prelude(&self.query)
            ),
        );
        c.details = running
            .iter()
            .map(|s| format!("service {s} running"))
            .collect();
        c
    }

    fn target(&self) -> String {
        format!("compose {}", self.query.project)
    }

    /// The script of `up`: on failure, the last log lines of each service that is not running or
    /// not healthy; on success, the state file (written atomically).
    pub fn up_script(&self) -> String {
        let pull = match self.pull {
            Pull::Missing => "missing",
            Pull::Never => "never",
        };
        format!(
            r#"set -e
{prelude}if ! out=$(dc --ansi never up -d --remove-orphans --pull {pull} --wait --wait-timeout {secs} 2>&1); then
  printf '%s\n' "$out" | awk 'NF' | tail -n 1 >&2
  dc --ansi never ps --all --format '{{{{.Service}}}}|{{{{.State}}}}|{{{{.Health}}}}' 2>/dev/null | while IFS='|' read -r svc state health; do
    if [ "$state" != running ] || {{ [ -n "$health" ] && [ "$health" != healthy ]; }}; then
      printf 'service %s (%s%s), last 20 log lines: ' "$svc" "$state" "${{health:+, $health}}" >&2
      dc --ansi never logs --no-color --no-log-prefix --tail 20 "$svc" 2>&1 | awk 'NF {{ gsub(/\033\[[0-9;]*[A-Za-z]/, ""); gsub(/\r/, ""); printf "%s%s", (n++ ? " | " : ""), $0 }} END {{ print "" }}' >&2
    fi
  done
  exit 1
fi
cur=$(claw_compose_current)
mkdir -p -m 0700 {dir}
printf '%s\n' "$cur" > "$st.tmp.$$"
mv -f "$st.tmp.$$" "$st"
"#,
            prelude = crate::fact::compose::prelude(&self.query),
            secs = self.wait_secs,
            dir = quote(STATE_DIR),
        )
    }

    /// Why an up is needed (empty: it is not).
    fn reasons(&self, cur: &Inputs, last: Option<&Inputs>) -> Vec<String> {
        let mut r = vec![];
        for (svc, id) in &cur.images {
            match id.as_str() {
                "missing" if self.pull == Pull::Never => r.push(format!(
                    "image of {svc} is not present (and `pull = \"never\"`)"
                )),
                "missing" => r.push(format!("image of {svc} is not present (pulled on up)")),
                _ => {}
            }
        }
        let Some(last) = last else {
            r.push("no successful up recorded".into());
            return r;
        };
        if cur.compose_sha256 != last.compose_sha256 {
            r.push("compose file changed".into());
        }
        match (&cur.env_sha256, &last.env_sha256) {
            (a, b) if a == b => {}
            (Some(_), Some(_)) => r.push("env file changed".into()),
            (Some(_), None) => r.push("env file added".into()),
            (None, Some(_)) => r.push("env file no longer used".into()),
            _ => {}
        }
        for (svc, id) in &cur.images {
            match last.images.iter().find(|(s, _)| s == svc) {
                None => r.push(format!("service {svc} added")),
                Some((_, old)) if old != id && id != "missing" => {
                    r.push(format!("image of {svc} changed"));
                }
                _ => {}
            }
        }
        for (svc, _) in &last.images {
            if !cur.images.iter().any(|(s, _)| s == svc) {
                r.push(format!("service {svc} removed"));
            }
        }
        r
    }

    pub fn diff(&self, o: &ComposeState) -> Result<Change, StepError> {
        if self.state == ComposeStateArg::Stopped {
            return Ok(self.diff_stopped(o));
        }
        let target = self.target();
        let q = &self.query;
        let (current, last, containers) = match o {
            ComposeState::NoDocker => {
                return Ok(Change::deferred(target, "docker is not installed yet"));
            }
            ComposeState::NoCompose => {
                return Ok(Change::deferred(
                    target,
                    "docker compose is not installed yet",
                ));
            }
            ComposeState::NoDaemon => {
                return Ok(Change::deferred(
                    target,
                    "the docker daemon is not running yet",
                ));
            }
            ComposeState::NoFile => {
                return Ok(Change::deferred(
                    target,
                    format!("the compose file {} does not exist yet", q.file),
                ));
            }
            ComposeState::NoEnv => {
                return Ok(Change::deferred(
                    target,
                    format!(
                        "the env file {} does not exist yet",
                        q.env_file.as_deref().unwrap_or("")
                    ),
                ));
            }
            ComposeState::BadConfig => {
                return Err(StepError::host(format!(
                    "`docker compose config` fails for {} (run `docker compose -p {} -f {} config` on the host to see why)",
                    q.file, q.project, q.file
                )));
            }
            ComposeState::Found {
                current,
                last,
                containers,
            } => (current, last, containers),
        };
        Ok(self.diff_found(current, last.as_ref(), containers))
    }

    /// The change for a project docker could read: an up when an input differs from the last
    /// successful up or a container is not as it should be (a create when there is none), else
    /// a no-op.
    fn diff_found(
        &self,
        current: &Inputs,
        last: Option<&Inputs>,
        containers: &[crate::fact::compose::Container],
    ) -> Change {
        let target = self.target();
        let mut details = self.reasons(current, last);
        details.extend(container_details(current, containers));
        details.dedup();
        if details.is_empty() {
            return Change::noop(
                target,
                format!("up to date, {} service(s) running", current.images.len()),
            );
        }
        let action = if containers.is_empty() {
            Action::Create
        } else {
            Action::Update
        };
        let mut c = Change::new(
            action,
            target,
            "docker compose up -d --remove-orphans --wait",
            self.up_script(),
        );
        c.details = details;
        c
    }
}

/// Compare the containers with the services of `current`: a service without a container, one
/// not running or not healthy, a container of no service (an orphan).
fn container_details(
    current: &Inputs,
    containers: &[crate::fact::compose::Container],
) -> Vec<String> {
    let mut details = vec![];
    for (svc, _) in &current.images {
        let mine: Vec<_> = containers.iter().filter(|c| &c.service == svc).collect();
        if mine.is_empty() {
            details.push(format!("service {svc} has no container"));
        }
        for c in mine {
            if c.state != "running" {
                details.push(format!("service {svc} not running ({})", c.state));
            } else if !c.health.is_empty() && c.health != "healthy" {
                details.push(format!("service {svc} is {}", c.health));
            }
        }
    }
    for c in containers {
        if !current.images.iter().any(|(s, _)| s == &c.service) {
            details.push(format!("orphan container of service {}", c.service));
        }
    }
    details
}

/// The `compose` step kind.
pub(crate) struct ComposeKind;

impl super::StepKind for ComposeKind {
    fn name(&self) -> &'static str {
        "compose"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<Args>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        _: &serde_json::Map<String, serde_json::Value>,
        _: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        Ok(super::Desired::Compose(Desired::from_args(super::args(
            args,
        )?)?))
    }

    /// Needs `docker compose`.
    fn needs(&self) -> &'static [super::kind::Need] {
        &[super::kind::Need::Docker]
    }
}

/// Asks for the project; watches its compose file and env file.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        vec![p.add(crate::fact::Request::Compose(self.query.clone()))]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [crate::fact::Observed::Compose(o)] => Some(self.diff(o)),
            _ => None,
        }
    }

    fn watches(&self) -> Vec<String> {
        std::iter::once(self.query.file.clone())
            .chain(self.query.env_file.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::compose::Container;

    fn h(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn id(c: char) -> String {
        format!("sha256:{}", h(c))
    }

    fn want(pull: Pull) -> Desired {
        Desired::from_args(Args {
            project: "claw-ai".into(),
            file: "/opt/claw ai/compose.yml".into(),
            env_file: Some("/opt/claw ai/.env".into()),
            pull: Some(
                if pull == Pull::Never {
                    "never"
                } else {
                    "missing"
                }
                .into(),
            ),
            wait_timeout: Some("90s".into()),
            state: None,
        })
        .unwrap()
    }

    fn inputs(compose: char, env: char, images: &[(&str, &str)]) -> Inputs {
        Inputs {
            compose_sha256: h(compose),
            env_sha256: Some(h(env)),
            images: images
                .iter()
                .map(|(s, i)| (s.to_string(), i.to_string()))
                .collect(),
        }
    }

    fn ctr(svc: &str, state: &str, health: &str) -> Container {
        Container {
            service: svc.into(),
            state: state.into(),
            health: health.into(),
        }
    }

    #[test]
    fn args() {
        assert_eq!(parse_duration("wait_timeout", "3m").unwrap(), 180);
        assert_eq!(parse_duration("wait_timeout", "90").unwrap(), 90);
        assert_eq!(parse_duration("wait_timeout", "1h").unwrap(), 3600);
        for bad in ["", "0s", "3x", "-1m", "m", "25h"] {
            assert!(parse_duration("wait_timeout", bad).is_err(), "{bad}");
        }
        assert!(check_project("claw-ai_2").is_ok());
        for bad in ["", "Claw", "-x", "a b", "a;b"] {
            assert!(check_project(bad).is_err(), "{bad}");
        }
        let a = |file: &str| Args {
            project: "p".into(),
            file: file.into(),
            env_file: None,
            pull: None,
            wait_timeout: None,
            state: None,
        };
        assert!(Desired::from_args(a("relative.yml")).is_err());
        let bad_pull = Args {
            pull: Some("always".into()),
            ..a("/c.yml")
        };
        assert!(
            Desired::from_args(bad_pull)
                .unwrap_err()
                .to_string()
                .contains("`pull = \"always\"`")
        );
        assert_eq!(Desired::from_args(a("/x.yml")).unwrap().wait_secs, 180);
    }

    #[test]
    fn a_stack_declared_stopped_is_stopped_and_nothing_more() {
        let mut d = want(Pull::Never);
        d.state = ComposeStateArg::Stopped;
        let base = inputs('1', '2', &[("backend", &id('a'))]);
        let found = |c: Vec<Container>| ComposeState::Found {
            current: base.clone(),
            last: Some(base.clone()),
            containers: c,
        };
        let c = d
            .diff(&found(vec![ctr("backend", "running", "healthy")]))
            .unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.details, ["service backend running"]);
        assert!(c.op.unwrap().script.ends_with("dc --ansi never stop\n"));
        assert_eq!(
            d.diff(&found(vec![ctr("backend", "exited", "")]))
                .unwrap()
                .action,
            Action::NoOp
        );
        assert_eq!(
            d.diff(&ComposeState::NoDocker).unwrap().action,
            Action::NoOp
        );
        let args = |state: &str| Args {
            project: "p".into(),
            file: "/opt/p/c.yml".into(),
            env_file: None,
            pull: None,
            wait_timeout: None,
            state: Some(state.into()),
        };
        let e = Desired::from_args(args("down")).unwrap_err().to_string();
        assert!(
            e.contains("`state = \"down\"`: expected \"up\" or \"stopped\""),
            "{e}"
        );
        assert_eq!(
            Desired::from_args(args(" stopped")).unwrap().state,
            ComposeStateArg::Stopped
        );
        assert_eq!(
            Desired::from_args(args("up")).unwrap().state,
            ComposeStateArg::Up
        );
    }

    #[test]
    fn diffs() {
        let (a, b) = (id('a'), id('b'));
        let base = inputs('1', '2', &[("backend", &a), ("nginx", &b)]);
        let up = vec![
            ctr("backend", "running", "healthy"),
            ctr("nginx", "running", ""),
        ];
        let found = |cur: Inputs, last: Option<Inputs>, c: Vec<Container>| ComposeState::Found {
            current: cur,
            last,
            containers: c,
        };
        // (observed, expected action, expected details)
        let cases: Vec<(ComposeState, Action, Vec<&str>)> = vec![
            (
                found(base.clone(), Some(base.clone()), up.clone()),
                Action::NoOp,
                vec![],
            ),
            (
                found(base.clone(), None, vec![]),
                Action::Create,
                vec![
                    "no successful up recorded",
                    "service backend has no container",
                    "service nginx has no container",
                ],
            ),
            (
                found(
                    inputs('9', '2', &[("backend", &a), ("nginx", &b)]),
                    Some(base.clone()),
                    up.clone(),
                ),
                Action::Update,
                vec!["compose file changed"],
            ),
            (
                found(
                    inputs('1', '9', &[("backend", &a), ("nginx", &b)]),
                    Some(base.clone()),
                    up.clone(),
                ),
                Action::Update,
                vec!["env file changed"],
            ),
            (
                found(
                    inputs('1', '2', &[("backend", &b), ("nginx", &b)]),
                    Some(base.clone()),
                    up.clone(),
                ),
                Action::Update,
                vec!["image of backend changed"],
            ),
            (
                found(
                    base.clone(),
                    Some(base.clone()),
                    vec![
                        ctr("backend", "running", "healthy"),
                        ctr("nginx", "exited", ""),
                    ],
                ),
                Action::Update,
                vec!["service nginx not running (exited)"],
            ),
            (
                found(
                    base.clone(),
                    Some(base.clone()),
                    vec![
                        ctr("backend", "running", "unhealthy"),
                        ctr("nginx", "running", ""),
                    ],
                ),
                Action::Update,
                vec!["service backend is unhealthy"],
            ),
            (
                found(
                    base.clone(),
                    Some(base.clone()),
                    vec![ctr("backend", "running", "healthy")],
                ),
                Action::Update,
                vec!["service nginx has no container"],
            ),
            (
                found(
                    inputs('1', '2', &[("backend", &a)]),
                    Some(base.clone()),
                    up.clone(),
                ),
                Action::Update,
                vec!["service nginx removed", "orphan container of service nginx"],
            ),
            (
                found(
                    inputs('1', '2', &[("backend", "missing"), ("nginx", &b)]),
                    Some(base.clone()),
                    up.clone(),
                ),
                Action::Update,
                vec!["image of backend is not present (pulled on up)"],
            ),
        ];
        let d = want(Pull::Missing);
        for (o, action, details) in cases {
            let c = d.diff(&o).unwrap();
            assert_eq!(c.action, action, "{o:?}: {c:?}");
            assert_eq!(c.details, details, "{o:?}");
            assert_eq!(c.op.is_some(), action != Action::NoOp);
        }
    }

    #[test]
    fn not_probeable_yet() {
        let d = want(Pull::Never);
        for (o, why) in [
            (ComposeState::NoDocker, "docker is not installed"),
            (ComposeState::NoCompose, "docker compose is not installed"),
            (ComposeState::NoDaemon, "not running"),
            (
                ComposeState::NoFile,
                "compose file /opt/claw ai/compose.yml",
            ),
            (ComposeState::NoEnv, "env file"),
        ] {
            let c = d.diff(&o).unwrap();
            assert_eq!(c.action, Action::Deferred);
            assert!(c.reason.contains(why), "{}", c.reason);
        }
        assert!(
            d.diff(&ComposeState::BadConfig)
                .unwrap_err()
                .to_string()
                .contains("config")
        );
    }

    #[test]
    fn script_quotes_and_pulls() {
        let s = want(Pull::Never).up_script();
        assert!(s.contains("f='/opt/claw ai/compose.yml'"), "{s}");
        assert!(s.contains("--pull never --wait --wait-timeout 90"), "{s}");
        assert!(s.contains("--tail 20"));
        assert!(s.contains("mv -f \"$st.tmp.$$\" \"$st\""));
        assert!(want(Pull::Missing).up_script().contains("--pull missing"));
    }

    /// The probe snippet runs under sh and reports a missing docker as a normal record.
    #[test]
    fn probe_runs_without_docker() {
        let q = want(Pull::Never).query;
        let script = format!(
            "PATH=/nonexistent\n{}",
            crate::fact::compose::command(3, &q)
        );
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "@3\tnodocker\n");
    }
}
