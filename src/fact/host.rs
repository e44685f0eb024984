//! Host facts (OS, architecture, init system, Docker and Compose) and the handler journal,
//! read by every probe in the same round trip as the steps' facts.
//!
//! The facts are available to `when` expressions and templates as `facts.*`.

use super::FactError;
use serde_json::{Value, json};

/// Shell function: what the probe knows of Docker, asked once per script (the facts, the
/// `compose` and the `image` probes share it): `claw_docker` (non-empty: the CLI is there),
/// `claw_dv` (the daemon's version, empty when it does not answer) and `claw_cv` (the Compose
/// v2 plugin's version, empty when missing). Docker is asked with a timeout (10 s): a hung daemon
/// must not hang the probe. Called once at the top level of a script that needs it (the compose
/// and image probes run in subshells, which would not keep the answer).
pub(crate) const DOCKER_FUNCTION: &str = r#"claw_docker_facts() {
  [ -z "${claw_docker_asked:-}" ] || return 0
  claw_docker_asked=1; claw_docker=; claw_dv=; claw_cv=
  command -v docker >/dev/null 2>&1 || return 0
  claw_docker=1
  # The daemon is asked only when the CLI could reach one: its socket, DOCKER_HOST or a CLI
  # configuration (contexts) — a docker process costs tens of ms.
  c="${DOCKER_CONFIG:-${HOME:-/root}/.docker}"
  if [ -S /var/run/docker.sock ] || [ -n "${DOCKER_HOST:-}" ] || [ -f "$c/config.json" ]; then
    claw_dv=$(timeout 10 docker version --format '{{.Server.Version}}' 2>/dev/null </dev/null)
  fi
  # Compose v2 is a CLI plugin: asked when its file is in one of the CLI's plugin directories
  # (or the CLI configuration may name others).
  for d in "$c" /usr/local/lib/docker /usr/local/libexec/docker /usr/lib/docker /usr/libexec/docker; do
    [ -x "$d/cli-plugins/docker-compose" ] || [ -f "$c/config.json" ] || continue
    claw_cv=$(timeout 10 docker compose version --short 2>/dev/null </dev/null); break
  done
  claw_dv=${claw_dv%%[!-0-9A-Za-z.+~_:]*}; claw_cv=${claw_cv%%[!-0-9A-Za-z.+~_:]*}
}
"#;

/// The sh snippet that prints the host's facts: `@fact-KEY<TAB>value` lines (needs
/// [`DOCKER_FUNCTION`]). Shell builtins where they do: every process costs the host a fork.
pub(crate) const FACTS: &str = r#"( . /etc/os-release 2>/dev/null
  printf '@fact-os\t%s\t%s\t%s\t%s\n' "${ID:-}" "${VERSION_ID:-}" "${VERSION_CODENAME:-}" "${ID_LIKE:-}" )
u=$(uname -nrm)
printf '@fact-arch\t%s\t%s\n' "${u##* }" "$(dpkg --print-architecture 2>/dev/null)"
u=${u% *}
printf '@fact-kernel\t%s\n' "${u##* }"
if [ -d /run/systemd/system ]; then printf '@fact-init\tsystemd\n'
else c=; IFS= read -r c 2>/dev/null </proc/1/comm; printf '@fact-init\t%s\n' "$c"; fi
printf '@fact-hostname\t%s\n' "${u% *}"
claw_docker_facts
if [ -n "$claw_docker" ]; then printf '@fact-docker\tyes\t%s\n@fact-compose\t%s\n' "$claw_dv" "$claw_cv"
else printf '@fact-docker\tno\t\n@fact-compose\t\n'; fi
c=; for t in useradd groupadd getent git curl nft setpriv; do command -v $t >/dev/null 2>&1 && c="$c $t"; done
printf '@fact-commands\t%s\n' "${c# }"
"#;

/// The commands [`FACTS`] looks for (`@fact-commands`, the ones present): those a step kind
/// needs that neither POSIX nor BusyBox give (`Need::Command` of `resource::kind`).
pub(crate) const ASKED_COMMANDS: &[&str] = &[
    "useradd", "groupadd", "getent", "git", "curl", "nft", "setpriv",
];

/// The sh snippet of the `facts` command only (plan and apply do not need it): memory, CPUs
/// online and uptime as ONE `@sys<TAB>MEM_TOTAL_KB<TAB>MEM_AVAILABLE_KB<TAB>CPUS<TAB>UPTIME` record,
/// read from /proc and /sys with shell builtins (no process). CPUS is the kernel's list of online
/// CPUs (`0-3,6`), counted by [`SystemFacts::parse`]; a value the host does not offer is empty.
pub(crate) const SYSTEM: &str = r#"m=; a=
while read -r k v _; do
  case $k in MemTotal:) m=$v ;; MemAvailable:) a=$v; break ;; esac
