//! The audit log on the target: the host's first change writes a `started` record itself (in
//! the same command), the client completes it with a `finished` record after the run. A client
//! killed mid-apply (SIGKILL: no cleanup of any kind) still leaves its `started` record.

use crate::support::{Lab, Scratch, claw, claw_spawn};
use serde_json::Value;
use std::time::{Duration, Instant};

const PLAYBOOK: &str = r#"name = "audited"

[vars]
nap = "0"

[[steps]]
name = "marker"
kind = "file"
path = "/opt/audited/marker"
content = "{{ nap }}\n"

[[steps]]
name = "nap"
kind = "command"
run = "sleep {{ nap }}"
"#;

fn records(lab: &Lab) -> Vec<Value> {
    let o = lab.exec(
        "h1",
        &[
            "sh",
            "-c",
            "cat /var/log/claw-provision/audit.log 2>/dev/null; true",
        ],
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn a_killed_client_leaves_a_started_record() {
    let lab = Lab::up("swap-audit", 1);
    let s = Scratch::new();
    let pb = s.file("pb.toml", PLAYBOOK);
    let inv = lab.write_inventory("audit.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let ok = lab.exec("h1", &["mkdir", "-p", "/opt/audited"]);
    assert!(ok.status.success());

    // A whole apply: `started` then `finished`, one run id.
    let r = claw(&["apply", inv, "--yes", "-e", "nap=0"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let recs = records(&lab);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0]["event"], "started", "{recs:?}");
    assert_eq!(recs[1]["event"], "finished", "{recs:?}");
    assert_eq!(recs[0]["run"], recs[1]["run"]);
    assert_eq!(recs[0]["playbook"], "audited");
    assert_eq!(recs[1]["result"], "changed");
    assert!(recs[0]["operator"].as_str().unwrap().contains("audited"));
    assert!(recs[0]["time"].as_str().unwrap().starts_with("20"));
    let first_run = recs[0]["run"].clone();

    // Killed while its second step runs on the host.
    let run = claw_spawn(&["apply", inv, "--yes", "-e", "nap=30"], &[]);
    let started = Instant::now();
    while records(&lab).len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no started record"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Until the client dies, the step is still running (30 s): no finished record can come.
    let mut child = run.0;
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let recs = records(&lab);
    assert_eq!(recs.len(), 3, "only the started record: {recs:?}");
    assert_eq!(recs[2]["event"], "started");
    assert_eq!(recs[2]["playbook"], "audited");
    assert_ne!(recs[2]["run"], first_run, "a new run id");
    let mode = lab.exec(
        "h1",
        &["stat", "-c", "%a %U", "/var/log/claw-provision/audit.log"],
    );
    assert_eq!(String::from_utf8_lossy(&mode.stdout), "600 root\n");
}
