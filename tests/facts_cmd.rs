//! `facts INVENTORY`: one JSON object keyed by host name (inventory order), from ONE remote round
//! trip per host (checked in the hosts' sshd logs); values checked against the hosts themselves
//! over plain OpenSSH; no secret read; an unreachable host gets an error entry and exit code 1.

use crate::support::{Lab, Scratch, claw, log_len, sshd_counts};
use serde_json::Value;

fn parse(stdout: &str) -> Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{stdout}"))
}

#[test]
fn facts_command() {
    let lab = Lab::up("sf-facts", 2);
    // The inventory names a playbook with a secret step whose file exists on h1: `facts` reads
    // no playbook, so it neither probes the file nor prints its value.
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        "name = \"facts-cmd\"\n\n[[steps]]\nname = \"token\"\nkind = \"secret\"\nsecret = \"token\"\npath = \"/etc/sf-token\"\n",
    );
    let value = "sf-secret-value-4d6f1b2e9a";
    lab.ssh_ok(
        "h1",
        &format!(
            "echo {value} | sudo tee /etc/sf-token >/dev/null && sudo chmod 600 /etc/sf-token"
        ),
    );
    let inv = lab.write_inventory("facts.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();

    let hosts = lab.hosts();
    let marks: Vec<usize> = hosts.iter().map(|h| log_len(&h.sshd_log)).collect();
    let r = claw(&["facts", inv, "--forks", "1"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // One connection and one session (= one remote round trip) per host, as sshd logged them.
    for (h, mark) in hosts.iter().zip(&marks) {
        assert_eq!(
            sshd_counts(&h.sshd_log, *mark),
            (1, 1),
            "{}: connections, sessions",
            h.name
        );
    }
    assert!(!r.stdout.contains(value) && !r.stderr.contains(value));
    let doc = parse(&r.stdout);
    let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 2, "{doc}");
    assert!(
        r.stdout.find("\n  \"h1\": ").unwrap() < r.stdout.find("\n  \"h2\": ").unwrap(),
        "inventory order:\n{}",
        r.stdout
    );
    for h in &hosts {
        let e = &doc[&h.name];
        let f = &e["facts"];
        let sh = |cmd: &str| lab.ssh_ok(&h.name, cmd).trim().to_string();
        assert_eq!(e["state"], "ok", "{e}");
        assert_eq!(e["address"], h.address.as_str(), "{e}");
        assert_eq!(f["hostname"], sh("uname -n"), "{e}");
        assert_eq!(f["kernel"], sh("uname -r"), "{e}");
        assert_eq!(f["arch"], sh("uname -m"), "{e}");
        assert_eq!(f["deb_arch"], sh("dpkg --print-architecture"), "{e}");
        assert_eq!(f["os_id"], sh(". /etc/os-release; echo $ID"), "{e}");
        assert_eq!(
            f["os_version"],
            sh(". /etc/os-release; echo $VERSION_ID"),
            "{e}"
        );
        assert!(!f["init"].as_str().unwrap().is_empty(), "{e}");
        let res = &e["resources"];
        let total: u64 = sh("awk '/^MemTotal:/ {print $2}' /proc/meminfo")
            .parse()
            .unwrap();
        assert_eq!(res["mem_total_kb"], total, "{e}");
        assert_eq!(
            res["cpus"],
            sh("getconf _NPROCESSORS_ONLN").parse::<u64>().unwrap(),
            "{e}"
        );
        assert!(res["uptime_s"].as_u64().is_some(), "{e}");
        for d in ["/", "/tmp", "/var"] {
            assert!(res["free_kb"][d].as_u64().unwrap() > 0, "{d}: {e}");
        }
        assert_eq!(e["problems"], serde_json::json!([]), "{e}");
    }

    // --limit
    let r = claw(&["facts", inv, "--limit", "h2"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let doc = parse(&r.stdout);
    assert_eq!(doc.as_object().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["h2"]["state"], "ok");
    let r = claw(&["facts", inv, "--limit", "nope"], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("--limit nope"), "{}", r.stderr);

    // Connected but the probe cannot run (sudo to a user that does not exist): `failed`.
    let bad = lab.write_inventory("facts-bad.toml", &pb, &[("become_user", "\"sf-nouser\"")]);
    let r = claw(&["facts", bad.to_str().unwrap(), "--limit", "h1"], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let h1 = &parse(&r.stdout)["h1"];
    assert_eq!(h1["state"], "failed", "{h1}");
    assert!(h1["error"].as_str().unwrap().starts_with("probe: "), "{h1}");

    // An unreachable host: its entry says why, the others are reported, exit code 1.
    lab.cmd(&["stop", "h2"]);
    let r = claw(&["facts", inv], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let doc = parse(&r.stdout);
    assert_eq!(doc["h1"]["state"], "ok", "{doc}");
    let h2 = &doc["h2"];
    assert_eq!(h2["state"], "unreachable", "{h2}");
    let err = h2["error"].as_str().unwrap();
    assert!(err.starts_with("connect: "), "{err}");
    assert!(h2.get("facts").is_none(), "{h2}");
}
