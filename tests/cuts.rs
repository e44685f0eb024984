//! Cuts mid-apply: applies cut at a random (seeded) moment by killing the host's sshd and every
//! process of the host (`lab.sh stop`, then `start`) or by dropping its link (`lab.sh link down`,
//! then `up`), each changing every managed file (large files, templates, files in nested
//! directories, a handler). After every cut, each managed file is wholly the old or wholly the
//! new content (sha256); then an uncut apply converges (every file new, the handler run for the
//! new content, no temporary file left) and a following apply changes nothing.
//!
//! `CLAW_CUTS=N` and `CLAW_CUTS_SEED=S` set the number of cuts (default 20) and the seed
//! (default: from the clock, printed); `scripts/cuts.sh N SEED` runs a long loop.

use crate::support::{Lab, Run, Scratch, claw, claw_spawn};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// xorshift64*: a small seeded generator (cut moments, cut kinds, file contents).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

const PLAYBOOK: &str = r#"name = "cuts"

[vars]
gen = "0"

[[steps]]
name = "app dir"
kind = "dir"
path = "/opt/cuts"
mode = "0755"

[[steps]]
name = "conf dir"
kind = "dir"
path = "/opt/cuts/conf.d"
mode = "0750"

[[steps]]
name = "data dir"
kind = "dir"
path = "/srv/cuts-data/nested"

[[steps]]
name = "big a"
kind = "file"
path = "/opt/cuts/big-a.bin"
src = "big-a.bin"

[[steps]]
name = "version"
kind = "file"
path = "/opt/cuts/version"
content = "gen {{ gen }}\n"
notify = "record version"

[[steps]]
name = "app conf"
kind = "template"
path = "/opt/cuts/conf.d/app.conf"
src = "app.conf.tera"
mode = "0640"

[[steps]]
name = "env"
kind = "file"
path = "/opt/cuts/conf.d/env"
content = "TOKEN=gen-{{ gen }}\n"
mode = "0600"
sensitive = true

[[steps]]
name = "big b"
kind = "file"
path = "/srv/cuts-data/nested/big-b.bin"
src = "big-b.bin"
mode = "0600"
notify = "record version"

[[handlers]]
name = "record version"
kind = "command"
run = "cp /opt/cuts/version /opt/cuts/handled"
"#;

const TEMPLATE: &str = "# managed by claw-provision\ngeneration = {{ gen }}\n{% for i in range(end=300) %}{{ gen }}-{{ i }}\n{% endfor %}";

const DIRS: &[&str] = &["/opt/cuts", "/opt/cuts/conf.d", "/srv/cuts-data/nested"];

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The desired content of every managed file for generation `gen` (and the local `src` files
/// written for it).
fn generation(s: &Scratch, seed: u64, g: u64) -> BTreeMap<&'static str, String> {
    let mut rng = Rng::new(seed ^ (g << 20) ^ 0xC0FFEE);
    let (extra_a, extra_b) = (rng.below(4096) as usize, rng.below(4096) as usize);
    let big_a = rng.bytes(8 * 1024 * 1024 + extra_a);
    let big_b = rng.bytes(2 * 1024 * 1024 + extra_b);
    std::fs::write(s.dir.path().join("big-a.bin"), &big_a).unwrap();
    std::fs::write(s.dir.path().join("big-b.bin"), &big_b).unwrap();
    let conf = format!(
        "# managed by claw-provision\ngeneration = {g}\n{}",
        (0..300).map(|i| format!("{g}-{i}\n")).collect::<String>()
    );
    BTreeMap::from([
        ("/opt/cuts/big-a.bin", sha(&big_a)),
        ("/opt/cuts/version", sha(format!("gen {g}\n").as_bytes())),
        ("/opt/cuts/conf.d/app.conf", sha(conf.as_bytes())),
        (
            "/opt/cuts/conf.d/env",
            sha(format!("TOKEN=gen-{g}\n").as_bytes()),
        ),
        ("/srv/cuts-data/nested/big-b.bin", sha(&big_b)),
    ])
}

/// What the host holds: each managed file's sha256 (or `missing`/`not a file`), the handler's
/// record, and the temporary files (`.claw-provision.*`) in the managed directories. Read as root
/// inside the host (works while its sshd is down or its link is cut).
struct HostState {
    files: BTreeMap<String, String>,
    handled: String,
    temps: Vec<String>,
    /// The cut run's connection still holds the apply lock (its sshd has not noticed the cut).
    lock_held: bool,
}

