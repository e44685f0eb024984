//! Convergence, randomized: seeded random desired states (directories, files from local files
//! with any bytes, inline files, templates; modes, owners and groups among the host's accounts;
//! nested paths; some declared absent) and random drift made by hand on a light lab host
//! (deleted, edited, chmod'ed, chown'ed, a file replaced by a directory, a directory by a file,
//! either by a symbolic link to a copy of itself, absent paths created). After each apply the
//! whole tree on the host (types, modes, owners, sha256, and nothing else there) must be exactly
//! what the declarations say, computed from what was there before; a second apply changes
//! nothing.
//!
//! Every tree has its own random stream (from the seed and its index), so one tree replays
//! alone. Environment: `CLAW_CONVERGE_SEED` (default 0x5EED), `CLAW_CONVERGE_TREES` (default
//! 60), `CLAW_CONVERGE_ROUNDS` (default 3), `CLAW_CONVERGE_ONLY` (one tree index: replay it).
//! `scripts/converge-fuzz.sh SEED TREES [ROUNDS]` runs thousands.

use crate::support::{Lab, Run, Scratch, claw};
use crate::tree::{self, GROUPS, Node, Tree, USERS};
use claw_provision::quote::quote;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::fmt::Write as _;

const ROOT: &str = "/srv/si-conv";
/// Copies that symbolic-link drift points to (outside ROOT).
const DECOYS: &str = "/srv/si-conv-decoys";
/// Trees per playbook: one apply works on all of their paths at once.
const CHUNK: usize = 80;

#[derive(Clone, Debug)]
enum What {
    Dir,
    /// A `file` step: content from a local `src` file (any bytes) or inline `content`.
    File {
        content: Vec<u8>,
        inline: bool,
    },
    /// A `template` step: `before{{ v }}after`, `v` in the step's `vars`.
    Template {
        before: String,
        value: String,
        after: String,
    },
    /// Declared absent (as a `dir` step or a `file` step).
    Absent {
        dir: bool,
    },
}

