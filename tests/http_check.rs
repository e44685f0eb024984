//! `http_check` from a target: passes without counting as a change, retries, and fails the host
//! with the URL, the status and the reason.

use crate::support::{Lab, Scratch, claw};

#[test]
fn http_check_from_the_target() {
    let lab = Lab::up("t-http", 2);
    let h1 = lab.host("h1").address;
    // A web server on h1 (python3 is the machine's, shared by the light hosts).
    lab.ssh_ok(
        "h1",
        &format!(
            "mkdir -p ~/www; echo 'status ok' > ~/www/health; cd ~/www; \
             nohup python3 -m http.server 8080 --bind {h1} </dev/null >/dev/null 2>&1 &"
        ),
    );
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        &format!(
            r#"name = "checks"
hosts = "h2"

[[steps]]
name = "web answers"
kind = "http_check"
url = "http://{h1}:8080/health"
contains = "status ok"
retries = 10
"#
        ),
    );
    let inv = lab.write_inventory("check.toml", &pb, &[]);
    let plan = claw(&["plan", inv.to_str().unwrap(), "--detailed-exitcode"], &[]);
    assert_eq!(
        plan.code, 0,
        "a check is not a change: {}{}",
        plan.stdout, plan.stderr
    );
    assert!(
        plan.stdout.contains("no changes, 1 check on apply"),
        "{}",
        plan.stdout
    );
    let r = claw(
        &["apply", inv.to_str().unwrap(), "--yes", "--output", "json"],
        &[],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.host("h2")["ok"], 1);
    assert_eq!(r.host("h2")["changed"], 0);

    let pb = s.file(
        "bad.toml",
        &format!(
            r#"name = "checks"
hosts = "h2"

[[steps]]
name = "nothing there"
kind = "http_check"
url = "http://{h1}:8081/health"
retries = 2
"#
        ),
    );
    let inv = lab.write_inventory("bad.toml", &pb, &[]);
    let r = claw(
        &["apply", inv.to_str().unwrap(), "--yes", "--output", "json"],
        &[],
    );
    assert_eq!(r.code, 1);
    let h2 = r.host("h2");
    assert_eq!(h2["failed_at"], "nothing there");
    let err = h2["error"].as_str().unwrap();
    assert!(
        err.contains(&format!(
            "http://{h1}:8081/health answered 000 (want 200) after 2 attempts"
        )),
        "{err}"
    );
    let _ = lab.ssh("h1", "pkill -f 'http.server 808[0]' || true");
}
