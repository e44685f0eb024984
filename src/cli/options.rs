//! Arguments → validated options for `plan` and `apply`: pure (what the terminal is comes in as
//! a value), no I/O, so every refusal is decided and tested here before anything is read.

use super::{ApplyArgs, PlanArgs, RunArgs};
use crate::error::Error;
use crate::report::{Format, Verbosity};
use crate::run::Mode;
use std::path::PathBuf;

/// A saved plan to write (`plan --out`) or to apply (`apply --plan`).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Saved {
    None,
    Out(PathBuf),
    Apply(PathBuf),
}

/// What `plan` or `apply` was asked to do.
#[derive(Debug)]
pub(super) struct PlanApply {
    pub(super) run: RunArgs,
    pub(super) mode: Mode,
    /// Apply without showing the plan and asking (`--yes`, or a saved plan).
    pub(super) yes: bool,
    pub(super) force_unlock: bool,
    /// `--force-unlock` without `--yes`: the operator confirms breaking the locks first.
    pub(super) confirm_force_unlock: bool,
    pub(super) verbosity: Verbosity,
    pub(super) saved: Saved,
}

impl PlanApply {
    /// The output format (`--output`).
    pub(super) fn format(&self) -> Format {
        self.run.select.output
    }

    /// Whether the plan is shown and confirmed before apply changes anything.
    pub(super) fn confirm(&self) -> bool {
        self.mode == Mode::Apply && !self.yes
    }
}

/// `plan`: nothing to refuse.
pub(super) fn plan(a: PlanArgs, verbosity: Verbosity) -> PlanApply {
    PlanApply {
        run: a.run,
        mode: Mode::Plan,
        yes: false,
        force_unlock: false,
        confirm_force_unlock: false,
        verbosity,
        saved: a.out.map_or(Saved::None, Saved::Out),
    }
}

/// `apply`: its refusals wait for [`check_confirmable`], after the force-unlock question.
pub(super) fn apply(a: ApplyArgs, verbosity: Verbosity) -> PlanApply {
    let (yes, saved) = match a.plan {
        // A saved plan was reviewed when it was made: it is applied without asking.
        Some(f) => (true, Saved::Apply(f)),
        None => (a.yes, Saved::None),
    };
    PlanApply {
        run: a.run,
        mode: Mode::Apply,
        yes,
        force_unlock: a.force_unlock,
        confirm_force_unlock: a.force_unlock && !a.yes,
        verbosity,
        saved,
    }
}

/// What refuses a run before anything is read; `interactive`: stdin, stdout and stderr are a
/// terminal. No terminal to confirm the plan on, or JSON output that cannot carry the question.
pub(super) fn check_confirmable(o: &PlanApply, interactive: bool) -> Result<(), Error> {
    if o.confirm() && !interactive {
        return Err(Error::Usage(
            "apply: no terminal to confirm on; pass --yes to apply without asking".into(),
        ));
    }
    if o.confirm() && o.format() == Format::Json {
        return Err(Error::Usage(
            "apply --output json needs --yes (the plan cannot be confirmed in JSON mode)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use super::*;
    use clap::Parser;

    fn apply_args(args: &[&str]) -> ApplyArgs {
        let cli = Cli::try_parse_from(["claw-provision", "apply", "inv.toml"].iter().chain(args))
            .unwrap();
        match cli.command {
            Command::Apply(a) => a,
            other => panic!("not apply: {other:?}"),
        }
    }

    fn usage(r: Result<(), Error>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            other => panic!("not a usage error: {other:?}"),
        }
    }

    #[test]
    fn apply_without_yes_needs_a_terminal_and_text() {
        let v = Verbosity::Normal;
        let o = apply(apply_args(&[]), v);
        assert!(o.confirm());
        assert!(usage(check_confirmable(&o, false)).contains("no terminal to confirm on"));
        assert!(check_confirmable(&o, true).is_ok());
        let o = apply(apply_args(&["--output", "json"]), v);
        assert!(usage(check_confirmable(&o, true)).contains("needs --yes"));
        let o = apply(apply_args(&["--yes", "--output", "json"]), v);
        assert!(!o.confirm() && check_confirmable(&o, false).is_ok());
    }

    #[test]
    fn a_saved_plan_is_applied_without_asking() {
        let o = apply(apply_args(&["--plan", "p.json"]), Verbosity::Quiet);
        assert_eq!(o.saved, Saved::Apply("p.json".into()));
        assert!(!o.confirm() && o.mode == Mode::Apply);
        assert!(check_confirmable(&o, false).is_ok());
        assert_eq!(o.verbosity, Verbosity::Quiet);
    }

    #[test]
    fn force_unlock_asks_unless_yes() {
        let o = apply(apply_args(&["--force-unlock"]), Verbosity::Normal);
        assert!(o.confirm_force_unlock && o.force_unlock);
        let o = apply(apply_args(&["--force-unlock", "--yes"]), Verbosity::Normal);
        assert!(!o.confirm_force_unlock && o.force_unlock);
        // with a saved plan, --force-unlock still asks (only --yes skips it)
        let o = apply(
            apply_args(&["--force-unlock", "--plan", "p.json"]),
            Verbosity::Normal,
        );
        assert!(o.confirm_force_unlock && !o.confirm());
    }

    #[test]
    fn plan_saves_with_out() {
        let cli =
            Cli::try_parse_from(["claw-provision", "plan", "inv.toml", "--out", "p.json"]).unwrap();
        let Command::Plan(a) = cli.command else {
            panic!("not plan")
        };
        let o = plan(a, Verbosity::Normal);
        assert_eq!(o.saved, Saved::Out("p.json".into()));
        assert!(!o.confirm() && o.mode == Mode::Plan);
    }
}
