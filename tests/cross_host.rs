//! Issue 19, "values that cross hosts": a `secret` step with `source = "GROUP"` is kept on the
//! one host of GROUP that runs it and written, with that value, on every other host that runs
//! it. On light lab hosts: provider and takers in one run (plan shows known after apply, apply
//! shares the value, a re-run changes nothing), an unreachable source, a source outside the run
//! (`--limit`: read only, left unchanged), offline errors (cycle, unknown group, two sources),
//! sources in another rollout batch, hostile bytes in the kept value, no leak of the value in
//! any output, saved plan or command line, and a saved plan refused when the value changed.
//!
//! One small lab per test (a lab starts in about 3 s; tests sharing hosts would share their
//! apply locks, audit logs and sshd logs); each test still uses its own /opt/xh-NAME paths.

use crate::secret_leaks::{forms, host_loop, stop_loop};
use crate::support::{Lab, Run, claw, log_len, sshd_counts};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The playbook of issue 19's example, its files under `dir`; `serial`: `[rollout] serial = 1`.
fn playbook(dir: &str, serial: bool) -> String {
    let rollout = if serial {
        "\n[rollout]\nserial = 1\n"
    } else {
        ""
    };
    format!(
        r#"name = "xh"
{rollout}
[[steps]]
name = "dir"
kind = "dir"
path = "{dir}"

[[steps]]
name = "db password"
kind = "secret"
secret = "db_password"
path = "{dir}/db_password"
source = "data"

[[steps]]
name = "app env"
kind = "file"
path = "{dir}/app.env"
content = "DATABASE_URL=postgres://app:{{{{ secrets.db_password }}}}@db/app\n"
mode = "0600"
when = "'app' in host.groups"
"#
    )
}

/// What the template makes of `value` (the secret's file holds `value` and a newline).
fn app_env(value: &[u8]) -> Vec<u8> {
    let v = value.strip_suffix(b"\n").unwrap_or(value);
    [b"DATABASE_URL=postgres://app:", v, b"@db/app\n"].concat()
}

/// Writes `playbook` and an inventory of `hosts` (name, groups), in that order, into the lab's
/// dir; returns the inventory's path.
fn inventory(lab: &Lab, file: &str, playbook: &str, hosts: &[(&str, &[&str])]) -> String {
    let pb = lab.dir.join(format!("{file}-pb.toml"));
    std::fs::write(&pb, playbook).unwrap();
    let mut out = format!(
        "playbook = {:?}\n\n[defaults]\nuser = \"claw\"\nport = 22\nidentity_file = \"id_ed25519\"\n\
         known_hosts = \"known_hosts\"\nhost_key_policy = \"strict\"\nconnect_timeout = 10\nbecome = true\n\n",
        pb.display().to_string()
    );
    let mut groups: Vec<&str> = hosts.iter().flat_map(|(_, g)| g.iter().copied()).collect();
    groups.sort();
    groups.dedup();
    for g in groups {
        out.push_str(&format!("[groups.{g}]\n"));
    }
    for (h, g) in hosts {
        out.push_str(&format!(
            "\n[hosts.{h}]\naddress = {:?}\ngroups = {g:?}\n",
            lab.host(h).address
        ));
    }
    let path = lab.dir.join(format!("{file}.toml"));
    std::fs::write(&path, out).unwrap();
    path.display().to_string()
}

/// data = [h1], app = [h2, h3]: the example's inventory.
const DATA_APP: &[(&str, &[&str])] = &[("h1", &["data"]), ("h2", &["app"]), ("h3", &["app"])];

/// A file of a host read as root inside it (no ssh: the sshd log is not touched); None if it
/// cannot be read.
fn read(lab: &Lab, host: &str, path: &str) -> Option<Vec<u8>> {
    let o = lab.exec(host, &["cat", path]);
    o.status.success().then_some(o.stdout)
}

