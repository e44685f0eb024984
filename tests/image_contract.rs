//! The official images' contract (templates/claw-ai/contract.toml, issue 17): each item checked against the
//! lab stand-in that replaces the image (tests/lab/full/stack.sh, on this machine's Docker: no lab needed), the
//! absences included (no www-data in nginx, REDIS_PASSWORD ignored by redis, no `healthcheck` program); then
//! the playbook's rendered files checked to use nothing outside the contract (images, users, environment,
//! mounts, healthcheck and handler programs, the tools backup.sh runs inside postgres).
//!
//! The stand-ins must have been built (`tests/lab/full/stack.sh build`): a missing one fails the test.

use crate::claw_ai::{
    BACKUP, COMPOSE, INVENTORY, NGINX_CONF, REDIS_CONF, key_block, render, service, tls_dir,
};
use crate::support::repo;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contract {
    image: String,
    lab: String,
    user: String,
    uid: u32,
    gid: u32,
    starts_as: String,
    env: Vec<String>,
    ignored_env: Vec<String>,
    mounts: Vec<String>,
    paths: Vec<String>,
    tools: Vec<String>,
    absent_users: Vec<String>,
    absent_tools: Vec<String>,
    config_arg: bool,
}

fn contracts() -> BTreeMap<String, Contract> {
    let path = repo().join("templates/claw-ai/contract.toml");
    let text = std::fs::read_to_string(&path).expect("templates/claw-ai/contract.toml");
    let c: BTreeMap<String, Contract> =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        c.keys().map(String::as_str).collect::<Vec<_>>(),
        ["nginx", "postgres", "python", "redis"],
        "one contract per official image"
    );
    c
}

/// Shell builtins and keywords a CMD-SHELL healthcheck may use besides the image's tools.
const BUILTINS: &[&str] = &["[", "test", "read", "export", "exit", "true", "false", ":"];
const KEYWORDS: &[&str] = &[
    "while", "until", "do", "done", "if", "then", "else", "fi", "!", "{", "}",
];

/// The programs a shell command line runs (first word of each simple command, `$(...)` included),
/// assignments, keywords and redirections skipped. Enough for the healthchecks written here.
fn shell_commands(script: &str) -> Vec<String> {
    let s = script
        .replace("$$", "$")
        .replace(['"', '\''], " ")
        .replace("$(", " ; ")
        .replace("&&", " ; ")
        .replace("||", " ; ")
        .replace('|', " ; ")
        .replace(')', " ")
        .replace(';', " ; ");
    let is_assign = |t: &str| {
        t.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit())
        })
    };
    let (mut out, mut cmd_pos, mut skip) = (vec![], true, false);
    for t in s.split_whitespace() {
        if std::mem::take(&mut skip) {
            continue;
        }
        if t == ";" {
            cmd_pos = true;
        } else if !cmd_pos || KEYWORDS.contains(&t) || is_assign(t) {
        } else if t.starts_with(['<', '>']) {
            skip = t.len() == 1;
        } else {
            out.push(t.to_string());
            cmd_pos = false;
        }
    }
    out
}

#[test]
fn shell_commands_finds_every_program() {
    assert_eq!(
        shell_commands(
            "while read -r k v; do [ \"$$k\" = x ] && export A=\"$$v\"; done < /f; [ \"$$(redis-cli ping)\" = PONG ]"
        ),
        ["read", "[", "export", "[", "redis-cli"]
    );
    assert_eq!(
        shell_commands("A=1 curl -fsS http://x | grep -q ok || wget x"),
        ["curl", "grep", "wget"]
    );
}

// ------------------------------------------------------------------------------------- the stand-ins

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker (this test needs Docker on this machine)")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The current tag of each stack.sh image (its recipe hash), which must exist on this machine.
fn lab_tags() -> BTreeMap<String, String> {
    let o = Command::new("bash")
        .arg(repo().join("tests/lab/full/stack.sh"))
        .arg("tags")
        .output()
        .expect("tests/lab/full/stack.sh tags");
    assert!(o.status.success(), "stack.sh tags: {}", text(&o));
    let mut tags = BTreeMap::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let name = line
            .strip_prefix("claw-lab/")
            .and_then(|r| r.split(':').next())
            .unwrap_or_else(|| panic!("stack.sh tags printed `{line}`"));
        tags.insert(name.to_string(), line.to_string());
    }
    for (name, tag) in &tags {
        if ["postgres", "redis", "nginx"].contains(&name.as_str()) {
            assert!(
                docker(&["image", "inspect", tag]).status.success(),
                "the lab image {tag} is missing on this machine: run `tests/lab/full/stack.sh build` first"
            );
        }
    }
    tags
}

