//! `run`: an ad-hoc command on every selected host, output grouped per host in inventory order,
//! a summary with each host's exit code, exit 1 unless every host exited 0. No playbook needed.

use crate::support::{Lab, claw};
use std::path::Path;

/// The lines of `out` from host `name`'s header up to the next header or the summary.
fn block<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let head = format!("==> {name} (");
    out.lines()
        .skip_while(|l| !l.starts_with(&head))
        .skip(1)
        .take_while(|l| !l.starts_with("==> ") && !l.starts_with("HOST "))
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn adhoc_commands() {
    let lab = Lab::up("t-adhoc", 3);
    // The playbook the inventory names does not exist: `run` does not need it.
    let inv = lab.write_inventory("adhoc.toml", Path::new("/nonexistent/pb.toml"), &[]);
    let inv = inv.to_str().unwrap();

    // Every host, grouped, in inventory order.
    let r = claw(&["run", inv, "--", "hostname"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let heads: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("==> ")).collect();
    assert_eq!(heads.len(), 3, "{}", r.stdout);
    for (i, name) in ["h1", "h2", "h3"].iter().enumerate() {
        assert!(
            heads[i].starts_with(&format!("==> {name} (")) && heads[i].ends_with(": exit 0"),
            "{}",
            r.stdout
        );
        assert_eq!(block(&r.stdout, name), [*name], "{}", r.stdout);
    }
    assert!(r.stdout.contains("3 of 3 hosts exited 0"), "{}", r.stdout);

    // Words are joined as ssh does: the remote shell sees one line.
    let r = claw(
        &[
            "run", inv, "--limit", "h1", "--", "echo", "a", "|", "tr a b",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(block(&r.stdout, "h1"), ["b"], "{}", r.stdout);

    // A non-zero exit: exit code 1, the summary shows it; stderr is shown under the host.
    let r = claw(
        &["run", inv, "--limit", "h2", "--", "echo oops >&2; exit 3"],
        &[],
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        block(&r.stdout, "h2"),
        ["--- stderr", "oops"],
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("h2 ") && l.contains("exit 3")),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("==> h1"), "--limit: {}", r.stdout);

    // Stdin is closed: `cat` ends at once with nothing.
    let r = claw(&["run", inv, "--limit", "h1", "--", "cat; echo done"], &[]);
    assert_eq!(block(&r.stdout, "h1"), ["done"], "{}", r.stdout);

    // become: the lab inventory says become = true; --no-become runs as the login user.
    let login_uid = lab.ssh_ok("h1", "id -u").trim().to_string();
    assert_ne!(login_uid, "0");
    let r = claw(&["run", inv, "--", "id", "-u"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for name in ["h1", "h2", "h3"] {
        assert_eq!(block(&r.stdout, name), ["0"], "{}", r.stdout);
    }
    let r = claw(&["run", inv, "--no-become", "--", "id", "-u"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for name in ["h1", "h2", "h3"] {
        assert_eq!(block(&r.stdout, name), [login_uid.as_str()], "{}", r.stdout);
    }
    let no_become = lab.write_inventory(
        "nobecome.toml",
        Path::new("/nonexistent/pb.toml"),
        &[("become", "false")],
    );
    let r = claw(
        &[
            "run",
            no_become.to_str().unwrap(),
            "--become",
            "--limit",
            "h3",
            "--",
            "id -u",
        ],
        &[],
    );
    assert_eq!(block(&r.stdout, "h3"), ["0"], "{}\n{}", r.stdout, r.stderr);

    // A sudo password (CLAW_BECOME_PASSWORD) is consumed by sudo: the command's stdin is still
    // closed, and the password is never shown, even when the command prints it.
    let pw = lab.write_inventory(
        "clawpw.toml",
        Path::new("/nonexistent/pb.toml"),
        &[("user", "\"clawpw\"")],
    );
    let pw = pw.to_str().unwrap();
    let r = claw(&["run", pw, "--limit", "h1", "--", "id -u; cat"], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("CLAW_BECOME_PASSWORD"),
        "hint: {}",
        r.stdout
    );
    let env = [("CLAW_BECOME_PASSWORD", "labpass")];
    let r = claw(
        &["run", pw, "--limit", "h1", "--", "id -u; cat; echo labpass"],
        &env,
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(block(&r.stdout, "h1"), ["0", "***"], "{}", r.stdout);
    assert!(!format!("{}{}", r.stdout, r.stderr).contains("labpass"));

    // JSON: one event per host (inventory order) with stdout, stderr and exit code; a summary.
    let r = claw(
        &[
            "run",
            inv,
            "--output",
            "json",
            "--",
            "echo out-$(hostname); echo err >&2; [ $(hostname) != h3 ]",
        ],
        &[],
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let hosts: Vec<_> = r
        .events()
        .into_iter()
        .filter(|e| e["event"] == "host")
        .collect();
    assert_eq!(hosts.len(), 3, "{}", r.stdout);
    for (e, name) in hosts.iter().zip(["h1", "h2", "h3"]) {
        assert_eq!(e["host"], name);
        assert_eq!(e["stdout"], format!("out-{name}\n"));
        assert_eq!(e["stderr"], "err\n");
        assert_eq!(e["exit_code"], if name == "h3" { 1 } else { 0 });
    }
    assert_eq!(r.host("h3")["exit_code"], 1);
    assert_eq!(r.host("h3")["state"], "failed");
    assert_eq!(r.host("h1")["state"], "ok");
    assert_eq!(r.summary()["command"], "run");

    // A stopped host is reported unreachable with the reason; the others run.
    lab.cmd(&["stop", "h2"]);
    let r = claw(&["run", inv, "--", "hostname"], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(block(&r.stdout, "h1"), ["h1"], "{}", r.stdout);
    assert_eq!(block(&r.stdout, "h3"), ["h3"], "{}", r.stdout);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("h2 ") && l.contains("unreachable")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("error: h2 ("), "the reason: {}", r.stdout);
    let r = claw(&["run", inv, "--output", "json", "--", "true"], &[]);
    assert_eq!(r.host("h2")["state"], "unreachable");
    assert!(
        r.host("h2")["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(r.host("h1")["exit_code"], 0);
}

#[test]
fn adhoc_bad_input() {
    let s = crate::support::Scratch::new();
    let inv = s.file("inv.toml", "[hosts.a]\naddress = \"127.0.0.1\"\n");
    let inv = inv.to_str().unwrap();
    let r = claw(&["run", inv, "--limit", "nosuch", "--", "true"], &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--limit nosuch"), "{}", r.stderr);
    let r = claw(&["run", inv, "--", " "], &[]);
    assert!(r.stderr.contains("no command"), "{}", r.stderr);
    let bad = s.file("bad.toml", "[hosts.a]\nadress = \"x\"\n");
    let r = claw(&["run", bad.to_str().unwrap(), "--", "true"], &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("bad.toml"), "{}", r.stderr);
}
