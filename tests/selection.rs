//! Selecting hosts and steps, and how much the output says (issue 8): `--tags`, `--skip-tags`,
//! `--step`, `--limit` with globs, `!` and `@FILE`, `-q`/`-v`/`-vv`, and no escape codes where
//! they do not belong (`NO_COLOR`, output that is not a terminal). Checked on light lab hosts:
//! what changed is read back from the hosts, not taken from the tool's word.

use crate::support::{Lab, Run, claw, log_len, ok, sshd_counts};

const PB: &str = r#"name = "sel"

[[steps]]
name = "base dir"
kind = "dir"
path = "/opt/sel/base"
tags = ["base"]

[[steps]]
name = "token"
kind = "secret"
secret = "token"
path = "/opt/sel/token"
tags = ["secrets"]

[[steps]]
name = "web config"
kind = "file"
path = "/opt/sel/web.conf"
content = "web\n"
tags = ["web", "config"]
notify = "reload web"

[[steps]]
name = "db config"
kind = "file"
path = "/opt/sel/db.conf"
content = "db\n"
tags = ["db", "config"]

[[steps]]
name = "token sum"
kind = "command"
run = "printf '%s\n' {{ secrets.token | shell_quote }} | sha256sum > /opt/sel/token.sum"
creates = "/opt/sel/token.sum"
tags = ["web"]

[[steps]]
name = "slow thing"
kind = "command"
run = "touch /opt/sel/slow"
creates = "/opt/sel/slow"
tags = ["web", "slow"]

[[handlers]]
name = "reload web"
kind = "command"
run = "touch /opt/sel/reloaded"
"#;

/// The files of /opt/sel on a host (sorted), e.g. `["db.conf", "token"]`.
fn files(lab: &Lab, host: &str) -> Vec<String> {
    ok(lab.ssh(host, "sudo ls -1 /opt/sel"), "ls")
        .lines()
        .map(String::from)
        .collect()
}

