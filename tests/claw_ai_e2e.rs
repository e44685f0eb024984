//! claw-ai end to end on two fresh full hosts (issue 5): `apply playbooks/claw-ai.toml` installs
//! Docker from the lab's signed mirror, sets up the firewall, directories, certificate, secrets
//! and templates, ships the lab images over SSH, brings the stack up and checks its health; then
//! the stack is checked from outside and inside, and a second apply changes nothing.

use crate::support::{Lab, claw, ok, repo};

const KEYS: [(&str, &str); 2] = [
    ("ZHIPUAI_API_KEY", "zhipu-e2e-key-41d0"),
    ("PINECONE_API_KEY", "pinecone-e2e-key-93bb"),
];

/// HTTP status codes of `n` concurrent requests to h1's nginx, from h2.
fn curl_burst(lab: &Lab, h1: &str, n: usize) -> Vec<String> {
    let out = ok(
        lab.ssh(
            "h2",
            &format!(
                "seq {n} | xargs -P 30 -I{{}} curl -s -o /dev/null -w '%{{http_code}}\\n' -m 10 \
                 --cacert /tmp/ca.pem --resolve claw-ai.lab:443:{h1} https://claw-ai.lab/"
            ),
        ),
        "burst",
    );
    out.lines().map(String::from).collect()
}

/// `id;started-at` of every container of the stack on a host, sorted.
fn containers(lab: &Lab, host: &str) -> String {
    ok(
        lab.ssh(
            host,
            "sudo docker ps -q --filter label=com.docker.compose.project=claw-ai | sort | xargs sudo docker inspect --format '{{.Id}};{{.State.StartedAt}};{{.Name}}'",
        ),
        "docker inspect",
    )
}

