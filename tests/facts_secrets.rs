//! Host facts in `when` and templates, generated secrets (stable, masked, guarded),
//! operator-supplied secrets, the handler journal across a failed run, and the OS check.

use crate::support::{Lab, Scratch, claw};

fn playbook(s: &Scratch) -> std::path::PathBuf {
    s.file(
        "pb.toml",
        r#"
name = "facts-secrets"
operator_secrets = ["CLAW_TEST_API_KEY"]

[[steps]]
name = "app dir"
kind = "dir"
path = "/opt/app"

[[steps]]
name = "secrets dir"
kind = "dir"
path = "/opt/app/.secrets"
mode = "0700"

[[steps]]
name = "db password"
kind = "secret"
secret = "db_password"
path = "/opt/app/.secrets/db_password"
guard = "/opt/app/data"

[[steps]]
name = "env file"
kind = "file"
path = "/opt/app/env"
mode = "0600"
content = "DB_PASSWORD={{ secrets.db_password }}\nAPI_KEY={{ secrets.CLAW_TEST_API_KEY }}\nOS={{ facts.os_id }} {{ facts.arch }}\n"

[[steps]]
name = "facts file"
kind = "file"
path = "/opt/app/facts"
content = "{{ facts.os_id }} {{ facts.init }}\n"

[[steps]]
name = "only with systemd"
kind = "file"
path = "/opt/app/systemd-only"
content = "x\n"
when = "facts.init == 'systemd'"

[[steps]]
name = "config"
kind = "file"
path = "/opt/app/config"
content = "version {{ version }}\n"
notify = "mark"

[[steps]]
name = "may fail"
kind = "command"
run = "exit {{ fail }}"
creates = "/opt/app/config-done-{{ version }}"

[[steps]]
name = "done marker"
kind = "command"
run = "touch /opt/app/config-done-{{ version }}"
creates = "/opt/app/config-done-{{ version }}"

[[handlers]]
name = "mark"
kind = "command"
run = "echo ran >> /opt/app/handler-runs"
"#,
    )
}

const API_KEY: &str = "op-key-7f3a9c1e55d2";

#[test]
fn facts_secrets_and_the_handler_journal() {
    let lab = Lab::up("t-facts", 1);
    let s = Scratch::new();
    let pb = playbook(&s);
    let inv = lab.write_inventory("facts.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let env = [("CLAW_TEST_API_KEY", API_KEY)];
    let run = |args: &[&str]| {
        let mut a = vec![args[0], inv];
        a.extend_from_slice(&args[1..]);
        claw(&a, &env)
    };

    // Without the operator's key, nothing starts.
    let r = claw(&["plan", inv, "-e", "version=1", "-e", "fail=0"], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("CLAW_TEST_API_KEY") && r.stderr.contains("pb.toml"),
        "{}",
        r.stderr
    );

    // Plan on a fresh host: the secret would be created, its value shown nowhere.
    let plan = run(&["plan", "-e", "version=1", "-e", "fail=0"]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("secret /opt/app/.secrets/db_password (db_password)"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("(content hidden: sensitive)"),
        "{}",
        plan.stdout
    );
    assert!(!plan.stdout.contains(API_KEY) && !plan.stderr.contains(API_KEY));
    // Facts: light hosts do not run systemd as process 1.
    assert!(
        plan.stdout
            .contains("file `only with systemd` (when: facts.init == 'systemd')"),
        "{}",
        plan.stdout
    );

    // A failed run: `config` changed and notified `mark`, then `may fail` failed.
    let first = run(&["apply", "--yes", "-e", "version=1", "-e", "fail=3"]);
    assert_eq!(first.code, 1, "{}\n{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("may fail"), "{}", first.stdout);
    let secret = lab.ssh_ok("h1", "sudo cat /opt/app/.secrets/db_password");
    let secret = secret.trim().to_string();
    assert_eq!(secret.len(), 64, "32 random bytes in hex");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "sudo stat -c '%a %U' /opt/app/.secrets/db_password /opt/app/env"
        ),
        "600 root\n600 root\n"
    );
    let envf = lab.ssh_ok("h1", "sudo cat /opt/app/env");
    assert_eq!(
        envf,
        format!("DB_PASSWORD={secret}\nAPI_KEY={API_KEY}\nOS=debian x86_64\n")
    );
    assert!(
        lab.ssh_ok("h1", "cat /opt/app/facts")
            .starts_with("debian ")
    );
    assert!(
        !lab.ssh("h1", "test -e /opt/app/handler-runs")
            .status
            .success(),
        "the handler did not run in the failed run"
    );
    for out in [&first.stdout, &first.stderr] {
        assert!(!out.contains(&secret) && !out.contains(API_KEY), "{out}");
    }

    // The next run knows the handler is pending (journaled on the target) and runs it once.
    let plan = run(&["plan", "-e", "version=1", "-e", "fail=0"]);
    assert!(
        plan.stdout
            .contains("pending from an earlier run that did not finish: mark"),
        "{}",
        plan.stdout
    );
    let second = run(&[
        "apply",
        "--yes",
        "-e",
        "version=1",
        "-e",
        "fail=0",
        "--output",
        "json",
    ]);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert_eq!(second.host("h1")["handlers"], serde_json::json!(["mark"]));
    assert_eq!(lab.ssh_ok("h1", "cat /opt/app/handler-runs"), "ran\n");
    assert!(!second.stdout.contains(&secret) && !second.stdout.contains(API_KEY));

    // Converged: the secret is reused, nothing changes, the handler does not run again.
    let third = run(&[
        "apply",
        "--yes",
        "-e",
        "version=1",
        "-e",
        "fail=0",
        "--output",
        "json",
    ]);
    assert_eq!(third.code, 0, "{}\n{}", third.stdout, third.stderr);
    assert_eq!(third.host("h1")["changed"], 0, "{}", third.stdout);
    assert_eq!(third.host("h1")["handlers"], serde_json::json!([]));
    assert_eq!(
        lab.ssh_ok("h1", "sudo cat /opt/app/.secrets/db_password")
            .trim(),
        secret
    );

    // The secret file lost while its data exists: refuse, change nothing.
    lab.ssh_ok(
        "h1",
        "sudo mkdir /opt/app/data && sudo rm /opt/app/.secrets/db_password",
    );
    let before = lab.ssh_ok("h1", "sudo cat /opt/app/env");
    let refused = run(&["apply", "--yes", "-e", "version=1", "-e", "fail=0"]);
    assert_eq!(refused.code, 1, "{}\n{}", refused.stdout, refused.stderr);
    let all = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        all.contains("db password") && all.contains("/opt/app/data") && all.contains("missing"),
        "{all}"
    );
    assert_eq!(lab.ssh_ok("h1", "sudo cat /opt/app/env"), before);
    assert!(
        !lab.ssh("h1", "sudo test -e /opt/app/.secrets/db_password")
            .status
            .success()
    );

    // Without the data, a new value is generated (and the env file follows).
    lab.ssh_ok("h1", "sudo rmdir /opt/app/data");
    let regen = run(&["apply", "--yes", "-e", "version=1", "-e", "fail=0"]);
    assert_eq!(regen.code, 0, "{}\n{}", regen.stdout, regen.stderr);
    let new = lab.ssh_ok("h1", "sudo cat /opt/app/.secrets/db_password");
    assert_ne!(new.trim(), secret);
    assert!(
        lab.ssh_ok("h1", "sudo cat /opt/app/env")
            .contains(new.trim())
    );
    assert!(!regen.stdout.contains(new.trim()));
}

