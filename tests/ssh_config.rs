//! ssh_config resolution compared with OpenSSH's own (`ssh -G`), the oracle; then the precedence
//! inventory > ssh_config > defaults through `claw-provision hosts`.

use crate::support::{Scratch, claw};
use claw_provision::inventory::ssh_config::{
    self as config, Preset, SshConfig, StrictHostKeyChecking, Tokens,
};
use std::collections::BTreeMap;
use std::process::Command;

/// The `host` event of `hosts --output json` for `name`.
fn host_event(run: &crate::support::Run, name: &str) -> serde_json::Value {
    run.events()
        .into_iter()
        .find(|e| e["event"] == "host" && e["host"] == name)
        .unwrap_or_else(|| {
            panic!(
                "no host event for {name} in:\n{}\n{}",
                run.stdout, run.stderr
            )
        })
}

/// `ssh -G -F FILE [-l USER] [-p PORT] HOST` as key -> values (repeated keys keep their order).
fn ssh_g(file: &std::path::Path, host: &str, preset: &Preset) -> BTreeMap<String, Vec<String>> {
    let mut cmd = Command::new("ssh");
    cmd.arg("-G").arg("-F").arg(file);
    if let Some(u) = &preset.user {
        cmd.args(["-l", u]);
    }
    if let Some(p) = preset.port {
        cmd.args(["-p", &p.to_string()]);
    }
    let out = cmd
        .arg(host)
        .output()
        .expect("OpenSSH's ssh must be installed");
    assert!(
        out.status.success(),
        "ssh -G {host} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((k, v)) = line.split_once(' ') {
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    m
}

fn one<'a>(m: &'a BTreeMap<String, Vec<String>>, k: &str) -> &'a str {
    m.get(k).and_then(|v| v.first()).map_or("", String::as_str)
}

/// Our resolution of `host`, filled with OpenSSH's defaults where the file is silent, in the
/// shape `ssh -G` prints it.
fn ours(cfg: &SshConfig, host: &str, preset: &Preset) -> BTreeMap<&'static str, Vec<String>> {
    let r = cfg.query(host, preset);
    let hostname = preset
        .hostname
        .clone()
        .or(r.hostname.clone())
        .unwrap_or_else(|| host.to_lowercase());
    let user = preset
        .user
        .clone()
        .or(r.user.clone())
        .unwrap_or_else(config::local_user);
    let port = preset.port.or(r.port).unwrap_or(22);
    let jump = r.proxy_jump.clone().filter(|j| j != "none");
    let jump_host = config::jump_token(jump.as_deref().unwrap_or(""));
    let tokens = Tokens {
        hostname: &hostname,
        original: host,
        port,
        remote_user: &user,
        jump: &jump_host,
        alias: r.host_key_alias.as_deref(),
    };
    let home = config::home().display().to_string();
    let known: Vec<String> = match &r.user_known_hosts_files {
        Some(files) => files
            .iter()
            .map(|f| config::expand(f, &tokens).unwrap().display().to_string())
            .collect(),
        None => vec![format!("{home}/.ssh/known_hosts {home}/.ssh/known_hosts2")],
    };
    // Without IdentityFile OpenSSH lists its own defaults (they vary by version): compared as
    // "some ~/.ssh/id_* files".
    let identity: Vec<String> = r.identity_files.clone();
    let mut m = BTreeMap::new();
    m.insert("hostname", vec![hostname.clone()]);
    m.insert("user", vec![user.clone()]);
    m.insert("port", vec![port.to_string()]);
    m.insert("identityfile", identity);
    m.insert(
        "identitiesonly",
        vec![
            if r.identities_only == Some(true) {
                "yes"
            } else {
                "no"
            }
            .into(),
        ],
    );
    m.insert("proxyjump", jump.into_iter().collect());
    m.insert("userknownhostsfile", vec![known.join(" ")]);
    m.insert(
        "globalknownhostsfile",
        vec![match &r.global_known_hosts_files {
            Some(files) => files.join(" "),
            None => "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2".into(),
        }],
    );
    m.insert("hostkeyalias", r.host_key_alias.iter().cloned().collect());
    m.insert(
        "hashknownhosts",
        vec![
            if r.hash_known_hosts == Some(true) {
                "yes"
            } else {
                "no"
            }
            .into(),
        ],
    );
    m.insert(
        "stricthostkeychecking",
        vec![
            match r.strict_host_key_checking {
                None | Some(StrictHostKeyChecking::Ask) => "ask",
                Some(StrictHostKeyChecking::Yes) => "true",
                Some(StrictHostKeyChecking::No) => "false",
                Some(StrictHostKeyChecking::AcceptNew) => "accept-new",
            }
            .into(),
        ],
    );
    m.insert(
        "connecttimeout",
        vec![match r.connect_timeout.flatten() {
            Some(d) => d.as_secs().to_string(),
            None => "none".into(),
        }],
    );
    m.insert(
        "serveraliveinterval",
        vec![
            r.server_alive_interval
                .map_or(0, |d| d.as_secs())
                .to_string(),
        ],
    );
    m
}

