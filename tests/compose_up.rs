//! The `compose` step on a full host: Docker from the lab mirror, lab images loaded by plain ssh,
//! a small project (redis + nginx, both with healthchecks). Up once; a second apply recreates
//! nothing; a stopped service is started; a compose change recreates only the service it touches;
//! a service that never becomes healthy fails the apply with its last log lines. The env file's
//! values never appear in the output.

use crate::support::{Lab, Scratch, claw, ok, repo};
use serde_json::Value;

const SECRET: &str = "compose-lab-secret-4711";

fn compose(redis: &str, nginx: &str, greeting: &str, bad: bool) -> String {
    let mut s = format!(
        r#"services:
  cache:
    image: {redis}
    healthcheck: {{ test: ["CMD-SHELL", "redis-cli ping | grep -q PONG"], interval: 1s, retries: 60 }}
  web:
    image: {nginx}
    environment: {{ GREETING: "{greeting}", TOKEN: "${{TOKEN}}" }}
    healthcheck: {{ test: ["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1/"], interval: 1s, retries: 60 }}
"#
    );
    if bad {
        s.push_str(&format!(
            r#"  bad:
    image: {redis}
    healthcheck: {{ test: ["CMD", "false"], interval: 1s, retries: 2 }}
"#
        ));
    }
    s
}

#[test]
fn compose_up_converges_and_reports_unhealthy_services() {
    let lab = Lab::up_full("f-compose", 1);
    lab.add_lab_mirror("h1");

    let s = Scratch::new();
    let pb = s.file(
        "compose.toml",
        r#"name = "compose"
hosts = "h1"

[[steps]]
name = "stack"
kind = "compose"
project = "lab"
file = "/opt/stack/compose.yml"
env_file = "/opt/stack/.env"
pull = "never"
wait_timeout = "60s"
"#,
    );
    let inv = lab.write_inventory("compose.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let apply = || {
        let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
        assert!(
            !r.stdout.contains(SECRET) && !r.stderr.contains(SECRET),
            "the env file's value leaked:\n{}\n{}",
            r.stdout,
            r.stderr
        );
        r
    };

    // No Docker yet: the step cannot be probed and nothing earlier changes anything.
    let r = apply();
    assert_ne!(r.code, 0);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("docker is not installed yet"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );

    lab.install_docker("h1", "docker.io docker-compose");
    ok(
        std::process::Command::new("bash")
            .arg(repo().join("tests/lab/full/stack.sh"))
            .args(["build", "redis", "nginx"])
            .output()
            .unwrap(),
        "stack.sh build",
    );
    let images: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("target/lab-images/images.json")).unwrap(),
    )
    .unwrap();
    for n in ["redis", "nginx"] {
        let tar = std::fs::read(images[n]["tar"].as_str().unwrap()).unwrap();
        ok(lab.ssh_input("h1", "sudo docker load", &tar), "docker load");
    }
    let (redis, nginx) = (
        images["redis"]["tag"].as_str().unwrap().to_string(),
        images["nginx"]["tag"].as_str().unwrap().to_string(),
    );
    let put = |content: &str| {
        ok(
            lab.ssh_input(
                "h1",
                "sudo install -d -m 0755 /opt/stack && sudo tee /opt/stack/compose.yml >/dev/null",
                content.as_bytes(),
            ),
            "compose file",
        )
    };
    put(&compose(&redis, &nginx, "one", false));
    ok(
        lab.ssh_input(
            "h1",
            "sudo install -m 0600 /dev/stdin /opt/stack/.env",
            format!("TOKEN={SECRET}\n").as_bytes(),
        ),
        "env file",
    );
    // service -> "container id started-at"
    let containers = || -> Vec<(String, String)> {
        let out = ok(
            lab.ssh(
                "h1",
                "for c in $(sudo docker compose -p lab ps -q); do sudo docker inspect -f '{{index .Config.Labels \"com.docker.compose.service\"}} {{.Id}} {{.State.StartedAt}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' $c; done | sort",
            ),
            "containers",
        );
        out.lines()
            .map(|l| {
                let (svc, rest) = l.split_once(' ').unwrap();
                (svc.to_string(), rest.to_string())
            })
            .collect()
    };

    // First apply: up, every service healthy, the state recorded (hashes only).
    let r = apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["changed"], 1);
    let first = containers();
    assert_eq!(first.len(), 2, "{first:?}");
    for (svc, st) in &first {
        assert!(st.ends_with(" running healthy"), "{svc}: {st}");
    }
    let state = ok(
        lab.ssh("h1", "sudo cat /var/lib/claw-provision/compose/lab"),
        "state file",
    );
    assert!(
        state.starts_with("compose ") && !state.contains(SECRET),
        "{state}"
    );

    // Second apply: nothing to do, nothing recreated or restarted.
    let r = apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["changed"], 0, "{}", r.stdout);
    assert_eq!(containers(), first);

    // A stopped service: the plan says so, apply starts it.
    ok(
        lab.ssh(
            "h1",
            "sudo docker stop $(sudo docker compose -p lab ps -q web)",
        ),
        "docker stop web",
    );
    let plan = claw(&["plan", inv], &[]);
    assert!(
        plan.stdout.contains("service web not running (exited)"),
        "{}\n{}",
        plan.stdout,
        plan.stderr
    );
    let r = apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["changed"], 1);
    let after = containers();
    assert_eq!(after[0], first[0], "cache untouched");
    assert!(after[1].1.ends_with(" running healthy"), "{after:?}");

    // A compose change of one service recreates that service only.
    put(&compose(&redis, &nginx, "two", false));
    let plan = claw(&["plan", inv], &[]);
    assert!(
        plan.stdout.contains("compose file changed"),
        "{}",
        plan.stdout
    );
    let r = apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let changed = containers();
    assert_eq!(changed[0], first[0], "cache not recreated");
    assert_ne!(
        changed[1].1.split(' ').next(),
        after[1].1.split(' ').next(),
        "web recreated"
    );
    assert_eq!(apply().host("h1")["changed"], 0);

    // A service that never becomes healthy: apply fails and shows its last log lines.
    put(&compose(&redis, &nginx, "two", true));
    let r = apply();
    assert_ne!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let all = format!("{}\n{}", r.stdout, r.stderr);
    assert!(all.contains("service bad (running, unhealthy)"), "{all}");
    assert!(all.contains("last 20 log lines"), "{all}");
    assert!(all.contains("Ready to accept connections"), "{all}");
    assert!(!all.contains("service cache ("), "{all}");
}
