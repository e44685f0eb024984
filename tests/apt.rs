//! `apt` and `apt_repo` on real hosts.
//!
//! Light hosts share the machine's /usr, so nothing is installed or removed there: only the
//! no-op path (packages the machine has) is checked, and that it runs nothing but the probe.
//! Installing, removing and waiting for locks run on ONE full host (Debian trixie container
//! whose only reachable repository is the lab's signed mirror).

use crate::support::{Lab, Run, Scratch, claw, log_len, sshd_counts};
use std::process::{Child, Command, Stdio};

#[test]
fn installed_packages_are_a_noop_without_an_index_refresh() {
    let lab = Lab::up("t-apt", 1);
    let s = Scratch::new();
    let pb = s.file(
        "apt.toml",
        r#"name = "apt on a light host"

[[steps]]
name = "base packages"
kind = "apt"
packages = ["sudo", "openssh-server", "sudo"]

[[steps]]
name = "never installed"
kind = "apt"
packages = ["claw-no-such-package"]
state = "absent"
purge = true
"#,
    );
    let inv = lab.write_inventory("apt.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let lists = "stat -c '%n %Y %Z' /var/lib/apt/lists /var/lib/apt/lists/* /var/cache/apt 2>&1; ls -la /var/log/apt 2>&1";
    let before = lab.ssh_ok("h1", lists);

    let plan = claw(&["plan", inv, "--output", "json"], &[]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    let steps = plan
        .events()
        .into_iter()
        .find(|e| e["event"] == "plan")
        .expect("plan event")["steps"]
        .clone();
    let reason = steps[0]["reason"].as_str().unwrap();
    assert!(
        steps[0]["action"] == "ok"
            && reason.starts_with("installed: sudo ")
            && reason.contains(", openssh-server "),
        "{steps}"
    );
    assert_eq!(
        steps[1]["reason"],
        "not installed, no configuration files left"
    );

    let log = lab.host("h1").sshd_log;
    let from = log_len(&log);
    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["changed"], 0, "{}", r.stdout);
    assert_eq!(
        sshd_counts(&log, from),
        (1, 1),
        "one connection, one round trip (the probe): no apt-get ran"
    );
    assert_eq!(lab.ssh_ok("h1", lists), before, "the index was not touched");
}

/// The full host's lab: the mirror's URL and key file.
fn mirror(lab: &Lab) -> (String, Vec<u8>) {
    let url = lab.json["mirror"]["url"].as_str().expect("mirror url");
    let key = std::fs::read(lab.json["mirror"]["key"].as_str().expect("mirror key")).unwrap();
    (url.to_string(), key)
}

fn apply(inv: &std::path::Path) -> Run {
    claw(
        &["apply", inv.to_str().unwrap(), "--yes", "--output", "json"],
        &[],
    )
}

fn ok(r: &Run, changed: u64) {
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["changed"], changed, "{}", r.stdout);
}

/// Starts, on the host, a process holding `locks` (fcntl locks, as apt and dpkg take them) until
/// `/run/claw-release-NAME` exists; returns once the locks are held.
fn hold(lab: &Lab, name: &str, locks: &[&str]) {
    let mut cmd = String::new();
    for l in locks {
        cmd.push_str(&format!("flock --fcntl {l} "));
    }
    let script = format!(
        "rm -f /run/claw-release-{name}; touch {locks}; setsid {cmd}sh -c 'while [ ! -e /run/claw-release-{name} ]; do sleep 0.2; done' >/dev/null 2>&1 </dev/null & \
         for l in {locks}; do until ! flock --fcntl -n $l true; do sleep 0.1; done; done",
        locks = locks.join(" ")
    );
    lab.ssh_ok("h1", &format!("sudo sh -c {}", shell_quote(&script)));
}

fn release(lab: &Lab, name: &str) {
    lab.ssh_ok("h1", &format!("sudo touch /run/claw-release-{name}"));
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Waits (bounded) until `check` (a shell test run on the host) succeeds.
fn wait_on_host(lab: &Lab, what: &str, check: &str) {
    let script =
        format!("for i in $(seq 600); do if {check}; then exit 0; fi; sleep 0.2; done; exit 1");
    let o = lab.ssh("h1", &format!("sudo sh -c {}", shell_quote(&script)));
    assert!(
        o.status.success(),
        "never saw: {what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn spawn_apply(inv: &std::path::Path) -> Child {
    Command::new(crate::support::bin())
        .args(["apply", inv.to_str().unwrap(), "--yes", "--output", "json"])
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> Run {
    let o = child.wait_with_output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn installed(lab: &Lab, pkg: &str) -> bool {
    lab.ssh_ok(
        "h1",
        &format!("dpkg-query -W -f '${{db:Status-Abbrev}}' {pkg} 2>/dev/null; true"),
    ) == "ii "
}

#[test]
fn packages_from_the_lab_mirror_install_remove_and_wait_for_locks() {
    let lab = Lab::up_full("f-apt", 1);
    let (url, key) = mirror(&lab);
    let s = Scratch::new();
    s.file("keys/lab-mirror.asc", &String::from_utf8(key).unwrap());
    let playbook = |file: &str, steps: &str| {
        let p = s.file(
            file,
            &format!(
                "name = \"apt\"\n\n[vars]\nmirror = \"{url}\"\nsuite = \"trixie\"\n\n[[steps]]\nname = \"lab mirror\"\nkind = \"apt_repo\"\nrepo = \"claw-lab\"\nurl = \"{{{{ mirror }}}}\"\nsuite = \"{{{{ facts.os_codename }}}}\"\nkey = \"keys/lab-mirror.asc\"\n\n{steps}"
            ),
        );
        lab.write_inventory(file, &p, &[])
    };
    let git = |state: &str, extra: &str| {
        format!(
            "[[steps]]\nname = \"git\"\nkind = \"apt\"\npackages = [\"git\"]\nstate = \"{state}\"\n{extra}"
        )
    };

    // A fresh host: no repository at all, no git.
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | grep -c . || true"
        ),
        "0\n"
    );
    assert!(!installed(&lab, "git"));

    // The repository with its key, then git from it.
    let present = playbook("present.toml", &git("present", "lock_timeout = \"2m\"\n"));
    let plan = claw(&["plan", present.to_str().unwrap()], &[]);
    assert!(
        plan.stdout.contains("+ create  apt git: install git")
            && plan
                .stdout
                .contains("+ create  apt_repo claw-lab: create /etc/apt/keyrings/claw-lab.asc"),
        "{}",
        plan.stdout
    );
    ok(&apply(&present), 2);
    assert!(installed(&lab, "git"));
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "stat -c '%a %U %n' /etc/apt/keyrings/claw-lab.asc /etc/apt/sources.list.d/claw-lab.sources; grep -E '^(URIs|Signed-By):' /etc/apt/sources.list.d/claw-lab.sources"
        ),
        format!(
            "644 root /etc/apt/keyrings/claw-lab.asc\n644 root /etc/apt/sources.list.d/claw-lab.sources\nURIs: {url}\nSigned-By: /etc/apt/keyrings/claw-lab.asc\n"
        )
    );
    lab.ssh_ok("h1", "git --version");

    // Second apply: nothing to do, and the index is not refreshed.
    let lists = "stat -c '%n %Y' /var/lib/apt/lists /var/lib/apt/lists/*";
    let before = lab.ssh_ok("h1", lists);
    ok(&apply(&present), 0);
    assert_eq!(lab.ssh_ok("h1", lists), before, "no apt-get update");

    // Removal refuses to take an unlisted package along (git depends on git-man).
    let gitman = playbook(
        "gitman.toml",
        "[[steps]]\nname = \"git-man\"\nkind = \"apt\"\npackages = [\"git-man\"]\nstate = \"absent\"\n",
    );
    let r = apply(&gitman);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let err = r.host("h1")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("removing git-man would also remove git"),
        "{err}\n{}",
        r.stdout
    );
    assert!(installed(&lab, "git-man") && installed(&lab, "git"));

    // Removal, then a no-op.
    let absent = playbook("absent.toml", &git("absent", ""));
    ok(&apply(&absent), 1);
    assert!(!installed(&lab, "git"));
    ok(&apply(&absent), 0);

    // Another process holds the index lock and then the dpkg frontend lock (as
    // unattended-upgrades does): apply waits for each and succeeds once they are released.
    hold(&lab, "lists", &["/var/lib/apt/lists/lock"]);
    hold(&lab, "dpkg", &["/var/lib/dpkg/lock-frontend"]);
    let child = spawn_apply(&present);
    // `apt-get update` failed on the busy lock and the script waits to retry.
    wait_on_host(
        &lab,
        "the apply retrying apt-get update",
        // (`claw_dead[l]ine` matches the apply's script, not this check's own command line)
        "for p in $(pgrep -x sleep); do grep -qa 'claw_dead[l]ine' /proc/$(ps -o ppid= -p $p | tr -d ' ')/cmdline 2>/dev/null && exit 0; done; false",
    );
    release(&lab, "lists");
    wait_on_host(
        &lab,
        "apt-get install waiting for the dpkg lock",
        "pgrep -f 'apt-get -q -o DPkg::Lock::Timeout=[0-9]+ install' >/dev/null",
    );
    assert!(!installed(&lab, "git"), "still waiting");
    release(&lab, "dpkg");
    ok(&finish(child), 1);
    assert!(installed(&lab, "git"));

    // Held beyond lock_timeout: a clear error naming the lock; nothing removed.
    hold(&lab, "stuck", &["/var/lib/dpkg/lock-frontend"]);
    let quick = playbook("quick.toml", &git("absent", "lock_timeout = \"3s\"\n"));
    let r = apply(&quick);
    release(&lab, "stuck");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let err = r.host("h1")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("removing git: the lock /var/lib/dpkg/lock-frontend is still held")
            && err.contains("after waiting 3s (lock_timeout)"),
        "{err}\n{}",
        r.stdout
    );
    assert!(installed(&lab, "git"));
}
