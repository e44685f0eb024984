//! The inventory file: connection defaults, groups with vars, hosts with address, groups and vars.
//!
//! Loading validates everything it can offline and reports every problem at once, each with
//! file:line:column. Only [`Inventory::load`] builds an [`Inventory`]. The operator's OpenSSH
//! client configuration is input too: [`ssh_config`] parses it, and loading applies it to every
//! host and jump host (inventory > ssh_config > defaults).

mod host;
mod jump;
pub mod ssh_config;

use crate::duration::Secs;
use crate::error::{ConfigError, ConfigErrors};
use crate::ssh::HostKeyPolicy;
use crate::ssh::known_hosts::KeyOptions;
use host::{HostDefaults, load_ssh_config};
use serde::Deserialize;
use ssh_config::{Resolved, StrictHostKeyChecking};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    user: Option<String>,
    port: Option<Spanned<i64>>,
    identity_file: Option<OneOrMany>,
    known_hosts: Option<String>,
    host_key_policy: Option<HostKeyPolicy>,
    connect_timeout: Option<Secs>,
    command_timeout: Option<Secs>,
    keepalive_interval: Option<Secs>,
    #[serde(rename = "become")]
    become_: Option<bool>,
    become_user: Option<String>,
    /// OpenSSH client configuration to read (`none`: none); default `~/.ssh/config` if present.
    ssh_config: Option<String>,
    /// Jump hosts, OpenSSH's ProxyJump syntax: `[user@]host[:port]`, comma-separated; `none`.
    jump: Option<Spanned<String>>,
    #[serde(default)]
    vars: toml::Table,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    vars: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    address: Option<String>,
    port: Option<Spanned<i64>>,
    user: Option<String>,
    identity_file: Option<OneOrMany>,
    #[serde(rename = "become")]
    become_: Option<bool>,
    become_user: Option<String>,
    jump: Option<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    vars: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    playbook: Option<String>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    groups: BTreeMap<String, Spanned<RawGroup>>,
    #[serde(default)]
    hosts: BTreeMap<Spanned<String>, Spanned<RawHost>>,
}

/// A group of hosts with its variables.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub vars: toml::Table,
}

/// One host with its resolved connection settings and variables.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Key files to try (after the agent). Empty: the usual `~/.ssh/id_*` files.
    pub identity_files: Vec<PathBuf>,
    /// Use only the identity files (and the agent's keys that match them): ssh_config's
    /// `IdentitiesOnly`.
    pub identities_only: bool,
    /// Jump hosts, first connected first; empty: a direct connection.
    pub jump: Vec<JumpHost>,
    /// known_hosts files: all are read, new keys are recorded in the first.
    pub known_hosts: Vec<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    /// ssh_config's HostKeyAlias, GlobalKnownHostsFile and HashKnownHosts.
    pub key_options: KeyOptions,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// SSH keepalive interval; the connection counts as lost after 3 unanswered (0 = off).
    pub keepalive_interval: Duration,
    pub become_: bool,
    pub become_user: String,
    pub groups: Vec<String>,
    pub vars: toml::Table,
    /// Line of the host's table in the inventory.
    pub line: usize,
}

/// One jump host (a hop of ProxyJump / `jump`), with its connection settings resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    /// The hop as written (`bastion`, `ops@b2:2200`), for messages.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    pub identities_only: bool,
    /// The hop's own known_hosts files and policy (ssh_config may set them per hop).
    pub known_hosts: Vec<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    pub key_options: KeyOptions,
}

/// ssh_config's HostKeyAlias, GlobalKnownHostsFile (`~` expanded; `none`: no file) and
/// HashKnownHosts for a host or hop; OpenSSH's defaults where it is silent.
fn key_options(r: &Resolved) -> KeyOptions {
    let tilde = |f: &String| match f.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None if f == "~" => home(),
        None => PathBuf::from(f),
    };
    KeyOptions {
        alias: r.host_key_alias.clone(),
        global: match &r.global_known_hosts_files {
            Some(files) => files.iter().filter(|f| *f != "none").map(tilde).collect(),
            None => KeyOptions::default().global,
        },
        hash: r.hash_known_hosts.unwrap_or(false),
    }
}

/// Which OpenSSH client configuration to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SshConfigChoice {
    /// The inventory's `ssh_config`, else `~/.ssh/config` if it exists.
    #[default]
    Default,
    /// This file (`--ssh-config FILE`).
    File(PathBuf),
    /// None (`--ssh-config none`).
    Off,
}

