//! The claw-ai playbook and its templates (issue 4: playbooks/claw-ai.toml, templates/claw-ai/).
//!
//! Rendering goes through the crate's own code (variable layering, `when`, `resource::desired`, strict
//! Tera), with a hand-made context where `facts` and `secrets` will come from the probe and the secret
//! store. Then: pure checks of every rendered file; on a full lab host `nginx -t` in the lab nginx image
//! (mounted exactly as the compose file mounts it), `docker compose config` and `sh -n`; on light hosts the
//! backup retention, run as the cron entry runs it, and the logrotate entry.

use crate::support::{Lab, ok, repo};
use claw_provision::inventory::Inventory;
use claw_provision::playbook::Playbook;
use claw_provision::testing::{self as resource, Desired, Sources};
use claw_provision::{template, vars};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// (name under `secrets`, variable in .env, test value).
pub(crate) const SECRETS: &[(&str, &str, &str)] = &[
    (
        "postgres_password",
        "POSTGRES_PASSWORD",
        "pgpw-5b0e2f9c41d7a8",
    ),
    ("redis_password", "REDIS_PASSWORD", "rdpw-9a7c3e1d0b42f6"),
    ("secret_key", "SECRET_KEY", "sk-4f1e8d2c6a90b3e7c5"),
    (
        "ZHIPUAI_API_KEY",
        "ZHIPUAI_API_KEY",
        "zhipu-test.8c2d41aa93",
    ),
    (
        "PINECONE_API_KEY",
        "PINECONE_API_KEY",
        "pcsk_test_61f0e9d7b2",
    ),
];

pub(crate) const ENV: &str = "/opt/claw-ai/.env";
pub(crate) const NGINX_CONF: &str = "/opt/claw-ai/nginx/conf/nginx.conf";
pub(crate) const COMPOSE: &str = "/opt/claw-ai/docker-compose.prod.yml";
pub(crate) const BACKUP: &str = "/opt/claw-ai/backup.sh";
const CRON: &str = "/etc/cron.d/claw-ai-backup";
const LOGROTATE: &str = "/etc/logrotate.d/claw-ai";
pub(crate) const REDIS_CONF: &str = "/opt/claw-ai/private/redis/redis.conf";

/// A file some step of the playbook would write.
#[derive(Debug)]
pub(crate) struct File {
    pub(crate) content: String,
    pub(crate) mode: Option<u32>,
    pub(crate) owner: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) sensitive: bool,
}

/// What the playbook renders for one host.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) files: BTreeMap<String, File>,
    pub(crate) dirs: BTreeMap<String, (Option<u32>, Option<String>)>,
    /// The `run` script of each command step, by step name.
    pub(crate) commands: BTreeMap<String, String>,
    pub(crate) skipped: Vec<String>,
}

impl Rendered {
    pub(crate) fn text(&self, path: &str) -> &str {
        &self
            .files
            .get(path)
            .unwrap_or_else(|| panic!("no step writes {path}"))
            .content
    }
}

/// A hand-made inventory: web-1..3 in `backend`, lb-1 only in `edge`.
pub(crate) const INVENTORY: &str = r#"
[defaults]
user = "deploy"

[groups.backend]
[groups.edge]

[hosts.web-1]
address = "192.0.2.11"
groups = ["backend"]

[hosts.web-2]
address = "192.0.2.12"
groups = ["backend"]

[hosts.web-3]
address = "192.0.2.13"
groups = ["backend"]

[hosts.lb-1]
address = "192.0.2.20"
groups = ["edge"]
"#;

pub(crate) fn secrets_json(secrets: &[(&str, &str, &str)]) -> Value {
    Value::Object(
        secrets
            .iter()
            .map(|(k, _, v)| (k.to_string(), Value::from(*v)))
            .collect(),
    )
}

/// A self-signed certificate and its key (made once per test run with openssl), as the
/// inventory's `tls_dir` names them for the playbook's `cert` step.
pub(crate) fn tls_dir() -> &'static str {
    static DIR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = repo().join("target/claw-ai-test-tls");
        std::fs::create_dir_all(&d).unwrap();
        let o = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "365", "-subj", "/CN=claw-ai.test"])
            .arg("-keyout")
            .arg(d.join("privkey.pem"))
            .arg("-out")
            .arg(d.join("fullchain.pem"))
            .output()
            .expect("openssl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        d.to_str().unwrap().to_string()
    })
}

/// Renders playbooks/claw-ai.toml for `host` the way `run::prepare` does, with `facts.init = init`,
/// the given secrets and `-e` values.
pub(crate) fn render_with(
    inventory: &str,
    host: &str,
    init: &str,
    secrets: Value,
    extra: &[(&str, &str)],
) -> Result<Rendered, String> {
    let inv = Inventory::parse(
        &repo().join("target/claw-ai-test-inventory.toml"),
        inventory,
    )
    .map_err(|e| e.to_string())?;
    let pb = Playbook::load(&repo().join("playbooks/claw-ai.toml")).map_err(|e| e.to_string())?;
    let h = inv
        .hosts
        .iter()
        .find(|h| h.name == host)
        .expect("host in inventory");
    let mut extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !extra.iter().any(|(k, _)| k == "tls_dir") {
        extra.push(("tls_dir".into(), tls_dir().to_string()));
    }
    let mut ctx = vars::context(&inv, h, &pb, &extra);
    ctx.insert(
        "facts".into(),
        json!({"init": init, "os_id": "debian", "os_codename": "trixie", "arch": "x86_64",
               "deb_arch": "amd64", "docker": init == "systemd", "compose": init == "systemd",
               "hostname": host}),
    );
    ctx.insert("secrets".into(), secrets);
    let cache = template::Cache::default();
    let sources = Sources {
        files_dir: &pb.dir,
        templates_dir: &pb.templates_dir,
        images: &Default::default(),
        templates: &template::Renderer::new(&cache),
    };
    let mut out = Rendered {
        files: BTreeMap::new(),
        dirs: BTreeMap::new(),
        commands: BTreeMap::new(),
        skipped: vec![],
    };
    for step in &pb.steps {
        if let Some(w) = &step.when
            && !sources
                .templates
                .eval_when(w, &ctx)
                .map_err(|e| format!("{}: {e}", step.name))?
        {
            out.skipped.push(step.name.clone());
            continue;
        }
        match resource::desired(&step.kind, &step.args, &ctx, &sources)
            .map_err(|e| format!("step `{}`: {e}", step.name))?
        {
            Desired::File(f) => {
                let content = String::from_utf8(f.content.to_vec()).unwrap();
                out.files.insert(
                    f.path.clone(),
                    File {
                        content,
                        mode: f.mode,
                        owner: f.owner.clone(),
                        group: f.group.clone(),
                        sensitive: f.sensitive,
                    },
                );
            }
            Desired::Dir(d) => {
                out.dirs.insert(d.path.clone(), (d.mode, d.owner.clone()));
            }
            Desired::Command(c) => {
                out.commands.insert(step.name.clone(), c.run.clone());
            }
            _ => {}
        }
    }
    for h in &pb.handlers {
        resource::desired(&h.kind, &h.args, &ctx, &sources)
            .map_err(|e| format!("handler `{}`: {e}", h.name))?;
    }
    Ok(out)
}

