//! become: steps run through sudo as a non-root login, passwordless or with a password sent on
//! stdin (never on a command line).

use crate::support::{Lab, Scratch, claw};

#[test]
fn become_with_and_without_password() {
    let lab = Lab::up("t-become", 1);
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        r#"name = "become"
[[steps]]
name = "root-owned file"
kind = "file"
path = "/etc/claw-become-test"
content = "hello\n"
mode = "0600"

[[steps]]
name = "who am i"
kind = "command"
run = "id -un > /root/whoami; cat > /root/stdin-seen"
creates = "/root/whoami"
"#,
    );
    // NOPASSWD sudo for `claw` (the lab default).
    let inv = lab.write_inventory("claw.toml", &pb, &[]);
    let r = claw(&["apply", inv.to_str().unwrap(), "--yes"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(lab.ssh_ok("h1", "sudo cat /root/whoami"), "root\n");
    assert_eq!(
        lab.ssh_ok("h1", "sudo stat -c '%a %U' /etc/claw-become-test"),
        "600 root\n"
    );

    // `clawpw` needs a password for sudo.
    let inv = lab.write_inventory("clawpw.toml", &pb, &[("user", "\"clawpw\"")]);
    let r = claw(&["plan", inv.to_str().unwrap()], &[]);
    assert_eq!(r.code, 1, "no password: {}", r.stdout);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("CLAW_BECOME_PASSWORD"),
        "hint: {}{}",
        r.stdout,
        r.stderr
    );
    lab.ssh_ok("h1", "sudo rm /etc/claw-become-test");
    let r = claw(
        &["apply", inv.to_str().unwrap(), "--yes", "--output", "json"],
        &[("CLAW_BECOME_PASSWORD", "labpass")],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.host("h1")["changed"], 1);
    assert_eq!(
        lab.ssh_ok("h1", "sudo cat /etc/claw-become-test"),
        "hello\n"
    );
    assert!(!r.stdout.contains("labpass") && !r.stderr.contains("labpass"));
    // A command that reads stdin sees nothing: the password line never reaches it.
    lab.ssh_ok("h1", "sudo rm /root/whoami");
    let r = claw(
        &["apply", inv.to_str().unwrap(), "--yes"],
        &[("CLAW_BECOME_PASSWORD", "labpass")],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(lab.ssh_ok("h1", "sudo cat /root/stdin-seen"), "");
    assert_eq!(lab.ssh_ok("h1", "sudo cat /root/whoami"), "root\n");
    let r = claw(
        &["plan", inv.to_str().unwrap()],
        &[("CLAW_BECOME_PASSWORD", "not-the-password")],
    );
    assert_eq!(r.code, 1);
    assert!(!format!("{}{}", r.stdout, r.stderr).contains("not-the-password"));

    // Without become, a non-root login cannot write /etc: a clear step failure.
    let inv = lab.write_inventory("nobecome.toml", &pb, &[("become", "false")]);
    lab.ssh_ok("h1", "sudo rm /etc/claw-become-test");
    let r = claw(&["apply", inv.to_str().unwrap(), "--yes"], &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);
}
