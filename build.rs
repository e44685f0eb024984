//! Embeds the git commit the binary is built from (`claw-provision --version`), or `unknown`
//! outside a git checkout (e.g. a crate tarball).

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CLAW_GIT_COMMIT={commit}");
    // A new commit or checkout changes one of these. In a worktree, HEAD is the worktree's own
    // and the refs are the main repository's (`--git-common-dir`); a path that does not exist
    // would make cargo rerun this script on every build, so only existing ones are named.
    let dir = git(&["rev-parse", "--git-dir"]);
    let common = git(&["rev-parse", "--git-common-dir"]).or_else(|| dir.clone());
    let watched = [
        dir.map(|d| format!("{d}/HEAD")),
        common.as_ref().map(|c| format!("{c}/refs/heads")),
        common.as_ref().map(|c| format!("{c}/packed-refs")),
    ];
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