pub(crate) fn render(inventory: &str, host: &str, extra: &[(&str, &str)]) -> Rendered {
    render_with(inventory, host, "systemd", secrets_json(SECRETS), extra)
        .unwrap_or_else(|e| panic!("rendering for {host}: {e}"))
}

/// The `server` lines of `upstream claw_backend`, comments dropped.
fn upstream_servers(conf: &str) -> Vec<String> {
    let start = conf
        .find("upstream claw_backend {")
        .expect("upstream block");
    let block = &conf[start..start + conf[start..].find('}').unwrap()];
    block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| l.starts_with("server "))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

/// The lines of one service of the compose file (text between `  NAME:` and the next service or
/// top-level key).
pub(crate) fn service<'a>(compose: &'a str, name: &str) -> Vec<&'a str> {
    let mut out = vec![];
    let mut inside = false;
    for line in compose.lines() {
        let indent = line.len() - line.trim_start().len();
        if !line.trim().is_empty() && !line.trim_start().starts_with('#') && indent <= 2 {
            inside = line == format!("  {name}:");
            continue;
        }
        if inside {
            out.push(line);
        }
    }
    assert!(!out.is_empty(), "no service {name} in the compose file");
    out
}

/// The lines under `    KEY:` in a service's lines (more deeply indented).
pub(crate) fn key_block<'a>(svc: &[&'a str], key: &str) -> Vec<&'a str> {
    let head = format!("    {key}:");
    let Some(i) = svc
        .iter()
        .position(|l| *l == head || l.starts_with(&format!("{head} ")))
    else {
        return vec![];
    };
    let mut out = vec![svc[i]];
    out.extend(svc[i + 1..].iter().take_while(|l| l.starts_with("      ")));
    out
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn nginx_conf_has_the_required_directives_and_every_backend() {
    // A host of the backend group: its own backend by the fixed compose address, the others by address.
    let r = render(INVENTORY, "web-1", &[]);
    let conf = r.text(NGINX_CONF);
    assert_eq!(
        upstream_servers(conf),
        ["172.31.250.10:8000", "192.0.2.12:8000", "192.0.2.13:8000"],
        "{conf}"
    );
    // A host outside the group (a pure load balancer): every backend by address and backend_port.
    let lb = render(INVENTORY, "lb-1", &[("backend_port", "8080")]);
    assert_eq!(
        upstream_servers(lb.text(NGINX_CONF)),
        ["192.0.2.11:8080", "192.0.2.12:8080", "192.0.2.13:8080"]
    );

    for needle in [
        "least_conn;",
        "listen 80 default_server;",
        "return 301 https://$host$request_uri;",
        "listen 443 ssl default_server;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_certificate /etc/nginx/ssl/fullchain.pem;",
        "ssl_certificate_key /etc/nginx/ssl/privkey.pem;",
        "limit_req_zone $binary_remote_addr zone=claw_api:10m rate=10r/s;",
        "limit_req zone=claw_api burst=20 nodelay;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_http_version 1.1;",
        "location /ws {",
        "gzip on;",
        "add_header X-Frame-Options \"SAMEORIGIN\" always;",
        "add_header X-Content-Type-Options \"nosniff\" always;",
        "add_header X-XSS-Protection \"1; mode=block\" always;",
        "add_header Strict-Transport-Security \"max-age=31536000\" always;",
        "add_header Referrer-Policy \"strict-origin-when-cross-origin\" always;",
        "location = /health {",
        "proxy_pass http://claw_backend/health;",
        "access_log /var/log/nginx/access.log main;",
        "error_log /var/log/nginx/error.log warn;",
        "server_tokens off;",
    ] {
        assert!(
            conf.contains(needle),
            "nginx.conf lacks `{needle}`:\n{conf}"
        );
    }
    // Modern ciphers only: forward secrecy and AEAD.
    let ciphers = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("ssl_ciphers "))
        .expect("ssl_ciphers");
    for c in ciphers.trim_end_matches(';').split(':') {
        assert!(
            c.starts_with("ECDHE-") && (c.contains("GCM") || c.contains("CHACHA20")),
            "weak cipher {c}"
        );
    }
    assert!(!conf.contains("TLSv1.1") && !conf.contains("TLSv1 ") && !conf.contains("SSLv"));
    // Headers are set once, at server level (a location with its own add_header would drop them).
    assert_eq!(count(conf, "add_header "), 5);
    // Logs: /var/log/nginx in the container is /opt/claw-ai/nginx/logs on the host.
    assert!(
        r.text(COMPOSE)
            .contains("- \"/opt/claw-ai/nginx/logs:/var/log/nginx\""),
        "nginx logs mount"
    );
    // A non-standard HTTPS port (e.g. behind a NAT) keeps the redirect right.
    let alt = render(INVENTORY, "web-2", &[("https_port", "8443")]);
    assert!(
        alt.text(NGINX_CONF)
            .contains("return 301 https://$host:8443$request_uri;")
    );
}