fn compare(file: &std::path::Path, hosts: &[(&str, Preset)]) {
    let cfg = SshConfig::load(file).unwrap_or_else(|e| panic!("{e}"));
    for (host, preset) in hosts {
        let theirs = ssh_g(file, host, preset);
        let ours = ours(&cfg, host, preset);
        for (k, v) in &ours {
            let t = theirs.get(*k).cloned().unwrap_or_default();
            if *k == "identityfile" && v.is_empty() {
                assert!(
                    !t.is_empty() && t.iter().all(|f| f.starts_with("~/.ssh/id_")),
                    "OpenSSH's default identities for `{host}`: {t:?}"
                );
                continue;
            }
            assert_eq!(
                v,
                &t,
                "`{k}` for `{host}` ({preset:?}) in {}: ours {v:?}, ssh -G {t:?}",
                file.display()
            );
        }
        assert!(!one(&theirs, "hostname").is_empty());
    }
}

fn p() -> Preset {
    Preset::default()
}

#[test]
fn host_patterns_tokens_and_lists_match_openssh() {
    let s = Scratch::new();
    let file = s.file(
        "config",
        "# a typical operator file\n\
         Host bastion\n  HostName 10.0.0.1\n  User ops\n\
         Host web-* !web-skip\n  HostName %h.internal\n  User deploy\n  Port 2222\n\
         \x20 IdentityFile ~/.ssh/id_%r_%h\n  IdentityFile /keys/%u-%p-%n\n  IdentitiesOnly yes\n\
         \x20 ProxyJump bastion,ops@b2:2200\n  UserKnownHostsFile ~/kh1 /tmp/kh2_%h_%p_%r_%n\n\
         \x20 StrictHostKeyChecking accept-new\n  ConnectTimeout 7\n  ServerAliveInterval 1m\n\
         Host db?\n  ProxyJump none\n  StrictHostKeyChecking yes\n  ConnectTimeout none\n\
         \x20 HostKeyAlias DB-Pinned\n  UserKnownHostsFile /tmp/kh_%k\n  HashKnownHosts yes\n\
         \x20 GlobalKnownHostsFile /etc/g1 /tmp/g2\n\
         Host=quoted\n  User = \"de ploy\"\n  IdentityFile \"/k/with space\" # a comment\n\
         \x20 STRICTHOSTKEYCHECKING no\n  userknownhostsfile /tmp/%C\n\
         Host *.lan 10.*\n  User lan\n  Port 2200\n\
         Host *\n  User fallback\n  ServerAliveInterval 15\n",
    );
    compare(
        &file,
        &[
            ("web-1", p()),
            ("web-skip", p()),
            ("WEB-2", p()),
            ("db1", p()),
            ("db12", p()),
            ("quoted", p()),
            ("x.lan", p()),
            ("10.1.2.3", p()),
            ("bastion", p()),
            ("other", p()),
            (
                "web-3",
                Preset {
                    user: Some("cli".into()),
                    port: Some(2),
                    hostname: None,
                },
            ),
        ],
    );
}

#[test]
fn match_and_include_match_openssh() {
    let s = Scratch::new();
    let inc_dir = s.file(
        "conf.d/10-web.conf",
        "Host web*\n  Port 2001\n  User incl\n",
    );
    s.file("conf.d/20-all.conf", "Match all\n  ServerAliveInterval 9\n");
    s.file("conf.d/.hidden.conf", "Host *\n  ConnectTimeout 42\n");
    let dir = inc_dir.parent().unwrap().display().to_string();
    let file = s.file(
        "config",
        &format!(
            "Host db\n  HostName db.internal\n\
             Match host *.internal user deploy\n  Port 2300\n\
             Match host *.internal !user deploy\n  Port 2400\n\
             Match originalhost db !localuser nobody-here\n  IdentityFile /k/db-%r\n\
             Match user admin,!root\n  ConnectTimeout 3\n\
             Host web-1\n  Include {dir}/*.conf\n\
             Host other\n  Include {dir}/20-all.conf /nonexistent/file\n\
             Host *\n  User fallback\n"
        ),
    );
    let user = |u: &str| Preset {
        user: Some(u.into()),
        ..Preset::default()
    };
    compare(
        &file,
        &[
            ("db", p()),
            ("db", user("deploy")),
            ("db", user("admin")),
            ("web-1", p()),
            ("web-2", p()),
            ("other", p()),
            ("x", user("admin")),
        ],
    );
}