/// `sh -c SCRIPT` in a throwaway container of `tag` (the image's entrypoint bypassed).
fn sh(tag: &str, script: &str) -> Output {
    docker(&["run", "--rm", "--entrypoint", "sh", tag, "-c", script])
}

/// A container removed on drop.
struct Running(String);

impl Running {
    fn start(tag: &str, opts: &[&str], cmd: &[&str]) -> Running {
        let mut args = vec!["run", "-d"];
        args.extend(opts);
        args.push(tag);
        args.extend(cmd);
        let o = docker(&args);
        assert!(o.status.success(), "docker run {tag}: {}", text(&o));
        Running(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    fn exec(&self, opts: &[&str], cmd: &[&str]) -> Output {
        let mut args = vec!["exec"];
        args.extend(opts);
        args.push(&self.0);
        args.extend(cmd);
        docker(&args)
    }

    /// Runs `cmd` until it succeeds (60 s at most), its output.
    fn exec_until(&self, opts: &[&str], cmd: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let o = self.exec(opts, cmd);
            if o.status.success() {
                return String::from_utf8_lossy(&o.stdout).to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{cmd:?} never succeeded: {}\nlogs: {}",
                text(&o),
                text(&docker(&["logs", "--tail", "30", &self.0]))
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The real uid of the container's PID 1 (the server, after the entrypoint stepped down).
    fn pid1_uid(&self) -> u32 {
        let s =
            String::from_utf8_lossy(&self.exec(&[], &["cat", "/proc/1/status"]).stdout).to_string();
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("no Uid in /proc/1/status: {s}"))
    }

    fn owner(&self, path: &str) -> u32 {
        let o = self.exec(&[], &["stat", "-c", "%u", path]);
        assert!(o.status.success(), "stat {path}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.0]);
    }
}

/// A private directory for files mounted into a container (removed on drop).
fn mount_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("claw-contract-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn chown(path: &Path, uid: u32, gid: u32, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown (tests run as root)");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// PostgreSQL: every honoured variable and the init directory have an effect; the server runs as the
/// image's user, who owns the data directory.
fn postgres_behaviour(c: &Contract, tag: &str) -> BTreeSet<String> {
    let init = mount_dir();
    std::fs::write(
        init.path().join("01-contract.sql"),
        "CREATE TABLE contract_init (v int);\n",
    )
    .unwrap();
    let pgdata = "/var/lib/postgresql/data/contract";
    let pw = "contract-pg-pw-7c1e";
    let env = [
        "POSTGRES_USER=cuser".to_string(),
        format!("POSTGRES_PASSWORD={pw}"),
        "POSTGRES_DB=cdb".to_string(),
        format!("PGDATA={pgdata}"),
        "POSTGRES_INITDB_ARGS=--data-checksums".to_string(),
        "POSTGRES_HOST_AUTH_METHOD=scram-sha-256".to_string(),
    ];
    let mut opts: Vec<String> = env.iter().flat_map(|e| ["-e".into(), e.clone()]).collect();
    opts.extend([
        "-v".into(),
        format!("{}:/docker-entrypoint-initdb.d:ro", init.path().display()),
    ]);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let pg = Running::start(tag, &opts, &[]);
    // Over TCP (the entrypoint's temporary server listens on the socket only): the real server.
    let tcp = |pass: &str, sql: &str| {
        pg.exec(
            &["-e", &format!("PGPASSWORD={pass}")],
            &[
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "cuser",
                "-d",
                "cdb",
                "-qAt",
                "-c",
                sql,
            ],
        )
    };
    pg.exec_until(
        &["-e", &format!("PGPASSWORD={pw}")],
        &[
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "cuser",
            "-d",
            "cdb",
            "-qAt",
            "-c",
            "SELECT 1",
        ],
    );
    let mut seen = BTreeSet::new();
    // POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD, POSTGRES_HOST_AUTH_METHOD: that user's password opens
    // that database over TCP; a wrong one does not.
    let who = tcp(pw, "SELECT current_user || ' ' || current_database()");
    assert_eq!(text(&who).trim(), "cuser cdb");
    assert!(
        !tcp("wrong", "SELECT 1").status.success(),
        "a wrong password is accepted"
    );
    seen.extend(
        [
            "POSTGRES_USER",
            "POSTGRES_DB",
            "POSTGRES_PASSWORD",
            "POSTGRES_HOST_AUTH_METHOD",
        ]
        .map(String::from),
    );
    // PGDATA moves the cluster; POSTGRES_INITDB_ARGS reach initdb.
    assert_eq!(text(&tcp(pw, "SHOW data_directory")).trim(), pgdata);
    assert_eq!(text(&tcp(pw, "SHOW data_checksums")).trim(), "on");
    seen.extend(["PGDATA", "POSTGRES_INITDB_ARGS"].map(String::from));
    // The init directory ran once on the empty cluster.
    assert_eq!(
        text(&tcp(
            pw,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'contract_init'"
        ))
        .trim(),
        "1"
    );
    // Started as root, the server runs as the image's user, who owns the data directory.
    assert_eq!(pg.pid1_uid(), c.uid, "postgres' PID 1");
    assert_eq!(pg.owner(pgdata), c.uid, "owner of PGDATA");
    assert_eq!(
        pg.owner("/var/lib/postgresql/data"),
        c.uid,
        "owner of the volume"
    );
    // The tools the playbook runs inside, over the trusted socket (no password), as `docker exec` runs them.
    for args in [
        vec!["pg_isready", "-U", "cuser", "-d", "cdb"],
        vec!["pg_dump", "-U", "cuser", "-d", "cdb", "--schema-only"],
        vec!["createdb", "-U", "cuser", "cdb2"],
        vec!["dropdb", "-U", "cuser", "--if-exists", "--force", "cdb2"],
    ] {
        let o = pg.exec(&[], &args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    seen
}

/// Redis: REDIS_PASSWORD is ignored; a config file given as the first argument sets the password and
/// persistence; the server runs as redis, who owns /data.
fn redis_behaviour(c: &Contract, tag: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    // Only REDIS_PASSWORD: no password at all.
    let open = Running::start(tag, &["-e", "REDIS_PASSWORD=contract-rd-pw-3f9a"], &[]);
    let pong = open.exec_until(&[], &["redis-cli", "ping"]);
    assert_eq!(
        pong.trim(),
        "PONG",
        "with only REDIS_PASSWORD set, Redis must answer without a password"
    );
    seen.insert("REDIS_PASSWORD".to_string());
    assert_eq!(open.pid1_uid(), c.uid, "redis' PID 1");
    assert_eq!(open.owner("/data"), c.uid, "owner of /data");
    drop(open);

    // A config file, read-only, 0600 and owned by the image's redis uid, as the playbook writes it.
    let conf = mount_dir();
    let file = conf.path().join("redis.conf");
    std::fs::write(
        &file,
        "bind 0.0.0.0\nport 6379\ndir /data\nappendonly yes\nrequirepass contract-rd-pw-3f9a\n",
    )
    .unwrap();
    chown(&file, c.uid, c.gid, 0o600);
    let mount = format!("{}:/usr/local/etc/redis:ro", conf.path().display());
    assert!(c.config_arg);
    for cmd in [
        vec!["redis-server", "/usr/local/etc/redis/redis.conf"],
        // The entrypoint runs redis-server for a first argument that is a .conf file.
        vec!["/usr/local/etc/redis/redis.conf"],
    ] {
        let r = Running::start(tag, &["-v", &mount], &cmd);
        r.exec_until(
            &["-e", "REDISCLI_AUTH=contract-rd-pw-3f9a"],
            &["redis-cli", "ping"],
        );
        let noauth = text(&r.exec(&[], &["redis-cli", "ping"]));
        assert!(
            noauth.contains("NOAUTH"),
            "{cmd:?}: unauthenticated PING: {noauth}"
        );
        let auth = r.exec(
            &["-e", "REDISCLI_AUTH=contract-rd-pw-3f9a"],
            &["redis-cli", "ping"],
        );
        assert_eq!(text(&auth).trim(), "PONG");
        assert_eq!(r.pid1_uid(), c.uid);
        r.exec_until(&[], &["test", "-d", "/data/appendonlydir"]);
    }
    seen
}

/// nginx: the workers run as the image's user; curl answers from inside.
fn nginx_behaviour(c: &Contract, tag: &str) -> BTreeSet<String> {
    let n = Running::start(tag, &[], &[]);
    n.exec_until(
        &[],
        &["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1/"],
    );
    let o = n.exec(
        &[],
        &[
            "sh",
            "-c",
            &format!(
                "grep -l '^Uid:[[:space:]]*{}[[:space:]]' /proc/[0-9]*/status",
                c.uid
            ),
        ],
    );
    assert!(
        o.status.success() && !o.stdout.is_empty(),
        "no nginx worker runs as uid {}: {}",
        c.uid,
        text(&o)
    );
    BTreeSet::new()
}

/// python-slim: the standard library the healthchecks use, and pip may install into the system (no
/// Debian `EXTERNALLY-MANAGED` marker). It reads no environment the playbook sets.
fn python_behaviour(tag: &str) -> BTreeSet<String> {
    let script = "import os, ssl, sys, sysconfig, urllib.request\n\
                  m = os.path.join(sysconfig.get_paths()['stdlib'], 'EXTERNALLY-MANAGED')\n\
                  sys.exit('pip may not install: ' + m if os.path.exists(m) else 0)";
    let o = docker(&["run", "--rm", tag, "python3", "-c", script]);
    assert!(o.status.success(), "python: {}", text(&o));
    let o = docker(&["run", "--rm", tag, "pip", "--version"]);
    assert!(o.status.success(), "python: pip --version: {}", text(&o));
    BTreeSet::new()
}

#[test]
fn lab_stand_ins_keep_the_contract_of_the_official_images() {
    let tags = lab_tags();
    for (name, c) in contracts() {
        let tag = tags
            .get(&c.lab)
            .unwrap_or_else(|| panic!("{name}: no stack.sh image `{}`", c.lab));
        // Starts as the contract says (root: no USER, the entrypoint steps down).
        let user = text(&docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}",
            tag,
        ]));
        if c.starts_as == "root" {
            assert!(
                ["", "root", "0"].contains(&user.trim()),
                "{name}: {tag} starts as `{}`, the official image as root",
                user.trim()
            );
        } else {
            assert_eq!(user.trim(), c.starts_as, "{name}");
        }
        // The user and group, and the users that must not exist.
        let o = sh(tag, "cat /etc/passwd; echo ---; cat /etc/group");
        assert!(o.status.success(), "{name}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let (passwd, group) = out.split_once("---\n").unwrap();
        let entry = |db: &str, n: &str| -> Option<Vec<String>> {
            db.lines()
                .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
                .find(|f| f[0] == n)
        };
        let u = entry(passwd, &c.user).unwrap_or_else(|| panic!("{name}: no user {}", c.user));
        assert_eq!(
            (u[2].as_str(), u[3].as_str()),
            (c.uid.to_string().as_str(), c.gid.to_string().as_str()),
            "{name}: {}",
            c.user
        );
        let g = entry(group, &c.user).unwrap_or_else(|| panic!("{name}: no group {}", c.user));
        assert_eq!(g[2], c.gid.to_string(), "{name}: group {}", c.user);
        for a in &c.absent_users {
            assert!(
                entry(passwd, a).is_none(),
                "{name}: {tag} has a user {a}, the official image has none"
            );
        }
        // Tools present, and absent.
        let probe = |names: &[String]| -> Vec<String> {
            let script = "for t; do command -v \"$t\" >/dev/null 2>&1 && echo \"$t\"; done; true";
            let mut args = vec!["run", "--rm", "--entrypoint", "sh", tag, "-c", script, "sh"];
            args.extend(names.iter().map(String::as_str));
            String::from_utf8_lossy(&docker(&args).stdout)
                .lines()
                .map(String::from)
                .collect()
        };
        assert_eq!(
            probe(&c.tools),
            c.tools,
            "{name}: tools of the contract missing in {tag}"
        );
        assert!(
            probe(&c.absent_tools).is_empty(),
            "{name}: {tag} has {:?}, the official image has not",
            probe(&c.absent_tools)
        );
        // Paths; mounts over anything that is neither a volume nor a documented path hide nothing.
        for p in &c.paths {
            assert!(
                sh(tag, &format!("test -e '{p}'")).status.success(),
                "{name}: {p} missing"
            );
        }
        let volumes = text(&docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Volumes}}",
            tag,
        ]));
        for m in &c.mounts {
            if !c.paths.contains(m) && !volumes.contains(&format!("\"{m}\"")) {
                assert!(
                    !sh(tag, &format!("test -e '{m}'")).status.success(),
                    "{name}: mounting over {m} would hide what the image has there"
                );
            }
        }
        // What the image does with its environment and arguments.
        let seen = match name.as_str() {
            "postgres" => postgres_behaviour(&c, tag),
            "redis" => redis_behaviour(&c, tag),
            "nginx" => nginx_behaviour(&c, tag),
            "python" => python_behaviour(tag),
            other => panic!("no behaviour check for the contract of {other}"),
        };
        let listed: BTreeSet<String> = c.env.iter().chain(&c.ignored_env).cloned().collect();
        assert_eq!(
            seen, listed,
            "{name}: every env item of the contract is checked, and only those"
        );
    }
}

