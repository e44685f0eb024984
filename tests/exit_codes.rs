//! Exit codes and errors at the edge (README "Exit codes"): 0 done, 1 any error (argument errors
//! and a declined confirmation included, never clap's own 2), 2 only for changes with
//! `--detailed-exitcode`, 130 after Ctrl-C; with `--output json` errors are events on stdout; a
//! closed stdout or stderr ends quietly, never with a panic.

use crate::support::{Lab, Scratch, bin, claw, claw_spawn, repo};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example() -> String {
    repo().join("inventory/example.toml").display().to_string()
}

/// An inventory naming `pb.toml`, whose one host (port 1) is never contacted.
fn offline_inventory(s: &Scratch, playbook: &str) -> String {
    s.file("pb.toml", playbook);
    s.file(
        "inv.toml",
        "playbook = \"pb.toml\"\n[defaults]\nuser = \"x\"\n[hosts.a]\naddress = \"127.0.0.1\"\nport = 1\n",
    )
    .display()
    .to_string()
}

/// A lab host with `playbook` as its playbook; returns the lab and the inventory.
fn lab_with(name: &str, playbook: &str) -> (Lab, String) {
    let lab = Lab::up(name, 1);
    let pb = lab.dir.join(format!("{name}.toml"));
    std::fs::write(&pb, playbook).unwrap();
    let inv = lab.write_inventory(&format!("{name}-inv.toml"), &pb, &[]);
    (lab, inv.display().to_string())
}

const ONE_FILE_PB: &str = r#"name = "exit"

[[steps]]
name = "motd"
kind = "file"
path = "/opt/exit-motd"
content = "hello\n"
"#;