#[test]
fn claw_ai_from_fresh_full_hosts_to_https() {
    let lab = Lab::up_full("f-e2e", 2);
    let images: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("target/lab-images/images.json"))
            .expect("target/lab-images/images.json (tests/lab/full/stack.sh build)"),
    )
    .unwrap();
    let tag = |n: &str| images[n]["tag"].as_str().unwrap().to_string();
    let mirror = lab.json["mirror"]["url"].as_str().unwrap();
    let key = lab.json["mirror"]["key"].as_str().unwrap();
    // The lab's inventory (tls_dir, the backend group) plus the Docker source, the images to
    // ship and the published backend port (both hosts are nginx's upstream).
    let base = std::fs::read_to_string(lab.inventory()).unwrap();
    // The backend: checked out from the lab's git server at v1 and built on each host with the
    // repository's own Dockerfile (backend_build), FROM the shipped python stand-in (tagged
    // python:3.11.15-slim-bookworm on the host), pip through the lab's PyPI mirror.
    let git = &lab.json["git"];
    let git_addr = git["address"].as_str().unwrap();
    let extra = format!(
        "docker_repo_url = {mirror:?}, docker_repo_key = {key:?}, ship_images = true, \
         backend_publish = true, postgres_image_local = {:?}, redis_image_local = {:?}, \
         backend_image_local = {:?}, nginx_image_local = {:?}, \
         backend_repo = {:?}, backend_ref = \"v1\", deploy_key_src = {:?}, git_known_hosts = {:?}, \
         backend_build = true, backend_image = \"claw-ai/backend\", pip_index_url = {:?}, ",
        tag("postgres"),
        tag("redis"),
        tag("python"),
        tag("nginx"),
        format!("git@{git_addr}:{}", git["repo_path"].as_str().unwrap()),
        git["deploy_key"].as_str().unwrap(),
        format!("{git_addr} {}", git["host_key"].as_str().unwrap()),
        lab.json["pypi"]["url"].as_str().expect("lab.json pypi.url"),
    );
    let text = base.replacen("vars = { tls_dir", &format!("vars = {{ {extra}tls_dir"), 1);
    assert_ne!(text, base, "the lab inventory has its defaults vars line");
    let inv = lab.dir.join("e2e.toml");
    std::fs::write(&inv, text).unwrap();
    let inv = inv.to_str().unwrap();
    let pb = repo().join("playbooks/claw-ai.toml");
    let pb = pb.to_str().unwrap();

    // 1. Fresh hosts to a healthy stack in one apply.
    let first = claw(
        &["apply", inv, "--playbook", pb, "--yes", "--output", "json"],
        &KEYS,
    );
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let h1 = lab.host("h1").address;
    let h2 = lab.host("h2").address;

    // 2. Through nginx from another host, with the lab CA.
    let ca = std::fs::read(lab.dir.join("tls/ca.pem")).unwrap();
    ok(
        lab.ssh_input("h2", "cat > /tmp/ca.pem", &ca),
        "copy the lab CA",
    );
    let curl = |args: &str| {
        ok(
            lab.ssh(
                "h2",
                &format!(
                    "curl -sS -m 10 --cacert /tmp/ca.pem --resolve claw-ai.lab:443:{h1} {args}"
                ),
            ),
            &format!("curl {args}"),
        )
    };
    let health = curl("-i https://claw-ai.lab/health");
    assert!(
        health.starts_with("HTTP/2 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    assert!(
        health.contains("\"postgres\":\"ok\"") && health.contains("\"redis\":\"ok\""),
        "{health}"
    );
    for h in [
        "x-frame-options: SAMEORIGIN",
        "x-content-type-options: nosniff",
        "x-xss-protection: 1; mode=block",
        "strict-transport-security: max-age=31536000",
        "referrer-policy: strict-origin-when-cross-origin",
    ] {
        assert!(
            health.to_lowercase().contains(&h.to_lowercase()),
            "{h}:\n{health}"
        );
    }
    let redirect = ok(
        lab.ssh("h2", &format!("curl -sS -m 10 -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{h1}/health")),
        "http redirect",
    );
    assert!(redirect.starts_with("301 https://"), "{redirect}");

    // gzip on compressible answers; the WebSocket upgrade reaches the backend; TLS below 1.2 is
    // refused; above the rate limit (10 r/s, burst 20) requests are turned away.
    let gz = curl("-o /dev/null -D - -H 'Accept-Encoding: gzip' https://claw-ai.lab/openapi.json");
    assert!(gz.to_lowercase().contains("content-encoding: gzip"), "{gz}");
    let ws = lab.ssh(
        "h2",
        &format!(
            "curl -sS -i -N --http1.1 -m 3 --cacert /tmp/ca.pem --resolve claw-ai.lab:443:{h1} \
             -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
             -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' https://claw-ai.lab/ws"
        ),
    );
    let ws = String::from_utf8_lossy(&ws.stdout).to_string();
    assert!(ws.starts_with("HTTP/1.1 101"), "{ws}");
    // ... and echoes: a WebSocket client (python3-websockets, in the backend image) talks to the
    // backend through nginx on 443. On a loaded machine one handshake may take long: up to 3
    // attempts of 30 s each, every failed one shown with what nginx and the containers saw; the
    // test fails if none succeeds.
    let mut echo = None;
    for attempt in 1..=3 {
        let o = lab.ssh(
            "h1",
            "cd /opt/claw-ai && sudo docker compose -p claw-ai exec -T backend python3 -c \"\
import ssl, websockets.sync.client as c
x = ssl.create_default_context(); x.check_hostname = False; x.verify_mode = ssl.CERT_NONE
with c.connect('wss://nginx/ws', ssl=x, open_timeout=30) as ws:
    ws.send('echo-e2e-7f3'); print(ws.recv(timeout=30))\"",
        );
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() && out == "echo-e2e-7f3" {
            echo = Some(out);
            break;
        }
        let seen = |host: &str, cmd: &str| {
            let d = lab.ssh(host, cmd);
            format!(
                "{}{}",
                String::from_utf8_lossy(&d.stdout),
                String::from_utf8_lossy(&d.stderr)
            )
        };
        eprintln!(
            "websocket echo, attempt {attempt} of 3 failed ({}):\nstdout: {out}\nstderr:\n{}\n\
             load: {}nginx error.log (last 20 lines):\n{}\nnginx access.log, /ws (last 5):\n{}\n\
             containers on h1:\n{}\ncontainers on h2:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr),
            seen("h1", "cat /proc/loadavg"),
            seen("h1", "sudo tail -n 20 /opt/claw-ai/nginx/logs/error.log"),
            seen(
                "h1",
                "sudo grep -F ' /ws ' /opt/claw-ai/nginx/logs/access.log | tail -n 5"
            ),
            seen(
                "h1",
                "sudo docker ps -a --filter label=com.docker.compose.project=claw-ai --format '{{.Names}} {{.Status}}'"
            ),
            seen(
                "h2",
                "sudo docker ps -a --filter label=com.docker.compose.project=claw-ai --format '{{.Names}} {{.Status}}'"
            ),
        );
    }
    assert_eq!(
        echo.as_deref(),
        Some("echo-e2e-7f3"),
        "the websocket echo through nginx failed 3 times (each attempt's diagnostics above)"
    );
    let tls11 = lab.ssh(
        "h2",
        &format!("curl -sS -m 5 -k --tlsv1.1 --tls-max 1.1 https://{h1}/health"),
    );
    assert!(!tls11.status.success(), "TLS 1.1 accepted");
    let codes = curl_burst(&lab, &h1, 60);
    assert!(
        codes.iter().any(|c| c == "429" || c == "503") && codes.iter().any(|c| c == "200"),
        "{codes:?}"
    );

    // 3. Inside: nobody runs as root; nginx cannot even resolve the database; from outside only
    //    22/80/443 answer.
    let dc = "cd /opt/claw-ai && sudo docker compose -p claw-ai -f docker-compose.prod.yml --env-file .env";
    assert!(
        !lab.ssh("h1", &format!("{dc} exec -T nginx getent hosts postgres"))
            .status
            .success(),
        "nginx resolves postgres"
    );
    for svc in ["backend", "postgres", "redis"] {
        // The server (PID 1): postgres and redis start as root and their entrypoints step down.
        let uid = ok(
            lab.ssh(
                "h1",
                &format!("cd /opt/claw-ai && sudo docker compose -p claw-ai exec -T {svc} sh -c 'grep ^Uid: /proc/1/status'"),
            ),
            &format!("uid of {svc}"),
        );
        assert_ne!(
            uid.split_whitespace().nth(1),
            Some("0"),
            "{svc} runs as root: {uid}"
        );
    }
    for port in [5432, 6379] {
        let o = lab.ssh(
            "h2",
            &format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{h1}/{port}'"),
        );
        assert!(!o.status.success(), "port {port} of h1 reachable from h2");
    }

    // 9. Official images (issue 17): the stack runs the official names (the lab's stand-ins, tagged so on the
    //    hosts only); Redis refuses an unauthenticated PING; PostgreSQL's data directory belongs to the
    //    image's postgres user; `docker compose config` passes on the host; no secret is in the argv of any
    //    process of the host, container processes (healthchecks included) too.
    let running = ok(
        lab.ssh("h1", "sudo docker ps --filter label=com.docker.compose.project=claw-ai --format '{{.Image}}'"),
        "images of the stack",
    );
    for img in [
        "postgres:15.19-bookworm",
        "redis:7.4.11-bookworm",
        "nginx:1.30.5-alpine",
    ] {
        assert!(
            running.lines().any(|l| l == img),
            "{img} not running:\n{running}"
        );
        let here = std::process::Command::new("docker")
            .args([
                "image",
                "inspect",
                "--format",
                "{{json .RepoTags}}",
                &tag(img.split(':').next().unwrap()),
            ])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&here.stdout).contains(img),
            "{img} tagged on this machine: official names belong to the lab hosts only"
        );
    }
    let ping = ok(
        lab.ssh("h1", &format!("{dc} exec -T redis redis-cli ping")),
        "redis-cli ping",
    );
    assert!(
        ping.contains("NOAUTH"),
        "Redis answers an unauthenticated PING: {ping}"
    );
    let mount = ok(
        lab.ssh(
            "h1",
            "sudo docker volume inspect --format '{{.Mountpoint}}' claw-ai_postgres_data",
        ),
        "postgres volume",
    );
    let owner = ok(
        lab.ssh("h1", &format!("sudo stat -c %u {}", mount.trim())),
        "owner",
    );
    let pg_uid = ok(
        lab.ssh("h1", &format!("{dc} exec -T postgres id -u postgres")),
        "id -u postgres",
    );
    assert_eq!(
        owner.trim(),
        pg_uid.trim(),
        "PostgreSQL's data directory owner"
    );
    ok(
        lab.ssh("h1", &format!("{dc} config -q")),
        "docker compose config -q",
    );
    let env = ok(lab.ssh("h1", "sudo cat /opt/claw-ai/.env"), ".env");
    let argv = ok(
        lab.ssh(
            "h1",
            "for i in $(seq 24); do sudo ps -eo args; sleep 0.5; done",
        ),
        "ps -eo args",
    );
    assert!(
        argv.contains("redis-server") && argv.contains("postgres"),
        "container processes in ps"
    );
    for line in env.lines().filter(|l| !l.starts_with('#')) {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim_matches('\'');
        assert!(
            v.len() < 6 || !argv.contains(v),
            "the value of {k} is in a process's argv on h1"
        );
    }

    // 8. Both backends serve through h1's nginx.
    for _ in 0..12 {
        curl("-o /dev/null https://claw-ai.lab/");
    }
    let log = ok(
        lab.ssh("h1", "sudo cat /opt/claw-ai/nginx/logs/access.log"),
        "access log",
    );
    assert!(
        log.contains(&format!("upstream={h2}:8000")) && log.contains("upstream=172.31.250.10:8000"),
        "{log}"
    );

    // 4. A second apply changes nothing and recreates nothing.
    let before = (containers(&lab, "h1"), containers(&lab, "h2"));
    let second = claw(
        &["apply", inv, "--playbook", pb, "--yes", "--output", "json"],
        &KEYS,
    );
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    for h in ["h1", "h2"] {
        assert_eq!(second.host(h)["changed"], 0, "{}", second.stdout);
    }
    assert_eq!(before, (containers(&lab, "h1"), containers(&lab, "h2")));

    // 5. A new rate limit: only nginx.conf and its handler; the same nginx container reloads it.
    let plan = claw(
        &[
            "plan",
            inv,
            "--playbook",
            pb,
            "--limit",
            "h1",
            "-e",
            "rate_limit=3",
            "--output",
            "json",
        ],
        &KEYS,
    );
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let ev = plan
        .events()
        .into_iter()
        .find(|e| e["event"] == "plan")
        .unwrap();
    let changed: Vec<&str> = ev["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !["ok", "skip"].contains(&s["action"].as_str().unwrap()))
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["nginx config", "health through nginx"], "{ev}");
    assert_eq!(ev["handlers"], serde_json::json!(["reload nginx"]), "{ev}");
    let third = claw(
        &[
            "apply",
            inv,
            "--playbook",
            pb,
            "--limit",
            "h1",
            "-e",
            "rate_limit=3",
            "--yes",
            "--output",
            "json",
        ],
        &KEYS,
    );
    assert_eq!(third.code, 0, "{}\n{}", third.stdout, third.stderr);
    assert_eq!(
        third.host("h1")["handlers"],
        serde_json::json!(["reload nginx"])
    );
    assert_eq!(before.0, containers(&lab, "h1"), "no container recreated");
    let live = ok(
        lab.ssh("h1", &format!("{dc} exec -T nginx nginx -T -c /etc/nginx/claw-ai/nginx.conf 2>/dev/null | grep limit_req_zone")),
        "nginx -T",
    );
    assert!(live.contains("rate=3r/s"), "{live}");
    for (k, v) in KEYS {
        assert!(
            !first.stdout.contains(v) && !second.stdout.contains(v),
            "{k} in the output"
        );
    }

    day_two(&lab, inv, pb, &h1);

    // 9. Resource limits reach the containers (Compose v2 applies deploy.resources.limits without
    //    swarm), and the daemon keeps containers running through its own restarts (live-restore).
    for h in ["h1", "h2"] {
        let limits = ok(
            lab.ssh(
                h,
                "sudo docker ps -q --filter label=com.docker.compose.project=claw-ai | xargs sudo docker inspect \
                 --format '{{index .Config.Labels \"com.docker.compose.service\"}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}' | sort",
            ),
            "docker inspect limits",
        );
        assert_eq!(
            limits,
            "backend 536870912 1000000000\nnginx 134217728 500000000\n\
             postgres 536870912 1000000000\nredis 268435456 500000000\n",
            "{h}"
        );
        assert_eq!(
            ok(
                lab.ssh(h, "sudo docker info --format '{{.LiveRestoreEnabled}}'"),
                "docker info"
            )
            .trim(),
            "true"
        );
    }

    // 10. Redis data and the secrets directory: backed up (0600 files in the 0700 directory, copied
    //     off the host), lost, restored by the restore task; the stack is healthy on them.
    durability(&lab, inv, pb, &h1);
}

