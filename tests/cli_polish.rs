//! Operators' habits (issue 8), offline parts: `--version` names the commit, shell completions
//! and the manual page are generated from the same command definitions.

use crate::support::{claw, repo};

#[test]
fn version_names_the_commit() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .expect("git");
    let head = String::from_utf8(head.stdout).unwrap().trim().to_string();
    assert_eq!(head.len(), 12, "git rev-parse: {head:?}");
    let r = claw(&["--version"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout.trim(),
        format!(
            "claw-provision {} (commit {head})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = claw(&["completions", shell], &[]);
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        // (fish writes options as `-l limit`)
        for word in ["plan", "apply", "validate", "limit", "detailed-exitcode"] {
            assert!(r.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    // The bash script is valid bash, and completing `claw-provision pl` offers `plan`.
    let r = claw(&["completions", "bash"], &[]);
    let s = crate::support::Scratch::new();
    let f = s.file("c.bash", &r.stdout);
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". {}; f=$(complete -p claw-provision | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p'); COMP_WORDS=(claw-provision pl); COMP_CWORD=1; \"$f\" claw-provision pl claw-provision; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            f.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "plan");
    let r = claw(&["completions", "tcsh"], &[]);
    assert_eq!(
        r.code, 1,
        "an unknown shell is a usage error (1, not clap's 2)"
    );
    assert!(r.stderr.contains("possible values"), "{}", r.stderr);
}

#[test]
fn manual_page() {
    let r = claw(&["man"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with(".ie") || r.stdout.contains(".TH claw-provision"),
        "{}",
        &r.stdout[..200.min(r.stdout.len())]
    );
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH SUBCOMMANDS",
        "claw\\-provision\\-plan",
    ] {
        assert!(
            r.stdout.contains(section),
            "no {section} in the manual page"
        );
    }
}

#[test]
fn init_scaffolds_a_valid_project_and_never_overwrites() {
    let s = crate::support::Scratch::new();
    let dir = s.dir.path().join("site");
    let d = dir.to_str().unwrap();
    let r = claw(&["init", d], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for f in ["inventory.toml", "playbook.toml", "templates/app.conf.tera"] {
        assert!(dir.join(f).is_file(), "{f}");
        assert!(r.stdout.contains(f), "{}", r.stdout);
    }
    // What init writes passes the offline checks as it is.
    let inv = dir.join("inventory.toml");
    let r = claw(&["validate", inv.to_str().unwrap()], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("ok: 1 hosts"), "{}", r.stdout);
    // A second init refuses and leaves the files alone.
    std::fs::write(&inv, "# mine\n").unwrap();
    let r = claw(&["init", d], &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&inv).unwrap(), "# mine\n");
}
