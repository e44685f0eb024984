//! What a step kind is: a [`StepKind`] registered once in [`super::KINDS`], reached through the
//! [`Kind`] handle that a playbook's `kind = "..."` is parsed into when the playbook is loaded.
//!
//! **Why a trait-object list and not an enum.** With an enum, every concern (allowed arguments,
//! desired state, behaviour flags, name) is one `match` in this room, so adding a kind means
//! editing each of them. With one `impl StepKind` per kind, in the kind's own file, adding a
//! kind touches that file and one entry of [`super::KINDS`]: the compiler makes the impl give
//! what every kind must have (name, argument check, desired state), and the behaviours the
//! runner asks about default to "no", so a plain kind writes nothing for them. The list is
//! `const`: no registration at run time, no global state.
//!
//! **Behaviour, not names.** The runner, the selection and the playbook never compare kind
//! names: what differs between kinds is asked of the kind ([`StepKind::provides_secret`],
//! [`StepKind::makes_watchers_stale`], ...). The name is for reading playbooks and for output
//! (plans, JSON, saved plans), where it is written exactly as in the playbook.

use super::{Desired, Sources, StepError};
use crate::fact::host::HostFacts;
use serde_json::{Map, Value};
use std::fmt;

/// What a step kind needs from a host beyond a POSIX `sh` and the tools every probe uses (those
/// of GNU coreutils or BusyBox: `stat`, `sha256sum`, `mktemp`, `df`, `timeout`, `setsid`,
/// `mkfifo`, `flock`): declared by the kind ([`StepKind::needs`]), checked against the host's
/// facts before anything changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `apt-get` and dpkg: a Debian-family host (Debian, Ubuntu and their derivatives).
    Apt,
    /// systemd as the init system (`systemctl`).
    Systemd,
    /// A cron daemon that reads `/etc/cron.d` (Debian's `cron`; BusyBox's `crond` reads only
    /// its own crontabs, so a file there would never run): known of Debian-family hosts only.
    CronD,
    /// The Docker CLI (`docker`).
    Docker,
    /// A program a probe or an apply script runs, which POSIX and BusyBox do not give: its name
    /// (one the probe looks for, [`crate::fact::host::ASKED_COMMANDS`]) and the package that
    /// usually has it.
    Command {
        name: &'static str,
        package: &'static str,
    },
}

impl Need {
    /// Whether the host meets this need, by its facts.
    pub(crate) fn met_by(self, facts: &HostFacts) -> bool {
        match self {
            Need::Apt => facts.check_supported().is_ok(),
            Need::Systemd => facts.init == "systemd",
            Need::CronD => facts.check_supported().is_ok(),
            Need::Docker => facts.docker,
            Need::Command { name, .. } => facts.commands.iter().any(|c| c == name),
        }
    }

    /// What is needed, for the refusal's message.
    pub(crate) fn describe(self) -> String {
        match self {
            Need::Apt => "apt and dpkg (Debian, Ubuntu and their derivatives)".into(),
            Need::Systemd => "systemd as the init system".into(),
            Need::CronD => {
                "a cron daemon that reads /etc/cron.d (Debian, Ubuntu and their derivatives)".into()
            }
            Need::Docker => "the Docker CLI (`docker`)".into(),
            Need::Command { name, package } => format!("`{name}` ({package})"),
        }
    }

    /// What the host lacks of it, for the refusal's message.
    fn lack(self, facts: &HostFacts) -> String {
        match self {
            Need::Apt | Need::CronD => format!("the host runs {}", facts.os_description()),
            Need::Systemd if facts.init.is_empty() => "the host's init is unknown".into(),
            Need::Systemd => format!("the host's init is `{}`", facts.init),
            Need::Docker => "the host has no `docker` command".into(),
            Need::Command { name, .. } => format!("the host has no `{name}` command"),
        }
    }
}

/// Refuses a step of kind `kind` on a host that lacks what the kind needs: None when the host
/// has it all. A Debian-family host is never refused here (each kind reports a missing tool
/// itself there, as it always did): the check is for the other POSIX hosts, where only the
/// steps that need what they lack are refused.
pub(crate) fn unmet_need(kind: Kind, facts: &HostFacts) -> Option<String> {
    if facts.check_supported().is_ok() {
        return None;
    }
    let need = kind.needs().iter().copied().find(|n| !n.met_by(facts))?;
    Some(format!(
        "unsupported host for this step: kind `{kind}` needs {}, and {}",
        need.describe(),
        need.lack(facts)
    ))
}

/// One step kind: how its arguments are checked and turned into a desired state, and what the
/// runner must know about it. Implemented by a unit struct in the kind's own file
/// (`resource/dir.rs`: `DirKind`), listed once in [`super::KINDS`].
pub trait StepKind: Sync {
    /// The name playbooks write (`kind = "dir"`); plans, JSON events and saved plans show it.
    fn name(&self) -> &'static str;

    /// Checks a step's arguments at load (unknown keys, wrong types, missing keys), before
    /// any rendering: templated values are strings here.
    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error>;

