//! A hostile owner of a secret's directory (issue 16, fix S2). On a light host an unprivileged
//! account (`fixreader`) owns /srv/fixread/app, where a `secret` step keeps its file and a
//! `file` step renders the value into a file that account can read. Right before the probe
//! reads the secret back, the account swaps the secret file for a link to a root-only canary
//! (a PATH shim for `stat`, bound over /usr/local/sbin in the host's mount namespace only, so
//! the swap lands between the probe's check and its read every time). The canary's content
//! never appears in any output nor in any file the run wrote on the host, the canary is
//! unchanged, no new value is generated over the link, and the run stops with an error naming
//! the host and the secret step.

use crate::support::{Lab, Scratch, claw};

fn exec(lab: &Lab, script: &str) -> String {
    let o = lab.exec("h1", &["sh", "-c", script]);
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const PLAYBOOK: &str = r#"name = "hostile-read"
hosts = "h1"

[[steps]]
name = "db password"
kind = "secret"
secret = "db_pw"
path = "/srv/fixread/app/db_pw"

[[steps]]
name = "app config"
kind = "file"
path = "/srv/fixread/app/config"
mode = "0644"
content = "DB_PW={{ secrets.db_pw }}\n"
"#;

/// The shim for `TOOL`: when its arguments match `PATTERN`, `fixreader` first swaps the secret
/// for a link to the canary (once), then the real tool runs.
fn shim(tool: &str, pattern: &str) -> String {
    format!(
        r#"#!/bin/sh
# test shim: the other account wins the race right before root's {tool}
case "$*" in
  {pattern})
    setpriv --reuid=fixreader --regid=fixreader --clear-groups sh -c '
      cd /srv/fixread/app && [ ! -L db_pw ] && mv -f db_pw db_pw.old && ln -s /root/fixread-canary db_pw && echo swapped' >> /opt/fixread-shim.log 2>&1 ;;
esac
exec /usr/bin/{tool} "$@"
"#
    )
}

#[test]
fn fixread_secret_swapped_for_a_link_is_never_read() {
    let lab = Lab::up("fixread-read", 1);
    // The canary: random content known to the test, root-only.
    let canary = exec(
        &lab,
        "id fixreader >/dev/null 2>&1 || useradd -M -s /bin/sh fixreader
         install -d -m 0755 /srv/fixread && install -d -o fixreader -g fixreader -m 0755 /srv/fixread/app
         { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; } > /root/fixread-canary
         chmod 0600 /root/fixread-canary && cat /root/fixread-canary",
    );
    // As long as the secret's file (64 hex digits and a newline): a size check cannot save a
    // read that follows the link.
    assert_eq!(canary.len(), 65, "{canary}");
    let canary = canary.trim().to_string();
    let canary_state = || {
        exec(
            &lab,
            "stat -c '%F %a %U:%G' /root/fixread-canary && cat /root/fixread-canary",
        )
    };
    let before = canary_state();
    // The forms the value could take on its way out: as it is, as `od` prints its first bytes.
    let hex: String = canary
        .bytes()
        .take(8)
        .map(|b| format!(" {b:02x}"))
        .collect();
    let s = Scratch::new();
    let inv = lab.write_inventory("read.toml", &s.file("read.toml", PLAYBOOK), &[]);
    let inv = inv.to_str().unwrap();

    // A first apply generates the secret (root's 0600 file in fixreader's directory).
    let r = claw(&["apply", inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let value = exec(&lab, "cat /srv/fixread/app/db_pw");
    assert_eq!(value.trim().len(), 64);

    let mut outs = String::new();
    // `stat`: the swap lands between the probe's check of the name and its `stat` (after the
    // open): the secret is refused. `od`: the swap lands right before the read (older versions
    // then read the canary as the value): the value is still the real one, read from the fd.
    for (tool, pattern, refused) in [
        ("stat", "*db_pw*", true),
        ("od", "*db_pw*|*/proc/self/fd/*", false),
    ] {
        exec(
            &lab,
            &format!(
                "rm -rf /opt/fixread-shim && mkdir -p /opt/fixread-shim && printf '%s' '{}' > /opt/fixread-shim/{tool}
                 chmod 755 /opt/fixread-shim/{tool} && mount --bind /opt/fixread-shim /usr/local/sbin",
                shim(tool, pattern).replace('\'', "'\\''")
            ),
        );
        for args in [vec!["plan", inv], vec!["apply", inv, "--yes"]] {
            // Each run starts from the real secret file, swapped again by the shim.
            exec(
                &lab,
                ": > /opt/fixread-shim.log; cd /srv/fixread/app && if [ -L db_pw ]; then rm -f db_pw && mv -f db_pw.old db_pw; fi",
            );
            let r = claw(&args, &[]);
            let log = exec(&lab, "cat /opt/fixread-shim.log");
            let out = format!("{}{}", r.stdout, r.stderr);
            assert!(
                log.contains("swapped"),
                "{tool} {args:?}: the swap happened\n{log}\n{out}"
            );
            assert!(!out.contains("panicked"), "{out}");
            if refused {
                assert_ne!(r.code, 0, "{tool} {args:?}: {out}");
                assert!(
                    out.lines()
                        .any(|l| l.contains("error: h1 (") && l.contains("db password")),
                    "{tool} {args:?}: an error naming h1 and the step\n{out}"
                );
            } else {
                assert_eq!(r.code, 0, "{tool} {args:?}: {out}");
            }
            outs.push_str(&out);
        }
        exec(&lab, "umount /usr/local/sbin");
    }
    assert!(!outs.contains(&canary) && !outs.contains(&hex), "{outs}");
    // The files the run wrote on the host: the app's directory (config unchanged, no value
    // generated over the link) and claw-provision's state.
    let written = exec(
        &lab,
        "cat /srv/fixread/app/config; ls -la /srv/fixread/app; readlink /srv/fixread/app/db_pw; \
         grep -rl -- \"$(cat /root/fixread-canary)\" /srv/fixread /var/lib/claw-provision 2>/dev/null || true",
    );
    assert!(!written.contains(&canary), "{written}");
    assert!(
        written.starts_with(&format!("DB_PW={}", value.trim())),
        "{written}"
    );
    assert!(
        written.contains("/root/fixread-canary"),
        "the link is still there: {written}"
    );
    assert_eq!(canary_state(), before);
    // Nor anything the client wrote locally (saved plans, audit, known_hosts...).
    let local = std::process::Command::new("grep")
        .args(["-rl", "--", &canary])
        .arg(s.dir.path())
        .arg(&lab.dir)
        .output()
        .unwrap();
    // (The lab's directory holds the hosts' private trees, the canary's own home among them.)
    let local = String::from_utf8_lossy(&local.stdout);
    let found: Vec<&str> = (local.lines()).filter(|l| !l.contains("/hosts/")).collect();
    assert!(found.is_empty(), "{found:?}");
}