#[test]
fn compose_isolates_the_data_services() {
    let r = render(INVENTORY, "web-1", &[]);
    let c = r.text(COMPOSE);
    let has = |svc: &str, needle: &str| service(c, svc).iter().any(|l| l.contains(needle));

    // Networks: backend internal; postgres/redis only on it, nginx never on it.
    assert!(
        c.contains("networks:\n  backend:\n    internal: true\n"),
        "{c}"
    );
    assert!(c.contains("\n  frontend:\n") && c.contains("\n  public: {}\n"));
    let networks = |svc: &str| {
        key_block(&service(c, svc), "networks")
            .iter()
            .map(|l| l.trim().to_string())
            .collect::<Vec<_>>()
    };
    for svc in ["postgres", "redis"] {
        assert!(!has(svc, "ports:"), "{svc} must not publish a port");
        assert!(!has(svc, "expose:"));
        assert_eq!(networks(svc), ["networks:", "- backend"], "{svc}");
    }
    assert_eq!(networks("nginx"), ["networks:", "- frontend", "- public"]);
    assert_eq!(
        networks("backend"),
        [
            "networks:",
            "backend: {}",
            "frontend:",
            "ipv4_address: \"172.31.250.10\""
        ]
    );
    assert!(!has("backend", "ports:"), "backend_publish defaults to off");
    assert!(has("nginx", "- \"80:80\"") && has("nginx", "- \"443:443\""));

    // Healthchecks, restart policy, log rotation, non-root users, images from variables.
    assert!(has("postgres", "\"pg_isready\", \"-U\", \"claw\""));
    // Redis: the password from the mounted config into REDISCLI_AUTH (builtins), never on a command line.
    assert!(has(
        "redis",
        "done < /usr/local/etc/redis/redis.conf; [ \\\"$$(redis-cli ping)\\\" = PONG ]"
    ));
    assert!(has(
        "redis",
        "command: [\"redis-server\", \"/usr/local/etc/redis/redis.conf\"]"
    ));
    assert!(has(
        "redis",
        "- \"/opt/claw-ai/private/redis:/usr/local/etc/redis:ro\""
    ));
    assert!(has("backend", "http://127.0.0.1:8000/health"));
    assert!(has(
        "nginx",
        "[\"CMD\",\"curl\",\"-fsS\",\"-o\",\"/dev/null\",\"http://127.0.0.1/nginx-health\"]"
    ));
    for svc in ["postgres", "redis", "backend", "nginx"] {
        assert!(has(svc, "restart: unless-stopped"), "{svc}");
        assert!(has(svc, "logging: *logging"), "{svc}");
        assert!(has(svc, "healthcheck:"), "{svc}");
        assert!(has(svc, "no-new-privileges:true"), "{svc}");
    }
    // The official images, pinned (the same tags as templates/claw-ai/contract.toml).
    for (svc, image) in [
        ("postgres", "postgres:15.19-bookworm"),
        ("redis", "redis:7.4.11-bookworm"),
        ("nginx", "nginx:1.30.5-alpine"),
    ] {
        assert!(has(svc, &format!("image: \"{image}\"")), "{svc}");
    }
    assert!(
        c.contains("driver: json-file")
            && c.contains("max-size: \"10m\"")
            && c.contains("max-file: \"3\"")
    );
    // PostgreSQL and Redis start as root: their entrypoints step down to the image's own user.
    for svc in ["postgres", "redis"] {
        assert!(
            !service(c, svc).iter().any(|l| l.starts_with("    user:")),
            "{svc}"
        );
    }
    assert!(has("backend", "user: \"10001:10001\""));
    assert!(c.contains("volumes:\n  postgres_data: {}\n  redis_data: {}\n"));
    assert!(has("postgres", "- postgres_data:/var/lib/postgresql/data"));
    assert!(has("redis", "- redis_data:/data"));
    // Config mounted as directories, never as single files.
    assert!(has(
        "nginx",
        "- \"/opt/claw-ai/nginx/conf:/etc/nginx/claw-ai:ro\""
    ));
    assert!(has("nginx", "\"-c\", \"/etc/nginx/claw-ai/nginx.conf\""));
    assert!(!c.contains("nginx.conf:"), "no single-file mount");
    assert!(!c.contains("redis.conf:"), "no single-file mount");
    assert!(has("backend", "- \"/opt/claw-ai/logs:/var/log/claw-ai\""));

    let img = render(
        INVENTORY,
        "web-1",
        &[
            ("backend_image", "registry.example/claw/backend:1.4.2"),
            ("backend_publish", "yes"),
        ],
    );
    let c2 = img.text(COMPOSE);
    assert!(c2.contains("image: \"registry.example/claw/backend:1.4.2\""));
    assert!(
        service(c2, "backend")
            .iter()
            .any(|l| l.contains("- \"8000:8000\""))
    );
}

#[test]
fn resource_limits_per_service() {
    // The defaults: every service ends with its deploy.resources.limits.
    let r = render(INVENTORY, "web-1", &[]);
    let c = r.text(COMPOSE);
    for (svc, cpus, memory) in [
        ("postgres", "1.0", "512m"),
        ("redis", "0.5", "256m"),
        ("backend", "1.0", "512m"),
        ("nginx", "0.5", "128m"),
    ] {
        let deploy: Vec<String> = key_block(&service(c, svc), "deploy")
            .iter()
            .map(|l| l.trim().to_string())
            .collect();
        assert_eq!(
            deploy,
            [
                "deploy:".to_string(),
                "resources:".into(),
                "limits:".into(),
                format!("cpus: \"{cpus}\""),
                format!("memory: \"{memory}\""),
            ],
            "{svc}"
        );
    }
    // Overrides (-e values are strings, inventory values may be numbers); "" leaves a limit out, both
    // empty leave the block out.
    let r = render(
        INVENTORY,
        "web-1",
        &[
            ("postgres_cpus", "2"),
            ("postgres_memory", "1G"),
            ("redis_cpus", ""),
            ("nginx_cpus", ""),
            ("nginx_memory", ""),
        ],
    );
    let c = r.text(COMPOSE);
    let deploy = |svc: &str| key_block(&service(c, svc), "deploy").join("\n");
    assert!(
        deploy("postgres").contains("cpus: \"2\"") && deploy("postgres").contains("memory: \"1G\"")
    );
    assert!(!deploy("redis").contains("cpus") && deploy("redis").contains("memory: \"256m\""));
    assert_eq!(deploy("nginx"), "", "no limits, no deploy block");
    let inv = INVENTORY.replace(
        "user = \"deploy\"\n",
        "user = \"deploy\"\nvars = { backend_cpus = 1.5, backend_memory = \"768m\" }\n",
    );
    let r = render(&inv, "web-1", &[]);
    assert!(
        key_block(&service(r.text(COMPOSE), "backend"), "deploy")
            .join("\n")
            .contains("cpus: \"1.5\"")
    );

    // Bad values: an error naming the variable and the value; nothing rendered.
    for (var, value, want) in [
        (
            "postgres_cpus",
            "two",
            "postgres_cpus = `two` is not a number of CPUs",
        ),
        (
            "redis_cpus",
            "-1",
            "redis_cpus = `-1` is not a number of CPUs",
        ),
        (
            "backend_cpus",
            "0.0",
            "backend_cpus = `0.0` must be more than 0",
        ),
        (
            "nginx_memory",
            "128 MB",
            "nginx_memory = `128 MB` is not a size",
        ),
        (
            "redis_memory",
            "4m",
            "redis_memory = `4m` is less than Docker's minimum of 6m",
        ),
        (
            "postgres_memory",
            "1000",
            "postgres_memory = `1000` is less than Docker's minimum",
        ),
    ] {
        let e = render_with(
            INVENTORY,
            "web-1",
            "systemd",
            secrets_json(SECRETS),
            &[(var, value)],
        )
        .unwrap_err();
        assert!(e.contains(want), "{var}={value}: {e}");
        assert!(e.contains("compose file"), "{e}");
    }
}

