//! `firewall` (nftables) on light hosts, each its own network namespace (so nft there only
//! affects that host): listeners on 22/80/443/8080 in h1, connections tried from h2 and h3.
//! Open ports connect, others time out (dropped, not reset); a second apply changes nothing;
//! a hand edit of our table is found by plan and replaced; another table survives; a port open
//! to one peer only (its port and sources rendered per host: a source rendered empty names
//! nothing, a peer without sources opens nothing); a port that renders to no number and a
//! ruleset that would close the SSH port are refused at plan time; and all of it again with
//! sshd on port 2222.

use crate::support::{Lab, Scratch, claw};
use std::path::PathBuf;
use std::process::Command;

/// How a TCP connection from `from` to `addr:port` ends.
#[derive(Debug, PartialEq)]
enum Tcp {
    Connected,
    Refused,
    TimedOut,
}

fn connect(lab: &Lab, from: &str, addr: &str, port: u16) -> Tcp {
    let script = format!("exec 3<>/dev/tcp/{addr}/{port}");
    let o = lab.exec(from, &["timeout", "3", "bash", "-c", &script]);
    let err = String::from_utf8_lossy(&o.stderr);
    match o.status.code() {
        Some(0) => Tcp::Connected,
        Some(124) => Tcp::TimedOut,
        _ if err.contains("refused") => Tcp::Refused,
        c => panic!("connect {from} -> {addr}:{port}: exit {c:?}: {err}"),
    }
}