/// Runs `script` as root inside lab host h1 (no SSH); returns its stdout.
fn host_sh(lab: &Lab, script: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg(crate::support::repo().join("tests/lab/lab.sh"))
        .args(["exec", "h1", "--name", &lab.name, "--", "sh", "-c", script])
        .output()
        .expect("lab.sh exec");
    assert!(
        out.status.success(),
        "on the host: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `held` when the apply lock's recorded connection (an sshd process, not a zombie: a killed
/// sshd may wait unreaped) is still alive.
const LOCK_HOLDER_ALIVE: &str = "c=$(sed -n 's/^conn=//p' /var/lib/claw-provision/lock/apply.holder 2>/dev/null); \
     st=$(sed -n 's/^State:[[:space:]]*//p' /proc/$c/status 2>/dev/null); \
     case $(cat /proc/$c/comm 2>/dev/null):$st in sshd:[!Z]*|sshd-session:[!Z]*) echo held ;; *) echo free ;; esac";

fn host_state(lab: &Lab, files: &BTreeMap<&'static str, String>) -> HostState {
    let mut script = String::new();
    for f in files.keys() {
        script.push_str(&format!(
            "if [ -f {f} ] && [ ! -L {f} ]; then s=$(sha256sum < {f}); echo \"file {f} ${{s%% *}}\"; \
             elif [ -e {f} ]; then echo \"file {f} not-a-file\"; else echo \"file {f} missing\"; fi\n"
        ));
    }
    script.push_str("echo \"handled $(cat /opt/cuts/handled 2>/dev/null | tr ' ' _)\"\n");
    for d in DIRS {
        script.push_str(&format!(
            "for t in {d}/.claw-provision.*; do [ -e \"$t\" ] && echo \"temp $t\"; done; true\n"
        ));
    }
    script.push_str(LOCK_HOLDER_ALIVE);
    script.push('\n');
    let text = host_sh(lab, &script);
    let mut st = HostState {
        files: BTreeMap::new(),
        handled: String::new(),
        temps: Vec::new(),
        lock_held: false,
    };
    for l in text.lines() {
        let w: Vec<&str> = l.splitn(3, ' ').collect();
        match w.as_slice() {
            ["file", f, s] => {
                st.files.insert(f.to_string(), s.to_string());
            }
            ["handled", h] => st.handled = h.replace('_', " "),
            ["handled"] => {}
            ["temp", t] => st.temps.push(t.to_string()),
            ["held"] => st.lock_held = true,
            ["free"] => {}
            _ => panic!("unexpected host state line `{l}` in:\n{text}"),
        }
    }
    st
}

#[derive(Default, Debug)]
pub(crate) struct Tally {
    cuts: usize,
    mid_apply: usize,
    finished_first: usize,
    by_kind: BTreeMap<&'static str, usize>,
    failed_at: BTreeMap<String, usize>,
    mixed_files: usize,
    files_new: usize,
    files_old: usize,
    temps_after_cut: usize,
    /// Temporary files left by a cut in a directory whose managed files all hold their new
    /// content already (a cut after the rename: no upload comes there on the next apply).
    temps_next_to_new: usize,
    lock_held_after_cut: usize,
    max_recovery: Duration,
}

fn apply(inv: &str, g: u64, extra: &[&str]) -> Run {
    let g = format!("gen={g}");
    let mut args = vec!["apply", inv, "--yes", "--output", "json", "-e", &g];
    args.extend_from_slice(extra);
    claw(&args, &[])
}

/// Runs `n` cut applies on a fresh one-host lab with `seed`; panics on the first broken
/// promise, naming the iteration, the seed and the cut.
pub(crate) fn cut_loop(lab_name: &str, n: u64, seed: u64) -> Tally {
    let lab = Lab::up(lab_name, 1);
    let s = Scratch::new();
    let pb = s.file("cuts.toml", PLAYBOOK);
    s.file("templates/app.conf.tera", TEMPLATE);
    // Keepalives every second: a client whose link is cut gives up within a few seconds.
    let inv = lab.write_inventory(
        "cuts.toml",
        &pb,
        &[("keepalive_interval", "1"), ("connect_timeout", "3")],
    );
    let inv = inv.to_str().unwrap();

    // Generation 0, converged; the uncut apply's time calibrates the cut moments.
    generation(&s, seed, 0);
    let r = apply(inv, 0, &[]);
    assert_eq!(r.code, 0, "first apply: {}\n{}", r.stdout, r.stderr);
    let mut old = generation(&s, seed, 1);
    let t = Instant::now();
    let r = apply(inv, 1, &[]);
    assert_eq!(r.code, 0, "calibration apply: {}\n{}", r.stdout, r.stderr);
    let full = t.elapsed();
    eprintln!("cuts: seed {seed}, {n} cuts; an uncut apply takes about {full:?}");

    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    // The window the cut moment is drawn from. One calibration apply can be slow (a cold cache,
    // a busy machine); when a run ends before its cut, it took less than that delay, and the
    // window shrinks to it, so the cuts keep landing mid-apply on fast and slow machines alike.
    let mut window = full;
    for i in 0..n {
        let g = i + 2;
        let new = generation(&s, seed, g);
        let delay = Duration::from_millis(rng.below(window.as_millis() as u64 * 11 / 10 + 1));
        let kind = if rng.below(2) == 0 { "stop" } else { "link" };
        let ctx = format!("cut {i} (seed {seed}, gen {g}, {kind} after {delay:?})");
        let run = claw_spawn(
            &[
                "apply",
                inv,
                "--yes",
                "--output",
                "json",
                "-e",
                &format!("gen={g}"),
            ],
            &[],
        );
        std::thread::sleep(delay);
        let cut_at = Instant::now();
        let r = if kind == "stop" {
            lab.cmd(&["stop", "h1"]);
            let r = run.wait();
            lab.cmd(&["start", "h1"]);
            r
        } else {
            lab.cmd(&["link", "h1", "down"]);
            let r = run.wait();
            lab.cmd(&["link", "h1", "up"]);
            r
        };
        assert!(
            cut_at.elapsed() < Duration::from_secs(30),
            "{ctx}: the cut run hung for {:?}",
            cut_at.elapsed()
        );
        tally.cuts += 1;
        *tally.by_kind.entry(kind).or_default() += 1;
        if r.code == 0 {
            tally.finished_first += 1;
            window = window.min(delay);
        } else {
            assert_eq!(r.code, 1, "{ctx}: {}\n{}", r.stdout, r.stderr);
            tally.mid_apply += 1;
            let h = r.host("h1");
            let at = h["failed_at"].as_str().unwrap_or("-").to_string();
            eprintln!("{ctx}: failed at {at}");
            *tally.failed_at.entry(at).or_default() += 1;
        }

        // Every managed file is wholly the old or wholly the new content.
        let st = host_state(&lab, &new);
        for (f, want) in &new {
            let got = &st.files[*f];
            if got == want {
                tally.files_new += 1;
            } else if *got == old[f] {
                tally.files_old += 1;
            } else {
                tally.mixed_files += 1;
                panic!(
                    "{ctx}: {f} is neither the old nor the new content (sha256 {got})\nrun: {}\n{}",
                    r.stdout, r.stderr
                );
            }
        }
        tally.temps_after_cut += st.temps.len();
        tally.temps_next_to_new += (st.temps.iter())
            .filter(|t| {
                let dir = t.rsplit_once('/').map_or("", |(d, _)| d);
                (new.iter())
                    .filter(|(f, _)| f.rsplit_once('/').map(|(d, _)| d) == Some(dir))
                    .all(|(f, want)| &st.files[*f] == want)
            })
            .count();
        tally.lock_held_after_cut += usize::from(st.lock_held);
        if !st.temps.is_empty() {
            eprintln!("{ctx}: temporary files left by the cut: {:?}", st.temps);
        }

        // An uncut apply converges, and the one after it changes nothing.
        let t = Instant::now();
        let r = apply(inv, g, &[]);
        tally.max_recovery = tally.max_recovery.max(t.elapsed());
        assert_eq!(
            r.code, 0,
            "{ctx}: the apply after the cut: {}\n{}",
            r.stdout, r.stderr
        );
        let st = host_state(&lab, &new);
        for (f, want) in &new {
            assert_eq!(
                &st.files[*f], want,
                "{ctx}: {f} after the apply after the cut"
            );
        }
        assert_eq!(
            st.handled,
            format!("gen {g}"),
            "{ctx}: the handler ran for the new content (journaled across the cut)"
        );
        assert!(
            st.temps.is_empty(),
            "{ctx}: temporary files left after the apply after the cut: {:?}",
            st.temps
        );
        let r = apply(inv, g, &["--detailed-exitcode"]);
        assert_eq!(
            r.code, 0,
            "{ctx}: a second apply changes nothing: {}\n{}",
            r.stdout, r.stderr
        );
        old = new;
    }
    tally
}

#[test]
fn applies_cut_at_random_moments_leave_old_or_new_and_converge() {
    let n: u64 = std::env::var("CLAW_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CLAW_CUTS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    let started = Instant::now();
    let t = cut_loop("sk-cuts", n, seed);
    eprintln!(
        "cuts: seed {seed}: {} cuts ({:?}) in {:?}: {} mid-apply (failed at: {:?}), {} after the apply had ended; \
         files after a cut: {} new, {} old, {} mixed; temporary files left by cuts: {} ({} next to new files only); \
         apply lock still held by the cut run's connection (taken over by the next apply): {}; slowest apply after a cut: {:?}",
        t.cuts,
        t.by_kind,
        started.elapsed(),
        t.mid_apply,
        t.failed_at,
        t.finished_first,
        t.files_new,
        t.files_old,
        t.mixed_files,
        t.temps_after_cut,
        t.temps_next_to_new,
        t.lock_held_after_cut,
        t.max_recovery,
    );
    assert_eq!(t.cuts as u64, n);
    assert!(
        t.mid_apply * 2 >= t.cuts,
        "most cuts must land mid-apply for the test to mean something: {t:?}"
    );
}

/// The link of a host drops while a large file is being uploaded: the client gives up (its
/// keepalives), but the host's sshd, waiting for the rest of the upload, never learns the
/// connection is gone (no ClientAliveInterval in the lab), so the apply lock stays with the lost
/// run. The next apply from this machine sees that the holding process is gone, ends the stale
/// connection and takes the lock over, and converges; the temporary file is removed.
#[test]
fn a_lost_run_of_this_machine_does_not_keep_the_host_locked() {
    let lab = Lab::up("sk-cutlock", 1);
    let s = Scratch::new();
    let pb = s.file("cuts.toml", PLAYBOOK);
    s.file("templates/app.conf.tera", TEMPLATE);
    let inv = lab.write_inventory(
        "cuts.toml",
        &pb,
        &[("keepalive_interval", "1"), ("connect_timeout", "3")],
    );
    let inv = inv.to_str().unwrap();
    let mut want = generation(&s, 7, 1);
    // A slow, large upload: 64 MB.
    let big: Vec<u8> = Rng::new(7).bytes(64 * 1024 * 1024);
    std::fs::write(s.dir.path().join("big-a.bin"), &big).unwrap();
    want.insert("/opt/cuts/big-a.bin", sha(&big));
    // The host's sshd learns of the lost connection when it next sends something (a window
    // adjust retransmitted after the link is back gets a reset): rarely before we look. Then the
    // scenario is set up again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let run = claw_spawn(
            &["apply", inv, "--yes", "--output", "json", "-e", "gen=1"],
            &[],
        );
        let t = Instant::now();
        while !host_sh(&lab, "ls -A /opt/cuts 2>/dev/null; true").contains(".claw-provision.") {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the upload never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        lab.cmd(&["link", "h1", "down"]);
        let r = run.wait();
        assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
        assert_eq!(r.host("h1")["failed_at"], "big a", "{}", r.stdout);
        lab.cmd(&["link", "h1", "up"]);
        if host_sh(&lab, LOCK_HOLDER_ALIVE).trim() == "held" {
            break;
        }
        assert!(
            attempts < 3,
            "the lost run's connection never held the lock after the cut"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    let r = apply(inv, 1, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["state"], "changed", "{}", r.stdout);
    let st = host_state(&lab, &want);
    for (f, w) in &want {
        assert_eq!(&st.files[*f], w, "{f}");
    }
    assert!(st.temps.is_empty(), "{:?}", st.temps);
    assert!(!st.lock_held);
    let r = apply(inv, 1, &["--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

/// A cut after an upload's rename leaves the new file and, next to it, the upload's private
/// directory: the file is up to date, so no later upload comes to that directory. The plan
/// shows the leftovers of such uploads (next to a file, a template and a secret, all up to
/// date) as a change of their step that notifies no handler; apply removes them, and only
/// them (not another account's directory, not a link, not a file of that name), and only
/// where no other account can rename root's directories to such a name (a sticky directory
/// writable by all: yes; one without the sticky bit: left alone); the apply after changes
/// nothing.
#[test]
fn leftovers_of_a_cut_upload_next_to_an_up_to_date_file_are_removed() {
    let lab = Lab::up("sk-leftovers", 1);
    let s = Scratch::new();
    let pb = s.file(
        "tidy.toml",
        r#"name = "tidy"

[[steps]]
name = "tidy dir"
kind = "dir"
path = "/srv/tidy"
mode = "1777"

[[steps]]
name = "conf"
kind = "file"
path = "/srv/tidy/conf"
content = "v1\n"
notify = "mark"

[[steps]]
name = "page"
kind = "template"
path = "/srv/tidy/page.html"
src = "page.tera"
notify = "mark"

[[steps]]
name = "open dir"
kind = "dir"
path = "/srv/tidy-open"
mode = "0777"

[[steps]]
name = "open conf"
kind = "file"
path = "/srv/tidy-open/conf"
content = "v1\n"

[[steps]]
name = "secrets dir"
kind = "dir"
path = "/srv/tidy-secrets"
mode = "0700"

[[steps]]
name = "password"
kind = "secret"
secret = "tidy_pw"
path = "/srv/tidy-secrets/pw"

[[handlers]]
name = "mark"
kind = "command"
run = "echo ran >> /srv/handled"
"#,
    );
    s.file("templates/page.tera", "<p>page</p>\n");
    let inv = lab.write_inventory("tidy.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.code, 0, "first apply: {}\n{}", r.stdout, r.stderr);
    let handled = || host_sh(&lab, "cat /srv/handled");
    assert_eq!(handled(), "ran\n");

    // What cuts after the rename leave (empty private directories, root's, 0700), and what
    // is not ours to remove: another account's directory of that name, a link, a file.
    host_sh(
        &lab,
        "set -e; mkdir -m 0700 /srv/tidy/.claw-provision.AbCd1234 /srv/tidy/.claw-provision.Ef56gH78 \
         /srv/tidy-secrets/.claw-provision.Zz009911; \
         mkdir -m 0700 /srv/tidy/.claw-provision.Others12; chown 65534:65534 /srv/tidy/.claw-provision.Others12; \
         ln -s /srv/tidy-secrets /srv/tidy/.claw-provision.LinkLink; : > /srv/tidy/.claw-provision.FileFile; \
         mkdir -p -m 0700 /srv/tidy-open/.claw-provision.Open1234/tree; echo keep > /srv/tidy-open/.claw-provision.Open1234/tree/data",
    );
    let listing = || {
        host_sh(
            &lab,
            "export LC_ALL=C; cd /srv/tidy && ls -A; echo --; ls -A /srv/tidy-secrets",
        )
    };

    let plan = claw(&["plan", inv], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    for line in [
        "~ update  file /srv/tidy/conf: remove an interrupted upload's leftovers in /srv/tidy: .claw-provision.AbCd1234, .claw-provision.Ef56gH78",
        "    ok      template /srv/tidy/page.html: up to date (an earlier step removes the leftovers of an interrupted upload here)",
        "~ update  secret /srv/tidy-secrets/pw (tidy_pw): remove an interrupted upload's leftovers in /srv/tidy-secrets: .claw-provision.Zz009911",
    ] {
        assert!(plan.stdout.contains(line), "{line} in:\n{}", plan.stdout);
    }
    assert!(!plan.stdout.contains("Others12"), "{}", plan.stdout);
    // In a directory others can write without the sticky bit, that name may be any of root's
    // directories someone renamed: not reported, not removed.
    assert!(!plan.stdout.contains("Open1234"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("then handlers"), "{}", plan.stdout);
    let r = claw(&["plan", inv, "--output", "json"], &[]);
    let ev = r
        .events()
        .into_iter()
        .find(|e| e["event"] == "plan")
        .unwrap_or_else(|| panic!("no plan event: {}", r.stdout));
    assert_eq!(ev["handlers"], serde_json::json!([]), "{ev}");
    assert_eq!(ev["changes"], 2, "{ev}");

    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        listing(),
        ".claw-provision.FileFile\n.claw-provision.LinkLink\n.claw-provision.Others12\nconf\npage.html\n--\npw\n"
    );
    assert_eq!(handled(), "ran\n", "no handler for a housekeeping change");
    assert_eq!(
        host_sh(
            &lab,
            "cat /srv/tidy-open/.claw-provision.Open1234/tree/data"
        ),
        "keep\n"
    );
    assert_eq!(host_sh(&lab, "cat /srv/tidy/conf"), "v1\n");

    let r = claw(
        &[
            "apply",
            inv,
            "--yes",
            "--output",
            "json",
            "--detailed-exitcode",
        ],
        &[],
    );
    assert_eq!(
        r.code, 0,
        "a second apply changes nothing: {}\n{}",
        r.stdout, r.stderr
    );
}
