//! Jump hosts: targets that only the bastion can reach (firewalled otherwise), reached through
//! direct-tcpip channels of our own SSH connection to the bastion (no `ssh` process), with the
//! host keys of the bastion and of the targets checked.

use crate::support::{Lab, Scratch, claw, log_len};
use std::process::Command;

fn touch_playbook(s: &Scratch) -> std::path::PathBuf {
    s.file(
        "pb.toml",
        "name = \"touch\"\n[[steps]]\nname = \"marker\"\nkind = \"file\"\npath = \"/srv/jumped\"\ncontent = \"via bastion\\n\"\n",
    )
}

#[test]
fn targets_behind_a_bastion() {
    let lab = Lab::up("t-jump", 3);
    let s = Scratch::new();
    let pb = touch_playbook(&s);
    let bastion = lab.host("h1").address;

    // Only the bastion may reach the targets' sshd.
    for h in ["h2", "h3"] {
        for cmd in [
            "add table inet claw_jump".to_string(),
            "add chain inet claw_jump input { type filter hook input priority 0 ; policy accept ; }"
                .to_string(),
            format!("add rule inet claw_jump input tcp dport 22 ip saddr != {bastion} drop"),
        ] {
            let o = lab.exec(h, &["sh", "-c", &format!("nft '{cmd}'")]);
            assert!(o.status.success(), "nft {cmd} on {h}: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let direct = Command::new("ssh")
        .arg("-F")
        .arg(lab.dir.join("ssh_config"))
        .args([
            "-o",
            "ConnectTimeout=2",
            "-o",
            "BatchMode=yes",
            "h2",
            "true",
        ])
        .output()
        .unwrap();
    assert!(
        !direct.status.success(),
        "the firewall must keep the client away from h2"
    );

    // Inventory `jump`: every target reached through the bastion.
    let inv = lab.write_inventory(
        "jump.toml",
        &pb,
        &[("jump", &format!("\"claw@{bastion}:22\""))],
    );
    let marks: Vec<usize> = ["h2", "h3"]
        .iter()
        .map(|h| log_len(&lab.host(h).sshd_log))
        .collect();
    let bastion_mark = log_len(&lab.host("h1").sshd_log);
    let r = claw(
        &[
            "apply",
            inv.to_str().unwrap(),
            "--limit",
            "h2,h3",
            "--yes",
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for (i, h) in ["h2", "h3"].iter().enumerate() {
        assert_eq!(r.host(h)["state"], "changed", "{}", r.stdout);
        let o = lab.exec(h, &["cat", "/srv/jumped"]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "via bastion\n");
        let log = std::fs::read_to_string(lab.host(h).sshd_log).unwrap();
        assert!(
            log[marks[i]..].contains(&format!("Accepted publickey for claw from {bastion}")),
            "{h} saw the connection come from the bastion:\n{}",
            &log[marks[i]..]
        );
    }

    // Both hosts went through one connection to the bastion (shared, not one per host).
    let log = std::fs::read_to_string(lab.host("h1").sshd_log).unwrap();
    assert_eq!(
        log[bastion_mark..].matches("Accepted publickey").count(),
        1,
        "one bastion connection for the run:\n{}",
        &log[bastion_mark..]
    );

    // The same through ssh_config's ProxyJump (and the bastion's settings from ssh_config).
    let cfg = s.file(
        "ssh_config",
        &format!(
            "Host bastion\n  HostName {bastion}\n  User claw\n  IdentityFile {dir}/id_ed25519\n\
             Host h2 h3\n  ProxyJump bastion\n  UserKnownHostsFile {dir}/known_hosts\n\
             \x20 IdentityFile {dir}/id_ed25519\n  User claw\n  HostName %h-unused\n",
            dir = lab.dir.display()
        ),
    );
    let inv2 = lab.write_inventory("plain.toml", &pb, &[]);
    let r = claw(
        &[
            "plan",
            inv2.to_str().unwrap(),
            "--limit",
            "h2,h3",
            "--ssh-config",
            cfg.to_str().unwrap(),
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.host("h2")["state"], "ok", "converged: {}", r.stdout);

    // The bastion's host key is checked like any other: unknown under strict, refused, and the
    // message names the jump host.
    let kh = std::fs::read_to_string(lab.dir.join("known_hosts")).unwrap();
    let without: String = kh
        .lines()
        .filter(|l| !l.contains(&bastion))
        .map(|l| format!("{l}\n"))
        .collect();
    let kh2 = s.file("known_hosts_no_bastion", &without);
    let inv3 = lab.write_inventory(
        "nokey.toml",
        &pb,
        &[
            ("jump", &format!("\"claw@{bastion}\"")),
            ("known_hosts", &format!("{:?}", kh2.display().to_string())),
        ],
    );
    let r = claw(&["plan", inv3.to_str().unwrap(), "--limit", "h2"], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("jump host"), "{all}");
    assert!(all.contains(&bastion) && all.contains("SHA256:"), "{all}");
    // Every host behind it fails; the bastion is tried once, the others get its reason.
    let mark = log_len(&lab.host("h1").sshd_log);
    let r = claw(
        &[
            "plan",
            inv3.to_str().unwrap(),
            "--limit",
            "h2,h3",
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let errors: Vec<String> = ["h2", "h3"]
        .iter()
        .map(|h| r.host(h)["error"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(errors.iter().all(|e| e.contains("SHA256:")), "{errors:?}");
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.contains("cannot connect through the jump host"))
            .count(),
        1,
        "{errors:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = std::fs::read_to_string(lab.host("h1").sshd_log).unwrap();
    assert_eq!(
        log[mark..].matches("Connection from").count(),
        1,
        "the bastion was tried once:\n{}",
        &log[mark..]
    );

    // A bastion that cannot reach the target: a clear error naming the jump host.
    for cmd in [
        "flush chain inet claw_jump input",
        "add rule inet claw_jump input tcp dport 22 reject with tcp reset",
    ] {
        let o = lab.exec("h3", &["sh", "-c", &format!("nft '{cmd}'")]);
        assert!(
            o.status.success(),
            "nft {cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let r = claw(
        &[
            "plan",
            inv.to_str().unwrap(),
            "--limit",
            "h3",
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("jump host") && all.contains("could not open a connection"),
        "{all}"
    );
}
