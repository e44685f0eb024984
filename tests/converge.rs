//! The resource contract on real hosts: plan, apply, a no-op second apply, drift repair,
//! removal, literal values; round trips checked against the hosts' sshd logs.

use crate::support::{Lab, Scratch, claw, log_len, repo, sshd_counts};

/// inode, mtime and ctime (ns) of every managed path of the demo playbook.
fn stamps(lab: &Lab, host: &str) -> String {
    lab.ssh_ok(
        host,
        "cd /opt/demo && sudo stat -c '%n %i %Y.%y %Z.%z' /opt/demo /opt/demo/conf /opt/demo/motd /opt/demo/index.html /opt/demo/conf/app.conf /opt/demo/installed-at",
    )
}

#[test]
fn demo_converges_and_second_apply_changes_nothing() {
    let lab = Lab::up("t-converge", 3);
    let inv = lab.inventory();
    let inv = inv.to_str().unwrap();

    // Fresh hosts: the plan lists creates and touches nothing.
    let plan = claw(&["plan", inv], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("+ create  dir /opt/demo"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("+ create  template /opt/demo/conf/app.conf"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("! run     command"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("then handlers: reload app"),
        "{}",
        plan.stdout
    );
    assert_eq!(
        lab.ssh_ok("h1", "ls /opt"),
        "",
        "plan must not change the host"
    );
    let p2 = claw(&["plan", inv, "--detailed-exitcode"], &[]);
    assert_eq!(p2.code, 2, "detailed exit code with pending changes");

    // First apply.
    let first = claw(
        &[
            "apply",
            inv,
            "--yes",
            "--output",
            "json",
            "--detailed-exitcode",
        ],
        &[],
    );
    assert_eq!(
        first.code, 2,
        "changes made: {}\n{}",
        first.stdout, first.stderr
    );
    for h in lab.hosts() {
        let s = first.host(&h.name);
        assert_eq!(s["state"], "changed", "{s}");
        assert_eq!(s["failed"], 0);
        assert_eq!(s["handlers"], serde_json::json!(["reload app"]));
    }
    let conf = lab.ssh_ok("h2", "sudo cat /opt/demo/conf/app.conf");
    assert!(conf.contains("on h2 ("), "{conf}");
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "sudo stat -c '%a %U' /opt/demo/conf/app.conf /opt/demo/conf"
        ),
        "640 root\n750 root\n"
    );
    assert!(lab.ssh_ok("h1", "ls /opt/demo").contains("reloaded"));

    // Second apply: nothing changes, 1 connection and at most 2 round trips per host, as sshd saw it.
    let before: Vec<String> = lab.hosts().iter().map(|h| stamps(&lab, &h.name)).collect();
    let marks: Vec<usize> = lab.hosts().iter().map(|h| log_len(&h.sshd_log)).collect();
    let second = claw(
        &[
            "apply",
            inv,
            "--yes",
            "--output",
            "json",
            "--detailed-exitcode",
        ],
        &[],
    );
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    for (i, h) in lab.hosts().iter().enumerate() {
        let s = second.host(&h.name);
        assert_eq!(s["state"], "ok", "{s}");
        assert_eq!(s["changed"], 0, "{s}");
        assert_eq!(s["connections"], 1, "{s}");
        let rt = s["round_trips"].as_u64().unwrap();
        assert!(rt <= 2, "round trips {rt}");
        // What the tool believes equals what sshd logged.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (conns, sessions) = sshd_counts(&h.sshd_log, marks[i]);
        assert_eq!(conns, 1, "sshd connections on {}", h.name);
        assert_eq!(sessions as u64, rt, "sshd sessions on {}", h.name);
        assert_eq!(s["channels"].as_u64().unwrap(), rt);
    }
    let after: Vec<String> = lab.hosts().iter().map(|h| stamps(&lab, &h.name)).collect();
    assert_eq!(
        before, after,
        "a no-op apply must not touch inode, mtime or ctime"
    );

    // Drift made by hand: plan shows `~` with a diff, apply repairs it.
    lab.ssh_ok("h1", "echo 'edited by hand' | sudo tee -a /opt/demo/motd >/dev/null; sudo chmod 600 /opt/demo/index.html /opt/demo/conf/app.conf");
    let drift = claw(&["plan", inv, "--limit", "h1"], &[]);
    assert_eq!(drift.code, 0, "{}", drift.stderr);
    assert!(
        drift
            .stdout
            .contains("~ update  file /opt/demo/motd: content"),
        "{}",
        drift.stdout
    );
    assert!(
        drift.stdout.contains("-edited by hand"),
        "diff expected:\n{}",
        drift.stdout
    );
    assert!(
        drift
            .stdout
            .contains("~ update  template /opt/demo/conf/app.conf: mode 0600 -> 0640"),
        "{}",
        drift.stdout
    );
    assert!(
        drift.stdout.contains("ok      file /opt/demo/index.html"),
        "an unmanaged mode is not drift: {}",
        drift.stdout
    );
    assert!(
        drift.stdout.contains("h1 (") && !drift.stdout.contains("h2 ("),
        "--limit"
    );
    let fix = claw(
        &["apply", inv, "--yes", "--limit", "h1", "--output", "json"],
        &[],
    );
    assert_eq!(fix.code, 0, "{}", fix.stderr);
    assert_eq!(
        fix.host("h1")["changed"],
        2,
        "motd and app.conf repaired; index.html keeps its mode (not managed)"
    );
    assert_eq!(
        lab.ssh_ok("h1", "sudo stat -c %a /opt/demo/conf/app.conf"),
        "640\n"
    );
    assert!(
        !lab.ssh_ok("h1", "cat /opt/demo/motd")
            .contains("edited by hand")
    );
    let again = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(again.summary()["totals"]["changed"], 0, "{}", again.stdout);
}

#[test]
fn absent_removes_and_values_stay_literal() {
    let lab = Lab::up("t-absent", 1);
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        r#"name = "literal"
[vars]
evil = "$(touch /tmp/pwned-var) '; echo pwned; `touch /tmp/pwned-tick`"
evil_name = "$(touch pwned) '; echo \"pwned\" `id`"

[[steps]]
name = "dir"
kind = "dir"
path = "/srv/lit"

[[steps]]
name = "file with metacharacters"
kind = "file"
path = "/srv/lit/{{ evil_name }}"
content = "{{ evil }}\n"

[[steps]]
name = "templated"
kind = "template"
path = "/srv/lit/t.conf"
src = "t.tera"

[[steps]]
name = "echo quoted"
kind = "command"
run = "printf '%s' {{ evil | shell_quote }} > /srv/lit/cmd-out"
creates = "/srv/lit/cmd-out"
"#,
    );
    s.file("templates/t.tera", "v={{ evil }}\n");
    let inv = lab.write_inventory("lit.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let r = claw(&["apply", inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let evil = "$(touch /tmp/pwned-var) '; echo pwned; `touch /tmp/pwned-tick`";
    let evil_name = "$(touch pwned) '; echo \"pwned\" `id`";
    assert_eq!(
        lab.ssh_ok("h1", "ls /srv/lit | LC_ALL=C sort"),
        format!("{evil_name}\ncmd-out\nt.conf\n")
    );
    assert_eq!(
        lab.ssh_ok(
            "h1",
            &format!("cat /srv/lit/{}", claw_provision::quote::quote(evil_name))
        ),
        format!("{evil}\n")
    );
    assert_eq!(lab.ssh_ok("h1", "cat /srv/lit/cmd-out"), evil);
    assert_eq!(
        lab.ssh_ok("h1", "cat /srv/lit/t.conf"),
        format!("v={evil}\n")
    );
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "ls /tmp/pwned-var /tmp/pwned-tick /pwned 2>&1 | grep -c 'No such' || true"
        )
        .trim(),
        "3",
        "nothing ran"
    );

    // Now declare them absent: removed, and a second run is a no-op.
    let pb2 = s.file(
        "pb2.toml",
        r#"name = "absent"
[[steps]]
name = "file gone"
kind = "file"
path = "/srv/lit/t.conf"
state = "absent"

[[steps]]
name = "dir gone"
kind = "dir"
path = "/srv/lit"
state = "absent"
"#,
    );
    let inv2 = lab.write_inventory("absent.toml", &pb2, &[]);
    let inv2 = inv2.to_str().unwrap();
    let plan = claw(&["plan", inv2], &[]);
    assert!(
        plan.stdout.contains("- remove  file /srv/lit/t.conf"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("- remove  dir /srv/lit"),
        "{}",
        plan.stdout
    );
    let r = claw(&["apply", inv2, "--yes", "--output", "json"], &[]);
    assert_eq!(r.host("h1")["changed"], 2, "{}", r.stdout);
    assert_eq!(lab.ssh_ok("h1", "ls /srv"), "");
    let r = claw(&["apply", inv2, "--yes", "--output", "json"], &[]);
    assert_eq!(r.host("h1")["changed"], 0, "{}", r.stdout);
    let _ = repo();
}

#[test]
fn hostile_parent_directory_is_never_executed() {
    let lab = Lab::up("t-parent", 1);
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        r#"name = "parent"
[[steps]]
name = "file in a missing, hostile directory"
kind = "file"
path = "/srv/$(touch pwned-parent)`touch pwned-tick`/f"
content = "x\n"
"#,
    );
    let inv = lab.write_inventory("parent.toml", &pb, &[]);
    let r = claw(
        &["apply", inv.to_str().unwrap(), "--yes", "--output", "json"],
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    let h = r.host("h1");
    assert!(
        h["error"].as_str().unwrap().contains("does not exist"),
        "{h}"
    );
    let found = lab.ssh_ok(
        "h1",
        "sudo find / -xdev -name 'pwned-*' 2>/dev/null; ls /srv",
    );
    assert_eq!(found, "", "nothing ran and nothing was created");
}
