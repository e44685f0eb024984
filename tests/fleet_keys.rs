//! Host keys at scale: `known-hosts` prints or pins the fleet's keys (never replacing a changed
//! one), and `accept-new` shows every new fingerprint in one summary.

use crate::support::{Lab, Scratch, claw};

fn touch_playbook(s: &Scratch) -> std::path::PathBuf {
    s.file(
        "pb.toml",
        "name = \"touch\"\n[[steps]]\nname = \"marker\"\nkind = \"file\"\npath = \"/srv/marker\"\ncontent = \"x\\n\"\n",
    )
}

/// The base64 key of `address` in the lab's own known_hosts file.
fn lab_key(lab: &Lab, address: &str) -> String {
    let kh = std::fs::read_to_string(lab.dir.join("known_hosts")).unwrap();
    kh.lines()
        .find(|l| l.split(' ').next() == Some(address))
        .and_then(|l| l.split(' ').nth(2))
        .unwrap_or_else(|| panic!("{address} in the lab's known_hosts:\n{kh}"))
        .to_string()
}

#[test]
fn known_hosts_command_prints_and_pins() {
    let lab = Lab::up("t-fleetkeys", 3);
    let s = Scratch::new();
    let pb = touch_playbook(&s);
    let kh = s.dir.path().join("fleet_known_hosts");
    let inv = lab.write_inventory(
        "fleet.toml",
        &pb,
        &[("known_hosts", &format!("{:?}", kh.display().to_string()))],
    );
    let inv = inv.to_str().unwrap();

    // Printing: one known_hosts line per host, marked new; nothing written.
    let r = claw(&["known-hosts", inv], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for h in lab.hosts() {
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{} ", h.address)))
            .unwrap_or_else(|| panic!("a line for {}:\n{}", h.name, r.stdout));
        assert_eq!(
            line.split(' ').nth(2),
            Some(lab_key(&lab, &h.address).as_str())
        );
        assert!(
            r.stdout.contains(&format!(
                "# {} {}:22 ssh-ed25519 SHA256:",
                h.name, h.address
            )),
            "{}",
            r.stdout
        );
    }
    assert_eq!(r.stdout.matches("(new)").count(), 3, "{}", r.stdout);
    assert!(!kh.exists(), "printing writes nothing");

    // Pinning records them; a strict plan then connects.
    let r = claw(&["known-hosts", inv, "--pin"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.matches("recorded in").count(), 3, "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(&kh).unwrap().lines().count(), 3);
    let plan = claw(&["plan", inv], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let r = claw(&["known-hosts", inv, "--pin", "--output", "json"], &[]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout.matches("\"state\":\"known\"").count(),
        3,
        "{}",
        r.stdout
    );

    // A changed key is reported and never replaced; the exit status says so.
    lab.cmd(&["rekey", "h2"]);
    let before = std::fs::read(&kh).unwrap();
    let r = claw(&["known-hosts", inv, "--pin"], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("CHANGED"), "{}", r.stdout);
    assert!(r.stdout.contains("was not replaced"), "{}", r.stdout);
    assert_eq!(std::fs::read(&kh).unwrap(), before, "the file is unchanged");
}

#[test]
fn accept_new_shows_one_summary() {
    let lab = Lab::up("t-acceptnew", 3);
    let s = Scratch::new();
    let pb = touch_playbook(&s);
    let kh = s.dir.path().join("empty_known_hosts");
    let inv = lab.write_inventory(
        "accept.toml",
        &pb,
        &[
            ("known_hosts", &format!("{:?}", kh.display().to_string())),
            ("host_key_policy", "\"accept-new\""),
        ],
    );
    let r = claw(&["plan", inv.to_str().unwrap()], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.matches("New host keys recorded").count(),
        1,
        "one block: {}",
        r.stdout
    );
    assert!(r.stdout.contains("3 in all"), "{}", r.stdout);
    let block = r.stdout.split("New host keys recorded").nth(1).unwrap();
    for h in lab.hosts() {
        assert!(
            block.contains(&format!("{}:22 ssh-ed25519 SHA256:", h.address)),
            "{}",
            r.stdout
        );
    }
    // Known now: a second run shows no block.
    let r = claw(&["plan", inv.to_str().unwrap()], &[]);
    assert!(!r.stdout.contains("New host keys"), "{}", r.stdout);

    // JSON: one event per learned key.
    std::fs::remove_file(&kh).unwrap();
    let r = claw(&["plan", inv.to_str().unwrap(), "--output", "json"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let learned = r
        .events()
        .into_iter()
        .filter(|e| e["event"] == "host_key_learned")
        .count();
    assert_eq!(learned, 3, "{}", r.stdout);
}