fn must_read(lab: &Lab, host: &str, path: &str) -> Vec<u8> {
    read(lab, host, path).unwrap_or_else(|| panic!("{host}:{path} cannot be read"))
}

/// Writes `content` into `path` on `host` as root, 0600 (its directory made), over ssh with the
/// content on stdin.
fn put(lab: &Lab, host: &str, path: &str, content: &[u8]) {
    let dir = &path[..path.rfind('/').unwrap()];
    let cmd = format!("sudo sh -c 'umask 077; mkdir -p {dir} && cat > {path}'");
    crate::support::ok(lab.ssh_input(host, &cmd, content), "write a file");
}

/// What a host shows of `paths`: names, sizes, modes, mtimes (ns) and checksums, read as root
/// inside the host.
fn files(lab: &Lab, host: &str, paths: &[&str]) -> String {
    let script = format!(
        "for f in {}; do stat -c '%n %s %a %y' \"$f\" 2>&1; sha256sum \"$f\" 2>&1; done",
        paths.join(" ")
    );
    let o = lab.exec(host, &["sh", "-c", &script]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `files` and claw-provision's own state on the host: its audit log and lock directory (once
/// the holder of the last apply's lock is gone).
fn snapshot(lab: &Lab, host: &str, paths: &[&str]) -> String {
    let holder = "/var/lib/claw-provision/lock/apply.holder";
    let t = Instant::now();
    while lab.exec(host, &["test", "-s", holder]).status.success() {
        assert!(t.elapsed().as_secs() < 30, "{host}: the lock holder stays");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = lab.exec(
        host,
        &[
            "sh",
            "-c",
            "ls -la --time-style=full-iso /var/lib/claw-provision /var/lib/claw-provision/lock 2>&1",
        ],
    );
    let audit = "/var/log/claw-provision/audit.log";
    format!(
        "{}{}{}",
        files(lab, host, &[paths, &[audit]].concat()),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&must_read(lab, host, audit))
    )
}

/// The lines of the plan of `host` in a text plan (its header to the next unindented line).
fn section(text: &str, host: &str) -> String {
    let head = format!("{host} (");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&head));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no plan of {host}:\n{text}"));
    let rest: Vec<&str> = lines.take_while(|l| l.starts_with(' ')).collect();
    format!("{first}\n{}", rest.join("\n"))
}

fn show(r: &Run) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        r.code, r.stdout, r.stderr
    )
}

fn run_ok(args: &[&str]) -> Run {
    let r = claw(args, &[]);
    assert_eq!(r.code, 0, "{args:?}: {}", show(&r));
    r
}

/// The step event of `host`'s step `name` in a JSON run, as text.
fn step_event(r: &Run, host: &str, name: &str) -> String {
    r.events()
        .into_iter()
        .find(|e| e["event"] == "step" && e["host"] == host && e["name"] == name)
        .unwrap_or_else(|| panic!("no step `{name}` of {host}: {}", show(r)))
        .to_string()
}

/// Takers' files equal the source's, and their template holds the value; returns the value.
fn assert_shared(lab: &Lab, dir: &str, source: &str, takers: &[&str]) -> Vec<u8> {
    let v = must_read(lab, source, &format!("{dir}/db_password"));
    for t in takers {
        let got = must_read(lab, t, &format!("{dir}/db_password"));
        assert_eq!(got, v, "{t} holds another value than {source}");
        let env = must_read(lab, t, &format!("{dir}/app.env"));
        assert_eq!(env, app_env(&v), "{t}'s template");
        let mode = lab.exec(t, &["stat", "-c", "%a", &format!("{dir}/db_password")]);
        assert_eq!(String::from_utf8_lossy(&mode.stdout), "600\n", "{t}");
    }
    v
}