/// OpenSSH expands the tokens of IdentityFile only when it connects: `ssh -v` names the files it
/// loads. A listener that closes at once is enough (the files are named before the handshake).
#[test]
fn identity_file_tokens_match_openssh() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            drop(c);
        }
    });
    let s = Scratch::new();
    let file = s.file(
        "config",
        &format!(
            "Host alias\n  HostName 127.0.0.1\n  Port {port}\n  User deploy\n\
             \x20 IdentityFile ~/.ssh/claw_test_%r_%h_%p\n  IdentityFile /tmp/claw_%n_%u_%L_%%_%d\n\
             \x20 BatchMode yes\n  UserKnownHostsFile /dev/null\n"
        ),
    );
    let out = Command::new("ssh")
        .args(["-v", "-F"])
        .arg(&file)
        .args(["alias", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let theirs: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("debug1: identity file "))
        .filter_map(|l| l.split(" type ").next())
        .filter(|f| !f.ends_with("-cert"))
        .collect();
    let cfg = SshConfig::load(&file).unwrap();
    let r = cfg.query("alias", &p());
    let t = Tokens {
        hostname: "127.0.0.1",
        original: "alias",
        port,
        remote_user: "deploy",
        jump: "",
        alias: None,
    };
    let ours: Vec<String> = r
        .identity_files
        .iter()
        .map(|f| config::expand(f, &t).unwrap().display().to_string())
        .collect();
    assert_eq!(ours.len(), 2);
    assert_eq!(theirs, ours, "ssh -v said:\n{err}");
}

/// The inventory wins over ssh_config, which wins over the defaults; `--ssh-config none` reads
/// nothing; a bad file is an error naming its line.
#[test]
fn inventory_wins_over_ssh_config() {
    let s = Scratch::new();
    let cfg = s.file(
        "ssh_config",
        "Host web-*\n  HostName %h.example\n  User cfguser\n  Port 2222\n  IdentityFile /k/%h\n\
         \x20 ProxyJump jumper\n  UserKnownHostsFile /kh/a /kh/b_%h\n  StrictHostKeyChecking accept-new\n\
         \x20 ConnectTimeout 4\n  ServerAliveInterval 6\n\
         Host jumper\n  HostName 10.9.9.9\n  User jumpuser\n  Port 2022\n  ProxyJump outer\n\
         \x20 StrictHostKeyChecking yes\n  UserKnownHostsFile /kh/jump_%h_%n\n\
         Host outer\n  HostName 10.8.8.8\n\
         Host cmdhop\n  ProxyCommand nc %h %p\n",
    );
    s.file("pb.toml", "name = \"t\"\nhosts = \"all\"\n");
    let inv = s.file(
        "inv.toml",
        "playbook = \"pb.toml\"\n[hosts.web-1]\n\
         [hosts.web-2]\nuser = \"invuser\"\nport = 22\naddress = \"10.0.0.2\"\njump = \"none\"\n",
    );
    let run = claw(
        &[
            "hosts",
            inv.to_str().unwrap(),
            "--ssh-config",
            cfg.to_str().unwrap(),
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let w1 = host_event(&run, "web-1");
    assert_eq!(w1["address"], "web-1.example");
    assert_eq!(w1["user"], "cfguser");
    assert_eq!(w1["port"], 2222);
    assert_eq!(w1["identity_files"][0], "/k/web-1.example");
    assert_eq!(w1["known_hosts"][1], "/kh/b_web-1.example");
    assert_eq!(w1["host_key_policy"], "accept-new");
    assert_eq!(w1["connect_timeout_s"], 4);
    assert_eq!(w1["keepalive_interval_s"], 6);
    // The jump host's own ProxyJump comes first; each hop has its own settings.
    assert_eq!(w1["jump"][0]["address"], "10.8.8.8");
    assert_eq!(w1["jump"][0]["port"], 22);
    assert_eq!(w1["jump"][1]["address"], "10.9.9.9");
    assert_eq!(w1["jump"][1]["user"], "jumpuser");
    assert_eq!(w1["jump"][1]["port"], 2022);
    assert_eq!(w1["jump"][1]["host_key_policy"], "strict");
    assert_eq!(w1["jump"][1]["known_hosts"][0], "/kh/jump_10.9.9.9_jumper");
    let w2 = host_event(&run, "web-2");
    assert_eq!(w2["address"], "10.0.0.2");
    assert_eq!(w2["user"], "invuser");
    assert_eq!(w2["port"], 22);
    assert_eq!(w2["jump"].as_array().unwrap().len(), 0);

    let none = claw(
        &[
            "hosts",
            inv.to_str().unwrap(),
            "--ssh-config",
            "none",
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(none.code, 0, "{}", none.stderr);
    assert_eq!(host_event(&none, "web-1")["address"], "web-1");
    assert_eq!(host_event(&none, "web-1")["port"], 22);

    // A jump host reached by ProxyCommand is refused, naming it.
    let inv_cmd = s.file(
        "inv_cmd.toml",
        "playbook = \"pb.toml\"\n[hosts.web-3]\njump = \"cmdhop\"\n",
    );
    let run = claw(
        &[
            "hosts",
            inv_cmd.to_str().unwrap(),
            "--ssh-config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("jump host `cmdhop`") && run.stderr.contains("ProxyCommand"),
        "{}",
        run.stderr
    );

    let bad = s.file("bad_config", "Host *\n  Port 0\n  Match exec \"true\"\n");
    let run = claw(
        &[
            "hosts",
            inv.to_str().unwrap(),
            "--ssh-config",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("bad_config:2"), "{}", run.stderr);
    assert!(run.stderr.contains("bad_config:3"), "{}", run.stderr);
    assert!(run.stderr.contains("Match exec"), "{}", run.stderr);
}
