//! Issue 9, "Secrets by type, proven" and "Permissions with no window": the claw-ai playbook
//! (and a small playbook that puts secrets into commands, a handler and a failing template) is
//! planned and applied on a light host as a user whose sudo needs a password, with an encrypted
//! key, in every output mode (text, -v, -vvv, JSON, --stats, RUST_LOG=trace), through a saved
//! plan file, with forced failures. Everything written — stdout, stderr, the scratch dir, files
//! of the repo and `target/` newer than the test, the host's files outside /opt (audit log, sshd
//! log, /var, /etc, /tmp), the arguments of every process `ps` saw on the host during the run —
//! is searched for every generated secret, operator key, the sudo password, the passphrase and
//! the TLS private key, raw, in base64 (standard and URL-safe, with and without padding) and
//! URL-encoded: zero hits. A watcher on the host records the mode of every upload temp file it
//! sees while a large 0600 file is uploaded: 0600 from the first byte.

use crate::support::{Lab, Run, Scratch, claw, repo};
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const ZHIPU: &str = "zhipu-LEAK+7f3/Qx=?&9c41";
const ZHIPU2: &str = "zhipu-LEAK+second/8d0e=?&2b";
const PINECONE: &str = "pine-LEAK~a8d2 %20+/b7e";
const SUDO_PW: &str = "sudo-LEAK+pw/71c9=&x";
const PASSPHRASE: &str = "phrase-LEAK+/e5d3=?q";

fn leak_playbook(s: &Scratch) -> PathBuf {
    s.file(
        "templates/app.env.tera",
        "ZHIPUAI_API_KEY={{ secrets.ZHIPUAI_API_KEY }}\nTOKEN={{ secrets.token }}\n\
         {% if fail == \"template\" and secrets.token is not starting_with(\"<secret\") %}\
         {{ throw(message=\"forced failure with \" ~ secrets.ZHIPUAI_API_KEY ~ \" and \" ~ secrets.token) }}\
         {% endif %}",
    );
    // 24 MiB of text: the upload takes long enough for the watcher to see its temp file.
    let line = "0123456789abcdef".repeat(8) + "\n";
    s.file("big.txt", &line.repeat(24 * 1024 * 1024 / line.len()));
    s.file(
        "leak.toml",
        r#"
name = "sc-leak"
operator_secrets = ["ZHIPUAI_API_KEY", "PINECONE_API_KEY"]

[[steps]]
name = "leak dir"
kind = "dir"
path = "/opt/sc-leak"
mode = "0755"

[[steps]]
name = "token"
kind = "secret"
secret = "token"
path = "/opt/sc-leak/token"

[[steps]]
name = "secrets in a command"
kind = "command"
run = "printf '%s %s' {{ secrets.ZHIPUAI_API_KEY | shell_quote }} {{ secrets.token | shell_quote }} | sha256sum > /opt/sc-leak/sum; sleep 1"
creates = "/opt/sc-leak/sum"
notify = "handler with a secret"

[[steps]]
name = "app env"
kind = "template"
src = "app.env.tera"
path = "/opt/sc-leak/app.env"
mode = "0600"

[[steps]]
name = "big private file"
kind = "file"
src = "big.txt"
path = "/opt/sc-leak/big.txt"
mode = "0600"
sensitive = true

[[steps]]
name = "fails with a secret"
kind = "command"
run = "echo 'boom:' {{ secrets.PINECONE_API_KEY | shell_quote }} {{ secrets.token | shell_quote }} >&2; sleep 1; exit 7"
when = "fail == 'command'"

[[handlers]]
name = "handler with a secret"
kind = "command"
run = "printf '%s' {{ secrets.PINECONE_API_KEY | shell_quote }} > /dev/null; sleep 1"
"#,
    )
}

