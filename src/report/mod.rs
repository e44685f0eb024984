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
