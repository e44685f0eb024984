//! known_hosts files as operators' ssh_configs name them (issue 16): `/dev/null` (the common CI
//! setting `UserKnownHostsFile /dev/null` + `StrictHostKeyChecking no`), a link to it, another
//! character device, a FIFO and a file in a read-only directory are read as empty and never
//! written, nothing is made beside them, and the connection goes on (the key is reported as not
//! recorded, as OpenSSH warns and goes on). `HostKeyAlias`, `GlobalKnownHostsFile` and
//! `HashKnownHosts` are honoured; host-key options we do not implement are errors naming the
//! file and line.
//!
//! The device cases run the binary as root in a private mount namespace whose `/dev` is a tmpfs
//! holding its own `null`, `zero` and `urandom` nodes (`unshare -m`): the machine's real /dev is
//! never at risk. What the binary left in that /dev is listed from inside the namespace.

use crate::support::{Lab, Run, Scratch, bin, claw};
use std::path::Path;
use std::process::Command;

/// The lab host's own ed25519 key: `ssh-ed25519 BASE64`.
fn host_key(lab: &Lab) -> String {
    let k = std::fs::read_to_string(lab.dir.join("hosts/h1/ssh_host_ed25519_key.pub")).unwrap();
    k.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// An inventory for h1 that leaves known_hosts and the policy to the ssh_config.
fn inventory(lab: &Lab, s: &Scratch) -> String {
    let pb = s.file(
        "pb.toml",
        "name = \"kh\"\n\n[[steps]]\nname = \"d\"\nkind = \"dir\"\npath = \"/opt/kh\"\n",
    );
    let inv = lab.write_inventory(
        "kh.toml",
        &pb,
        &[("known_hosts", ""), ("host_key_policy", "")],
    );
    let text = std::fs::read_to_string(&inv).unwrap();
    // The key path relative to the lab dir: made absolute (the inventory moves to the scratch).
    let text = text.replace(
        "identity_file = \"id_ed25519\"",
        &format!(
            "identity_file = {:?}",
            lab.dir.join("id_ed25519").display().to_string()
        ),
    );
    s.file("kh.toml", &text).display().to_string()
}

/// `plan INV --ssh-config CFG --output json` in a private mount namespace with a tmpfs on /dev
/// (`null`, `zero`, `urandom`, `random` made by mknod) after `setup` (sh, run inside first);
/// prints the run's output, then `@dev` and what /dev holds afterwards, type and name.
fn plan_in_namespace(inv: &str, cfg: &Path, setup: &str) -> (Run, Vec<String>) {
    let script = format!(
        "set -e\n\
         mount -t tmpfs -o mode=0755 claw-test-dev /dev\n\
         mknod -m 0666 /dev/null c 1 3\n\
         mknod -m 0666 /dev/zero c 1 5\n\
         mknod -m 0666 /dev/urandom c 1 9\n\
         mknod -m 0666 /dev/random c 1 8\n\
         {setup}\n\
         set +e\n\
         timeout 60 \"$0\" plan \"$1\" --ssh-config \"$2\" --output json </dev/null\n\
         echo \"@code $?\"\n\
         cd /dev && for f in * .*; do [ -e \"$f\" ] || [ -L \"$f\" ] || continue; \
           case $f in .|..) continue ;; esac; printf '@dev %s %s\\n' \"$(stat -c %F \"$f\")\" \"$f\"; done"
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .arg(bin())
        .arg(inv)
        .arg(cfg)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("CLAW_SSH_CONFIG")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "unshare: {out}\n{err}");
    let code = out
        .lines()
        .find_map(|l| l.strip_prefix("@code "))
        .unwrap_or_else(|| panic!("no exit code:\n{out}\n{err}"))
        .parse()
        .unwrap();
    let dev: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("@dev "))
        .map(String::from)
        .collect();
    let stdout: String = out
        .lines()
        .filter(|l| !l.starts_with('@'))
        .map(|l| format!("{l}\n"))
        .collect();
    (
        Run {
            code,
            stdout,
            stderr: err,
        },
        dev,
    )
}

fn learned(r: &Run) -> Vec<String> {
    r.events()
        .into_iter()
        .filter(|e| e["event"] == "host_key_learned")
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect()
}

const DEV: [&str; 4] = [
    "character special file null",
    "character special file random",
    "character special file urandom",
    "character special file zero",
];

