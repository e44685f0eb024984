//! Failures stay on their host: one host down, a command past its timeout.

use crate::support::{Lab, Scratch, claw};

#[test]
fn one_host_down_others_applied() {
    let lab = Lab::up("t-down", 3);
    lab.cmd(&["stop", "h2"]);
    let inv = lab.inventory();
    let r = claw(
        &["apply", inv.to_str().unwrap(), "--yes", "--output", "json"],
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.host("h2")["state"], "unreachable", "{}", r.stdout);
    assert!(r.host("h2")["error"].as_str().unwrap().contains("h2"));
    assert_eq!(r.host("h1")["state"], "changed");
    assert_eq!(r.host("h3")["state"], "changed");
    let text = claw(&["plan", inv.to_str().unwrap()], &[]);
    assert_eq!(text.code, 1);
    assert!(text.stdout.contains("unreachable"), "{}", text.stdout);
    lab.cmd(&["start", "h2"]);
    // One host at a time converges too.
    let r = claw(
        &[
            "apply",
            inv.to_str().unwrap(),
            "--yes",
            "--output",
            "json",
            "--forks",
            "1",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "a rerun converges: {}", r.stdout);
    assert_eq!(r.host("h2")["state"], "changed");
    assert_eq!(r.host("h1")["state"], "ok");
}

#[test]
fn command_timeout_fails_that_host_cleanly() {
    let lab = Lab::up("t-timeout", 2);
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        r#"name = "slow"
[vars]
delay = "0"

[[steps]]
name = "slow command"
kind = "command"
run = "sleep {{ delay }}; touch /srv/slept"
creates = "/srv/slept"
timeout = 2

[[steps]]
name = "after"
kind = "file"
path = "/srv/after"
content = "after\n"
"#,
    );
    s.file("templates/.keep", "");
    let inv = lab.write_inventory("slow.toml", &pb, &[]);
    // Only h1 is slow: give it the delay through a host-specific limit run.
    let start = std::time::Instant::now();
    let r = claw(
        &[
            "apply",
            inv.to_str().unwrap(),
            "--yes",
            "--output",
            "json",
            "--limit",
            "h1",
            "-e",
            "delay=37",
        ],
        &[],
    );
    assert!(
        start.elapsed().as_secs() < 25,
        "the timeout must stop the command"
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    let h1 = r.host("h1");
    assert_eq!(h1["state"], "failed");
    assert_eq!(h1["failed_at"], "slow command");
    assert!(
        h1["error"].as_str().unwrap().contains("timed out after 2s"),
        "{h1}"
    );
    assert_eq!(
        lab.ssh_ok("h1", "ls /srv"),
        "",
        "the host stopped at the failed step"
    );
    assert_eq!(
        lab.ssh_ok("h1", "pgrep -f 'sleep [3]7' || true"),
        "",
        "the remote command was killed"
    );
    let r = claw(
        &["apply", inv.to_str().unwrap(), "--yes", "--output", "json"],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(lab.ssh_ok("h2", "ls /srv"), "after\nslept\n");
}

#[test]
fn background_child_does_not_hold_the_run() {
    let lab = Lab::up("t-bg", 1);
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        r#"name = "bg"
[[steps]]
name = "start something in the background"
kind = "command"
run = "sleep 29 & touch /srv/started"
creates = "/srv/started"
"#,
    );
    let inv = lab.write_inventory("bg.toml", &pb, &[]);
    let start = std::time::Instant::now();
    let r = claw(
        &["apply", inv.to_str().unwrap(), "--yes", "--output", "json"],
        &[],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["changed"], 1);
    assert!(
        start.elapsed().as_secs() < 15,
        "a child holding stdout open must not hold the run until it ends ({:?})",
        start.elapsed()
    );
    let _ = lab.ssh("h1", "sudo pkill -f 'sleep [2]9' || true");
}

/// A host whose link goes down in the middle of a step: the run notices through keepalives (no
/// hang, no waiting for the command's timeout), fails that host at that step, finishes the
/// other one, and a rerun converges once the link is back.
#[test]
fn link_down_mid_step_fails_that_host_without_hanging() {
    use std::time::{Duration, Instant};
    let lab = Lab::up("t-linkdown", 2);
    let s = Scratch::new();
    let pb = s.file(
        "slow.toml",
        "name = \"slow\"\n\n[defaults]\nslow = 0\n\n[[steps]]\nname = \"slow\"\nkind = \"command\"\nrun = \"sleep {{ slow }}; touch /opt/slow-done\"\ncreates = \"/opt/slow-done\"\n\n[[steps]]\nname = \"after\"\nkind = \"file\"\npath = \"/opt/after\"\ncontent = \"x\\n\"\n",
    );
    let inv = lab.write_inventory("slow.toml", &pb, &[("keepalive_interval", "2")]);
    let text = std::fs::read_to_string(&inv).unwrap();
    std::fs::write(
        &inv,
        text.replacen("[hosts.h1]\n", "[hosts.h1]\nvars = { slow = 25 }\n", 1),
    )
    .unwrap();
    let inv = inv.to_str().unwrap();
    let started = Instant::now();
    let run = crate::support::claw_spawn(&["apply", inv, "--yes", "--output", "json"], &[]);
    while !lab.ssh("h1", "pgrep -f 'sleep [2]5'").status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "h1 never started its step"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.cmd(&["link", "h1", "down"]);
    let cut = Instant::now();
    let r = run.wait();
    let took = cut.elapsed();
    assert!(took < Duration::from_secs(20), "the run hung for {took:?}");
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let h1 = r.host("h1");
    assert_eq!(h1["state"], "failed", "{h1}");
    assert_eq!(h1["failed_at"], "slow", "{h1}");
    assert_eq!(r.host("h2")["state"], "changed", "{}", r.stdout);
    lab.cmd(&["link", "h1", "up"]);
    // h1's sshd learns that the connection is gone only when it next writes to it (when the
    // command ends; the lab sets no ClientAliveInterval): until then, the lost run's apply lock
    // stands (an operator would wait, or use --force-unlock).
    let t = Instant::now();
    while lab
        .ssh(
            "h1",
            "sudo test -s /var/lib/claw-provision/lock/apply.holder",
        )
        .status
        .success()
    {
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "the lost run's lock stayed"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let r = claw(
        &["apply", inv, "--yes", "--output", "json", "-e", "slow=0"],
        &[],
    );
    assert_eq!(r.code, 0, "a rerun converges: {}\n{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["state"], "changed", "{}", r.stdout);
}
