//! `user`, `group` and `cron` on real hosts: created, unchanged on a second apply, drift repaired,
//! removed.

use crate::support::{Lab, Scratch, claw};

const PRESENT: &str = r#"name = "runtime user"

[[steps]]
name = "claw-app group"
kind = "group"
group = "clawapp"
system = true

[[steps]]
name = "claw-app user"
kind = "user"
user = "clawapp"
group = "clawapp"
home = "/opt/claw-app"
shell = "/usr/sbin/nologin"
system = true

[[steps]]
name = "nightly job"
kind = "cron"
entry = "claw-app-nightly"
schedule = "30 3 * * *"
user = "clawapp"
command = "/opt/claw-app/nightly.sh >/dev/null 2>&1"
"#;

#[test]
fn users_groups_and_cron_entries_converge() {
    let lab = Lab::up("t-accounts", 1);
    let s = Scratch::new();
    let present = s.file("present.toml", PRESENT);
    let inv = lab.write_inventory("present.toml", &present, &[]);
    let inv = inv.to_str().unwrap();

    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["changed"], 3, "{}", r.stdout);
    let pw = lab.ssh_ok("h1", "getent passwd clawapp");
    assert!(pw.ends_with(":/opt/claw-app:/usr/sbin/nologin\n"), "{pw}");
    let uid: u32 = pw.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000, "a system account: {pw}");
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "cat /etc/cron.d/claw-app-nightly; stat -c '%a %U' /etc/cron.d/claw-app-nightly"
        ),
        "# managed by claw-provision; changes made here are overwritten\n30 3 * * * clawapp /opt/claw-app/nightly.sh >/dev/null 2>&1\n644 root\n"
    );
    assert!(
        !std::process::Command::new("getent")
            .args(["passwd", "clawapp"])
            .status()
            .unwrap()
            .success(),
        "the machine itself is not changed"
    );

    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.host("h1")["changed"], 0, "second apply: {}", r.stdout);

    lab.ssh_ok("h1", "sudo usermod --shell /bin/bash clawapp");
    let plan = claw(&["plan", inv], &[]);
    assert!(
        plan.stdout
            .contains("~ update  user clawapp: shell /bin/bash -> /usr/sbin/nologin"),
        "{}",
        plan.stdout
    );
    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.host("h1")["changed"], 1, "{}", r.stdout);
    assert!(
        lab.ssh_ok("h1", "getent passwd clawapp")
            .ends_with(":/usr/sbin/nologin\n")
    );

    // Removal: the user first, then its group (`userdel` may already have removed it).
    let absent = r#"name = "runtime user removed"

[[steps]]
name = "claw-app user"
kind = "user"
user = "clawapp"
state = "absent"

[[steps]]
name = "nightly job"
kind = "cron"
entry = "claw-app-nightly"
state = "absent"

[[steps]]
name = "claw-app group"
kind = "group"
group = "clawapp"
state = "absent"
"#;
    let absent = s.file("absent.toml", absent);
    let inv2 = lab.write_inventory("absent.toml", &absent, &[]);
    let r = claw(
        &["apply", inv2.to_str().unwrap(), "--yes", "--output", "json"],
        &[],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["changed"], 3, "{}", r.stdout);
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "getent passwd clawapp; getent group clawapp; ls /etc/cron.d | grep -c claw-app || true"
        ),
        "0\n"
    );
    let r = claw(
        &["apply", inv2.to_str().unwrap(), "--yes", "--output", "json"],
        &[],
    );
    assert_eq!(r.host("h1")["changed"], 0, "{}", r.stdout);
}
