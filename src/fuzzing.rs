//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`), one per parser of untrusted or
//! operator-written text. Each takes arbitrary bytes and must return without panicking or
//! hanging: every bad input is an error value. The corpus kept in `fuzz/corpus/TARGET/` is
//! replayed through the same functions by an ordinary test (`cargo test --lib fuzzing`), so CI
//! needs no nightly toolchain. Not an API: hidden from the docs.

use crate::fact::{ProbeScript, Request, apt, compose, git, host, image, lock, path, secret};
use std::path::Path;

/// A fuzz target: its name (the directory of its corpus and its `fuzz/fuzz_targets/NAME.rs`)
/// and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    ("inventory", inventory),
    ("playbook", playbook),
    ("known_hosts", known_hosts),
    ("ssh_config", ssh_config),
    ("probe", probe),
    ("facts", facts),
];

/// Splits off the first line: a query the rest of the input is asked (a host name).
fn query_and_text(data: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(data).ok()?;
    Some(s.split_once('\n').unwrap_or(("", s)))
}

/// `Inventory::parse` (TOML; the files are read as UTF-8, so other bytes never reach it), then
/// host selection over what it parsed.
pub fn inventory(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/claw-fuzz/inventory.toml");
    match crate::inventory::Inventory::parse(path, src) {
        Ok(inv) => {
            let _ = inv.select("all");
            let _ = inv.select("!web,db*,h[12]");
            for g in inv.groups.keys() {
                let _ = inv.group_members(g);
                let _ = inv.select(g);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// `Playbook::parse`, then every task's step list (`Playbook::with_task`).
pub fn playbook(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/claw-fuzz/playbook.toml");
    match crate::playbook::Playbook::parse(path, src) {
        Ok(pb) => {
            for t in &pb.tasks {
                let _ = pb.with_task(&t.name);
            }
            let _ = pb.with_task("no such task");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// An ed25519 key the known_hosts lookups are asked about.
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIdkjSZ3tkrQooIjn1Lt+bneebVTmWTCmutm7dgYOU4A";

/// `KnownHosts::parse` and the lookups of a connection. First line: the host asked about
/// (`name` or `name:port`); the rest: the file.
pub fn known_hosts(data: &[u8]) {
    use crate::ssh::known_hosts::KnownHosts;
    let Some((q, text)) = query_and_text(data) else {
        return;
    };
    let kh = KnownHosts::parse("/nonexistent/claw-fuzz/known_hosts", text);
    let _ = kh.bad_lines();
    let key = crate::ssh::PublicKey::from_openssh(KEY).expect("the fixed key parses");
    let (h, port) = match q.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(22)),
        None => (q, 22),
    };
    for (host, port) in [(h, port), ("web1", 22), ("10.0.0.1", 2222)] {
        let _ = kh.check(host, port, &key);
        let _ = kh.known_algorithms(host, port);
        for e in kh.entries_for(host, port) {
            let _ = e.holds(&key);
        }
    }
}

/// `SshConfig::parse` and `query`. First line: the host asked about; the rest: the file.
/// `Include` lines are dropped: they read the local file system, which is not input.
pub fn ssh_config(data: &[u8]) {
    use crate::inventory::ssh_config::{Preset, SshConfig};
    let Some((q, text)) = query_and_text(data) else {
        return;
    };
    let text: String = text
        .lines()
        .filter(|l| {
            let kw: String = (l.trim_start().chars())
                .take_while(|c| !c.is_whitespace() && *c != '=')
                .collect();
            !kw.eq_ignore_ascii_case("include")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = match SshConfig::parse(Path::new("/nonexistent/claw-fuzz/ssh_config"), &text) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let preset = Preset {
        hostname: Some("10.0.0.9".into()),
        user: Some("deploy".into()),
        port: Some(2222),
    };
    for host in [q, "web1", "bastion.example"] {
        let r = cfg.query(host, &Preset::default());
        if let Some(j) = &r.proxy_jump {
            let _ = crate::inventory::ssh_config::parse_jump(j);
        }
        let tokens = crate::inventory::ssh_config::Tokens {
            hostname: r.hostname.as_deref().unwrap_or(host),
            original: host,
            port: r.port.unwrap_or(22),
            remote_user: r.user.as_deref().unwrap_or("deploy"),
            jump: "",
            alias: r.host_key_alias.as_deref(),
        };
        let files = r.user_known_hosts_files.iter().flatten();
        for f in r.identity_files.iter().chain(files) {
            let _ = crate::inventory::ssh_config::expand(f, &tokens);
        }
        let _ = cfg.query(host, &preset);
    }
}

/// A probe script asking every kind of question (host facts, the apply lock, the handler
/// journal, free space, batched paths, packages and secrets, and one request of every other
/// kind), as `run` builds it.
pub fn probe_script() -> ProbeScript {
    let mut p = ProbeScript::for_host("fuzz");
    p.take_lock("fuzz", "unknown:1:1", false);
    p.add_upload_dir("/opt/app");
    p.add_upload_dir("/srv");
    p.add(Request::Path("/opt/app/a".into())); // 0
    p.add(Request::Guard {
        creates: Some("/opt/app/done".into()),
        unless: Some("true".into()),
    }); // 1
    p.add(Request::User("deploy".into())); // 2
    p.add(Request::Group("deploy".into())); // 3
    p.add(Request::Secret {
        path: "/opt/app/.secrets/db".into(),
        guard: Some("/opt/app/data".into()),
    }); // 4
    p.add(Request::Packages(vec![
        "nginx".into(),
        "libc6:amd64".into(),
    ])); // 5
    p.add(Request::Firewall("claw".into())); // 6
    p.add(Request::Git(git::Query {
        dest: "/opt/app/src".into(),
        repo: "https://git.example/app.git".into(),
        rev: "main".into(),
        ssh_command: "ssh".into(),
    })); // 7
    p.add(Request::Compose(compose::Query {
        project: "app".into(),
        file: "/opt/app/compose.yml".into(),
        env_file: Some("/opt/app/.env".into()),
    })); // 8
    p.add(Request::Service("docker.service".into())); // 9
    p.add(Request::Image(image::Query {
        image: "app/backend:1".into(),
        tag: Some("app/backend:latest".into()),
        id: format!("sha256:{}", "a".repeat(64)),
    })); // 10
    p.add(Request::Fetch("/opt/app/dump.gz".into())); // 11
    p.add(Request::Path("/opt/app/b".into())); // 12
    p.add(Request::Secret {
        path: "/opt/app/.secrets/key".into(),
        guard: None,
    }); // 13
    p.add(Request::Packages(vec!["docker.io".into()])); // 14
    p.add(Request::Leftovers("/opt/app".into())); // 15
    p
}

/// `ProbeScript::parse`: the whole output of a host's probe (read as the runner reads it:
/// UTF-8, invalid bytes replaced), answering [`probe_script`].
pub fn probe(data: &[u8]) {
    thread_local! {
        static SCRIPT: ProbeScript = probe_script();
    }
    let out = String::from_utf8_lossy(data);
    SCRIPT.with(|p| match p.parse(&out) {
        Ok(r) => {
            if let Some(f) = &r.facts {
                let _ = f.check_supported();
                let _ = f.to_json();
            }
            let _ = r.preflight.problems();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    });
}

/// Each record parser of `src/fact/` on its own, fed `@TAG<TAB>FIELD...` lines as the probe
/// prints them. The first byte picks the parser; records whose tag the parser does not know are
/// given to it all the same (the fields are what matter).
pub fn facts(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let records: Vec<(&str, Vec<&str>)> = text
        .lines()
        .map(|l| {
            let l = l.strip_prefix('@').unwrap_or(l);
            let mut f = l.split('\t');
            let tag = f.next().unwrap_or("");
            (tag, f.collect())
        })
        .collect();
    let packages = ["nginx".to_string(), "libc6:amd64".to_string()];
    match pick % 16 {
        0 => each(&records, |f| {
            let _ = path::parse_leftovers(f);
            path::parse(f).map(drop)
        }),
        1 => each(&records, |f| crate::fact::guard::parse(f).map(drop)),
        2 => each(&records, |f| crate::fact::account::parse_user(f).map(drop)),
        3 => each(&records, |f| crate::fact::account::parse_group(f).map(drop)),
        4 => each(&records, |f| secret::parse(f).map(drop)),
        5 => each(&records, |f| apt::parse(f, &packages).map(drop)),
        6 => each(&records, |f| crate::fact::firewall::parse(f).map(drop)),
        7 => each(&records, |f| git::parse(f).map(drop)),
        8 => each(&records, |f| compose::parse(f).map(drop)),
        9 => each(&records, |f| crate::fact::service::parse(f).map(drop)),
        10 => each(&records, |f| image::parse(f).map(drop)),
        11 => each(&records, |f| crate::fact::fetch::parse(f).map(drop)),
        12 => each(&records, |f| lock::parse(f).map(drop)),
        13 => {
            let mut facts = host::HostFacts::default();
            for (tag, f) in &records {
                let _ = facts.parse_line(tag, f);
                for v in f {
                    let _ = host::decode_name(v);
                }
            }
            let _ = facts.complete();
            let _ = facts.check_supported();
        }
        14 => {
            let _ = compose::parse_inputs(&text);
            let _ = compose::parse_containers(&text);
            for (_, f) in &records {
                for v in f {
                    let _ = compose::parse_inputs(v);
                    let _ = compose::parse_containers(v);
                }
            }
        }
        _ => {
            let mut paths = path::Batch::default();
            let mut dpkg = apt::Batch::default();
            let mut secrets = secret::Batch::default();
            for (tag, f) in &records {
                let _ = paths.take(tag, f);
                let _ = dpkg.take(tag, f);
                let _ = secrets.take(tag, f);
            }
            for n in 0..4 {
                let _ = paths.states(n);
            }
            let _ = dpkg.state(&packages);
            let _ = secrets.states();
        }
    }
}

fn each(
    records: &[(&str, Vec<&str>)],
    parse: impl Fn(&[&str]) -> Result<(), crate::fact::FactError>,
) {
    for (_, f) in records {
        if let Err(e) = parse(f) {
            let _ = e.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TARGETS;
    use std::path::PathBuf;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Longest an input of the corpus may take (a debug build, on a busy machine).
    const PER_INPUT: Duration = Duration::from_secs(5);

    /// Every file of `fuzz/corpus/TARGET/` (the fuzzers' corpora, crashes found and fixed
    /// included) goes through its target's entry point: none may panic or take longer than
    /// [`PER_INPUT`]. Each input runs on a thread of its own so a hang is reported, naming the
    /// file, instead of holding the test.
    #[test]
    fn corpus_replays_without_panic_or_hang() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut total = 0;
        for (name, run) in TARGETS {
            let dir = root.join(name);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "empty corpus {}", dir.display());
            for f in files {
                let data = std::fs::read(&f).unwrap();
                let (tx, rx) = mpsc::channel();
                let run = *run;
                let started = Instant::now();
                let worker = std::thread::spawn(move || {
                    run(&data);
                    let _ = tx.send(());
                });
                match rx.recv_timeout(PER_INPUT) {
                    Ok(()) => worker.join().unwrap(),
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        panic!("{name}: {} panicked", f.display())
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                        "{name}: {} still running after {:?}",
                        f.display(),
                        started.elapsed()
                    ),
                }
                total += 1;
            }
        }
        assert!(total > 0);
        eprintln!("replayed {total} corpus inputs");
    }

    /// The targets listed here are the ones `fuzz/` builds.
    #[test]
    fn every_target_has_a_fuzz_target_file() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        for (name, _) in TARGETS {
            let src = std::fs::read_to_string(root.join(format!("fuzz_targets/{name}.rs")))
                .unwrap_or_else(|e| panic!("fuzz target {name}: {e}"));
            assert!(src.contains(&format!("fuzzing::{name}(")), "{name}");
            assert!(manifest.contains(&format!("name = \"{name}\"")), "{name}");
        }
    }
}