#[test]
fn secrets_are_written_once_and_only_to_the_env_file() {
    let r = render(INVENTORY, "web-1", &[]);
    let env = r.files.get(ENV).expect(".env step");
    assert_eq!(env.mode, Some(0o600));
    assert!(env.sensitive, ".env must be sensitive (no diff shown)");
    // The Redis password is also in redis.conf (0600, sensitive, the image's redis uid): Redis reads no
    // environment.
    let rc = r.files.get(REDIS_CONF).expect("redis.conf step");
    assert_eq!(rc.mode, Some(0o600));
    assert!(rc.sensitive, "redis.conf must be sensitive");
    assert_eq!(
        (rc.owner.as_deref(), rc.group.as_deref()),
        (Some("999"), Some("999"))
    );
    assert!(
        rc.content
            .contains(&format!("\nrequirepass \"{}\"\n", SECRETS[1].2))
            && rc.content.contains("\nappendonly yes\n"),
        "{}",
        rc.content
    );
    for (_, var, value) in SECRETS {
        assert_eq!(count(&env.content, value), 1, "{var} once in .env");
        assert!(
            env.content.contains(&format!("\n{var}='{value}'\n")),
            "{var} line"
        );
        for (path, f) in &r.files {
            let allowed = path == ENV || (path == REDIS_CONF && *var == "REDIS_PASSWORD");
            if !allowed {
                assert!(!f.content.contains(value), "{var} leaked into {path}");
            }
        }
    }
    // Only the secrets: every non-comment line is one of them.
    let lines: Vec<&str> = env
        .content
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(lines.len(), SECRETS.len(), "{lines:?}");
    // The compose file refers to each by name; interpolation fails loudly when .env lacks one.
    let c = r.text(COMPOSE);
    for var in ["POSTGRES_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY"] {
        assert!(c.contains(&format!("${{{var}:?{var} is not set in .env}}")));
    }
    for var in ["ZHIPUAI_API_KEY", "PINECONE_API_KEY"] {
        assert!(c.contains(&format!("${{{var}?{var} is not set in .env}}")));
    }
    // PostgreSQL gets its own password only; Redis none (it reads its password from redis.conf).
    let pg = service(c, "postgres").join("\n");
    for v in [
        "REDIS_PASSWORD",
        "SECRET_KEY",
        "ZHIPUAI_API_KEY",
        "PINECONE_API_KEY",
    ] {
        assert!(!pg.contains(v), "postgres gets {v}");
    }
    let rd: Vec<&str> = service(c, "redis")
        .into_iter()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let rd = rd.join("\n");
    for (_, v, _) in SECRETS {
        assert!(!rd.contains(v), "redis gets {v}");
    }
    assert!(key_block(&service(c, "redis"), "environment").is_empty());

    // A Redis password redis.conf cannot hold as one word is refused, without showing it.
    let mut bad: Vec<(&str, &str, &str)> = SECRETS.to_vec();
    bad[1].2 = "rd pw\"with-space";
    let e = render_with(INVENTORY, "web-1", "systemd", secrets_json(&bad), &[]).unwrap_err();
    assert!(e.contains("redis password"), "{e}");
    assert!(!e.contains("rd pw"), "the error shows the secret: {e}");
    assert!(!c.contains("env_file"), "no service gets the whole .env");

    // A value .env cannot hold is refused, and the error does not show it.
    let mut bad: Vec<(&str, &str, &str)> = SECRETS.to_vec();
    bad[4].2 = "pc'sk-quote-in-it";
    let e = render_with(INVENTORY, "web-1", "systemd", secrets_json(&bad), &[]).unwrap_err();
    assert!(
        e.contains("PINECONE_API_KEY") && e.contains("single quote"),
        "{e}"
    );
    assert!(!e.contains("pc'sk"), "the error shows the secret: {e}");
}

#[test]
fn steps_directories_and_conditions() {
    let r = render(INVENTORY, "web-1", &[]);
    assert_eq!(r.files[BACKUP].mode, Some(0o750));
    assert_eq!(r.files[NGINX_CONF].mode, Some(0o644));
    assert_eq!(r.files[LOGROTATE].mode, Some(0o644));
    assert_eq!(
        r.dirs["/opt/claw-ai/backups"],
        (Some(0o700), Some("root".into()))
    );
    assert_eq!(
        r.dirs["/opt/claw-ai/nginx/ssl"],
        (Some(0o700), Some("root".into()))
    );
    assert_eq!(
        r.dirs["/opt/claw-ai/logs"],
        (Some(0o750), Some("claw-app".into()))
    );
    for d in [
        "/opt/claw-ai",
        "/opt/claw-ai/nginx/conf",
        "/opt/claw-ai/nginx/logs",
    ] {
        assert!(r.dirs.contains_key(d), "{d}");
    }
    let cron = r.text(CRON);
    assert!(
        cron.ends_with(
            "30 3 * * * root /opt/claw-ai/backup.sh all && /opt/claw-ai/backup.sh prune\n"
        ),
        "{cron}"
    );
    // Without `backend_repo` in the inventory, the checkout of the backend is skipped.
    const GIT: [&str; 4] = [
        "ssh directory of root",
        "deploy key",
        "git server host key",
        "backend code",
    ];
    // Without `docker_repo_url`, Docker comes from the distribution's packages.
    assert_eq!(r.skipped[0], "docker repository");
    assert_eq!(r.skipped[1..=GIT.len()], GIT);
    // Without `ship_images`, the images come from a registry (compose pulls the missing ones);
    // without `backend_build`, the backend image is used as it is.
    const SHIP: [&str; 5] = [
        "postgres image",
        "redis image",
        "backend image",
        "nginx image",
        "backend image build",
    ];
    assert_eq!(r.skipped[GIT.len() + 1..], SHIP);
    // A host without systemd (light lab host) skips what needs Docker.
    let light = render_with(INVENTORY, "web-1", "sysvinit", secrets_json(SECRETS), &[]).unwrap();
    assert_eq!(light.skipped[0], "docker repository");
    assert_eq!(light.skipped[1..=GIT.len()], GIT);
    assert_eq!(
        light.skipped[GIT.len() + 1..],
        [
            "backup cron entry",
            "docker config directory",
            "docker daemon config",
            "docker packages",
            "docker daemon",
            "postgres image",
            "redis image",
            "backend image",
            "nginx image",
            "backend image build",
            "stack",
            "health through nginx",
        ]
    );
    assert!(!light.files.contains_key(CRON));

    let b = r.text(BACKUP);
    assert!(b.starts_with("#!/bin/sh\n"));
    assert!(
        b.contains("pg_dump -U \"$PG_USER\" -d \"$PG_DB\"") && b.contains("| gzip -c >\"$tmp\"")
    );
    assert!(b.contains("BACKUP_DIR='/opt/claw-ai/backups'") && b.contains("KEEP_DAYS='30'"));

    let l = r.text(LOGROTATE);
    assert!(
        l.contains("/opt/claw-ai/nginx/logs/*.log {") && l.contains("/opt/claw-ai/logs/*.log {")
    );
    assert!(l.contains("su claw-app claw-app"));
}