impl What {
    fn is_dir(&self) -> bool {
        matches!(self, What::Dir)
    }
    fn content(&self) -> Option<Vec<u8>> {
        match self {
            What::File { content, .. } => Some(content.clone()),
            What::Template {
                before,
                value,
                after,
            } => Some(format!("{before}{value}{after}").into_bytes()),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    /// Relative to ROOT: `t12/a b/x`.
    rel: String,
    /// Index of the parent entry in the tree (None for the tree's own directory).
    parent: Option<usize>,
    what: What,
    mode: Option<u32>,
    owner: Option<usize>,
    group: Option<usize>,
    force: bool,
}

/// One tree: its entries (parents first) and its random stream.
struct Case {
    index: usize,
    entries: Vec<Entry>,
    runner: TestRunner,
    /// What drift did in the current round, per entry (for failure reports).
    drift: Vec<String>,
}

fn pick<S: Strategy>(r: &mut TestRunner, s: S) -> S::Value {
    s.new_tree(r).expect("value").current()
}

fn chance(r: &mut TestRunner, p: f64) -> bool {
    pick(r, prop::bool::weighted(p))
}

fn runner_for(seed: u64, index: usize) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    bytes[16..24].copy_from_slice(b"converge");
    TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

fn mode(r: &mut TestRunner) -> Option<u32> {
    if chance(r, 0.4) {
        return None;
    }
    Some(if chance(r, 0.7) {
        pick(
            r,
            prop::sample::select(vec![
                0o644, 0o600, 0o640, 0o755, 0o750, 0o700, 0o2755, 0o4755, 0o4750, 0o1777, 0o0,
                0o6711,
            ]),
        )
    } else {
        pick(r, 0u32..0o10000)
    })
}

fn what(r: &mut TestRunner) -> What {
    match pick(r, 0..10) {
        0..=2 => What::Dir,
        3..=4 => What::File {
            content: pick(r, prop::collection::vec(any::<u8>(), 0..300)),
            inline: false,
        },
        5..=6 => What::File {
            // Inline content is a template argument: no `{`.
            content: pick(r, "[ -z|~\n\t\u{e9}\u{202e}]{0,120}").into_bytes(),
            inline: true,
        },
        7..=8 => What::Template {
            before: pick(r, "[ -z\n]{0,60}"),
            // Step arguments (`vars` too) are templates: no `{`.
            value: pick(r, "[ -z|~\n]{0,40}"),
            after: pick(r, "[ -z\n]{0,20}"),
        },
        _ => What::Absent {
            dir: chance(r, 0.5),
        },
    }
}

fn attrs(r: &mut TestRunner, e: &mut Entry) {
    e.mode = mode(r);
    e.owner = chance(r, 0.5).then(|| pick(r, 0..USERS.len()));
    e.group = chance(r, 0.5).then(|| pick(r, 0..GROUPS.len()));
}

impl Case {
    fn new(seed: u64, index: usize) -> Case {
        let mut r = runner_for(seed, index);
        let mut top = Entry {
            rel: format!("t{index}"),
            parent: None,
            what: What::Dir,
            mode: None,
            owner: None,
            group: None,
            force: false,
        };
        attrs(&mut r, &mut top);
        let mut c = Case {
            index,
            entries: vec![top],
            runner: r,
            drift: vec![],
        };
        let n = pick(&mut c.runner, 1usize..7);
        for _ in 0..n {
            c.add();
        }
        c
    }

    /// A new entry below a directory of the tree, with a name not used there yet.
    fn add(&mut self) {
        let dirs: Vec<usize> = (0..self.entries.len())
            .filter(|i| self.entries[*i].what.is_dir())
            .collect();
        let r = &mut self.runner;
        let parent = dirs[pick(r, 0..dirs.len())];
        let name: String = pick(r, "[a-z0-9][a-z0-9 ._'$-]{0,7}");
        let rel = format!("{}/{name}", self.entries[parent].rel);
        if self.entries.iter().any(|e| e.rel == rel) {
            return;
        }
        let mut e = Entry {
            rel,
            parent: Some(parent),
            what: what(r),
            mode: None,
            owner: None,
            group: None,
            force: chance(r, 0.5),
        };
        attrs(r, &mut e);
        self.entries.push(e);
    }

    fn is_leaf(&self, i: usize) -> bool {
        !self.entries.iter().any(|e| e.parent == Some(i))
    }

    /// A new desired state: some entries get new contents or attributes, some leaves change
    /// kind (with `force`), some entries are added.
    fn mutate(&mut self) {
        for i in 1..self.entries.len() {
            let r = &mut self.runner;
            if !chance(r, 0.3) {
                continue;
            }
            if chance(r, 0.4) {
                // Only who owns it (a mode with setuid/setgid bits must survive the chown).
                let e = &mut self.entries[i];
                e.owner = Some(pick(r, 0..USERS.len()));
                e.group = chance(r, 0.5).then(|| pick(r, 0..GROUPS.len()));
            } else if chance(r, 0.5) {
                let mut e = self.entries[i].clone();
                attrs(r, &mut e);
                if let What::File { content, .. } = &mut e.what
                    && chance(r, 0.5)
                {
                    content.extend(b"new\n");
                }
                self.entries[i] = e;
            } else if self.is_leaf(i) {
                let r = &mut self.runner;
                let w = what(r);
                let e = &mut self.entries[i];
                e.what = w;
                e.force = true;
                attrs(&mut self.runner, &mut self.entries[i]);
            }
        }
        if chance(&mut self.runner, 0.5) {
            self.add();
        }
    }

    /// Drift made by hand (a script for the host), recorded per entry for reports.
    fn drift_script(&mut self) -> String {
        let mut s = String::new();
        self.drift = vec![String::new(); self.entries.len()];
        for i in 0..self.entries.len() {
            let e = self.entries[i].clone();
            let r = &mut self.runner;
            if !chance(r, 0.5) {
                continue;
            }
            let p = quote(&format!("{ROOT}/{}", e.rel));
            let decoy = quote(&format!("{DECOYS}/{}-{i}", self.index));
            let (what, cmd) = match (&e.what, pick(r, 0..6)) {
                (What::Absent { dir }, _) => {
                    let dir = if e.force { chance(r, 0.5) } else { *dir };
                    if dir {
                        (
                            "created as a directory",
                            format!("mkdir {p} && touch {p}/inner"),
                        )
                    } else {
                        ("created as a file", format!("echo drift > {p}"))
                    }
                }
                (_, 0) => ("deleted", format!("rm -rf {p}")),
                (_, 1) => {
                    let m = pick(r, 0u32..0o10000);
                    ("chmod'ed", format!("chmod {m:05o} {p}"))
                }
                (_, 2) => {
                    let (u, _) = USERS[pick(r, 0..USERS.len())];
                    let (g, _) = GROUPS[pick(r, 0..GROUPS.len())];
                    ("chown'ed", format!("chown {u}:{g} {p}"))
                }
                (What::Dir, 3) if e.force => (
                    "replaced by a file",
                    format!("rm -rf {p} && echo drift > {p}"),
                ),
                (What::Dir, 4) if e.force => (
                    "replaced by a link to a copy of itself",
                    format!(
                        "rm -rf {decoy} && cp -a {p} {decoy} && rm -rf {p} && ln -s {decoy} {p}"
                    ),
                ),
                (What::Dir, _) => ("chmod'ed", format!("chmod 0777 {p}")),
                (_, 3) if e.force => (
                    "replaced by a directory",
                    format!("rm -f {p} && mkdir {p} && echo x > {p}/inner"),
                ),
                (_, 4) if e.force => (
                    "replaced by a link to a copy of itself",
                    format!("rm -f {decoy} && cp -a {p} {decoy} && rm -f {p} && ln -s {decoy} {p}"),
                ),
                _ => ("edited", format!("printf 'drift' >> {p}")),
            };
            self.drift[i] = what.to_string();
            writeln!(s, "{{ {cmd}; }} 2>/dev/null").unwrap();
        }
        s
    }

    /// The steps of this tree (and its files in `scratch`).
    fn steps(&self, scratch: &Scratch, out: &mut String) {
        for (i, e) in self.entries.iter().enumerate() {
            let kind = match &e.what {
                What::Dir | What::Absent { dir: true } => "dir",
                What::File { .. } | What::Absent { dir: false } => "file",
                What::Template { .. } => "template",
            };
            let path = format!("{ROOT}/{}", e.rel);
            writeln!(
                out,
                "\n[[steps]]\nname = \"t{}e{i}\"\nkind = \"{kind}\"\npath = {}",
                self.index,
                tree::toml_str(&path)
            )
            .unwrap();
            match &e.what {
                What::Absent { .. } => out.push_str("state = \"absent\"\n"),
                What::File {
                    content,
                    inline: true,
                } => writeln!(
                    out,
                    "content = {}",
                    tree::toml_str(std::str::from_utf8(content).unwrap())
                )
                .unwrap(),
                What::File { content, .. } => {
                    let f = format!("files/t{}e{i}", self.index);
                    std::fs::create_dir_all(scratch.dir.path().join("files")).unwrap();
                    std::fs::write(scratch.dir.path().join(&f), content).unwrap();
                    writeln!(out, "src = \"{f}\"").unwrap();
                }
                What::Template {
                    before,
                    value,
                    after,
                } => {
                    let f = format!("t{}e{i}.tera", self.index);
                    scratch.file(
                        &format!("templates/{f}"),
                        &format!("{before}{{{{ v }}}}{after}"),
                    );
                    writeln!(
                        out,
                        "src = \"{f}\"\nvars = {{ v = {} }}",
                        tree::toml_str(value)
                    )
                    .unwrap();
                }
                What::Dir => {}
            }
            if !matches!(e.what, What::Absent { .. }) {
                if let Some(m) = e.mode {
                    writeln!(out, "mode = \"{m:04o}\"").unwrap();
                }
                if let Some(o) = e.owner {
                    writeln!(out, "owner = \"{}\"", USERS[o].0).unwrap();
                }
                if let Some(g) = e.group {
                    writeln!(out, "group = \"{}\"", GROUPS[g].0).unwrap();
                }
            }
            if e.force {
                out.push_str("force = true\n");
            }
        }
    }

    /// What the tree must look like after an apply, from what was there before.
    fn expect(&self, t: &mut Tree) {
        for e in &self.entries {
            let p = e.rel.as_bytes().to_vec();
            let cur = t.get(&p).cloned();
            let remove = |t: &mut Tree| {
                t.retain(|k, _| !(k == &p || (k.starts_with(&p) && k.get(p.len()) == Some(&b'/'))));
            };
            // Group of something new: the parent's when it has the setgid bit.
            let parent = e.rel.rsplit_once('/').map(|(d, _)| d.as_bytes().to_vec());
            let new_gid = match parent.and_then(|d| t.get(&d)) {
                Some(n) if n.mode & 0o2000 != 0 => n.gid,
                _ => 0,
            };
            let uid = e.owner.map(|o| USERS[o].1);
            let gid = e.group.map(|g| GROUPS[g].1);
            let want_kind = match &e.what {
                What::Dir => 'd',
                What::Absent { .. } => {
                    remove(t);
                    continue;
                }
                _ => 'f',
            };
            let sha = e.what.content().map(|c| tree::sha256(&c));
            let node = match cur {
                Some(n) if n.kind == want_kind => Node {
                    kind: want_kind,
                    mode: e.mode.unwrap_or(n.mode),
                    uid: uid.unwrap_or(n.uid),
                    gid: gid.unwrap_or(n.gid),
                    sha256: sha,
                },
                _ => {
                    remove(t);
                    Node {
                        kind: want_kind,
                        mode: e
                            .mode
                            .unwrap_or(if want_kind == 'd' { 0o755 } else { 0o644 }),
                        uid: uid.unwrap_or(0),
                        gid: gid.unwrap_or(new_gid),
                        sha256: sha,
                    }
                }
            };
            t.insert(p, node);
        }
    }

    /// The entry a path belongs to (itself or its nearest managed ancestor), for reports.
    fn describe(&self, path: &[u8]) -> String {
        let path = String::from_utf8_lossy(path);
        let mut best: Option<(usize, &Entry)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if (path == e.rel || path.starts_with(&format!("{}/", e.rel)))
                && best.is_none_or(|(_, b)| e.rel.len() > b.rel.len())
            {
                best = Some((i, e));
            }
        }
        match best {
            Some((i, e)) => format!(
                "step t{}e{i} {:?} {} mode {:?} owner {:?} group {:?} force {}; drift: {}",
                self.index,
                e.rel,
                match &e.what {
                    What::Dir => "dir".to_string(),
                    What::Absent { dir } =>
                        format!("absent ({})", if *dir { "dir" } else { "file" }),
                    w => format!("file sha256 {}", tree::sha256(&w.content().unwrap())),
                },
                e.mode.map(|m| format!("{m:04o}")),
                e.owner.map(|o| USERS[o].0),
                e.group.map(|g| GROUPS[g].0),
                e.force,
                self.drift
                    .get(i)
                    .filter(|d| !d.is_empty())
                    .map_or("none", |d| d)
            ),
            None => "no step".into(),
        }
    }
}

fn env(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            }
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        }
        Err(_) => default,
    }
}