fn no_escapes(r: &Run, what: &str) {
    assert!(
        !r.stdout.contains('\x1b') && !r.stderr.contains('\x1b'),
        "{what}: escape codes in output that is not a terminal:\n{:?}\n{:?}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn tags_skip_tags_and_step_select_what_runs() {
    let lab = Lab::up("ss-steps", 2);
    for h in ["h1", "h2"] {
        ok(lab.ssh(h, "sudo mkdir -p /opt/sel"), "mkdir");
    }
    let pb = lab.dir.join("sel.toml");
    std::fs::write(&pb, PB).unwrap();
    let inv = lab.write_inventory("sel-inv.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let run = |args: &[&str]| {
        let r = claw(args, &[]);
        no_escapes(&r, &args.join(" "));
        r
    };

    // Typos are errors, before any connection: a tag no step has, an unknown step.
    let marks: Vec<usize> = lab.hosts().iter().map(|h| log_len(&h.sshd_log)).collect();
    let r = run(&["apply", inv, "--yes", "--tags", "wbe"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("--tags wbe: no step of ")
            && r.stderr.contains("has the tag `wbe` (did you mean `web`?); tags: base, config, db, secrets, slow, web"),
        "{}",
        r.stderr
    );
    let r = run(&["apply", inv, "--yes", "--skip-tags", "web,slwo"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("(did you mean `slow`?)"), "{}", r.stderr);
    let r = run(&["plan", inv, "--step", "db confg"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("has no such step; did you mean `db config`?"),
        "{}",
        r.stderr
    );
    let r = run(&["plan", inv, "--tags", "db", "--skip-tags", "config"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("selects no step"), "{}", r.stderr);
    std::thread::sleep(std::time::Duration::from_millis(100));
    for (h, m) in lab.hosts().iter().zip(&marks) {
        assert_eq!(
            sshd_counts(&h.sshd_log, *m).0,
            0,
            "{} was connected to",
            h.name
        );
        assert!(files(&lab, &h.name).is_empty());
    }

    // plan --tags: the steps left out are shown as not selected, nothing is touched.
    let r = run(&["plan", inv, "--tags", "db"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with(
            "selected 2 of 6 steps (--tags db); not selected: `base dir`, `web config`, `token sum`, `slow thing`\n  `token` runs anyway: a secret step"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("+ create  file /opt/sel/db.conf"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("  skip    file `web config` (not selected: no tag of --tags db)"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("/opt/sel/web.conf"), "{}", r.stdout);
    assert!(files(&lab, "h1").is_empty(), "plan changed nothing");

    // apply --tags web --skip-tags slow, -vv: the web steps and their handler run, nothing else;
    // the commands are shown, but never the one that uses the secret, nor its value.
    let r = run(&[
        "apply",
        inv,
        "--yes",
        "--tags",
        "web",
        "--skip-tags",
        "slow",
        "-vv",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for h in ["h1", "h2"] {
        assert_eq!(
            files(&lab, h),
            ["reloaded", "token", "token.sum", "web.conf"],
            "{h}"
        );
    }
    let token = ok(lab.ssh("h1", "sudo cat /opt/sel/token"), "token");
    let token = token.trim();
    assert_eq!(token.len(), 64);
    assert!(
        !r.stdout.contains(token) && !r.stderr.contains(token),
        "the secret was printed:\n{}\n{}",
        r.stdout,
        r.stderr
    );
    // nor the sha256 of the secret's file, which its upload script checks
    let sum = ok(lab.ssh("h1", "sudo sha256sum /opt/sel/token"), "sha256sum");
    let sum = sum.split_whitespace().next().unwrap();
    assert!(
        !r.stdout.contains(sum) && !r.stderr.contains(sum),
        "{}",
        r.stderr
    );
    let err = &r.stderr;
    assert!(
        err.contains("h1: $ step `token sum` runs: (not shown: it handles secrets)"),
        "{err}"
    );
    assert!(
        err.contains("h1: $ step `token` runs: (not shown: it handles secrets)"),
        "{err}"
    );
    assert!(
        err.contains("h1: $ step `web config` runs:\nh1:     "),
        "{err}"
    );
    assert!(err.contains("h1: $ handler `reload web` runs:\n"), "{err}");
    assert!(err.contains("\nh1:     touch /opt/sel/reloaded\n"), "{err}");
    // -v and up: every step with its time, skipped ones with the reason
    assert!(
        err.contains("h1: + create  file /opt/sel/web.conf ("),
        "{err}"
    );
    assert!(
        err.contains(
            "h2:   skip    command `slow thing` (not selected: tag `slow` is in --skip-tags)"
        ),
        "{err}"
    );
    assert!(err.contains("h1: handler reload web: changed"), "{err}");

    // --step: the steps before it do not run; with --skip-tags, neither do the skipped ones.
    // -q: one summary line, nothing else.
    let r = run(&[
        "apply",
        inv,
        "--yes",
        "--step",
        "db config",
        "--skip-tags",
        "slow",
        "-q",
        "--limit",
        "h1",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "apply: 1 host: 1 changed; 1 step changed\n");
    assert_eq!(r.stderr, "");
    assert_eq!(
        files(&lab, "h1"),
        ["db.conf", "reloaded", "token", "token.sum", "web.conf"]
    );
    assert_eq!(
        files(&lab, "h2"),
        ["reloaded", "token", "token.sum", "web.conf"]
    );

    // plan -v: every step of every host, unchanged ones included; -q: one line.
    let r = run(&["plan", inv, "-v", "--limit", "h1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("h1 ("), "{}", r.stdout);
    assert!(
        r.stdout.contains("    ok      file /opt/sel/web.conf"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("+ create  dir /opt/sel/base"),
        "{}",
        r.stdout
    );
    let r = run(&["plan", inv, "-q", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "plan: 2 hosts: 2 changed; 5 changes pending\n");
    assert_eq!(r.stderr, "");

    // Everything, -v: the remaining steps run; unchanged steps are listed with their time.
    let r = run(&["apply", inv, "--yes", "-v"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("h1:   ok      file /opt/sel/web.conf ("),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("$ step"), "-v shows no commands");
    for h in ["h1", "h2"] {
        assert_eq!(
            files(&lab, h),
            [
                "base",
                "db.conf",
                "reloaded",
                "slow",
                "token",
                "token.sum",
                "web.conf"
            ],
            "{h}"
        );
    }
    let r = run(&["apply", inv, "--yes", "-q"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "apply: 2 hosts: 2 ok; 0 steps changed\n");

    // A handler notified by a selected step runs; one of a step not selected does not.
    ok(
        lab.ssh(
            "h1",
            "sudo rm /opt/sel/reloaded /opt/sel/web.conf /opt/sel/db.conf",
        ),
        "rm",
    );
    let r = run(&["apply", inv, "--yes", "--tags", "db", "--limit", "h1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let f = files(&lab, "h1");
    assert!(f.contains(&"db.conf".to_string()) && !f.contains(&"web.conf".to_string()));
    assert!(!f.contains(&"reloaded".to_string()), "{f:?}");
    let r = run(&[
        "apply", inv, "--yes", "--tags", "config", "--limit", "h1", "--output", "json",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["handlers"], serde_json::json!(["reload web"]));
    let skipped: Vec<String> = r
        .events()
        .iter()
        .filter(|e| e["event"] == "step" && e["status"] == "skipped")
        .map(|e| {
            format!(
                "{}: {}",
                e["name"].as_str().unwrap(),
                e["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        skipped,
        [
            "base dir: not selected: no tag of --tags config",
            "token sum: not selected: no tag of --tags config",
            "slow thing: not selected: no tag of --tags config"
        ]
    );
    assert!(files(&lab, "h1").contains(&"reloaded".to_string()));
}

const HOSTS_PB: &str = r#"name = "mark"

[[steps]]
name = "marker"
kind = "file"
path = "/opt/marker"
content = "{{ host.name }}\n"
"#;

#[test]
fn limit_globs_negation_and_files_select_hosts() {
    let lab = Lab::up("ss-hosts", 4);
    let pb = lab.dir.join("mark.toml");
    std::fs::write(&pb, HOSTS_PB).unwrap();
    let inv = lab.write_inventory("mark-inv.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let marked = || -> Vec<String> {
        lab.hosts()
            .iter()
            .filter(|h| lab.ssh(&h.name, "test -f /opt/marker").status.success())
            .map(|h| h.name.clone())
            .collect()
    };

    // A file: comments, blank lines, commas; a bad line is an error naming file and line,
    // and nothing is changed anywhere.
    let canary = lab.dir.join("canary.txt");
    std::fs::write(&canary, "# canary hosts\nh1\n\nh4, # the last one\n").unwrap();
    let bad = lab.dir.join("bad.txt");
    std::fs::write(&bad, "h1\n# h2\nh9\n").unwrap();
    let bad_arg = format!("@{}", bad.display());
    let r = claw(&["apply", inv, "--yes", "--limit", &bad_arg], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "error: {}:3: --limit: `h9` matches no host or group of the inventory",
            bad.display()
        )
    );
    let r = claw(
        &["run", inv, "--limit", "@/nonexistent/hosts", "--", "true"],
        &[],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("--limit @/nonexistent/hosts: cannot read /nonexistent/hosts"),
        "{}",
        r.stderr
    );
    assert!(marked().is_empty());

    let canary_arg = format!("@{}", canary.display());
    let r = claw(
        &[
            "apply",
            inv,
            "--yes",
            "--limit",
            &canary_arg,
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let summary = r.summary();
    let summarized: Vec<&str> = summary["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(summarized, ["h1", "h4"]);
    assert_eq!(marked(), ["h1", "h4"]);

    // A glob with an exclusion, and a file plus an exclusion, in plan and run.
    let r = claw(&["plan", inv, "--limit", "h*,!h1", "-q"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout,
        "plan: 3 hosts: 1 ok, 2 changed; 2 changes pending\n"
    );
    let r = claw(&["plan", inv, "--limit", "h[23]"], &[]);
    assert!(
        r.stdout.contains("h2 (") && r.stdout.contains("h3 ("),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("h1 (") && !r.stdout.contains("h4 ("),
        "{}",
        r.stdout
    );
    let arg = format!("{canary_arg},!h4");
    let r = claw(&["run", inv, "--limit", &arg, "--", "cat /opt/marker"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("==> h1 ("), "{}", r.stdout);
    assert!(
        !r.stdout.contains("==> h4") && !r.stdout.contains("==> h2"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("1 of 1 hosts exited 0"), "{}", r.stdout);
    // run -q: only the failing hosts and the closing line.
    let r = claw(&["run", inv, "-q", "--", "cat /opt/marker"], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        !r.stdout.contains("==> h1") && r.stdout.contains("==> h2"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with("2 of 4 hosts exited 0\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("HOST"), "{}", r.stdout);

    // `hosts` takes the same --limit.
    let r = claw(&["hosts", inv, "--limit", "h?,!h[12]"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let names: Vec<&str> = r
        .stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(names, ["h3", "h4"]);
}

/// Runs the binary with stdin, stdout and stderr on a terminal (util-linux `script`), with or
/// without NO_COLOR; returns what the terminal received.
fn on_terminal(args: &[&str], no_color: bool) -> String {
    on_terminal_redirected(args, no_color, "")
}

/// [`on_terminal`], with a shell redirection after the command (`2>FILE`).
fn on_terminal_redirected(args: &[&str], no_color: bool, redirect: &str) -> String {
    let mut line = std::iter::once(crate::support::bin().display().to_string())
        .chain(args.iter().map(ToString::to_string))
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    line.push(' ');
    line.push_str(redirect);
    let mut c = std::process::Command::new("script");
    c.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("CLAW_BECOME_PASSWORD")
        .stdin(std::process::Stdio::null());
    if no_color {
        c.env("NO_COLOR", "1");
    } else {
        c.env_remove("NO_COLOR");
    }
    let o = c
        .output()
        .expect("util-linux `script` (a terminal for the test)");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{line}: {}\n{text}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    text
}

/// SGR sequences (colours, bold): ESC [ digits/semicolons m.
fn sgr(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(p) = text[i..].find("\x1b[") {
        let start = i + p;
        let mut j = start + 2;
        while j < b.len() && (b[j].is_ascii_digit() || b[j] == b';') {
            j += 1;
        }
        if j < b.len() && b[j] == b'm' {
            out.push(text[start..=j].escape_debug().to_string());
        }
        i = start + 2;
    }
    out
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let lab = Lab::up("ss-color", 1);
    let pb = lab.dir.join("mark.toml");
    std::fs::write(&pb, HOSTS_PB).unwrap();
    let inv = lab.write_inventory("mark-inv.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();

    // Not a terminal (pipes): no escape code at all, no progress drawing, in plan and apply.
    let r = claw(&["plan", inv], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("+ create  file /opt/marker"),
        "{}",
        r.stdout
    );
    no_escapes(&r, "plan");
    let r = claw(&["apply", inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("h1: + create  file /opt/marker"),
        "{}",
        r.stderr
    );
    no_escapes(&r, "apply");
    ok(lab.ssh("h1", "sudo rm /opt/marker"), "rm");

    // On a terminal: colours (the check can see them) ...
    let t = on_terminal(&["plan", inv], false);
    assert!(t.contains("file /opt/marker"), "{t}");
    assert!(!sgr(&t).is_empty(), "no colours on a terminal: {t:?}");
    // ... and none with NO_COLOR, for the plan, the progress (spinners) and the summary.
    let t = on_terminal(&["plan", inv], true);
    assert!(t.contains("create  file /opt/marker"), "{t}");
    assert_eq!(sgr(&t), Vec::<String>::new(), "{t:?}");
    let t = on_terminal(&["apply", inv, "--yes", "-v"], true);
    assert!(t.contains("create  file /opt/marker"), "{t}");
    assert_eq!(sgr(&t), Vec::<String>::new(), "{t:?}");
    assert_eq!(ok(lab.ssh("h1", "cat /opt/marker"), "cat"), "h1\n");
    // stdout on a terminal, stderr (progress and step lines) into a file: colours on the
    // terminal only.
    ok(lab.ssh("h1", "sudo rm /opt/marker"), "rm");
    let err = lab.dir.join("stderr.txt");
    let t = on_terminal_redirected(
        &["apply", inv, "--yes", "-v"],
        false,
        &format!("2>'{}'", err.display()),
    );
    assert!(!sgr(&t).is_empty(), "no colours on a terminal: {t:?}");
    let err = std::fs::read_to_string(&err).unwrap();
    assert!(err.contains("h1: + create  file /opt/marker ("), "{err}");
    assert!(!err.contains('\x1b'), "escape codes in a file: {err:?}");
}
