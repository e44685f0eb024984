//! Saved plans on real hosts: `plan --out` then `apply --plan` applies exactly it; drift on one
//! host refuses that host (naming the step) and applies the other; a plan made before the
//! playbook changed is refused before anything changes; `plan --detailed-exitcode` as the
//! drift check of cron/CI.

use crate::support::{Lab, Scratch, claw};

const API_KEY: &str = "sp-operator-key-4b1d";

fn playbook(s: &Scratch, motd: &str) -> std::path::PathBuf {
    s.file(
        "pb.toml",
        &format!(
            r#"
name = "saved-plan"
operator_secrets = ["CLAW_TEST_SP_API_KEY"]

[[steps]]
name = "app dir"
kind = "dir"
path = "/opt/sp"

[[steps]]
name = "db password"
kind = "secret"
secret = "db_password"
path = "/opt/sp/db_password"

[[steps]]
name = "env file"
kind = "file"
path = "/opt/sp/env"
mode = "0600"
content = "DB_PASSWORD={{{{ secrets.db_password }}}}\nAPI_KEY={{{{ secrets.CLAW_TEST_SP_API_KEY }}}}\n"

[[steps]]
name = "motd"
kind = "file"
path = "/opt/sp/motd"
content = "{motd} {{{{ host.name }}}}\n"
notify = "mark"

[[handlers]]
name = "mark"
kind = "command"
run = "echo ran >> /opt/sp/handler-runs"
"#
        ),
    )
}

const ENV: [(&str, &str); 1] = [("CLAW_TEST_SP_API_KEY", API_KEY)];

