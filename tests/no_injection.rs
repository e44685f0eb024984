//! No injection, proven: seeded hostile values — quotes, `$()`, backticks, `;`, `|`, `&&`,
//! redirections, line breaks, globs, control and non-ASCII characters, Tera delimiters, NUL and
//! non-UTF-8 bytes where they are allowed — as path components, file contents (local `src`
//! files with any bytes, inline `content`), template variables and so template output, values
//! passed through `shell_quote` into a command, and owner/group names. Every payload tries to
//! `touch` a canary file `pwned-N`. On a light lab host: each path holds exactly the literal value
//! (sha256, type and attributes read back with `find`/`sha256sum`, not with the tool), no canary
//! exists, and a second apply changes nothing. Values that must be refused (bad owner names,
//! `..`, relative paths, NUL where it would reach a shell) are refused offline, every one named
//! with its file, line and step, before any connection; owners that do not exist stop the step
//! before it changes anything.
//!
//! Non-UTF-8 bytes: TOML and templates are UTF-8, so paths, names and template output are too;
//! only a `file` step's `src` can carry other bytes, and those cases use it.
//!
//! Seed: `CLAW_INJECT_SEED` (default 0x1A7EC7), cases: `CLAW_INJECT_CASES` (default 200).

use crate::support::{Lab, Scratch, claw, log_len, sshd_counts};
use crate::tree::{self, GROUPS, USERS};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::collections::BTreeMap;
use std::fmt::Write as _;

const ROOT: &str = "/srv/si-inj";

fn pick<S: Strategy>(r: &mut TestRunner, s: S) -> S::Value {
    s.new_tree(r).expect("value").current()
}

/// Hostile text for case `n`: payloads that would create the canary `pwned-N` if anything were
/// evaluated (relative to `/`, where every script starts, so they need no `/`), mixed with
/// shell and template metacharacters and arbitrary characters.
fn hostile(r: &mut TestRunner, n: usize) -> String {
    let payloads = [
        format!("$(cd tmp && touch pwned-{n})"),
        format!("`cd tmp; touch pwned-{n}`"),
        format!("'; cd tmp; touch pwned-{n}; '"),
        format!("\"; cd tmp; touch pwned-{n}; \""),
        format!("\ncd tmp; touch pwned-{n}\n"),
        format!("$(touch${{IFS}}pwned-{n})"),
        format!("| touch pwned-{n}"),
        format!("&& touch pwned-{n} #"),
        format!("> pwned-{n}"),
        format!("'\\''; touch pwned-{n}; echo '"),
        format!("${{x:-$(touch pwned-{n})}}"),
    ];
    let extras = [
        "'", "\"", "\\", "`", "$", "$(", ")", ";", "&", "|", "<", ">", "*", "?", "[", "]", "~",
        "#", "!", "%", " ", "\t", "\r", "\n", "\x01", "\x7f", "é", "\u{202e}", "日本", "{{", "}}",
        "{%", "%}", "{#", "-rf", "--", "$HOME", "'\\''",
    ];
    let parts = pick(r, 1usize..6);
    let mut s = String::new();
    for _ in 0..parts {
        match pick(r, 0..4) {
            0 | 1 => s.push_str(&payloads[pick(r, 0..payloads.len())]),
            2 => s.push_str(extras[pick(r, 0..extras.len())]),
            _ => s.push_str(&pick(r, any::<String>()).chars().take(8).collect::<String>()),
        }
    }
    s
}

/// A path component: hostile, without `/` and NUL, never empty, `.` or `..`, unique by `~N`.
fn component(r: &mut TestRunner, n: usize) -> String {
    let mut s: String = hostile(r, n).replace(['/', '\0'], "");
    while s.len() > 180 {
        s.pop();
    }
    format!("{s}~{n}")
}