done 2>/dev/null </proc/meminfo
c=; IFS= read -r c 2>/dev/null </sys/devices/system/cpu/online
t=; read -r t _ 2>/dev/null </proc/uptime
printf '@sys\t%s\t%s\t%s\t%s\n' "$m" "$a" "$c" "${t%%.*}"
"#;

/// What the [`SYSTEM`] snippet reported (None: the host does not offer it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemFacts {
    pub mem_total_kb: Option<u64>,
    pub mem_available_kb: Option<u64>,
    pub cpus: Option<u64>,
    pub uptime_s: Option<u64>,
}

impl SystemFacts {
    /// Parses the fields of the `@sys` record.
    pub fn parse(f: &[&str]) -> Result<Self, FactError> {
        let [m, a, c, t] = f else {
            return Err(FactError(format!(
                "bad system record: {} fields, 4 expected",
                f.len()
            )));
        };
        let num = |what: &str, v: &str| -> Result<Option<u64>, FactError> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            v.parse()
                .map(Some)
                .map_err(|_| FactError(format!("bad {what} `{v}`")))
        };
        Ok(SystemFacts {
            mem_total_kb: num("MemTotal", m)?,
            mem_available_kb: num("MemAvailable", a)?,
            cpus: count_cpus(c.trim())?,
            uptime_s: num("uptime", t)?,
        })
    }
}

/// The number of CPUs in a kernel CPU list (`0-3,6,8-9` → 7); None for an empty list.
fn count_cpus(list: &str) -> Result<Option<u64>, FactError> {
    if list.is_empty() {
        return Ok(None);
    }
    let bad = || FactError(format!("bad CPU list `{list}`"));
    let mut n = 0u64;
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: u64 = lo.parse().map_err(|_| bad())?;
        let hi: u64 = hi.parse().map_err(|_| bad())?;
        n += hi.checked_sub(lo).ok_or_else(bad)? + 1;
    }
    Ok(Some(n))
}

/// What the probe learned about the host itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub os_id: String,
    pub os_version: String,
    pub os_codename: String,
    pub os_like: String,
    /// `uname -m` (x86_64, aarch64).
    pub arch: String,
    /// Debian's name of the architecture (amd64, arm64), empty without dpkg.
    pub deb_arch: String,
    /// `systemd`, or the name of process 1.
    pub init: String,
    pub hostname: String,
    /// `uname -r`: the running kernel's release.
    pub kernel: String,
    /// The docker CLI is installed.
    pub docker: bool,
    /// The daemon's version; empty when it does not answer.
    pub docker_version: String,
    /// `docker compose` (v2 plugin) version; empty when missing.
    pub compose_version: String,
    /// Which of [`ASKED_COMMANDS`] the host has (not part of `facts.*`).
    pub commands: Vec<String>,
    seen: u8,
}

const SEEN_ALL: u8 = 0b111111;

/// A host whose OS claw-provision does not manage (not of the Debian family): `description`
/// says what it runs (`HostFacts::os_description`).
#[derive(Debug, thiserror::Error)]
#[error(
    "unsupported OS: the host runs {description}; claw-provision manages Debian and Ubuntu (and \
     their derivatives)"
)]
pub struct UnsupportedOs {
    pub description: String,
}

