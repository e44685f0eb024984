//! `run`: one ad-hoc shell command on every selected host, in parallel (bounded by `forks`), over
//! the same connection as `plan`/`apply` (`connect::connect`: keys, known_hosts, become).
//!
//! **Output is streamed with a bound.** Every byte a host prints passes through once: masked
//! (the become password, [`StreamMask`]), written whole to `--output-dir` files when asked, and
//! kept for the terminal and JSON only within `--output-limit` per host and stream (its first
//! and last halves; what lies between is counted and named). The host at the head of the
//! inventory order goes "live" once it has printed for a while without finishing: its stdout
//! is shown as it arrives. The client's memory does not grow with what a host prints.
//!
//! **Invariant:** the command runs with stdin closed (only a become password precedes the EOF,
//! and sudo consumes it); the password never appears in what is shown (masked if echoed).

mod fanout;
mod mask;
mod render;

pub(crate) use fanout::run;
pub(crate) use mask::mask;
pub(crate) use render::{
    host_event, live_end, live_header, summary_event, text_block, text_summary,
};

use crate::secret::Secret;
use crate::ssh::ExecOutput;
use std::path::PathBuf;
use std::time::Duration;

/// Default `--output-limit`: what is kept per host and stream for the terminal and JSON.
pub(crate) const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;

/// Options of an ad-hoc run.
pub(crate) struct Options {
    pub forks: usize,
    pub become_password: Option<Secret>,
    /// The command's connection state (passphrases, key and known_hosts caches, jump chains,
    /// the host keys learned on the way).
    pub ssh: crate::ssh::Client,
    /// Overrides every host's `command_timeout`.
    pub timeout: Option<Duration>,
    /// Bytes kept per host and stream for the terminal and JSON (first and last halves).
    pub output_limit: usize,
    /// Each host's whole stdout and stderr go to `DIR/HOST.stdout` and `DIR/HOST.stderr`.
    pub output_dir: Option<PathBuf>,
    /// Show the head-of-line host's stdout as it arrives ([`Shown::LiveHeader`], [`Shown::Live`]).
    pub live: bool,
}

/// Why a host has no exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub unreachable: bool,
    pub reason: String,
}

/// What one host did.
#[derive(Debug)]
pub(crate) struct HostResult {
    pub name: String,
    pub address: String,
    pub outcome: Result<ExecOutput, Failure>,
    pub elapsed: Duration,
}

impl HostResult {
    /// The command exited 0.
    pub(crate) fn ok(&self) -> bool {
        matches!(&self.outcome, Ok(o) if o.success())
    }

    /// `ok`, `failed` (non-zero exit, signal, timeout, sudo or SSH error) or `unreachable`.
    pub(crate) fn state(&self) -> &'static str {
        match &self.outcome {
            Ok(o) if o.success() => "ok",
            Err(f) if f.unreachable => "unreachable",
            _ => "failed",
        }
    }

    /// `exit 3`, `killed by signal KILL`, `unreachable`, `failed`.
    fn result_word(&self) -> String {
        match &self.outcome {
            Ok(o) => match (&o.exit_status, &o.exit_signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                (None, None) => "no exit status".into(),
            },
            Err(f) if f.unreachable => "unreachable".into(),
            Err(_) => "failed".into(),
        }
    }
}

/// What the caller shows, in order.
pub(crate) enum Shown<'a> {
    /// The head-of-line host goes live: its header ([`live_header`]), then [`Shown::Live`]
    /// text, then [`Shown::Done`] with `live` set.
    LiveHeader(&'a str, &'a str),
    /// Safe text of the live host's stdout, as it arrives.
    Live(&'a str),
    /// A host finished (hosts in inventory order).
    Done { result: &'a HostResult, live: bool },
}

/// The remote command line: the words joined with spaces, as `ssh host WORDS...` does (the
/// remote shell then parses it: quoting, pipes and `;` work as in a terminal).
pub(crate) fn command_line(words: &[String]) -> Result<String, NoCommand> {
    let line = words.join(" ");
    if line.trim().is_empty() {
        return Err(NoCommand);
    }
    Ok(line)
}

/// `run` was given no command (nothing, or only blanks, after `--`).
#[derive(Debug, thiserror::Error)]
#[error("run: no command given; put it after `--`, e.g. `run INVENTORY -- uptime`")]
pub(crate) struct NoCommand;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_joined_like_ssh() {
        let w = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(command_line(&w(&["hostname"])).unwrap(), "hostname");
        assert_eq!(
            command_line(&w(&["echo", "a b", "|", "wc -c"])).unwrap(),
            "echo a b | wc -c"
        );
        assert_eq!(command_line(&w(&["exit 3"])).unwrap(), "exit 3");
        assert_eq!(
            command_line(&[]).unwrap_err().to_string(),
            "run: no command given; put it after `--`, e.g. `run INVENTORY -- uptime`"
        );
        assert!(command_line(&w(&["  "])).is_err());
    }
}
