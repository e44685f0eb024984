//! The firewall's safety net on a full host (systemd as PID 1): the timer that restores the
//! previous ruleset is a systemd transient unit, not a process of the SSH session, so it fires
//! even when every process of the session is killed (what logind's `KillUserProcesses=yes` does
//! at the end of a session; here: every process of ssh.service, where the sessions live). And
//! when the saved ruleset cannot be loaded back, a minimal one keeps the SSH port open.

use crate::support::{Lab, Scratch, claw, claw_spawn};
use std::process::Command;
use std::time::{Duration, Instant};

const LOCKOUT: (&str, &str) = ("CLAW_PROVISION_TEST_ALLOW_SSH_LOCKOUT", "1");

/// Runs a sh script as root in the host (docker exec); it must succeed.
fn exec(lab: &Lab, script: &str) -> String {
    let o = lab.exec("h1", &["sh", "-c", script]);
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn table(lab: &Lab) -> String {
    exec(
        lab,
        "nft list table inet claw_provision 2>/dev/null || true",
    )
}

fn playbook(s: &Scratch, name: &str, args: &str) -> std::path::PathBuf {
    s.file(
        name,
        &format!(
            "name = \"fw\"\nhosts = \"h1\"\n\n[[steps]]\nname = \"firewall\"\nkind = \"firewall\"\n{args}\n"
        ),
    )
}

fn plain_ssh(lab: &Lab) -> bool {
    Command::new("ssh")
        .arg("-F")
        .arg(lab.dir.join("ssh_config"))
        .args(["-o", "ConnectTimeout=3", "h1", "true"])
        .output()
        .unwrap()
        .status
        .success()
}

/// Waits until the live table is no longer `before` (the new ruleset is in place).
fn wait_changed(lab: &Lab, before: &str) {
    let t = Instant::now();
    while table(lab) == before {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the ruleset never changed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "{what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_firewall_revert_outlives_the_session_and_falls_back_to_a_minimal_ruleset() {
    let lab = Lab::up_full("swap-fw", 1);
    let s = Scratch::new();
    let good = lab.write_inventory("fw.toml", &playbook(&s, "fw.toml", ""), &[]);
    let r = claw(&["apply", good.to_str().unwrap(), "--yes"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let before = table(&lab);
    assert!(
        before.contains("tcp dport { 22, 80, 443 } accept"),
        "{before}"
    );
    assert!(plain_ssh(&lab));
    let bad = lab.write_inventory(
        "lockout.toml",
        &playbook(
            &s,
            "lockout.toml",
            "ports = [80, 443]\nconfirm_timeout = \"20s\"",
        ),
        &[],
    );
    let bad = bad.to_str().unwrap();

    // 1. The client dies and so does every process of the SSH sessions: the host still puts
    //    the previous table back, by its own transient unit.
    let mut run = claw_spawn(&["apply", bad, "--yes", "--output", "json"], &[LOCKOUT]).0;
    wait_changed(&lab, &before);
    let units = exec(
        &lab,
        "systemctl list-units --all --plain --no-legend 'claw-provision-fw-rollback-*'",
    );
    assert!(
        units.contains("claw-provision-fw-rollback-") && units.contains("running"),
        "the rollback runs as a transient unit: {units}"
    );
    run.kill().unwrap();
    run.wait().unwrap();
    // What logind does to a session's scope: every process of ssh.service, sshd included.
    exec(&lab, "systemctl kill --signal=SIGKILL ssh.service");
    wait_for("the ssh sessions are gone", 20, || {
        !exec(&lab, "ps -eo args")
            .lines()
            .any(|l| l.starts_with("sshd"))
    });
    exec(
        &lab,
        "systemctl reset-failed ssh.service; systemctl start ssh.service",
    );
    wait_for("the previous table is back", 60, || table(&lab) == before);
    assert!(plain_ssh(&lab));
    assert_eq!(
        exec(
            &lab,
            "cat /var/lib/claw-provision/firewall/claw_provision.pending.*.rolled-back"
        ),
        "previous\n"
    );

    // 2. The saved ruleset is unloadable: the minimal ruleset keeps SSH open, the rest dropped,
    //    and the client (still connected) says so.
    let run = claw_spawn(&["apply", bad, "--yes", "--output", "json"], &[LOCKOUT]);
    wait_changed(&lab, &before);
    exec(
        &lab,
        "for f in /var/lib/claw-provision/firewall/claw_provision.rollback.*; do echo 'this is not nft {' > \"$f\"; done",
    );
    let r = run.wait();
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let err = r.host("h1")["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("could not load the previous ruleset back and loaded a minimal one"),
        "{err}"
    );
    let t = table(&lab);
    assert!(
        t.contains("tcp dport 22 accept") && t.contains("policy drop") && !t.contains("443"),
        "{t}"
    );
    assert!(plain_ssh(&lab), "SSH open under the minimal ruleset");
    // The next apply sees the drift and puts the desired table back.
    let r = claw(&["apply", good.to_str().unwrap(), "--yes"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(table(&lab), before);
}
