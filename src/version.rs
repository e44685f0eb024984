//! The build's version as `--version` shows it and saved plans record it: the crate version
//! and the git commit it was built from (build.rs sets `CLAW_GIT_COMMIT`).

/// `--version`: the crate version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CLAW_GIT_COMMIT"),
    ")"
);
