//! Multi-host rollout (issue 6) on light lab hosts: batches (`serial`), the failure budget
//! (`max_fail`), a slow link (tests/lab/delay-proxy.py), hosts that never start, a rerun that
//! converges; the per-host apply lock (a second apply is refused with the holder, a dead run
//! frees it, `--force-unlock`), the audit record, Ctrl-C and the health gate.

use crate::support::{Lab, bin, claw, claw_spawn, log_len, ok, sshd_counts};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROLLOUT_PB: &str = r#"name = "rollout"

[defaults]
slow = 0

[rollout]
serial = 4
max_fail = 1

[[steps]]
name = "work dir"
kind = "dir"
path = "/opt/ro"

[[steps]]
name = "slow"
kind = "command"
run = "sleep {{ slow }}; touch /opt/ro/slow-done"
creates = "/opt/ro/slow-done"

[[steps]]
name = "stamp"
kind = "file"
path = "/opt/ro/stamp"
content = "v1\n"
"#;

/// Adds `vars` to a host's table of a lab inventory.
fn host_vars(inv: &std::path::Path, host: &str, vars: &str) {
    let text = std::fs::read_to_string(inv).unwrap();
    let head = format!("[hosts.{host}]\n");
    let at = text.find(&head).expect("host table") + head.len();
    let text = format!("{}vars = {{ {vars} }}\n{}", &text[..at], &text[at..]);
    std::fs::write(inv, text).unwrap();
}

