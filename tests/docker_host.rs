//! Docker Engine + Compose v2 by the claw-ai playbook (issue 5): on a fresh full lab host, Docker
//! installed from the lab's signed mirror (`apt_repo` + `apt`), /etc/docker/daemon.json with json-file
//! log rotation, the daemon enabled and running (`service`); a second apply changes nothing and does
//! not restart the daemon; a changed log variable rewrites daemon.json and restarts it once.
//! Plus pure checks of templates/claw-ai/daemon.json.tera.

use crate::support::{Lab, Run, claw, ok, repo};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const ENV: &[(&str, &str)] = &[
    ("ZHIPUAI_API_KEY", "zhipu-test.docker.5d1e"),
    ("PINECONE_API_KEY", "pcsk_test_docker_77a0"),
];

fn render(vars: Value) -> Result<String, String> {
    let src = std::fs::read_to_string(repo().join("templates/claw-ai/daemon.json.tera")).unwrap();
    claw_provision::template::render(
        Path::new("claw-ai/daemon.json.tera"),
        &src,
        vars.as_object().unwrap(),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn daemon_json_renders_rotation_and_mirrors() {
    let base = || {
        json!({"log_max_size": "10m", "log_max_file": 3, "docker_registry_mirrors": [],
               "docker_live_restore": true})
    };
    let text = render(base()).unwrap();
    assert_eq!(
        text,
        "{\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\n    \"max-size\": \"10m\",\n    \"max-file\": \"3\"\n  },\n  \"live-restore\": true\n}\n"
    );
    // live-restore off: a boolean (inventory) or a string (-e).
    for off in [json!(false), json!("false"), json!("False")] {
        let mut v = base();
        v["docker_live_restore"] = off;
        let parsed: Value = serde_json::from_str(&render(v).unwrap()).unwrap();
        assert_eq!(parsed["live-restore"], json!(false));
    }
    // Mirrors: a list (inventory, playbook) or a comma-separated string (-e).
    for mirrors in [
        json!(["https://mirror.example:5000", "http://10.0.0.5"]),
        json!(" https://mirror.example:5000, http://10.0.0.5 ,"),
    ] {
        let mut v = base();
        v["docker_registry_mirrors"] = mirrors;
        v["log_max_file"] = json!("5"); // -e values are strings
        let parsed: Value = serde_json::from_str(&render(v).unwrap()).unwrap();
        assert_eq!(
            parsed,
            json!({
                "log-driver": "json-file",
                "log-opts": {"max-size": "10m", "max-file": "5"},
                "live-restore": true,
                "registry-mirrors": ["https://mirror.example:5000", "http://10.0.0.5"],
            })
        );
    }
    let mut v = base();
    v["docker_registry_mirrors"] = json!("");
    assert!(!render(v).unwrap().contains("registry-mirrors"));

    // Values dockerd would refuse to start with are errors here, naming the variable.
    for (var, value, want) in [
        ("log_max_size", json!("10 MB"), "log_max_size = `10 MB`"),
        ("log_max_file", json!(0), "log_max_file = `0`"),
        ("log_max_file", json!("three"), "log_max_file = `three`"),
        (
            "docker_live_restore",
            json!("yes please"),
            "docker_live_restore = `yes please` is not true or false",
        ),
        (
            "docker_registry_mirrors",
            json!(["mirror.example"]),
            "entry `mirror.example` is not an http",
        ),
    ] {
        let mut v = base();
        v[var] = value;
        let e = render(v).unwrap_err();
        assert!(e.contains(want), "{var}: {e}");
    }
}

/// playbooks/claw-ai.toml up to Docker itself, copied beside the lab's inventory (templates found in
/// the repository): the steps after "docker daemon" (images, compose up, health) and the tasks are
/// cut off here;
/// tests/claw_ai_e2e.rs runs the whole playbook.
fn lab_playbook(lab: &Lab) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("playbooks/claw-ai.toml")).unwrap();
    let cut = text
        .find("[[steps]]\nname = \"postgres image\"")
        .expect("the image steps follow the Docker steps");
    let handlers = text.find("[[handlers]]").expect("handlers");
    // The tasks use the cut steps: they go too.
    let tasks = text.find("[[tasks]]").unwrap_or(text.len());
    assert!(cut < handlers && handlers < tasks);
    let text = format!("{}{}", &text[..cut], &text[handlers..tasks]);
    let text = text.replacen(
        "hosts = \"all\"\n",
        &format!(
            "hosts = \"all\"\ntemplates = {:?}\n",
            repo().join("templates").display()
        ),
        1,
    );
    let path = lab.dir.join("claw-ai-lab.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(inv: &Path, command: &str, extra: &[&str]) -> Run {
    let pb = inv.with_file_name("claw-ai-lab.toml");
    let mut args = vec![
        command,
        inv.to_str().unwrap(),
        "--playbook",
        pb.to_str().unwrap(),
        "--output",
        "json",
    ];
    if command == "apply" {
        args.push("--yes");
    }
    for e in extra {
        args.extend(["-e", e]);
    }
    claw(&args, ENV)
}

/// The plan event's steps of h1 that change something, as (name, action).
fn planned(r: &Run) -> (Vec<(String, String)>, Vec<String>) {
    let plan = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "plan" && e["host"] == "h1")
        .unwrap_or_else(|| panic!("no plan event:\n{}\n{}", r.stdout, r.stderr));
    let steps = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !["ok", "skip", "check"].contains(&s["action"].as_str().unwrap()))
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let handlers = plan["handlers"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    (steps, handlers)
}

