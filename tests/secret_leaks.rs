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
//!
//! Issue 16: a probe killed right after it read the host's secrets (a `getent` shim) and a
//! failing command holding a secret are described without their stdout, masked.

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
pub(crate) fn host_loop(lab: &Lab, host: &str, body: &str, stop: &str, out: &Path) -> Child {
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

pub(crate) fn stop_loop(lab: &Lab, host: &str, stop: &str, mut child: Child) {
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
pub(crate) fn forms(v: &str) -> Vec<String> {
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
        failed_template.contains("forced failure with <secret:ZHIPUAI_API_KEY> and <secret:token>"),
        "{failed_template}"
    );
    assert!(
        failed_command.contains("boom: <secret:PINECONE_API_KEY> <secret:token>"),
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

/// Issue 16, "Secrets by construction, not by search": secrets holding `'`, `"`, `\`, `$`, a
/// newline and non-ASCII text (random per run) flow into commands (`run`, `unless`,
/// `creates`), a handler, a template's `vars`, `set`, a macro, a loop and a failing step
/// through every string filter of the Tera version in Cargo.lock plus ours; a managed file
/// holds them on the host (the old side of a diff). Every output (plan text with diffs, JSON
/// events, the saved plan, -vv scripts, errors, `output = true`), the files written and `ps`
/// on the host are searched for each secret in every form the playbook gives it (the exact
/// rendering of each filter expression) and the common encodings: zero hits; each command's
/// plan line is its rendering with each secret replaced by `<secret:NAME>`.
#[test]
fn secrets_through_every_filter_and_flow_show_only_as_markers() {
    let started = Instant::now();
    let hex = || format!("{:016x}", rand::random::<u64>());
    let secrets: Vec<(&str, String)> = vec![
        (
            "TAINT_QUOTE",
            format!("{}'s-a-long-secret-value-{}", hex(), hex()),
        ),
        (
            "TAINT_MIXED",
            format!("{}\"dq\\bs$HOME-ünï©ødé-{}", hex(), hex()),
        ),
        (
            "TAINT_LINES",
            format!("{}-first-line\n{}-second-line", hex(), hex()),
        ),
    ];
    let names = ["TAINT_QUOTE", "TAINT_MIXED", "TAINT_LINES", "token"];

    // Every filter Tera registers, from its source; each is used below or said why not.
    let unavailable = [
        "urlencode",
        "urlencode_strict",
        "slugify",
        "filesizeformat",
        "date",
    ];
    let no_string = ["abs", "round", "pluralize", "group_by", "filter", "map"];
    let mut filters: Vec<(&str, &str)> = vec![
        ("upper", "upper"),
        ("lower", "lower"),
        ("trim", "trim"),
        ("trim_start", "trim_start"),
        ("trim_end", "trim_end"),
        ("trim_start_matches", "trim_start_matches(pat=\"a\")"),
        ("trim_end_matches", "trim_end_matches(pat=\"line\")"),
        ("truncate", "truncate(length=11)"),
        ("wordcount", "wordcount"),
        ("replace", "replace(from=\"-\", to=\"_\")"),
        ("capitalize", "capitalize"),
        ("title", "title"),
        ("linebreaksbr", "linebreaksbr"),
        ("indent", "indent(prefix=\"> \")"),
        ("striptags", "striptags"),
        ("spaceless", "spaceless"),
        ("escape", "escape"),
        ("escape_xml", "escape_xml"),
        ("addslashes", "addslashes"),
        ("split", "split(pat=\"-\") | join(sep=\"+\")"),
        ("int", "int(default=7)"),
        ("float", "float(default=1.5)"),
        ("first", "split(pat=\"-\") | first"),
        ("last", "split(pat=\"-\") | last"),
        ("nth", "split(pat=\"-\") | nth(n=2)"),
        ("join", "split(pat=\"s\") | join(sep=\"=\")"),
        ("sort", "split(pat=\"-\") | sort | join(sep=\",\")"),
        ("unique", "split(pat=\"-\") | unique | join(sep=\",\")"),
        (
            "slice",
            "split(pat=\"-\") | slice(start=1) | join(sep=\",\")",
        ),
        (
            "concat",
            "split(pat=\"-\") | concat(with=\"z\") | join(sep=\",\")",
        ),
        ("length", "length"),
        ("reverse", "reverse"),
        ("json_encode", "json_encode"),
        ("as_str", "as_str"),
    ];
    for own in claw_provision::template::OWN_FILTERS {
        filters.push((own, own));
    }
    let registered = tera_filters();
    for f in &registered {
        assert!(
            filters.iter().any(|(n, _)| n == f)
                || unavailable.contains(&f.as_str())
                || no_string.contains(&f.as_str())
                || *f == "get",
            "Tera filter `{f}` is not tried"
        );
    }
    let probe_ctx: serde_json::Map<String, serde_json::Value> =
        serde_json::json!({"secrets": {"x": "y"}})
            .as_object()
            .unwrap()
            .clone();
    for f in unavailable {
        assert!(
            claw_provision::template::render_str(&format!("{{{{ secrets.x | {f} }}}}"), &probe_ctx)
                .is_err(),
            "`{f}` is available: try it"
        );
    }

    // The playbook: one command per filter (each secret through it, in `run` and `unless`),
    // the flows, a handler, a template with `vars`, the old side of a diff, shown output,
    // and forced failures.
    let s = Scratch::new();
    let mut pb = String::from(
        "name = \"taint\"\noperator_secrets = [\"TAINT_QUOTE\", \"TAINT_MIXED\", \"TAINT_LINES\"]\n\n\
         [[steps]]\nname = \"dir\"\nkind = \"dir\"\npath = \"/opt/taint\"\nmode = \"0755\"\n\n\
         [[steps]]\nname = \"token\"\nkind = \"secret\"\nsecret = \"token\"\npath = \"/opt/taint/token\"\n\n",
    );
    let mut commands: Vec<(String, String)> = Vec::new(); // (step name, `run` template)
    for (i, (_, expr)) in filters.iter().enumerate() {
        let each = |n: &str| format!("{{{{ secrets.{n} | {expr} | shell_quote }}}}");
        let all: Vec<String> = names.iter().map(|n| each(n)).collect();
        let run = format!("printf '%s\\n' {} > /dev/null", all.join(" "));
        let unless = format!("test {} = never-{i}", each(names[i % names.len()]));
        let name = format!("filter {i}");
        pb.push_str(&format!(
            "[[steps]]\nname = \"{name}\"\nkind = \"command\"\nrun = '''{run}'''\nunless = '''{unless}'''\n{}\n",
            if i == 0 { "notify = \"handler\"\n" } else { "" }
        ));
        commands.push((name, run));
    }
    let flows = [
        (
            "set",
            "{% set p = secrets.TAINT_QUOTE | upper %}{% set q = p ~ \"/\" ~ secrets.token %}printf %s {{ q | shell_quote }} > /dev/null",
        ),
        (
            "macro",
            "{% macro m(v) %}{{ v | lower | replace(from=\"-\", to=\"\") }}{% endmacro m %}printf %s {{ self::m(v=secrets.TAINT_MIXED) | shell_quote }} {{ self::m(v=secrets.TAINT_LINES) | shell_quote }} > /dev/null",
        ),
        (
            "loop",
            "{% for part in secrets.TAINT_LINES | split(pat=\"-\") %}printf %s {{ part | shell_quote }} > /dev/null; {% endfor %}true",
        ),
        (
            "get",
            "printf %s {{ secrets | get(key=\"TAINT_QUOTE\") | upper | shell_quote }} > /dev/null",
        ),
    ];
    for (what, run) in flows {
        let name = format!("flow {what}");
        pb.push_str(&format!(
            "[[steps]]\nname = \"{name}\"\nkind = \"command\"\nrun = '''{run}'''\n\n"
        ));
        commands.push((name, run.to_string()));
    }
    // `creates` named by a secret, on the first line of a two-line command.
    pb.push_str(
        "[[steps]]\nname = \"creates\"\nkind = \"command\"\n\
         run = '''printf %s {{ secrets.TAINT_QUOTE | title | shell_quote }} > /dev/null\ntrue'''\n\
         creates = '''/opt/taint/c-{{ secrets.TAINT_QUOTE | split(pat=\"-\") | last }}'''\n\n",
    );
    // A variable defined from a secret: a template step's `vars`; the template never names
    // `secrets`.
    s.file(
        "templates/vars.conf.tera",
        "A={{ pw }}\nB={{ parts[0] | lower }}\n{% for l in lines %}L={{ l }}\n{% endfor %}",
    );
    pb.push_str(
        "[[steps]]\nname = \"vars\"\nkind = \"template\"\nsrc = \"vars.conf.tera\"\npath = \"/opt/taint/vars.conf\"\nmode = \"0600\"\n\
         vars = { pw = '''{{ secrets.TAINT_QUOTE | title }}''', parts = ['''{{ secrets.TAINT_MIXED | upper }}'''], lines = ['''{{ secrets.TAINT_LINES | linebreaksbr }}''', '''{{ secrets.token }}'''] }\n\n",
    );
    // The old side of a diff: the file holds the secrets on the host today.
    pb.push_str(
        "[[steps]]\nname = \"old side\"\nkind = \"file\"\npath = \"/opt/taint/old.conf\"\ncontent = \"plain=1\\n\"\nmode = \"0644\"\n\n",
    );
    // Shown output holding secrets (encoded on the host).
    pb.push_str(
        "[[steps]]\nname = \"shown\"\nkind = \"command\"\noutput = true\nchanges = false\n\
         run = '''printf %s {{ secrets.TAINT_MIXED | shell_quote }} | base64 -w0; echo; printf '%s\\n' {{ secrets.TAINT_QUOTE | shell_quote }} | tr a-z A-Z; cat /opt/taint/token'''\n\n",
    );
    // Forced failures: the host prints a secret (uppercased); a template throws with one.
    pb.push_str(
        "[[steps]]\nname = \"fails on the host\"\nkind = \"command\"\nwhen = \"fail == 'command'\"\n\
         run = '''echo boom {{ secrets.TAINT_QUOTE | shell_quote }} | tr a-z A-Z >&2; sleep 0.5; exit 3'''\n\n\
         [[steps]]\nname = \"fails in a template\"\nkind = \"command\"\nwhen = \"fail == 'template'\"\n\
         run = '''{% if secrets.TAINT_MIXED is not starting_with(\"<secret\") %}{{ throw(message=\"forced \" ~ secrets.TAINT_MIXED | upper) }}{% endif %}true'''\n\n\
         [[handlers]]\nname = \"handler\"\nkind = \"command\"\n\
         run = '''printf %s {{ secrets.TAINT_LINES | upper | shell_quote }} > /dev/null; sleep 0.5'''\n",
    );
    let pb_path = s.file("taint.toml", &pb);
    let pb_path = pb_path.to_str().unwrap();

    let lab = Lab::up("taint-sc", 1);
    let inv = lab.inventory();
    let inv = inv.to_str().unwrap();
    // The managed file's current content holds the secrets, raw and encoded.
    let old_content = {
        use base64::Engine as _;
        let mut c = String::new();
        for (n, v) in &secrets {
            c.push_str(&format!(
                "{n}={v}\n{n}_UP={}\n{n}_B64={}\n",
                v.to_uppercase(),
                base64::engine::general_purpose::STANDARD.encode(v)
            ));
        }
        c
    };
    crate::support::ok(
        lab.ssh_input(
            "h1",
            "sudo sh -c 'mkdir -p /opt/taint && cat > /opt/taint/old.conf'",
            old_content.as_bytes(),
        ),
        "write the old file",
    );

    std::thread::sleep(Duration::from_millis(1100)); // mtime granularity margin
    let since = SystemTime::now();
    let ps_out = s.dir.path().join("ps.txt");
    let sampler = host_loop(
        &lab,
        "h1",
        "ps -eww -o args=; sleep 0.02",
        "/tmp/taint-stop-ps",
        &ps_out,
    );
    let env: Vec<(&str, &str)> = secrets.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut runs: Vec<(String, Run)> = Vec::new();
    let mut run = |args: &[&str], want: i32| -> Run {
        let r = claw(args, &env);
        let what = args.join(" ");
        assert_eq!(r.code, want, "{what}:\n{}\n{}", r.stdout, r.stderr);
        let copy = Run {
            code: r.code,
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
        };
        runs.push((what, copy));
        r
    };
    let plan_file = s.dir.path().join("taint.plan");
    let plan_file = plan_file.to_str().unwrap();
    let e = ["-e", "fail=none"];
    let plan_text = run(
        &[&["plan", inv, "--playbook", pb_path, "-v"][..], &e].concat(),
        0,
    );
    let plan_json = run(
        &[
            &["plan", inv, "--playbook", pb_path, "--output", "json"][..],
            &e,
        ]
        .concat(),
        0,
    );
    run(
        &[
            &["plan", inv, "--playbook", pb_path, "--out", plan_file][..],
            &e,
        ]
        .concat(),
        0,
    );
    let applied = run(
        &[
            &[
                "apply",
                inv,
                "--playbook",
                pb_path,
                "--plan",
                plan_file,
                "-vv",
            ][..],
            &e,
        ]
        .concat(),
        0,
    );
    let applied_json = run(
        &[
            &[
                "apply",
                inv,
                "--playbook",
                pb_path,
                "--yes",
                "--output",
                "json",
                "-vv",
            ][..],
            &e,
        ]
        .concat(),
        0,
    );
    let failed_command = run(
        &[
            "apply",
            inv,
            "--playbook",
            pb_path,
            "--yes",
            "-e",
            "fail=command",
        ],
        1,
    );
    let failed_template = run(
        &[
            "apply",
            inv,
            "--playbook",
            pb_path,
            "--yes",
            "--output",
            "json",
            "-e",
            "fail=template",
        ],
        1,
    );
    stop_loop(&lab, "h1", "/tmp/taint-stop-ps", sampler);

    // The values, now with the one generated on the host.
    let token = lab.ssh_ok("h1", "sudo cat /opt/taint/token");
    let token = token.trim_end_matches('\n').to_string();
    assert!(token.len() >= 16, "{token:?}");
    let mut all: Vec<(String, String)> = secrets
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    all.push(("token".into(), token.clone()));
    let ctx_of = |real: bool| -> serde_json::Map<String, serde_json::Value> {
        let m: serde_json::Map<String, serde_json::Value> = all
            .iter()
            .map(|(n, v)| {
                let v = if real {
                    v.clone()
                } else {
                    format!("<secret:{n}>")
                };
                (n.clone(), serde_json::Value::String(v))
            })
            .collect();
        let mut c = serde_json::Map::new();
        c.insert("secrets".into(), serde_json::Value::Object(m));
        c
    };
    let (real_ctx, marker_ctx) = (ctx_of(true), ctx_of(false));

    // Displays: each command's plan line is its marker rendering (its first line when a
    // secret's newline made the real one two lines: the display shows the real text's first
    // line, which becomes the marker rendering, and says more lines follow).
    for (name, run_t) in &commands {
        let shown = claw_provision::template::render_str(run_t, &marker_ctx).unwrap();
        let real = claw_provision::template::render_str(run_t, &real_ctx).unwrap();
        let step = plan_json
            .events()
            .into_iter()
            .filter(|e| e["event"] == "plan")
            .flat_map(|e| e["steps"].as_array().unwrap().clone())
            .find(|s| s["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} in the JSON plan"));
        let target = step["target"].as_str().unwrap();
        if real.lines().count() > 1 {
            assert_eq!(target, format!("{shown} …"), "{name}");
        } else {
            assert_eq!(target, shown, "{name}");
        }
        assert!(
            plan_text.stdout.contains(target),
            "{name}: {target}\n{}",
            plan_text.stdout
        );
    }
    for want in [
        "`creates` path /opt/taint/c-<secret:TAINT_QUOTE> is absent",
        "printf %s '<Secret:Taint_quote>' > /dev/null …",
        "-TAINT_QUOTE=<secret:TAINT_QUOTE>",
        "-TAINT_MIXED_B64=<secret:TAINT_MIXED>",
        "-TAINT_LINES_UP=<secret:TAINT_LINES>",
        "+plain=1",
    ] {
        assert!(
            plan_text.stdout.contains(want),
            "{want}:\n{}",
            plan_text.stdout
        );
    }
    for want in [
        "<secret:TAINT_MIXED>",
        "<secret:TAINT_QUOTE>",
        "<secret:token>",
    ] {
        assert!(
            applied.stdout.contains(want),
            "shown output, masked: {want}\n{}",
            applied.stdout
        );
    }
    let fc = format!("{}{}", failed_command.stdout, failed_command.stderr);
    assert!(fc.contains("BOOM <secret:TAINT_QUOTE>"), "{fc}");
    let ft = format!("{}{}", failed_template.stdout, failed_template.stderr);
    // (The uppercased value is also a text the `vars` step renders: shown as its rendering.)
    assert!(ft.contains("FORCED <SECRET:TAINT_MIXED>"), "{ft}");
    let _ = applied_json;

    // Every form the playbook gives each value (the exact rendering of every filter expression
    // and flow, line by line too) and the common encodings.
    let mut needles: Vec<(String, String)> = Vec::new();
    for (n, v) in &all {
        for f in forms(v)
            .into_iter()
            .chain(more_forms(v))
            .chain(v.lines().map(String::from))
        {
            needles.push((format!("{n} (raw or encoded)"), f));
        }
        for (fname, expr) in &filters {
            let t = format!("{{{{ secrets.{n} | {expr} }}}}");
            let out = claw_provision::template::render_str(&t, &real_ctx).unwrap();
            let shown = claw_provision::template::render_str(&t, &marker_ctx).unwrap();
            // (`int` of a secret that is no number is the default, whatever the secret.)
            for piece in std::iter::once(out.as_str()).chain(out.lines()) {
                if !shown.contains(piece) {
                    needles.push((format!("{n} through `{fname}`"), piece.to_string()));
                }
            }
        }
    }
    for (name, run_t) in &commands {
        let out = claw_provision::template::render_str(run_t, &real_ctx).unwrap();
        let shown = claw_provision::template::render_str(run_t, &marker_ctx).unwrap();
        for piece in std::iter::once(out.as_str()).chain(out.lines()) {
            if !shown.contains(piece) {
                needles.push((format!("the rendering of `{name}`"), piece.to_string()));
            }
        }
    }
    // Shorter texts (a word count, a length, a one-letter part) are no secret.
    needles.retain(|(_, f)| f.chars().count() >= 8);
    needles.sort();
    needles.dedup();

    let mut corpus: Vec<(String, Vec<u8>)> = runs
        .iter()
        .flat_map(|(what, r)| {
            [
                (format!("stdout of `{what}`"), r.stdout.clone().into_bytes()),
                (format!("stderr of `{what}`"), r.stderr.clone().into_bytes()),
            ]
        })
        .collect();
    let ps = std::fs::read(&ps_out).unwrap();
    let ps_text = String::from_utf8_lossy(&ps).into_owned();
    assert!(
        ps_text.contains("sh -c"),
        "the sampler saw the run:\n{ps_text}"
    );
    corpus.push(("ps on the host".into(), ps));
    corpus.push((
        "the audit log".into(),
        lab.ssh_ok("h1", "sudo cat /var/log/claw-provision/audit.log")
            .into_bytes(),
    ));
    let mut files = Vec::new();
    files_since(s.dir.path(), since, &[], &mut files);
    files_since(&lab.dir, since, &[lab.dir.join("hosts/h1/opt")], &mut files);
    assert!(files.iter().any(|f| f.ends_with("taint.plan")));
    for f in &files {
        if let Ok(data) = std::fs::read(f) {
            corpus.push((f.display().to_string(), data));
        }
    }
    let mut hits = Vec::new();
    for (what, form) in &needles {
        for (src, data) in &corpus {
            if let Some(at) = data.windows(form.len()).position(|w| w == form.as_bytes()) {
                // The line it is on (a test secret: showing it says where the leak is).
                let start = data[..at]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = data[at..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(data.len(), |i| at + i);
                let line = String::from_utf8_lossy(&data[start..end.min(start + 400)]);
                hits.push(format!("{what} (as {form:?}) in {src}: {line}"));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "secrets leaked ({} places searched):\n{}",
        corpus.len(),
        hits.join("\n")
    );
    // The host really holds them (a search finding nothing means something).
    let held = lab.ssh_ok("h1", "sudo cat /opt/taint/vars.conf");
    assert!(held.contains(&format!("L={token}")), "{held}");
    eprintln!(
        "taint: {} filters, {} commands, {} needles, {} sources ({} files), {} ps lines, {:.1}s",
        filters.len(),
        commands.len(),
        needles.len(),
        corpus.len(),
        files.len(),
        ps_text.lines().count(),
        started.elapsed().as_secs_f64()
    );
}

/// More forms of a value: shell-quoted, JSON- and backslash-escaped, HTML-escaped, upper- and
/// lowercase.
fn more_forms(v: &str) -> Vec<String> {
    let quoted = format!("'{}'", v.replace('\'', "'\\''"));
    let json = serde_json::to_string(v).unwrap();
    vec![
        quoted[1..quoted.len() - 1].to_string(),
        quoted,
        json[1..json.len() - 1].to_string(),
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\'', "\\'"),
        v.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#x27;")
            .replace('/', "&#x2F;"),
        v.to_uppercase(),
        v.to_lowercase(),
    ]
}

/// The filters the Tera of Cargo.lock registers, read from its source in the cargo registry.
fn tera_filters() -> Vec<String> {
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"tera\"\n"))
        .and_then(|p| p.split("version = \"").nth(1))
        .and_then(|v| v.split('"').next())
        .expect("tera in Cargo.lock")
        .to_string();
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let src = std::fs::read_dir(home.join("registry/src"))
        .expect("the cargo registry")
        .flatten()
        .map(|d| d.path().join(format!("tera-{version}/src/tera.rs")))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("tera-{version} sources in the cargo registry"));
    let text = std::fs::read_to_string(src).unwrap();
    let body = text
        .split("fn register_tera_filters")
        .nth(1)
        .and_then(|b| b.split("\n    }\n").next())
        .expect("register_tera_filters");
    let names: Vec<String> = body
        .split("register_filter(\"")
        .skip(1)
        .filter_map(|p| p.split('"').next().map(String::from))
        .collect();
    assert!(names.len() >= 40, "{names:?}");
    names
}

/// 16 random bytes from the OS, as hex: a value no earlier run printed.
fn random_hex() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every form of `v` a failing probe's output could carry: [`forms`], its bytes in hex (lower-
/// and uppercase), and each line `od -An -tx1` prints of it.
fn probe_forms(v: &str) -> Vec<String> {
    let mut out = forms(v);
    out.push(v.bytes().map(|b| format!("{b:02x}")).collect());
    out.push(v.bytes().map(|b| format!("{b:02X}")).collect());
    for line in v.as_bytes().chunks(16) {
        out.push(line.iter().map(|b| format!(" {b:02x}")).collect());
    }
    out
}

const FAILING_PROBE: &str = r#"name = "sc-probe-fails"
hosts = "h1"
operator_secrets = ["SC_PROBE_OP"]

[[steps]]
name = "probe db password"
kind = "secret"
secret = "db_pw"
path = "/srv/sc-probe/db_pw"

[[steps]]
name = "probe user"
kind = "user"
user = "scprobeuser"

[[steps]]
name = "probe config"
kind = "file"
path = "/srv/sc-probe/config"
mode = "0600"
content = "DB_PW={{ secrets.db_pw }}\nOP={{ secrets.SC_PROBE_OP }}\n"
"#;

/// `getent` for the probe's user question (asked after the secrets section, whose records
/// are already on the probe's stdout): writes `/opt/sc-probe/err` to its stderr (the probe's)
/// and `/opt/sc-probe/out` to the probe shell's stdout, then kills that shell (the child of
/// `timeout`): the probe fails with the host's secret in hand.
const GETENT_SHIM: &str = r#"#!/bin/sh
# test shim: the probe dies right after reading the secrets
case "$*" in
  'passwd scprobeuser') ;;
  *) exec /usr/bin/getent "$@" ;;