/// backup.sh: `docker compose` gets the deployment's env file (the compose file's `${VAR:?}` need it),
/// whatever env_file names; backup_keep_days must be a positive whole number.
#[test]
fn backup_script_takes_env_file_and_checks_keep_days() {
    let r = render(INVENTORY, "web-1", &[("env_file", "/srv/claw env/.env")]);
    let b = r.text(BACKUP);
    assert!(b.contains("\nENV_FILE='/srv/claw env/.env'\n"), "{b}");
    let dc = b
        .lines()
        .find(|l| l.starts_with("dc() {"))
        .expect("dc() in backup.sh");
    assert!(dc.contains(" --env-file \"$ENV_FILE\" "), "{dc}");
    let r = render(INVENTORY, "web-1", &[("backup_keep_days", "7")]);
    assert!(r.text(BACKUP).contains("\nKEEP_DAYS='7'\n"));
    for bad in ["0", "-1", "7d", "", "1.5", "30; rm -rf /"] {
        let e = render_with(
            INVENTORY,
            "web-1",
            "systemd",
            secrets_json(SECRETS),
            &[("backup_keep_days", bad)],
        )
        .map(|_| ())
        .unwrap_err();
        assert!(
            e.contains(&format!("backup_keep_days = `{bad}`"))
                && e.contains("not a positive whole number"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn an_empty_backend_group_is_refused() {
    let inv = INVENTORY.replace("groups = [\"backend\"]", "groups = [\"edge\"]");
    let e = render_with(&inv, "lb-1", "systemd", secrets_json(SECRETS), &[]).unwrap_err();
    assert!(e.contains("backend") && e.contains("has no hosts"), "{e}");
}

// ------------------------------------------------------------------------------------- lab tests

/// An inventory of the lab's hosts, all in the backend group.
/// backend_build: the pip mirror and the build args reach `docker build` as build args (the trusted host
/// derived from an http:// mirror); a mirror URL or build arg with credentials is refused before anything
/// runs, naming the variable and not showing the value; so are a bad build arg name and a non-table.
#[test]
fn backend_build_args_and_a_credentialed_pip_mirror_is_refused() {
    let key = format!("{}/privkey.pem", tls_dir());
    let build = [
        ("backend_build", "true"),
        ("backend_repo", "git@git.example:/srv/git/backend.git"),
        ("backend_ref", "v1"),
        ("deploy_key_src", key.as_str()),
        ("git_known_hosts", "git.example ssh-ed25519 AAAA"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut all = build.to_vec();
        all.extend_from_slice(extra);
        render_with(INVENTORY, "web-1", "systemd", secrets_json(SECRETS), &all)
    };
    let r = with(&[("pip_index_url", "http://pypi.mirror.example:8080/simple/")]).unwrap();
    let run = &r.commands["backend image build"];
    for want in [
        "--build-arg 'PIP_INDEX_URL=http://pypi.mirror.example:8080/simple/'",
        "--build-arg 'PIP_TRUSTED_HOST=pypi.mirror.example'",
        "--build-arg GIT_COMMIT=\"$rev\"",
        "DOCKER_BUILDKIT=0 docker build",
        "--label \"claw-ai.revision=$rev\"",
    ] {
        assert!(run.contains(want), "{want} in\n{run}");
    }
    // https: no trusted host; none at all without a mirror (the Dockerfile's default index).
    let r = with(&[("pip_index_url", "https://pypi.mirror.example/simple/")]).unwrap();
    assert!(!r.commands["backend image build"].contains("PIP_TRUSTED_HOST"));
    let r = with(&[]).unwrap();
    assert!(!r.commands["backend image build"].contains("PIP_INDEX_URL"));
    for (url, secret) in [
        (
            "https://deploy:pw-7a1c99@pypi.mirror.example/simple/",
            "pw-7a1c99",
        ),
        ("http://tok-55e0b2@10.0.0.5/simple/", "tok-55e0b2"),
    ] {
        let e = with(&[("pip_index_url", url)]).unwrap_err();
        assert!(
            e.contains("backend image build")
                && e.contains("pip_index_url")
                && e.contains("credentials"),
            "{e}"
        );
        assert!(!e.contains(secret), "the credentials are shown: {e}");
    }
    let e = with(&[("backend_build_args", "A=1")]).unwrap_err();
    assert!(e.contains("backend_build_args must be a table"), "{e}");
    let e = with(&[("backend_commit_arg", "NOT A NAME")]).unwrap_err();
    assert!(e.contains("backend_commit_arg"), "{e}");
}

fn lab_inventory(lab: &Lab) -> String {
    let mut s = String::from("[defaults]\nuser = \"claw\"\n\n[groups.backend]\n");
    for h in lab.hosts() {
        s.push_str(&format!(
            "\n[hosts.{}]\naddress = {:?}\ngroups = [\"backend\"]\n",
            h.name, h.address
        ));
    }
    s
}

/// Writes a rendered file to a host as root (content on stdin), with its mode.
fn put(lab: &Lab, host: &str, path: &str, content: &[u8], mode: &str) {
    let dir = Path::new(path).parent().unwrap().display().to_string();
    ok(
        lab.ssh_input(
            host,
            &format!("sudo mkdir -p {dir} && sudo install -m {mode} /dev/stdin {path}"),
            content,
        ),
        &format!("upload {path}"),
    );
}

#[test]
fn rendered_stack_passes_nginx_t_and_compose_config_on_a_full_host() {
    let lab = Lab::up_full("f-clawai", 1);
    // Docker and Compose from the lab's signed mirror; the daemon started.
    lab.add_lab_mirror("h1");
    lab.install_docker("h1", "docker.io docker-compose");

    // The lab nginx image (the only one `nginx -t` needs); the stack's tags as image variables.
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
    let tar = std::fs::read(images["nginx"]["tar"].as_str().unwrap()).unwrap();
    ok(
        lab.ssh_input("h1", "sudo docker load", &tar),
        "docker load nginx",
    );

    let (pg, rd, be, ng) = (tag("postgres"), tag("redis"), tag("backend"), tag("nginx"));
    let r = render(
        &lab_inventory(&lab),
        "h1",
        &[
            ("postgres_image", &pg),
            ("redis_image", &rd),
            ("backend_image", &be),
            ("nginx_image", &ng),
            ("server_name", "claw-ai.test"),
        ],
    );
    for (path, f) in &r.files {
        if path.starts_with("/opt/claw-ai/") {
            let mode = format!("{:o}", f.mode.unwrap_or(0o644));
            put(&lab, "h1", path, f.content.as_bytes(), &mode);
        }
    }
    ok(
        lab.ssh(
            "h1",
            "sudo install -d -m 0755 /opt/claw-ai/nginx/logs /opt/claw-ai/logs && sudo install -d -m 0700 /opt/claw-ai/nginx/ssl /opt/claw-ai/backups",
        ),
        "directories",
    );

    // A self-signed certificate, made here.
    let tmp = tempfile::tempdir().unwrap();
    ok(
        std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=claw-ai.test"])
            .arg("-keyout")
            .arg(tmp.path().join("privkey.pem"))
            .arg("-out")
            .arg(tmp.path().join("fullchain.pem"))
            .output()
            .unwrap(),
        "openssl req",
    );
    for (name, mode) in [("fullchain.pem", "644"), ("privkey.pem", "600")] {
        let data = std::fs::read(tmp.path().join(name)).unwrap();
        put(
            &lab,
            "h1",
            &format!("/opt/claw-ai/nginx/ssl/{name}"),
            &data,
            mode,
        );
    }

    // The compose file is valid with the .env beside it, and says what the pure tests read in it.
    ok(
        lab.ssh(
            "h1",
            &format!("cd / && sudo docker compose -f {COMPOSE} --env-file {ENV} config -q"),
        ),
        "docker compose config -q",
    );
    let cfg: Value = serde_json::from_str(&ok(
        lab.ssh(
            "h1",
            &format!("sudo docker compose -f {COMPOSE} --env-file {ENV} config --format json"),
        ),
        "docker compose config --format json",
    ))
    .expect("compose config JSON");
    assert_eq!(cfg["name"], "claw-ai");
    assert_eq!(cfg["networks"]["backend"]["internal"], true);
    let nets = |svc: &str| -> Vec<String> {
        let mut n: Vec<String> = cfg["services"][svc]["networks"]
            .as_object()
            .unwrap_or_else(|| panic!("networks of {svc}"))
            .keys()
            .cloned()
            .collect();
        n.sort();
        n
    };
    assert_eq!(nets("postgres"), ["backend"]);
    assert_eq!(nets("redis"), ["backend"]);
    assert_eq!(nets("backend"), ["backend", "frontend"]);
    assert_eq!(nets("nginx"), ["frontend", "public"]);
    for svc in ["postgres", "redis", "backend"] {
        assert!(
            cfg["services"][svc].get("ports").is_none(),
            "{svc} publishes a port"
        );
    }
    assert_eq!(
        cfg["services"]["nginx"]["ports"].as_array().unwrap().len(),
        2
    );
    assert_eq!(cfg["services"]["nginx"]["image"], ng.as_str());
    // Interpolation reached the containers' environment (values compared, never printed).
    for (_, var, value) in SECRETS {
        let got = cfg["services"]["backend"]["environment"][*var].as_str();
        assert!(got == Some(*value), "backend's {var} is not the .env value");
    }
    assert!(
        cfg["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].as_str()
            == Some(SECRETS[0].2)
    );
    assert!(
        cfg["services"]["redis"].get("environment").is_none(),
        "redis reads no environment"
    );

    // nginx -t in the lab nginx image, with the mounts and command of the compose file's nginx service.
    let t = lab.ssh(
        "h1",
        &format!(
            "sudo docker compose -f {COMPOSE} --env-file {ENV} run --rm --no-deps -T nginx \
             nginx -t -c /etc/nginx/claw-ai/nginx.conf 2>&1"
        ),
    );
    let out = ok(t, "nginx -t");
    assert!(
        out.contains("syntax is ok") && out.contains("test is successful"),
        "{out}"
    );

    // Scripts parse.
    ok(
        lab.ssh("h1", &format!("sudo sh -n {BACKUP}")),
        "sh -n backup.sh",
    );
}

#[test]
fn backup_retention_as_the_cron_entry_runs_it() {
    let lab = Lab::up("t-clawai-prune", 1);
    let r = render(&lab_inventory(&lab), "h1", &[]);
    put(&lab, "h1", BACKUP, r.text(BACKUP).as_bytes(), "750");

    // The retention command, exactly as the cron entry runs it (after a good dump).
    let cron = r.text(CRON);
    let entry = cron.lines().last().unwrap();
    let path_env = cron
        .lines()
        .find(|l| l.starts_with("PATH="))
        .expect("PATH in the cron entry");
    let command = entry.splitn(7, ' ').nth(6).expect("cron command");
    let prune = command
        .split(" && ")
        .find(|c| c.ends_with(" prune"))
        .expect("a prune command in the cron entry");
    assert_eq!(prune, "/opt/claw-ai/backup.sh prune");

    let d = "/opt/claw-ai/backups";
    let make = format!(
        "install -d -m 0700 {d} && cd {d} && \
         touch -d '31 days ago' claw-ai-20260101T033000Z.sql.gz && \
         touch -d '29 days ago' claw-ai-20260103T033000Z.sql.gz && \
         touch claw-ai-20260201T033000Z.sql.gz && \
         touch -d '45 days ago' notes.txt && \
         touch -d '2 days ago' .claw-ai-20260130T033000Z.sql.gz.part && \
         touch -d '1 hour ago' .claw-ai-20260201T033000Z.sql.gz.part && \
         touch -d '31 days ago' claw-ai-redis-20260101T033000Z.tar.gz claw-ai-secrets-20260101T033000Z.tar.gz && \
         touch -d '29 days ago' claw-ai-redis-20260103T033000Z.tar.gz claw-ai-secrets-20260103T033000Z.tar.gz && \
         touch claw-ai-redis-20260201T033000Z.tar.gz claw-ai-secrets-20260201T033000Z.tar.gz && \
         ln -s claw-ai-20260201T033000Z.sql.gz latest.sql.gz && \
         ln -s claw-ai-redis-20260201T033000Z.tar.gz latest-redis.tar.gz && \
         ln -s claw-ai-secrets-20260201T033000Z.tar.gz latest-secrets.tar.gz && \
         touch -d '45 days ago' redis-notes.tar.gz && \
         touch -d '2 days ago' .claw-ai-redis-20260130T033000Z.tar.gz.part && \
         mkdir .claw-ai-redis-20260130T033000Z.d && touch .claw-ai-redis-20260130T033000Z.d/dump.rdb && \
         touch -d '2 days ago' .claw-ai-redis-20260130T033000Z.d && \
         mkdir .claw-ai-redis-20260201T033000Z.d && touch -d '1 hour ago' .claw-ai-redis-20260201T033000Z.d"
    );
    ok(
        lab.ssh(
            "h1",
            &format!("sudo sh -c {}", claw_provision::quote::quote(&make)),
        ),
        "dumps",
    );
    let out = ok(
        lab.ssh(
            "h1",
            &format!(
                "sudo env -i {path_env} sh -c {}",
                claw_provision::quote::quote(prune)
            ),
        ),
        "prune",
    );
    let left = ok(lab.ssh("h1", &format!("sudo ls -A {d}")), "ls");
    let mut left: Vec<&str> = left.lines().collect();
    left.sort();
    assert_eq!(
        left,
        [
            ".claw-ai-20260201T033000Z.sql.gz.part",
            ".claw-ai-redis-20260201T033000Z.d",
            "claw-ai-20260103T033000Z.sql.gz",
            "claw-ai-20260201T033000Z.sql.gz",
            "claw-ai-redis-20260103T033000Z.tar.gz",
            "claw-ai-redis-20260201T033000Z.tar.gz",
            "claw-ai-secrets-20260103T033000Z.tar.gz",
            "claw-ai-secrets-20260201T033000Z.tar.gz",
            "latest-redis.tar.gz",
            "latest-secrets.tar.gz",
            "latest.sql.gz",
            "notes.txt",
            "redis-notes.tar.gz",
        ],
        "prune printed:\n{out}"
    );
    let mut removed: Vec<&str> = out
        .lines()
        .map(|l| l.strip_prefix(&format!("{d}/")).unwrap_or(l))
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        [
            ".claw-ai-20260130T033000Z.sql.gz.part",
            ".claw-ai-redis-20260130T033000Z.d",
            ".claw-ai-redis-20260130T033000Z.tar.gz.part",
            "claw-ai-20260101T033000Z.sql.gz",
            "claw-ai-redis-20260101T033000Z.tar.gz",
            "claw-ai-secrets-20260101T033000Z.tar.gz",
        ],
        "{out}"
    );
    // The directory stays 0700 (files made in it by backup.sh are 0600: its umask is 077).
    assert_eq!(
        ok(lab.ssh("h1", &format!("sudo stat -c %a {d}")), "stat").trim(),
        "700"
    );
    assert!(r.text(BACKUP).contains("\numask 077\n"));
    // Again: nothing more to remove.
    let again = ok(
        lab.ssh(
            "h1",
            &format!("sudo sh -c {}", claw_provision::quote::quote(prune)),
        ),
        "prune again",
    );
    assert_eq!(again, "");
}

#[test]
fn secrets_archive_and_restore_without_docker() {
    // backup.sh secrets / restore-secrets need no Docker: a light host runs them as root.
    let lab = Lab::up("t-clawai-secrets", 1);
    let r = render(&lab_inventory(&lab), "h1", &[]);
    put(&lab, "h1", BACKUP, r.text(BACKUP).as_bytes(), "750");
    let sh = |cmd: &str, what: &str| {
        ok(
            lab.ssh(
                "h1",
                &format!("sudo sh -c {}", claw_provision::quote::quote(cmd)),
            ),
            what,
        )
    };
    sh(
        "install -d -m 0700 /opt/claw-ai/backups /opt/claw-ai/.secrets && cd /opt/claw-ai/.secrets && \
         printf 'pg-7e1f' >postgres_password && printf 'rd-90ab' >redis_password && \
         printf 'sk-c4d2' >secret_key && chmod 0600 *",
        "secrets",
    );
    let out = sh(&format!("{BACKUP} secrets"), "backup.sh secrets");
    let archive = out.trim();
    assert!(
        archive.starts_with("/opt/claw-ai/backups/claw-ai-secrets-")
            && archive.ends_with(".tar.gz"),
        "{out}"
    );
    let name = archive.rsplit('/').next().unwrap();
    // 0600 in the 0700 directory; the archive keeps the modes and owners; latest points at it.
    assert_eq!(
        sh(
            &format!(
                "stat -c '%a %U' /opt/claw-ai/backups {archive}; readlink /opt/claw-ai/backups/latest-secrets.tar.gz"
            ),
            "stat"
        ),
        format!("700 root\n600 root\n{name}\n")
    );
    let listing = sh(&format!("tar -tvzf {archive}"), "tar -tv");
    let mut entries: Vec<(String, String)> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[5].to_string())
        })
        .collect();
    entries.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        entries,
        [
            ("drwx------", ".secrets/"),
            ("-rw-------", ".secrets/postgres_password"),
            ("-rw-------", ".secrets/redis_password"),
            ("-rw-------", ".secrets/secret_key"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string())),
        "{listing}"
    );
    // Owned by root (numeric: restored by number wherever it is unpacked).
    assert!(
        listing
            .lines()
            .all(|l| l.split_whitespace().nth(1) == Some("0/0")),
        "{listing}"
    );

    // Lost and changed: restore-secrets puts them back, 0600 root in a 0700 directory.
    sh(
        "rm /opt/claw-ai/.secrets/postgres_password && printf 'other' >/opt/claw-ai/.secrets/secret_key && \
         chmod 0644 /opt/claw-ai/.secrets/redis_password /opt/claw-ai/.secrets/secret_key && chmod 0755 /opt/claw-ai/.secrets",
        "damage",
    );
    let out = sh(
        &format!("{BACKUP} restore-secrets {name} 2>&1"),
        "restore-secrets",
    );
    assert!(out.contains("secret postgres_password restored"), "{out}");
    assert!(out.contains("secret secret_key restored"), "{out}");
    assert!(out.contains("secret redis_password unchanged"), "{out}");
    assert!(
        !out.contains("pg-7e1f") && !out.contains("sk-c4d2"),
        "a value shown: {out}"
    );
    assert_eq!(
        sh(
            "cd /opt/claw-ai/.secrets && stat -c '%a %U %G %n' . * && cat postgres_password secret_key",
            "restored"
        ),
        "700 root root .\n600 root root postgres_password\n600 root root redis_password\n600 root root secret_key\npg-7e1fsk-c4d2"
    );
    assert!(
        sh("ls -A /opt/claw-ai/backups", "ls")
            .lines()
            .all(|l| !l.contains("restore")),
        "no staging left"
    );

    // An archive with anything but files under .secrets/ changes nothing.
    for (what, make) in [
        (
            "outside",
            "mkdir -p /tmp/evil/.secrets && echo x >/tmp/evil/owned && tar -C /tmp/evil -czf /tmp/evil.tar.gz .secrets owned",
        ),
        (
            "a link",
            "mkdir -p /tmp/evil/.secrets && ln -sf /etc/shadow /tmp/evil/.secrets/secret_key && tar -C /tmp/evil -czf /tmp/evil.tar.gz .secrets",
        ),
        ("not gzip", "echo nothing >/tmp/evil.tar.gz"),
    ] {
        sh(
            &format!("rm -rf /tmp/evil /tmp/evil.tar.gz && {make}"),
            what,
        );
        let o = lab.ssh(
            "h1",
            &format!("sudo {BACKUP} restore-secrets /tmp/evil.tar.gz"),
        );
        assert!(!o.status.success(), "{what} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("nothing changed"), "{what}: {err}");
        assert_eq!(
            sh(
                "cd /opt/claw-ai/.secrets && stat -c '%F %n' * && cat secret_key",
                "unchanged"
            ),
            "regular file postgres_password\nregular file redis_password\nregular file secret_key\nsk-c4d2",
            "{what}"
        );
    }
    assert!(
        !lab.ssh("h1", &format!("sudo {BACKUP} restore-secrets ../x"))
            .status
            .success()
    );

    // latest-secrets.tar.gz (a link beside the archives) names the newest; a link given as a path is
    // refused; a secret that is a link is never written through (and nothing changes).
    let out = sh(
        &format!("{BACKUP} restore-secrets latest-secrets.tar.gz 2>&1"),
        "restore latest",
    );
    assert!(
        out.contains(&format!("from /opt/claw-ai/backups/{name}")),
        "{out}"
    );
    for (what, make, arg) in [
        (
            "a link to the archive",
            format!("ln -sf {archive} /tmp/evil.tar.gz"),
            "/tmp/evil.tar.gz",
        ),
        (
            "a secret that is a link",
            "echo keep >/tmp/victim && printf other >/opt/claw-ai/.secrets/postgres_password && \
             ln -sf /tmp/victim /opt/claw-ai/.secrets/secret_key"
                .to_string(),
            name,
        ),
    ] {
        sh(&format!("rm -rf /tmp/evil.tar.gz && {make}"), what);
        let o = lab.ssh("h1", &format!("sudo {BACKUP} restore-secrets {arg}"));
        assert!(!o.status.success(), "{what} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("nothing changed"), "{what}: {err}");
    }
    assert_eq!(
        sh(
            "cat /tmp/victim /opt/claw-ai/.secrets/postgres_password",
            "victim"
        ),
        "keep\nother",
        "written through a link, or changed"
    );
    assert!(
        sh("ls -A /opt/claw-ai/backups", "ls")
            .lines()
            .all(|l| !l.contains("restore")),
        "no staging left"
    );
}

/// restore-redis around a failing swap, with a stand-in `docker` (this light host has none) that
/// answers for the redis service: the old data comes back, Redis is started again, the exit fails.
#[test]
fn redis_restore_puts_the_old_data_back_on_failure() {
    let lab = Lab::up("t-clawai-rredis", 1);
    let r = render(&lab_inventory(&lab), "h1", &[]);
    put(&lab, "h1", BACKUP, r.text(BACKUP).as_bytes(), "750");
    let sh = |cmd: &str, what: &str| {
        ok(
            lab.ssh(
                "h1",
                &format!("sudo sh -c {}", claw_provision::quote::quote(cmd)),
            ),
            what,
        )
    };
    let fake = r#"#!/bin/sh
for a; do last=$a; done
case "$*" in
*" ps -a -q redis"|*" ps -q redis") echo c0ffee ;;
"inspect "*) echo /tmp/rdata ;;
*" stop redis") echo stop >>/tmp/dlog ;;
*" start redis") echo start >>/tmp/dlog ;;
*" exec -T redis "*) case $last in PING) echo PONG ;; DBSIZE) echo 1 ;; esac ;;
*) echo "fake docker: $*" >&2; exit 1 ;;
esac
"#;
    // mv fails (once /tmp/mvfail exists) for the archive's appendonlydir moving into place.
    let mv = r#"#!/bin/sh
