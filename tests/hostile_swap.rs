//! The target's other accounts are the adversary. On a light host an unprivileged account
//! (`swapper`, made with useradd in the host's private /etc) owns a managed directory,
//! /srv/swaptest/app, on a small tmpfs mounted in the host's mount namespace. It tries:
//!
//! - the symlink swap during a held confirmation prompt: after the plan, before the answer, it
//!   replaces a managed file, a managed directory and an uploaded file by links to root's
//!   canaries (/root/canary, /root/canarydir, made by the test, 0600/0700 root:root);
//! - the same swap at the worst moment: a PATH shim (bound over /usr/local/sbin, first in the
//!   remote PATH, inside the host's mount namespace only) that, right before each `chown`,
//!   `chgrp`, `chmod` and `mv` root runs, swaps every entry of the directory (the managed names
//!   and the upload's temporary one) for a link to a canary;
//! - filling the directory's file system so an upload cannot be written.
//!
//! Each time the canaries keep their content, mode and owner; a refused change is an error
//! naming the host and the step; a failed upload leaves the old file whole and no temp file.

use crate::support::{Lab, Scratch, bin};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs a sh script as root in the host's namespaces; it must succeed.
fn exec(lab: &Lab, host: &str, script: &str) -> String {
    let o = lab.exec(host, &["sh", "-c", script]);
    assert!(
        o.status.success(),
        "{host}: {script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A script run as `swapper` (the unprivileged account) in the host.
fn as_swapper(script: &str) -> String {
    format!(
        "setpriv --reuid=swapper --regid=swapper --clear-groups sh -c {}",
        shell_quote(script)
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The host as the attack starts: the account, the tmpfs, the directory it owns, root's canaries.
fn setup(lab: &Lab, host: &str) {
    exec(
        lab,
        host,
        "id swapper >/dev/null 2>&1 || useradd -M -s /bin/sh swapper
         mkdir -p /srv/swaptest && mount -t tmpfs -o size=16m,mode=0755 swaptest /srv/swaptest
         install -d -o swapper -g swapper -m 0755 /srv/swaptest/app
         printf 'canary: root only\\n' > /root/canary && chown root:root /root/canary && chmod 0600 /root/canary
         mkdir -p /root/canarydir && chown root:root /root/canarydir && chmod 0700 /root/canarydir",
    );
}

/// Content, mode and owner of the canaries.
fn canaries(lab: &Lab, host: &str) -> String {
    exec(
        lab,
        host,
        "stat -c '%n %F %a %U:%G' /root/canary /root/canarydir && cat /root/canary",
    )
}

const CANARIES: &str = "/root/canary regular file 600 root:root\n\
                        /root/canarydir directory 700 root:root\n\
                        canary: root only\n";

/// The managed state every scenario starts from: `conf` (right content, root's 0644: owner and
/// mode to change), `data` (root's 0755 directory: owner and mode to change), `blob` (old
/// content: an upload).
fn old_state(lab: &Lab, host: &str) {
    exec(
        lab,
        host,
        "cd /srv/swaptest/app && rm -rf conf data blob fresh newdir fill .claw-provision.*
         printf 'managed\\n' > conf && chmod 0644 conf
         mkdir data && chmod 0755 data
         printf 'old blob\\n' > blob && chmod 0644 blob",
    );
}

fn playbook(s: &Scratch, name: &str, steps: &str) -> std::path::PathBuf {
    s.file(name, &format!("name = \"swap\"\nhosts = \"h1\"\n{steps}"))
}

const CONF: &str = r#"
[[steps]]
name = "conf"
kind = "file"
path = "/srv/swaptest/app/conf"
content = "managed\n"
owner = "swapper"
mode = "0640"
"#;

const DATA: &str = r#"
[[steps]]
name = "data"
kind = "dir"
path = "/srv/swaptest/app/data"
owner = "swapper"
mode = "0750"
"#;

const BLOB: &str = r#"
[[steps]]
name = "blob"
kind = "file"
path = "/srv/swaptest/app/blob"
content = "new blob\n"
mode = "0644"
"#;

const FRESH: &str = r#"
[[steps]]
name = "fresh"
kind = "file"
path = "/srv/swaptest/app/fresh"
content = "fresh\n"
owner = "swapper"
mode = "0600"

[[steps]]
name = "newdir"
kind = "dir"
path = "/srv/swaptest/app/newdir"
owner = "swapper"
mode = "0700"
"#;

/// `apply` on a terminal (under `script`): waits for the confirmation prompt, runs `attack`
/// on the host while the prompt is held, then answers "y". Exit code and the whole output.
fn held_apply(lab: &Lab, inv: &str, attack: &str) -> (i32, String) {
    let cmd = format!("{} apply {inv}", bin().display());
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let started = Instant::now();
    while !String::from_utf8_lossy(&out.lock().unwrap()).contains("[y/N]") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no confirmation prompt: {}",
            String::from_utf8_lossy(&out.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The prompt waits (the window is unbounded): the other account acts now.
    exec(lab, "h1", &as_swapper(attack));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"y\n").unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    (status.code().unwrap_or(-1), text)
}

/// The output names the host and the failed step, with `cause`.
fn failed_at(out: &str, step: &str, cause: &str) {
    assert!(
        out.lines().any(|l| l.contains("error: h1 (")
            && l.contains(&format!(") at {step}: "))
            && l.contains(cause)),
        "no error line naming h1, step `{step}` and `{cause}`:\n{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn symlink_swap_during_a_held_prompt_never_reaches_root_files() {
    let lab = Lab::up("swap-held", 1);
    setup(&lab, "h1");
    assert_eq!(canaries(&lab, "h1"), CANARIES);
    let s = Scratch::new();

    // 1. A file whose owner and mode change: swapped for a link to the canary, it is refused.
    old_state(&lab, "h1");
    let inv = lab.write_inventory("conf.toml", &playbook(&s, "conf.toml", CONF), &[]);
    let (code, out) = held_apply(
        &lab,
        inv.to_str().unwrap(),
        "cd /srv/swaptest/app && rm -f conf && ln -s /root/canary conf",
    );
    assert_eq!(code, 1, "{out}");
    failed_at(&out, "conf", "is no longer the file the probe saw");
    assert_eq!(canaries(&lab, "h1"), CANARIES, "{out}");

    // 2. A directory whose owner and mode change: swapped for a link to root's directory.
    old_state(&lab, "h1");
    let inv = lab.write_inventory("data.toml", &playbook(&s, "data.toml", DATA), &[]);
    let (code, out) = held_apply(
        &lab,
        inv.to_str().unwrap(),
        "cd /srv/swaptest/app && rmdir data && ln -s /root/canarydir data",
    );
    assert_eq!(code, 1, "{out}");
    failed_at(&out, "data", "reached through a symbolic link");
    assert_eq!(canaries(&lab, "h1"), CANARIES, "{out}");

    // 3. An upload: the link is replaced by the new file, never written through.
    old_state(&lab, "h1");
    let inv = lab.write_inventory("blob.toml", &playbook(&s, "blob.toml", BLOB), &[]);
    let (code, out) = held_apply(
        &lab,
        inv.to_str().unwrap(),
        "cd /srv/swaptest/app && rm -f blob && ln -s /root/canary blob",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(canaries(&lab, "h1"), CANARIES, "{out}");
    assert_eq!(
        exec(
            &lab,
            "h1",
            "cd /srv/swaptest/app && stat -c '%F %a %U' blob && cat blob && ls -A"
        ),
        "regular file 644 root\nnew blob\nblob\nconf\ndata\n"
    );

    // 4. A parent directory swapped for a link: nothing is written through it.
    exec(
        &lab,
        "h1",
        &as_swapper("cd /srv/swaptest/app && mkdir -p sub && printf 'x\\n' > sub/f"),
    );
    let sub = "\n[[steps]]\nname = \"sub file\"\nkind = \"file\"\npath = \"/srv/swaptest/app/sub/f\"\ncontent = \"root's\\n\"\nowner = \"root\"\nmode = \"0600\"\n";
    let inv = lab.write_inventory("sub.toml", &playbook(&s, "sub.toml", sub), &[]);
    let (code, out) = held_apply(
        &lab,
        inv.to_str().unwrap(),
        "cd /srv/swaptest/app && rm -rf sub && ln -s /root sub",
    );
    assert_eq!(code, 1, "{out}");
    failed_at(&out, "sub file", "reached through a symbolic link");
    assert_eq!(canaries(&lab, "h1"), CANARIES, "{out}");
    assert_eq!(
        exec(
            &lab,
            "h1",
            "ls -A /root | grep -c 'claw-provision\\|^f$' || true"
        ),
        "0\n",
        "nothing was written in /root"
    );
}

/// The swap at the worst moment: a shim runs right before every chown/chgrp/chmod/mv of the
/// apply and swaps every entry of the managed directory for a link to a canary.
#[test]
fn symlink_swap_right_before_chown_chmod_mv_never_reaches_root_files() {
    let lab = Lab::up("swap-shim", 1);
    setup(&lab, "h1");
    old_state(&lab, "h1");
    let s = Scratch::new();
    let steps = format!("{CONF}{DATA}{BLOB}{FRESH}");
    let inv = lab.write_inventory("all.toml", &playbook(&s, "all.toml", &steps), &[]);
    let inv = inv.to_str().unwrap();

    // The shims: in a dir of the host's private /opt, bound over /usr/local/sbin (first in the
    // remote PATH) in the host's mount namespace; the machine's /usr/local/sbin is untouched.
    // Plain tools inside (the shims are first in the PATH the swap inherits).
    let swap = as_swapper(
        "PATH=/usr/bin:/bin; cd /srv/swaptest/app || exit 0
         for e in * .claw-provision.*; do
           [ -L \"$e\" ] && continue
           [ -e \"$e\" ] || continue
           case $e in data|newdir) to=/root/canarydir;; *) to=/root/canary;; esac
           rm -f \"$e\" 2>/dev/null || rmdir \"$e\" 2>/dev/null || mv -f \"$e\" \"$e.moved\" 2>/dev/null || continue
           ln -s \"$to\" \"$e\" && echo \"swapped $e\"
         done",
    );
    let shim = format!(
        "#!/bin/sh\n# test shim: the other account wins the race right before root's $0\n\
         tool=${{0##*/}}\n\
         case \"$*\" in */var/lib/claw-provision/*) exec /usr/bin/$tool \"$@\";; esac\n\
         {{ echo \"$tool $*\"; {swap}; }} >> /opt/swapshim.log 2>&1\n\
         exec /usr/bin/$tool \"$@\"\n"
    );
    exec(
        &lab,
        "h1",
        &format!(
            "mkdir -p /opt/swapshim && printf '%s' {} > /opt/swapshim/chown && chmod 755 /opt/swapshim/chown
             for t in chgrp chmod mv; do ln -sf chown /opt/swapshim/$t; done
             : > /opt/swapshim.log && mount --bind /opt/swapshim /usr/local/sbin",
            shell_quote(&shim)
        ),
    );
    assert!(
        std::fs::read_to_string("/usr/local/sbin/chown").is_err()
            || !std::fs::read_to_string("/usr/local/sbin/chown")
                .unwrap()
                .contains("test shim"),
        "the machine's own /usr/local/sbin is untouched"
    );

    let r = crate::support::claw(&["apply", inv, "--yes"], &[]);
    let log = exec(&lab, "h1", "cat /opt/swapshim.log");
    let out = format!("{}{}", r.stdout, r.stderr);
    // The shims ran, and swapped things, before root's commands.
    assert!(log.contains("swapped"), "{log}");
    let mut logs = log.clone();
    assert!(!out.contains("panicked"), "{out}");
    if r.code != 0 {
        assert!(out.contains("error: h1 ("), "{out}");
    }
    assert_eq!(
        canaries(&lab, "h1"),
        CANARIES,
        "exit {}\n{out}\nshim log:\n{log}",
        r.code
    );
    // Every step on its own, each from the old state (the first failure stops a host).
    for (name, step) in [
        ("conf", CONF),
        ("data", DATA),
        ("blob", BLOB),
        ("fresh", FRESH),
    ] {
        exec(&lab, "h1", "umount /usr/local/sbin");
        old_state(&lab, "h1");
        exec(
            &lab,
            "h1",
            ": > /opt/swapshim.log && mount --bind /opt/swapshim /usr/local/sbin",
        );
        let file = format!("{name}.toml");
        let inv = lab.write_inventory(&file, &playbook(&s, &file, step), &[]);
        let r = crate::support::claw(&["apply", inv.to_str().unwrap(), "--yes"], &[]);
        let log = exec(&lab, "h1", "cat /opt/swapshim.log");
        logs.push_str(&log);
        let out = format!("{}{}", r.stdout, r.stderr);
        assert!(log.contains("swapped"), "{name}: {log}\n{out}");
        assert!(!out.contains("panicked"), "{out}");
        if r.code != 0 {
            assert!(out.contains("error: h1 ("), "{name}: {out}");
        }
        assert_eq!(
            canaries(&lab, "h1"),
            CANARIES,
            "{name}: exit {}\n{out}\nshim log:\n{log}",
            r.code
        );
    }
    exec(&lab, "h1", "umount /usr/local/sbin");
    // Each of root's commands met the swap at least once.
    for tool in ["chown ", "chmod ", "mv "] {
        assert!(logs.lines().any(|l| l.starts_with(tool)), "{tool}: {logs}");
    }
}

/// The other account fills the directory's file system. Before the run: the preflight refuses
/// the upload. While the confirmation prompt waits (after the preflight): the upload fails
/// with a clear error. Either way the old file stays whole and no temporary file is left.
#[test]
fn filling_the_directory_fails_the_upload_cleanly() {
    let lab = Lab::up("swap-fill", 1);
    setup(&lab, "h1");
    old_state(&lab, "h1");
    let s = Scratch::new();
    // 256 KiB of new content: more than what is left once the account filled the tmpfs.
    let big = "0123456789abcdef".repeat(16 * 1024);
    s.file("files/big", &big);
    let step = "\n[[steps]]\nname = \"blob\"\nkind = \"file\"\npath = \"/srv/swaptest/app/blob\"\nsrc = \"files/big\"\n";
    let inv = lab.write_inventory("fill.toml", &playbook(&s, "fill.toml", step), &[]);
    let inv = inv.to_str().unwrap();
    let fill = "dd if=/dev/zero of=/srv/swaptest/app/fill bs=4k 2>/dev/null; true";
    let unchanged = |out: &str| {
        assert_eq!(
            exec(
                &lab,
                "h1",
                "cd /srv/swaptest/app && cat blob && ls -A | grep -v '^fill$'"
            ),
            "old blob\nblob\nconf\ndata\n",
            "the old file whole, no temp file: {out}"
        );
    };

    exec(&lab, "h1", &as_swapper(fill));
    assert!(
        exec(&lab, "h1", "df -k /srv/swaptest | tail -1").contains("100%"),
        "the tmpfs is full"
    );
    let r = crate::support::claw(&["apply", inv, "--yes"], &[]);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert_eq!(r.code, 1, "{out}");
    failed_at(&out, "preflight", "not enough disk space");
    unchanged(&out);

    exec(&lab, "h1", "rm -f /srv/swaptest/app/fill");
    let (code, out) = held_apply(&lab, inv, fill);
    assert_eq!(code, 1, "{out}");
    failed_at(&out, "blob", "No space left on device");
    unchanged(&out);

    // Room again: the same apply goes through.
    exec(&lab, "h1", "rm -f /srv/swaptest/app/fill");
    let r = crate::support::claw(&["apply", inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(exec(&lab, "h1", "cat /srv/swaptest/app/blob"), big);
    assert_eq!(canaries(&lab, "h1"), CANARIES);
}

/// Links nobody but root can change are followed (merged-usr `/lib -> usr/lib`, `/var/run ->
/// /run`, an administrator's link to a data volume): chained, relative and absolute, a link
/// inside a link's target. A link the other account owns, or one in a directory it can write,
/// is still refused with nothing changed.
#[test]
fn fixpath_links_root_alone_can_change_are_followed_others_refused() {
    let lab = Lab::up("fixpath-links", 1);
    setup(&lab, "h1");
    // Root's tree in the host's private /srv: real/sub, link -> real (relative), chain ->
    // /srv/fixpath/link (absolute, to a link), real/in -> sub (a link inside a link's target).
    exec(
        &lab,
        "h1",
        "mkdir -p /srv/fixpath/real/sub && chmod 0755 /srv/fixpath /srv/fixpath/real
         ln -s real /srv/fixpath/link && ln -s /srv/fixpath/link /srv/fixpath/chain
         ln -s sub /srv/fixpath/real/in
         ln -s real /srv/fixpath/theirs && chown -h swapper /srv/fixpath/theirs
         ln -s /srv/fixpath/real /srv/swaptest/app/ln",
    );
    let s = Scratch::new();
    let steps = r#"
[[steps]]
name = "through link"
kind = "file"
path = "/srv/fixpath/link/a"
content = "a\n"
mode = "0640"

[[steps]]
name = "through chain"
kind = "file"
path = "/srv/fixpath/chain/in/b"
content = "b\n"
mode = "0600"

[[steps]]
name = "dir through chain"
kind = "dir"
path = "/srv/fixpath/chain/in/d"
mode = "0750"
"#;
    let inv = lab.write_inventory("ok.toml", &playbook(&s, "ok.toml", steps), &[]);
    let inv = inv.to_str().unwrap();
    let r = crate::support::claw(&["apply", inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let state = "cd /srv/fixpath/real && stat -c '%n %F %a %U %i' a sub/b sub/d && cat a sub/b && ls -A . sub";
    let after = exec(&lab, "h1", state);
    assert!(
        after.contains("a regular file 640 root")
            && after.contains("sub/b regular file 600 root")
            && after.contains("sub/d directory 750 root")
            && after.contains("a\nb\n"),
        "{after}"
    );
    // Converged: the second apply changes nothing (same inodes, nothing counted).
    let again = crate::support::claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(again.host("h1")["changed"], 0, "{}", again.stdout);
    assert_eq!(exec(&lab, "h1", state), after);

    // A link the other account owns (in root's directory), then a root link in a directory the
    // other account can write: refused, nothing written where they lead.
    for (name, path) in [
        ("theirs", "/srv/fixpath/theirs/c"),
        ("in their dir", "/srv/swaptest/app/ln/c"),
    ] {
        let step = format!(
            "\n[[steps]]\nname = \"{name}\"\nkind = \"file\"\npath = \"{path}\"\ncontent = \"c\\n\"\n"
        );
        let file = format!("{}.toml", name.replace(' ', "-"));
        let inv = lab.write_inventory(&file, &playbook(&s, &file, &step), &[]);
        let r = crate::support::claw(&["apply", inv.to_str().unwrap(), "--yes"], &[]);
        let out = format!("{}{}", r.stdout, r.stderr);
        assert_eq!(r.code, 1, "{out}");
        failed_at(&out, name, "reached through a symbolic link");
        assert_eq!(exec(&lab, "h1", state), after, "{name}: nothing changed");
        assert_eq!(canaries(&lab, "h1"), CANARIES);
    }
}

/// An attribute-only change (owner root, setuid): while the prompt is held, the directory's
/// owner replaces the managed file by their own program (same name, other content). Root must
/// not make it root's and setuid: refused, their file keeps its owner and mode.
#[test]
fn fixpath_own_file_swapped_in_before_an_attribute_change_is_refused() {
    let lab = Lab::up("fixpath-attr", 1);
    setup(&lab, "h1");
    old_state(&lab, "h1");
    let s = Scratch::new();
    let step = r#"
[[steps]]
name = "suid"
kind = "file"
path = "/srv/swaptest/app/conf"
content = "managed\n"
owner = "root"
mode = "4755"
"#;
    let inv = lab.write_inventory("suid.toml", &playbook(&s, "suid.toml", step), &[]);
    let (code, out) = held_apply(
        &lab,
        inv.to_str().unwrap(),
        "cd /srv/swaptest/app && rm -f conf && printf '#!/bin/sh\\nid\\n' > conf && chmod 0755 conf",
    );
    assert_eq!(code, 1, "{out}");
    failed_at(&out, "suid", "is no longer the file the probe saw");
    assert_eq!(
        exec(
            &lab,
            "h1",
            "stat -c '%a %U' /srv/swaptest/app/conf && cat /srv/swaptest/app/conf"
        ),
        "755 swapper\n#!/bin/sh\nid\n"
    );
    assert_eq!(canaries(&lab, "h1"), CANARIES);
}