esac
p=$PPID
while q=$(awk '{print $4}' /proc/$p/stat) && [ "$q" -gt 1 ] && [ "$(cat /proc/$q/comm)" != timeout ]; do p=$q; done
cat /opt/sc-probe/err >&2
cat /opt/sc-probe/out > /proc/$p/fd/1
echo "killed $p" >> /opt/sc-probe/log
kill -9 $p
exit 1
"#;

/// Issue 16: "probe errors are not masked, and a failure description falls back to stdout
/// (which holds secret files)". A `getent` shim kills the probe right after its secrets section
/// read the host's secret (random per run): once with the host's secret and the operator secret
/// in every form (raw, base64, hex, od) on the probe's stdout and nothing on stderr (the
/// description may not fall back to stdout), once with the operator secret (known before the
/// probe) and the host's secret (known from the records the probe printed before it failed:
/// raw, hex and the lines of `od -An -tx1`) also on stderr (the description is masked). `plan`, in text and JSON, fails with an
/// error naming the probe, and shows none of them. Then a failing command that prints the
/// host's secret in hex (a form the mask does not know) on stdout only: its description, too,
/// never shows stdout (a script holding a secret).
#[test]
fn a_failing_probe_shows_no_secret_read_before_it_failed() {
    let lab = Lab::up("sc-probe-fails", 1);
    let host_secret = random_hex();
    let op_secret = format!("op-{}", random_hex());
    let exec = |script: &str| {
        let o = lab.exec("h1", &["sh", "-c", script]);
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    exec(&format!(
        "install -d -m 0700 /srv/sc-probe /opt/sc-probe /opt/sc-probe-shim
         umask 077; printf '%s\\n' {} > /srv/sc-probe/db_pw
         printf '%s' {} > /opt/sc-probe-shim/getent && chmod 0755 /opt/sc-probe-shim/getent",
        q(&host_secret),
        q(GETENT_SHIM)
    ));
    let s = Scratch::new();
    let inv = lab.write_inventory("probe.toml", &s.file("probe.toml", FAILING_PROBE), &[]);
    let inv = inv.to_str().unwrap();
    let env = [("SC_PROBE_OP", op_secret.as_str())];
    let secrets = [host_secret.as_str(), op_secret.as_str()];
    let every: Vec<String> = secrets.iter().flat_map(|v| probe_forms(v)).collect();
    let lines = |vs: &[String]| vs.iter().map(|v| format!("{v}\n")).collect::<String>();
    // The operator secret's forms, then (the last five lines, those a description shows) the
    // operator secret, the host's secret raw and in hex, and `od` of it (two lines, added on
    // the host).
    let hex: String = host_secret.bytes().map(|b| format!("{b:02x}")).collect();
    let known: Vec<String> = [
        forms(&op_secret),
        vec![
            op_secret.clone(),
            host_secret.clone(),
            format!("{hex} {}", hex.to_uppercase()),
        ],
    ]
    .concat();

    let mut outs = String::new();
    exec("mount --bind /opt/sc-probe-shim /usr/local/sbin");
    for (mode, err) in [
        ("stdout only", String::new()),
        ("stderr too", lines(&known)),
    ] {
        exec(&format!(
            "printf '%s' {} > /opt/sc-probe/out; printf '%s' {} > /opt/sc-probe/err",
            // Last, the host's secret itself (the mask cannot know it yet): in any tail.
            q(&(lines(&every) + &host_secret + "\n")),
            q(&err)
        ));
        if !err.is_empty() {
            exec(&format!(
                "printf '%s' {} | od -An -tx1 >> /opt/sc-probe/err",
                q(&host_secret)
            ));
        }
        for json in [false, true] {
            exec(": > /opt/sc-probe/log");
            let mut args = vec!["plan", inv];
            if json {
                args.extend(["--output", "json"]);
            }
            let r = claw(&args, &env);
            let out = format!("{}\n{}", r.stdout, r.stderr);
            let log =
                String::from_utf8_lossy(&lab.exec("h1", &["cat", "/opt/sc-probe/log"]).stdout)
                    .into_owned();
            assert!(
                log.contains("killed"),
                "{mode} {args:?}: the shim ran\n{log}\n{out}"
            );
            assert!(!out.contains("panicked"), "{out}");
            assert_ne!(r.code, 0, "{mode} {args:?}: {out}");
            if json {
                let h = r.host("h1");
                assert_eq!(h["state"], "failed", "{mode}: {h}\n{out}");
                assert_eq!(h["failed_at"], "probe", "{mode}: {h}\n{out}");
            } else {
                assert!(
                    out.lines()
                        .any(|l| l.contains("error: h1 (") && l.contains("probe")),
                    "{mode}: an error naming h1 and the probe\n{out}"
                );
            }
            for f in &every {
                assert!(
                    !out.contains(f.as_str()),
                    "{mode} {args:?}: `{f}` shown\n{out}"
                );
            }
            // The description did use stderr (masked): the operator secret by its name, the
            // host's secret as `********` (raw, hex twice, the od lines as one).
            assert_eq!(
                out.contains("<secret:SC_PROBE_OP>"),
                !err.is_empty(),
                "{mode} {args:?}\n{out}"
            );
            assert_eq!(
                out.matches("********").count() >= 4,
                !err.is_empty(),
                "{mode} {args:?}\n{out}"
            );
            outs.push_str(&out);
        }
    }
    exec("umount /usr/local/sbin");

    // A step's command holding the secret fails with the secret in hex on stdout, nothing on
    // stderr: described by its exit status only.
    let pb = s.file(
        "hex.toml",
        r#"name = "sc-probe-hex"
hosts = "h1"

[[steps]]
name = "probe db password"
kind = "secret"
secret = "db_pw"
path = "/srv/sc-probe/db_pw"

[[steps]]
name = "prints the secret in hex"
kind = "command"
run = "v={{ secrets.db_pw | shell_quote }}; printf '%s' \"$v\" | od -An -tx1; printf '%s' \"$v\" | od -An -tx1 | tr -d ' \\n'; echo; exit 3"
"#,
    );
    let inv = lab.write_inventory("hex.toml", &pb, &[]);
    let r = claw(&["apply", inv.to_str().unwrap(), "--yes"], &[]);
    let out = format!("{}\n{}", r.stdout, r.stderr);
    assert_ne!(r.code, 0, "{out}");
    assert!(
        out.lines().any(|l| l.contains("error: h1 (")
            && l.contains("prints the secret in hex")
            && l.contains("exit status 3")),
        "an error naming h1, the step and its status\n{out}"
    );
    for f in probe_forms(&host_secret) {
        assert!(!out.contains(f.as_str()), "`{f}` shown\n{out}");
    }
    outs.push_str(&out);
    eprintln!("{outs}");
}
