//! The `image` step on a full host with Docker: lab images shipped from this machine over the
//! host's SSH connection (`docker save | gzip` streamed into `docker load`), tagged, verified by
//! ID; nothing shipped when present; only a removed image shipped again; an image missing on
//! this machine refused at plan, naming the step. The client's peak memory does not grow with
//! the images' size (they are streamed, not buffered).

use crate::support::{Lab, Run, Scratch, bin, claw, ok, repo};
use serde_json::Value;

/// Runs the binary like `claw`, sampling its peak resident memory (VmHWM, KiB) while it runs.
fn claw_with_peak(args: &[&str]) -> (Run, u64) {
    use std::io::Read;
    let mut child = std::process::Command::new(bin())
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("CLAW_BECOME_PASSWORD")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let mut peak = 0u64;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_file)
            && let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    };
    (run, peak)
}

/// The action of each step event, by step name.
fn actions(r: &Run) -> Vec<(String, String)> {
    r.events()
        .into_iter()
        .filter(|e| e["event"] == "step")
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[test]
fn images_ship_from_this_machine_once() {
    // The lab images on this machine (built once, cached).
    ok(
        std::process::Command::new("bash")
            .arg(repo().join("tests/lab/full/stack.sh"))
            .arg("build")
            .output()
            .unwrap(),
        "stack.sh build",
    );
    let images: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("target/lab-images/images.json")).unwrap(),
    )
    .unwrap();
    let tag = |n: &str| images[n]["tag"].as_str().unwrap().to_string();
    let id = |n: &str| images[n]["id"].as_str().unwrap().to_string();
    let (redis, backend) = (tag("redis"), tag("backend"));

    let lab = Lab::up_full("f-image", 1);
    let s = Scratch::new();
    let pb = s.file(
        "images.toml",
        &format!(
            r#"name = "images"
hosts = "h1"

[[steps]]
name = "redis image"
kind = "image"
image = "{redis}"

[[steps]]
name = "backend image"
kind = "image"
image = "{backend}"
tag = "claw-lab/backend:latest"
"#
        ),
    );
    let inv = lab.write_inventory("images.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();

    // No Docker on the host yet: the steps cannot be known, and nothing before them changes.
    let r = claw(&["plan", inv, "--output", "json"], &[]);
    assert_ne!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("docker is not installed yet")
            || r.stderr.contains("docker is not installed yet"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );

    // Docker from the lab's signed mirror, the daemon started (plain ssh + apt).
    lab.add_lab_mirror("h1");
    lab.install_docker("h1", "docker.io");
    let on_host = |r: &str| {
        let o = lab.ssh(
            "h1",
            &format!("sudo docker image inspect --format '{{{{.Id}}}}' {r}"),
        );
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    assert_eq!(on_host(&redis), None);

    // First apply: both shipped, loaded under their IDs, the extra tag set.
    let apply = ["apply", inv, "--yes", "--output", "json"];
    let (r1, peak_ship) = claw_with_peak(&apply);
    assert_eq!(r1.code, 0, "{}\n{}", r1.stdout, r1.stderr);
    assert_eq!(
        actions(&r1),
        vec![
            pair("redis image", "create"),
            pair("backend image", "create")
        ]
    );
    assert_eq!(r1.host("h1")["changed"], 2);
    assert_eq!(on_host(&redis), Some(id("redis")));
    assert_eq!(on_host(&backend), Some(id("backend")));
    assert_eq!(on_host("claw-lab/backend:latest"), Some(id("backend")));
    let shipped1 = r1.host("h1")["bytes_sent"].as_u64().unwrap();
    // Both images, compressed (tens of MB), count in the bytes sent.
    assert!(shipped1 > 20_000_000, "bytes_sent {shipped1}");

    // Second apply: nothing to do, nothing shipped.
    let (r2, peak_idle) = claw_with_peak(&apply);
    assert_eq!(r2.code, 0, "{}\n{}", r2.stdout, r2.stderr);
    assert_eq!(
        actions(&r2),
        vec![pair("redis image", "ok"), pair("backend image", "ok")]
    );
    assert_eq!(r2.host("h1")["changed"], 0);
    let sent2 = r2.host("h1")["bytes_sent"].as_u64().unwrap();
    assert!(sent2 < 200_000, "bytes_sent {sent2}");

    // Streamed, not buffered: shipping ~80 MB (compressed) grows the client's peak memory by
    // far less than the larger image alone (~49 MB compressed).
    eprintln!(
        "client peak memory: {peak_ship} KiB shipping {shipped1} bytes, {peak_idle} KiB idle"
    );
    assert!(peak_idle > 0 && peak_ship > 0, "VmHWM not sampled");
    assert!(
        peak_ship < peak_idle + 24 * 1024,
        "peak memory while shipping {peak_ship} KiB vs {peak_idle} KiB without"
    );

    // The redis image removed and the extra tag dropped on the host: redis alone is shipped
    // again, the backend only tagged.
    ok(
        lab.ssh(
            "h1",
            &format!("sudo docker rmi {redis} && sudo docker rmi claw-lab/backend:latest"),
        ),
        "rmi",
    );
    assert_eq!(on_host(&redis), None);
    let r3 = claw(&apply, &[]);
    assert_eq!(r3.code, 0, "{}\n{}", r3.stdout, r3.stderr);
    assert_eq!(
        actions(&r3),
        vec![
            pair("redis image", "create"),
            pair("backend image", "update")
        ]
    );
    assert_eq!(on_host(&redis), Some(id("redis")));
    assert_eq!(on_host("claw-lab/backend:latest"), Some(id("backend")));
    let sent3 = r3.host("h1")["bytes_sent"].as_u64().unwrap();
    assert!(
        sent3 > 10_000_000 && sent3 + 10_000_000 < shipped1,
        "bytes_sent {sent3} (first apply: {shipped1})"
    );

    // An image this machine does not have: refused before any connection, naming the step;
    // the step before it does not run.
    let ghost = s.file(
        "ghost.toml",
        r#"name = "ghost"
hosts = "h1"

[[steps]]
name = "a directory"
kind = "dir"
path = "/opt/ghost"

[[steps]]
name = "ghost image"
kind = "image"
image = "claw-lab/no-such-image:1"
"#,
    );
    let ginv = lab.write_inventory("ghost.toml", &ghost, &[]);
    let ginv = ginv.to_str().unwrap();
    for cmd in [&["plan", ginv][..], &["apply", ginv, "--yes"][..]] {
        let r = claw(cmd, &[]);
        assert_ne!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        let text = format!("{}{}", r.stdout, r.stderr);
        assert!(text.contains("ghost image"), "{text}");
        assert!(
            text.contains("`claw-lab/no-such-image:1` is not present on this machine"),
            "{text}"
        );
    }
    assert!(!lab.ssh("h1", "test -e /opt/ghost").status.success());
}
