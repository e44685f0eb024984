//! One file to install: the static release binary (`scripts/build-static.sh`) runs inside a bare
//! Debian container (`tests/lab/bare/image.sh`: minbase, no Rust toolchain, no OpenSSH, no libssl)
//! and does the whole job from there: `--version`, `init` + `validate`, then `plan`, `apply`, a
//! second `apply` (nothing to change) and `facts` against a light lab host over SSH.
//!
//! Before that, an image holding nothing but the binary (no libc, no /etc, no shell) runs
//! `--version`, `init` and `validate`: nothing else is needed to start.
//!
//! The container has no network but one leg on the lab's bridge (a veth, an address of the lab's
//! subnet, no default route): it reaches the lab host and nothing else. A second inventory host
//! is named, not numbered (`/etc/hosts` of the container): the static binary's name lookup
//! (glibc's built-in `files` source) is exercised too.
//!
//! `scripts/test.sh` builds the binary and the image before the integration tests; this test does
//! not build them (a release build and a root file system take minutes) and fails saying how when
//! one is missing.

use crate::support::{Lab, bin, ok, repo};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

fn static_bin() -> PathBuf {
    std::env::var_os("CLAW_STATIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(format!("target/static/{TRIPLE}/release/claw-provision")))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn version(b: &Path) -> String {
    ok(run(Command::new(b).arg("--version")), "--version")
}

/// A docker image, removed on drop.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// A container and its veth on the lab bridge, removed on drop.
struct Container {
    name: String,
    veth: String,
}

impl Container {
    fn exec(&self, args: &[&str]) -> Output {
        run(Command::new("docker")
            .args(["exec", "-w", "/", &self.name])
            .args(args))
    }

    fn claw(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.exec(&[&["claw-provision"], args].concat());
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
    }
}

#[test]
fn static_binary_in_a_bare_container() {
    let sbin = static_bin();
    assert!(
        sbin.is_file(),
        "the static binary {} is missing: build it with `bash scripts/build-static.sh` \
         (scripts/test.sh does that before the integration tests)",
        sbin.display()
    );
    // Static: no program interpreter (ld-linux), no shared library needed.
    let headers = ok(
        run(Command::new("readelf").arg("-lW").arg(&sbin)),
        "readelf -l",
    );
    assert!(
        !headers.contains("INTERP"),
        "{} has an ELF interpreter:\n{headers}",
        sbin.display()
    );
    let dynamic = ok(
        run(Command::new("readelf").arg("-dW").arg(&sbin)),
        "readelf -d",
    );
    assert!(
        !dynamic.contains("(NEEDED)"),
        "{} needs shared libraries:\n{dynamic}",
        sbin.display()
    );
    assert_eq!(
        version(&sbin),
        version(&bin()),
        "{} was built from another commit than the binary under test: rebuild it with \
         `bash scripts/build-static.sh`",
        sbin.display()
    );
    let tag = ok(
        run(Command::new("bash")
            .arg(repo().join("tests/lab/bare/image.sh"))
            .arg("tag")),
        "bare/image.sh tag",
    );
    let tag = tag.trim();
    assert!(
        run(Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", tag]))
            .status
            .success(),
        "the bare Debian image {tag} is missing: build it with `bash tests/lab/bare/image.sh build` \
         (scripts/test.sh does that before the integration tests)"
    );

    // First in an EMPTY image: the binary alone (no libc, no /etc, no shell, no loader).
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(&sbin, empty.path().join("claw-provision")).unwrap();
    let site = tempfile::tempdir().unwrap();
    let empty_image = Image(format!("sf-empty:{}", std::process::id()));
    ok(
        run(Command::new("sh").arg("-c").arg(format!(
            "tar -C '{}' -c claw-provision | docker import - '{}'",
            empty.path().display(),
            empty_image.0
        ))),
        "docker import (an image holding only the binary)",
    );
    let in_empty = |args: &[&str]| {
        let mut cmd = Command::new("docker");
        cmd.args(["run", "--rm", "--network", "none", "--mount"])
            .arg(format!(
                "type=bind,source={},target=/site",
                site.path().display()
            ))
            .args([&empty_image.0, "/claw-provision"])
            .args(args);
        ok(
            run(&mut cmd),
            &format!("(empty image) claw-provision {args:?}"),
        )
    };
    assert_eq!(in_empty(&["--version"]), version(&bin()));
    in_empty(&["init", "/site/s"]);
    let out = in_empty(&["validate", "/site/s/inventory.toml"]);
    assert!(out.starts_with("ok: 1 hosts"), "{out}");

    let lab = Lab::up("sf-static", 1);
    let h1 = lab.host("h1");
    // 10.213.K.2 → the lab's bridge clawbrK; the container gets 10.213.K.254.
    let k: &str = h1.address.split('.').nth(2).unwrap();
    let ours = format!("10.213.{k}.254");

    // What the container sees, read-only: the key, known_hosts (by address and by name) and the
    // inventory. Paths are absolute; the playbook is the one `init` writes inside the container.
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    std::fs::copy(lab.dir.join("id_ed25519"), dir.join("id_ed25519")).unwrap();
    let kh = std::fs::read_to_string(lab.dir.join("known_hosts")).unwrap();
    let by_name = kh.replace(&format!("{} ", h1.address), "sf-static-h1 ");
    std::fs::write(dir.join("known_hosts"), format!("{kh}{by_name}")).unwrap();
    std::fs::write(
        dir.join("inventory.toml"),
        format!(
            "playbook = \"/site/playbook.toml\"\n\n[defaults]\nuser = \"claw\"\n\
             identity_file = \"/lab/id_ed25519\"\nknown_hosts = \"/lab/known_hosts\"\n\
             become = true\nvars = {{ env = \"lab\", role = \"static\" }}\n\n\
             [hosts.h1]\naddress = \"{}\"\n\n[hosts.byname]\naddress = \"sf-static-h1\"\n",
            h1.address
        ),
    )
    .unwrap();

    let name = format!("sf-static-{}", std::process::id());
    let c = Container {
        veth: format!("sfs{}", std::process::id() % 100_000),
        name: name.clone(),
    };
    let mount =
        |from: &Path, to: &str| format!("type=bind,source={},target={to},readonly", from.display());
    ok(
        run(Command::new("docker").args([
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            "--add-host",
            &format!("sf-static-h1:{}", h1.address),
            "--mount",
            &mount(&sbin, "/usr/local/bin/claw-provision"),
            "--mount",
            &mount(dir, "/lab"),
            tag,
            "sleep",
            "infinity",
        ])),
        "docker run (the bare image)",
    );
    let pid = ok(
        run(Command::new("docker").args(["inspect", "--format", "{{.State.Pid}}", &name])),
        "docker inspect",
    );
    let pid = pid.trim();
    let ip = |args: &[&str]| ok(run(Command::new("ip").args(args)), &format!("ip {args:?}"));
    let ns_ip = |args: &[&str]| {
        ok(
            run(Command::new("nsenter")
                .args(["-t", pid, "-n", "ip"])
                .args(args)),
            &format!("(container) ip {args:?}"),
        )
    };
    ip(&[
        "link", "add", &c.veth, "type", "veth", "peer", "name", "eth0", "netns", pid,
    ]);
    ip(&[
        "link",
        "set",
        &c.veth,
        "master",
        &format!("clawbr{k}"),
        "up",
    ]);
    ns_ip(&["addr", "add", &format!("{ours}/24"), "dev", "eth0"]);
    ns_ip(&["link", "set", "eth0", "up"]);
    ns_ip(&["link", "set", "lo", "up"]);
    let routes = ns_ip(&["route", "show"]);
    assert!(
        !routes.contains("default") && routes.lines().count() == 1,
        "the container must reach the lab's subnet only:\n{routes}"
    );

    // A bare system: no Rust toolchain, no OpenSSH client, not even apt.
    let o = c.exec(&[
        "sh",
        "-c",
        "for p in cargo rustc ssh apt; do command -v $p && exit 1; done; \
         . /etc/os-release && echo $ID $VERSION_ID",
    ]);
    let os = ok(o, "the container is bare");
    assert!(os.starts_with("debian "), "{os}");

    let (code, out, err) = c.claw(&["--version"]);
    assert_eq!((code, out.clone()), (0, version(&bin())), "{err}");

    let (code, out, err) = c.claw(&["init", "/site"]);
    assert_eq!(code, 0, "init: {out}\n{err}");
    let (code, out, err) = c.claw(&["validate", "/site/inventory.toml"]);
    assert_eq!(code, 0, "validate: {out}\n{err}");
    assert!(out.starts_with("ok: 1 hosts"), "{out}");

    let inv = "/lab/inventory.toml";
    let (code, out, err) = c.claw(&["plan", inv, "--detailed-exitcode"]);
    assert_eq!(code, 2, "plan (changes pending): {out}\n{err}");
    assert!(out.contains("/opt/app/app.conf"), "{out}");
    let (code, out, err) = c.claw(&["apply", inv, "--yes", "--limit", "h1"]);
    assert_eq!(code, 0, "apply: {out}\n{err}");
    let conf = lab.ssh_ok("h1", "cat /opt/app/app.conf");
    assert!(conf.contains("role = \"static\""), "{conf}");
    let (code, out, err) = c.claw(&[
        "apply",
        inv,
        "--yes",
        "--limit",
        "h1",
        "--detailed-exitcode",
    ]);
    assert_eq!(code, 0, "second apply changes nothing: {out}\n{err}");

    // Both entries, one of them by name (the container's /etc/hosts): the same machine.
    let (code, out, err) = c.claw(&["facts", inv]);
    assert_eq!(code, 0, "facts: {out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kernel = lab.ssh_ok("h1", "uname -r");
    for h in ["h1", "byname"] {
        assert_eq!(doc[h]["facts"]["kernel"], kernel.trim(), "{doc}");
    }
}

/// The firewall's lock-out guard has a test-only switch, `CLAW_PROVISION_TEST_ALLOW_SSH_LOCKOUT`,
/// that only the tests' build looks at (cargo feature `test-lockout-switch`, which
/// scripts/build-static.sh does not enable): with it set, the static release binary still refuses a
/// ruleset that closes the SSH port, and the tests' build accepts it. `validate` renders every
/// step offline, so no host is needed.
#[test]
fn the_static_binary_ignores_the_test_only_lockout_switch() {
    const SWITCH: &str = "CLAW_PROVISION_TEST_ALLOW_SSH_LOCKOUT";
    let sbin = static_bin();
    assert!(
        sbin.is_file(),
        "the static binary {} is missing: build it with `bash scripts/build-static.sh`",
        sbin.display()
    );
    assert_eq!(
        version(&sbin),
        version(&bin()),
        "{} was built from another commit: rebuild it with `bash scripts/build-static.sh`",
        sbin.display()
    );
    if !cfg!(feature = "test-lockout-switch") {
        panic!(
            "the binary under test must be the tests' build: cargo test --features test-lockout-switch"
        );
    }
    let site = tempfile::tempdir().unwrap();
    let pb = site.path().join("fw.toml");
    std::fs::write(
        &pb,
        "name = \"fw\"\n\n[[steps]]\nname = \"firewall\"\nkind = \"firewall\"\nports = [80]\n",
    )
    .unwrap();
    let inv = site.path().join("inventory.toml");
    std::fs::write(
        &inv,
        format!(
            "playbook = \"{}\"\n\n[hosts.h1]\naddress = \"127.0.0.1\"\nport = 22\n",
            pb.display()
        ),
    )
    .unwrap();
    let validate = |b: &Path, switch: bool| {
        let mut cmd = Command::new(b);
        cmd.arg("validate").arg(&inv).env_remove(SWITCH);
        if switch {
            cmd.env(SWITCH, "1");
        }
        let o = run(&mut cmd);
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let refused = "this ruleset would block SSH port 22";
    for switch in [false, true] {
        let (code, out) = validate(&sbin, switch);
        assert_eq!(code, Some(1), "static binary, switch {switch}: {out}");
        assert!(
            out.contains(refused),
            "static binary, switch {switch}: {out}"
        );
    }
    let (code, out) = validate(&bin(), false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(refused), "{out}");
    let (code, out) = validate(&bin(), true);
    assert_eq!(code, Some(0), "the tests' build with the switch: {out}");
}