/// Whether text would be rendered by Tera as a step argument.
fn templated(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// What a path must be: kind, sha256, mode, uid, gid (None: not checked).
type Want = (char, Option<String>, Option<u32>, Option<u32>, Option<u32>);

#[derive(Debug)]
enum Kind {
    /// `file` with `src`: any bytes.
    Src(Vec<u8>),
    /// `file` with inline `content` (literal text, NUL allowed).
    Inline(String),
    /// `template`: `<{{ vN }}>` with a hostile playbook variable (NUL allowed).
    Template(String),
    /// `command`: `printf %s {{ vN | shell_quote }} > {{ path | shell_quote }}`.
    Command(String),
    /// `dir`, with a `file` inside it, also hostile.
    Dir(String, Vec<u8>),
}

struct Case {
    n: usize,
    comp: String,
    kind: Kind,
    mode: Option<u32>,
    owner: Option<usize>,
    group: Option<usize>,
}

impl Case {
    fn generate(r: &mut TestRunner, n: usize) -> Case {
        let comp = component(r, n);
        let kind = match pick(r, 0..5) {
            0 => {
                let mut b = hostile(r, n).into_bytes();
                b.extend(pick(r, prop::collection::vec(any::<u8>(), 0..64)));
                b.extend([0, 0xff, 0xfe, b'\n']);
                Kind::Src(b)
            }
            1 => {
                let mut s = hostile(r, n);
                while templated(&s) {
                    s = s.replace('{', "(");
                }
                Kind::Inline(format!("{s}\0{}", hostile(r, n).replace('{', "(")))
            }
            2 => Kind::Template(format!("{}\0", hostile(r, n))),
            3 => Kind::Command(hostile(r, n).replace('\0', "")),
            _ => {
                let child = component(r, n);
                let mut b = hostile(r, n).into_bytes();
                b.push(0x80);
                Kind::Dir(child, b)
            }
        };
        let mode = pick(
            r,
            prop::option::of(prop::sample::select(vec![
                0o600, 0o640, 0o644, 0o755, 0o4750, 0o2711,
            ])),
        );
        let owner = pick(r, prop::option::of(0..USERS.len()));
        let group = pick(r, prop::option::of(0..GROUPS.len()));
        Case {
            n,
            comp,
            kind,
            mode,
            owner,
            group,
        }
    }

    fn path(&self) -> String {
        format!("{ROOT}/{}", self.comp)
    }

    /// Variables (playbook `[vars]`) and steps of this case.
    fn write(&self, s: &Scratch, vars: &mut String, steps: &mut String) {
        let n = self.n;
        writeln!(vars, "p{n} = {}", tree::toml_str(&self.comp)).unwrap();
        // The path literally when it is not a template, else through a variable.
        let path = if templated(&self.path()) || n.is_multiple_of(2) {
            format!("\"{ROOT}/{{{{ p{n} }}}}\"")
        } else {
            tree::toml_str(&self.path())
        };
        let attrs = |out: &mut String| {
            if let Some(m) = self.mode {
                writeln!(out, "mode = \"{m:04o}\"").unwrap();
            }
            if let Some(o) = self.owner {
                writeln!(out, "owner = \"{}\"", USERS[o].0).unwrap();
            }
            if let Some(g) = self.group {
                writeln!(out, "group = \"{}\"", GROUPS[g].0).unwrap();
            }
        };
        writeln!(steps, "\n[[steps]]\nname = \"case {n}\"").unwrap();
        match &self.kind {
            Kind::Src(b) => {
                s.file(&format!("files/c{n}"), "");
                std::fs::write(s.dir.path().join(format!("files/c{n}")), b).unwrap();
                writeln!(
                    steps,
                    "kind = \"file\"\npath = {path}\nsrc = \"files/c{n}\""
                )
                .unwrap();
                attrs(steps);
            }
            Kind::Inline(t) => {
                writeln!(
                    steps,
                    "kind = \"file\"\npath = {path}\ncontent = {}",
                    tree::toml_str(t)
                )
                .unwrap();
                attrs(steps);
            }
            Kind::Template(v) => {
                writeln!(vars, "v{n} = {}", tree::toml_str(v)).unwrap();
                s.file(
                    &format!("templates/c{n}.tera"),
                    &format!("<{{{{ v{n} }}}}>"),
                );
                writeln!(
                    steps,
                    "kind = \"template\"\npath = {path}\nsrc = \"c{n}.tera\""
                )
                .unwrap();
                attrs(steps);
            }
            Kind::Command(v) => {
                writeln!(vars, "v{n} = {}", tree::toml_str(v)).unwrap();
                writeln!(
                    steps,
                    "kind = \"command\"\nrun = \"printf %s {{{{ v{n} | shell_quote }}}} > {{{{ '{ROOT}/' ~ p{n} | shell_quote }}}}\"\ncreates = {path}"
                )
                .unwrap();
            }
            Kind::Dir(child, b) => {
                writeln!(vars, "q{n} = {}", tree::toml_str(child)).unwrap();
                writeln!(steps, "kind = \"dir\"\npath = {path}").unwrap();
                attrs(steps);
                s.file(&format!("files/d{n}"), "");
                std::fs::write(s.dir.path().join(format!("files/d{n}")), b).unwrap();
                writeln!(
                    steps,
                    "\n[[steps]]\nname = \"case {n} inside\"\nkind = \"file\"\npath = \"{ROOT}/{{{{ p{n} }}}}/{{{{ q{n} }}}}\"\nsrc = \"files/d{n}\""
                )
                .unwrap();
            }
        }
    }

    /// What must be on the host (relative paths under ROOT): kind, sha256, mode, uid, gid.
    fn expect(&self, out: &mut BTreeMap<Vec<u8>, Want>) {
        let uid = self.owner.map(|o| USERS[o].1);
        let gid = self.group.map(|g| GROUPS[g].1);
        let p = self.comp.as_bytes().to_vec();
        let file = |b: &[u8]| Some(tree::sha256(b));
        let (kind, sha, mode, uid, gid) = match &self.kind {
            Kind::Src(b) => ('f', file(b), self.mode, uid, gid),
            Kind::Inline(t) => ('f', file(t.as_bytes()), self.mode, uid, gid),
            Kind::Template(v) => ('f', file(format!("<{v}>").as_bytes()), self.mode, uid, gid),
            Kind::Command(v) => ('f', file(v.as_bytes()), None, None, None),
            Kind::Dir(child, b) => {
                let mut c = p.clone();
                c.push(b'/');
                c.extend(child.as_bytes());
                out.insert(c, ('f', file(b), None, None, None));
                ('d', None, self.mode, uid, gid)
            }
        };
        out.insert(p, (kind, sha, mode, uid, gid));
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => v.parse().unwrap(),
        })
        .unwrap_or(default)
}