/// The handlers an apply ran on h1, with their status.
fn handlers_run(r: &Run) -> Vec<(String, String)> {
    r.events()
        .into_iter()
        .filter(|e| e["event"] == "handler" && e["host"] == "h1")
        .map(|e| {
            (
                e["handler"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// When the running dockerd started (monotonic), and its pid: both change on a restart.
fn daemon_start(lab: &Lab) -> String {
    lab.ssh_ok(
        "h1",
        "systemctl show -p ActiveEnterTimestampMonotonic -p MainPID docker",
    )
}

fn inventory_with_docker_repo(lab: &Lab) -> PathBuf {
    let url = lab.json["mirror"]["url"].as_str().expect("mirror url");
    let key = lab.json["mirror"]["key"].as_str().expect("mirror key");
    let inv = std::fs::read_to_string(lab.inventory()).unwrap();
    let tls = format!(
        "vars = {{ tls_dir = {:?}, sshd_port = 22 }}",
        lab.dir.join("tls").display()
    );
    assert!(
        inv.contains(&tls),
        "the lab inventory's vars changed:\n{inv}"
    );
    let with = inv.replace(
        &tls,
        &format!(
            "vars = {{ tls_dir = {:?}, sshd_port = 22, docker_repo_url = {url:?}, docker_repo_key = {key:?}, docker_repo_name = \"claw-lab\" }}",
            lab.dir.join("tls").display()
        ),
    );
    let path = lab.dir.join("inventory-docker.toml");
    std::fs::write(&path, with).unwrap();
    path
}

#[test]
fn claw_ai_installs_docker_from_the_signed_mirror_and_restarts_it_only_on_config_change() {
    let lab = Lab::up_full("f-docker-host", 1);
    let inv = inventory_with_docker_repo(&lab);
    lab_playbook(&lab);
    assert!(
        !lab.ssh("h1", "command -v docker").status.success(),
        "no Docker on a fresh host"
    );

    // The plan of a fresh host: the repository, daemon.json and the packages are created; the
    // service is known after apply (docker.service does not exist before the package).
    let plan = run(&inv, "plan", &[]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let (steps, handlers) = planned(&plan);
    for (name, action) in [
        ("docker repository", "create"),
        ("docker config directory", "create"),
        ("docker daemon config", "create"),
        ("docker packages", "create"),
        ("docker daemon", "known after apply"),
    ] {
        assert!(
            steps.iter().any(|(n, a)| n == name && a == action),
            "{name}: {action} expected in {steps:?}"
        );
    }
    assert!(
        handlers.iter().any(|h| h == "restart docker"),
        "{handlers:?}"
    );

    // First apply.
    let first = run(&inv, "apply", &[]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert_eq!(
        handlers_run(&first)
            .iter()
            .filter(|(h, _)| h == "restart docker")
            .count(),
        1,
        "{}",
        first.stdout
    );

    // Docker and Compose v2 from the signed mirror (the only source the host has).
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "grep -E '^(URIs|Signed-By):' /etc/apt/sources.list.d/claw-lab.sources"
        ),
        format!(
            "URIs: {}\nSigned-By: /etc/apt/keyrings/claw-lab.asc\n",
            lab.json["mirror"]["url"].as_str().unwrap()
        )
    );
    let policy = lab.ssh_ok("h1", "apt-cache policy docker.io");
    assert!(
        policy.contains(lab.json["mirror"]["url"].as_str().unwrap()),
        "{policy}"
    );
    assert!(
        ok(lab.ssh("h1", "docker compose version"), "compose").contains("Docker Compose version")
    );
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "systemctl is-enabled docker; systemctl is-active docker"
        ),
        "enabled\nactive\n"
    );
    assert_eq!(
        lab.ssh_ok("h1", "sudo docker info --format '{{.LoggingDriver}}'"),
        "json-file\n"
    );
    let daemon_json = lab.ssh_ok(
        "h1",
        "stat -c '%a %U %G' /etc/docker/daemon.json && cat /etc/docker/daemon.json",
    );
    let (mode, text) = daemon_json.split_once('\n').unwrap();
    assert_eq!(mode, "644 root root");
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        json!({"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"},
               "live-restore": true})
    );
    assert_eq!(
        lab.ssh_ok("h1", "sudo docker info --format '{{.LiveRestoreEnabled}}'"),
        "true\n"
    );
    let since = daemon_start(&lab);

    // Second apply: nothing changes, the daemon is not restarted.
    let second = run(&inv, "apply", &[]);
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    assert_eq!(second.host("h1")["changed"], 0, "{}", second.stdout);
    assert!(handlers_run(&second).is_empty(), "{}", second.stdout);
    assert_eq!(daemon_start(&lab), since, "docker was restarted");

    // A changed log variable: the plan shows daemon.json and the handler; apply restarts once.
    let plan = run(&inv, "plan", &["log_max_file=5"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let (steps, handlers) = planned(&plan);
    // (The compose file's per-service logging and the logrotate entry use log_max_file too.)
    let want: Vec<(String, String)> = ["compose file", "log rotation", "docker daemon config"]
        .iter()
        .map(|n| (n.to_string(), "update".to_string()))
        .collect();
    assert_eq!(steps, want, "{}", plan.stdout);
    assert_eq!(handlers, ["restart docker"]);
    let third = run(&inv, "apply", &["log_max_file=5"]);
    assert_eq!(third.code, 0, "{}{}", third.stdout, third.stderr);
    assert_eq!(third.host("h1")["changed"], 3, "{}", third.stdout);
    assert_eq!(
        handlers_run(&third),
        [("restart docker".to_string(), "changed".to_string())],
        "{}",
        third.stdout
    );
    let after = daemon_start(&lab);
    assert_ne!(after, since, "docker was not restarted");
    assert_eq!(lab.ssh_ok("h1", "systemctl is-active docker"), "active\n");
    // The restarted daemon runs with the new config; applying it again changes nothing.
    assert!(
        lab.ssh_ok("h1", "cat /etc/docker/daemon.json")
            .contains("\"max-file\": \"5\"")
    );
    let fourth = run(&inv, "apply", &["log_max_file=5"]);
    assert_eq!(fourth.code, 0, "{}{}", fourth.stdout, fourth.stderr);
    assert_eq!(fourth.host("h1")["changed"], 0, "{}", fourth.stdout);
    assert_eq!(daemon_start(&lab), after, "docker was restarted again");
}
