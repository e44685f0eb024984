//! Bad input: clear errors naming file and line, all at once, and nothing is contacted.

use crate::support::{Scratch, claw, repo};

fn inventory(s: &Scratch, playbook: &str) -> String {
    s.file(
        "inv.toml",
        &format!("playbook = {playbook:?}\n[defaults]\nuser = \"x\"\n[hosts.a]\naddress = \"127.0.0.1\"\nport = 1\n"),
    )
    .display()
    .to_string()
}

#[test]
fn malformed_toml() {
    let s = Scratch::new();
    let inv = s.file("bad.toml", "[defaults]\nuser = \"x\"\nport = \n");
    let r = claw(&["validate", inv.to_str().unwrap()], &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("bad.toml:3:"), "{}", r.stderr);
}

#[test]
fn unknown_key_and_unknown_kind_reported_together() {
    let s = Scratch::new();
    s.file(
        "pb.toml",
        "name = \"x\"\n\n[[steps]]\nname = \"a\"\nkind = \"dir\"\npath = \"/x\"\nmdoe = \"0755\"\n\n[[steps]]\nname = \"b\"\nkind = \"fiel\"\n",
    );
    let inv = inventory(&s, "pb.toml");
    let r = claw(&["validate", &inv], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("pb.toml:7:1: step `a` (dir): unknown field `mdoe`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("pb.toml:11:1: step `b`: unknown step kind `fiel`"),
        "{}",
        r.stderr
    );
    // The same errors stop plan before any connection (port 1 would refuse).
    let r = claw(&["plan", &inv], &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unknown field `mdoe`"), "{}", r.stderr);
}

#[test]
fn missing_template_variable_names_template_and_line() {
    let s = Scratch::new();
    s.file("pb.toml", "name = \"x\"\n[[steps]]\nname = \"conf\"\nkind = \"template\"\npath = \"/etc/x.conf\"\nsrc = \"x.conf.tera\"\n");
    s.file("templates/x.conf.tera", "a = 1\nb = {{ nope }}\n");
    let inv = inventory(&s, "pb.toml");
    let r = claw(&["validate", &inv], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("x.conf.tera:2: Variable `nope` not found"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("pb.toml:2: step `conf` on host `a`"),
        "{}",
        r.stderr
    );
}

#[test]
fn unknown_inventory_key() {
    let s = Scratch::new();
    let inv = s.file("inv.toml", "[defaults]\nusr = \"x\"\n");
    let r = claw(&["hosts", inv.to_str().unwrap()], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("inv.toml:2:1: unknown field `usr`"),
        "{}",
        r.stderr
    );
}

#[test]
fn apply_without_terminal_needs_yes() {
    let s = Scratch::new();
    s.file("pb.toml", "name = \"x\"\n");
    let inv = inventory(&s, "pb.toml");
    let r = claw(&["apply", &inv], &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
}

#[test]
fn shipped_examples_validate() {
    let inv = repo().join("inventory/example.toml");
    let r = claw(&["validate", inv.to_str().unwrap()], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = claw(&["hosts", inv.to_str().unwrap(), "--limit", "web"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("web-1\tdeploy@192.0.2.10:22"),
        "{}",
        r.stdout
    );
}