[ ! -e /tmp/mvfail ] || case "$2" in */.claw-ai-restore-new/appendonlydir) exit 1 ;; esac
exec /bin/mv "$@"
"#;
    put(&lab, "h1", "/tmp/fake/docker", fake.as_bytes(), "755");
    put(&lab, "h1", "/tmp/fake/mv", mv.as_bytes(), "755");
    sh(
        "install -d -m 0700 /opt/claw-ai/backups && rm -rf /tmp/rdata /tmp/new /tmp/dlog /tmp/mvfail && \
         mkdir -p /tmp/rdata/appendonlydir /tmp/new/appendonlydir && echo old >/tmp/rdata/dump.rdb && \
         echo old >/tmp/rdata/appendonlydir/a.aof && echo new >/tmp/new/dump.rdb && \
         echo new >/tmp/new/appendonlydir/a.aof && \
         tar -C /tmp/new -czf /opt/claw-ai/backups/claw-ai-redis-20260201T033000Z.tar.gz .",
        "data",
    );
    let run = format!(
        "sudo env PATH=/tmp/fake:/usr/sbin:/usr/bin:/sbin:/bin {BACKUP} restore-redis claw-ai-redis-20260201T033000Z.tar.gz"
    );
    let state = || {
        sh(
            "cd /tmp/rdata && ls -A && cat dump.rdb appendonlydir/a.aof && cat /tmp/dlog",
            "state",
        )
    };
    sh("touch /tmp/mvfail", "mvfail");
    let o = lab.ssh("h1", &run);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a failed swap succeeded: {err}");
    assert!(err.contains("the old data is back"), "{err}");
    assert_eq!(
        state(),
        "appendonlydir\ndump.rdb\nold\nold\nstop\nstart\n",
        "{err}"
    );

    sh("rm /tmp/mvfail /tmp/dlog", "mvfail");
    let o = lab.ssh("h1", &run);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        state(),
        "appendonlydir\ndump.rdb\nnew\nnew\nstop\nstart\n",
        "{err}"
    );
    assert!(
        sh("ls -A /opt/claw-ai/backups", "ls")
            .lines()
            .all(|l| !l.contains("restore")),
        "no staging left"
    );
}

