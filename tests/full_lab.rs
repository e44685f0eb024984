//! Full hosts (tests/lab/lab.sh up-full): Debian trixie servers in containers that behave like a
//! fresh cloud VM. Proven here with plain ssh and apt, not yet through the provisioner: strict
//! host keys, Docker installed from the signed lab mirror (and refused from an unsigned one), the
//! daemon running nested, lab images loaded with `docker load`, a compose stack with a published
//! port reachable from another host, the backend answering `/health`, and the backend's git
//! remote cloned from a host over SSH. Then the provisioner's `firewall` step on that Docker host.

use crate::support::{Lab, Scratch, claw, ok, repo};

fn sources(url: &str) -> String {
    format!(
        "Types: deb\nURIs: {url}\nSuites: trixie\nComponents: main\nSigned-By: /etc/apt/keyrings/claw-lab.asc\n"
    )
}

#[test]
fn fresh_full_host_runs_docker_from_the_signed_mirror() {
    let lab = Lab::up_full("f-docker", 2);
    let mirror = lab.json["mirror"]["url"]
        .as_str()
        .expect("mirror url")
        .to_string();
    let key = std::fs::read(lab.json["mirror"]["key"].as_str().expect("mirror key"))
        .expect("mirror key file");
    let h1 = lab.host("h1");

    // A server as a user meets it: strict host keys, sudo, no Docker yet.
    assert_eq!(ok(lab.ssh("h1", "sudo -n id -un"), "sudo"), "root\n");
    assert!(
        !lab.ssh("h1", "command -v docker").status.success(),
        "no Docker on a fresh host"
    );

    ok(lab.ssh_input("h1", "sudo install -d -m 0755 /etc/apt/keyrings && sudo tee /etc/apt/keyrings/claw-lab.asc >/dev/null", &key), "key");

    // The same packages without a signature: apt refuses them.
    let unsigned = mirror.replace("/debian", "/unsigned");
    ok(
        lab.ssh_input(
            "h1",
            "sudo tee /etc/apt/sources.list.d/claw-lab.sources >/dev/null",
            sources(&unsigned).as_bytes(),
        ),
        "sources",
    );
    let upd = lab.ssh("h1", "sudo apt-get update 2>&1");
    let text = String::from_utf8_lossy(&upd.stdout).to_string();
    assert!(
        !upd.status.success() || text.contains("is not signed"),
        "an unsigned repository must be refused:\n{text}"
    );
    assert!(
        text.contains("not signed") || text.contains("NO_PUBKEY") || text.contains("InRelease"),
        "{text}"
    );

    // The signed mirror: Docker and Compose v2 install.
    ok(
        lab.ssh_input(
            "h1",
            "sudo tee /etc/apt/sources.list.d/claw-lab.sources >/dev/null",
            sources(&mirror).as_bytes(),
        ),
        "sources",
    );
    ok(
        lab.ssh("h1", "sudo apt-get update -q"),
        "apt-get update (signed)",
    );
    ok(
        lab.ssh(
            "h1",
            "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose git",
        ),
        "apt-get install docker.io docker-compose git",
    );
    assert!(
        ok(lab.ssh("h1", "docker compose version"), "compose").contains("Docker Compose version")
    );

    // The git remote of the backend is reachable from a host over SSH, host key checked.
    let git = &lab.json["git"];
    let deploy_key = std::fs::read(git["deploy_key"].as_str().unwrap()).unwrap();
    ok(
        lab.ssh_input(
            "h1",
            "umask 077; mkdir -p ~/.ssh && cat > ~/.ssh/id_deploy",
            &deploy_key,
        ),
        "deploy key",
    );
    let known = format!(
        "{} {}\n",
        git["address"].as_str().unwrap(),
        git["host_key"].as_str().unwrap()
    );
    ok(
        lab.ssh_input("h1", "cat > ~/.ssh/git_known_hosts", known.as_bytes()),
        "git known_hosts",
    );
    let clone = format!(
        "GIT_SSH_COMMAND='ssh -i ~/.ssh/id_deploy -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=~/.ssh/git_known_hosts' \
         git clone -q git@{}:{} ~/backend && cd ~/backend && git tag --list",
        git["address"].as_str().unwrap(),
        git["repo_path"].as_str().unwrap()
    );
    assert_eq!(ok(lab.ssh("h1", &clone), "git clone"), "v1\nv2\nv3\n");

    // The daemon starts nested (sysvinit script; real servers vary).
    ok(
        lab.ssh(
            "h1",
            "sudo service docker start || sudo /etc/init.d/docker start",
        ),
        "start docker",
    );
    ok(
        lab.ssh("h1", "for i in $(seq 60); do sudo docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done; sudo docker info"),
        "docker info",
    );

    // Lab images arrive by `docker load`, as the provisioner will ship them.
    let built = std::process::Command::new("bash")
        .arg(repo().join("tests/lab/full/stack.sh"))
        .arg("build")
        .output()
        .unwrap();
    ok(built, "tests/lab/full/stack.sh build");
    let images: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("target/lab-images/images.json"))
            .expect("target/lab-images/images.json"),
    )
    .unwrap();
    for name in ["postgres", "redis", "backend"] {
        let tar = std::fs::read(images[name]["tar"].as_str().unwrap()).unwrap();
        ok(
            lab.ssh_input("h1", "sudo docker load", &tar),
            &format!("docker load {name}"),
        );
    }

    // compose up: backend + PostgreSQL + Redis, the backend's port published.
    let compose = format!(
        r#"services:
  postgres:
    image: {pg}
    environment: {{ POSTGRES_USER: claw, POSTGRES_PASSWORD: labdbpass, POSTGRES_DB: claw }}
    healthcheck: {{ test: ["CMD", "pg_isready", "-U", "claw"], interval: 1s, retries: 60 }}
  redis:
    image: {redis}
  backend:
    image: {backend}
    environment:
      POSTGRES_HOST: postgres
      POSTGRES_USER: claw
      POSTGRES_PASSWORD: labdbpass
      POSTGRES_DB: claw
      REDIS_HOST: redis
    ports: ["8000:8000"]
    depends_on: {{ postgres: {{ condition: service_healthy }}, redis: {{ condition: service_started }} }}
"#,
        pg = images["postgres"]["tag"].as_str().unwrap(),
        redis = images["redis"]["tag"].as_str().unwrap(),
        backend = images["backend"]["tag"].as_str().unwrap(),
    );
    ok(
        lab.ssh_input(
            "h1",
            "mkdir -p ~/stack && cat > ~/stack/compose.yml",
            compose.as_bytes(),
        ),
        "compose file",
    );
    ok(
        lab.ssh(
            "h1",
            "cd ~/stack && sudo docker compose up -d --pull never --wait --wait-timeout 120",
        ),
        "compose up",
    );

    // Reachable from ANOTHER lab host through the published port, and healthy.
    let url = format!("http://{}:8000/health", h1.address);
    let health = ok(
        lab.ssh("h2", &format!("for i in $(seq 60); do curl -fsS -m 3 {url} && exit 0; sleep 1; done; curl -sS -m 3 {url}")),
        "health from h2",
    );
    assert!(
        health.contains("\"postgres\":\"ok\"") && health.contains("\"redis\":\"ok\""),
        "{health}"
    );

    // The `firewall` step on this Docker host: Docker's own rules survive (whichever iptables
    // backend it uses), the published backend port is dropped from h2 (a timeout, curl exit 28)
    // unless h2 is a peer of that port.
    let docker_rules = "sudo iptables -S; sudo iptables -t nat -S";
    let before = ok(lab.ssh("h1", docker_rules), "iptables before");
    assert!(before.contains("DOCKER"), "{before}");
    let s = Scratch::new();
    let firewall = |name: &str, args: &str| {
        let pb = s.file(
            name,
            &format!("name = \"fw\"\nhosts = \"h1\"\n\n[[steps]]\nname = \"firewall\"\nkind = \"firewall\"\n{args}\n"),
        );
        let inv = lab.write_inventory(name, &pb, &[]);
        let r = claw(
            &["apply", inv.to_str().unwrap(), "--yes", "--output", "json"],
            &[],
        );
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        r.host("h1")["changed"].as_u64().unwrap()
    };
    let from_h2 = format!("curl -sS -m 3 -o /dev/null {url}; echo rc=$?");
    assert_eq!(firewall("fw.toml", ""), 1);
    assert_eq!(ok(lab.ssh("h1", docker_rules), "iptables after"), before);
    assert!(ok(lab.ssh("h2", &from_h2), "curl").contains("rc=28"));
    assert_eq!(
        ok(
            lab.ssh(
                "h1",
                "systemctl is-enabled claw-provision-firewall@claw_provision.service"
            ),
            "boot unit"
        ),
        "enabled\n"
    );
    assert_eq!(firewall("fw.toml", ""), 0, "a second apply changes nothing");
    let peer = "peers = [{ port = 8000, from = [\"h2\"] }]";
    assert_eq!(firewall("peer.toml", peer), 1);
    assert!(ok(lab.ssh("h2", &from_h2), "curl").contains("rc=0"));
    assert_eq!(ok(lab.ssh("h1", docker_rules), "iptables after"), before);

    // A reboot: the boot unit loads the same table again (before Docker starts), so a plan finds
    // nothing to change.
    let container = lab.json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "h1")
        .and_then(|h| h["container"].as_str())
        .unwrap()
        .to_string();
    ok(
        std::process::Command::new("docker")
            .args(["restart", &container])
            .output()
            .unwrap(),
        "docker restart h1",
    );
    let up = (0..120).any(|_| {
        std::thread::sleep(std::time::Duration::from_secs(1));
        lab.ssh(
            "h1",
            "systemctl is-system-running --wait >/dev/null; sudo nft list tables",
        )
        .status
        .success()
    });
    assert!(up, "h1 did not come back after a restart");
    let tables = ok(lab.ssh("h1", "sudo nft list tables"), "nft");
    assert!(tables.contains("table inet claw_provision"), "{tables}");
    assert_eq!(
        ok(
            lab.ssh(
                "h1",
                "systemctl is-active claw-provision-firewall@claw_provision.service"
            ),
            "boot unit ran"
        ),
        "active\n"
    );
    assert_eq!(
        firewall("peer.toml", peer),
        0,
        "the table survives a reboot"
    );
}

#[test]
fn down_leaves_nothing_behind() {
    let lab = Lab::up_full("f-down", 1);
    let name = lab.name.clone();
    drop(lab);
    let leftovers = |args: &[&str]| {
        let o = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains(&name))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(leftovers(&["ps", "-a", "--format", "{{.Names}}"]).is_empty());
    assert!(leftovers(&["volume", "ls", "--format", "{{.Name}}"]).is_empty());
    assert!(leftovers(&["network", "ls", "--format", "{{.Name}}"]).is_empty());
    assert!(!repo().join("target").join(&name).join("lab.json").exists());
}