/// A light lab of `n` hosts with `playbook` beside its inventory; returns the inventory's path.
fn lab_with(name: &str, n: usize, playbook: &str) -> (Lab, std::path::PathBuf) {
    let lab = Lab::up(name, n);
    let pb = lab.dir.join(format!("{name}.toml"));
    std::fs::write(&pb, playbook).unwrap();
    let inv = lab.write_inventory(&format!("{name}-inv.toml"), &pb, &[]);
    (lab, inv)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rollout_in_batches_stops_when_the_failure_budget_is_spent() {
    let (lab, inv) = lab_with("t-rollout", 12, ROLLOUT_PB);
    // h6 is cut off in the middle of its slow step; h7 is slow (it is still sleeping then).
    host_vars(&inv, "h6", "slow = 30");
    host_vars(&inv, "h7", "slow = 4");
    // h3's link is slow: 100 ms each way, through the lab's delay proxy (no netem here).
    let h3 = lab.host("h3");
    let mut proxy = Command::new("python3")
        .arg(crate::support::repo().join("tests/lab/delay-proxy.py"))
        .args([h3.address.as_str(), "22", "100"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let port = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(proxy.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _proxy = Kill(proxy);
    let text = std::fs::read_to_string(&inv).unwrap();
    let text = text.replacen(
        &format!("[hosts.h3]\naddress = {:?}\n", h3.address),
        &format!("[hosts.h3]\naddress = \"127.0.0.1\"\nport = {port}\n"),
        1,
    );
    assert!(text.contains(&format!("port = {port}")), "{text}");
    std::fs::write(&inv, text).unwrap();
    let kh = lab.dir.join("known_hosts");
    let keys = std::fs::read_to_string(&kh).unwrap();
    let key = keys
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{} ", h3.address)))
        .unwrap()
        .to_string();
    std::fs::write(&kh, format!("{keys}[127.0.0.1]:{port} {key}\n")).unwrap();
    let inv = inv.to_str().unwrap();
    let untouched = ["h9", "h10", "h11", "h12"];
    let logs: Vec<usize> = untouched
        .iter()
        .map(|h| log_len(&lab.host(h).sshd_log))
        .collect();

    // h2 is down from the start.
    lab.cmd(&["stop", "h2"]);
    let run = claw_spawn(&["apply", inv, "--yes", "--output", "json"], &[]);
    // Batch 2 (h5..h8) is running once h6 is in its slow step and h5, h8 are through: take h6
    // away then (h7 is still sleeping).
    wait_for("h6 in its slow step", Duration::from_secs(60), || {
        lab.ssh("h6", "pgrep -f 'sleep [3]0'").status.success()
    });
    for h in ["h5", "h8"] {
        wait_for("h5 and h8 done", Duration::from_secs(30), || {
            lab.ssh(h, "test -e /opt/ro/stamp").status.success()
        });
    }
    lab.cmd(&["stop", "h6"]);
    let r = run.wait();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let state = |h: &str| r.host(h)["state"].as_str().unwrap().to_string();
    for h in ["h1", "h3", "h4", "h5", "h8"] {
        assert_eq!(state(h), "changed", "{h}: {}", r.stdout);
    }
    assert_eq!(state("h2"), "unreachable");
    assert_eq!(state("h6"), "failed");
    assert_eq!(r.host("h6")["failed_at"], "slow", "{}", r.stdout);
    // h7 was sleeping when the budget was spent: it finished that step and stopped.
    assert_eq!(state("h7"), "failed");
    assert_eq!(r.host("h7")["failed_at"], "stamp", "{}", r.stdout);
    assert!(
        r.host("h7")["error"]
            .as_str()
            .unwrap()
            .contains("stopped before this step: other hosts failed, more than max_fail allows")
    );
    assert_eq!(
        ok(lab.ssh("h7", "ls /opt/ro"), "ls"),
        "slow-done\n",
        "h7 stopped after its current step"
    );
    for (h, from) in untouched.iter().zip(&logs) {
        assert_eq!(state(h), "not started", "{}", r.stdout);
        assert!(
            r.host(h)["error"]
                .as_str()
                .unwrap()
                .contains("the rollout stopped after batch 2: 2 host(s) failed"),
            "{}",
            r.stdout
        );
        assert_eq!(
            sshd_counts(&lab.host(h).sshd_log, *from).0,
            0,
            "{h} was connected to"
        );
    }
    // The slow host held back only its own batch: every host of batch 2 ended after it.
    let ends: Vec<String> = r
        .events()
        .into_iter()
        .filter(|e| e["event"] == "host")
        .map(|e| e["host"].as_str().unwrap().to_string())
        .collect();
    let at = |h: &str| ends.iter().position(|x| x == h).unwrap();
    for h in ["h5", "h6", "h7", "h8"] {
        assert!(at("h3") < at(h), "{ends:?}");
    }
    let slow_ms = r.host("h3")["elapsed_ms"].as_u64().unwrap();
    let fast_ms = r.host("h1")["elapsed_ms"].as_u64().unwrap();
    assert!(slow_ms > fast_ms + 400, "h3 {slow_ms} ms, h1 {fast_ms} ms");
    let totals = &r.summary()["totals"];
    assert_eq!(totals["not_started"], 4, "{totals}");

    // The text summary names the same states.
    lab.cmd(&["start", "h2"]);
    lab.cmd(&["start", "h6"]);
    let text = claw(&["plan", inv], &[]);
    assert_eq!(text.code, 0, "{}\n{}", text.stdout, text.stderr);

    // After the fix, a rerun converges, batch by batch; the next one changes nothing.
    let r = claw(
        &["apply", inv, "--yes", "--output", "json", "-e", "slow=0"],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let r = claw(
        &["apply", inv, "--yes", "--output", "json", "-e", "slow=0"],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for h in lab.hosts() {
        assert_eq!(r.host(&h.name)["state"], "ok", "{}", r.stdout);
    }
}

const LOCK_PB: &str = r#"name = "lock"

[defaults]
hold = 0

[[steps]]
name = "hold"
kind = "command"
run = "sleep {{ hold }}"
"#;

#[test]
fn one_apply_at_a_time_per_host_and_a_dead_run_frees_its_lock() {
    let (lab, inv) = lab_with("t-lock", 1, LOCK_PB);
    let inv = inv.to_str().unwrap();
    let holder = || {
        lab.ssh(
            "h1",
            "sudo cat /var/lib/claw-provision/lock/apply.holder 2>/dev/null",
        )
        .stdout
    };
    let hold = |secs: &str| {
        claw_spawn(
            &[
                "apply",
                inv,
                "--yes",
                "--output",
                "json",
                "-e",
                &format!("hold={secs}"),
            ],
            &[],
        )
    };

    // Two applies started together: exactly one wins, the other is refused.
    let (x, y) = (hold("5"), hold("5"));
    let (x, y) = (x.wait(), y.wait());
    let codes = [x.code, y.code];
    assert!(codes.contains(&0) && codes.contains(&1), "{codes:?}");
    let loser = if x.code == 0 { &y } else { &x };
    assert!(
        loser.stdout.contains("another apply holds this host"),
        "{}",
        loser.stdout
    );
    wait_for("the winner's lock to go", Duration::from_secs(10), || {
        holder().is_empty()
    });

    // A holds the host; B is refused at once, naming A; a plan needs no lock.
    let a = hold("4");
    wait_for("A's lock", Duration::from_secs(30), || !holder().is_empty());
    let t = Instant::now();
    let b = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "refused at once (after a 2 s grace)"
    );
    assert_eq!(b.code, 1, "{}\n{}", b.stdout, b.stderr);
    assert_eq!(b.host("h1")["failed_at"], "lock", "{}", b.stdout);
    let e = b.host("h1")["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("another apply holds this host")
            && e.contains(&format!("pid {}", a.id()))
            && e.contains("playbook lock")
            && e.contains(" since 20"),
        "{e}"
    );
    let p = claw(&["plan", inv], &[]);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    let a = a.wait();
    assert_eq!(a.code, 0, "{}", a.stdout);
    // A ended: its lock went with its connection.
    wait_for("A's lock to go", Duration::from_secs(10), || {
        holder().is_empty()
    });
    let c = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(c.code, 0, "{}\n{}", c.stdout, c.stderr);

    // A run that dies (killed, no cleanup) frees the host as its connection closes.
    let mut d = hold("30");
    wait_for("D's lock", Duration::from_secs(30), || !holder().is_empty());
    d.0.kill().unwrap();
    let _ = d.wait();
    wait_for("D's lock to go", Duration::from_secs(10), || {
        holder().is_empty()
    });
    let e = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(e.code, 0, "{}\n{}", e.stdout, e.stderr);

    // --force-unlock breaks a live holder's lock (asked first; --yes here).
    let f = hold("30");
    wait_for("F's lock", Duration::from_secs(30), || !holder().is_empty());
    let g = claw(
        &["apply", inv, "--yes", "--force-unlock", "--output", "json"],
        &[],
    );
    assert_eq!(g.code, 0, "{}\n{}", g.stdout, g.stderr);
    let mut f = f;
    f.0.kill().unwrap();
    let _ = f.wait();
    let no_tty = Command::new(bin())
        .args(["apply", inv, "--force-unlock"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(no_tty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_tty.stderr).contains("add --yes"));

    // The audit log: one line per apply that changed something, names only.
    let log = ok(
        lab.ssh("h1", "sudo cat /var/log/claw-provision/audit.log; sudo stat -c %a /var/log/claw-provision/audit.log"),
        "audit log",
    );
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.last(), Some(&"600"), "{log}");
    let records: Vec<serde_json::Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    // The winner of the race, A, C, E and G changed (the command runs every time); the
    // refused ones were stopped before anything. Each apply: `started` (written by its first
    // change on the host), then `finished` (by the client), one run id; the killed runs D and
    // F left their `started` record only, if their step had begun.
    let runs = |event: &str| {
        let mut v: Vec<String> = (records.iter())
            .filter(|r| r["event"] == event)
            .map(|r| r["run"].to_string())
            .collect();
        v.sort();
        v
    };
    let (started, finished) = (runs("started"), runs("finished"));
    assert_eq!(finished.len(), 5, "{log}");
    assert!((5..=7).contains(&started.len()), "{log}");
    assert!(finished.iter().all(|r| started.contains(r)), "{log}");
    let records: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["event"] == "finished")
        .collect();
    for r in &records {
        assert_eq!(r["result"], "changed", "{r}");
        assert_eq!(r["playbook"], "lock");
        assert_eq!(r["changed"], serde_json::json!(["hold"]));
        assert!(
            r["operator"].as_str().unwrap().contains(", playbook lock"),
            "{r}"
        );
        assert!(r["time"].as_str().unwrap().starts_with("20"), "{r}");
    }
}

const CTRL_C_PB: &str = r#"name = "ctrl-c"

[defaults]
hold = 3

[[steps]]
name = "hold"
kind = "command"
run = "sleep {{ hold }}"

[[steps]]
name = "marker"
kind = "file"
path = "/opt/ctrl-c-marker"
content = "x\n"
"#;

#[test]
fn ctrl_c_finishes_the_running_step_then_stops_and_twice_aborts() {
    let (lab, inv) = lab_with("t-ctrlc", 2, CTRL_C_PB);
    let inv = inv.to_str().unwrap();
    let spawn = |hold: &str| {
        claw_spawn(
            &[
                "apply",
                inv,
                "--yes",
                "--output",
                "json",
                "-e",
                &format!("hold={hold}"),
            ],
            &[],
        )
    };
    let sleeping = |secs: &str| {
        let pat = format!("pgrep -f 'sleep [{}]{}'", &secs[..1], &secs[1..]);
        lab.ssh("h1", &pat).status.success() && lab.ssh("h2", &pat).status.success()
    };
    let int = |pid: u32| {
        let s = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(s.success());
    };

    // Once: the running step ends, the next one does not start, the summary comes.
    let run = spawn("3");
    wait_for("the hold steps", Duration::from_secs(30), || sleeping("3"));
    let t = Instant::now();
    int(run.id());
    let r = run.wait();
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_eq!(r.code, 130, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("interrupted"), "{}", r.stderr);
    for h in ["h1", "h2"] {
        let e = r.host(h);
        assert_eq!(e["failed_at"], "marker", "{e}");
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .contains("interrupted (Ctrl-C)"),
            "{e}"
        );
        assert!(
            !lab.ssh(h, "test -e /opt/ctrl-c-marker").status.success(),
            "the next step did not run on {h}"
        );
    }
    // The locks went with the connections.
    wait_for("the locks to go", Duration::from_secs(10), || {
        lab.ssh(
            "h1",
            "sudo test -s /var/lib/claw-provision/lock/apply.holder",
        )
        .status
        .code()
            == Some(1)
    });

    // Twice: the process ends at once, mid-step.
    let run = spawn("20");
    wait_for("the hold steps", Duration::from_secs(30), || sleeping("20"));
    let t = Instant::now();
    int(run.id());
    std::thread::sleep(Duration::from_millis(300));
    int(run.id());
    let out = run.wait();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(out.code, 130);
    assert!(out.stderr.contains("aborted"));
    // A rerun converges.
    let r = claw(
        &["apply", inv, "--yes", "--output", "json", "-e", "hold=0"],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn the_health_gate_holds_back_the_next_batch() {
    let lab = Lab::up("t-gate", 3);
    let pb = lab.dir.join("gate.toml");
    std::fs::write(
        &pb,
        r#"name = "gate"

[rollout]
serial = 1
health = "healthy"
order = "sorted"

[[steps]]
name = "stamp"
kind = "file"
path = "/opt/gate-stamp"
content = "x\n"

[[steps]]
name = "healthy"
kind = "command"
run = "test -e /opt/gate-stamp && test ! -e /opt/unhealthy"
changes = false
"#,
    )
    .unwrap();
    let inv = lab.write_inventory("gate-inv.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    ok(
        lab.ssh("h2", "sudo touch /opt/unhealthy"),
        "make h2 unhealthy",
    );
    let from = log_len(&lab.host("h3").sshd_log);
    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["state"], "changed");
    assert_eq!(r.host("h2")["state"], "failed");
    assert_eq!(r.host("h2")["failed_at"], "healthy");
    assert_eq!(r.host("h3")["state"], "not started");
    let why = r.host("h3")["error"].as_str().unwrap().to_string();
    assert!(
        why.contains(
            "the rollout stopped after batch 2: host h2 did not pass the health step `healthy`"
        ),
        "{why}"
    );
    assert_eq!(sshd_counts(&lab.host("h3").sshd_log, from).0, 0);
    ok(lab.ssh("h2", "sudo rm /opt/unhealthy"), "h2 healthy again");
    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.host("h3")["state"], "changed");
}

/// `[rollout] groups`: each group's hosts go in batches of their own, one group after the other
/// (the data host before the app hosts, one at a time), then the hosts of no listed group; the
/// health gate's step runs on the app hosts only, and the others pass the gate.
#[test]
fn groups_go_one_after_the_other() {
    let pb = r#"name = "rollout-groups"

[rollout]
serial = 1
groups = ["data", "app"]
health = "app healthy"

[[steps]]
name = "work dir"
kind = "dir"
path = "/opt/rg"

[[steps]]
name = "stamp"
kind = "command"
run = "date +%s%N > /opt/rg/started; sleep 0.3; date +%s%N > /opt/rg/ended"
creates = "/opt/rg/ended"

# The health gate's step runs on the app hosts only: the data host (and h4) pass the gate.
[[steps]]
name = "app healthy"
kind = "command"
run = "test -e /opt/rg/ended"
changes = false
when = "'app' in host.groups"
"#;
    let (lab, inv) = lab_with("t-rollout-groups", 4, pb);
    // h3 is the data host, h1 and h2 the app hosts (inventory order), h4 in no listed group.
    let text = std::fs::read_to_string(&inv).unwrap().replace(
        "[groups.lab]\n",
        "[groups.lab]\n[groups.data]\n[groups.app]\n",
    );
    let text = ["h1", "h2", "h3"].iter().fold(text, |t, h| {
        let role = if *h == "h3" { "data" } else { "app" };
        let head = format!("[hosts.{h}]\n");
        let at = t.find(&head).unwrap();
        let from = at + t[at..].find("groups = [\"lab\"]").unwrap();
        format!(
            "{}groups = [\"lab\", \"{role}\"]{}",
            &t[..from],
            &t[from + "groups = [\"lab\"]".len()..]
        )
    });
    std::fs::write(&inv, text).unwrap();
    let r = claw(&["apply", inv.to_str().unwrap(), "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let stamp = |h: &str, f: &str| -> u128 {
        ok(lab.exec(h, &["cat", &format!("/opt/rg/{f}")]), "stamp")
            .trim()
            .parse()
            .unwrap()
    };
    // Each host started only after the one before it in the rollout had ended.
    let order = ["h3", "h1", "h2", "h4"];
    for w in order.windows(2) {
        assert!(
            stamp(w[0], "ended") <= stamp(w[1], "started"),
            "{} ended after {} started",
            w[0],
            w[1]
        );
    }
    // A group the inventory does not have is refused before any connection.
    let bad = std::fs::read_to_string(lab.dir.join("t-rollout-groups.toml"))
        .unwrap()
        .replace("[\"data\", \"app\"]", "[\"data\", \"edge\"]");
    std::fs::write(lab.dir.join("t-rollout-groups.toml"), bad).unwrap();
    let r = claw(&["plan", inv.to_str().unwrap()], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "t-rollout-groups.toml:5: rollout: `groups`: the inventory has no group `edge`"
        ),
        "{}",
        r.stderr
    );
    eprintln!(
        "rollout groups: 4 hosts in 4 batches, data first, then app one by one, then the rest"
    );
}
