//! Connecting: host keys (changed, unknown, accept-new) and authentication (key types, wrong key,
//! encrypted key). A refused host runs nothing: its sshd logs no session.

use crate::support::{Lab, Scratch, claw, claw_spawn, log_len, sshd_counts};

fn touch_playbook(s: &Scratch) -> std::path::PathBuf {
    s.file(
        "pb.toml",
        "name = \"touch\"\n[[steps]]\nname = \"marker\"\nkind = \"file\"\npath = \"/srv/marker\"\ncontent = \"x\\n\"\n",
    )
}

#[test]
fn host_keys() {
    let lab = Lab::up("t-hostkey", 2);
    let s = Scratch::new();
    let pb = touch_playbook(&s);

    // Changed key: refused before anything runs, with the fingerprint and the remedy.
    lab.cmd(&["rekey", "h1"]);
    let inv = lab.write_inventory("strict.toml", &pb, &[]);
    let mark = log_len(&lab.host("h1").sshd_log);
    let r = claw(&["apply", inv.to_str().unwrap(), "--yes"], &[]);
    assert_eq!(r.code, 1);
    let err = format!("{}{}", r.stdout, r.stderr);
    assert!(err.contains("SHA256:"), "fingerprint shown: {err}");
    assert!(err.to_lowercase().contains("changed"), "{err}");
    assert!(err.contains("ssh-keygen -R"), "remedy: {err}");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        sshd_counts(&lab.host("h1").sshd_log, mark),
        (0, 0),
        "nothing ran on the host with the changed key"
    );
    assert!(
        lab.ssh_ok("h2", "ls /srv").contains("marker"),
        "the other host was applied"
    );
    assert!(
        r.stdout.contains("h1") && r.stdout.contains("failed"),
        "{}",
        r.stdout
    );

    // accept-new never accepts a changed key either.
    let inv_an = lab.write_inventory(
        "accept-new.toml",
        &pb,
        &[("host_key_policy", "\"accept-new\"")],
    );
    let lab_kh = lab.dir.join("known_hosts");
    let before = std::fs::read(&lab_kh).unwrap();
    let mark = log_len(&lab.host("h1").sshd_log);
    let r = claw(
        &["apply", inv_an.to_str().unwrap(), "--yes", "--limit", "h1"],
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    let err = format!("{}{}", r.stdout, r.stderr);
    assert!(err.to_lowercase().contains("changed"), "{err}");
    assert_eq!(
        std::fs::read(&lab_kh).unwrap(),
        before,
        "accept-new left the recorded (old) key in place and added nothing"
    );
    assert_eq!(sshd_counts(&lab.host("h1").sshd_log, mark), (0, 0));
    // Nor does `known-hosts --pin` replace it.
    let r = claw(&["known-hosts", inv_an.to_str().unwrap(), "--pin"], &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(std::fs::read(&lab_kh).unwrap(), before);

    // Unknown key under strict: refused with the hint; accept-new records it, then it is known.
    let empty_kh = lab.dir.join("empty_known_hosts");
    std::fs::write(&empty_kh, "").unwrap();
    let kh = format!("{:?}", empty_kh.display().to_string());
    let inv_unknown = lab.write_inventory("unknown.toml", &pb, &[("known_hosts", &kh)]);
    let r = claw(
        &[
            "apply",
            inv_unknown.to_str().unwrap(),
            "--yes",
            "--limit",
            "h2",
        ],
        &[],
    );
    assert_eq!(r.code, 1);
    let err = format!("{}{}", r.stdout, r.stderr);
    assert!(
        err.contains("accept-new") && err.contains("SHA256:"),
        "hint: {err}"
    );
    let inv_learn = lab.write_inventory(
        "learn.toml",
        &pb,
        &[("known_hosts", &kh), ("host_key_policy", "\"accept-new\"")],
    );
    let r = claw(&["apply", inv_learn.to_str().unwrap(), "--yes"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let learned = std::fs::read_to_string(&empty_kh).unwrap();
    assert_eq!(
        learned.lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "{learned}"
    );
    let r = claw(&["plan", inv_unknown.to_str().unwrap()], &[]);
    assert_eq!(
        r.code, 0,
        "recorded keys are now known under strict: {}{}",
        r.stdout, r.stderr
    );

    // A host covered by a @cert-authority line is never trusted on first use (no certificate
    // checking yet): accept-new refuses it and records nothing.
    let ca_kh = lab.dir.join("ca_known_hosts");
    let ca_key = std::fs::read_to_string(lab.dir.join("id_other.pub")).unwrap();
    std::fs::write(
        &ca_kh,
        format!("@cert-authority {} {}", lab.host("h2").address, ca_key),
    )
    .unwrap();
    let inv_ca = lab.write_inventory(
        "ca.toml",
        &pb,
        &[
            ("known_hosts", &format!("{:?}", ca_kh.display().to_string())),
            ("host_key_policy", "\"accept-new\""),
        ],
    );
    let r = claw(&["plan", inv_ca.to_str().unwrap(), "--limit", "h2"], &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("cert-authority"), "{}", r.stdout);
    assert_eq!(
        std::fs::read_to_string(&ca_kh).unwrap().lines().count(),
        1,
        "nothing recorded"
    );
}

/// Several runs with `accept-new` start at once against 8 hosts none of which is known yet: the
/// known_hosts file ends with exactly one valid entry per host (its real key), the operator's
/// own line and the file's mode kept, every key reported as learned by exactly one run, and no
/// temporary file left beside it.
#[test]
fn concurrent_accept_new_runs_record_each_host_once() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::up("sk-khrace", 8);
    let s = Scratch::new();
    let pb = touch_playbook(&s);
    let dir = s.dir.path().join("ssh");
    std::fs::create_dir(&dir).unwrap();
    let kh = dir.join("known_hosts");
    std::fs::write(&kh, "# the operator's own line\n").unwrap();
    std::fs::set_permissions(&kh, std::fs::Permissions::from_mode(0o640)).unwrap();
    let inv = lab.write_inventory(
        "race.toml",
        &pb,
        &[
            ("known_hosts", &format!("{:?}", kh.display().to_string())),
            ("host_key_policy", "\"accept-new\""),
        ],
    );
    let inv = inv.to_str().unwrap();
    let started = std::time::Instant::now();
    let plans: Vec<_> = (0..4)
        .map(|_| claw_spawn(&["plan", inv, "--output", "json"], &[]))
        .collect();
    let pin = claw_spawn(&["known-hosts", inv, "--pin"], &[]);
    let mut learned = 0;
    for r in plans {
        let r = r.wait();
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        learned += (r.events().iter())
            .filter(|e| e["event"] == "host_key_learned")
            .count();
    }
    let r = pin.wait();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    learned += r
        .stdout
        .lines()
        .filter(|l| l.contains("recorded in"))
        .count();
    eprintln!("5 concurrent runs x 8 hosts: {:?}", started.elapsed());

    let text = std::fs::read_to_string(&kh).unwrap();
    let parsed = claw_provision::testing::KnownHosts::parse(&kh, &text);
    assert!(parsed.bad_lines().is_empty(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "the comment and one line per host:\n{text}");
    assert_eq!(lines[0], "# the operator's own line");
    for h in lab.hosts() {
        let real = std::fs::read_to_string(
            lab.dir
                .join(format!("hosts/{}/ssh_host_ed25519_key.pub", h.name)),
        )
        .unwrap();
        let real: Vec<&str> = real.split_whitespace().take(2).collect();
        let entries: Vec<&&str> = lines
            .iter()
            .filter(|l| l.split(' ').next() == Some(h.address.as_str()))
            .collect();
        assert_eq!(entries.len(), 1, "{}: {text}", h.name);
        assert_eq!(
            entries[0].split(' ').skip(1).collect::<Vec<_>>(),
            real,
            "{}: its real key",
            h.name
        );
        assert_eq!(parsed.entries_for(&h.address, 22).len(), 1);
    }
    assert_eq!(learned, 8, "each key learned by exactly one run");
    assert_eq!(
        std::fs::metadata(&kh).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["known_hosts", "known_hosts.lock"]);
}

#[test]
fn authentication() {
    let lab = Lab::up("t-auth", 1);
    let s = Scratch::new();
    let pb = touch_playbook(&s);
    for key in ["id_ecdsa", "id_rsa"] {
        let inv = lab.write_inventory(
            &format!("{key}.toml"),
            &pb,
            &[("identity_file", &format!("{key:?}"))],
        );
        let r = claw(&["plan", inv.to_str().unwrap()], &[]);
        assert_eq!(r.code, 0, "{key}: {}{}", r.stdout, r.stderr);
    }
    // Encrypted key: passphrase from the environment.
    let inv = lab.write_inventory("enc.toml", &pb, &[("identity_file", "\"id_ed25519_enc\"")]);
    let r = claw(
        &["plan", inv.to_str().unwrap()],
        &[("CLAW_SSH_PASSPHRASE", "labphrase")],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = claw(
        &["plan", inv.to_str().unwrap()],
        &[("CLAW_SSH_PASSPHRASE", "wrong-phrase")],
    );
    assert_eq!(r.code, 1);
    assert!(
        !format!("{}{}", r.stdout, r.stderr).contains("wrong-phrase"),
        "the passphrase is never shown"
    );
    // A key the host does not accept: a clear authentication error.
    let inv = lab.write_inventory("other.toml", &pb, &[("identity_file", "\"id_other\"")]);
    let r = claw(&["plan", inv.to_str().unwrap()], &[]);
    assert_eq!(r.code, 1);
    let err = format!("{}{}", r.stdout, r.stderr);
    assert!(err.to_lowercase().contains("authenticat"), "{err}");
    assert!(err.contains("id_other"), "names the key it tried: {err}");
}

#[test]
fn ssh_agent() {
    let lab = Lab::up("t-agent", 1);
    let s = Scratch::new();
    let pb = touch_playbook(&s);
    let sock = s.dir.path().join("agent.sock");
    let out = std::process::Command::new("ssh-agent")
        .arg("-a")
        .arg(&sock)
        .output()
        .expect("ssh-agent");
    assert!(
        out.status.success(),
        "ssh-agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = String::from_utf8_lossy(&out.stdout)
        .split("SSH_AGENT_PID=")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .map(str::to_string)
        .expect("agent pid");
    let sock = sock.to_str().unwrap().to_string();
    // RSA through the agent needs the rsa-sha2 signature flavour, as from a file.
    let added = std::process::Command::new("ssh-add")
        .arg(lab.dir.join("id_rsa"))
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "ssh-add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    // The inventory's own key is not accepted by the host: only the agent's key can log in.
    let inv = lab.write_inventory("agent.toml", &pb, &[("identity_file", "\"id_other\"")]);
    let r = claw(
        &["apply", inv.to_str().unwrap(), "--yes"],
        &[("SSH_AUTH_SOCK", &sock)],
    );
    let _ = std::process::Command::new("kill").arg(&pid).status();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(lab.ssh_ok("h1", "ls /srv").contains("marker"));
    let r = claw(&["plan", inv.to_str().unwrap()], &[]);
    assert_eq!(
        r.code, 1,
        "without the agent the same inventory cannot log in"
    );
}