// ------------------------------------------------------------------------------------ the playbook

/// The value of `    KEY: VALUE` in a service's lines (flow values: JSON-compatible here).
fn value<'a>(svc: &[&'a str], key: &str) -> Option<&'a str> {
    let head = format!("    {key}: ");
    svc.iter().find_map(|l| l.strip_prefix(&head))
}

/// `- ITEM` entries of a block (quotes dropped).
fn items(block: &[&str]) -> Vec<String> {
    block
        .iter()
        .skip(1)
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|i| i.trim_matches('"').to_string())
        .collect()
}

/// python-slim is the base of the backend's image (its repository's Dockerfile): the lab repository's
/// Dockerfile starts FROM the contract's image, the playbook ships that image for the build, and the
/// healthchecks (compose's and the Dockerfile's) run only the contract's tools.
fn backend_uses_only_python(compose: &str, c: &Contract) {
    let df = std::fs::read_to_string(repo().join("tests/lab/full/backend/Dockerfile")).unwrap();
    let from: Vec<&str> = df
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(from, [c.image.as_str()], "the backend Dockerfile's FROM");
    let pb = std::fs::read_to_string(repo().join("playbooks/claw-ai.toml")).unwrap();
    assert!(
        pb.contains(&format!("\nbackend_base_image = {:?}", c.image)),
        "backend_base_image defaults to the contract's image"
    );
    let svc = service(compose, "backend");
    let hc = key_block(&svc, "healthcheck");
    let test = hc
        .iter()
        .find_map(|l| l.trim().strip_prefix("test: "))
        .expect("backend: no healthcheck test");
    let test: Vec<String> = serde_json::from_str(test).unwrap();
    assert_eq!(test[0], "CMD", "backend healthcheck {test:?}");
    let df_hc = df
        .split("HEALTHCHECK")
        .nth(1)
        .and_then(|h| h.split("CMD").nth(1))
        .expect("the Dockerfile has a HEALTHCHECK CMD");
    let df_hc: Vec<String> = serde_json::from_str(
        df_hc
            .lines()
            .map(|l| l.trim().trim_end_matches('\\'))
            .collect::<String>()
            .trim(),
    )
    .unwrap_or_else(|e| panic!("the Dockerfile's HEALTHCHECK CMD is not an exec form: {e}"));
    for p in [&test[1], &df_hc[0]] {
        assert!(
            c.tools.contains(p),
            "backend healthcheck runs {p}, outside python's contract"
        );
        assert!(
            !c.absent_tools.contains(p),
            "backend healthcheck runs {p}, which python-slim lacks"
        );
    }
}