impl HostFacts {
    /// Parses one `@fact-KEY` record (`tag` without `fact-`).
    pub fn parse_line(&mut self, tag: &str, f: &[&str]) -> Result<(), FactError> {
        let field = |i: usize| f.get(i).copied().unwrap_or("").trim().to_string();
        match tag {
            "os" => {
                self.os_id = field(0);
                self.os_version = field(1);
                self.os_codename = field(2);
                self.os_like = field(3);
                self.seen |= 1;
            }
            "arch" => {
                self.arch = field(0);
                self.deb_arch = field(1);
                self.seen |= 2;
            }
            "init" => {
                self.init = field(0);
                self.seen |= 4;
            }
            "hostname" => {
                self.hostname = field(0);
                self.seen |= 8;
            }
            "docker" => {
                self.docker = match field(0).as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(FactError("bad docker fact".into())),
                };
                self.docker_version = field(1);
                self.seen |= 16;
            }
            "compose" => self.compose_version = field(0),
            "commands" => {
                self.commands = field(0).split_whitespace().map(str::to_string).collect();
            }
            "kernel" => {
                self.kernel = field(0);
                self.seen |= 32;
            }
            _ => return Err(FactError(format!("unknown fact `{tag}`"))),
        }
        Ok(())
    }

    /// Whether every fact was reported.
    pub fn complete(&self) -> bool {
        self.seen == SEEN_ALL
    }

    /// Refuses an OS claw-provision does not manage (before any change).
    pub fn check_supported(&self) -> Result<(), UnsupportedOs> {
        let debian_like = |s: &str| s.split_whitespace().any(|w| w == "debian" || w == "ubuntu");
        if debian_like(&self.os_id) || debian_like(&self.os_like) {
            return Ok(());
        }
        Err(UnsupportedOs {
            description: self.os_description(),
        })
    }

    /// The OS as the messages name it: `` `fedora` 40 ``, or that it is unknown.
    pub fn os_description(&self) -> String {
        if self.os_id.is_empty() {
            "an unknown OS (no ID in /etc/os-release)".to_string()
        } else {
            format!("`{}` {}", self.os_id, self.os_version)
        }
    }

    /// The `facts` object of the template context.
    pub fn to_json(&self) -> Value {
        json!({
            "os_id": self.os_id,
            "os_version": self.os_version,
            "os_codename": self.os_codename,
            "os_like": self.os_like,
            "arch": self.arch,
            "deb_arch": self.deb_arch,
            "init": self.init,
            "hostname": self.hostname,
            "kernel": self.kernel,
            "docker": self.docker,
            "docker_version": self.docker_version,
            "compose": !self.compose_version.is_empty(),
            "compose_version": self.compose_version,
        })
    }

    /// Stand-in facts used to check playbooks offline (before any host is reached): a typical
    /// Debian 12 server with systemd and no Docker yet.
    pub fn placeholder() -> Self {
        HostFacts {
            os_id: "debian".into(),
            os_version: "12".into(),
            os_codename: "bookworm".into(),
            os_like: String::new(),
            arch: "x86_64".into(),
            deb_arch: "amd64".into(),
            init: "systemd".into(),
            hostname: "placeholder".into(),
            kernel: "6.1.0".into(),
            docker: false,
            docker_version: String::new(),
            compose_version: String::new(),
            commands: ASKED_COMMANDS.iter().map(|c| (*c).to_string()).collect(),
            seen: SEEN_ALL,
        }
    }
}

/// Where the handler journal of a playbook lives on the target: one empty file per pending
/// handler, created before the step that notifies it changes anything and removed when the
/// handler succeeded, so a notification survives a failed or interrupted run.
pub(crate) fn journal_dir(playbook: &str) -> String {
    format!("/var/lib/claw-provision/handlers/{}", encode_name(playbook))
}

