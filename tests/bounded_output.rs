//! What a host sends back is untrusted: its size (output is kept within a bound, streamed on or
//! cut, never buffered whole: a 1.5 GB `run`, a command step and a probe that print without
//! end, a `fetch` that sends more than it announced), its bytes (terminal control sequences and
//! bidi overrides are shown escaped) — and what it is sent: the sudo password travels only to
//! hosts whose sudo asks for it.

use crate::support::{Lab, Run, Scratch, bin, claw, repo};
use std::path::Path;
use std::process::{Command, Stdio};

/// `lab.sh exec HOST -- sh -c CMD` (root inside the host's namespaces).
fn exec(lab: &Lab, host: &str, cmd: &str) -> String {
    let o = Command::new("bash")
        .arg(repo().join("tests/lab/lab.sh"))
        .args(["exec", host, "--name", &lab.name, "--", "sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{host}: {cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs the binary with stdout and stderr going to files (read afterwards: the test does not
/// have to drain pipes while it runs) and returns its result and its peak resident memory in
/// KiB, as the kernel counted it (`wait4`'s `ru_maxrss`).
fn claw_peak(args: &[&str], dir: &Path) -> (Run, u64) {
    let out = dir.join("claw.stdout");
    let err = dir.join("claw.stderr");
    let child = Command::new(bin())
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("CLAW_BECOME_PASSWORD")
        .env("CLAW_SSH_CONFIG", "none")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `pid` is our child, not yet waited for; both out-pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, usage.as_mut_ptr()) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    // SAFETY: filled by the successful wait4.
    let usage = unsafe { usage.assume_init() };
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let run = Run {
        code,
        stdout: String::from_utf8_lossy(&std::fs::read(&out).unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err).unwrap()).into_owned(),
    };
    (run, usage.ru_maxrss as u64)
}

/// The line of `text` that says how many bytes of `stream` were not kept, and that number.
fn dropped(text: &str, stream: &str) -> Option<(String, u64)> {
    let l = text
        .lines()
        .find(|l| l.contains(&format!(" bytes of {stream} not kept here")))?;
    let n = l
        .split("[claw-provision: ")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some((l.to_string(), n))
}

const MIB: u64 = 1024 * 1024;

/// `run` of 1.5 GB of output: streamed, the middle dropped with a line that says so and how to
/// get it all, and the client's peak memory stays far below the output's size. With
/// `--output-dir`, the whole output is in the host's file.
#[test]
fn run_output_is_streamed_with_a_bound() {
    let lab = Lab::up("output-run", 1);
    let s = Scratch::new();
    let inv = lab.write_inventory("inv.toml", Path::new("/nonexistent/pb.toml"), &[]);
    let inv = inv.to_str().unwrap();
    let total: u64 = 1_500_000_000;
    let (r, peak_kb) = claw_peak(
        &[
            "run",
            inv,
            "--",
            &format!("yes claw-line | head -c {total}; echo the-end"),
        ],
        s.dir.path(),
    );
    eprintln!(
        "run of {total} bytes: peak RSS {:.1} MiB",
        peak_kb as f64 / 1024.0
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        peak_kb < 100 * 1024,
        "peak RSS {peak_kb} KiB for a {total}-byte output"
    );
    let (line, n) = dropped(&r.stdout, "stdout").unwrap_or_else(|| panic!("{}", &r.stderr));
    assert!(
        line.contains("--output-dir DIR") && line.contains("--output-limit"),
        "{line}"
    );
    // 1 MiB shown (its two halves, give or take the lines cut at the drop).
    let shown = total + 8 - n;
    assert!(
        (MIB - 64..=MIB).contains(&shown),
        "{shown} bytes shown, {n} dropped"
    );
    assert!(r.stdout.contains("claw-line\nthe-end\n"), "the tail");
    assert!(r.stdout.starts_with("==> h1 ("), "{}", &r.stdout[..200]);
    assert!(r.stdout.contains("1 of 1 hosts exited 0"));
    assert!(r.stdout.len() < 2 * MIB as usize);

    // --output-dir: the whole output in the host's file; the terminal is bounded as before.
    let dir = s.dir.path().join("out");
    let n: u64 = 30 * MIB;
    let (r, _) = claw_peak(
        &[
            "run",
            inv,
            "--output-dir",
            dir.to_str().unwrap(),
            "--output-limit",
            "64K",
            "--",
            &format!("yes claw-line | head -c {n}; echo oops >&2"),
        ],
        s.dir.path(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::metadata(dir.join("h1.stdout")).unwrap().len(), n);
    assert_eq!(std::fs::read(dir.join("h1.stderr")).unwrap(), b"oops\n");
    let whole = std::fs::read(dir.join("h1.stdout")).unwrap();
    assert!(whole.chunks(10).all(|c| c == b"claw-line\n"));
    let (_, d) = dropped(&r.stdout, "stdout").unwrap();
    assert!(d >= n - 64 * 1024, "{d}");
    assert!(r.stdout.len() < 200 * 1024, "{}", r.stdout.len());
    assert!(r.stdout.contains("--- stderr\noops\n"), "{}", r.stdout);

    // JSON: the kept text and the count of bytes not kept.
    let r = claw(
        &[
            "run",
            inv,
            "--output",
            "json",
            "--output-limit",
            "1K",
            "--",
            "seq 1 100000",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let e = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "host")
        .unwrap();
    let out = e["stdout"].as_str().unwrap();
    assert!(
        out.starts_with("1\n2\n") && out.ends_with("99999\n100000\n"),
        "{out}"
    );
    assert!(out.len() < 1200, "{out}");
    let all = (1..=100000).map(|i| format!("{i}\n")).collect::<String>();
    assert_eq!(
        e["stdout_dropped"].as_u64().unwrap(),
        all.len() as u64 - 1024
    );
}

/// A command step that prints 500 MB (`output = true`) applies and shows the two ends of its
/// output; a probe that prints 300 MB (a login shell's banner) fails that host with a clear
/// error, the other host converges; the client's memory stays bounded in both.
#[test]
fn huge_output_of_a_step_or_a_probe_is_bounded() {
    let lab = Lab::up("output-step", 2);
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        r#"name = "big"

[[steps]]
name = "srv"
kind = "dir"
path = "/srv"

[[steps]]
name = "dir"
kind = "dir"
path = "/opt/big"

[[steps]]
name = "loud"
kind = "command"
run = "echo first-line; yes loud-line | head -c 500000000; echo; echo last-line"
output = true
"#,
    );
    let inv = lab.write_inventory("inv.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    // h2: the login shell prints a 300 MB banner before every command (into the probe's
    // stdout: the probe tools' own output is read by the remote shell first).
    exec(
        &lab,
        "h2",
        "printf '#!/bin/sh\\nyes banner-line | head -c 300000000\\nexec /bin/bash \"$@\"\\n' > /run/noisy-sh \
         && chmod 755 /run/noisy-sh && usermod -s /run/noisy-sh claw",
    );
    let (r, peak_kb) = claw_peak(&["apply", inv, "--yes"], s.dir.path());
    eprintln!(
        "apply with a 500 MB step output and a 300 MB probe output: peak RSS {:.1} MiB",
        peak_kb as f64 / 1024.0
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(peak_kb < 100 * 1024, "peak RSS {peak_kb} KiB");
    // h1: the step's output, its two ends, and what was not kept.
    assert!(r.stdout.contains("h1: | first-line\n"), "{}", &r.stdout);
    assert!(r.stdout.contains("h1: | last-line\n"), "the tail");
    let (line, n) = dropped(&r.stdout, "stdout").unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(line.contains("to keep it all"), "{line}");
    assert!(n > 499_000_000, "{n}");
    assert!(r.stdout.len() < 2 * MIB as usize);
    assert_eq!(lab.ssh_ok("h1", "test -d /opt/big && echo yes"), "yes\n");
    // h2: the probe's output is over the bound: that host fails with the reason, unchanged.
    let err = r
        .stdout
        .lines()
        .chain(r.stderr.lines())
        .find(|l| l.starts_with("error: h2 ("))
        .unwrap_or_else(|| panic!("{}\n{}", r.stdout, r.stderr));
    assert!(
        err.contains("printed more than 16 MiB on stdout") && err.contains("probe"),
        "{err}"
    );
    assert_eq!(
        exec(&lab, "h2", "test -e /opt/big || echo absent"),
        "absent\n"
    );
}

/// `fetch`: a copy over the step's `max_size` is refused before anything is copied; a host that
/// sends more than the size it announced is cut off at that size; neither leaves a file.
#[test]
fn fetch_is_bounded_and_its_temp_file_is_new() {
    let lab = Lab::up("output-fetch", 1);
    let s = Scratch::new();
    let local = s.dir.path().join("copies");
    let pb = s.file(
        "pb.toml",
        &format!(
            r#"name = "fetch"

[[steps]]
name = "copy"
kind = "fetch"
src = "/opt/dump.gz"
dest = "{}"
max_size = "{{{{ max | default(value='4G') }}}}"
"#,
            local.display()
        ),
    );
    let inv = lab.write_inventory("inv.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    exec(&lab, "h1", "head -c 200000 /dev/urandom > /opt/dump.gz");
    let want = lab.ssh_ok("h1", "sha256sum /opt/dump.gz | cut -c1-64");

    // Over max_size: refused at plan time, nothing copied.
    let r = claw(&["apply", inv, "--yes", "-e", "max=100K"], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("200000 bytes, more than the step's `max_size` (102400 bytes)"),
        "{}",
        r.stdout
    );
    assert!(!local.exists() || std::fs::read_dir(&local).unwrap().count() == 0);

    // A `cat` that sends the file without end: cut off past the probed size, nothing kept.
    exec(
        &lab,
        "h1",
        "mkdir -p /run/fakebin && printf '#!/bin/sh\\ncase \"$*\" in *dump.gz) while /bin/cat \"$@\"; do :; done; exit 1;; esac\\nexec /bin/cat \"$@\"\\n' > /run/fakebin/cat \
         && chmod 755 /run/fakebin/cat && mount --bind /run/fakebin /usr/local/bin",
    );
    let (r, peak_kb) = claw_peak(&["apply", inv, "--yes"], s.dir.path());
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(peak_kb < 100 * 1024, "{peak_kb}");
    assert!(
        r.stdout
            .contains("the host sent more than the 200000 bytes the file had when probed"),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read_dir(&local).unwrap().count(),
        0,
        "no file left"
    );

    // The honest copy works (and leaves only the file).
    exec(&lab, "h1", "umount -l /usr/local/bin");
    let r = claw(&["apply", inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let names: Vec<_> = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["dump.gz"]);
    use sha2::Digest;
    let got = hex::encode(sha2::Sha256::digest(
        std::fs::read(local.join("dump.gz")).unwrap(),
    ));
    assert_eq!(format!("{got}\n"), want);
}

/// Control sequences a host prints (clear screen, an OSC 52 clipboard write, the 8-bit CSI
/// U+009B, a right-to-left override) reach the terminal escaped: in a file's diff, a step's
/// shown output, a failing step's error, and `run`'s stdout and stderr.
#[test]
fn host_text_is_shown_escaped() {
    let lab = Lab::up("output-escapes", 1);
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        r#"name = "escapes"

[[steps]]
name = "diffed"
kind = "file"
path = "/opt/esc/diffed"
content = "clean\n"

[[steps]]
name = "shown"
kind = "command"
run = "cat /opt/esc/evil"
output = true
changes = false

[[steps]]
name = "failing"
kind = "command"
run = "cat /opt/esc/evil >&2; exit 3"
"#,
    );
    let inv = lab.write_inventory("inv.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    // ESC[2J, OSC 52 (write "evil" to the clipboard), CSI as U+009B, RLO U+202E.
    let evil = r"printf 'A\033[2JB\n\033]52;c;ZXZpbA==\007\n\302\23331mC\n\342\200\256gnp.exe\n'";
    exec(
        &lab,
        "h1",
        &format!("mkdir -p /opt/esc && {evil} > /opt/esc/evil && cp /opt/esc/evil /opt/esc/diffed"),
    );
    let raw = ['\x1b', '\x07', '\u{9b}', '\u{202e}'];
    let escaped = [
        "A\\x1b[2JB",
        "\\x1b]52;c;ZXZpbA==\\x07",
        "\\u{9b}31mC",
        "\\u{202e}gnp.exe",
    ];
    let check = |what: &str, r: &Run| {
        let all = format!("{}{}", r.stdout, r.stderr);
        for c in raw {
            assert!(!all.contains(c), "{what}: raw {c:?} in:\n{all:?}");
        }
        for e in escaped {
            assert!(all.contains(e), "{what}: no `{e}` in:\n{all}");
        }
    };
    // The plan: the old side of the diff.
    let r = claw(&["plan", inv], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    check("plan diff", &r);
    assert!(r.stdout.contains("-\\u{202e}gnp.exe"), "{}", r.stdout);
    // apply: the shown output and the failing step's stderr.
    let r = claw(&["apply", inv, "--yes"], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    check("apply", &r);
    assert!(
        r.stdout.contains("h1: | \\x1b]52;c;ZXZpbA==\\x07"),
        "{}",
        r.stdout
    );
    let err = r
        .stdout
        .lines()
        .find(|l| l.starts_with("error: h1 (") && l.contains(" at failing: "))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(err.contains("\\u{202e}gnp.exe"), "{err}");
    // run: stdout (shown live or as a block) and stderr.
    let r = claw(
        &["run", inv, "--", "cat /opt/esc/evil; cat /opt/esc/evil >&2"],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    check("run", &r);
    assert_eq!(
        r.stdout.matches("\\u{202e}gnp.exe").count(),
        2,
        "{}",
        r.stdout
    );
    // JSON keeps the value (the same string once parsed) but no raw control on the terminal:
    // serde escapes C0, and C1/bidi controls are written as \uXXXX escapes.
    let r = claw(
        &["run", inv, "--output", "json", "--", "cat /opt/esc/evil"],
        &[],
    );
    for c in raw {
        assert!(!r.stdout.contains(c), "json: raw {c:?} in:\n{:?}", r.stdout);
    }
    assert!(r.stdout.contains("\\u202e"), "{}", r.stdout);
    let e = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "host")
        .unwrap();
    assert!(e["stdout"].as_str().unwrap().contains("\u{202e}gnp.exe"));
}

/// The sudo password goes only to a host whose sudo asks for it. Each login's stdin is logged on
/// the host (a forced command in authorized_keys tees it): on the NOPASSWD login the password
/// never arrives, while the same check on the login whose sudo asks does see it.
#[test]
fn sudo_password_only_where_sudo_asks() {
    let lab = Lab::up("output-sudo", 1);
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        r#"name = "sudo"

[[steps]]
name = "root file"
kind = "file"
path = "/opt/sudo-test/{{ host.name }}-{{ who }}"
content = "x\n"

[[steps]]
name = "who"
kind = "command"
run = "id -u"
output = true
changes = false
"#,
    );
    // Every login of claw and clawpw runs its command through `tee` into a log of its stdin.
    exec(
        &lab,
        "h1",
        "mkdir -p /tmp/stdin-log /opt/sudo-test && chmod 1777 /tmp/stdin-log && \
         printf '#!/bin/sh\ntee -a \"/tmp/stdin-log/$1\" | /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n' \
           > /tmp/stdin-log/wrap && chmod 755 /tmp/stdin-log/wrap && \
         for u in claw clawpw; do \
           sed -i \"s#^#command=\\\"/tmp/stdin-log/wrap $u\\\" #\" /home/$u/.ssh/authorized_keys; \
         done",
    );
    let pw = "labpass";
    let env = [("CLAW_BECOME_PASSWORD", pw)];
    let log = |u: &str| {
        exec(
            &lab,
            "h1",
            &format!("cat /tmp/stdin-log/{u} 2>/dev/null || true"),
        )
    };
    for (user, asks) in [("claw", false), ("clawpw", true)] {
        let inv = lab.write_inventory(
            &format!("{user}.toml"),
            &pb,
            &[("user", &format!("\"{user}\""))],
        );
        let inv = inv.to_str().unwrap();
        let r = claw(&["apply", inv, "--yes", "-e", &format!("who={user}")], &env);
        assert_eq!(r.code, 0, "{user}: {}\n{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("h1: | 0\n"), "{user}: {}", r.stdout);
        assert_eq!(
            lab.ssh_ok("h1", &format!("sudo cat /opt/sudo-test/h1-{user}")),
            "x\n"
        );
        let r = claw(&["run", inv, "--", "id -u"], &env);
        assert_eq!(r.code, 0, "{user}: {}\n{}", r.stdout, r.stderr);
        let seen = log(user);
        assert_eq!(
            seen.contains(pw),
            asks,
            "{user}: the password {} on the host's stdin: {seen:?}",
            if asks { "never arrived" } else { "arrived" }
        );
    }
    // The commands did run through the logging wrapper for both logins.
    assert!(exec(&lab, "h1", "ls /tmp/stdin-log").contains("claw\nclawpw\n"));
}
