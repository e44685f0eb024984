//! The claw-ai playbook on fresh light hosts (issue 4, "Done when"): `plan` lists every step and
//! touches nothing, `apply` converges, a second `apply` changes nothing in one round trip per
//! host; the Docker steps are skipped by their `when`; secrets never reach the output.

use crate::support::{Lab, claw, log_len, repo, sshd_counts};

const KEYS: [(&str, &str); 2] = [
    ("ZHIPUAI_API_KEY", "zhipu-lab-key-0c8e41"),
    ("PINECONE_API_KEY", "pinecone-lab-key-77a2d9"),
];

#[test]
fn claw_ai_plans_applies_and_converges_on_fresh_light_hosts() {
    let lab = Lab::up("t-clawai", 2);
    let inv = lab.inventory();
    let inv = inv.to_str().unwrap();
    let pb = repo().join("playbooks/claw-ai.toml");
    let pb = pb.to_str().unwrap();
    let steps: Vec<String> = {
        let text = std::fs::read_to_string(pb).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };

    // Plan on fresh hosts: every step listed, nothing touched.
    let plan = claw(&["plan", inv, "--playbook", pb, "--output", "json"], &KEYS);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    for ev in plan.events().iter().filter(|e| e["event"] == "plan") {
        let names: Vec<&str> = ev["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, steps, "{ev}");
        assert!(ev["changes"].as_u64().unwrap() >= 15, "{ev}");
    }
    assert_eq!(lab.ssh_ok("h1", "ls -A /opt"), "", "plan changed nothing");
    let text_plan = claw(&["plan", inv, "--playbook", pb], &KEYS);
    assert!(
        text_plan
            .stdout
            .contains("skip    cron `backup cron entry` (when: facts.init == 'systemd')"),
        "{}",
        text_plan.stdout
    );

    // Apply, then apply again: nothing to do, one round trip per host.
    let first = claw(
        &["apply", inv, "--playbook", pb, "--yes", "--output", "json"],
        &KEYS,
    );
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let logs: Vec<_> = lab.hosts().iter().map(|h| h.sshd_log.clone()).collect();
    let from: Vec<usize> = logs.iter().map(|l| log_len(l)).collect();
    let second = claw(
        &["apply", inv, "--playbook", pb, "--yes", "--output", "json"],
        &KEYS,
    );
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    for (i, h) in lab.hosts().iter().enumerate() {
        let s = second.host(&h.name);
        assert_eq!(s["changed"], 0, "{s}");
        assert_eq!(s["failed"], 0, "{s}");
        assert_eq!(s["round_trips"], 1, "{s}");
        assert_eq!(
            sshd_counts(&logs[i], from[i]),
            (1, 1),
            "sshd log of {}",
            h.name
        );
    }

    // What the first apply left: modes, the firewall table, secrets only in their files.
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "sudo stat -c '%a %U %n' /opt/claw-ai/.env /opt/claw-ai/.secrets /opt/claw-ai/.secrets/postgres_password /opt/claw-ai/backup.sh"
        ),
        "600 root /opt/claw-ai/.env\n700 root /opt/claw-ai/.secrets\n600 root /opt/claw-ai/.secrets/postgres_password\n750 root /opt/claw-ai/backup.sh\n"
    );
    assert!(
        lab.ssh_ok("h1", "sudo nft list tables")
            .contains("inet claw_provision")
    );
    // The lab's certificate, as nginx reads it.
    assert_eq!(
        lab.ssh_ok(
            "h2",
            "sudo stat -c '%a %U %n' /opt/claw-ai/nginx/ssl/fullchain.pem /opt/claw-ai/nginx/ssl/privkey.pem"
        ),
        "644 root /opt/claw-ai/nginx/ssl/fullchain.pem\n600 root /opt/claw-ai/nginx/ssl/privkey.pem\n"
    );
    let key = std::fs::read_to_string(lab.dir.join("tls/privkey.pem")).unwrap();
    assert_eq!(
        lab.ssh_ok("h2", "sudo cat /opt/claw-ai/nginx/ssl/privkey.pem"),
        key
    );
    let body = key.lines().nth(1).unwrap();
    for out in [
        &plan.stdout,
        &text_plan.stdout,
        &first.stdout,
        &first.stderr,
    ] {
        assert!(!out.contains(body), "key material in the output");
    }
    let env = lab.ssh_ok("h1", "sudo cat /opt/claw-ai/.env");
    let mut values: Vec<String> = env
        .lines()
        .filter_map(|l| l.split_once("='"))
        .map(|(_, v)| v.trim_end_matches('\'').to_string())
        .collect();
    assert_eq!(values.len(), 5, "{env}");
    assert!(values.iter().any(|v| v == KEYS[0].1));
    values.retain(|v| v.len() >= 8);
    for out in [
        &plan.stdout,
        &text_plan.stdout,
        &first.stdout,
        &first.stderr,
        &second.stdout,
    ] {
        for v in &values {
            assert!(!out.contains(v.as_str()), "a secret reached the output");
        }
    }
    // redis.conf: the Redis password of .env, 0600, owned by the redis image's uid as a number (no such
    // account on the host).
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "sudo stat -c '%a %u:%g %n' /opt/claw-ai/private/redis/redis.conf"
        ),
        "600 999:999 /opt/claw-ai/private/redis/redis.conf\n"
    );
    let rpw = lab.ssh_ok("h1", "sudo cat /opt/claw-ai/.secrets/redis_password");
    assert!(
        lab.ssh_ok("h1", "sudo cat /opt/claw-ai/private/redis/redis.conf")
            .contains(&format!("\nrequirepass \"{}\"\n", rpw.trim())),
        "redis.conf holds the Redis password"
    );
    // Secrets differ per host and stay the same across runs.
    let pw = |h: &str| lab.ssh_ok(h, "sudo cat /opt/claw-ai/.secrets/postgres_password");
    assert_ne!(pw("h1"), pw("h2"));
    assert!(env.contains(pw("h1").trim()));
}
