//! `apply` on a terminal shows the plan and asks; only "y" applies. Run under `script` so that
//! the binary really has a terminal.

use crate::support::{Lab, bin};
use std::io::Write;
use std::process::{Command, Stdio};

fn on_terminal(inv: &str, answer: &str) -> (i32, String) {
    let cmd = format!("{} apply {inv} --limit h1", bin().display());
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    // Typed ahead: the terminal buffers it until the prompt reads it.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn apply_asks_before_changing() {
    let lab = Lab::up("t-confirm", 2);
    let inv = lab.inventory();
    let inv = inv.to_str().unwrap();

    let (code, out) = on_terminal(inv, "n\n");
    assert_eq!(code, 1, "declined is not a success: {out}");
    assert!(
        out.contains("+ create  dir /opt/demo"),
        "the plan is shown: {out}"
    );
    assert!(out.contains("Apply 6 changes on 1 host? [y/N]"), "{out}");
    assert!(out.contains("Cancelled: nothing was changed."), "{out}");
    assert_eq!(lab.ssh_ok("h1", "ls /opt"), "", "declined: nothing changed");

    let (code, out) = on_terminal(inv, "y\n");
    assert_eq!(code, 0, "{out}");
    assert!(lab.ssh_ok("h1", "ls /opt/demo").contains("motd"), "{out}");
    assert_eq!(lab.ssh_ok("h2", "ls /opt"), "", "--limit");

    let (code, out) = on_terminal(inv, "");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Nothing to change."),
        "no question when nothing changes: {out}"
    );
}
