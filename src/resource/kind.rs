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
use serde_json::{Map, Value};
use std::fmt;

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
}