    /// The desired state of a step on one host, from its arguments rendered with the host's
    /// context (`ctx`, also given for the kinds that render more, such as a template's file).
    fn desired(
        &self,
        args: toml::Value,
        ctx: &Map<String, Value>,
        src: &Sources<'_>,
    ) -> Result<Desired, StepError>;

    /// Top-level arguments that never reach a shell, so they may hold any text, NUL included
    /// (a `file`'s content travels on stdin).
    fn nul_allowed(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether the step renders a local template file named by its `src` argument (found in
    /// the playbook's templates directory): that file's text counts as the step's text when
    /// deciding whether it names the facts or the secrets.
    fn renders_template_file(&self) -> bool {
        false
    }

    /// Whether the step owns a secret (its `secret` argument names it): read back before
    /// anything is rendered, its value masks every output and fills `secrets.NAME`, so the
    /// step runs whatever the step filter says and is part of every task.
    fn provides_secret(&self) -> bool {
        false
    }

    /// Whether the step's script can carry secret material whatever its arguments say (it
    /// uploads secret content, whose hash the script checks), so `-vv` never shows it.
    fn uploads_secret_material(&self) -> bool {
        false
    }

    /// Whether a change by this step makes stale the probe answer of every later step that
    /// watches paths ([`Desired::watches`]), such as what a compose project runs.
    fn makes_watchers_stale(&self) -> bool {
        false
    }

    /// Whether a step of this kind can be a handler (run when notified; the runner runs a
    /// handler's command).
    fn runs_when_notified(&self) -> bool {
        false
    }

    /// What the kind needs from a host beyond a POSIX `sh` and the tools every probe uses:
    /// nothing by default (such a step runs on any POSIX host, BusyBox included).
    fn needs(&self) -> &'static [Need] {
        &[]
    }
}

/// A step's kind, parsed once when the playbook is loaded. It is a handle on the kind's
/// [`StepKind`] (reached through `Deref`), compared, shown and serialized by its name.
#[derive(Clone, Copy)]
pub struct Kind(&'static dyn StepKind);

impl Kind {
    /// The handle on a kind (for the [`super::KINDS`] list).
    pub const fn new(kind: &'static dyn StepKind) -> Self {
        Kind(kind)
    }

    /// The kind named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Kind> {
        super::KINDS.iter().copied().find(|k| k.0.name() == name)
    }

    /// The kind's name, as written in playbooks.
    pub fn as_str(self) -> &'static str {
        self.0.name()
    }

    /// Every kind's name, in the order of [`super::KINDS`], for error messages.
    pub fn names() -> String {
        super::KINDS
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::ops::Deref for Kind {
    type Target = dyn StepKind;

    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::parse(s).ok_or_else(|| format!("unknown step kind `{s}`"))
    }
}

impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Kind {}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As the name was shown when it was a string.
impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::super::KINDS;
    use super::*;

