//! `cert` on a real host: certificate and key uploaded with their modes, a no-op second apply,
//! a mismatched key refused before anything changes, an expiry warning, and never a byte of the
//! key's PEM body in any output (text or JSON).

use crate::support::{Lab, Scratch, claw};
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A lab CA and, for `name`, a key and a chain file (leaf + CA) valid for `days`.
fn issue(dir: &Path, name: &str, days: &str) {
    if !dir.join("ca.pem").exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "365",
                "-subj",
                "/CN=Lab CA",
            ],
        );
    }
    let key = format!("{name}.key");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &key,
        ],
    );
    let csr = format!("{name}.csr");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}.lab"),
        ],
    );
    let leaf = format!("{name}.leaf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &leaf,
            "-days",
            days,
        ],
    );
    let chain = [
        std::fs::read(dir.join(&leaf)).unwrap(),
        std::fs::read(dir.join("ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join(format!("{name}.pem")), chain).unwrap();
}

/// Lines of a key's PEM body (each 64 base64 characters).
fn body_lines(pem_file: &Path) -> Vec<String> {
    std::fs::read_to_string(pem_file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(str::to_string)
        .collect()
}

fn assert_no_key(out: &str, keys: &[Vec<String>]) {
    for k in keys {
        for l in k {
            assert!(!out.contains(&l[..16]), "key material in output:\n{out}");
        }
    }
}

fn playbook(cert: &str, key: &str) -> String {
    format!(
        r#"name = "tls"
hosts = "lab"

[[steps]]
name = "tls dir"
kind = "dir"
path = "/etc/claw-tls"
mode = "0755"

[[steps]]
name = "site certificate"
kind = "cert"
cert = "{cert}"
key = "{key}"
dir = "/etc/claw-tls"
"#
    )
}

#[test]
fn cert_upload_modes_mismatch_and_expiry() {
    let lab = Lab::up("t-cert", 1);
    let s = Scratch::new();
    let d = s.dir.path();
    issue(d, "site", "365");
    issue(d, "other", "365");
    issue(d, "soon", "10");
    let keys: Vec<Vec<String>> = ["site.key", "other.key", "soon.key"]
        .iter()
        .map(|k| body_lines(&d.join(k)))
        .collect();

    let pb = s.file("pb.toml", &playbook("site.pem", "site.key"));
    let inv = lab.write_inventory("cert.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();

    let plan = claw(&["plan", inv], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains(
            "+ create  cert /etc/claw-tls/fullchain.pem + /etc/claw-tls/privkey.pem: fullchain.pem mode 0644, privkey.pem mode 0600"
        ),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("(content hidden: sensitive)"),
        "{}",
        plan.stdout
    );
    assert_no_key(&(plan.stdout.clone() + &plan.stderr), &keys);

    for args in [
        vec!["apply", inv, "--yes"],
        vec!["apply", inv, "--yes", "--output", "json"],
    ] {
        let r = claw(&args, &[]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert_no_key(&(r.stdout.clone() + &r.stderr), &keys);
    }
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "sudo stat -c '%n %a %U %G' /etc/claw-tls/fullchain.pem /etc/claw-tls/privkey.pem"
        ),
        "/etc/claw-tls/fullchain.pem 644 root root\n/etc/claw-tls/privkey.pem 600 root root\n"
    );
    assert_eq!(
        lab.ssh_ok("h1", "sudo cat /etc/claw-tls/privkey.pem")
            .as_bytes(),
        std::fs::read(d.join("site.key")).unwrap().as_slice()
    );
    assert_eq!(
        lab.ssh_ok("h1", "cat /etc/claw-tls/fullchain.pem")
            .as_bytes(),
        std::fs::read(d.join("site.pem")).unwrap().as_slice()
    );
    assert_eq!(
        lab.ssh_ok("h1", "ls -A /etc/claw-tls"),
        "fullchain.pem\nprivkey.pem\n",
        "no temp files left"
    );

    // Second apply: nothing to do.
    let again = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(again.host("h1")["changed"], 0, "{}", again.stdout);

    // The key's mode drifts: repaired without showing anything.
    lab.ssh_ok("h1", "sudo chmod 644 /etc/claw-tls/privkey.pem");
    let drift = claw(&["plan", inv], &[]);
    assert!(
        drift.stdout.contains("privkey.pem mode 0644 -> 0600"),
        "{}",
        drift.stdout
    );
    assert_eq!(claw(&["apply", inv, "--yes"], &[]).code, 0);

    // A key that does not belong to the certificate: refused at plan and apply, nothing changes.
    let before = lab.ssh_ok(
        "h1",
        "sudo sha256sum /etc/claw-tls/fullchain.pem /etc/claw-tls/privkey.pem; sudo stat -c '%i %Y' /etc/claw-tls/*",
    );
    let bad = s.file("bad.toml", &playbook("other.pem", "site.key"));
    let bad_inv = lab.write_inventory("bad.toml", &bad, &[]);
    let bad_inv = bad_inv.to_str().unwrap();
    let want = format!(
        "the certificate in {} does not match the private key in {}",
        d.join("other.pem").display(),
        d.join("site.key").display()
    );
    for args in [
        vec!["plan", bad_inv],
        vec!["plan", bad_inv, "--output", "json"],
        vec!["apply", bad_inv, "--yes"],
    ] {
        let r = claw(&args, &[]);
        assert_ne!(r.code, 0, "{args:?}: {}\n{}", r.stdout, r.stderr);
        let all = r.stdout.clone() + &r.stderr;
        assert!(all.contains(&want), "{args:?}: {all}");
        assert!(all.contains("site certificate"), "names the step: {all}");
        assert!(all.contains("h1"), "names the host: {all}");
        assert_no_key(&all, &keys);
    }
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "sudo sha256sum /etc/claw-tls/fullchain.pem /etc/claw-tls/privkey.pem; sudo stat -c '%i %Y' /etc/claw-tls/*",
        ),
        before,
        "a refused plan changes nothing"
    );

    // A certificate that expires in 10 days: a warning in the plan (text and JSON), and the files
    // are replaced on apply with the key hidden.
    let soon = s.file("soon.toml", &playbook("soon.pem", "soon.key"));
    let soon_inv = lab.write_inventory("soon.toml", &soon, &[]);
    let soon_inv = soon_inv.to_str().unwrap();
    let p = claw(&["plan", soon_inv], &[]);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    assert!(
        p.stdout
            .contains("warning: cert `site certificate`: the certificate in")
            && p.stdout.contains("soon.pem expires in"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout
            .contains("~ update  cert /etc/claw-tls/fullchain.pem + /etc/claw-tls/privkey.pem: fullchain.pem content, privkey.pem content"),
        "{}",
        p.stdout
    );
    assert_no_key(&(p.stdout.clone() + &p.stderr), &keys);
    let r = claw(&["apply", soon_inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_no_key(&(r.stdout.clone() + &r.stderr), &keys);
    assert_eq!(
        lab.ssh_ok("h1", "sudo cat /etc/claw-tls/privkey.pem")
            .as_bytes(),
        std::fs::read(d.join("soon.key")).unwrap().as_slice()
    );
    // Still warned about when nothing changes.
    let p = claw(&["plan", soon_inv], &[]);
    assert!(p.stdout.contains("no changes"), "{}", p.stdout);
    assert!(p.stdout.contains("soon.pem expires in"), "{}", p.stdout);
}
