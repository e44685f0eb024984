//! Everything the user sees: the text plan with diffs, progress and summary, and JSON events.
//!
//! **Invariant:** the planner and runner print nothing; only this module writes to the terminal,
//! and host-supplied text reaches it only through [`terminal::safe`].

pub mod json;
pub mod progress;
pub mod prompt;
pub mod terminal;
pub mod text;

use crate::error::Error;
use std::io::{IsTerminal, Write};

/// Writes `s` to stdout, where `print!` would panic when the reader is gone (`| head` closed
/// the pipe: EPIPE, since Rust ignores SIGPIPE). A failed write is dropped: the command goes
/// on, and its exit status stays its own (not 141 or a panic's 101).
pub fn out(s: &str) {
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

/// Writes `s` to stderr, as [`out`] does to stdout (`2>&1 | head` closes it too).
pub fn err(s: &str) {
    let _ = std::io::stderr().lock().write_all(s.as_bytes());
}

/// Writes `s` to stdout and flushes it: text shown before something slow or interactive
/// (live output of `run`, the selection before connecting).
pub fn out_now(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.flush();
}

/// Writes `bytes` to stdout and flushes them, telling a failed write (a document, a manual
/// page, completions: the caller decides what a closed pipe means).
pub fn out_bytes(bytes: &[u8]) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(bytes).and_then(|()| o.flush())
}

/// Tells how a command failed, unless its report already did: on stderr, and with `--output
/// json` also as `error` events on stdout (see [`json::error_events`]). Argument errors are
/// printed as clap prints them (with colour on a terminal).
pub fn report_error(e: &Error, format: Format) {
    if format == Format::Json {
        let events = json::Events::default();
        for ev in json::error_events(e) {
            events.emit(ev);
        }
    }
    if !e.needs_report() {
        return;
    }
    if let Error::Arguments(c) = e {
        let _ = c.print();
        return;
    }
    err(&format!("{}\n", render_error(e)));
}

/// The message printed for a failed command.
pub fn render_error(e: &Error) -> String {
    match e {
        Error::Config(c) => c.to_string(),
        // clap's own words (usage, `--help` hint), without a second `error: `.
        Error::Arguments(c) => c.render().to_string().trim_end().to_string(),
        // Host-supplied text (stderr, banners) can be part of an error.
        other => format!("error: {}", terminal::safe(&other.to_string())),
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// How much the text output says (`-q`, `-v`, `-vv`). JSON output is the same at every level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q`: errors and the closing summary line only (no plans, progress or step lines).
    Quiet,
    #[default]
    Normal,
    /// `-v`: also the steps that change nothing (plans of unchanged hosts included), and the
    /// time of every step of apply.
    Verbose,
    /// `-vv`: also the script each changing step runs on the host (never a secret value).
    Commands,
}

impl Verbosity {
    /// From the counted `-v` and the `-q` flag (clap makes them exclusive).
    pub fn from_flags(verbose: u8, quiet: bool) -> Self {
        match (quiet, verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, 1) => Verbosity::Verbose,
            (false, _) => Verbosity::Commands,
        }
    }
}

/// Whether text written to a stream may carry colours: it is a terminal and `NO_COLOR` is not
/// set to a non-empty value (<https://no-color.org>).
pub fn color_enabled(no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// Whether to use colour on stdout (plans, summaries).
pub fn color() -> bool {
    color_enabled(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stdout().is_terminal(),
    )
}

/// Whether to use colour on stderr (progress and step lines).
pub fn color_stderr() -> bool {
    color_enabled(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stderr().is_terminal(),
    )
}

/// The process's peak resident memory so far, in KiB (`getrusage`; 0 if unknown).
pub fn peak_rss_kb() -> u64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: initialised by the successful call above (and zeroed before).
    let u = unsafe { u.assume_init() };
    u64::try_from(u.ru_maxrss).unwrap_or(0)
}

/// CPU time (user + system) the process used so far.
pub fn cpu_time() -> std::time::Duration {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: as in `peak_rss_kb`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) } != 0 {
        return std::time::Duration::ZERO;
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { u.assume_init() };
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + std::time::Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn verbosity_levels() {
        assert_eq!(Verbosity::from_flags(0, false), Verbosity::Normal);
        assert_eq!(Verbosity::from_flags(0, true), Verbosity::Quiet);
        assert_eq!(Verbosity::from_flags(1, false), Verbosity::Verbose);
        assert_eq!(Verbosity::from_flags(2, false), Verbosity::Commands);
        assert_eq!(Verbosity::from_flags(5, false), Verbosity::Commands);
        assert!(Verbosity::Quiet < Verbosity::Normal && Verbosity::Verbose < Verbosity::Commands);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(color_enabled(None, true));
        assert!(!color_enabled(None, false));
        assert!(!color_enabled(Some(OsStr::new("1")), true));
        assert!(
            !color_enabled(Some(OsStr::new("0")), true),
            "any non-empty value"
        );
        // an empty NO_COLOR does not count (no-color.org)
        assert!(color_enabled(Some(OsStr::new("")), true));
        assert!(!color_enabled(Some(OsStr::new("")), false));
    }
}