    /// Every kind's name parses back to it, and shows (Display, JSON) as written.
    #[test]
    fn every_kind_round_trips_its_name() {
        let names: Vec<&str> = KINDS.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "dir",
                "file",
                "template",
                "command",
                "user",
                "group",
                "cron",
                "http_check",
                "secret",
                "apt",
                "apt_repo",
                "firewall",
                "cert",
                "git",
                "compose",
                "service",
                "image",
                "fetch",
            ]
        );
        for k in KINDS {
            let name = k.as_str();
            assert_eq!(Kind::parse(name), Some(*k), "{name}");
            assert_eq!(name.parse::<Kind>().unwrap(), *k);
            assert_eq!(k.to_string(), name);
            assert_eq!(format!("{k:?}"), format!("{name:?}"));
            assert_eq!(serde_json::to_value(k).unwrap(), Value::String(name.into()));
            assert_eq!(KINDS.iter().filter(|x| *x == k).count(), 1, "{name} once");
        }
        assert_eq!(Kind::parse("Dir"), None);
        assert_eq!(
            "shell".parse::<Kind>().unwrap_err(),
            "unknown step kind `shell`"
        );
        assert_eq!(
            Kind::names(),
            "dir, file, template, command, user, group, cron, http_check, secret, apt, apt_repo, firewall, cert, git, compose, service, image, fetch"
        );
    }

    /// What the runner asks of a kind, per kind (the names are what playbooks write).
    #[test]
    fn behaviours_belong_to_the_kinds_that_have_them() {
        let with = |f: fn(&dyn StepKind) -> bool| -> Vec<&str> {
            KINDS
                .iter()
                .filter(|k| f(&***k))
                .map(|k| k.as_str())
                .collect()
        };
        assert_eq!(with(|k| k.renders_template_file()), ["template"]);
        assert_eq!(with(|k| k.provides_secret()), ["secret"]);
        assert_eq!(with(|k| k.uploads_secret_material()), ["secret", "cert"]);
        assert_eq!(with(|k| k.makes_watchers_stale()), ["image"]);
        assert_eq!(with(|k| k.runs_when_notified()), ["command"]);
        let nul: Vec<(&str, &[&str])> = KINDS
            .iter()
            .filter(|k| !k.nul_allowed().is_empty())
            .map(|k| (k.as_str(), k.nul_allowed()))
            .collect();
        assert_eq!(nul, [("file", &["content"][..]), ("template", &["vars"])]);
    }

    /// What each kind needs from a host, and which steps a host that is not Debian's refuses.
    #[test]
    fn needs_belong_to_the_kinds_that_need_them() {
        use crate::fact::host::{ASKED_COMMANDS, FACTS};
        let needs: Vec<(&str, Vec<String>)> = KINDS
            .iter()
            .filter(|k| !k.needs().is_empty())
            .map(|k| (k.as_str(), k.needs().iter().map(|n| n.describe()).collect()))
            .collect();
        let cmd = |c: &str, p: &str| format!("`{c}` ({p})");
        let apt = "apt and dpkg (Debian, Ubuntu and their derivatives)".to_string();
        let systemd = "systemd as the init system".to_string();
        let docker = "the Docker CLI (`docker`)".to_string();
        assert_eq!(
            needs,
            [
                (
                    "user",
                    vec![cmd("useradd", "passwd"), cmd("getent", "libc-bin")]
                ),
                (
                    "group",
                    vec![cmd("groupadd", "passwd"), cmd("getent", "libc-bin")]
                ),
                (
                    "cron",
                    vec![
                        "a cron daemon that reads /etc/cron.d (Debian, Ubuntu and their derivatives)"
                            .to_string()
                    ]
                ),
                ("http_check", vec![cmd("curl", "curl")]),
                ("apt", vec![apt.clone()]),
                ("apt_repo", vec![apt]),
                ("firewall", vec![cmd("nft", "nftables"), systemd.clone()]),
                ("git", vec![cmd("git", "git"), cmd("setpriv", "util-linux")]),
                ("compose", vec![docker.clone()]),
                ("service", vec![systemd]),
                ("image", vec![docker]),
            ]
        );
        // The probe looks for every command a kind needs.
        for k in KINDS {
            for n in k.needs() {
                if let Need::Command { name, .. } = n {
                    assert!(ASKED_COMMANDS.contains(name), "{k}: {name}");
                }
            }
        }
        assert!(FACTS.contains(&format!("for t in {}; do", ASKED_COMMANDS.join(" "))));

        let facts = |lines: &str| {
            let mut f = HostFacts::default();
            for l in lines.lines() {
                let mut it = l.strip_prefix("@fact-").unwrap().split('\t');
                let tag = it.next().unwrap();
                f.parse_line(tag, &it.collect::<Vec<_>>()).unwrap();
            }
            f
        };
        let kind = |n: &str| Kind::parse(n).unwrap();
        // A Debian-family host: nothing is refused here (as before needs were declared).
        let debian = facts("@fact-os\tdebian\t13\ttrixie\t\n@fact-init\tbash\n@fact-commands\t\n");
        assert!(KINDS.iter().all(|k| unmet_need(*k, &debian).is_none()));
        // A BusyBox host: the portable kinds run, the others are refused with what they lack.
        let busybox = facts("@fact-os\tclaw-busybox\t1\t\t\n@fact-init\tsshd\n@fact-commands\t\n");
        let refused: Vec<&str> = KINDS
            .iter()
            .filter(|k| unmet_need(**k, &busybox).is_some())
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            refused,
            [
                "user",
                "group",
                "cron",
                "http_check",
                "apt",
                "apt_repo",
                "firewall",
                "git",
                "compose",
                "service",
                "image"
            ]
        );
        assert_eq!(
            unmet_need(kind("apt"), &busybox).unwrap(),
            "unsupported host for this step: kind `apt` needs apt and dpkg (Debian, Ubuntu and \
             their derivatives), and the host runs `claw-busybox` 1"
        );
        assert_eq!(
            unmet_need(kind("service"), &busybox).unwrap(),
            "unsupported host for this step: kind `service` needs systemd as the init system, and \
             the host's init is `sshd`"
        );
        assert_eq!(
            unmet_need(kind("cron"), &busybox).unwrap(),
            "unsupported host for this step: kind `cron` needs a cron daemon that reads \
             /etc/cron.d (Debian, Ubuntu and their derivatives), and the host runs `claw-busybox` 1"
        );
        assert_eq!(
            unmet_need(kind("user"), &busybox).unwrap(),
            "unsupported host for this step: kind `user` needs `useradd` (passwd), and the host \
             has no `useradd` command"
        );
        // A host that has what a kind needs runs its steps, whatever its OS.
        let fedora = facts(
            "@fact-os\tfedora\t40\t\t\n@fact-init\tsystemd\n@fact-docker\tyes\t27.1\n\
             @fact-commands\tuseradd groupadd getent git curl nft setpriv\n",
        );
        let refused: Vec<&str> = KINDS
            .iter()
            .filter(|k| unmet_need(**k, &fedora).is_some())
            .map(|k| k.as_str())
            .collect();
        assert_eq!(refused, ["cron", "apt", "apt_repo"]);
        assert!(
            unmet_need(kind("apt"), &facts("@fact-os\t\t\t\t\n"))
                .unwrap()
                .ends_with("and the host runs an unknown OS (no ID in /etc/os-release)")
        );
    }
}