fn runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..14].copy_from_slice(b"inject");
    TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Canary files anywhere a payload could have written one.
fn canaries(lab: &Lab) -> String {
    lab.ssh_ok(
        "h1",
        &format!("sudo sh -c 'ls -d /tmp/pwned-* /pwned-* {ROOT}/pwned-* 2>/dev/null; true'"),
    )
}

#[test]
fn hostile_values_stay_literal_and_nothing_runs() {
    let seed = env("CLAW_INJECT_SEED", 0x1a7ec7);
    let count = env("CLAW_INJECT_CASES", 200) as usize;
    let started = std::time::Instant::now();
    let mut r = runner(seed);
    let cases: Vec<Case> = (0..count).map(|n| Case::generate(&mut r, n)).collect();
    let lab = Lab::up("si-inject", 1);
    let s = Scratch::new();
    let (mut vars, mut steps) = (String::from("\n[vars]\n"), String::new());
    writeln!(
        steps,
        "\n[[steps]]\nname = \"root\"\nkind = \"dir\"\npath = \"{ROOT}\""
    )
    .unwrap();
    for c in &cases {
        c.write(&s, &mut vars, &mut steps);
    }
    let pb = s.file("pb.toml", &format!("name = \"inject\"\n{vars}{steps}"));
    let inv = lab.write_inventory("inject.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let context = format!("seed {seed:#x}, {count} cases (CLAW_INJECT_SEED, CLAW_INJECT_CASES)");

    let first = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    // The canaries first: whatever else went wrong, a payload that ran is the news.
    assert_eq!(canaries(&lab), "", "{context}: a payload ran");
    assert_eq!(
        first.code, 0,
        "{context}\n{}\n{}",
        first.stdout, first.stderr
    );
    let got = tree::read(&lab, "h1", ROOT);
    let mut want = BTreeMap::new();
    for c in &cases {
        c.expect(&mut want);
    }
    let mut bad = String::new();
    for (p, (kind, sha, mode, uid, gid)) in &want {
        let case = cases
            .iter()
            .find(|c| p.starts_with(c.comp.as_bytes()))
            .map(|c| format!("case {} {:?}", c.n, c.kind))
            .unwrap_or_default();
        match got.get(p) {
            None => writeln!(bad, "{} missing ({case})", tree::show(p)).unwrap(),
            Some(n) => {
                let ok = n.kind == *kind
                    && n.sha256 == *sha
                    && mode.is_none_or(|m| m == n.mode)
                    && uid.is_none_or(|u| u == n.uid)
                    && gid.is_none_or(|g| g == n.gid);
                if !ok {
                    writeln!(
                        bad,
                        "{}: got {n:?}, want {kind} {sha:?} {mode:?} {uid:?}:{gid:?} ({case})",
                        tree::show(p)
                    )
                    .unwrap();
                }
            }
        }
    }
    for p in got.keys().filter(|p| !want.contains_key(*p)) {
        writeln!(bad, "{} is there but no case made it", tree::show(p)).unwrap();
    }
    assert!(bad.is_empty(), "{context}:\n{bad}");

    let second = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(second.code, 0, "{context}\n{}", second.stderr);
    assert_eq!(
        second.host("h1")["changed"],
        0,
        "{context}: {}",
        second.stdout
    );
    assert_eq!(canaries(&lab), "", "{context}: a payload ran");

    refused_offline(&lab, &s, &mut r);
    missing_accounts_change_nothing(&lab, &s);
    assert_eq!(canaries(&lab), "", "{context}: a payload ran");
    eprintln!(
        "no_injection: {context}, {} paths checked, {:.1} s",
        want.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Bad owner and group names, `..`, relative paths, NUL in a path or a command: every one is
/// an error naming the playbook, its line and the step, all at once, before any connection.
fn refused_offline(lab: &Lab, s: &Scratch, r: &mut TestRunner) {
    let mut vars = String::from("[vars]\n");
    let mut steps = String::new();
    let mut names = vec![];
    for n in 0..40 {
        let name = format!("bad {n}");
        let h = hostile(r, 1000 + n).replace('\0', "");
        let body = match n % 8 {
            0 => format!(
                "kind = \"file\"\npath = \"{ROOT}/x{n}\"\ncontent = \"x\"\nowner = {}",
                tree::toml_str(&format!("{h}x"))
            ),
            1 => format!(
                "kind = \"dir\"\npath = \"{ROOT}/x{n}\"\ngroup = {}",
                tree::toml_str(&format!("-{h}"))
            ),
            2 => format!(
                "kind = \"template\"\npath = \"{ROOT}/x{n}\"\nsrc = \"c0.tera\"\nowner = \"-rf\""
            ),
            3 => {
                writeln!(
                    vars,
                    "b{n} = {}",
                    tree::toml_str(&format!("{}/../../etc/x", h.replace('/', "")))
                )
                .unwrap();
                format!("kind = \"file\"\npath = \"{ROOT}/{{{{ b{n} }}}}\"\ncontent = \"x\"")
            }
            4 => {
                writeln!(
                    vars,
                    "b{n} = {}",
                    tree::toml_str(&format!("a{}\0b", h.replace('/', "")))
                )
                .unwrap();
                format!("kind = \"dir\"\npath = \"{ROOT}/{{{{ b{n} }}}}\"")
            }
            5 => format!(
                "kind = \"file\"\npath = {}\ncontent = \"x\"",
                tree::toml_str(&format!("srv/{}", h.replace('/', "")))
            ),
            6 => {
                writeln!(
                    vars,
                    "b{n} = {}",
                    tree::toml_str(&format!("{h}\0; touch /tmp/pwned-{n}"))
                )
                .unwrap();
                format!("kind = \"command\"\nrun = \"echo {{{{ b{n} | shell_quote }}}}\"")
            }
            _ => format!("kind = \"file\"\npath = \"{ROOT}/..\"\ncontent = \"x\""),
        };
        writeln!(steps, "\n[[steps]]\nname = \"{name}\"\n{body}").unwrap();
        names.push(name);
    }
    let text = format!("name = \"refused\"\n{vars}{steps}");
    let pb = s.file("bad.toml", &text);
    let inv = lab.write_inventory("bad.toml", &pb, &[]);
    let log = lab.host("h1").sshd_log;
    let mark = log_len(&log);
    let out = claw(&["apply", inv.to_str().unwrap(), "--yes"], &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    for name in &names {
        // The error names the file, the line of the step's table or key, and the step.
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&format!("step `{name}` ")))
            .unwrap_or_else(|| panic!("no error for step `{name}`:\n{}", out.stderr));
        let at: usize = line
            .split("bad.toml:")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no file:line in `{line}`"));
        let start = text
            .lines()
            .position(|l| l == format!("name = \"{name}\""))
            .unwrap();
        assert!(
            (start..start + 6).contains(&at),
            "`{line}`: line {at}, the step is at {}",
            start + 1
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        sshd_counts(&log, mark),
        (0, 0),
        "no connection on bad input"
    );
}

/// Owners and groups of a valid form that the host does not have: the step fails with a clear
/// error, nothing is created or changed.
fn missing_accounts_change_nothing(lab: &Lab, s: &Scratch) {
    lab.ssh_ok(
        "h1",
        &format!("echo old | sudo tee {ROOT}/existing >/dev/null"),
    );
    let steps = [
        (
            "dir",
            "path = \"/srv/si-inj/new-dir\"\nowner = \"no-such-user\"",
            "owner `no-such-user`",
        ),
        (
            "file",
            "path = \"/srv/si-inj/new-file\"\ncontent = \"x\"\ngroup = \"no-such-group\"",
            "group `no-such-group`",
        ),
        (
            "file",
            "path = \"/srv/si-inj/existing\"\ncontent = \"new\\n\"\nowner = \"no-such-user\"",
            "owner `no-such-user`",
        ),
        (
            "file",
            "path = \"/srv/si-inj/existing\"\ncontent = \"old\\n\"\ngroup = \"no_such.group\"",
            "group `no_such.group`",
        ),
    ];
    for (i, (kind, args, who)) in steps.iter().enumerate() {
        let pb = s.file(
            &format!("missing{i}.toml"),
            &format!("name = \"missing\"\n[[steps]]\nname = \"m\"\nkind = \"{kind}\"\n{args}\n"),
        );
        let inv = lab.write_inventory("missing.toml", &pb, &[]);
        let r = claw(
            &["apply", inv.to_str().unwrap(), "--yes", "--output", "json"],
            &[],
        );
        assert_eq!(r.code, 1, "{}", r.stdout);
        let err = r.host("h1")["error"].as_str().unwrap_or("").to_string();
        assert!(
            err.contains(&format!("{who} does not exist on the host")),
            "{err}"
        );
        assert_eq!(
            lab.ssh_ok("h1", &format!("sudo sh -c 'cat {ROOT}/existing; stat -c %U:%G {ROOT}/existing; ls {ROOT} | grep -c ^new- || true'")),
            "old\nroot:root\n0\n",
            "{kind} {args}: nothing changed"
        );
    }
}