#[test]
fn saved_plan_applies_exactly_and_refuses_drift_and_other_inputs() {
    let lab = Lab::up("sp-saved", 2);
    let s = Scratch::new();
    let pb = playbook(&s, "welcome to");
    let inv = lab.write_inventory("sp-inventory.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let out = s.dir.path().join("site.plan");
    let out = out.to_str().unwrap();

    // --detailed-exitcode: 2 with changes pending.
    let p = claw(&["plan", inv, "--detailed-exitcode"], &ENV);
    assert_eq!(p.code, 2, "{}\n{}", p.stdout, p.stderr);

    // plan --out: the normal output, and the file (0600, no secret in it).
    let p = claw(&["plan", inv, "--out", out], &ENV);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    assert!(
        p.stdout.contains("+ create  file /opt/sp/motd"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains(&format!("Plan saved to {out}")),
        "{}",
        p.stdout
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(out).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file["format"], "claw-provision plan");
    assert_eq!(file["version"], 1);
    let h1 = &file["hosts"][0];
    assert_eq!(h1["host"], "h1");
    assert_eq!(h1["steps"][3]["name"], "motd");
    assert_eq!(h1["steps"][3]["action"], "create");
    assert!(!text.contains(API_KEY), "{text}");
    assert_eq!(
        lab.ssh_ok("h1", "ls /opt"),
        "",
        "plan must not change the host"
    );

    // apply --plan: no question (no terminal, no --yes), every host applied.
    let a = claw(&["apply", inv, "--plan", out, "--output", "json"], &ENV);
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, a.stderr);
    for h in ["h1", "h2"] {
        assert_eq!(a.host(h)["state"], "changed", "{}", a.stdout);
    }
    assert_eq!(lab.ssh_ok("h2", "sudo cat /opt/sp/motd"), "welcome to h2\n");
    let env = lab.ssh_ok("h1", "sudo cat /opt/sp/env");
    let db = lab.ssh_ok("h1", "sudo cat /opt/sp/db_password");
    assert_eq!(
        env,
        format!("DB_PASSWORD={}\nAPI_KEY={API_KEY}\n", db.trim())
    );
    assert!(!a.stdout.contains(API_KEY) && !a.stderr.contains(API_KEY));
    // Nothing left to do: a plan shows no change, --detailed-exitcode says 0.
    let p = claw(&["plan", inv, "--detailed-exitcode"], &ENV);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    // The same plan again: the hosts changed since (they were applied): refused.
    let again = claw(&["apply", inv, "--plan", out], &ENV);
    assert_eq!(again.code, 1, "{}\n{}", again.stdout, again.stderr);
    assert!(
        again
            .stdout
            .contains("at drift: the host changed since the plan"),
        "{}",
        again.stdout
    );

    // A plan of a change; then drift on h1 (the managed file edited by hand).
    let pb = playbook(&s, "hello from");
    assert!(pb.exists());
    let p = claw(&["plan", inv, "--out", out, "--detailed-exitcode"], &ENV);
    assert_eq!(p.code, 2, "{}\n{}", p.stdout, p.stderr);
    assert!(
        p.stdout.contains("~ update  file /opt/sp/motd"),
        "{}",
        p.stdout
    );
    // The secret read back from the host, its base64, the env file's plain sha256: not in it.
    let text = std::fs::read_to_string(out).unwrap();
    let env_sha = lab.ssh_ok("h1", "sudo sha256sum /opt/sp/env");
    let env_sha = env_sha.split_whitespace().next().unwrap();
    let db_b64 = lab.ssh_ok("h1", "sudo base64 -w0 /opt/sp/db_password");
    for forbidden in [db.trim(), db_b64.trim(), env_sha, API_KEY] {
        assert!(
            !text.contains(forbidden),
            "{forbidden} in the plan:\n{text}"
        );
    }
    lab.ssh_ok(
        "h1",
        "echo 'edited by hand' | sudo tee /opt/sp/motd >/dev/null",
    );
    let a = claw(&["apply", inv, "--plan", out, "--output", "json"], &ENV);
    assert_eq!(
        a.code, 1,
        "drift must fail the run: {}\n{}",
        a.stdout, a.stderr
    );
    let h1 = a.host("h1");
    assert_eq!(h1["state"], "failed", "{h1}");
    assert_eq!(h1["failed_at"], "drift", "{h1}");
    let why = h1["error"].as_str().unwrap();
    assert!(why.contains("step `motd`"), "{why}");
    assert!(!why.contains("step `env file`"), "{why}");
    assert_eq!(a.host("h2")["state"], "changed", "{}", a.stdout);
    assert_eq!(
        lab.ssh_ok("h1", "sudo cat /opt/sp/motd"),
        "edited by hand\n",
        "a host refused for drift is not changed"
    );
    assert_eq!(lab.ssh_ok("h2", "sudo cat /opt/sp/motd"), "hello from h2\n");
    // The text output names the host and the step too.
    let p = claw(&["plan", inv, "--out", out, "--limit", "h1"], &ENV);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    lab.ssh_ok(
        "h1",
        "echo 'edited again' | sudo tee /opt/sp/motd >/dev/null",
    );
    let a = claw(&["apply", inv, "--plan", out, "--limit", "h1"], &ENV);
    assert_eq!(a.code, 1, "{}\n{}", a.stdout, a.stderr);
    assert!(
        a.stdout.contains("h1") && a.stdout.contains("step `motd` (its probed state changed"),
        "{}",
        a.stdout
    );

    // A plan made before the playbook changed: refused before anything changes.
    let p = claw(&["plan", inv, "--out", out], &ENV);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    playbook(&s, "changed since");
    let a = claw(&["apply", inv, "--plan", out], &ENV);
    assert_eq!(a.code, 1, "{}\n{}", a.stdout, a.stderr);
    assert!(a.stderr.contains("made from other inputs"), "{}", a.stderr);
    assert!(a.stderr.contains("the playbook changed"), "{}", a.stderr);
    assert!(
        a.stderr
            .contains("host h1, step `motd`: its desired state changed"),
        "{}",
        a.stderr
    );
    assert_eq!(a.stdout, "", "nothing ran");
    assert_eq!(lab.ssh_ok("h1", "sudo cat /opt/sp/motd"), "edited again\n");
    // ... for other hosts, and with another operator secret.
    playbook(&s, "welcome to");
    let p = claw(&["plan", inv, "--out", out], &ENV);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    let a = claw(&["apply", inv, "--plan", out, "--limit", "h2"], &ENV);
    assert_eq!(a.code, 1);
    assert!(
        a.stderr.contains(
            "the plan is for host(s) h1, h2 (no --limit); this apply selects h2 (--limit 'h2')"
        ),
        "{}",
        a.stderr
    );
    let a = claw(
        &["apply", inv, "--plan", out],
        &[("CLAW_TEST_SP_API_KEY", "another-key")],
    );
    assert_eq!(a.code, 1);
    assert!(
        a.stderr
            .contains("operator secret `CLAW_TEST_SP_API_KEY` has another value"),
        "{}",
        a.stderr
    );
    assert!(!a.stderr.contains("another-key") && !a.stderr.contains(API_KEY));
    // The plan, applied as made: both motds back to "welcome to".
    let a = claw(&["apply", inv, "--plan", out, "--output", "json"], &ENV);
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, a.stderr);
    assert_eq!(a.host("h1")["state"], "changed");
    assert_eq!(a.host("h2")["state"], "changed");
    assert_eq!(lab.ssh_ok("h1", "sudo cat /opt/sp/motd"), "welcome to h1\n");

    // A plan with changes on h1 only (JSON output): h2, planned with nothing to change, is
    // probed, found as planned, and left alone.
    lab.ssh_ok("h1", "echo 'edited' | sudo tee /opt/sp/motd >/dev/null");
    let p = claw(&["plan", inv, "--out", out, "--output", "json"], &ENV);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    let saved = p
        .events()
        .into_iter()
        .find(|e| e["event"] == "plan_saved")
        .expect("a plan_saved event");
    assert_eq!(
        (saved["changes"].as_u64(), saved["hosts"].as_u64()),
        (Some(1), Some(2))
    );
    let a = claw(&["apply", inv, "--plan", out, "--output", "json"], &ENV);
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, a.stderr);
    assert_eq!(a.host("h1")["state"], "changed");
    assert_eq!(a.host("h1")["changed"], 1);
    assert_eq!(a.host("h2")["state"], "ok");
    assert_eq!(a.host("h2")["changed"], 0);
    assert_eq!(lab.ssh_ok("h1", "sudo cat /opt/sp/motd"), "welcome to h1\n");
    let p = claw(&["plan", inv, "--detailed-exitcode"], &ENV);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);

    // --detailed-exitcode: 1 when a host cannot be planned, even with changes pending on
    // another (an error is never reported as "changes pending"); no plan file is written then.
    lab.ssh_ok(
        "h1",
        "echo 'edited by hand' | sudo tee /opt/sp/motd >/dev/null",
    );
    lab.cmd(&["stop", "h2"]);
    std::fs::remove_file(out).unwrap();
    let p = claw(&["plan", inv, "--detailed-exitcode", "--out", out], &ENV);
    assert_eq!(p.code, 1, "{}\n{}", p.stdout, p.stderr);
    assert!(
        p.stdout.contains("~ update  file /opt/sp/motd"),
        "{}",
        p.stdout
    );
    assert!(
        p.stderr
            .contains("no plan written: host(s) h2 could not be planned"),
        "{}",
        p.stderr
    );
    assert!(!std::path::Path::new(out).exists());
}

