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

/// The probe snippet. `unless` is an operator-written read-only check; it runs with stdin closed,
/// in a shell of its own that gets its text from the environment (never on a command line).
pub(crate) fn command(id: usize, creates: Option<&str>, unless: Option<&str>) -> String {
    let mut s = String::from("if false; then :\n");
    if let Some(c) = creates {
        s.push_str(&format!(
            "elif [ -e {} ]; then printf '@%s\\tcreates\\n' {id}\n",
            quote(c)
        ));
    }
    if let Some(u) = unless {
        // A shell of its own (the probe's functions and variables are not the command's), but
        // the text goes through the environment, not the arguments: `ps` shows every process's
        // arguments to every account, and a guard can hold a secret.
        s.push_str(&format!("elif (cd / && CLAW_UNLESS={} exec sh -c 'c=$CLAW_UNLESS; unset CLAW_UNLESS; eval \"$c\"') </dev/null >/dev/null 2>&1; then printf '@%s\\tunless\\n' {id}\n", quote(u)));
    }
    s.push_str(&format!("else printf '@%s\\trun\\n' {id}; fi\n"));
    s
}

pub(crate) fn parse(fields: &[&str]) -> Result<GuardState, FactError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(unless: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command(7, None, Some(unless)))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn unless_runs_in_its_own_shell_and_never_on_a_command_line() {
        assert_eq!(run("true"), "@7\tunless\n");
        assert_eq!(run("false"), "@7\trun\n");
        // A syntax error is a failed guard, not a broken probe.
        assert_eq!(run("if then fi ("), "@7\trun\n");
        // The guard's own shell's arguments do not hold its text (a secret in it would show
        // in `ps`): grep finds the marker only if it is on the command line.
        assert_eq!(
            run("grep -q MARKER-4c1d /proc/$$/cmdline || exit 1"),
            "@7\trun\n"
        );
        // ... and the check can tell: the same text handed as an argument is found.
        let out = std::process::Command::new("sh")
            .args(["-c", "grep -q MARKER-4c1d /proc/$$/cmdline"])
            .status()
            .unwrap();
        assert!(out.success());
        // Quotes, dollars and newlines pass whole.
        assert_eq!(run("x='a\"b$c'\n[ \"$x\" = 'a\"b$c' ]"), "@7\tunless\n");
    }
}