#[test]
fn logrotate_entry_rotates_nginx_and_app_logs() {
    let lab = Lab::up("t-clawai-rotate", 1);
    let r = render(&lab_inventory(&lab), "h1", &[]);
    put(&lab, "h1", LOGROTATE, r.text(LOGROTATE).as_bytes(), "644");
    ok(
        lab.ssh(
            "h1",
            "sudo groupadd --system --gid 10001 claw-app && \
             sudo useradd --system --uid 10001 --gid claw-app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin claw-app && \
             sudo install -d -m 0755 /opt/claw-ai/nginx/logs && \
             sudo install -d -m 0750 -o claw-app -g claw-app /opt/claw-ai/logs && \
             echo 'GET /' | sudo tee /opt/claw-ai/nginx/logs/access.log >/dev/null && \
             echo 'started' | sudo -u claw-app tee /opt/claw-ai/logs/app.log >/dev/null",
        ),
        "logs",
    );
    // Dry run: the file parses and both patterns are found.
    let dry = ok(
        lab.ssh(
            "h1",
            &format!("sudo logrotate -d -s /tmp/logrotate.status {LOGROTATE} 2>&1"),
        ),
        "logrotate -d",
    );
    assert!(!dry.to_lowercase().contains("error"), "{dry}");
    assert!(dry.contains("/opt/claw-ai/nginx/logs/*.log"), "{dry}");
    assert!(dry.contains("/opt/claw-ai/logs/*.log"), "{dry}");
    // A forced run: nginx's log renamed (no Docker here: the USR1 step is a no-op), the app log
    // copied and truncated as its owner.
    ok(
        lab.ssh(
            "h1",
            &format!("sudo logrotate -f -s /tmp/logrotate.status {LOGROTATE}"),
        ),
        "logrotate -f",
    );
    let ls = ok(
        lab.ssh(
            "h1",
            "sudo sh -c \"cd /opt/claw-ai && stat -c '%n %s %U' nginx/logs/* logs/*\"",
        ),
        "ls",
    );
    let files: Vec<&str> = ls.lines().collect();
    assert_eq!(
        files,
        [
            "nginx/logs/access.log.1 6 root",
            "logs/app.log 0 claw-app",
            "logs/app.log.1 8 claw-app"
        ],
        "{ls}"
    );
}