/// A loaded, validated inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    /// The playbook the inventory names, resolved against the inventory's directory.
    pub playbook: Option<PathBuf>,
    /// Variables of `[defaults.vars]`.
    pub default_vars: toml::Table,
    pub groups: BTreeMap<String, Group>,
    /// Hosts in file order.
    pub hosts: Vec<Host>,
}

/// Default timeout of one remote command when neither the step nor the inventory sets one.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// Expands a leading `~/` and resolves relative paths against `base`.
pub fn resolve_path(base: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        home().join(rest)
    } else if p == "~" {
        home()
    } else {
        base.join(p)
    }
}

fn port_of(file: &Path, src: &str, p: &Spanned<i64>, errors: &mut Vec<ConfigError>) -> Option<u16> {
    match u16::try_from(*p.get_ref()) {
        Ok(v) if v > 0 => Some(v),
        _ => {
            errors.push(ConfigError::at(
                file,
                src,
                p.span().start,
                format!("`port` must be between 1 and 65535, got {}", p.get_ref()),
            ));
            None
        }
    }
}

/// Expands `~` and `%` tokens of ssh_config file names.
fn expand_files(
    files: &[String],
    t: &ssh_config::Tokens<'_>,
) -> Result<Vec<PathBuf>, ssh_config::ExpandError> {
    files.iter().map(|f| ssh_config::expand(f, t)).collect()
}

/// ssh_config's StrictHostKeyChecking as our policy: `no` would accept changed keys too; we
/// never do, so it records new ones only, like `accept-new`.
fn policy_of(s: Option<StrictHostKeyChecking>) -> HostKeyPolicy {
    match s {
        Some(StrictHostKeyChecking::AcceptNew | StrictHostKeyChecking::No) => {
            HostKeyPolicy::AcceptNew
        }
        _ => HostKeyPolicy::Strict,
    }
}

/// Where ssh_config set `key` (`file:line`), for messages.
fn origin(r: &Resolved, key: &str) -> String {
    r.origin
        .iter()
        .find(|(k, _)| *k == key)
        .map_or_else(|| "ssh_config".into(), |(_, o)| o.clone())
}

/// Turns a toml deserialization error into a ConfigError with a position.
pub(crate) fn toml_error(file: &Path, src: &str, e: &toml::de::Error) -> ConfigError {
    let msg = e.message().trim().to_string();
    let offset = e.span().map_or(0, |s| s.start);
    let mut err = ConfigError::at(file, src, offset, msg.clone());
    if e.span().is_none() {
        err.line = 0;
        err.col = 0;
    }
    // serde reports unknown fields of nested tables at the table header; point at the key.
    if let Some(field) = msg
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
        && let Some(off) = find_key(src, offset, field)
    {
        let (l, c) = crate::error::line_col(src, off);
        err.line = l;
        err.col = c;
    }
    err
}

/// Finds the first line at or after `from` that assigns `key`, within the same table.
pub(crate) fn find_key(src: &str, from: usize, key: &str) -> Option<usize> {
    let mut off = src[..from.min(src.len())].rfind('\n').map_or(0, |i| i + 1);
    let mut first = true;
    for line in src[off..].split_inclusive('\n') {
        let t = line.trim_start();
        if !first && t.starts_with('[') {
            return None;
        }
        first = false;
        let k = t.split('=').next().unwrap_or("").trim().trim_matches('"');
        if t.contains('=') && k == key {
            return Some(off + (line.len() - t.len()));
        }
        // Inline tables: `key = { mdoe = ... }` on the header line.
        if let Some(i) = t
            .find(&format!("{key} ="))
            .or_else(|| t.find(&format!("{key}=")))
            && (i == 0
                || !t.as_bytes()[i - 1].is_ascii_alphanumeric() && t.as_bytes()[i - 1] != b'_')
        {
            return Some(off + (line.len() - t.len()) + i);
        }
        off += line.len();
    }
    None
}

/// Why a host selector (`hosts`, `--limit`) is refused.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("empty host selector")]
    Empty,
    /// An item (`!` removed) that selects nothing: a typo must not silently select nothing.
    #[error("`{pattern}` matches no host or group of the inventory")]
    NoMatch { pattern: String },
    #[error("bad pattern `{pattern}`: {source}")]
    BadPattern {
        pattern: String,
        source: globset::Error,
    },
}

