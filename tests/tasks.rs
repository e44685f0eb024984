//! Named tasks (`[[tasks]]`, `--task NAME`) on light lab hosts: steps taken from the playbook by
//! name, read-only commands whose output is shown (`output`, `changes = false`), `fetch` to the
//! operator's machine, and rescue steps that run only after a failure (the host stays failed).

use crate::support::{Lab, claw, ok};

const PB: &str = r#"name = "ops"

[defaults]
release = "r1"

[[steps]]
name = "release file"
kind = "file"
path = "/opt/ops/release"
content = "{{ release }}\n"
mode = "0644"

[[steps]]
name = "token"
kind = "secret"
secret = "token"
path = "/opt/ops/token"

[[steps]]
name = "release check"
kind = "command"
run = "grep -qx good /opt/ops/release || { echo \"release $(cat /opt/ops/release) is bad\" >&2; exit 1; }"
changes = false

[[tasks]]
name = "show"
description = "read only"
[[tasks.steps]]
name = "show the release"
kind = "command"
run = "cat /opt/ops/release; echo \"built on {{ host.name }}\"; echo \"token $(cat /opt/ops/token)\""
output = true
changes = false

[[tasks]]
name = "deploy"
description = "a new release with a rollback"
[[tasks.steps]]
name = "keep the previous release"
kind = "command"
run = "cp -p /opt/ops/release /opt/ops/release.previous"
[[tasks.steps]]
use = "release file"
[[tasks.steps]]
use = "release check"
[[tasks.rescue]]
name = "roll back"
kind = "command"
run = "mv -f /opt/ops/release.previous /opt/ops/release && echo rolled back to $(cat /opt/ops/release)"
output = true

[[tasks]]
name = "fetch"
description = "copy the release file here"
[[tasks.steps]]
name = "write a report"
kind = "command"
run = "mkdir -p /opt/ops/reports && date +%s%N > /opt/ops/reports/r-$(date +%s%N) && ln -sfn $(ls /opt/ops/reports | grep '^r-' | sort | tail -n 1) /opt/ops/reports/latest"
[[tasks.steps]]
name = "copy the newest report"
kind = "fetch"
src = "/opt/ops/reports/latest"
dest = "{{ fetch_dir }}/{{ host.name }}"
recheck_after = ["write a report"]
"#;

#[test]
fn tasks_rescue_output_and_fetch() {
    let lab = Lab::up("t-tasks", 2);
    ok(lab.ssh("h1", "sudo mkdir -p /opt/ops"), "mkdir");
    ok(lab.ssh("h2", "sudo mkdir -p /opt/ops"), "mkdir");
    let pb = lab.dir.join("ops.toml");
    std::fs::write(&pb, PB).unwrap();
    let pb_s = pb.to_str().unwrap();
    let inv = lab.write_inventory("ops-inv.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let apply = |args: &[&str]| {
        let mut a = vec!["apply", inv, "--playbook", pb_s, "--yes"];
        a.extend_from_slice(args);
        claw(&a, &[])
    };

    // The playbook itself: release r1 fails its check (the playbook has no rescue).
    let r = apply(&["-e", "release=good", "--output", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // A read-only task: its output is shown, nothing counts as a change, no question asked.
    let r = apply(&["--task", "show", "--limit", "h1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("h1: | good\n"), "{}", r.stdout);
    assert!(r.stdout.contains("h1: | built on h1\n"), "{}", r.stdout);
    // The playbook's secrets are read in a task too: a value in the output is masked.
    let token = ok(lab.ssh("h1", "sudo cat /opt/ops/token"), "token");
    assert_eq!(token.trim().len(), 64);
    assert!(
        r.stdout.contains("h1: | token <secret:token>\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains(token.trim()) && !r.stderr.contains(token.trim()));
    let r = apply(&["--task", "show", "--output", "json"]);
    assert_eq!(r.host("h2")["changed"], 0, "{}", r.stdout);

    // A failing step: the rescue steps run, the host is failed, and says so.
    let r = apply(&["--task", "deploy", "-e", "release=bad", "--output", "json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    for h in ["h1", "h2"] {
        let e = r.host(h);
        assert_eq!(e["state"], "failed", "{e}");
        assert_eq!(e["failed_at"], "release check", "{e}");
        let err = e["error"].as_str().unwrap();
        assert!(
            err.contains("release bad is bad") && err.contains("the rescue steps ran: roll back"),
            "{err}"
        );
        assert_eq!(ok(lab.ssh(h, "cat /opt/ops/release"), "release"), "good\n");
    }
    let rolled = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "step" && e["host"] == "h1" && e["name"] == "roll back")
        .expect("a step event of the rescue step");
    assert_eq!(rolled["status"], "changed");
    assert_eq!(rolled["output"], "rolled back to good\n");

    // No failure: the rescue steps are skipped.
    let r = apply(&["--task", "deploy", "-e", "release=good", "--output", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        !r.events()
            .iter()
            .any(|e| e["event"] == "step" && e["name"] == "roll back" && e["status"] == "changed"),
        "{}",
        r.stdout
    );
    assert_eq!(
        ok(lab.ssh("h1", "cat /opt/ops/release"), "release"),
        "good\n"
    );

    // fetch: the newest report (the link is followed) lands here under its own name, whole.
    let dir = lab.dir.join("fetched");
    let fd = format!("fetch_dir={}", dir.display());
    let r = apply(&["--task", "fetch", "-e", &fd, "--output", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for h in ["h1", "h2"] {
        let newest = ok(lab.ssh(h, "readlink /opt/ops/reports/latest"), "readlink");
        let local = dir.join(h).join(newest.trim());
        let content =
            std::fs::read_to_string(&local).unwrap_or_else(|e| panic!("{}: {e}", local.display()));
        assert_eq!(
            content,
            ok(
                lab.ssh(h, &format!("cat /opt/ops/reports/{}", newest.trim())),
                "cat"
            )
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.join(h))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    // plan --task: the fetch is known only after the report is written.
    let r = claw(
        &[
            "plan",
            inv,
            "--playbook",
            pb_s,
            "--task",
            "fetch",
            "-e",
            &fd,
            "--limit",
            "h1",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("known after apply"), "{}", r.stdout);
    // A missing source is an error naming the step.
    ok(
        lab.ssh(
            "h2",
            "sudo rm -rf /opt/ops/reports && sudo mkdir /opt/ops/reports",
        ),
        "rm",
    );
    let bad = PB.replace(
        "src = \"/opt/ops/reports/latest\"",
        "src = \"/opt/ops/nothing\"",
    );
    std::fs::write(&pb, bad).unwrap();
    let r = apply(&[
        "--task", "fetch", "-e", &fd, "--limit", "h2", "--output", "json",
    ]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let e = r.host("h2");
    assert_eq!(e["failed_at"], "copy the newest report", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("/opt/ops/nothing does not exist on the host"),
        "{e}"
    );

    // An unknown task: a usage error listing the tasks.
    let r = claw(&["plan", inv, "--playbook", pb_s, "--task", "nope"], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("no such task (tasks: show, deploy, fetch)"),
        "{}",
        r.stderr
    );
}
