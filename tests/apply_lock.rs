//! The apply lock against the target's other users (issue 16): the lock directory and files are
//! root's only, so an unprivileged account cannot hold the host; the `0644` lock that older
//! versions left behind, held open and locked by such an account, blocks nothing; a root process
//! holding it (an older version applying) is respected, and broken by `--force-unlock`, which
//! names the run it ended; two applies with `--force-unlock` started together never run at once.

use crate::support::{Lab, Run, claw, claw_spawn, repo};
use std::process::Command;
use std::time::{Duration, Instant};

/// `lab.sh exec HOST -- sh -c CMD` (root in the host's namespaces); stdout.
fn exec(lab: &Lab, cmd: &str) -> String {
    let o = Command::new("bash")
        .arg(repo().join("tests/lab/lab.sh"))
        .args(["exec", "h1", "--name", &lab.name, "--", "sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const PB: &str = r#"name = "lock"

[[steps]]
name = "mark"
kind = "command"
run = "date +%s%N >> /opt/lock-runs"
"#;

fn lab_with(name: &str, playbook: &str) -> (Lab, String) {
    let lab = Lab::up(name, 1);
    let pb = lab.dir.join(format!("{name}.toml"));
    std::fs::write(&pb, playbook).unwrap();
    let inv = lab.write_inventory(&format!("{name}-inv.toml"), &pb, &[]);
    (lab, inv.to_str().unwrap().to_string())
}

fn apply(inv: &str, extra: &[&str]) -> Run {
    let mut args = vec!["apply", inv, "--yes", "--output", "json"];
    args.extend_from_slice(extra);
    claw(&args, &[])
}

/// As an older version left the host: `/var/lib/claw-provision/apply.lock`, 0644, root's.
const OLD_LAYOUT: &str = "mkdir -p -m 0755 /var/lib/claw-provision && \
    : > /var/lib/claw-provision/apply.lock && chmod 0644 /var/lib/claw-provision/apply.lock";

/// Whether a process holds an flock on the old lock file.
fn old_lock_busy(lab: &Lab) -> bool {
    exec(
        lab,
        "flock -n /var/lib/claw-provision/apply.lock true && echo free || echo busy",
    )
    .trim()
        == "busy"
}

#[test]
fn other_accounts_cannot_hold_the_host_and_the_old_lock_blocks_nothing() {
    let (lab, inv) = lab_with("lock-old", PB);
    // `nobody` opens the old 0644 lock and holds its flock, for ten minutes.
    exec(&lab, OLD_LAYOUT);
    exec(
        &lab,
        "setsid -f setpriv --reuid=nobody --regid=nogroup --clear-groups \
         flock /var/lib/claw-provision/apply.lock sleep 600 </dev/null >/dev/null 2>&1",
    );
    wait_for("nobody's lock", Duration::from_secs(10), || {
        old_lock_busy(&lab)
    });
    let t = Instant::now();
    let r = apply(&inv, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["changed"], 1, "{}", r.stdout);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // --force-unlock does not wait for nobody either (and leaves that process alone: it is not
    // a run).
    let r = apply(&inv, &["--force-unlock"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        !r.stdout.contains("lock_broken"),
        "nothing was broken: {}",
        r.stdout
    );
    assert!(old_lock_busy(&lab), "nobody's process was not ours to end");

    // Root-only now: the directory 0700, its files 0600, root's; the old file too.
    let modes = exec(
        &lab,
        "cd /var/lib/claw-provision && stat -c '%n %a %U %F' . lock lock/apply.lock apply.lock",
    );
    let modes: Vec<&str> = modes.lines().collect();
    assert_eq!(modes[0], ". 755 root directory", "{modes:?}");
    assert_eq!(modes[1], "lock 700 root directory", "{modes:?}");
    assert!(
        modes[2].starts_with("lock/apply.lock 600 root regular"),
        "{modes:?}"
    );
    assert!(
        modes[3].starts_with("apply.lock 600 root regular"),
        "{modes:?}"
    );
    // nobody can neither open the new lock nor list its directory.
    let denied = exec(
        &lab,
        "for c in 'flock -n /var/lib/claw-provision/lock/apply.lock true' \
                  'ls /var/lib/claw-provision/lock' 'flock -n /var/lib/claw-provision/apply.lock true'; do \
           setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c \"$c\" 2>/dev/null && echo allowed || echo denied; \
         done",
    );
    assert_eq!(
        denied.lines().collect::<Vec<_>>(),
        ["denied", "denied", "denied"]
    );

    // A lock directory that is not root's plain directory (a link to a canary directory here)
    // is refused, never followed; the canary is left alone.
    exec(
        &lab,
        "rm -rf /var/lib/claw-provision/lock && mkdir -p /opt/canary && chmod 0777 /opt/canary && \
         ln -s /opt/canary /var/lib/claw-provision/lock",
    );
    let r = apply(&inv, &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let e = r.host("h1")["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("/var/lib/claw-provision/lock is not a directory of root's (symbolic link"),
        "{e}"
    );
    assert_eq!(exec(&lab, "ls -A /opt/canary | wc -l"), "0\n");
    exec(&lab, "rm /var/lib/claw-provision/lock");
    let r = apply(&inv, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        exec(&lab, "stat -c '%a %U %F' /var/lib/claw-provision/lock"),
        "700 root directory\n"
    );

    // A state directory another account owns: refused, naming it; nothing made in it.
    exec(
        &lab,
        "mv /var/lib/claw-provision /var/lib/claw-provision.real && \
         mkdir -m 0755 /var/lib/claw-provision && chown nobody /var/lib/claw-provision",
    );
    let r = apply(&inv, &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let h = r.host("h1");
    assert_eq!(h["failed_at"], "lock", "{h}");
    let e = h["error"].as_str().unwrap();
    assert!(
        e.contains("cannot take the apply lock")
            && e.contains("/var/lib/claw-provision is not a directory of root's")
            && e.contains("owner uid 65534"),
        "{e}"
    );
    assert_eq!(exec(&lab, "ls -A /var/lib/claw-provision | wc -l"), "0\n");
    exec(
        &lab,
        "rmdir /var/lib/claw-provision && mv /var/lib/claw-provision.real /var/lib/claw-provision",
    );
}

/// An older version's apply, as it holds the lock: root's flock on the old file, its
/// description in the old `apply.holder`, tied to a live SSH connection. Returns that ssh
/// client.
fn older_version_apply(lab: &Lab) -> std::process::Child {
    let script = r#"sudo sh -c '
        exec 9>>/var/lib/claw-provision/apply.lock; flock 9 || exit 1
        p=$$; conn=
        while [ "$p" -gt 1 ]; do
          read -r c < /proc/$p/comm; case $c in sshd|sshd-session) conn=$p; break ;; esac
          p=$(sed -n "s/^PPid:[[:space:]]*//p" /proc/$p/status)
        done
        printf "ann@old-laptop pid 4242, playbook legacy since 2026-01-01T00:00:00Z\nconn=%s\nclient=old:4242:1\n" "$conn" \
          > /var/lib/claw-provision/apply.holder
        echo $$ > /opt/old-run.pid
        exec sleep 600'"#;
    Command::new("ssh")
        .arg("-F")
        .arg(lab.dir.join("ssh_config"))
        .args(["h1", script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn an_older_versions_apply_is_respected_and_force_unlock_ends_it() {
    let (lab, inv) = lab_with("lock-older", PB);
    exec(&lab, OLD_LAYOUT);
    let mut old = older_version_apply(&lab);
    wait_for("the older version's lock", Duration::from_secs(20), || {
        old_lock_busy(&lab)
            && exec(&lab, "cat /var/lib/claw-provision/apply.holder 2>/dev/null").contains("conn=")
    });
    let r = apply(&inv, &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let e = r.host("h1")["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("another apply holds this host: ann@old-laptop pid 4242, playbook legacy"),
        "{e}"
    );
    assert_eq!(exec(&lab, "cat /opt/lock-runs 2>/dev/null | wc -l"), "0\n");

    // --force-unlock ends that run (its connection and what it runs), names it, and applies.
    let r = apply(&inv, &["--force-unlock"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let broken: Vec<serde_json::Value> = r
        .events()
        .into_iter()
        .filter(|e| e["event"] == "lock_broken")
        .collect();
    assert_eq!(broken.len(), 1, "{}", r.stdout);
    assert_eq!(broken[0]["host"], "h1");
    assert!(
        broken[0]["holder"]
            .as_str()
            .unwrap()
            .starts_with("ann@old-laptop pid 4242"),
        "{}",
        broken[0]
    );
    let t = Instant::now();
    while old.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the older run's connection was not ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(exec(&lab, "wc -l < /opt/lock-runs"), "1\n");
    // While this version applies, it holds the old lock too: an older version would wait.
    let slow = lab.dir.join("slow.toml");
    std::fs::write(
        &slow,
        "name = \"slow\"\n\n[[steps]]\nname = \"s\"\nkind = \"command\"\nrun = \"sleep 6\"\n",
    )
    .unwrap();
    let slow_inv = lab.write_inventory("slow-inv.toml", &slow, &[]);
    let running = claw_spawn(
        &[
            "apply",
            slow_inv.to_str().unwrap(),
            "--yes",
            "--output",
            "json",
        ],
        &[],
    );
    wait_for("the new version's lock", Duration::from_secs(20), || {
        exec(
            &lab,
            "test -s /var/lib/claw-provision/lock/apply.holder && echo held || true",
        )
        .contains("held")
    });
    assert!(old_lock_busy(&lab), "the old lock is free during an apply");
    let r = running.wait();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    wait_for("the old lock to be free", Duration::from_secs(10), || {
        !old_lock_busy(&lab)
    });
    // The older run's `sleep` (holding the old lock) went with it.
    assert_eq!(
        exec(
            &lab,
            "kill -0 $(cat /opt/old-run.pid) 2>/dev/null && echo alive || echo gone"
        ),
        "gone\n",
        "a process of the ended run is still there"
    );
}

/// The step records every moment another run's step is alive while it runs (two seconds, checked
/// every 0.2 s): any overlap of two applies' steps leaves a line in /opt/lk/overlap.
const OVERLAP_PB: &str = r#"name = "overlap"

[[steps]]
name = "lk"
kind = "dir"
path = "/opt/lk"

[[steps]]
name = "exclusive"
kind = "command"
run = """
check() {
  for f in /opt/lk/run.*; do
    [ -e "$f" ] || continue
    p=${f##*.}
    [ "$p" = $$ ] || ! kill -0 "$p" 2>/dev/null || echo "$$ saw $p" >> /opt/lk/overlap
  done
}
check
echo $$ > /opt/lk/run.$$
i=0
while [ $i -lt 40 ]; do check; sleep 0.2; i=$((i + 1)); done
rm -f /opt/lk/run.$$
echo $$ >> /opt/lk/done
"""
"#;

#[test]
fn applies_with_force_unlock_started_together_never_overlap() {
    let (lab, inv) = lab_with("lock-force", OVERLAP_PB);
    for round in 0..2 {
        let runs: Vec<_> = (0..3)
            .map(|_| {
                claw_spawn(
                    &["apply", &inv, "--yes", "--force-unlock", "--output", "json"],
                    &[],
                )
            })
            .collect();
        let pids: Vec<u32> = runs.iter().map(crate::support::Running::id).collect();
        let results: Vec<Run> = runs
            .into_iter()
            .map(crate::support::Running::wait)
            .collect();
        let overlap = exec(&lab, "cat /opt/lk/overlap 2>/dev/null || true");
        assert_eq!(overlap, "", "round {round}: two applies ran at once");
        // The last one standing completed its step; every run it ended is named by the run
        // that ended it, with its pid.
        let ok: Vec<&Run> = results.iter().filter(|r| r.code == 0).collect();
        assert!(!ok.is_empty(), "round {round}: none completed");
        for (r, pid) in results.iter().zip(&pids) {
            if r.code == 0 {
                continue;
            }
            let named = results.iter().any(|o| {
                o.events().iter().any(|e| {
                    e["event"] == "lock_broken"
                        && e["holder"]
                            .as_str()
                            .unwrap_or("")
                            .contains(&format!("pid {pid},"))
                })
            });
            let refused = r.stdout.contains("did not let go");
            assert!(
                named || refused,
                "round {round}: run {pid} failed unexplained:\n{}\n{}",
                r.stdout,
                r.stderr
            );
        }
    }
    assert!(
        !exec(&lab, "cat /opt/lk/done").is_empty(),
        "some step completed"
    );
}