impl Inventory {
    /// Reads and validates an inventory file.
    /// Reads and validates an inventory file; `~/.ssh/config` (or the inventory's
    /// `ssh_config`) fills in what the inventory does not say.
    pub fn load(path: &Path) -> Result<Inventory, ConfigErrors> {
        Self::load_with(path, &SshConfigChoice::Default)
    }

    /// [`Inventory::load`] with the ssh_config chosen on the command line.
    pub fn load_with(path: &Path, ssh: &SshConfigChoice) -> Result<Inventory, ConfigErrors> {
        let src = crate::error::read_source(path, "inventory")?;
        Self::parse_with(path, &src, ssh)
    }

    /// Parses inventory text without any ssh_config; `path` names the file in errors and
    /// anchors relative paths.
    pub fn parse(path: &Path, src: &str) -> Result<Inventory, ConfigErrors> {
        Self::parse_with(path, src, &SshConfigChoice::Off)
    }

    /// Parses inventory text, reading the ssh_config `ssh` chooses. Inventory settings win over
    /// ssh_config, which wins over the defaults.
    pub fn parse_with(
        path: &Path,
        src: &str,
        ssh: &SshConfigChoice,
    ) -> Result<Inventory, ConfigErrors> {
        let raw: RawInventory = toml::from_str(src).map_err(|e| toml_error(path, src, &e))?;
        let dir = crate::error::base_dir(path);
        let mut errors = Vec::new();
        let d = raw.defaults;
        let ssh_cfg = load_ssh_config(ssh, &d, &dir, &mut errors);
        let ctx = HostDefaults::new(path, src, &dir, &d, ssh_cfg, &mut errors);
        let groups: BTreeMap<String, Group> = raw
            .groups
            .into_iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    Group {
                        name,
                        vars: g.into_inner().vars,
                    },
                )
            })
            .collect();

        let mut raw_hosts: Vec<_> = raw.hosts.into_iter().collect();
        raw_hosts.sort_by_key(|(k, _)| k.span().start);
        let hosts: Vec<Host> = raw_hosts
            .into_iter()
            .map(|(name, h)| ctx.host(&groups, name, h, &mut errors))
            .collect();
        for h in &hosts {
            if groups.contains_key(&h.name) {
                errors.push(ConfigError::new(
                    path,
                    h.line,
                    1,
                    format!("`{}` is both a group and a host name", h.name),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Inventory {
            path: path.to_path_buf(),
            playbook: raw.playbook.map(|p| resolve_path(&dir, &p)),
            default_vars: d.vars,
            groups,
            hosts,
        })
    }

    /// The playbook an inventory names, read loosely from a file that may not validate (so that
    /// `validate` can report the playbook's errors together with the inventory's).
    pub fn playbook_hint(path: &Path) -> Option<PathBuf> {
        let src = std::fs::read_to_string(path).ok()?;
        let table: toml::Table = toml::from_str(&src).ok()?;
        let p = table.get("playbook")?.as_str()?;
        Some(resolve_path(&crate::error::base_dir(path), p))
    }

    /// Names of the hosts in `group` (`all` is every host).
    pub fn group_members(&self, group: &str) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| group == "all" || h.groups.iter().any(|g| g == group))
            .map(|h| h.name.as_str())
            .collect()
    }

    /// Hosts matched by a selector: comma-separated host names, group names or globs over host
    /// names; a `!` prefix excludes. `all` and `*` select every host. An item that matches nothing
    /// is an error (a typo in `--limit` must not silently select nothing).
    pub fn select(&self, selector: &str) -> Result<Vec<&Host>, SelectError> {
        let mut include: Vec<bool> = vec![false; self.hosts.len()];
        let mut any_positive = false;
        let items: Vec<&str> = selector
            .split([',', ':'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            return Err(SelectError::Empty);
        }
        for item in &items {
            if !item.starts_with('!') {
                any_positive = true;
            }
        }
        if !any_positive {
            include.iter_mut().for_each(|i| *i = true);
        }
        for item in items {
            let (neg, pat) = item.strip_prefix('!').map_or((false, item), |p| (true, p));
            let matched = self.match_pattern(pat)?;
            if matched.is_empty() {
                return Err(SelectError::NoMatch {
                    pattern: pat.into(),
                });
            }
            for i in matched {
                include[i] = !neg;
            }
        }
        Ok(self
            .hosts
            .iter()
            .zip(include)
            .filter(|(_, inc)| *inc)
            .map(|(h, _)| h)
            .collect())
    }

    fn match_pattern(&self, pat: &str) -> Result<Vec<usize>, SelectError> {
        if pat == "all" || pat == "*" {
            return Ok((0..self.hosts.len()).collect());
        }
        if self.groups.contains_key(pat) {
            return Ok(self
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| h.groups.iter().any(|g| g == pat))
                .map(|(i, _)| i)
                .collect());
        }
        let glob = globset::Glob::new(pat)
            .map_err(|source| SelectError::BadPattern {
                pattern: pat.into(),
                source,
            })?
            .compile_matcher();
        Ok(self
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| glob.is_match(&h.name) || h.groups.iter().any(|g| glob.is_match(g)))
            .map(|(i, _)| i)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = r#"
playbook = "../playbooks/demo.toml"

[defaults]
user = "deploy"
port = 2222
identity_file = "keys/id"
become = true
vars = { env = "prod" }

[groups.web]
vars = { role = "web" }

[groups.db]

[hosts.web-2]
address = "10.0.0.3"
groups = ["web"]

[hosts.web-1]
address = "10.0.0.2"
port = 22
groups = ["web"]
vars = { weight = 2 }

[hosts.db-1]
address = "10.0.0.9"
user = "root"
groups = ["db"]
"#;

    fn inv() -> Inventory {
        Inventory::parse(Path::new("/srv/inv/prod.toml"), INV).unwrap()
    }

    #[test]
    fn loads_in_file_order_with_defaults() {
        let i = inv();
        let names: Vec<_> = i.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["web-2", "web-1", "db-1"]);
        assert_eq!(i.hosts[0].port, 2222);
        assert_eq!(i.hosts[1].port, 22);
        assert_eq!(i.hosts[2].user, "root");
        assert_eq!(
            i.hosts[0].identity_files,
            [PathBuf::from("/srv/inv/keys/id")]
        );
        assert_eq!(
            i.playbook,
            Some(PathBuf::from("/srv/inv/../playbooks/demo.toml"))
        );
        assert!(i.hosts[0].become_);
        assert_eq!(i.hosts[0].host_key_policy, HostKeyPolicy::Strict);
    }

    #[test]
    fn selects() {
        let i = inv();
        let names = |s: &str| {
            i.select(s)
                .unwrap()
                .iter()
                .map(|h| h.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("web"), ["web-2", "web-1"]);
        assert_eq!(names("all"), ["web-2", "web-1", "db-1"]);
        assert_eq!(names("web-*,!web-2"), ["web-1"]);
        assert_eq!(names("!db"), ["web-2", "web-1"]);
        assert_eq!(names("db-1"), ["db-1"]);
        assert!(
            i.select("nosuch")
                .unwrap_err()
                .to_string()
                .contains("matches no host")
        );
    }

    #[test]
    fn unknown_key_names_line() {
        let src = "[defaults]\nuser = \"a\"\nprot = 22\n";
        let e = Inventory::parse(Path::new("i.toml"), src).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(
            e.0[0]
                .to_string()
                .starts_with("i.toml:3:1: unknown field `prot`"),
            "{}",
            e
        );
    }

    #[test]
    fn unknown_key_in_host_names_its_line() {
        let src = "[hosts.a]\naddress = \"x\"\n\n[hosts.b]\naddress = \"y\"\ngroup = [\"web\"]\n";
        let e = Inventory::parse(Path::new("i.toml"), src).unwrap_err();
        assert!(
            e.0[0]
                .to_string()
                .starts_with("i.toml:6:1: unknown field `group`"),
            "{}",
            e
        );
    }

    #[test]
    fn malformed_toml_names_line() {
        let e = Inventory::parse(Path::new("i.toml"), "[defaults]\nuser = \n").unwrap_err();
        assert!(e.0[0].to_string().starts_with("i.toml:2:"), "{}", e);
    }

    #[test]
    fn all_semantic_errors_at_once() {
        let src = "[hosts.a]\ngroups = [\"nope\"]\nport = 70000\n[hosts.b]\ngroups = [\"nada\"]\n";
        let e = Inventory::parse(Path::new("i.toml"), src).unwrap_err();
        assert_eq!(e.0.len(), 3, "{e}");
        assert!(
            e.0[0]
                .to_string()
                .starts_with("i.toml:2:11: host `a` names group `nope`"),
            "{e}"
        );
    }
}
