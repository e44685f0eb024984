//! Error types shared across layers, and the mapping from errors to exit codes.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in an input file, with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub col: usize,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, line: usize, col: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }

    /// An error at a byte offset of `src`.
    pub fn at(file: &Path, src: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, col) = line_col(src, offset);
        Self::new(file, line, col, message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.col > 0 {
                write!(f, ":{}", self.col)?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading inputs; reported together.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

/// Reads an input file; `what` names it in the error ("inventory", "playbook").
pub fn read_source(path: &Path, what: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, 0, 0, format!("cannot read {what}: {e}")))
}

/// The directory relative paths of an input file are resolved against.
pub fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// How a command ended when nothing went wrong; with [`Error::code`] it decides the exit status
/// (README "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: nothing to change, or every change made (exit 0).
    Done,
    /// `--detailed-exitcode` only: changes are pending (plan) or were made (apply) (exit 2).
    Changes,
}

impl Outcome {
    /// The process exit code: 0, or 2 for [`Outcome::Changes`].
    pub fn code(self) -> i32 {
        match self {
            Outcome::Done => 0,
            Outcome::Changes => 2,
        }
    }
}

/// The top-level error of a command: it decides the exit code ([`Error::code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Command-line arguments clap refused; shown as clap renders them.
    #[error("{}", .0.render())]
    Arguments(clap::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
    /// Some hosts failed; the message says what could not be done because of them.
    #[error("{0}")]
    HostsFailed(String),
    /// A host failed or was unreachable, or a command failed on one: the report (summary,
    /// events) already says which, nothing more is printed.
    #[error("a host failed")]
    Reported,
    /// The operator answered no to `Apply N changes? [y/N]`; the report already says that
    /// nothing was changed.
    #[error("cancelled: nothing was changed")]
    Declined,
    /// Ctrl-C: every host stopped after its running step; the report already says so.
    #[error("interrupted (Ctrl-C)")]
    Interrupted,
}

impl Error {
    /// The process exit code: 130 after Ctrl-C, 1 for every other error (argument errors and a
    /// declined confirmation included).
    pub fn code(&self) -> i32 {
        match self {
            Error::Interrupted => 130,
            _ => 1,
        }
    }

    /// Whether the error still has to be shown (false: the run's report already told it).
    pub fn needs_report(&self) -> bool {
        !matches!(self, Error::Reported | Error::Declined | Error::Interrupted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 8), (2, 3));
        let e = ConfigError::at(Path::new("inv.toml"), src, 8, "bad");
        assert_eq!(e.to_string(), "inv.toml:2:3: bad");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Outcome::Done.code(), 0);
        assert_eq!(Outcome::Changes.code(), 2);
        assert_eq!(Error::Usage("x".into()).code(), 1);
        assert_eq!(Error::Declined.code(), 1);
        assert_eq!(Error::Reported.code(), 1);
        assert_eq!(Error::Interrupted.code(), 130);
        let clap = <clap::Command>::new("x").try_get_matches_from(["x", "--nope"]);
        let e = Error::Arguments(clap.expect_err("an unknown flag"));
        assert_eq!(e.code(), 1, "never clap's own 2");
        assert!(e.needs_report() && !Error::Interrupted.needs_report());
    }
}