/// A loop run as root inside the lab host (its mount namespace) until `stop` exists there
/// (at most 10 minutes); its stdout goes to `out`.
fn host_loop(lab: &Lab, host: &str, body: &str, stop: &str, out: &Path) -> Child {
    let script = format!(
        "rm -f {stop}; while [ ! -e {stop} ] && [ $SECONDS -lt 600 ]; do {body}; done | awk '!seen[$0]++'"
    );
    Command::new("bash")
        .arg(repo().join("tests/lab/lab.sh"))
        .args([
            "exec", host, "--name", &lab.name, "--", "bash", "-c", &script,
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("lab.sh exec")
}

fn stop_loop(lab: &Lab, host: &str, stop: &str, mut child: Child) {
    // The host's /tmp is the lab's hosts/HOST/tmp.
    let name = stop.strip_prefix("/tmp/").expect("a file in /tmp");
    std::fs::write(lab.dir.join(format!("hosts/{host}/tmp/{name}")), "").unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the host loop did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every form a leaked value could take in text: raw, base64 (standard, URL-safe, with and
/// without padding), URL-encoded (upper- and lowercase hex).
fn forms(v: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![v.to_string()];
    for e in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.push(e.encode(v));
    }
    for upper in [true, false] {
        let url: String = v
            .bytes()
            .map(|b| match b {
                b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => (b as char).to_string(),
                b if upper => format!("%{b:02X}"),
                b => format!("%{b:02x}"),
            })
            .collect();
        out.push(url);
    }
    out.sort();
    out.dedup();
    out
}

/// Files under `dir` modified since `since`, except those under `skip`.
fn files_since(dir: &Path, since: SystemTime, skip: &[PathBuf], out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if skip.iter().any(|s| p.starts_with(s)) {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            files_since(&p, since, skip, out);
        } else if m.is_file() && m.modified().is_ok_and(|t| t >= since) {
            out.push(p);
        }
    }
}

#[test]
fn no_secret_reaches_any_output_file_log_or_command_line() {
    let started = Instant::now();
    let lab = Lab::up("sc-leaks", 1);
    let s = Scratch::new();
    let leak = leak_playbook(&s);
    let claw_ai = repo().join("playbooks/claw-ai.toml");

    // The login: `clawpw`, whose sudo asks for a (distinctive) password, with a key encrypted
    // under a distinctive passphrase. Set up before the watch starts (ssh-keygen -N is an argument).
    let key = s.dir.path().join("id_sc");
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", PASSPHRASE, "-C", "sc", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "ssh-keygen: {o:?}");
    let pubkey = std::fs::read(key.with_extension("pub")).unwrap();
    crate::support::ok(
        lab.ssh_input(
            "h1",
            "sudo tee -a /home/clawpw/.ssh/authorized_keys >/dev/null",
            &pubkey,
        ),
        "authorize the key",
    );
    crate::support::ok(
        lab.ssh_input(
            "h1",
            "sudo chpasswd",
            format!("clawpw:{SUDO_PW}\n").as_bytes(),
        ),
        "set the sudo password",
    );
    let inv_text = std::fs::read_to_string(lab.inventory())
        .unwrap()
        .replace("user = \"claw\"", "user = \"clawpw\"")
        .replace(
            "identity_file = \"id_ed25519\"",
            &format!("identity_file = {:?}", key.to_str().unwrap()),
        );
    assert!(inv_text.contains("clawpw") && inv_text.contains("id_sc"));
    let inv = lab.dir.join("sc.toml");
    std::fs::write(&inv, inv_text).unwrap();
    let inv = inv.to_str().unwrap();

    // From here on, everything written counts.
    std::thread::sleep(Duration::from_millis(1100)); // mtime granularity margin
    let since = SystemTime::now();
    let ps_out = s.dir.path().join("ps.txt");
    let sampler = host_loop(
        &lab,
        "h1",
        "ps -eww -o args=; sleep 0.05",
        "/tmp/sc-stop-ps",
        &ps_out,
    );

    let env = |zhipu: &'static str| {
        vec![
            ("ZHIPUAI_API_KEY", zhipu),
            ("PINECONE_API_KEY", PINECONE),
            ("CLAW_BECOME_PASSWORD", SUDO_PW),
            ("CLAW_SSH_PASSPHRASE", PASSPHRASE),
            ("RUST_LOG", "trace"),
        ]
    };
    let mut runs: Vec<(String, Run)> = Vec::new();
    let mut run = |args: &[&str], zhipu: &'static str, want: i32| -> String {
        let r = claw(args, &env(zhipu));
        let what = args.join(" ");
        assert_eq!(r.code, want, "{what}:\n{}\n{}", r.stdout, r.stderr);
        let out = format!("{}\n{}", r.stdout, r.stderr);
        runs.push((what, r));
        out
    };
    let pb = claw_ai.to_str().unwrap();
    let plan_file = s.dir.path().join("claw-ai.plan");
    let plan_file = plan_file.to_str().unwrap();

    // claw-ai: plans in every mode, a saved plan applied, a no-op apply.
    run(&["plan", inv, "--playbook", pb], ZHIPU, 0);
    run(&["plan", inv, "--playbook", pb, "-vvv"], ZHIPU, 0);
    run(
        &["plan", inv, "--playbook", pb, "--output", "json"],
        ZHIPU,
        0,
    );
    run(&["plan", inv, "--playbook", pb, "--stats"], ZHIPU, 0);
    run(
        &["plan", inv, "--playbook", pb, "--out", plan_file],
        ZHIPU,
        0,
    );
    run(
        &["apply", inv, "--playbook", pb, "--plan", plan_file, "-vv"],
        ZHIPU,
        0,
    );
    run(
        &[
            "apply",
            inv,
            "--playbook",
            pb,
            "--yes",
            "--output",
            "json",
            "--stats",
        ],
        ZHIPU,
        0,
    );
    // A new operator key: the .env diff names the keys and what changed, no value.
    let plan = run(&["plan", inv, "--playbook", pb, "-v"], ZHIPU2, 0);
    for want in [
        "(values hidden: sensitive)",
        "~ ZHIPUAI_API_KEY  changed",
        "  POSTGRES_PASSWORD  unchanged",
        "  PINECONE_API_KEY  unchanged",
    ] {
        assert!(plan.contains(want), "{want}:\n{plan}");
    }
    run(&["apply", inv, "--playbook", pb, "--yes", "-v"], ZHIPU2, 0);

    // Secrets in a command, a handler and a template; a large 0600 upload under a watcher.
    let lp = leak.to_str().unwrap();
    let temps_out = s.dir.path().join("temps.txt");
    let watcher = host_loop(
        &lab,
        "h1",
        "for f in /opt/sc-leak/.claw-provision.*/new; do [ -e \"$f\" ] && stat -c '%a %s %n' -- \"$f\"; done",
        "/tmp/sc-stop-temps",
        &temps_out,
    );
    let out = run(
        &[
            "apply",
            inv,
            "--playbook",
            lp,
            "--yes",
            "-vvv",
            "-e",
            "fail=none",
        ],
        ZHIPU2,
        0,
    );
    assert!(out.contains("handler with a secret"), "{out}");
    stop_loop(&lab, "h1", "/tmp/sc-stop-temps", watcher);
    let failed_template = run(
        &[
            "apply",
            inv,
            "--playbook",
            lp,
            "--yes",
            "--output",
            "json",
            "-e",
            "fail=template",
        ],
        ZHIPU2,
        1,
    );
    let failed_command = run(
        &[
            "apply",
            inv,
            "--playbook",
            lp,
            "--yes",
            "--stats",
            "-e",
            "fail=command",
        ],
        ZHIPU2,
        1,
    );
    run(
        &["plan", inv, "--playbook", lp, "-vv", "-e", "fail=none"],
        ZHIPU2,
        0,
    );
    stop_loop(&lab, "h1", "/tmp/sc-stop-ps", sampler);

    // Upload temp files: 0600 whenever seen, also once content had arrived.
    let temps = std::fs::read_to_string(&temps_out).unwrap();
    let seen: Vec<(&str, u64)> = temps
        .lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            Some((w.next()?, w.next()?.parse().ok()?))
        })
        .collect();
    assert!(
        seen.iter().any(|(_, size)| *size > 0),
        "the watcher saw no upload temp file with content:\n{temps}"
    );
    assert!(
        seen.iter().all(|(mode, _)| *mode == "600"),
        "an upload temp file was not 0600:\n{temps}"
    );
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "sudo stat -c '%a' /opt/sc-leak/big.txt /opt/sc-leak/app.env /opt/sc-leak/token"
        ),
        "600\n600\n600\n"
    );

    // What must never show: the values generated on the host (read back), the operator keys,
    // the sudo password, the passphrase, the TLS private key.
    let generated = lab.ssh_ok(
        "h1",
        "sudo sh -c 'cat /opt/claw-ai/.secrets/* /opt/sc-leak/token'",
    );
    let mut needles: Vec<(String, String)> = generated
        .lines()
        .enumerate()
        .map(|(i, v)| (format!("generated secret #{i}"), v.to_string()))
        .collect();
    assert!(needles.len() >= 4, "{generated}");
    for (what, v) in [
        ("ZHIPUAI_API_KEY", ZHIPU),
        ("ZHIPUAI_API_KEY (second)", ZHIPU2),
        ("PINECONE_API_KEY", PINECONE),
        ("sudo password", SUDO_PW),
        ("key passphrase", PASSPHRASE),
    ] {
        needles.push((what.to_string(), v.to_string()));
    }
    let tls_key = std::fs::read_to_string(lab.dir.join("tls/privkey.pem")).unwrap();
    for l in tls_key.lines().filter(|l| !l.starts_with("-----")) {
        needles.push(("TLS private key".to_string(), l.to_string()));
    }
    // The host really holds them (so a search that finds nothing means something).
    let env_file = lab.ssh_ok("h1", "sudo cat /opt/claw-ai/.env /opt/sc-leak/app.env");
    assert!(env_file.contains(ZHIPU2) && env_file.contains(PINECONE));

    // Everything written.
    let mut corpus: Vec<(String, Vec<u8>)> = runs
        .iter()
        .flat_map(|(what, r)| {
            [
                (format!("stdout of `{what}`"), r.stdout.clone().into_bytes()),
                (format!("stderr of `{what}`"), r.stderr.clone().into_bytes()),
            ]
        })
        .collect();
    let audit = lab.ssh_ok("h1", "sudo cat /var/log/claw-provision/audit.log");
    assert!(
        audit.contains("sc-leak") && audit.contains("failed"),
        "{audit}"
    );
    corpus.push(("the audit log".into(), audit.into_bytes()));
    let ps = std::fs::read(&ps_out).unwrap();
    let ps_text = String::from_utf8_lossy(&ps);
    assert!(
        ps_text.contains("sleep 1") && ps_text.contains("sh -c"),
        "the sampler saw the run's commands:\n{ps_text}"
    );
    let mut files = Vec::new();
    files_since(s.dir.path(), since, &[], &mut files);
    // The repo and target/, but not the lab host's /opt: the managed files that hold secrets.
    files_since(&repo(), since, &[lab.dir.join("hosts/h1/opt")], &mut files);
    assert!(files.iter().any(|f| f.ends_with("claw-ai.plan")));
    assert!(files.iter().any(|f| f.ends_with("audit.log")), "{files:?}");
    for f in &files {
        if let Ok(data) = std::fs::read(f) {
            corpus.push((f.display().to_string(), data));
        }
    }

    let mut hits = Vec::new();
    for (what, v) in &needles {
        for form in forms(v) {
            for (src, data) in &corpus {
                if data.windows(form.len()).any(|w| w == form.as_bytes()) {
                    hits.push(format!("{what} (as {form:?}) in {src}"));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "secrets leaked ({} places searched):\n{}",
        corpus.len(),
        hits.join("\n")
    );
    // The failures were reported, their secrets masked (checked after the search, which
    // reports a leak there as one).
    assert!(
        failed_template.contains("forced failure with ********"),
        "{failed_template}"
    );
    assert!(
        failed_command.contains("boom: ******** ********"),
        "{failed_command}"
    );
    eprintln!(
        "secret_leaks: {} values x {} forms, {} sources ({} files), {} ps lines, {} temp-file observations, {:.1}s",
        needles.len(),
        forms(ZHIPU).len(),
        corpus.len(),
        files.len(),
        ps_text.lines().count(),
        seen.len(),
        started.elapsed().as_secs_f64()
    );
}