#[test]
fn saved_plan_file_errors_change_nothing() {
    let h = claw(&["plan", "--help"], &[]);
    assert!(
        h.stdout.contains("--out <FILE>") && h.stdout.contains("--plan prod.plan"),
        "{}",
        h.stdout
    );
    let h = claw(&["apply", "--help"], &[]);
    assert!(
        h.stdout.contains("--plan <FILE>") && h.stdout.contains("without asking"),
        "{}",
        h.stdout
    );
    let s = Scratch::new();
    let inv = s.file(
        "inv.toml",
        "playbook = \"pb.toml\"\n[hosts.h1]\naddress = \"127.0.0.1\"\n",
    );
    s.file(
        "pb.toml",
        "name = \"x\"\n[[steps]]\nname = \"d\"\nkind = \"dir\"\npath = \"/opt/x\"\n",
    );
    let inv = inv.to_str().unwrap();
    let bad = s.file(
        "bad.plan",
        "{\"format\": \"claw-provision plan\", \"version\": 99}",
    );
    let a = claw(&["apply", inv, "--plan", bad.to_str().unwrap()], &[]);
    assert_eq!(a.code, 1);
    assert!(
        a.stderr
            .contains("bad.plan: plan format version 99 is not supported"),
        "{}",
        a.stderr
    );
    let a = claw(&["apply", inv, "--plan", "/nonexistent/x.plan"], &[]);
    assert_eq!(a.code, 1);
    assert!(
        a.stderr
            .contains("--plan /nonexistent/x.plan: cannot read it"),
        "{}",
        a.stderr
    );
    // --detailed-exitcode: 1 on an input error (a step of an unknown kind).
    s.file(
        "pb.toml",
        "name = \"x\"\n[[steps]]\nname = \"d\"\nkind = \"nope\"\npath = \"/opt/x\"\n",
    );
    let p = claw(&["plan", inv, "--detailed-exitcode"], &[]);
    assert_eq!(p.code, 1, "{}\n{}", p.stdout, p.stderr);
    assert!(p.stderr.contains("nope"), "{}", p.stderr);
    let p = claw(&["plan", inv, "--out", "/nonexistent/x.plan"], &[]);
    assert_eq!(p.code, 1);
    assert!(
        p.stderr
            .contains("--out /nonexistent/x.plan: the directory /nonexistent does not exist"),
        "{}",
        p.stderr
    );
}
