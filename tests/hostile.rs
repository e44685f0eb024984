//! Hostile or broken targets: tools that print garbage or lie, a missing `sha256sum`, a noisy
//! login shell, a read-only /opt, a full disk. Each host fails alone with an error naming the
//! host, the step and the cause; no managed file is damaged and no temp file is left behind.

use crate::support::{Lab, Run, Scratch, claw, repo};
use std::process::Command;

/// `lab.sh exec HOST -- sh -c CMD` (root inside the host's namespaces; its mounts stay there).
fn exec(lab: &Lab, host: &str, cmd: &str) -> String {
    let o = Command::new("bash")
        .arg(repo().join("tests/lab/lab.sh"))
        .args(["exec", host, "--name", &lab.name, "--", "sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{host}: {cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The managed files every host starts with (the "old" state a failure must keep).
const OLD_STATE: &str = "mkdir -p /opt/app/a /opt/app/b && printf 'old config\\n' > /opt/app/config \
     && printf 'old b\\n' > /opt/app/b/blob && chmod 644 /opt/app/config /opt/app/b/blob";

/// sha256 of every regular file under /opt/app plus any temp file name (`.claw-provision.*`).
fn state(lab: &Lab, host: &str) -> String {
    exec(
        lab,
        host,
        "cd /opt/app && find . -type f | sort | while read -r f; do \
           printf '%s %s\\n' \"$f\" \"$(/usr/bin/md5sum < \"$f\" | cut -c1-32)\"; done",
    )
}

/// Asserts that `host` failed at `step` with an error that names the host and contains `cause`,
/// in the JSON summary and in the text output.
fn failed(json: &Run, text: &Run, host: &str, step: &str, cause: &str) {
    failed_json(json, host, step, cause);
    failed_text(text, host, step, cause);
}

/// The host's entry in the JSON summary: failed at `step`, its error containing `cause`.
fn failed_json(json: &Run, host: &str, step: &str, cause: &str) {
    let h = json.host(host);
    assert_eq!(h["state"], "failed", "{host}: {h}\n{}", json.stderr);
    assert_eq!(h["failed_at"], step, "{host}: {h}");
    let err = h["error"].as_str().unwrap_or_default();
    assert!(err.contains(cause), "{host}: want `{cause}` in: {err}");
}

/// The text output has the error line `error: HOST (ADDRESS) at STEP: ...CAUSE...`.
fn failed_text(text: &Run, host: &str, step: &str, cause: &str) {
    let all = format!("{}{}", text.stdout, text.stderr);
    let head = format!("error: {host} (");
    let at = format!(") at {step}: ");
    assert!(
        all.lines()
            .any(|l| l.starts_with(&head) && l.contains(&at) && l.contains(cause)),
        "{host}: no line naming the host, step `{step}` and `{cause}`:\n{all}"
    );
    assert!(!all.contains("panicked"), "{all}");
}

fn playbook(s: &Scratch, blob: usize) -> std::path::PathBuf {
    s.file("files/blob", &"x".repeat(blob));
    s.file(
        "pb.toml",
        r#"name = "hostile"

[[steps]]
name = "app dir"
kind = "dir"
path = "/opt/app"

[[steps]]
name = "config"
kind = "file"
path = "/opt/app/config"
content = "new config\n"

[[steps]]
name = "blob a"
kind = "file"
path = "/opt/app/a/blob"
src = "files/blob"

[[steps]]
name = "blob b"
kind = "file"
path = "/opt/app/b/blob"
src = "files/blob"
"#,
    )
}

/// Probe tools that print garbage, lie or are missing; a login shell that prints records of
/// its own. Nothing is misread as a state: each host fails at the probe (or, for a `sha256sum`
/// that lies, at the upload's check), with its cause, and keeps its files.
#[test]
fn garbage_from_the_probe_tools_is_a_clear_error() {
    let lab = Lab::up("sz-hostile-probe", 6);
    let s = Scratch::new();
    let pb = playbook(&s, 1000);
    let inv = lab.write_inventory("hostile.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    for h in ["h1", "h2", "h3", "h4", "h5", "h6"] {
        exec(&lab, h, OLD_STATE);
    }
    // Tools shadowed on the host's PATH (a dir of wrappers bound over /usr/local/bin, which the
    // remote PATH puts first); the machine's own /usr/local/bin is untouched.
    let wrap = |host: &str, tool: &str, body: &str| {
        exec(
            &lab,
            host,
            &format!(
                "mkdir -p /run/fakebin && printf '#!/bin/sh\\n{body}\\n' > /run/fakebin/{tool} \
                 && chmod 755 /run/fakebin/{tool} && mount --bind /run/fakebin /usr/local/bin"
            ),
        );
    };
    // h1: `stat` prints junk (and succeeds).
    wrap(
        "h1",
        "stat",
        "echo \"this is not stat output\"; echo \"@ps\tjunk\"",
    );
    // h2: `sha256sum` prints junk.
    wrap(
        "h2",
        "sha256sum",
        "for f do [ \"$f\" = -- ] || echo \"garbage  $f\"; done; [ $# -gt 0 ] || echo \"garbage  -\"",
    );
    // h3: no `sha256sum` at all.
    exec(&lab, "h3", "mount --bind /dev/null /usr/bin/sha256sum");
    // h4: `sha256sum` lies: a well-formed hash of nothing in particular.
    wrap(
        "h4",
        "sha256sum",
        &format!(
            "for f do [ \"$f\" = -- ] || echo \"{z}  $f\"; done; [ $# -gt 0 ] || echo \"{z}  -\"",
            z = "0".repeat(64)
        ),
    );
    // h5: the login shell prints a banner (one line looks like a record) before the command.
    exec(
        &lab,
        "h5",
        "printf '#!/bin/sh\\necho Welcome to h5\\necho @@@@@@@@ Authorized use only @@@@@@@@\\nexec /bin/bash \"$@\"\\n' > /run/noisy-sh \
         && chmod 755 /run/noisy-sh && usermod -s /run/noisy-sh claw",
    );
    let before: Vec<String> = ["h1", "h2", "h3", "h4", "h5"]
        .iter()
        .map(|h| state(&lab, h))
        .collect();

    let json = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    let text = claw(&["apply", inv, "--yes"], &[]);
    assert_eq!(json.code, 1, "{}\n{}", json.stdout, json.stderr);
    assert_eq!(text.code, 1, "{}\n{}", text.stdout, text.stderr);
    for out in [&json, &text] {
        assert!(
            !format!("{}{}", out.stdout, out.stderr).contains("panicked"),
            "{}\n{}",
            out.stdout,
            out.stderr
        );
    }
    // The control host converged.
    assert_eq!(json.host("h6")["state"], "changed", "{}", json.stdout);
    assert_eq!(lab.ssh_ok("h6", "cat /opt/app/config"), "new config\n");

    failed(&json, &text, "h1", "probe", "unexpected probe output");
    failed(&json, &text, "h2", "config", "bad sha256 `garbage`");
    failed(&json, &text, "h3", "preflight", "sha256sum");
    failed(&json, &text, "h4", "config", "sha256 mismatch");
    failed(&json, &text, "h5", "probe", "unexpected probe output");

    // Nothing changed on the failed hosts: the same files, same contents, no temp file.
    for (h, b) in ["h1", "h2", "h3", "h4", "h5"].iter().zip(&before) {
        assert_eq!(&state(&lab, h), b, "{h}'s files changed");
        assert!(!b.contains(".claw-provision"), "{h}: {b}");
    }
}

/// A read-only /opt, a disk too small for the uploads (refused by the preflight, before any
/// change) and a disk that fills up in the middle of an upload: each host fails at the step
/// with the system's reason, the managed file keeps its old content and no temp file stays.
/// Once the fault is gone, a rerun converges.
#[test]
fn read_only_and_full_file_systems_fail_cleanly() {
    let lab = Lab::up("sz-hostile-fs", 4);
    let s = Scratch::new();
    // 1.6 MiB: one fits in 3 MiB (with the preflight's 1 MiB margin), two do not.
    let pb = playbook(&s, 1600 * 1024);
    let inv = lab.write_inventory("hostile.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    // h1: /opt read-only.
    exec(&lab, "h1", OLD_STATE);
    exec(&lab, "h1", "mount -o remount,bind,ro /opt");
    // h2: /opt/app on a 1 MiB file system: the preflight refuses the uploads.
    exec(
        &lab,
        "h2",
        "mkdir -p /opt/app && mount -t tmpfs -o size=1m claw-small /opt/app",
    );
    exec(&lab, "h2", OLD_STATE);
    // h3: /opt/app on 3 MiB: each upload alone fits, the second fills the disk mid-write.
    exec(
        &lab,
        "h3",
        "mkdir -p /opt/app && mount -t tmpfs -o size=3m claw-full /opt/app",
    );
    exec(&lab, "h3", OLD_STATE);
    // h4: a healthy host.
    exec(&lab, "h4", OLD_STATE);
    let before: Vec<String> = ["h1", "h2", "h3"].iter().map(|h| state(&lab, h)).collect();

    let json = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(json.code, 1, "{}\n{}", json.stdout, json.stderr);
    assert_eq!(json.host("h4")["state"], "changed", "{}", json.stdout);
    // The text run sees the same faults (h1, h2 unchanged; h3 now has blob a).
    let text = claw(&["apply", inv, "--yes"], &[]);
    assert_eq!(text.code, 1, "{}\n{}", text.stdout, text.stderr);

    failed(&json, &text, "h1", "config", "Read-only file system");
    failed(&json, &text, "h2", "preflight", "not enough disk space");
    failed_json(&json, "h3", "blob b", "No space left on device");
    // The second run (blob a now in place) is refused before any change.
    failed_text(
        &text,
        "h3",
        "preflight",
        "not enough disk space for the uploads into /opt/app/b",
    );

    assert_eq!(state(&lab, "h1"), before[0], "h1's files changed");
    assert_eq!(state(&lab, "h2"), before[1], "h2's files changed");
    // h3: config and blob a were applied; blob b is still the old one, and no temp file.
    let h3 = state(&lab, "h3");
    assert!(!h3.contains(".claw-provision"), "{h3}");
    let old_b = before[2]
        .lines()
        .find(|l| l.starts_with("./b/blob"))
        .unwrap();
    assert!(h3.lines().any(|l| l == old_b), "blob b damaged: {h3}");
    assert_eq!(lab.ssh_ok("h3", "stat -c %s /opt/app/a/blob"), "1638400\n");
    for h in ["h1", "h2"] {
        assert!(!before[if h == "h1" { 0 } else { 1 }].contains(".claw-provision"));
    }

    // The faults go away: the next apply converges.
    exec(&lab, "h1", "mount -o remount,bind,rw /opt");
    exec(
        &lab,
        "h2",
        "umount /opt/app && mkdir -p /opt/app/a /opt/app/b",
    );
    exec(
        &lab,
        "h3",
        "rm -f /opt/app/a/blob && mount -o remount,size=8m /opt/app",
    );
    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for h in ["h1", "h2", "h3"] {
        assert_eq!(
            lab.ssh_ok(
                h,
                "sudo sha256sum /opt/app/a/blob /opt/app/b/blob | cut -c1-64 | uniq | wc -l"
            ),
            "1\n",
            "{h}"
        );
    }
}
