//! `command`: a shell command made idempotent by its guards. It runs when its `creates` path is
//! absent and its `unless` check fails; with no guard it runs on every apply (the plan says so).

use super::StepError;
use super::check_path;
use crate::fact::GuardState;
use crate::plan::{Action, Change};
use crate::quote::quote;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Shell code (POSIX sh). Quote templated values with the `shell_quote` filter.
    pub run: String,
    /// Skip when this path exists.
    pub creates: Option<String>,
    /// Skip when this read-only check succeeds.
    pub unless: Option<String>,
    /// Working directory (default `/`).
    pub cwd: Option<String>,
    /// Show what the command prints (stdout, and stderr when it fails) under the step: for
    /// operations such as status and logs. Secret values in it are masked.
    #[serde(default)]
    pub output: bool,
    /// `false`: the command only reads (status, logs, a check): it runs on every apply like a
    /// check and is never counted as a change.
    #[serde(default = "yes")]
    pub changes: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub run: String,
    pub creates: Option<String>,
    pub unless: Option<String>,
    pub cwd: String,
    pub output: bool,
    pub changes: bool,
}

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, StepError> {
        if a.run.trim().is_empty() {
            return Err(StepError::arg("`run` is empty"));
        }
        if let Some(c) = &a.creates {
            check_path(c).map_err(|e| StepError::in_arg("creates", e))?;
        }
        let cwd = a.cwd.unwrap_or_else(|| "/".into());
        check_path(&cwd).map_err(|e| StepError::in_arg("cwd", e))?;
        if !a.changes && (a.creates.is_some() || a.unless.is_some()) {
            return Err(StepError::arg(
                "`changes = false` runs the command on every apply: `creates`/`unless` make no sense with it",
            ));
        }
        Ok(Self {
            run: a.run,
            creates: a.creates,
            unless: a.unless,
            cwd,
            output: a.output,
            changes: a.changes,
        })
    }

    /// The first line of the command, for display.
    pub fn summary(&self) -> String {
        let first = self.run.trim().lines().next().unwrap_or("");
        if self.run.trim().lines().count() > 1 {
            format!("{first} …")
        } else {
            first.to_string()
        }
    }

    /// The script that runs the command (also used for handlers).
    pub fn script(&self) -> String {
        // stdin is closed: nothing a command reads can come from the connection.
        format!(
            "exec </dev/null\ncd -- {} || exit 1\n{}\n",
            quote(&self.cwd),
            self.run
        )
    }

    pub fn diff(&self, g: &GuardState) -> Change {
        match g {
            GuardState::CreatesExists => Change::noop(
                self.summary(),
                format!(
                    "`creates` path {} exists",
                    self.creates.as_deref().unwrap_or("")
                ),
            ),
            GuardState::UnlessSucceeded => Change::noop(self.summary(), "`unless` check succeeded"),
            GuardState::MustRun if !self.changes => {
                let mut c = Change::new(
                    Action::Check,
                    self.summary(),
                    "reads only (`changes = false`): runs on every apply",
                    self.script(),
                );
                if let Some(op) = c.op.as_mut() {
                    op.show_output = self.output;
                }
                c
            }
            GuardState::MustRun => {
                let reason = match (&self.creates, &self.unless) {
                    (None, None) => "no creates/unless guard: runs on every apply".to_string(),
                    (Some(c), None) => {
                        format!("runs when its guard says so: `creates` path {c} is absent")
                    }
                    (None, Some(_)) => {
                        "runs when its guard says so: `unless` check failed".to_string()
                    }
                    (Some(c), Some(_)) => {
                        format!("runs when its guard says so: {c} is absent and `unless` failed")
                    }
                };
                let mut c = Change::new(Action::Run, self.summary(), reason, self.script());
                if let Some(op) = c.op.as_mut() {
                    op.show_output = self.output;
                }
                c
            }
        }
    }
}

/// The `command` step kind (also the kind of handlers).
pub(crate) struct CommandKind;

impl super::StepKind for CommandKind {
    fn name(&self) -> &'static str {
        "command"
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
        Ok(super::Desired::Command(Desired::from_args(super::args(
            args,
        )?)?))
    }

    fn runs_when_notified(&self) -> bool {
        true
    }
}

/// Asks for the guards (`creates`, `unless`).
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        vec![p.add(crate::fact::Request::Guard {
            creates: self.creates.clone(),
            unless: self.unless.clone(),
        })]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [crate::fact::Observed::Guard(g)] => Some(Ok(self.diff(g))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(creates: Option<&str>) -> Desired {
        Desired::from_args(Args {
            run: "make install\nmake clean".into(),
            creates: creates.map(Into::into),
            unless: None,
            cwd: Some("/srv/app".into()),
            output: false,
            changes: true,
        })
        .unwrap()
    }

    #[test]
    fn read_only_commands_are_checks_and_show_their_output() {
        let args = |changes: bool, unless: Option<&str>| Args {
            run: "docker ps".into(),
            creates: None,
            unless: unless.map(Into::into),
            cwd: None,
            output: true,
            changes,
        };
        let d = Desired::from_args(args(false, None)).unwrap();
        let c = d.diff(&GuardState::MustRun);
        assert_eq!(c.action, Action::Check);
        assert!(!c.action.changes());
        assert!(c.op.unwrap().show_output);
        let c = Desired::from_args(args(true, None))
            .unwrap()
            .diff(&GuardState::MustRun);
        assert_eq!(c.action, Action::Run);
        assert!(c.op.unwrap().show_output);
        let e = Desired::from_args(args(false, Some("true")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`changes = false`"), "{e}");
    }

    #[test]
    fn guards() {
        assert_eq!(
            cmd(Some("/x")).diff(&GuardState::CreatesExists).action,
            Action::NoOp
        );
        assert_eq!(
            cmd(None).diff(&GuardState::UnlessSucceeded).action,
            Action::NoOp
        );
        let c = cmd(Some("/x")).diff(&GuardState::MustRun);
        assert_eq!(c.action, Action::Run);
        assert_eq!(c.target, "make install …");
        assert!(c.reason.contains("/x is absent"));
        assert_eq!(
            c.op.unwrap().script,
            "exec </dev/null\ncd -- '/srv/app' || exit 1\nmake install\nmake clean\n"
        );
        assert!(
            cmd(None)
                .diff(&GuardState::MustRun)
                .reason
                .contains("every apply")
        );
    }
}
