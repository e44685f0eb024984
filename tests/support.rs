//! Test support: starting a lab, running the binary, reading hosts over plain OpenSSH.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_claw-provision"))
}

/// A lab of light hosts, removed on drop. A lab that cannot start fails the test with the reason.
pub(crate) struct Lab {
    pub name: String,
    pub dir: PathBuf,
    pub json: Value,
}

#[derive(Debug, Clone)]
pub(crate) struct LabHost {
    pub name: String,
    pub address: String,
    pub sshd_log: PathBuf,
}

fn lab_sh(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo().join("tests/lab/lab.sh"))
        .args(args)
        .output()
        .expect("run tests/lab/lab.sh")
}

impl Lab {
    /// A lab of light hosts (network namespaces), see `lab.sh up`.
    pub(crate) fn up(name: &str, n: usize) -> Lab {
        Self::start("up", name, n)
    }

    /// A lab of full hosts (containers with their own Docker), see `lab.sh up-full`.
    pub(crate) fn up_full(name: &str, n: usize) -> Lab {
        Self::start("up-full", name, n)
    }

    fn start(command: &str, name: &str, n: usize) -> Lab {
        let out = lab_sh(&[command, &n.to_string(), "--name", name]);
        assert!(
            out.status.success(),
            "the test lab `{name}` could not start (tests/lab/lab.sh {command} {n} --name {name}):\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = repo().join("target").join(name);
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("lab.json")).expect("lab.json"))
                .expect("lab.json parses");
        Lab {
            name: name.to_string(),
            dir,
            json,
        }
    }

    /// Runs a command on a host over plain OpenSSH, feeding `input` on its stdin.
    pub(crate) fn ssh_input(&self, host: &str, cmd: &str, input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new("ssh")
            .arg("-F")
            .arg(self.dir.join("ssh_config"))
            .arg(host)
            .arg(cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ssh");
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("ssh");
        writer.join().unwrap();
        out
    }

    pub(crate) fn hosts(&self) -> Vec<LabHost> {
        self.json["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .map(|h| LabHost {
                name: h["name"].as_str().unwrap().to_string(),
                address: h["address"].as_str().unwrap().to_string(),
                sshd_log: PathBuf::from(h["sshd_log"].as_str().unwrap_or_default()),
            })
            .collect()
    }

    pub(crate) fn host(&self, name: &str) -> LabHost {
        self.hosts()
            .into_iter()
            .find(|h| h.name == name)
            .expect("lab host")
    }

    pub(crate) fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.toml")
    }

    /// Writes an inventory for this lab naming `playbook`, with `[defaults]` values overridden
    /// (`("user", "\"clawpw\"")`: TOML values as text).
    pub(crate) fn write_inventory(
        &self,
        file: &str,
        playbook: &Path,
        overrides: &[(&str, &str)],
    ) -> PathBuf {
        let mut defaults: Vec<(String, String)> = [
            ("user", "\"claw\""),
            ("port", "22"),
            ("identity_file", "\"id_ed25519\""),
            ("known_hosts", "\"known_hosts\""),
            ("host_key_policy", "\"strict\""),
            ("connect_timeout", "10"),
            ("become", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in overrides {
            match defaults.iter_mut().find(|(dk, _)| dk == k) {
                Some(d) => d.1 = v.to_string(),
                None => defaults.push((k.to_string(), v.to_string())),
            }
        }
        defaults.retain(|(_, v)| !v.is_empty());
        let mut out = format!(
            "playbook = {:?}\n\n[defaults]\n",
            playbook.display().to_string()
        );
        for (k, v) in defaults {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out.push_str("\n[groups.lab]\n");
        for h in self.hosts() {
            out.push_str(&format!(
                "\n[hosts.{}]\naddress = {:?}\ngroups = [\"lab\"]\n",
                h.name, h.address
            ));
        }
        let path = self.dir.join(file);
        std::fs::write(&path, out).unwrap();
        path
    }

    /// Runs a command on a host over plain OpenSSH (as `claw`, sudo available).
    pub(crate) fn ssh(&self, host: &str, cmd: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(self.dir.join("ssh_config"))
            .arg(host)
            .arg(cmd)
            .output()
            .expect("ssh")
    }

    /// Like `ssh` but the command must succeed; returns stdout.
    pub(crate) fn ssh_ok(&self, host: &str, cmd: &str) -> String {
        let o = self.ssh(host, cmd);
        assert!(
            o.status.success(),
            "ssh {host} {cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Full lab: makes the lab's signed apt mirror `host`'s package source (its key in
    /// /etc/apt/keyrings, a deb822 sources file), as an operator would by hand.
    pub(crate) fn add_lab_mirror(&self, host: &str) {
        let mirror = self.json["mirror"]["url"].as_str().expect("mirror url");
        let key = std::fs::read(self.json["mirror"]["key"].as_str().expect("mirror key"))
            .expect("mirror key file");
        ok(
            self.ssh_input(
                host,
                "sudo install -d -m 0755 /etc/apt/keyrings && sudo tee /etc/apt/keyrings/claw-lab.asc >/dev/null",
                &key,
            ),
            "mirror key",
        );
        let sources = format!(
            "Types: deb\nURIs: {mirror}\nSuites: trixie\nComponents: main\nSigned-By: /etc/apt/keyrings/claw-lab.asc\n"
        );
        ok(
            self.ssh_input(
                host,
                "sudo tee /etc/apt/sources.list.d/claw-lab.sources >/dev/null",
                sources.as_bytes(),
            ),
            "sources",
        );
    }

    /// Full lab: installs `packages` (Docker's) from the configured sources with plain ssh + apt
    /// and starts the daemon, waiting until it answers.
    pub(crate) fn install_docker(&self, host: &str, packages: &str) {
        ok(
            self.ssh(
                host,
                &format!(
                    "sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q {packages}"
                ),
            ),
            "install docker",
        );
        ok(
            self.ssh(
                host,
                "sudo service docker start || sudo /etc/init.d/docker start; \
                 for i in $(seq 60); do sudo docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done; sudo docker info",
            ),
            "docker daemon",
        );
    }

    /// `lab.sh exec HOST -- ARGS`: root in the host's namespaces, no ssh; the output as it
    /// came (the caller checks the status).
    pub(crate) fn exec(&self, host: &str, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(repo().join("tests/lab/lab.sh"))
            .args(["exec", host, "--name", &self.name, "--"])
            .args(args)
            .output()
            .expect("lab.sh exec")
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Output {
        let o = lab_sh(
            args.iter()
                .copied()
                .chain(["--name", &self.name])
                .collect::<Vec<_>>()
                .as_slice(),
        );
        assert!(
            o.status.success(),
            "lab.sh {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lab_sh(&["down", "--name", &self.name]);
    }
}

/// Asserts that a command succeeded (showing its output if not); returns its stdout.
pub(crate) fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Result of one run of the binary.
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// JSON events of `--output json`.
    pub(crate) fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
            .collect()
    }

    pub(crate) fn summary(&self) -> Value {
        self.events()
            .into_iter()
            .find(|e| e["event"] == "summary")
            .unwrap_or_else(|| panic!("no summary in:\n{}\n{}", self.stdout, self.stderr))
    }

    /// The summary entry of a host.
    pub(crate) fn host(&self, name: &str) -> Value {
        self.summary()["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == name)
            .cloned()
            .expect("host in summary")
    }
}

fn claw_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("CLAW_BECOME_PASSWORD")
        .env_remove("CLAW_SSH_PASSPHRASE")
        // Hermetic: the machine's ~/.ssh/config is not read (tests that want one pass
        // --ssh-config, which wins over the variable).
        .env("CLAW_SSH_CONFIG", "none");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

impl Run {
    fn of(o: std::process::Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub(crate) fn claw(args: &[&str], env: &[(&str, &str)]) -> Run {
    Run::of(
        claw_command(args, env)
            .output()
            .expect("run claw-provision"),
    )
}

/// A run started in the background (to act on the lab while it goes); `wait` collects it.
pub(crate) struct Running(pub std::process::Child);

impl Running {
    pub(crate) fn id(&self) -> u32 {
        self.0.id()
    }

    pub(crate) fn wait(self) -> Run {
        Run::of(self.0.wait_with_output().expect("wait for claw-provision"))
    }
}

pub(crate) fn claw_spawn(args: &[&str], env: &[(&str, &str)]) -> Running {
    Running(
        claw_command(args, env)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start claw-provision"),
    )
}

/// Connections and sessions (= remote round trips) the sshd log recorded since `from` bytes.
pub(crate) fn sshd_counts(log: &Path, from: usize) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let text = &text[from.min(text.len())..];
    let conns = text
        .lines()
        .filter(|l| l.contains("Accepted publickey for"))
        .count();
    let sessions = text
        .lines()
        .filter(|l| l.contains("Starting session:"))
        .count();
    (conns, sessions)
}

pub(crate) fn log_len(log: &Path) -> usize {
    std::fs::metadata(log)
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

/// A playbook file in a temp dir (templates beside it in `templates/`).
pub(crate) struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub(crate) fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }
}