/// The trees' part of the host tree (their top directories and below).
fn of_trees(t: &Tree, cases: &[Case]) -> Tree {
    let tops: Vec<Vec<u8>> = cases
        .iter()
        .map(|c| c.entries[0].rel.clone().into_bytes())
        .collect();
    t.iter()
        .filter(|(k, _)| {
            tops.iter()
                .any(|p| *k == p || (k.starts_with(p) && k.get(p.len()) == Some(&b'/')))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn apply(inv: &str) -> Run {
    claw(&["apply", inv, "--yes", "--output", "json"], &[])
}

#[test]
fn random_states_and_drift_converge() {
    let seed = env("CLAW_CONVERGE_SEED", 0x5eed);
    let trees = env("CLAW_CONVERGE_TREES", 60) as usize;
    let rounds = env("CLAW_CONVERGE_ROUNDS", 3) as usize;
    let only = std::env::var("CLAW_CONVERGE_ONLY")
        .ok()
        .map(|v| v.parse::<usize>().unwrap());
    let replay = |i: usize| {
        format!(
            "replay: CLAW_CONVERGE_SEED={seed:#x} CLAW_CONVERGE_ROUNDS={rounds} CLAW_CONVERGE_ONLY={i} cargo test --test integration converge_fuzz:: -- --nocapture"
        )
    };
    let started = std::time::Instant::now();
    let lab = Lab::up("si-conv", 1);
    let indexes: Vec<usize> = match only {
        Some(i) => vec![i],
        None => (0..trees).collect(),
    };
    let (mut paths, mut applies) = (0usize, 0usize);
    for chunk in indexes.chunks(CHUNK) {
        let mut cases: Vec<Case> = chunk.iter().map(|i| Case::new(seed, *i)).collect();
        lab.ssh_ok(
            "h1",
            &format!("sudo rm -rf {ROOT} {DECOYS}; sudo mkdir -p {DECOYS}"),
        );
        for round in 0..rounds {
            if round > 0 {
                for c in &mut cases {
                    c.mutate();
                }
            }
            let scratch = Scratch::new();
            let mut pb = format!(
                "name = \"converge\"\n\n[[steps]]\nname = \"root\"\nkind = \"dir\"\npath = \"{ROOT}\"\nmode = \"0755\"\nowner = \"root\"\ngroup = \"root\"\n"
            );
            for c in &cases {
                c.steps(&scratch, &mut pb);
                paths += c.entries.len();
            }
            let pb = scratch.file("pb.toml", &pb);
            let inv = lab.write_inventory("conv.toml", &pb, &[]);
            let inv = inv.to_str().unwrap();
            if round > 0 {
                let script: String = cases.iter_mut().map(Case::drift_script).collect();
                // Drift may undo itself (a path deleted before its chmod): errors don't matter.
                lab.ssh_ok(
                    "h1",
                    &format!("sudo sh -c {}", quote(&format!("{script}exit 0\n"))),
                );
            } else {
                for c in &mut cases {
                    c.drift = vec![];
                }
            }
            let before = tree::read(&lab, "h1", ROOT);
            let mut want = before.clone();
            for c in &cases {
                c.expect(&mut want);
            }
            let first = apply(inv);
            applies += 1;
            let fail = |what: &str, detail: String| -> ! {
                let mut msg = format!(
                    "convergence failed (seed {seed:#x}, round {round}): {what}\n{detail}\n"
                );
                for c in &cases {
                    writeln!(msg, "  tree {}: {}", c.index, replay(c.index)).unwrap();
                }
                panic!("{msg}");
            };
            if first.code != 0 {
                let failed: Vec<String> = first
                    .events()
                    .into_iter()
                    .filter(|e| e["event"] == "step" && e["status"] == "failed")
                    .map(|e| {
                        let rel = e["target"].as_str().unwrap_or("");
                        let rel = rel.strip_prefix(&format!("{ROOT}/")).unwrap_or(rel);
                        let about: Vec<String> = cases
                            .iter()
                            .filter(|c| {
                                let top = &c.entries[0].rel;
                                rel == top || rel.starts_with(&format!("{top}/"))
                            })
                            .flat_map(|c| {
                                // The step, and every entry of its tree that drifted.
                                (0..c.entries.len())
                                    .filter(|i| c.drift.get(*i).is_some_and(|d| !d.is_empty()))
                                    .map(|i| c.describe(c.entries[i].rel.as_bytes()))
                                    .chain([c.describe(rel.as_bytes()), replay(c.index)])
                                    .collect::<Vec<_>>()
                            })
                            .collect();
                        format!("{e}\n    {}", about.join("\n    "))
                    })
                    .collect();
                fail(
                    "the apply failed",
                    format!("{}\n{}", failed.join("\n"), first.stderr),
                );
            }
            let got = tree::read(&lab, "h1", ROOT);
            let got = of_trees(&got, &cases);
            let want = of_trees(&want, &cases);
            if got != want {
                let mut d = String::new();
                let keys: std::collections::BTreeSet<&Vec<u8>> =
                    got.keys().chain(want.keys()).collect();
                for k in keys {
                    let (g, w) = (got.get(k), want.get(k));
                    if g != w {
                        let c = cases
                            .iter()
                            .find(|c| {
                                !of_trees(
                                    &Tree::from([(k.clone(), w.or(g).unwrap().clone())]),
                                    std::slice::from_ref(c),
                                )
                                .is_empty()
                            })
                            .unwrap();
                        writeln!(
                            d,
                            "{}: want {w:?}\n    got {g:?}\n    before {:?}\n    {}\n    {}",
                            tree::show(k),
                            before.get(k),
                            c.describe(k),
                            replay(c.index)
                        )
                        .unwrap();
                    }
                }
                fail("the host is not in the declared state", d);
            }
            let second = apply(inv);
            applies += 1;
            let changed = second.host("h1")["changed"].clone();
            if second.code != 0 || changed != 0 {
                let steps: Vec<String> = second
                    .events()
                    .into_iter()
                    .filter(|e| e["event"] == "step" && e["action"] != "ok")
                    .map(|e| e.to_string())
                    .collect();
                fail(
                    "a second apply changed something",
                    format!(
                        "changed {changed}:\n{}\n{}",
                        steps.join("\n"),
                        second.stderr
                    ),
                );
            }
        }
    }
    eprintln!(
        "converge_fuzz: seed {seed:#x}, {} trees, {rounds} rounds, {paths} managed paths checked, {applies} applies, {:.1} s",
        indexes.len(),
        started.elapsed().as_secs_f64()
    );
}