/// On a host that is not Debian's, a step that needs apt is refused before any change; the
/// portable steps run there.
#[test]
fn unsupported_os_is_refused_before_any_change() {
    let lab = Lab::up("t-os", 1);
    let s = Scratch::new();
    let dir = "name = \"os\"\n[[steps]]\nname = \"d\"\nkind = \"dir\"\npath = \"/opt/os-test\"\n";
    let pb = s.file(
        "os.toml",
        &format!("{dir}[[steps]]\nname = \"pkgs\"\nkind = \"apt\"\npackages = [\"curl\"]\n"),
    );
    let inv = lab.write_inventory("os.toml", &pb, &[]);
    // The host's /etc is its own (an overlay): pretend it is Fedora.
    let o = std::process::Command::new("bash")
        .arg(crate::support::repo().join("tests/lab/lab.sh"))
        .args(["exec", "h1", "--name", &lab.name, "--", "sh", "-c"])
        .arg("rm -f /etc/os-release && printf 'ID=fedora\\nVERSION_ID=40\\n' > /etc/os-release")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = claw(&["apply", inv.to_str().unwrap(), "--yes"], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("at pkgs: unsupported host for this step: kind `apt` needs apt and dpkg")
            && all.contains("`fedora` 40"),
        "{all}"
    );
    assert!(!lab.ssh("h1", "test -e /opt/os-test").status.success());
    let pb = s.file("os.toml", dir);
    let inv = lab.write_inventory("os.toml", &pb, &[]);
    let r = claw(&["apply", inv.to_str().unwrap(), "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(lab.ssh("h1", "test -d /opt/os-test").status.success());
}

/// A step whose tool an earlier step installs: "known after apply" in the plan, probed again
/// and applied by `apply`; without an earlier change it is an error.
#[test]
fn a_step_known_only_after_an_earlier_one_is_probed_again_on_apply() {
    let lab = Lab::up("t-later", 1);
    let exec = |cmd: &str| {
        let o = std::process::Command::new("bash")
            .arg(crate::support::repo().join("tests/lab/lab.sh"))
            .args(["exec", "h1", "--name", &lab.name, "--", "sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    // "Uninstall" nft on this host only (its own mount namespace): /dev/null over the binary.
    exec("mount --bind /dev/null /usr/sbin/nft");
    let s = Scratch::new();
    let firewall = "\n[[steps]]\nname = \"firewall\"\nkind = \"firewall\"\nports = [22]\n";
    let install = "\n[[steps]]\nname = \"install nft\"\nkind = \"command\"\nrun = \"umount /usr/sbin/nft\"\nunless = \"command -v nft\"\n";
    let alone = s.file("alone.toml", &format!("name = \"later\"\n{firewall}"));
    let inv_alone = lab.write_inventory("alone.toml", &alone, &[]);
    let r = claw(&["plan", inv_alone.to_str().unwrap()], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("nft is not installed yet") && all.contains("no earlier step"),
        "{all}"
    );

    let both = s.file(
        "both.toml",
        &format!("name = \"later\"\n{install}{firewall}"),
    );
    let inv = lab.write_inventory("both.toml", &both, &[]);
    let inv = inv.to_str().unwrap();
    let plan = claw(&["plan", inv], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("* known after apply firewall"),
        "{}",
        plan.stdout
    );
    let apply = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(apply.code, 0, "{}\n{}", apply.stdout, apply.stderr);
    assert_eq!(apply.host("h1")["changed"], 2, "{}", apply.stdout);
    // One more round trip than the plan's: the firewall's second probe; and the audit record.
    assert_eq!(apply.host("h1")["round_trips"], 5, "{}", apply.stdout);
    assert!(
        lab.ssh_ok("h1", "sudo nft list tables")
            .contains("claw_provision")
    );
    let again = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(again.host("h1")["changed"], 0, "{}", again.stdout);
}
