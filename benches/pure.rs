//! `cargo bench`: the pure, CPU-bound parts of a claw-ai run, per number of hosts — loading the
//! inventory and playbook, and `prepare` (every step of every host rendered and checked offline,
//! templates included: the client's work before any connection), and building each host's probe
//! script. The network side is measured by bench/run.sh.

use claw_provision::inventory::Inventory;
use claw_provision::playbook::Playbook;
use claw_provision::testing::{self as run, ProbeScript};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn main() {
    divan::main();
}

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A scratch directory with the lab's kind of TLS files (made once with openssl).
fn tls_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("claw-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let ok = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "30", "-subj", "/CN=claw-ai.lab"])
            .arg("-keyout")
            .arg(d.join("privkey.pem"))
            .arg("-out")
            .arg(d.join("fullchain.pem"))
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl could not make the TLS files");
        d
    })
}

fn inventory_text(n: usize) -> String {
    let mut s = format!(
        "playbook = \"{REPO}/playbooks/claw-ai.toml\"\n\n[defaults]\nuser = \"claw\"\nbecome = true\n\
         vars = {{ tls_dir = \"{}\" }}\n\n[groups.lab]\n[groups.backend]\n",
        tls_dir().display()
    );
    for i in 1..=n {
        s.push_str(&format!(
            "\n[hosts.h{i}]\naddress = \"10.0.{}.{}\"\ngroups = [\"lab\", \"backend\"]\n",
            i / 250,
            i % 250 + 1
        ));
    }
    s
}

fn load(n: usize) -> (Inventory, Playbook) {
    // SAFETY: set before any thread reads the environment (divan runs benches one at a time).
    unsafe {
        std::env::set_var("ZHIPUAI_API_KEY", "bench");
        std::env::set_var("PINECONE_API_KEY", "bench");
    }
    let inv = Inventory::parse(Path::new("/bench/inventory.toml"), &inventory_text(n)).unwrap();
    let pb = Playbook::load(&Path::new(REPO).join("playbooks/claw-ai.toml")).unwrap();
    (inv, pb)
}

#[divan::bench(args = [1, 20, 200])]
fn load_inventory_and_playbook(b: divan::Bencher, n: usize) {
    let text = inventory_text(n);
    b.bench(|| {
        let inv = Inventory::parse(Path::new("/bench/inventory.toml"), &text).unwrap();
        let pb = Playbook::load(&Path::new(REPO).join("playbooks/claw-ai.toml")).unwrap();
        (inv, pb)
    });
}

#[divan::bench(args = [1, 20, 200])]
fn prepare_every_host(b: divan::Bencher, n: usize) {
    let (inv, pb) = load(n);
    let hosts = inv.select("all").unwrap();
    b.bench(|| run::prepare(&inv, &pb, &hosts, &[]).unwrap());
}

#[divan::bench(args = [1, 20, 200])]
fn probe_scripts(b: divan::Bencher, n: usize) {
    let (inv, pb) = load(n);
    let hosts = inv.select("all").unwrap();
    let prepared = run::prepare(&inv, &pb, &hosts, &[]).unwrap();
    b.bench(|| {
        prepared
            .iter()
            .map(|p| {
                let mut probe = ProbeScript::for_host(&p.playbook.name);
                for s in &p.steps {
                    if let Some(d) = &s.probe_desired {
                        d.probe(&mut probe);
                    }
                }
                probe.script().len()
            })
            .sum::<usize>()
    });
}
