//! Golden snapshots (issue 18): the exact output of fixed runs — every `--help`, error messages
//! with their exit codes, and plan/apply in each output shape on a light lab host — compared
//! byte for byte with the files in `tests/golden/` (one file per case: the command, the exit
//! code, stdout and stderr). They pin what an operator sees, so a refactoring can prove its
//! output unchanged; a change to a snapshot must be named in the commit that makes it.
//!
//! `UPDATE_GOLDEN=1 cargo test --test integration --features test-lockout-switch -- golden`
//! rewrites the files; without it a mismatch fails with a unified diff per file.
//!
//! Runs are hermetic: no terminal (stdin null, stdout/stderr pipes: the default, uncoloured
//! output), no `CLAW_*`, `NO_COLOR`, `CLICOLOR*`, `COLUMNS`, `LINES`, `SSH_AUTH_SOCK` or
//! `RUST_LOG` from the caller's environment (clap wraps help at its default width, 100), and
//! `CLAW_SSH_CONFIG=none` where a command reads an inventory. Secrets are fixed values; a test
//! asserts they never appear in any output. What differs between runs is replaced by
//! [`Norm`] (its rules are the whole list); everything else is compared as it is.

use crate::support::{Lab, Run, Scratch, bin, repo};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment a case adds to the hermetic base (values shown in the snapshot, except
/// secrets', whose names only are shown).
type Env<'a> = &'a [(&'a str, &'a str)];

/// The operator secret the lab playbook's template uses (a fixed value, so masking shows).
const API_KEY: &str = "golden-Op3rator+key/7e1d=";
const SECRET_ENV: (&str, &str) = ("CLAW_GOLDEN_API_KEY", API_KEY);
/// Commands that read an inventory: never the machine's ~/.ssh/config.
const NO_SSH_CONFIG: (&str, &str) = ("CLAW_SSH_CONFIG", "none");

/// Runs the binary with `args` in the hermetic environment plus `env`.
fn claw(args: &[&str], env: Env) -> Run {
    let mut c = Command::new(bin());
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let strip = k.starts_with("CLAW_")
            || k.starts_with("CLICOLOR")
            || ["NO_COLOR", "COLUMNS", "LINES", "SSH_AUTH_SOCK", "RUST_LOG"].contains(&k.as_str());
        if strip {
            c.env_remove(&k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run claw-provision");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The normalisation, applied to every recorded text (command line, stdout, stderr, files):
/// 1. literal values of this run: the lab directory, a scratch directory, the lab host's
///    address, the repository path, the commit in the version line;
/// 2. durations: a number followed by `s` or `ms` (`(0.12s)`, `in 1.3s`, `84ms`) → `<DUR>`;
///    one right-aligned in a column (after two or more spaces) keeps the column's width, the
///    spaces before it absorbing its digits (`     0.4s` and `    12.3s` both → `    <DUR>`);
/// 3. JSON numbers of keys ending in `_ms` (`"elapsed_ms":84`) → `<MS>`; of `peak_rss_kb`
///    (the run's peak memory) → `<KB>`; of `bytes_sent` and `bytes_received` → `<BYTES>`
///    (an apply sends its pid and start time, in the apply lock and the audit line, so the
///    count's last digits vary from run to run; what the host sends depends on its facts);
/// 4. in a saved plan file only ([`Norm::plan_file`]): runs of exactly 64 hex digits (its random
///    HMAC key and the fingerprints keyed with it) → `<HEX64>`.
struct Norm {
    literals: Vec<(String, &'static str)>,
}

impl Norm {
    fn new() -> Norm {
        let mut n = Norm { literals: vec![] };
        n.literal(repo().display().to_string(), "<REPO>");
        // The version line names the commit the binary was built from.
        let v = claw(&["--version"], &[]);
        let commit = v
            .stdout
            .trim()
            .rsplit_once("(commit ")
            .and_then(|(_, c)| c.strip_suffix(')'))
            .unwrap_or_else(|| panic!("version line: {:?}", v.stdout))
            .to_string();
        n.literal(commit, "<COMMIT>");
        n
    }

    fn literal(&mut self, value: String, token: &'static str) {
        assert!(!value.is_empty());
        self.literals.push((value, token));
        // Longest first: the lab directory (inside the repository) before the repository.
        self.literals
            .sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
    }

    fn apply(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (v, token) in &self.literals {
            t = t.replace(v.as_str(), token);
        }
        let t = json_number(&durations(&t), "_ms\":", "<MS>");
        let t = json_number(&t, "\"peak_rss_kb\":", "<KB>");
        let t = json_number(&t, "\"bytes_sent\":", "<BYTES>");
        json_number(&t, "\"bytes_received\":", "<BYTES>")
    }

    /// A saved plan file: rules 1 to 4.
    fn plan_file(&self, text: &str) -> String {
        hex64(&self.apply(text))
    }
}

/// Rule 2: `12s`, `0.12s`, `84ms` (digits, an optional fraction, `s` or `ms`, not followed by
/// a letter or digit, not preceded by a letter, digit or `.`) → `<DUR>`; after two or more
/// spaces, spaces and duration together keep their width.
fn durations(t: &str) -> String {
    let b = t.as_bytes();
    let mut out = String::with_capacity(t.len());
    let mut i = 0;
    while i < b.len() {
        let prev_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.');
        if prev_ok && b[i].is_ascii_digit() {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
                j += 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
            let unit = if t[j..].starts_with("ms") {
                2
            } else if t[j..].starts_with('s') {
                1
            } else {
                0
            };
            let end = j + unit;
            if unit > 0 && (end == b.len() || !b[end].is_ascii_alphanumeric()) {
                let spaces = out.len() - out.trim_end_matches(' ').len();
                if spaces >= 2 {
                    out.truncate(out.len() - spaces);
                    let width = spaces + (end - i);
                    out.push_str(&" ".repeat(width.saturating_sub("<DUR>".len()).max(1)));
                }
                out.push_str("<DUR>");
                i = end;
                continue;
            }
            out.push_str(&t[i..j]);
            i = j;
            continue;
        }
        let c = t[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Rule 3: the number after each `key` (e.g. `_ms":`; any spacing after the colon) → `token`.
fn json_number(t: &str, key: &str, token: &str) -> String {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(k) = rest.find(key) {
        let (head, tail) = rest.split_at(k + key.len());
        out.push_str(head);
        let spaces = tail.len() - tail.trim_start_matches(' ').len();
        let after = &tail[spaces..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        out.push_str(&tail[..spaces]);
        if digits > 0 {
            out.push_str(token);
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Rule 4: a run of exactly 64 hex digits → `<HEX64>`.
fn hex64(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() == 64 {
            out.push_str("<HEX64>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in t.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// One recorded case: the command, its exit code, stdout and stderr (and files it wrote).
fn record(norm: &Norm, args: &[&str], env: Env, r: &Run) -> String {
    let shown_env: Vec<String> = env
        .iter()
        .map(|(k, v)| {
            if *k == SECRET_ENV.0 {
                format!("{k}=<secret>")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    let mut line: Vec<String> = shown_env;
    line.push("claw-provision".into());
    line.extend(args.iter().map(|a| shown_arg(a)));
    let mut out = format!("$ {}\n", line.join(" "));
    out.push_str(&format!("--- exit code: {}\n", r.code));
    for (name, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        out.push_str(&format!("--- {name}\n{text}"));
        if !text.is_empty() && !text.ends_with('\n') {
            out.push_str("\n\\ no newline at end\n");
        }
    }
    norm.apply(&out)
}

/// An argument as a shell would need it: single-quoted when it is empty or has a character
/// other than letters, digits and `-_./=,:@+`.
fn shown_arg(a: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=,:@+".contains(c);
    if !a.is_empty() && a.chars().all(plain) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

fn golden_dir() -> PathBuf {
    repo().join("tests/golden")
}

/// Compares (or with UPDATE_GOLDEN=1 writes) the snapshots of one test, all of whose files
/// start with `prefix`; a snapshot file with that prefix no case wrote is stale (an error).
struct Snapshots {
    prefix: &'static str,
    update: bool,
    seen: Vec<String>,
    failures: Vec<String>,
}

impl Snapshots {
    fn new(prefix: &'static str) -> Snapshots {
        Snapshots {
            prefix,
            update: std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1"),
            seen: vec![],
            failures: vec![],
        }
    }

    fn check(&mut self, name: &str, actual: &str) {
        let file = format!("{}-{name}.txt", self.prefix);
        assert!(!self.seen.contains(&file), "two cases named {file}");
        self.seen.push(file.clone());
        assert!(
            !actual.contains(API_KEY),
            "{file}: the secret in the output"
        );
        let path = golden_dir().join(&file);
        if self.update {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
                .unified_diff()
                .context_radius(3)
                .header(&format!("tests/golden/{file}"), "actual")
                .to_string();
            self.failures
                .push(format!("tests/golden/{file} differs:\n{diff}"));
        }
    }

    /// Fails with every difference, and names stale snapshot files.
    fn finish(mut self) {
        let mut stale = vec![];
        for e in std::fs::read_dir(golden_dir()).into_iter().flatten() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{}-", self.prefix)) && !self.seen.contains(&name) {
                stale.push(name);
            }
        }
        for name in stale {
            if self.update {
                std::fs::remove_file(golden_dir().join(&name)).unwrap();
            } else {
                self.failures.push(format!(
                    "tests/golden/{name}: no case writes this snapshot any more"
                ));
            }
        }
        assert!(
            self.failures.is_empty(),
            "{}\n\n{} golden snapshot(s) differ. If the change is intended, rewrite them with\n  \
             UPDATE_GOLDEN=1 cargo test --test integration --features test-lockout-switch -- golden\n\
             and name the change in the commit message.",
            self.failures
                .iter()
                .map(|f| f.trim_end())
                .collect::<Vec<_>>()
                .join("\n\n"),
            self.failures.len()
        );
    }
}

/// Runs one case and checks its snapshot.
fn case(snaps: &mut Snapshots, norm: &Norm, name: &str, args: &[&str], env: Env) -> Run {
    let r = claw(args, env);
    snaps.check(name, &record(norm, args, env, &r));
    r
}

#[test]
fn golden_help() {
    let norm = Norm::new();
    let mut snaps = Snapshots::new("help");
    // The subcommands, as clap lists them in the top-level help ("Commands:" section).
    let top = claw(&["--help"], &[]);
    let commands: Vec<String> = top
        .stdout
        .split("Commands:\n")
        .nth(1)
        .expect("a Commands section")
        .lines()
        .take_while(|l| l.starts_with("  "))
        // (a wrapped description continues on a line indented further)
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(
        commands.len() >= 10 && commands.iter().any(|c| c == "plan"),
        "{commands:?}"
    );
    case(&mut snaps, &norm, "00-top", &["--help"], &[]);
    case(&mut snaps, &norm, "00-top-short", &["-h"], &[]);
    case(&mut snaps, &norm, "00-version", &["--version"], &[]);
    case(&mut snaps, &norm, "00-no-arguments", &[], &[]);
    for c in &commands {
        case(&mut snaps, &norm, c, &[c.as_str(), "--help"], &[]);
    }
    snaps.finish();
}

/// An offline project in a scratch directory: an inventory of one host on 127.0.0.1 port 1
/// (loopback, nothing listens: refused at once), a playbook and its templates.
struct Offline {
    s: Scratch,
}

impl Offline {
    fn new() -> Offline {
        let s = Scratch::new();
        s.file(
            "templates/app.conf.tera",
            "# for {{ host.name }}\ngreeting = {{ greeting }}\n",
        );
        s.file(
            "pb.toml",
            "name = \"offline\"\n\n[vars]\ngreeting = \"hello\"\n\n\
             [[steps]]\nname = \"app dir\"\nkind = \"dir\"\npath = \"/opt/offline\"\ntags = [\"base\"]\n\n\
             [[steps]]\nname = \"app config\"\nkind = \"template\"\nsrc = \"app.conf.tera\"\npath = \"/opt/offline/app.conf\"\ntags = [\"config\"]\n",
        );
        s.file("known_hosts", "");
        Offline { s }
    }

    /// Writes `inv.toml` naming `playbook`; returns its path.
    fn inventory(&self, playbook: &str) -> String {
        self.s
            .file(
                "inv.toml",
                &format!(
                    "playbook = {playbook:?}\n\n[defaults]\nuser = \"claw\"\nknown_hosts = \"known_hosts\"\n\
                     host_key_policy = \"strict\"\nconnect_timeout = 5\n\n\
                     [hosts.h1]\naddress = \"127.0.0.1\"\nport = 1\n"
                ),
            )
            .display()
            .to_string()
    }

    fn file(&self, rel: &str, content: &str) -> String {
        self.s.file(rel, content).display().to_string()
    }

    fn norm(&self, norm: &Norm) -> Norm {
        let mut n = Norm {
            literals: norm.literals.clone(),
        };
        n.literal(self.s.dir.path().display().to_string(), "<TMP>");
        n
    }
}

#[test]
fn golden_errors() {
    let base = Norm::new();
    let mut snaps = Snapshots::new("error");
    // Each case gets a fresh project, changed as the case needs. Commands that read an
    // inventory run with CLAW_SSH_CONFIG=none; clap's own errors (which read nothing) without.
    let reads: Env = &[NO_SSH_CONFIG];
    let mut n = 0;
    let mut one = |name: &str, env: Env, setup: &dyn Fn(&Offline) -> Vec<String>| {
        n += 1;
        let o = Offline::new();
        let args = setup(&o);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let norm = o.norm(&base);
        let r = case(&mut snaps, &norm, &format!("{n:02}-{name}"), &args, env);
        assert_ne!(r.code, 0, "{name}: an error case exited 0:\n{}", r.stdout);
    };
    one("inventory-bad-toml", reads, &|o| {
        let inv = o.file(
            "inv.toml",
            "playbook = \"pb.toml\"\n[defaults]\nuser = \"claw\"\nport = \n",
        );
        vec!["validate".into(), inv]
    });
    one("inventory-unknown-field", reads, &|o| {
        let inv = o.file(
            "inv.toml",
            "playbook = \"pb.toml\"\n[defaults]\nusr = \"claw\"\n[hosts.h1]\naddress = \"127.0.0.1\"\n",
        );
        vec!["hosts".into(), inv]
    });
    one("inventory-missing-file", reads, &|o| {
        vec![
            "plan".into(),
            format!("{}/nope.toml", o.s.dir.path().display()),
        ]
    });
    one("playbook-unknown-field-and-kind", reads, &|o| {
        o.file(
            "pb.toml",
            "name = \"offline\"\n\n[[steps]]\nname = \"a\"\nkind = \"dir\"\npath = \"/x\"\nmdoe = \"0755\"\n\n\
             [[steps]]\nname = \"b\"\nkind = \"fiel\"\npath = \"/y\"\n",
        );
        vec!["plan".into(), o.inventory("pb.toml")]
    });
    one("playbook-unknown-field-json", reads, &|o| {
        o.file(
            "pb.toml",
            "name = \"offline\"\n\n[[steps]]\nname = \"a\"\nkind = \"dir\"\npath = \"/x\"\nmdoe = \"0755\"\n",
        );
        vec![
            "plan".into(),
            o.inventory("pb.toml"),
            "--output".into(),
            "json".into(),
        ]
    });
    one("template-unknown-variable", reads, &|o| {
        o.file(
            "templates/app.conf.tera",
            "# for {{ host.name }}\ngreeting = {{ greting }}\n",
        );
        vec!["validate".into(), o.inventory("pb.toml")]
    });
    one("template-missing-file", reads, &|o| {
        std::fs::remove_file(o.s.dir.path().join("templates/app.conf.tera")).unwrap();
        vec!["plan".into(), o.inventory("pb.toml")]
    });
    one("limit-matches-nothing", reads, &|o| {
        vec![
            "plan".into(),
            o.inventory("pb.toml"),
            "--limit".into(),
            "web-*".into(),
        ]
    });
    one("tags-unknown", reads, &|o| {
        vec![
            "plan".into(),
            o.inventory("pb.toml"),
            "--tags".into(),
            "nosuch".into(),
        ]
    });
    one("step-unknown", reads, &|o| {
        vec![
            "validate".into(),
            o.inventory("pb.toml"),
            "--step".into(),
            "no such step".into(),
        ]
    });
    one("task-unknown", reads, &|o| {
        vec![
            "plan".into(),
            o.inventory("pb.toml"),
            "--task".into(),
            "deploy".into(),
        ]
    });
    one("extra-var-without-equals", reads, &|o| {
        vec![
            "plan".into(),
            o.inventory("pb.toml"),
            "-e".into(),
            "greeting".into(),
        ]
    });
    one("host-unreachable", reads, &|o| {
        vec!["plan".into(), o.inventory("pb.toml")]
    });
    one("host-unreachable-json", reads, &|o| {
        vec![
            "plan".into(),
            o.inventory("pb.toml"),
            "--output".into(),
            "json".into(),
        ]
    });
    one("apply-without-yes-or-terminal", reads, &|o| {
        vec!["apply".into(), o.inventory("pb.toml")]
    });
    one("apply-plan-not-a-plan", reads, &|o| {
        let plan = o.file("site.plan", "{\"format\": \"something else\"}\n");
        vec![
            "apply".into(),
            o.inventory("pb.toml"),
            "--plan".into(),
            plan,
        ]
    });
    one("clap-unknown-flag", &[], &|o| {
        vec!["plan".into(), o.inventory("pb.toml"), "--colour".into()]
    });
    one("clap-missing-inventory", &[], &|_| vec!["plan".into()]);
    one("clap-unknown-subcommand", &[], &|_| vec!["plna".into()]);
    one("clap-bad-output-value", &[], &|o| {
        vec![
            "plan".into(),
            o.inventory("pb.toml"),
            "--output".into(),
            "yaml".into(),
        ]
    });
    one("clap-quiet-with-verbose", &[], &|o| {
        vec![
            "plan".into(),
            o.inventory("pb.toml"),
            "-q".into(),
            "-v".into(),
        ]
    });
    snaps.finish();
}

/// The lab project: a playbook of a directory, a file and a template with a variable (the
/// template also has an operator secret), a command guarded by `unless`, a read-only command
/// whose output shows the secret masked, and a handler the file and the template notify.
fn lab_playbook(dir: &Path, motd: &str) -> PathBuf {
    let file = |rel: &str, content: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    };
    file(
        "templates/app.conf.tera",
        "# rendered for {{ host.name }}\ngreeting = \"{{ greeting }}\"\nport = {{ port }}\napi_key = \"{{ secrets.CLAW_GOLDEN_API_KEY }}\"\n",
    );
    file(
        "pb.toml",
        &format!(
            r#"name = "golden"
operator_secrets = ["CLAW_GOLDEN_API_KEY"]

[vars]
greeting = "hello"
port = 8080

[[steps]]
name = "app dir"
kind = "dir"
path = "/opt/golden"
mode = "0755"
tags = ["base"]

[[steps]]
name = "motd"
kind = "file"
path = "/opt/golden/motd"
content = "{motd} {{{{ host.name }}}}: {{{{ greeting }}}}\n"
notify = "restart app"

[[steps]]
name = "app config"
kind = "template"
src = "app.conf.tera"
path = "/opt/golden/app.conf"
mode = "0600"
notify = "restart app"
tags = ["config"]

[[steps]]
name = "first-run marker"
kind = "command"
run = "date > /opt/golden/initialised"
unless = "test -e /opt/golden/initialised"

[[steps]]
name = "key check"
kind = "command"
run = "echo 'key in use:' {{{{ secrets.CLAW_GOLDEN_API_KEY | shell_quote }}}}; echo port {{{{ port }}}}"
output = true
changes = false

[[handlers]]
name = "restart app"
kind = "command"
run = "echo restarted >> /opt/golden/restarts"
"#
        ),
    )
}

#[test]
fn golden_lab_runs() {
    let lab = Lab::up("golden", 1);
    let project = lab.dir.join("project");
    let pb = lab_playbook(&project, "welcome to");
    let inv = lab.write_inventory("golden-inventory.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let plan_file = project.join("site.plan");
    let plan_file = plan_file.to_str().unwrap();
    let mut norm = Norm::new();
    norm.literal(lab.dir.display().to_string(), "<LAB>");
    norm.literal(lab.host("h1").address, "<ADDRESS>");
    let mut snaps = Snapshots::new("lab");
    let env: Env = &[NO_SSH_CONFIG, SECRET_ENV];
    let mut run = |name: &str, args: &[&str]| case(&mut snaps, &norm, name, args, env);

    // A fresh host: every step to create.
    run("01-plan", &["plan", inv]);
    run("02-plan-v", &["plan", inv, "-v"]);
    run("03-plan-vv", &["plan", inv, "-vv"]);
    run("04-plan-json", &["plan", inv, "--output", "json"]);
    run(
        "05-plan-quiet-detailed",
        &["plan", inv, "-q", "--detailed-exitcode"],
    );
    let first = run("06-apply-first", &["apply", inv, "--yes"]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    // The same again: nothing to change.
    let second = run("07-apply-second-no-op", &["apply", inv, "--yes"]);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    run("08-apply-v-no-op", &["apply", inv, "--yes", "-v"]);
    run("09-plan-v-no-op", &["plan", inv, "-v"]);
    run("10-plan-json-no-op", &["plan", inv, "--output", "json"]);
    // A changed variable: a diff of the file and the template (its secret masked).
    run(
        "11-plan-changed-var",
        &["plan", inv, "-e", "greeting=bonjour"],
    );
    let a = run(
        "12-apply-json",
        &[
            "apply",
            inv,
            "--yes",
            "--output",
            "json",
            "-e",
            "greeting=bonjour",
        ],
    );
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, a.stderr);
    let a = run(
        "13-apply-vv",
        &["apply", inv, "--yes", "-vv", "-e", "greeting=hola"],
    );
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, a.stderr);
    // A saved plan, its file, and applying exactly it.
    let p = run(
        "14-plan-out",
        &["plan", inv, "-e", "greeting=salut", "--out", plan_file],
    );
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    let saved = std::fs::read_to_string(plan_file).expect("the saved plan");
    snaps.check(
        "15-saved-plan-file",
        &norm.plan_file(&format!("--- file {plan_file}\n{saved}")),
    );
    let mut run = |name: &str, args: &[&str]| case(&mut snaps, &norm, name, args, env);
    let a = run(
        "16-apply-plan",
        &["apply", inv, "-e", "greeting=salut", "--plan", plan_file],
    );
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, a.stderr);
    // A plan made before the playbook changed is refused.
    let p = run(
        "17-plan-out-again",
        &["plan", inv, "-e", "greeting=ciao", "--out", plan_file],
    );
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    lab_playbook(&project, "greetings from");
    let a = run(
        "18-apply-plan-changed-playbook",
        &["apply", inv, "-e", "greeting=ciao", "--plan", plan_file],
    );
    assert_eq!(a.code, 1, "{}\n{}", a.stdout, a.stderr);
    snaps.finish();
}

#[test]
fn golden_normalisation_rules() {
    // Durations: inline, in parentheses, milliseconds, in a right-aligned column.
    assert_eq!(
        durations("changed in 1.3s (0.12s) 84ms"),
        "changed in <DUR> (<DUR>) <DUR>"
    );
    assert_eq!(durations("h1  ok     0     0.4s"), "h1  ok     0    <DUR>");
    assert_eq!(durations("h1  ok     0    12.3s"), "h1  ok     0    <DUR>");
    // Not durations: words, versions, sizes, numbers in names.
    for same in ["0.1.0", "h1s", "10 s", "64K", "sha256s", "1.5x", "v2s"] {
        assert_eq!(durations(same), same);
    }
    assert_eq!(
        json_number(
            r#"{"elapsed_ms":12,"ok":4,"probe_ms": 7}"#,
            "_ms\":",
            "<MS>"
        ),
        r#"{"elapsed_ms":<MS>,"ok":4,"probe_ms": <MS>}"#
    );
    let h = "ab".repeat(32);
    assert_eq!(
        hex64(&format!("\"{h}\" {h}0 {}", &h[..63])),
        format!("\"<HEX64>\" {h}0 {}", &h[..63])
    );
    assert_eq!(shown_arg("web-*"), "'web-*'");
    assert_eq!(shown_arg("it's"), "'it'\\''s'");
    assert_eq!(shown_arg("--limit"), "--limit");
}