#[test]
fn special_known_hosts_files_are_read_as_empty_and_never_written() {
    let lab = Lab::up("lock-khdev", 1);
    let s = Scratch::new();
    let inv = inventory(&lab, &s);
    let dir = s.dir.path();
    let link = dir.join("kh-link");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let fifo = dir.join("kh-fifo");
    ok_status(Command::new("mkfifo").arg(&fifo).status().unwrap());
    let ro = dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("known_hosts"), "# pinned elsewhere\n").unwrap();

    let ro_setup = format!(
        "mount --bind {d} {d} && mount -o remount,bind,ro {d}",
        d = ro.display()
    );
    let cases = [
        (
            "/dev/null",
            "/dev/null".to_string(),
            "no",
            "",
            "/dev/null is a character device",
        ),
        (
            "a link to /dev/null",
            link.display().to_string(),
            "no",
            "",
            "kh-link is a character device",
        ),
        (
            "/dev/zero",
            "/dev/zero".to_string(),
            "accept-new",
            "",
            "/dev/zero is a character device",
        ),
        (
            "a FIFO",
            fifo.display().to_string(),
            "no",
            "",
            "kh-fifo is a FIFO",
        ),
        (
            "a read-only directory",
            ro.join("known_hosts").display().to_string(),
            "accept-new",
            ro_setup.as_str(),
            "Read-only file system",
        ),
    ];
    for (what, file, policy, setup, why) in cases {
        let cfg = s.file(
            "ssh_config",
            &format!("Host *\n  UserKnownHostsFile {file}\n  StrictHostKeyChecking {policy}\n"),
        );
        let (r, dev) = plan_in_namespace(&inv, &cfg, setup);
        assert_eq!(r.code, 0, "{what}: {}\n{}", r.stdout, r.stderr);
        // Connected: the plan was made (the key accepted for this run), and said so.
        assert!(
            r.events().iter().any(|e| e["event"] == "plan"),
            "{what}: {}",
            r.stdout
        );
        let keys = learned(&r);
        assert_eq!(keys.len(), 1, "{what}: {keys:?}");
        assert!(
            keys[0].contains("accepted for this run only, not recorded") && keys[0].contains(why),
            "{what}: {keys:?}"
        );
        // /dev as it was: the devices still devices, no lock, no temporary file.
        assert_eq!(dev, DEV, "{what}");
    }
    // Outside the namespaces: the link, the FIFO and the read-only directory untouched.
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/dev/null"));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "kh-fifo",
            "kh-link",
            "kh.toml",
            "pb.toml",
            "ro",
            "ssh_config"
        ]
    );
    let ro_names: Vec<String> = std::fs::read_dir(&ro)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ro_names, ["known_hosts"]);
    assert_eq!(
        std::fs::read_to_string(ro.join("known_hosts")).unwrap(),
        "# pinned elsewhere\n"
    );
}

fn ok_status(s: std::process::ExitStatus) {
    assert!(s.success(), "{s}");
}

/// `plan` with `--ssh-config CFG` (not in a namespace: these write regular files only).
fn plan(inv: &str, cfg: &Path) -> Run {
    claw(
        &[
            "plan",
            inv,
            "--ssh-config",
            cfg.to_str().unwrap(),
            "--output",
            "json",
        ],
        &[],
    )
}

