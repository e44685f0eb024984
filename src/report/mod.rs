//! Everything the user sees: the text plan with diffs, progress and summary, and JSON events.
//!
//! **Invariant:** the planner and runner print nothing; only this module writes to the terminal.

pub mod json;
pub mod text;

use std::io::IsTerminal;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Whether to use colour on stdout.
pub fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
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
