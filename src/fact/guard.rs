//! Fact: the guards of a `command` step (`creates` path exists? `unless` command succeeds?).

use super::FactError;
use crate::quote::quote;

/// What the guards of a command say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardState {
    /// The `creates` path exists: nothing to run.
    CreatesExists,
    /// The `unless` command succeeded: nothing to run.
    UnlessSucceeded,
    /// The guards say the command must run (or there are none).
    MustRun,
}

/// The probe snippet. `unless` is an operator-written read-only check; it runs with stdin closed.
pub fn command(id: usize, creates: Option<&str>, unless: Option<&str>) -> String {
    let mut s = String::from("if false; then :\n");
    if let Some(c) = creates {
        s.push_str(&format!(
            "elif [ -e {} ]; then printf '@%s\\tcreates\\n' {id}\n",
            quote(c)
        ));
    }
    if let Some(u) = unless {
        s.push_str(&format!("elif (cd / && sh -c {}) </dev/null >/dev/null 2>&1; then printf '@%s\\tunless\\n' {id}\n", quote(u)));
    }
    s.push_str(&format!("else printf '@%s\\trun\\n' {id}; fi\n"));
    s
}

pub fn parse(fields: &[&str]) -> Result<GuardState, FactError> {
    match fields {
        ["creates"] => Ok(GuardState::CreatesExists),
        ["unless"] => Ok(GuardState::UnlessSucceeded),
        ["run"] => Ok(GuardState::MustRun),
        _ => Err(FactError(format!(
            "bad guard record `{}`",
            fields.join("\t")
        ))),
    }
}