#[test]
fn host_key_alias_global_files_and_hashing_are_honoured() {
    let lab = Lab::up("lock-khopts", 1);
    let s = Scratch::new();
    let inv = inventory(&lab, &s);
    let dir = s.dir.path().display().to_string();
    let key = host_key(&lab);
    let address = lab.host("h1").address;

    // HostKeyAlias: the key is found under the alias (and only there).
    s.file("alias_kh", &format!("web-pinned {key}\n"));
    let cfg = s.file(
        "c1",
        &format!(
            "Host h1\n  HostKeyAlias Web-Pinned\n  UserKnownHostsFile {dir}/alias_kh\n  StrictHostKeyChecking yes\n"
        ),
    );
    let r = plan(&inv, &cfg);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let cfg = s.file(
        "c2",
        &format!("Host h1\n  UserKnownHostsFile {dir}/alias_kh\n  StrictHostKeyChecking yes\n"),
    );
    let r = plan(&inv, &cfg);
    assert_eq!(
        r.code, 1,
        "without the alias the host is unknown: {}",
        r.stdout
    );
    // accept-new records under the alias, without port.
    let cfg = s.file(
        "c3",
        &format!(
            "Host h1\n  HostKeyAlias other-alias\n  UserKnownHostsFile {dir}/alias_new\n  StrictHostKeyChecking accept-new\n"
        ),
    );
    let r = plan(&inv, &cfg);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("alias_new")).unwrap(),
        format!("other-alias {key}\n")
    );

    // GlobalKnownHostsFile: read (the key pinned there is known under strict checking) and never
    // written; a different key pinned there is a change that accept-new does not override.
    s.file("global_kh", &format!("{address} {key}\n"));
    let cfg = s.file(
        "c4",
        &format!(
            "Host h1\n  GlobalKnownHostsFile {dir}/global_kh\n  UserKnownHostsFile {dir}/user_kh\n  StrictHostKeyChecking yes\n"
        ),
    );
    let r = plan(&inv, &cfg);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(!s.dir.path().join("user_kh").exists());
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    s.file("global_other", &format!("{address} {other}\n"));
    let cfg = s.file(
        "c5",
        &format!(
            "Host h1\n  GlobalKnownHostsFile {dir}/global_other\n  UserKnownHostsFile {dir}/user_kh\n  StrictHostKeyChecking accept-new\n"
        ),
    );
    let r = plan(&inv, &cfg);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let e = r.host("h1")["error"].as_str().unwrap().to_string();
    assert!(e.contains("CHANGED") && e.contains("global_other:1"), "{e}");
    assert!(!s.dir.path().join("user_kh").exists());
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("global_other")).unwrap(),
        format!("{address} {other}\n")
    );

    // HashKnownHosts yes: the new entry is hashed, and OpenSSH finds it.
    let cfg = s.file(
        "c6",
        &format!(
            "Host h1\n  HashKnownHosts yes\n  UserKnownHostsFile {dir}/hashed\n  StrictHostKeyChecking accept-new\n"
        ),
    );
    let r = plan(&inv, &cfg);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let text = std::fs::read_to_string(s.dir.path().join("hashed")).unwrap();
    assert!(
        text.starts_with("|1|") && !text.contains(&address) && text.ends_with(&format!(" {key}\n")),
        "{text}"
    );
    let found = Command::new("ssh-keygen")
        .args(["-F", &address, "-f"])
        .arg(s.dir.path().join("hashed"))
        .output()
        .unwrap();
    assert!(found.status.success(), "ssh-keygen -F: {found:?}");
    // The next run finds it (strict now).
    let cfg = s.file(
        "c7",
        &format!("Host h1\n  UserKnownHostsFile {dir}/hashed\n  StrictHostKeyChecking yes\n"),
    );
    assert_eq!(plan(&inv, &cfg).code, 0);
}

#[test]
fn unsupported_host_key_options_are_errors_naming_file_and_line() {
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        "name = \"kh\"\n\n[[steps]]\nname = \"d\"\nkind = \"dir\"\npath = \"/opt/kh\"\n",
    );
    let inv = s.file(
        "inv.toml",
        &format!(
            "playbook = {:?}\n\n[hosts.web1]\naddress = \"192.0.2.1\"\n\n[hosts.db1]\naddress = \"192.0.2.2\"\n",
            pb.display().to_string()
        ),
    );
    for (option, fine) in [
        (
            "KnownHostsCommand /usr/bin/printf %H",
            "KnownHostsCommand none",
        ),
        ("VerifyHostKeyDNS ask", "VerifyHostKeyDNS no"),
        ("CheckHostIP yes", "CheckHostIP no"),
        ("RevokedHostKeys /etc/ssh/revoked", "RevokedHostKeys none"),
        (
            "NoHostAuthenticationForLocalhost yes",
            "NoHostAuthenticationForLocalhost no",
        ),
        (
            "HostKeyAlgorithms ssh-ed25519",
            "HostKeyAlgorithms +ssh-rsa",
        ),
    ] {
        let cfg = s.file(
            "ssh_config",
            &format!("# operator file\nHost db1\n  {fine}\nHost *\n  {option}\n"),
        );
        let r = claw(
            &[
                "validate",
                inv.to_str().unwrap(),
                "--ssh-config",
                cfg.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(r.code, 1, "{option}: {}\n{}", r.stdout, r.stderr);
        let out = format!("{}{}", r.stdout, r.stderr);
        // web1 gets the option (line 5); db1's first value is the supported one.
        assert!(
            out.contains(&format!("{}:5", cfg.display()))
                && out.contains(&format!("`{option}`"))
                && out.contains("host `web1`")
                && !out.contains("host `db1`"),
            "{option}: {out}"
        );
    }
}