#[test]
fn success_is_0() {
    let r = claw(&["validate", &example()], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // --help and --version are not errors, whatever clap calls them.
    for args in [&["--help"][..], &["--version"], &["plan", "--help"]] {
        let r = claw(args, &[]);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(!r.stdout.is_empty() && r.stderr.is_empty(), "{args:?}");
    }
    assert!(claw(&["--help"], &[]).stdout.contains("130"));
}

#[test]
fn input_error_is_1() {
    let s = Scratch::new();
    let inv = s.file("bad.toml", "[defaults]\nuser = \"x\"\nport = \n");
    let r = claw(&["plan", inv.to_str().unwrap()], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(r.stderr.contains("bad.toml:3:"), "{}", r.stderr);
    assert_eq!(r.stdout, "", "nothing but the error, on stderr");
}

#[test]
fn argument_error_is_1_not_clap_2() {
    let inv = example();
    for args in [
        &[][..],
        &["frobnicate"],
        &["plan"],
        &["plan", &inv, "--forks", "0"],
        &["plan", &inv, "--nope"],
        &["run", &inv, "hostname"],
        &["completions", "tcsh"],
    ] {
        let r = claw(args, &[]);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, "", "{args:?}");
        // As clap prints it, with its hint.
        assert!(r.stderr.starts_with("error: "), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("--help"), "{args:?}: {}", r.stderr);
    }
}

/// `apply` on a terminal, as tests/confirm.rs drives it (`script`), typing `answer`.
fn apply_on_terminal(inv: &str, answer: &str) -> (i32, String) {
    let cmd = format!("{} apply {inv}", bin().display());
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .env("CLAW_SSH_CONFIG", "none")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(answer.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn declined_prompt_is_1() {
    // No terminal to ask on: refused before anything (offline).
    let s = Scratch::new();
    let inv = offline_inventory(&s, "name = \"x\"\n");
    let r = claw(&["apply", &inv], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);

    // Answered no: nothing changed, exit 1 (a script must not take it for a success).
    let (lab, inv) = lab_with("t-exit-declined", ONE_FILE_PB);
    let (code, out) = apply_on_terminal(&inv, "n\n");
    assert!(out.contains("Apply 1 change on 1 host? [y/N]"), "{out}");
    assert!(out.contains("Cancelled: nothing was changed."), "{out}");
    assert_eq!(code, 1, "{out}");
    assert_eq!(lab.ssh_ok("h1", "ls /opt"), "", "declined: nothing changed");
    // Answered yes: done, 0.
    let (code, out) = apply_on_terminal(&inv, "y\n");
    assert_eq!(code, 0, "{out}");
    assert_eq!(lab.ssh_ok("h1", "cat /opt/exit-motd"), "hello\n");
}

#[test]
fn changes_are_2_only_with_detailed_exitcode() {
    let (lab, inv) = lab_with("t-exit-pending", ONE_FILE_PB);
    let r = claw(&["plan", &inv], &[]);
    assert_eq!(
        r.code, 0,
        "changes pending, no --detailed-exitcode: {}",
        r.stderr
    );
    let r = claw(&["plan", &inv, "--detailed-exitcode"], &[]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let r = claw(&["apply", &inv, "--yes", "--detailed-exitcode"], &[]);
    assert_eq!(r.code, 2, "changes made: {}\n{}", r.stdout, r.stderr);
    let r = claw(&["plan", &inv, "--detailed-exitcode"], &[]);
    assert_eq!(r.code, 0, "nothing pending: {}\n{}", r.stdout, r.stderr);
    // A failed host is 1: an error wins over pending changes.
    let fail = lab.dir.join("exit-fail.toml");
    std::fs::write(
        &fail,
        format!(
            "{ONE_FILE_PB}\n[[steps]]\nname = \"fails\"\nkind = \"command\"\nrun = \"exit 3\"\n"
        ),
    )
    .unwrap();
    lab.ssh_ok("h1", "sudo rm /opt/exit-motd");
    let r = claw(
        &[
            "apply",
            &inv,
            "--yes",
            "--detailed-exitcode",
            "--playbook",
            fail.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("failed"), "{}", r.stdout);
    // `plan | head`: the closed pipe changes neither the outcome nor the saved plan.
    lab.ssh_ok("h1", "sudo rm /opt/exit-motd");
    let out = lab.dir.join("exit.plan");
    let out = out.to_str().unwrap();
    let (code, stderr) = closed_pipe(&["plan", &inv, "--detailed-exitcode", "--out", out], false);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert!(std::path::Path::new(out).is_file());
}

const SLOW_PB: &str = r#"name = "exit-ctrl-c"

[[steps]]
name = "hold"
kind = "command"
run = "sleep 3"

[[steps]]
name = "marker"
kind = "file"
path = "/opt/exit-ctrl-c-marker"
content = "x\n"
"#;

#[test]
fn ctrl_c_is_130() {
    let (lab, inv) = lab_with("t-exit-ctrlc", SLOW_PB);
    let run = claw_spawn(&["apply", &inv, "--yes"], &[]);
    let t = Instant::now();
    while !lab.ssh("h1", "pgrep -f 'sleep [3]'").status.success() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the hold step never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) on the pid of our own child, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(run.id() as i32, libc::SIGINT) }, 0);
    let r = run.wait();
    assert_eq!(r.code, 130, "{}\n{}", r.stdout, r.stderr);
    // It stopped cleanly: the running step ended, the next did not start, the summary came.
    assert!(r.stderr.contains("interrupted"), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("at marker: stopped before this step: interrupted (Ctrl-C)"),
        "{}",
        r.stdout
    );
    assert!(
        !lab.ssh("h1", "test -e /opt/exit-ctrl-c-marker")
            .status
            .success(),
        "the step after Ctrl-C did not run"
    );
}

fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[test]
fn json_errors_are_events_with_file_line_column() {
    let s = Scratch::new();
    let inv = offline_inventory(
        &s,
        "name = \"x\"\n\n[[steps]]\nname = \"a\"\nkind = \"dir\"\npath = \"/x\"\nmdoe = \"0755\"\n\n[[steps]]\nname = \"b\"\nkind = \"fiel\"\n",
    );
    let r = claw(&["validate", &inv, "--output", "json"], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let ev = events(&r.stdout);
    assert_eq!(ev.len(), 2, "one event per problem: {}", r.stdout);
    let e = &ev[0];
    assert_eq!(
        (
            &e["event"],
            &e["kind"],
            &e["line"],
            &e["column"],
            &e["schema"]
        ),
        (
            &Value::from("error"),
            &Value::from("input"),
            &Value::from(7),
            &Value::from(1),
            &Value::from(1)
        ),
        "{e}"
    );
    assert!(e["file"].as_str().unwrap().ends_with("pb.toml"), "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("step `a` (dir): unknown field `mdoe`"),
        "{e}"
    );
    assert_eq!(ev[1]["line"], 11, "{}", ev[1]);
    // stderr still tells a person.
    assert!(r.stderr.contains("pb.toml:7:1: step `a`"), "{}", r.stderr);

    // A problem of the whole file: no line or column.
    let missing = s.dir.path().join("missing.toml");
    let r = claw(
        &["plan", missing.to_str().unwrap(), "--output", "json"],
        &[],
    );
    assert_eq!(r.code, 1);
    let ev = events(&r.stdout);
    assert!(
        ev[0]["message"].as_str().unwrap().contains("cannot read"),
        "{}",
        ev[0]
    );
    assert!(
        ev[0]["line"].is_null() && ev[0]["column"].is_null(),
        "{}",
        ev[0]
    );

    // Errors that are not about an input file: kind and message.
    let r = claw(
        &["plan", &example(), "--output", "json", "--limit", "nope"],
        &[],
    );
    assert_eq!(r.code, 1);
    let ev = events(&r.stdout);
    assert_eq!(
        (&ev[0]["event"], &ev[0]["kind"]),
        (&Value::from("error"), &Value::from("usage"))
    );
    assert!(
        ev[0]["message"].as_str().unwrap().contains("nope"),
        "{}",
        ev[0]
    );
    // clap's argument errors too (stderr as clap prints it).
    let r = claw(
        &["plan", &example(), "--output", "json", "--forks", "0"],
        &[],
    );
    assert_eq!(r.code, 1);
    let ev = events(&r.stdout);
    assert_eq!(ev[0]["kind"], "arguments", "{}", ev[0]);
    assert!(
        ev[0]["message"].as_str().unwrap().contains("--forks"),
        "{}",
        ev[0]
    );
    assert!(r.stderr.contains("For more information"), "{}", r.stderr);
    // Without --output json, stdout stays empty.
    let r = claw(&["plan", &example(), "--limit", "nope"], &[]);
    assert_eq!((r.code, r.stdout.as_str()), (1, ""));
}

/// Runs the binary with stdout (and stderr if `both`) on a pipe whose reader is already gone,
/// as `| head` leaves it: every write fails with EPIPE. Returns the exit code and stderr.
fn closed_pipe(args: &[&str], both: bool) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let stderr = if both {
        Stdio::from(writer.try_clone().unwrap())
    } else {
        Stdio::piped()
    };
    let out = Command::new(bin())
        .args(args)
        .env("CLAW_SSH_CONFIG", "none")
        .stdout(writer)
        .stderr(stderr)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn closed_pipe_ends_quietly() {
    let inv = example();
    for (args, code) in [
        (&["validate", &inv, "-v"][..], 0),
        (&["hosts", &inv], 0),
        (&["--help"], 0),
        (&["completions", "bash"], 0),
        (&["validate", &inv, "--output", "json"], 0),
        (&["plan", &inv, "--limit", "nope", "--output", "json"], 1),
    ] {
        let (got, stderr) = closed_pipe(args, false);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            got, code,
            "{args:?}: the exit status is the command's: {stderr}"
        );
    }
    // stderr closed too (`2>&1 | head`): the error cannot be told, the status still is.
    let s = Scratch::new();
    let bad = s.file("bad.toml", "[defaults]\nport = \n");
    let (got, _) = closed_pipe(&["validate", bad.to_str().unwrap()], true);
    assert_eq!(got, 1, "not a panic's 101");
    let (got, _) = closed_pipe(&["plan", "--nope"], true);
    assert_eq!(got, 1);
}