#[test]
fn provider_and_takers_in_one_run_share_one_value() {
    let t0 = Instant::now();
    let lab = Lab::up("xh-one", 3);
    let dir = "/opt/xh-one";
    let inv = inventory(&lab, "one", &playbook(dir, false), DATA_APP);
    let plan = run_ok(&["plan", &inv]);
    let text = format!("{}{}", plan.stdout, plan.stderr);
    let h1 = section(&text, "h1");
    assert!(h1.contains("+ create  secret"), "{h1}");
    assert!(!h1.contains("known after apply"), "{h1}");
    for t in ["h2", "h3"] {
        let s = section(&text, t);
        let secret = format!(
            "known after apply secret {dir}/db_password: secret `db_password` is generated on h1 in this run"
        );
        let file = format!(
            "known after apply file {dir}/app.env: uses secret `db_password` generated on h1 in this run"
        );
        assert!(s.contains(&secret) && s.contains(&file), "{t}:\n{s}");
    }
    let first = run_ok(&["apply", &inv, "--yes", "--output", "json"]);
    assert_eq!(first.summary()["totals"]["changed"], 3, "{}", show(&first));
    let v = assert_shared(&lab, dir, "h1", &["h2", "h3"]);
    assert_eq!(v.len(), 65, "32 random bytes in hex and a newline");
    let paths = [format!("{dir}/db_password"), format!("{dir}/app.env")];
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let before: Vec<String> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| files(&lab, h, &paths[..1 + usize::from(*h != "h1")]))
        .collect();
    let again = run_ok(&["apply", &inv, "--yes", "--output", "json"]);
    assert_eq!(again.summary()["totals"]["changed"], 0, "{}", show(&again));
    for h in ["h1", "h2", "h3"] {
        assert_eq!(again.host(h)["state"], "ok", "{}", show(&again));
    }
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        let after = files(&lab, h, &paths[..1 + usize::from(*h != "h1")]);
        assert_eq!(after, before[i], "{h} changed on a re-run");
    }
    assert_shared(&lab, dir, "h1", &["h2", "h3"]);
    eprintln!(
        "cross_host one run: 3 hosts, 3 runs (plan, apply, re-apply: 0 changed), value shared on 2 takers, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn an_unreachable_source_fails_every_taker_naming_it() {
    let t0 = Instant::now();
    let lab = Lab::up("xh-down", 3);
    let dir = "/opt/xh-down";
    let inv = inventory(&lab, "down", &playbook(dir, false), DATA_APP);
    for t in ["h2", "h3"] {
        put(&lab, t, &format!("{dir}/db_password"), b"sentinel\n");
        put(&lab, t, &format!("{dir}/app.env"), b"sentinel env\n");
    }
    let paths = [format!("{dir}/db_password"), format!("{dir}/app.env")];
    let paths = [paths[0].as_str(), paths[1].as_str()];
    let before: Vec<String> = ["h2", "h3"]
        .iter()
        .map(|t| files(&lab, t, &paths))
        .collect();
    lab.cmd(&["stop", "h1"]);
    let r = claw(&["apply", &inv, "--yes", "--output", "json"], &[]);
    assert_ne!(r.code, 0, "{}", show(&r));
    assert_eq!(r.host("h1")["state"], "unreachable", "{}", show(&r));
    let text = claw(&["apply", &inv, "--yes"], &[]);
    assert_ne!(text.code, 0, "{}", show(&text));
    for (i, t) in ["h2", "h3"].iter().enumerate() {
        let h = r.host(t);
        assert_eq!(h["state"], "failed", "{h}");
        assert_eq!(h["failed_at"], "db password", "{h}");
        let why = h["error"].as_str().unwrap();
        assert!(
            why.contains("the value of secret `db_password` is kept on h1, which is unreachable"),
            "{why}"
        );
        let all = format!("{}{}", text.stdout, text.stderr);
        let line = all
            .lines()
            .find(|l| l.starts_with(&format!("error: {t} ")))
            .unwrap_or_else(|| panic!("no error line for {t}: {}", show(&text)));
        assert!(line.contains("kept on h1, which is unreachable"), "{line}");
        assert_eq!(files(&lab, t, &paths), before[i], "{t} changed");
    }
    lab.cmd(&["start", "h1"]);
    a_failed_source_fails_every_taker(&lab, &inv, dir, &paths, &before);
    eprintln!(
        "cross_host unreachable/failed source: 3 hosts, 3 runs (json, text; source failing), 2 takers failed at the secret step, unchanged, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

/// The source reachable but failing before its secret step (a file where its directory goes):
/// the takers fail at the secret step naming it, unchanged.
fn a_failed_source_fails_every_taker(
    lab: &Lab,
    inv: &str,
    dir: &str,
    paths: &[&str],
    before: &[String],
) {
    put(lab, "h1", &format!("{dir}.tmp"), b"in the way\n");
    assert!(
        lab.exec("h1", &["mv", &format!("{dir}.tmp"), dir])
            .status
            .success()
    );
    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_ne!(r.code, 0, "{}", show(&r));
    assert_eq!(r.host("h1")["failed_at"], "dir", "{}", show(&r));
    for (i, t) in ["h2", "h3"].iter().enumerate() {
        let h = r.host(t);
        assert_eq!(h["failed_at"], "db password", "{h}");
        let why = h["error"].as_str().unwrap();
        assert!(
            why.contains(
                "the value of secret `db_password` is kept on h1, which failed at step `dir`"
            ),
            "{why}"
        );
        assert_eq!(files(lab, t, paths), before[i], "{t} changed");
    }
}

#[test]
fn a_source_outside_the_run_is_read_only_and_left_unchanged() {
    let t0 = Instant::now();
    let lab = Lab::up("xh-limit", 3);
    let dir = "/opt/xh-limit";
    let inv = inventory(&lab, "limit", &playbook(dir, false), DATA_APP);
    run_ok(&["apply", &inv, "--yes", "--limit", "h1"]);
    let kept = format!("{dir}/db_password");
    let source = snapshot(&lab, "h1", &[&kept, dir]);
    assert!(
        source.contains(&kept) && source.contains("audit.log"),
        "{source}"
    );
    let plan = run_ok(&["plan", &inv, "--limit", "app"]);
    let text = format!("{}{}", plan.stdout, plan.stderr);
    assert!(
        !text.lines().any(|l| l.starts_with("h1 (")),
        "h1 is not in the run:\n{text}"
    );
    for t in ["h2", "h3"] {
        let s = section(&text, t);
        assert!(
            s.contains("the value kept on h1 (read only: not in this run)"),
            "{t}:\n{s}"
        );
    }
    let r = run_ok(&["apply", &inv, "--yes", "--limit", "app", "--output", "json"]);
    for t in ["h2", "h3"] {
        let e = step_event(&r, t, "db password");
        assert!(e.contains("read only: not in this run"), "{e}");
    }
    assert_shared(&lab, dir, "h1", &["h2", "h3"]);
    assert_eq!(snapshot(&lab, "h1", &[&kept, dir]), source, "h1 changed");
    assert!(!source.contains("apply.holder"), "{source}");

    // The value gone from h1: the takers are refused, unchanged; h1 is still only read.
    assert!(lab.exec("h1", &["rm", &kept]).status.success());
    let source = snapshot(&lab, "h1", &[&kept, dir]);
    let env = format!("{dir}/app.env");
    let takers: Vec<String> = ["h2", "h3"]
        .iter()
        .map(|t| files(&lab, t, &[&kept, &env]))
        .collect();
    let want = "secret `db_password` does not exist yet on h1 (read only: not in this run), \
                which keeps it: apply to h1 first";
    for args in [
        vec!["plan", &inv, "--limit", "app"],
        vec!["apply", &inv, "--yes", "--limit", "app"],
    ] {
        let r = claw(&args, &[]);
        assert_ne!(r.code, 0, "{args:?}: {}", show(&r));
        for t in ["h2", "h3"] {
            let all = format!("{}{}", r.stdout, r.stderr);
            let line = all
                .lines()
                .find(|l| l.starts_with(&format!("error: {t} ")))
                .unwrap_or_else(|| panic!("{args:?}: no error for {t}: {}", show(&r)));
            assert!(line.contains(want), "{args:?}: {line}");
        }
    }
    for (i, t) in ["h2", "h3"].iter().enumerate() {
        assert_eq!(files(&lab, t, &[&kept, &env]), takers[i], "{t} changed");
    }
    assert_eq!(snapshot(&lab, "h1", &[&kept, dir]), source, "h1 changed");
    eprintln!(
        "cross_host --limit: 3 hosts, 5 runs (source alone, plan + apply read only, plan + apply refused), source unchanged, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

/// A playbook of secret steps: (step/secret name, source group).
fn secrets_playbook(dir: &str, steps: &[(&str, &str)]) -> String {
    let mut out = String::from("name = \"xh-offline\"\n");
    for (name, source) in steps {
        out.push_str(&format!(
            "\n[[steps]]\nname = \"{name}\"\nkind = \"secret\"\nsecret = \"{name}\"\n\
             path = \"{dir}/{name}\"\nsource = \"{source}\"\n"
        ));
    }
    out
}

/// An offline case: its file, its steps (name, source), the words its error holds.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>);

/// The line of step `name`'s `[[steps]]` header in a playbook.
fn step_line(text: &str, name: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == format!("name = \"{name}\""))
        .expect("step");
    // The header is the line before it: its 1-based number is `at`.
    at
}

/// `validate` and `plan` fail before any connection with errors holding every `want`.
fn assert_offline_error(lab: &Lab, inv: &str, want: &[String]) -> usize {
    let logs: Vec<(PathBuf, usize)> = lab
        .hosts()
        .iter()
        .map(|h| (h.sshd_log.clone(), log_len(&h.sshd_log)))
        .collect();
    for cmd in ["validate", "plan"] {
        let r = claw(&[cmd, inv], &[]);
        assert_ne!(r.code, 0, "{cmd}: {}", show(&r));
        for w in want {
            assert!(
                r.stderr.contains(w.as_str()),
                "{cmd}: want {w:?}: {}",
                show(&r)
            );
        }
    }
    for (log, from) in &logs {
        assert_eq!(
            sshd_counts(log, *from),
            (0, 0),
            "{} was connected to",
            log.display()
        );
    }
    2
}

#[test]
fn cycles_unknown_groups_and_two_sources_fail_offline() {
    let t0 = Instant::now();
    let lab = Lab::up("xh-offline", 3);
    let dir = "/opt/xh-offline";
    let hosts: &[(&str, &[&str])] = &[
        ("h1", &["data"]),
        ("h2", &["app", "cache"]),
        ("h3", &["app"]),
    ];
    let cases: [Case; 3] = [
        (
            "cycle",
            vec![("b", "cache"), ("a", "data")],
            vec![
                "step `b`",
                "cycle",
                "h1 takes `b` from h2",
                "h2 takes `a` from h1",
            ],
        ),
        (
            "unknown",
            vec![("u", "nosuch")],
            vec![
                "step `u`",
                "`source = \"nosuch\"`",
                "no group or host `nosuch`",
            ],
        ),
        (
            "two",
            vec![("two", "app")],
            vec![
                "step `two`",
                "2 hosts of group `app` run this step (h2, h3)",
            ],
        ),
    ];
    let mut runs = 0;
    for (file, steps, words) in cases {
        let pb = secrets_playbook(dir, &steps);
        let inv = inventory(&lab, file, &pb, hosts);
        let pb_path = lab.dir.join(format!("{file}-pb.toml"));
        let mut want: Vec<String> = words.iter().map(std::string::ToString::to_string).collect();
        // The file and the line of the (first) step named.
        want.push(format!(
            "{}:{}:",
            pb_path.display(),
            step_line(&pb, steps[0].0)
        ));
        runs += assert_offline_error(&lab, &inv, &want);
    }
    eprintln!(
        "cross_host offline errors: 3 hosts, {runs} runs (validate, plan x cycle, unknown group, two sources), 0 connections, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn sources_in_earlier_and_later_rollout_batches() {
    let t0 = Instant::now();
    let lab = Lab::up("xh-batch", 4);
    // (a) The source in the first batch, a fresh pair of hosts.
    let a = "/opt/xh-batch-a";
    let inv = inventory(
        &lab,
        "a",
        &playbook(a, true),
        &[("h1", &["data"]), ("h2", &["app"])],
    );
    let r = run_ok(&["apply", &inv, "--yes", "--output", "json"]);
    assert_eq!(r.host("h2")["state"], "changed", "{}", show(&r));
    assert_shared(&lab, a, "h1", &["h2"]);

    // (c) The source in the last batch, its value missing: the taker fails clearly.
    let c = "/opt/xh-batch-c";
    let order: &[(&str, &[&str])] = &[("h3", &["app"]), ("h4", &["data"])];
    let inv = inventory(&lab, "c", &playbook(c, true), order);
    // The plan says so too: the apply's batches will not allow it.
    let r = claw(&["plan", &inv, "--output", "json"], &[]);
    assert_ne!(r.code, 0, "{}", show(&r));
    let why = r.host("h3")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.contains("h4 generates it when it applies, in batch 2, after this host's batch 1"),
        "{}",
        show(&r)
    );
    let r = claw(&["apply", &inv, "--yes", "--output", "json"], &[]);
    assert_ne!(r.code, 0, "{}", show(&r));
    let h3 = r.host("h3");
    assert_eq!(h3["state"], "failed", "{h3}");
    assert_eq!(h3["failed_at"], "db password", "{h3}");
    let why = h3["error"].as_str().unwrap();
    assert!(
        why.contains(
            "secret `db_password` does not exist yet on h4 (read ahead: it applies in batch 2), \
             which keeps it: apply to h4 first"
        ),
        "{why}"
    );
    for f in ["db_password", "app.env"] {
        assert_eq!(read(&lab, "h3", &format!("{c}/{f}")), None, "h3 wrote {f}");
    }

    // (b) The source in the last batch with its value: read ahead, shared.
    run_ok(&["apply", &inv, "--yes", "--limit", "h4"]);
    let r = run_ok(&["apply", &inv, "--yes", "--output", "json"]);
    let e = step_event(&r, "h3", "db password");
    assert!(
        e.contains("the value kept on h4 (read ahead: it applies in batch 2)"),
        "{e}"
    );
    assert_eq!(r.host("h4")["state"], "ok", "{}", show(&r));
    assert_shared(&lab, c, "h4", &["h3"]);
    eprintln!(
        "cross_host rollout batches: 4 hosts, 4 runs (source first; source last: missing, made, read ahead), {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

/// A source read ahead for the takers of an earlier batch answers only them: a taker in the
/// source's own batch waits for the source itself, which generates the value in this run.
#[test]
fn a_read_ahead_does_not_answer_the_takers_of_the_sources_batch() {
    let t0 = Instant::now();
    let lab = Lab::up("xh-ahead", 4);
    let dir = "/opt/xh-ahead";
    let pb = playbook(dir, true).replace("serial = 1", "serial = 2");
    // Batches [h1, h2] and [h3 (the source), h4].
    let order: &[(&str, &[&str])] = &[
        ("h1", &["app"]),
        ("h2", &["app"]),
        ("h3", &["data"]),
        ("h4", &["app"]),
    ];
    let inv = inventory(&lab, "ahead", &pb, order);
    let r = claw(&["apply", &inv, "--yes", "--output", "json"], &[]);
    assert_ne!(r.code, 0, "{}", show(&r));
    for h in ["h1", "h2"] {
        let why = r.host(h)["error"].as_str().unwrap_or_default().to_string();
        assert!(
            why.contains("does not exist yet on h3 (read ahead: it applies in batch 2)"),
            "{h}: {}",
            show(&r)
        );
    }
    assert_eq!(r.host("h3")["state"], "changed", "{}", show(&r));
    assert_eq!(r.host("h4")["state"], "changed", "{}", show(&r));
    assert_shared(&lab, dir, "h3", &["h4"]);
    eprintln!(
        "cross_host read ahead: 4 hosts in 2 batches, the earlier takers refused, the source's batch served, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn hostile_bytes_in_a_kept_value_arrive_byte_for_byte() {
    let t0 = Instant::now();
    let lab = Lab::up("xh-hostile", 3);
    let dir = "/opt/xh-hostile";
    let inv = inventory(&lab, "hostile", &playbook(dir, false), DATA_APP);
    let value = "x'\"$(touch /tmp/xh-pwned)`;`id > /tmp/xh-pwned2`\\\\ &|<>*?[] ünï \
                 {{ secrets.db_password }} %s %n $HOME ${IFS} \t'\\''";
    let content = format!("{value}\n");
    let path = format!("{dir}/db_password");
    put(&lab, "h1", &path, content.as_bytes());
    put(&lab, "h3", &path, b"an older value\n");
    let r = run_ok(&["apply", &inv, "--yes", "--output", "json"]);
    assert_eq!(
        r.host("h1")["changed"],
        0,
        "h1 keeps its value: {}",
        show(&r)
    );
    let e = step_event(&r, "h3", "db password");
    assert!(
        e.contains("another value: replaced by the one kept on h1"),
        "{e}"
    );
    let v = assert_shared(&lab, dir, "h1", &["h2", "h3"]);
    assert_eq!(v, content.as_bytes(), "h1's value changed");
    let again = run_ok(&["apply", &inv, "--yes", "--output", "json"]);
    assert_eq!(again.summary()["totals"]["changed"], 0, "{}", show(&again));
    for h in ["h1", "h2", "h3"] {
        for m in ["/tmp/xh-pwned", "/tmp/xh-pwned2"] {
            let o = lab.exec(h, &["test", "-e", m]);
            assert!(
                !o.status.success(),
                "{h}: {m} exists: the value ran as a command"
            );
        }
    }
    eprintln!(
        "cross_host hostile value: 3 hosts, 2 runs, {} bytes identical on 2 takers and in their template, no marker, {:.1}s",
        content.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// Runs `args` expecting `code`; returns everything it wrote.
fn run_text(args: &[&str], code: i32) -> String {
    let r = claw(args, &[]);
    assert_eq!(r.code, code, "{args:?}: {}", show(&r));
    format!("{}\n{}", r.stdout, r.stderr)
}

#[test]
fn a_value_that_crosses_hosts_reaches_no_output_plan_file_or_command_line() {
    let t0 = Instant::now();
    let lab = Lab::up("xh-leak", 3);
    let dir = "/opt/xh-leak";
    let inv = inventory(&lab, "leak", &playbook(dir, false), DATA_APP);
    let s = crate::support::Scratch::new();
    let saved = s.dir.path().join("leak.plan");
    let saved = saved.to_str().unwrap();
    let samplers: Vec<(&str, PathBuf, std::process::Child)> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| {
            let out = s.dir.path().join(format!("ps-{h}.txt"));
            let c = host_loop(
                &lab,
                h,
                "ps -eww -o args=; sleep 0.02",
                "/tmp/xh-stop-ps",
                &out,
            );
            (*h, out, c)
        })
        .collect();
    // Every sampler runs before the first apply (under load, `lab.sh exec` takes a while).
    for (h, out, _) in &samplers {
        let t = Instant::now();
        while std::fs::metadata(out).map_or(0, |m| m.len()) == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the sampler on {h} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut outputs = vec![
        // A fresh value generated on h1 and taken in the same run; then a re-run.
        run_text(&["apply", &inv, "--yes", "-vv"], 0),
        run_text(&["apply", &inv, "--yes", "--output", "json"], 0),
    ];
    // The takers' files gone: a saved plan that takes the value again, applied.
    for t in ["h2", "h3"] {
        assert!(
            lab.exec(t, &["rm", &format!("{dir}/db_password")])
                .status
                .success()
        );
    }
    outputs.push(run_text(&["plan", &inv, "--out", saved, "-vv"], 0));
    outputs.push(run_text(
        &["apply", &inv, "--plan", saved, "--output", "json"],
        0,
    ));
    outputs.push(run_text(&["apply", &inv, "--yes", "-vv"], 0));
    outputs.push(std::fs::read_to_string(saved).expect("the saved plan"));
    let mut ps_lines = 0;
    for (h, out, child) in samplers {
        stop_loop(&lab, h, "/tmp/xh-stop-ps", child);
        let text = std::fs::read_to_string(&out).unwrap();
        ps_lines += text.lines().count();
        assert!(
            text.contains("sudo -n -u root --"),
            "the sampler on {h} saw no command of claw-provision:\n{text}"
        );
        outputs.push(text);
    }
    let v = assert_shared(&lab, dir, "h1", &["h2", "h3"]);
    let v = String::from_utf8(v).unwrap();
    let v = v.trim_end();
    assert_eq!(v.len(), 64, "{v}");
    let mut hits = Vec::new();
    for f in forms(v) {
        for (i, o) in outputs.iter().enumerate() {
            if o.contains(&f) {
                hits.push(format!("output {i} holds {f}"));
            }
        }
    }
    assert!(hits.is_empty(), "the value leaked: {hits:?}");
    eprintln!(
        "cross_host leaks: 3 hosts, 5 runs + saved plan, {ps_lines} distinct ps lines on 3 hosts, {} forms searched in {} texts: 0 hits, {:.1}s",
        forms(v).len(),
        outputs.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_saved_plan_is_refused_when_the_kept_value_changed() {
    let t0 = Instant::now();
    let lab = Lab::up("xh-drift", 3);
    let dir = "/opt/xh-drift";
    let inv = inventory(&lab, "drift", &playbook(dir, false), DATA_APP);
    run_ok(&["apply", &inv, "--yes", "--limit", "h1"]);
    let s = crate::support::Scratch::new();
    let saved = s.dir.path().join("drift.plan");
    let saved = saved.to_str().unwrap();
    run_ok(&["plan", &inv, "--out", saved]);
    put(
        &lab,
        "h1",
        &format!("{dir}/db_password"),
        b"changed-by-hand-0123456789\n",
    );
    let r = claw(&["apply", &inv, "--plan", saved, "--output", "json"], &[]);
    assert_ne!(r.code, 0, "{}", show(&r));
    for t in ["h2", "h3"] {
        let h = r.host(t);
        assert_eq!(h["state"], "failed", "{h}");
        assert_eq!(h["failed_at"], "drift", "{h}");
        let why = h["error"].as_str().unwrap();
        assert!(why.contains("step `db password`"), "{why}");
        assert!(
            !lab.exec(t, &["test", "-e", dir]).status.success(),
            "{t} was changed"
        );
    }
    // Without a change between plan and apply, the saved plan applies.
    run_ok(&["plan", &inv, "--out", saved]);
    run_ok(&["apply", &inv, "--plan", saved, "--output", "json"]);
    let v = assert_shared(&lab, dir, "h1", &["h2", "h3"]);
    assert_eq!(v, b"changed-by-hand-0123456789\n");
    eprintln!(
        "cross_host saved plan: 3 hosts, 5 runs, drift refused on 2 takers (unchanged), then applied, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}