/// A file name for any handler or playbook name: bytes outside `[A-Za-z0-9._-]` as `%XX`
/// (and a leading `.` too, so no name is hidden or is `.`/`..`).
pub(crate) fn encode_name(name: &str) -> String {
    let mut s = String::new();
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The inverse of [`encode_name`]; None for a name it did not produce.
pub(crate) fn decode_name(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The snippet that lists the journal: `@journal<TAB>encoded-name` lines.
pub(crate) fn journal_command(playbook: &str) -> String {
    format!(
        "for f in {}/*; do [ -f \"$f\" ] && printf '@journal\\t%s\\n' \"${{f##*/}}\"; done\n",
        crate::quote::quote(&journal_dir(playbook))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(out: &str) -> Result<HostFacts, FactError> {
        let mut f = HostFacts::default();
        for l in out.lines() {
            let rest = l.strip_prefix("@fact-").unwrap();
            let mut it = rest.split('\t');
            let tag = it.next().unwrap();
            f.parse_line(tag, &it.collect::<Vec<_>>())?;
        }
        Ok(f)
    }

    #[test]
    fn runs_locally_and_parses() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{DOCKER_FUNCTION}{FACTS}"))
            .output()
            .unwrap();
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert!(f.complete());
        let uname = |o: &str| {
            let out = std::process::Command::new("uname").arg(o).output().unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        assert_eq!(f.arch, uname("-m"));
        assert_eq!(f.hostname, uname("-n"));
        assert_eq!(f.kernel, uname("-r"));
        assert!(!f.init.is_empty());
        // The machine running the tests has getent (glibc) and no command it was not asked about.
        assert!(f.commands.iter().any(|c| c == "getent"), "{f:?}");
        assert!(
            f.commands
                .iter()
                .all(|c| ASKED_COMMANDS.contains(&c.as_str())),
            "{f:?}"
        );
        // The machine running the tests has Docker (the lab needs it): its daemon answers.
        assert!(f.docker && !f.docker_version.is_empty(), "{f:?}");
    }

    #[test]
    fn system_facts_run_locally() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(SYSTEM)
            .output()
            .unwrap();
        assert!(out.stderr.is_empty(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<&str> = text.trim_end().split('\t').collect();
        assert_eq!(fields[0], "@sys", "{text}");
        let s = SystemFacts::parse(&fields[1..]).unwrap();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total: u64 = meminfo
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(s.mem_total_kb, Some(total));
        assert!(s.mem_available_kb.unwrap() <= total, "{s:?}");
        let cpus = std::thread::available_parallelism().unwrap().get() as u64;
        assert!(s.cpus.unwrap() >= cpus, "{s:?}");
        assert!(s.uptime_s.is_some(), "{s:?}");
    }

    #[test]
    fn system_record() {
        let s = SystemFacts::parse(&["2048000", "1024000", "0-3,6,8-9", "3600"]).unwrap();
        assert_eq!(
            s,
            SystemFacts {
                mem_total_kb: Some(2048000),
                mem_available_kb: Some(1024000),
                cpus: Some(7),
                uptime_s: Some(3600),
            }
        );
        assert_eq!(
            SystemFacts::parse(&["", "", "", ""]).unwrap(),
            SystemFacts::default()
        );
        assert_eq!(
            SystemFacts::parse(&["1", "1", "0", "1"]).unwrap().cpus,
            Some(1)
        );
        for bad in [
            &["x", "", "", ""][..],
            &["", "", "3-1", ""],
            &["", "", "0-", ""],
            &["", "", "", ""][..3],
        ] {
            assert!(SystemFacts::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn supported_systems() {
        let cases = [
            ("@fact-os\tdebian\t12\tbookworm\t\n", true),
            ("@fact-os\tubuntu\t24.04\tnoble\tdebian\n", true),
            ("@fact-os\tlinuxmint\t22\twilma\tubuntu debian\n", true),
            ("@fact-os\tfedora\t40\t\t\n", false),
            ("@fact-os\talpine\t3.20\t\t\n", false),
            ("@fact-os\t\t\t\t\n", false),
        ];
        for (line, ok) in cases {
            let f = parse(line).unwrap();
            assert_eq!(f.check_supported().is_ok(), ok, "{line}");
        }
        let e = parse("@fact-os\tfedora\t40\t\t\n")
            .unwrap()
            .check_supported()
            .unwrap_err();
        let e = e.to_string();
        assert!(e.contains("`fedora` 40") && e.contains("Debian"), "{e}");
    }

    #[test]
    fn docker_facts() {
        let f = parse(
            "@fact-os\tdebian\t13\ttrixie\t\n@fact-arch\tx86_64\tamd64\n@fact-init\tsystemd\n\
             @fact-hostname\th1\n@fact-kernel\t6.12.0-1-amd64\n@fact-docker\tyes\t26.1.5\n\
             @fact-compose\t2.26.1\n",
        )
        .unwrap();
        assert!(f.complete());
        let j = f.to_json();
        assert_eq!(j["docker"], true);
        assert_eq!(j["compose"], true);
        assert_eq!(j["init"], "systemd");
        assert_eq!(j["kernel"], "6.12.0-1-amd64");
        let g = parse("@fact-docker\tno\t\n@fact-compose\t\n").unwrap();
        assert!(!g.complete());
        assert_eq!(g.to_json()["compose"], false);
        assert!(parse("@fact-docker\tmaybe\t\n").is_err());
        assert!(parse("@fact-weird\tx\n").is_err());
        let c = parse("@fact-commands\tgit nft\n").unwrap();
        assert_eq!(c.commands, ["git", "nft"]);
        assert!(!c.complete());
        assert_eq!(c.to_json(), HostFacts::default().to_json());
        assert!(parse("@fact-commands\t\n").unwrap().commands.is_empty());
    }

    #[test]
    fn names_round_trip() {
        for n in [
            "reload app",
            "nginx -t && reload",
            ".hidden",
            "..",
            "日本",
            "a%b",
            "ok.name",
        ] {
            let e = encode_name(n);
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-%".contains(&b)),
                "{e}"
            );
            assert!(!e.starts_with('.'), "{e}");
            assert_eq!(decode_name(&e).as_deref(), Some(n));
        }
        assert_eq!(decode_name("%zz"), None);
        assert_eq!(
            journal_dir("claw-ai"),
            "/var/lib/claw-provision/handlers/claw-ai"
        );
    }
}