/// Block 10 of the e2e test.
fn durability(lab: &Lab, inv: &str, pb: &str, h1: &str) {
    // redis-cli in the redis container, the password on stdin (from the host's secret file), then
    // in REDISCLI_AUTH: never on a command line.
    let rcli = |args: &str| {
        ok(
            lab.ssh(
                "h1",
                &format!(
                    "cd /opt/claw-ai && sudo cat .secrets/redis_password | sudo docker compose -p claw-ai exec -T redis \
                     sh -c 'read -r REDISCLI_AUTH && export REDISCLI_AUTH && exec redis-cli {args}'"
                ),
            ),
            &format!("redis-cli {args}"),
        )
        .trim()
        .to_string()
    };
    let secrets_sums = || {
        ok(
            lab.ssh(
                "h1",
                "cd /opt/claw-ai && sudo sh -c \"stat -c '%a %U %G %n' .secrets .secrets/* && sha256sum .secrets/*\"",
            ),
            "secrets",
        )
    };
    assert_eq!(rcli("SET e2e:kept before-backup"), "OK");
    let secrets_before = secrets_sums();
    assert!(
        secrets_before
            .starts_with("700 root root .secrets\n600 root root .secrets/postgres_password\n"),
        "{secrets_before}"
    );

    let fetched = lab.dir.join("fetched-10");
    let backup = task(
        inv,
        pb,
        "backup",
        &[&format!("fetch_dir={}", fetched.display())],
    );
    assert_eq!(backup.code, 0, "{}\n{}", backup.stdout, backup.stderr);
    let mut names = vec![];
    for (step, prefix) in [
        ("snapshot redis", "claw-ai-redis-"),
        ("archive the secrets", "claw-ai-secrets-"),
    ] {
        let remote = step_output(&backup, "h1", step);
        let remote = remote.trim();
        assert!(
            remote.starts_with(&format!("/opt/claw-ai/backups/{prefix}"))
                && remote.ends_with(".tar.gz"),
            "{step}: {remote}"
        );
        let name = remote.rsplit('/').next().unwrap().to_string();
        // The off-host copy: the same bytes, 0600 on this machine too.
        let local = fetched.join("h1").join(&name);
        let meta = std::fs::metadata(&local).unwrap_or_else(|e| panic!("{}: {e}", local.display()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{}",
            local.display()
        );
        let sha = ok(
            lab.ssh("h1", &format!("sudo sha256sum {remote}")),
            "sha256sum",
        );
        let local_sha = std::process::Command::new("sha256sum")
            .arg(&local)
            .output()
            .unwrap();
        assert_eq!(
            sha.split(' ').next(),
            String::from_utf8_lossy(&local_sha.stdout).split(' ').next(),
            "the copy is the archive"
        );
        names.push(name);
    }
    for h in ["h1", "h2"] {
        assert_eq!(
            fetched.join(h).read_dir().unwrap().count(),
            3,
            "{h}: dump, redis, secrets"
        );
    }
    // Every backup file 0600 root, in the 0700 directory; the Redis archive holds the append-only
    // files and the snapshot.
    let modes = ok(
        lab.ssh(
            "h1",
            "sudo stat -c '%a %U' /opt/claw-ai/backups && sudo find /opt/claw-ai/backups -mindepth 1 -type f -printf '%m %u %f\\n'",
        ),
        "backup modes",
    );
    let mut lines = modes.lines();
    assert_eq!(lines.next(), Some("700 root"), "{modes}");
    let files: Vec<&str> = lines.collect();
    assert!(files.len() >= 4, "{modes}");
    assert!(files.iter().all(|l| l.starts_with("600 root ")), "{modes}");
    let listing = ok(
        lab.ssh(
            "h1",
            &format!("sudo tar -tzf /opt/claw-ai/backups/{}", names[0]),
        ),
        "tar -t",
    );
    assert!(
        listing.lines().any(|l| l == "./dump.rdb")
            && listing
                .lines()
                .any(|l| l.starts_with("./appendonlydir/") && l.ends_with(".manifest")),
        "{listing}"
    );

    // Lost: the key changes, another appears; one secret is deleted, another overwritten. (A
    // missing secret whose data exists stops every run on the host, tasks too: see below.)
    assert_eq!(rcli("SET e2e:kept after-backup"), "OK");
    assert_eq!(rcli("SET e2e:later x"), "OK");
    ok(
        lab.ssh(
            "h1",
            "sudo rm /opt/claw-ai/.secrets/secret_key && echo damaged | sudo tee /opt/claw-ai/.secrets/postgres_password >/dev/null",
        ),
        "damage the secrets",
    );
    let restore = claw(
        &[
            "apply",
            inv,
            "--playbook",
            pb,
            "--task",
            "restore",
            "--limit",
            "h1",
            "-e",
            &format!("redis_backup={}", names[0]),
            "-e",
            &format!("secrets_backup={}", names[1]),
            "--yes",
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(restore.code, 0, "{}\n{}", restore.stdout, restore.stderr);
    assert_eq!(rcli("GET e2e:kept"), "before-backup");
    assert_eq!(
        rcli("EXISTS e2e:later"),
        "0",
        "the snapshot's data, not a merge"
    );
    assert_eq!(
        secrets_sums(),
        secrets_before,
        "the secrets, their modes and owners are back"
    );
    // The database password lost while the database exists: every run refuses to start (a new
    // value would lock the backend out), so it comes back on the host itself, as the README says.
    ok(
        lab.ssh("h1", "sudo rm /opt/claw-ai/.secrets/postgres_password"),
        "lose the database password",
    );
    let refused = task(inv, pb, "health", &[]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused
            .stdout
            .contains("Restore /opt/claw-ai/.secrets/postgres_password from a backup"),
        "{}",
        refused.stdout
    );
    ok(
        lab.ssh(
            "h1",
            "sudo /opt/claw-ai/backup.sh restore-secrets latest-secrets.tar.gz",
        ),
        "backup.sh restore-secrets on the host",
    );
    assert_eq!(
        secrets_sums(),
        secrets_before,
        "the database password is back"
    );
    // Healthy on the restored data, from outside; and the playbook accepts the secrets as they are.
    let health = ok(
        lab.ssh(
            "h2",
            &format!("curl -sS -m 10 --cacert /tmp/ca.pem --resolve claw-ai.lab:443:{h1} https://claw-ai.lab/health"),
        ),
        "health after the restore",
    );
    assert!(
        health.contains("\"postgres\":\"ok\"") && health.contains("\"redis\":\"ok\""),
        "{health}"
    );
    let plan = claw(
        &[
            "plan",
            inv,
            "--playbook",
            pb,
            "--limit",
            "h1",
            "--output",
            "json",
        ],
        &KEYS,
    );
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let ev = plan
        .events()
        .into_iter()
        .find(|e| e["event"] == "plan")
        .unwrap();
    for step in [
        "database password",
        "redis password",
        "backend secret key",
        "secrets file",
    ] {
        let s = ev["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == step)
            .unwrap_or_else(|| panic!("{step} in {ev}"));
        assert_eq!(s["action"], "ok", "{step}: {ev}");
    }
    // A restore that names nothing is refused before anything stops.
    let none = task(inv, pb, "restore", &[]);
    assert_ne!(none.code, 0);
    assert!(
        format!("{}{}", none.stdout, none.stderr).contains("name what to restore"),
        "{}\n{}",
        none.stdout,
        none.stderr
    );
    assert_eq!(
        ok(
            lab.ssh(
                "h1",
                "sudo docker ps -q --filter label=com.docker.compose.project=claw-ai | wc -l"
            ),
            "docker ps"
        )
        .trim(),
        "4"
    );

    // The cron entry's command, run as cron runs it (its PATH, nothing else): a whole set with one
    // time stamp, then the retention.
    let cron = ok(
        lab.ssh("h1", "cat /etc/cron.d/claw-ai-backup"),
        "cron entry",
    );
    let path_env = cron.lines().find(|l| l.starts_with("PATH=")).unwrap();
    let command = cron.lines().last().unwrap().splitn(7, ' ').nth(6).unwrap();
    let out = ok(
        lab.ssh(
            "h1",
            &format!(
                "sudo env -i {path_env} sh -c {}",
                claw_provision::quote::quote(command)
            ),
        ),
        "the cron command",
    );
    let made: Vec<&str> = out.lines().collect();
    assert_eq!(made.len(), 3, "{out}");
    let stamp = made[0]
        .strip_prefix("/opt/claw-ai/backups/claw-ai-")
        .and_then(|s| s.strip_suffix(".sql.gz"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        made,
        [
            format!("/opt/claw-ai/backups/claw-ai-{stamp}.sql.gz"),
            format!("/opt/claw-ai/backups/claw-ai-redis-{stamp}.tar.gz"),
            format!("/opt/claw-ai/backups/claw-ai-secrets-{stamp}.tar.gz"),
        ]
    );
}

/// Runs a task of the claw-ai playbook on every host (JSON output; no API keys: tasks do not
/// need them).
fn task(inv: &str, pb: &str, name: &str, extra: &[&str]) -> crate::support::Run {
    let mut args = vec![
        "apply",
        inv,
        "--playbook",
        pb,
        "--task",
        name,
        "--yes",
        "--output",
        "json",
    ];
    for e in extra {
        args.extend(["-e", e]);
    }
    claw(&args, &[])
}

/// The output of step `step` on `host` in a task's JSON events.
fn step_output(run: &crate::support::Run, host: &str, step: &str) -> String {
    run.events()
        .into_iter()
        .find(|e| e["event"] == "step" && e["host"] == host && e["name"] == step)
        .and_then(|e| e["output"].as_str().map(String::from))
        .unwrap_or_else(|| {
            panic!(
                "no output of `{step}` on {host}:\n{}\n{}",
                run.stdout, run.stderr
            )
        })
}

/// Items 6 and 7 and the other day-2 tasks: status, logs, stop/start, backup with an off-host
/// copy, restore into a fresh database, update with rollback.
fn day_two(lab: &Lab, inv: &str, pb: &str, h1: &str) {
    let psql = |sql: &str| {
        ok(
            lab.ssh(
                "h1",
                &format!(
                    "cd /opt/claw-ai && sudo docker compose -p claw-ai exec -T postgres psql -U claw -d claw -qAt -c \"{sql}\""
                ),
            ),
            sql,
        )
    };
    // status and logs: read only, no question asked, output per host.
    let status = task(inv, pb, "status", &[]);
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    for h in ["h1", "h2"] {
        let out = step_output(&status, h, "containers");
        for svc in ["backend", "nginx", "postgres", "redis"] {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(svc) && l.contains("running")),
                "{svc} in\n{out}"
            );
        }
        assert_eq!(status.host(h)["changed"], 0);
    }
    let logs = task(inv, pb, "logs", &["service=backend", "log_lines=5"]);
    assert_eq!(logs.code, 0, "{}\n{}", logs.stdout, logs.stderr);
    let out = step_output(&logs, "h1", "logs");
    assert!(!out.trim().is_empty() && out.lines().count() <= 5, "{out}");

    // stop is an operation: the next plain apply starts the stack again.
    let stop = task(inv, pb, "stop", &[]);
    assert_eq!(stop.code, 0, "{}\n{}", stop.stdout, stop.stderr);
    let running = |h: &str| {
        ok(
            lab.ssh(
                h,
                "sudo docker ps -q --filter label=com.docker.compose.project=claw-ai | wc -l",
            ),
            "docker ps",
        )
        .trim()
        .to_string()
    };
    assert_eq!(running("h1"), "0");
    let again = task(inv, pb, "stop", &[]);
    assert_eq!(again.host("h1")["changed"], 0, "{}", again.stdout);
    let start = task(inv, pb, "start", &[]);
    assert_eq!(start.code, 0, "{}\n{}", start.stdout, start.stderr);
    assert_eq!(running("h1"), "4");

    // 6. backup: a non-empty dump, copied to this machine; restore it into a fresh database.
    psql("CREATE TABLE e2e_kept (v text); INSERT INTO e2e_kept VALUES ('row-before-backup');");
    let fetched = lab.dir.join("fetched");
    let fetch_dir = format!("fetch_dir={}", fetched.display());
    let backup = task(inv, pb, "backup", &[&fetch_dir]);
    assert_eq!(backup.code, 0, "{}\n{}", backup.stdout, backup.stderr);
    let remote = step_output(&backup, "h1", "dump the database");
    let remote = remote.trim();
    assert!(
        remote.starts_with("/opt/claw-ai/backups/claw-ai-") && remote.ends_with(".sql.gz"),
        "{remote}"
    );
    let name = remote.rsplit('/').next().unwrap();
    let local = fetched.join("h1").join(name);
    let bytes = std::fs::read(&local).unwrap_or_else(|e| panic!("{}: {e}", local.display()));
    assert!(bytes.len() > 100, "{} bytes", bytes.len());
    let sha = ok(
        lab.ssh("h1", &format!("sudo sha256sum {remote}")),
        "sha256sum",
    );
    let local_sha = {
        use std::process::Command;
        let o = Command::new("sha256sum").arg(&local).output().unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(
        sha.split(' ').next(),
        local_sha.split(' ').next(),
        "the copy is the dump"
    );
    let sql = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&local)
        .output()
        .unwrap();
    assert!(sql.status.success());
    assert!(String::from_utf8_lossy(&sql.stdout).contains("row-before-backup"));
    assert!(
        fetched
            .join("h2")
            .read_dir()
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sql.gz"))
            .count()
            == 1,
        "h2's dump too"
    );
    // The data changes after the backup; restore brings the dumped state back.
    psql("DROP TABLE e2e_kept; CREATE TABLE e2e_after (v text);");
    // Restore on h1 (each host has dumps of its own).
    let restore = claw(
        &[
            "apply",
            inv,
            "--playbook",
            pb,
            "--task",
            "restore",
            "--limit",
            "h1",
            "-e",
            &format!("dump={name}"),
            "--yes",
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(restore.code, 0, "{}\n{}", restore.stdout, restore.stderr);
    assert_eq!(psql("SELECT v FROM e2e_kept;").trim(), "row-before-backup");
    assert_eq!(
        psql("SELECT count(*) FROM pg_tables WHERE tablename = 'e2e_after';").trim(),
        "0",
        "a fresh database, not a merge"
    );

    // 7. update to a release whose health check fails: rolled back, the old version serves, exit 1;
    //    then to a good release: it serves.
    let version = |h: &str| {
        ok(
            lab.ssh("h2", &format!("curl -sS -m 10 http://{h}:8000/")),
            "backend version",
        )
    };
    let h2 = lab.host("h2").address;
    assert!(
        version(h1).contains("\"version\":\"1.0.0\""),
        "{}",
        version(h1)
    );
    let bad = task(inv, pb, "update", &["backend_ref=v3"]);
    assert_eq!(bad.code, 1, "{}\n{}", bad.stdout, bad.stderr);
    for (h, addr) in [("h1", h1), ("h2", h2.as_str())] {
        let e = bad.host(h);
        assert_eq!(e["state"], "failed", "{e}");
        let err = e["error"].as_str().unwrap();
        assert!(
            err.contains("roll back the backend image")
                && err.contains("stack on the previous image"),
            "{err}"
        );
        assert!(
            version(addr).contains("\"version\":\"1.0.0\""),
            "{}",
            version(addr)
        );
    }
    let health = ok(
        lab.ssh("h1", "curl -sk -m 10 https://127.0.0.1/health"),
        "health after the rollback",
    );
    assert!(health.contains("\"postgres\":\"ok\""), "{health}");
    let good = task(inv, pb, "update", &["backend_ref=v2"]);
    assert_eq!(good.code, 0, "{}\n{}", good.stdout, good.stderr);
    for addr in [h1, h2.as_str()] {
        assert!(
            version(addr).contains("\"version\":\"2.0.0\""),
            "{}",
            version(addr)
        );
    }
    let through_nginx = ok(
        lab.ssh("h1", "curl -sk -m 10 https://127.0.0.1/"),
        "version through nginx",
    );
    assert!(
        through_nginx.contains("\"version\":\"2.0.0\""),
        "{through_nginx}"
    );
    // The inventory still says v1: a plain plan would take the backend back (declared state wins).
    let plan = claw(
        &[
            "plan",
            inv,
            "--playbook",
            pb,
            "--limit",
            "h1",
            "--output",
            "json",
        ],
        &KEYS,
    );
    let ev = plan
        .events()
        .into_iter()
        .find(|e| e["event"] == "plan")
        .unwrap();
    let step = |n: &str| {
        ev["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(step("backend code")["action"], "update", "{ev}");
    assert_eq!(
        step("backend image build")["action"],
        "known after apply",
        "{ev}"
    );
}