#[test]
fn the_playbook_uses_nothing_outside_the_contracts() {
    let r = render(INVENTORY, "web-1", &[]);
    let compose = r.text(COMPOSE);
    for (name, c) in contracts() {
        if name == "python" {
            backend_uses_only_python(compose, &c);
            continue;
        }
        let svc = service(compose, &name);
        // The default image is the one the contract was read from.
        assert_eq!(
            value(&svc, "image"),
            Some(format!("{:?}", c.image).as_str()),
            "{name}"
        );
        // No user, or the image's own.
        if let Some(u) = value(&svc, "user") {
            let u = u.trim_matches('"');
            assert!(
                [
                    c.user.clone(),
                    c.uid.to_string(),
                    format!("{}:{}", c.uid, c.gid)
                ]
                .contains(&u.to_string()),
                "{name}: user {u} is not the image's"
            );
        }
        // Environment: only what the image honours, nothing it ignores.
        let env = key_block(&svc, "environment");
        for line in env.iter().skip(1) {
            let k = line.trim().split(':').next().unwrap();
            assert!(
                c.env.contains(&k.to_string()),
                "{name}: the image does not read {k}"
            );
            assert!(
                !c.ignored_env.contains(&k.to_string()),
                "{name}: the image ignores {k}"
            );
        }
        // Mount targets: volumes of the contract only.
        for v in items(&key_block(&svc, "volumes")) {
            let target = v
                .split(':')
                .nth(1)
                .unwrap_or_else(|| panic!("{name}: volume {v}"));
            assert!(
                c.mounts.contains(&target.to_string()),
                "{name}: mount over {target}, outside the contract"
            );
        }
        // Programs: the command, and the healthcheck's.
        let mut programs = vec![];
        if let Some(cmd) = value(&svc, "command") {
            let cmd: Vec<String> =
                serde_json::from_str(cmd).unwrap_or_else(|e| panic!("{name}: command {cmd}: {e}"));
            programs.push(cmd[0].clone());
            if c.config_arg {
                let conf = &cmd[1];
                assert!(
                    conf.ends_with(".conf")
                        && c.mounts.iter().any(|m| conf.starts_with(&format!("{m}/"))),
                    "{name}: the config {conf} is not in a mount of the contract"
                );
            }
        }
        let hc = key_block(&svc, "healthcheck");
        let test = hc
            .iter()
            .find_map(|l| l.trim().strip_prefix("test: "))
            .unwrap_or_else(|| panic!("{name}: no healthcheck test"));
        let test: Vec<String> =
            serde_json::from_str(test).unwrap_or_else(|e| panic!("{name}: {test}: {e}"));
        match test[0].as_str() {
            "CMD" => programs.push(test[1].clone()),
            "CMD-SHELL" => {
                programs.push("sh".into());
                programs.extend(
                    shell_commands(&test[1])
                        .into_iter()
                        .filter(|p| !BUILTINS.contains(&p.as_str())),
                );
            }
            other => panic!("{name}: healthcheck {other}"),
        }
        for p in &programs {
            assert!(
                c.tools.contains(p),
                "{name}: runs {p}, which the image's contract does not list"
            );
            assert!(
                !c.absent_tools.contains(p),
                "{name}: runs {p}, which the image lacks"
            );
        }
    }
    let all = contracts();

    // nginx.conf: workers as the image's user; no user it lacks.
    let nginx = &all["nginx"];
    let conf = r.text(NGINX_CONF);
    assert!(
        conf.lines().any(|l| l == format!("user {};", nginx.user)),
        "{conf}"
    );
    for a in &nginx.absent_users {
        assert!(!conf.contains(a.as_str()), "nginx.conf names {a}");
    }
    assert!(conf.contains("include /etc/nginx/mime.types;"));

    // redis.conf: the password file, 0600, owned by the image's redis uid (a number).
    let redis = &all["redis"];
    let rc = &r.files[REDIS_CONF];
    assert_eq!(rc.mode, Some(0o600));
    assert_eq!(rc.owner.as_deref(), Some(redis.uid.to_string().as_str()));
    assert_eq!(rc.group.as_deref(), Some(redis.gid.to_string().as_str()));
    assert!(rc.content.contains("\nrequirepass ") && rc.content.contains("\nappendonly yes\n"));

    // backup.sh and the handlers run only the tools of the contracts inside the containers.
    let pg = &all["postgres"];
    let backup = r.text(BACKUP);
    let used: Vec<&str> = backup
        .split("exec -T postgres ")
        .skip(1)
        .map(|rest| rest.split_whitespace().find(|w| *w != "\\").unwrap())
        .collect();
    assert!(used.len() >= 4, "{used:?}");
    for t in used {
        assert!(
            pg.tools.iter().any(|x| x == t),
            "backup.sh runs {t} in postgres, outside the contract"
        );
    }
    let pb = std::fs::read_to_string(repo().join("playbooks/claw-ai.toml")).unwrap();
    let reload = pb
        .split("[[handlers]]")
        .find(|h| h.contains("name = \"reload nginx\""))
        .expect("handler reload nginx");
    let used: Vec<&str> = reload
        .split("docker exec \"$c\" ")
        .skip(1)
        .map(|r| r.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(used, ["nginx", "nginx"], "{reload}");
    for t in used {
        assert!(
            nginx.tools.iter().any(|x| x == t),
            "a handler runs {t} in nginx, outside the contract"
        );
    }
}

/// The rendered nginx.conf passes `nginx -t` in the nginx stand-in, mounted as the compose file mounts it
/// (the `user` it names exists there).
#[test]
fn rendered_nginx_conf_passes_nginx_t_in_the_stand_in() {
    let tags = lab_tags();
    let r = render(INVENTORY, "web-1", &[]);
    let conf = mount_dir();
    std::fs::write(conf.path().join("nginx.conf"), r.text(NGINX_CONF)).unwrap();
    let o = docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/etc/nginx/claw-ai:ro", conf.path().display()),
        "-v",
        &format!("{}:/etc/nginx/ssl:ro", tls_dir()),
        &tags["nginx"],
        "nginx",
        "-t",
        "-c",
        "/etc/nginx/claw-ai/nginx.conf",
    ]);
    let out = text(&o);
    assert!(
        o.status.success() && out.contains("test is successful"),
        "{out}"
    );
}

