//! Portable steps on a host that is not Debian: a BusyBox userland (`tests/lab/portable/image.sh`:
//! every command on PATH a BusyBox applet, sshd aside; no GNU coreutils, findutils or util-linux;
//! `ID=claw-busybox` in os-release) reached over real OpenSSH as root. A playbook of `dir`,
//! `file`, `template`, `command` and `secret` steps plans, applies and applies again with nothing
//! to change; an `apt` step is refused there before anything changes, naming the host and the
//! step, and the same playbook runs once that step's `when` leaves the host out.
//!
//! Without `flock`, the apply lock is a symbolic link: a second apply is refused while one holds
//! it, a stale link (its process gone, or not a lock holder) is replaced, `--force-unlock` works.
//!
//! The image is built (or found in Docker's cache by its recipe's hash) by `image.sh build`, which
//! `scripts/test.sh` runs before the integration tests; the container is on Docker's default
//! bridge, reached at its address. A lab that cannot start fails the test, saying why.

use crate::support::{Lab, Scratch, claw, claw_spawn, ok, repo};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The BusyBox host: a container removed on drop, its address and the client's files.
struct BusyBoxHost {
    name: String,
    address: String,
    key: PathBuf,
    known_hosts: PathBuf,
}

impl Drop for BusyBoxHost {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

impl BusyBoxHost {
    /// Builds (or finds) the image, starts a container (`test`: this test's, in its name) with
    /// fresh host and client keys, and waits for its sshd.
    fn start(files: &Path, test: &str) -> BusyBoxHost {
        let out = run(Command::new("bash")
            .arg(repo().join("tests/lab/portable/image.sh"))
            .arg("build"));
        let tag = ok(
            out,
            "the BusyBox lab image could not be built (bash tests/lab/portable/image.sh build)",
        );
        let tag = tag.trim();
        let mounted = files.join("claw");
        std::fs::create_dir(&mounted).unwrap();
        let keygen = |path: &Path| {
            ok(
                run(Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "portable", "-f"])
                    .arg(path)),
                "ssh-keygen",
            );
        };
        keygen(&mounted.join("ssh_host_ed25519_key"));
        let key = files.join("id_ed25519");
        keygen(&key);
        std::fs::copy(
            files.join("id_ed25519.pub"),
            mounted.join("authorized_keys"),
        )
        .unwrap();
        let name = format!("claw-portable-{test}-{}", std::process::id());
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        let mut host = BusyBoxHost {
            name: name.clone(),
            address: String::new(),
            key,
            known_hosts: files.join("known_hosts"),
        };
        ok(
            run(Command::new("docker")
                .args(["run", "-d", "--name", &name, "--hostname", "bb"])
                .args(["--network", "bridge", "--mount"])
                .arg(format!(
                    "type=bind,source={},target=/claw,readonly",
                    mounted.display()
                ))
                .arg(tag)),
            "docker run (the BusyBox lab host)",
        );
        let ip = ok(
            run(Command::new("docker").args([
                "inspect",
                "--format",
                "{{.NetworkSettings.IPAddress}}",
                &name,
            ])),
            "docker inspect",
        );
        host.address = ip.trim().to_string();
        assert!(
            !host.address.is_empty(),
            "the BusyBox lab host {name} has no address on Docker's default bridge"
        );
        let pubkey = std::fs::read_to_string(mounted.join("ssh_host_ed25519_key.pub")).unwrap();
        std::fs::write(&host.known_hosts, format!("{} {pubkey}", host.address)).unwrap();
        host.wait_for_sshd();
        host
    }

    fn wait_for_sshd(&self) {
        let addr: SocketAddr = format!("{}:22", self.address).parse().unwrap();
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                let logs = run(Command::new("docker").args(["logs", "--tail", "30", &self.name]));
                panic!(
                    "the BusyBox lab host's sshd did not come up at {addr} within 30 s:\n{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a command as root over plain OpenSSH.
    fn ssh(&self, cmd: &str) -> String {
        ok(
            run(Command::new("ssh")
                .args(["-F", "none", "-i"])
                .arg(&self.key)
                .arg(format!(
                    "-oUserKnownHostsFile={}",
                    self.known_hosts.display()
                ))
                .args([
                    "-oStrictHostKeyChecking=yes",
                    "-oBatchMode=yes",
                    "-oConnectTimeout=10",
                ])
                .arg(format!("root@{}", self.address))
                .arg(cmd)),
            &format!("ssh bb {cmd}"),
        )
    }

    /// An inventory naming this host `bb` (root, no become) and `playbook`.
    fn inventory(&self, s: &Scratch, file: &str, playbook: &Path) -> String {
        let p = s.file(
            file,
            &format!(
                "playbook = {:?}\n\n[defaults]\nuser = \"root\"\nidentity_file = {:?}\n\
                 known_hosts = {:?}\nhost_key_policy = \"strict\"\nbecome = false\n\n\
                 [hosts.bb]\naddress = {:?}\n",
                playbook.display().to_string(),
                self.key.display().to_string(),
                self.known_hosts.display().to_string(),
                self.address
            ),
        );
        p.display().to_string()
    }
}

/// The portable steps under `dir`, and an `apt` step when `apt` is Some (its `when` line).
fn playbook(dir: &str, apt: Option<&str>) -> String {
    let mut p = format!(
        r#"name = "portable"

[[steps]]
name = "app dir"
kind = "dir"
path = "{dir}"
mode = "0750"
owner = "root"
group = "root"

[[steps]]
name = "hello"
kind = "file"
path = "{dir}/hello.txt"
content = "hello from {{{{ facts.os_id }}}}\n"
mode = "0640"

[[steps]]
name = "config"
kind = "template"
src = "app.conf.tera"
path = "{dir}/app.conf"

[[steps]]
name = "token"
kind = "secret"
secret = "token"
path = "{dir}/token"

[[steps]]
name = "stamp"
kind = "command"
run = "echo stamped > {dir}/stamp"
creates = "{dir}/stamp"
"#
    );
    if let Some(when) = apt {
        p.push_str(&format!(
            "\n[[steps]]\nname = \"tools\"\nkind = \"apt\"\npackages = [\"openssh-server\"]\n{when}\n"
        ));
    }
    p
}

fn text(r: &crate::support::Run) -> String {
    format!("{}{}", r.stdout, r.stderr)
}

#[test]
fn portable_steps_run_on_a_busybox_host_and_apt_is_refused_there() {
    let s = Scratch::new();
    let host = BusyBoxHost::start(s.dir.path(), "steps");

    // The host's userland is BusyBox's: every command on PATH is an applet (sshd aside), there
    // is no flock, getent, apt or dpkg-query, and the OS is not Debian's.
    let seen = host.ssh(
        ". /etc/os-release; echo \"os $ID ${ID_LIKE:-}\"; stat --help 2>&1 | head -n 1; \
         echo \"stat $(readlink -f /bin/stat)\"; \
         for t in flock getent apt-get dpkg-query sudo; do command -v $t >/dev/null && echo \"has $t\"; done; \
         for d in $(echo \"$PATH\" | tr : ' '); do for f in \"$d\"/*; do [ -e \"$f\" ] || continue; \
         [ \"$(readlink -f \"$f\")\" = /bin/busybox ] || echo \"other $f\"; done; done",
    );
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "os claw-busybox ", "{seen}");
    assert!(
        lines[1].starts_with("BusyBox v"),
        "`stat` is not BusyBox's:\n{seen}"
    );
    assert_eq!(lines[2], "stat /bin/busybox", "{seen}");
    assert_eq!(
        &lines[3..],
        ["other /usr/sbin/sshd"],
        "only BusyBox applets (and sshd) on PATH:\n{seen}"
    );

    s.file(
        "templates/app.conf.tera",
        "os = \"{{ facts.os_id }}\"\nhost = \"{{ facts.hostname }}\"\n",
    );
    let pb = s.file("portable.toml", &playbook("/srv/portable", None));
    let inv = host.inventory(&s, "inventory.toml", &pb);

    let plan = claw(&["plan", &inv, "--detailed-exitcode"], &[]);
    assert_eq!(plan.code, 2, "plan (changes pending):\n{}", text(&plan));
    for p in [
        "dir /srv/portable",
        "hello.txt",
        "app.conf",
        "token",
        "stamp",
    ] {
        assert!(plan.stdout.contains(p), "{p} in the plan:\n{}", text(&plan));
    }
    let apply = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(apply.code, 0, "apply:\n{}", text(&apply));
    let state = host.ssh(
        "cd /srv/portable && stat -c '%n %a %U %G' . hello.txt token && cat hello.txt app.conf stamp \
         && wc -c <token",
    );
    assert_eq!(
        state,
        ". 750 root root\nhello.txt 640 root root\ntoken 600 root root\n\
         hello from claw-busybox\nos = \"claw-busybox\"\nhost = \"bb\"\nstamped\n65\n",
        "the host after apply"
    );
    let again = claw(
        &[
            "apply",
            &inv,
            "--yes",
            "--detailed-exitcode",
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(again.code, 0, "second apply:\n{}", text(&again));
    let bb = again.host("bb");
    assert_eq!(
        (
            bb["changed"].as_u64(),
            bb["ok"].as_u64(),
            bb["failed"].as_u64()
        ),
        (Some(0), Some(5), Some(0)),
        "the second apply changes nothing: {bb}"
    );
    let plan = claw(&["plan", &inv, "--detailed-exitcode"], &[]);
    assert_eq!(plan.code, 0, "plan after apply:\n{}", text(&plan));
    assert!(plan.stdout.contains("no changes"), "{}", text(&plan));

    // An apt step: refused on this host before anything changes, naming the host and the step.
    let pb = s.file("mixed.toml", &playbook("/srv/mixed", Some("")));
    let inv = host.inventory(&s, "mixed-inventory.toml", &pb);
    let refused = "bb (".to_string()
        + &host.address
        + ") at tools: unsupported host for this step: \
         kind `apt` needs apt and dpkg (Debian, Ubuntu and their derivatives), and the host runs \
         `claw-busybox` 1";
    for cmd in [&["plan", &inv][..], &["apply", &inv, "--yes"]] {
        let r = claw(cmd, &[]);
        assert_eq!(r.code, 1, "{cmd:?}:\n{}", text(&r));
        assert!(text(&r).contains(&refused), "{cmd:?}:\n{}", text(&r));
    }
    assert_eq!(
        host.ssh("[ -e /srv/mixed ] && echo changed || echo untouched"),
        "untouched\n"
    );
    // With a `when` that leaves non-Debian hosts out, the same playbook runs there.
    let pb = s.file(
        "mixed-when.toml",
        &playbook("/srv/mixed", Some("when = \"facts.os_id == 'debian'\"")),
    );
    let inv = host.inventory(&s, "mixed-when-inventory.toml", &pb);
    let r = claw(&["apply", &inv, "--yes", "--output", "json"], &[]);
    assert_eq!(
        r.code,
        0,
        "apply, apt step left out by `when`:\n{}",
        text(&r)
    );
    let bb = r.host("bb");
    assert_eq!(
        (bb["changed"].as_u64(), bb["skipped"].as_u64()),
        (Some(5), Some(1)),
        "{bb}"
    );
    assert_eq!(
        host.ssh("cat /srv/mixed/hello.txt"),
        "hello from claw-busybox\n"
    );

    // A fleet of this host and a Debian one (a light lab host, where the package is installed):
    // the apt step is refused here only; the Debian host applies the playbook as before.
    let lab = Lab::up("t-portable", 1);
    let kh = std::fs::read_to_string(lab.dir.join("known_hosts")).unwrap()
        + &std::fs::read_to_string(&host.known_hosts).unwrap();
    let kh = s.file("fleet_known_hosts", &kh);
    let pb = s.file("fleet.toml", &playbook("/opt/portable-fleet", Some("")));
    let inv = lab.write_inventory(
        "portable-fleet.toml",
        &pb,
        &[("known_hosts", &format!("{:?}", kh.display().to_string()))],
    );
    let mut text_inv = std::fs::read_to_string(&inv).unwrap();
    text_inv.push_str(&format!(
        "\n[hosts.bb]\naddress = {:?}\nuser = \"root\"\nidentity_file = {:?}\nbecome = false\n",
        host.address,
        host.key.display().to_string()
    ));
    std::fs::write(&inv, text_inv).unwrap();
    let r = claw(
        &["apply", inv.to_str().unwrap(), "--yes", "--output", "json"],
        &[],
    );
    assert_eq!(r.code, 1, "fleet apply:\n{}", text(&r));
    let (h1, bb) = (r.host("h1"), r.host("bb"));
    assert_eq!(
        (
            h1["state"].as_str(),
            h1["changed"].as_u64(),
            h1["ok"].as_u64()
        ),
        (Some("changed"), Some(5), Some(1)),
        "the Debian host: {h1}"
    );
    assert_eq!(
        (
            bb["state"].as_str(),
            bb["failed_at"].as_str(),
            bb["changed"].as_u64()
        ),
        (Some("failed"), Some("tools"), Some(0)),
        "the BusyBox host: {bb}"
    );
    assert!(
        bb["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("unsupported host for this step: kind `apt`")),
        "{bb}"
    );
    assert_eq!(
        lab.ssh_ok("h1", "sudo cat /opt/portable-fleet/hello.txt"),
        "hello from debian\n"
    );
    assert_eq!(
        host.ssh("[ -e /opt/portable-fleet ] && echo changed || echo untouched"),
        "untouched\n"
    );
}

/// Waits (up to `limit`) until `f` is true.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const LOCKD: &str = "/var/lib/claw-provision/lock/apply.lockd";

#[test]
fn the_apply_lock_works_without_flock() {
    let s = Scratch::new();
    let host = BusyBoxHost::start(s.dir.path(), "lock");
    let slow = s.file(
        "slow.toml",
        "name = \"slow\"\n\n[[steps]]\nname = \"s\"\nkind = \"command\"\nrun = \"sleep 8\"\n",
    );
    let slow_inv = host.inventory(&s, "slow-inventory.toml", &slow);
    let quick = s.file(
        "quick.toml",
        "name = \"quick\"\n\n[[steps]]\nname = \"mark\"\nkind = \"command\"\n\
         run = \"echo x >> /root/quick-runs\"\n",
    );
    let inv = host.inventory(&s, "quick-inventory.toml", &quick);
    let apply = |extra: &[&str]| {
        let mut args = vec!["apply", inv.as_str(), "--yes", "--output", "json"];
        args.extend_from_slice(extra);
        claw(&args, &[])
    };
    let link = || host.ssh(&format!("readlink {LOCKD} || true"));
    let runs = || {
        host.ssh("cat /root/quick-runs 2>/dev/null | wc -l")
            .trim()
            .to_string()
    };
    let start_slow = || {
        let r = claw_spawn(&["apply", &slow_inv, "--yes", "--output", "json"], &[]);
        wait_for("the slow run's lock", Duration::from_secs(20), || {
            !link().trim().is_empty()
        });
        r
    };

    // A run holds the lock (the link names its holder as PID:START): a second one is refused,
    // with the message a host with flock gives, and changes nothing.
    let running = start_slow();
    let named = link();
    let (pid, start) = named.trim().split_once(':').expect("PID:START");
    assert_eq!(
        host.ssh(&format!(
            "sed 's/.*) //' /proc/{pid}/stat | cut -d ' ' -f 20"
        ))
        .trim(),
        start,
        "the link names the holder's start time"
    );
    let r = apply(&[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let e = r.host("bb")["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("another apply holds this host: ") && e.contains("playbook slow"),
        "{e}"
    );
    assert!(e.contains("break the lock with --force-unlock"), "{e}");
    assert_eq!(runs(), "0");
    let r = running.wait();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    wait_for("the link to go", Duration::from_secs(10), || {
        link().trim().is_empty()
    });

    // Stale links are replaced: a dead process's, an older form (a bare pid), a live process
    // that is not a lock holder (with its real start time), a live process that looks like one
    // (root's, `claw-lock` in its command line) but started at another time (its pid reused),
    // one that looks like one but is another account's (`nobody`), and a guard left by a
    // killed run.
    let live = |cmd: &str, start: &str| {
        format!(
            "{cmd} </dev/null >/dev/null 2>&1 & p=$!; sleep 0.5; \
             ln -s \"$p:{start}\" {LOCKD}; [ -d /proc/$p ] && echo live"
        )
    };
    let real = "$(sed 's/.*) //' /proc/$p/stat | cut -d ' ' -f 20)";
    let stale = [
        format!("ln -s 4194000:1 {LOCKD}"),
        format!("ln -s 1 {LOCKD}"),
        live("sleep 600", real),
        live("sh -c 'sleep 600; true' claw-lock", "1"),
        live(
            "su -s /bin/sh -c 'exec sh -c \"sleep 600; true\" claw-lock' nobody",
            real,
        ),
        format!("ln -s 4194000:1 {LOCKD} && ln -s 4194001:2 {LOCKD}.break"),
    ];
    for (n, make) in stale.iter().enumerate() {
        let said = host.ssh(make);
        let expected = if (2..=4).contains(&n) { "live\n" } else { "" };
        assert_eq!(said, expected, "{make}");
        let r = apply(&[]);
        assert_eq!(r.code, 0, "{make}:\n{}\n{}", r.stdout, r.stderr);
        assert_eq!(runs(), (n + 1).to_string(), "{make}");
        wait_for("the link to go", Duration::from_secs(10), || {
            link().trim().is_empty()
        });
        assert_eq!(
            host.ssh("ls -A /var/lib/claw-provision/lock | grep lockd || true"),
            "",
            "{make}: nothing left"
        );
    }

    // --force-unlock ends the holding run and takes the lock, naming that run.
    let running = start_slow();
    let r = apply(&["--force-unlock"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let broken: Vec<serde_json::Value> = r
        .events()
        .into_iter()
        .filter(|e| e["event"] == "lock_broken")
        .collect();
    assert_eq!(broken.len(), 1, "{}", r.stdout);
    assert!(
        broken[0]["holder"]
            .as_str()
            .is_some_and(|h| h.contains("playbook slow")),
        "{}",
        broken[0]
    );
    assert_eq!(runs(), (stale.len() + 1).to_string());
    let r = running.wait();
    assert_ne!(
        r.code, 0,
        "the ended run fails:\n{}\n{}",
        r.stdout, r.stderr
    );
}