/// Runs a sh script as root in a host; it must succeed.
fn exec(lab: &Lab, host: &str, script: &str) -> String {
    let o = lab.exec(host, &["sh", "-c", script]);
    assert!(
        o.status.success(),
        "{host}: {script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The live listing of our table on h1 (empty when there is none).
fn table(lab: &Lab) -> String {
    exec(
        lab,
        "h1",
        "nft list table inet claw_provision 2>/dev/null || true",
    )
}

fn playbook(s: &Scratch, name: &str, args: &str) -> PathBuf {
    s.file(
        name,
        &format!(
            "name = \"firewall\"\nhosts = \"h1\"\n\n[[steps]]\nname = \"firewall\"\nkind = \"firewall\"\n{args}\n"
        ),
    )
}

/// Applies and returns the number of changed steps on h1.
fn apply(inv: &str) -> u64 {
    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    r.host("h1")["changed"].as_u64().unwrap()
}

#[test]
fn firewall_drops_what_is_not_open() {
    let lab = Lab::up("t-firewall", 3);
    let h1 = lab.host("h1").address;
    // Listeners in h1 (python3 is the machine's /usr, shared by light hosts); sshd is on 22.
    exec(
        &lab,
        "h1",
        &format!(
            "cd /tmp && for p in 80 443 8080; do setsid -f python3 -m http.server $p --bind {h1} </dev/null >/dev/null 2>&1; done; \
             for p in 80 443 8080; do for i in $(seq 100); do (exec 3<>/dev/tcp/{h1}/$p) 2>/dev/null && break; sleep 0.1; done; done"
        ),
    );
    for p in [22, 80, 443, 8080] {
        assert_eq!(
            connect(&lab, "h2", &h1, p),
            Tcp::Connected,
            "port {p} before"
        );
    }
    // A table that is not ours.
    exec(
        &lab,
        "h1",
        "nft add table inet other && nft add chain inet other keep '{ type filter hook input priority 10; policy accept; }' && nft add rule inet other keep tcp dport 9999 counter",
    );

    let s = Scratch::new();
    let inv = lab.write_inventory("fw.toml", &playbook(&s, "fw.toml", ""), &[]);
    let inv = inv.to_str().unwrap();
    let plan = claw(&["plan", inv], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("nftables table inet claw_provision")
            && plan.stdout.contains("tcp dport { 22, 80, 443 } accept"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("not restored after a reboot"),
        "{}",
        plan.stdout
    );
    assert_eq!(table(&lab), "", "plan changes nothing");

    assert_eq!(apply(inv), 1);
    for p in [22, 80, 443] {
        assert_eq!(connect(&lab, "h2", &h1, p), Tcp::Connected, "port {p}");
    }
    assert_eq!(
        connect(&lab, "h2", &h1, 8080),
        Tcp::TimedOut,
        "8080 dropped"
    );
    assert_eq!(apply(inv), 0, "a second apply changes nothing");
    let other = exec(&lab, "h1", "nft list table inet other");
    assert!(other.contains("tcp dport 9999 counter"), "{other}");

    // A rule added by hand to our table: plan shows the drift, apply replaces the table.
    let applied = table(&lab);
    exec(
        &lab,
        "h1",
        "nft add rule inet claw_provision input tcp dport 8080 accept",
    );
    assert_eq!(connect(&lab, "h2", &h1, 8080), Tcp::Connected);
    let plan = claw(&["plan", inv], &[]);
    assert!(
        plan.stdout.contains("changed by hand or by another tool"),
        "{}",
        plan.stdout
    );
    assert_eq!(apply(inv), 1);
    assert_eq!(table(&lab), applied);
    assert_eq!(connect(&lab, "h2", &h1, 8080), Tcp::TimedOut);
    assert!(exec(&lab, "h1", "nft list tables").contains("table inet other"));

    // A ruleset without the SSH port is refused before anything runs.
    let inv_bad = lab.write_inventory(
        "bad.toml",
        &playbook(&s, "bad.toml", "ports = [80, 443]"),
        &[],
    );
    let r = claw(&["plan", inv_bad.to_str().unwrap()], &[]);
    assert_ne!(r.code, 0);
    assert!(
        (r.stdout.clone() + &r.stderr).contains(
            "this ruleset would block SSH port 22, which claw-provision connects to; add 22 to `ports`"
        ),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let r = claw(&["apply", inv_bad.to_str().unwrap(), "--yes"], &[]);
    assert_ne!(r.code, 0);
    assert_eq!(table(&lab), applied, "a refused ruleset changes nothing");

    // A port that renders to no number is refused with the step and the value.
    let inv_bad = lab.write_inventory(
        "badport.toml",
        &playbook(
            &s,
            "badport.toml",
            "peers = [{ port = \"{{ host.name }}\", from = [\"h2\"] }]",
        ),
        &[],
    );
    let r = claw(&["plan", inv_bad.to_str().unwrap()], &[]);
    let out = r.stdout.clone() + &r.stderr;
    assert!(
        r.code != 0
            && out.contains(
                "step `firewall` on host `h1`: `peers`: port \"h1\" (as rendered) is not a TCP port"
            ),
        "{out}"
    );

    // 8080 open to h2 only (by inventory host name; the port from a variable): h3 is dropped.
    // The entry for h3 renders empty on h1 and 8443 is left with no source: no rule for it.
    let peer_pb = s.file(
        "peer.toml",
        "name = \"firewall\"\nhosts = \"h1\"\n\n[vars]\nfw_port = 8080\n\n\
         [[steps]]\nname = \"firewall\"\nkind = \"firewall\"\n\
         peers = [{ port = \"{{ fw_port }}\", from = [\"h2\", \"{% if host.name == 'h3' %}h3{% endif %}\"] }, \
         { port = 8443, from = [\"{% if host.name == 'h3' %}h2{% endif %}\"] }]\n",
    );
    let inv_peer = lab.write_inventory("peer.toml", &peer_pb, &[]);
    let inv_peer = inv_peer.to_str().unwrap();
    let h2 = lab.host("h2").address;
    let plan = claw(&["plan", inv_peer], &[]);
    assert!(
        plan.stdout.contains("desired ruleset changed")
            && plan
                .stdout
                .contains(&format!("+\t\tip saddr {h2} tcp dport 8080 accept"))
            && plan
                .stdout
                .contains("8080 from 1 source; 8443 from no source"),
        "the plan shows the ruleset diff:\n{}",
        plan.stdout
    );
    assert_eq!(apply(inv_peer), 1);
    assert!(!table(&lab).contains("8443"), "{}", table(&lab));
    assert_eq!(connect(&lab, "h2", &h1, 8080), Tcp::Connected);
    assert_eq!(connect(&lab, "h3", &h1, 8080), Tcp::TimedOut);
    assert_eq!(connect(&lab, "h3", &h1, 80), Tcp::Connected);
    assert_eq!(apply(inv_peer), 0);

    // sshd on 2222: a second sshd in h1, the inventory connects there. Start from a host
    // without our table (the table above drops 2222, so nothing could connect).
    exec(&lab, "h1", "nft delete table inet claw_provision");
    let hd = lab.dir.join("hosts/h1");
    let hd = hd.to_str().unwrap();
    exec(
        &lab,
        "h1",
        &format!(
            "sed -e 's/^Port 22$/Port 2222/' -e 's|^PidFile .*|PidFile {hd}/sshd2222.pid|' {hd}/sshd_config > {hd}/sshd2222_config \
             && /usr/sbin/sshd -f {hd}/sshd2222_config -E {hd}/sshd2222.log"
        ),
    );
    let kh = std::fs::read_to_string(lab.dir.join("known_hosts")).unwrap();
    let line = kh
        .lines()
        .find(|l| l.starts_with(&format!("{h1} ")))
        .unwrap();
    std::fs::write(
        lab.dir.join("known_hosts2222"),
        format!("{kh}[{h1}]:2222 {}\n", line.split_once(' ').unwrap().1),
    )
    .unwrap();
    let port = [("port", "2222"), ("known_hosts", "\"known_hosts2222\"")];
    let r = claw(
        &[
            "plan",
            lab.write_inventory("p2222.toml", &playbook(&s, "p2222.toml", ""), &port)
                .to_str()
                .unwrap(),
        ],
        &[],
    );
    assert_ne!(r.code, 0);
    assert!(
        (r.stdout.clone() + &r.stderr).contains("would block SSH port 2222"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let inv2 = lab.write_inventory(
        "ok2222.toml",
        &playbook(&s, "ok2222.toml", "ports = [2222, 80, 443]"),
        &port,
    );
    let inv2 = inv2.to_str().unwrap();
    assert_eq!(apply(inv2), 1);
    assert_eq!(connect(&lab, "h2", &h1, 2222), Tcp::Connected);
    assert_eq!(connect(&lab, "h2", &h1, 80), Tcp::Connected);
    assert_eq!(connect(&lab, "h2", &h1, 443), Tcp::Connected);
    assert_eq!(connect(&lab, "h2", &h1, 22), Tcp::TimedOut);
    assert_eq!(connect(&lab, "h2", &h1, 8080), Tcp::TimedOut);
    assert_eq!(apply(inv2), 0);
    assert!(exec(&lab, "h1", "nft list tables").contains("table inet other"));
    exec(&lab, "h1", &format!("kill $(cat {hd}/sshd2222.pid)"));
}

/// The safety net: a ruleset that blocks SSH (forced here with the test-only switch) is put
/// back by the host itself when no new connection can confirm it in time; the run fails.
#[test]
fn a_ruleset_that_locks_the_operator_out_is_rolled_back_by_the_host() {
    use std::time::{Duration, Instant};
    if !cfg!(feature = "test-lockout-switch") {
        panic!(
            "this test needs the binary built with the test-only switch of the lock-out guard: \
             cargo test --features test-lockout-switch (scripts/test.sh does)"
        );
    }
    let lab = Lab::up("t-fw-rollback", 1);
    let s = Scratch::new();
    let inv = lab.write_inventory("fw.toml", &playbook(&s, "fw.toml", ""), &[]);
    assert_eq!(apply(inv.to_str().unwrap()), 1);
    let hash = |t: String| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(t.as_bytes()))
    };
    let before = hash(table(&lab));
    let plain_ssh = || {
        Command::new("ssh")
            .arg("-F")
            .arg(lab.dir.join("ssh_config"))
            .args(["-o", "ConnectTimeout=2", "h1", "true"])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(plain_ssh());

    let bad = lab.write_inventory(
        "lockout.toml",
        &playbook(
            &s,
            "lockout.toml",
            "ports = [80, 443]\nconfirm_timeout = \"10s\"",
        ),
        &[],
    );
    let started = Instant::now();
    let run = crate::support::claw_spawn(
        &["apply", bad.to_str().unwrap(), "--yes", "--output", "json"],
        &[("CLAW_PROVISION_TEST_ALLOW_SSH_LOCKOUT", "1")],
    );
    // During the window the new ruleset is live and a new SSH connection fails.
    while hash(table(&lab)) == before {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the ruleset never changed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!plain_ssh(), "ssh got in during the window");
    let r = run.wait();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let e = r.host("h1");
    assert_eq!(e["failed_at"], "firewall", "{e}");
    let err = e["error"].as_str().unwrap();
    assert!(
        err.contains("the new firewall ruleset was not confirmed")
            && err.contains("the host restored the previous ruleset after 10 s"),
        "{err}"
    );
    // Afterwards: the host is back by itself, with the very table it had before.
    assert_eq!(hash(table(&lab)), before);
    assert!(plain_ssh());
    let plan = claw(&["plan", inv.to_str().unwrap(), "--output", "json"], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let ev = plan
        .events()
        .into_iter()
        .find(|e| e["event"] == "plan")
        .unwrap();
    assert_eq!(
        ev["changes"], 0,
        "the recorded state is the old one again: {ev}"
    );
}