/// The rendered redis.conf and the compose file's redis healthcheck in the redis stand-in, mounted and started
/// as the compose service is: the healthcheck passes (it reads the password from the file), an
/// unauthenticated PING is refused, and no process shows the password.
#[test]
fn rendered_redis_conf_and_healthcheck_work_in_the_stand_in() {
    let tags = lab_tags();
    let redis = &contracts()["redis"];
    // A password with spaces, `$` and `<`: what redis.conf's quoting and the healthcheck must carry.
    let pw = "rd pw$5e91 <x>";
    let mut secrets: Vec<(&str, &str, &str)> = crate::claw_ai::SECRETS.to_vec();
    secrets[1].2 = pw;
    let r = crate::claw_ai::render_with(
        INVENTORY,
        "web-1",
        "systemd",
        crate::claw_ai::secrets_json(&secrets),
        &[],
    )
    .unwrap();
    let svc = service(r.text(COMPOSE), "redis");
    let cmd: Vec<String> = serde_json::from_str(value(&svc, "command").unwrap()).unwrap();
    let hc = key_block(&svc, "healthcheck");
    let test: Vec<String> = serde_json::from_str(
        hc.iter()
            .find_map(|l| l.trim().strip_prefix("test: "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(test[0], "CMD-SHELL");
    let check = test[1].replace("$$", "$");
    let conf = mount_dir();
    let file = conf.path().join("redis.conf");
    std::fs::write(&file, &r.files[REDIS_CONF].content).unwrap();
    chown(&file, redis.uid, redis.gid, 0o600);
    let mount = format!("{}:/usr/local/etc/redis:ro", conf.path().display());
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let c = Running::start(&tags["redis"], &["-v", &mount], &args);
    c.exec_until(&[], &["sh", "-c", &check]);
    let noauth = text(&c.exec(&[], &["redis-cli", "ping"]));
    assert!(noauth.contains("NOAUTH"), "{noauth}");
    let ps = text(&c.exec(
        &[],
        &["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"],
    ));
    assert!(ps.contains("redis-server"), "{ps}");
    assert!(!ps.contains("5e91"), "the password is in a process's argv");
}
