//! The inventory file: connection defaults, groups with vars, hosts with address, groups and vars.
//!
//! Loading validates everything it can offline and reports every problem at once, each with
//! file:line:column. Only [`Inventory::load`] builds an [`Inventory`]. The operator's OpenSSH
//! client configuration is input too: [`ssh_config`] parses it, and loading applies it to every
//! host and jump host (inventory > ssh_config > defaults).

pub mod ssh_config;

use crate::duration::Secs;
use crate::error::{ConfigError, ConfigErrors};
use crate::ssh::HostKeyPolicy;
use crate::ssh::known_hosts::KeyOptions;
use serde::Deserialize;
use ssh_config::{Preset, Resolved, SshConfig, StrictHostKeyChecking};
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
fn expand_files(files: &[String], t: &ssh_config::Tokens<'_>) -> Result<Vec<PathBuf>, String> {
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

/// What resolving a host's jump hosts needs from the inventory.
struct HopCtx<'a> {
    ssh: &'a SshConfig,
    /// `[defaults] user`.
    user: Option<&'a str>,
    local_user: &'a str,
    /// `[defaults] known_hosts`.
    known_hosts: Option<&'a PathBuf>,
    /// `[defaults] host_key_policy`.
    policy: Option<HostKeyPolicy>,
    /// The host's keys, for hops ssh_config gives none.
    fallback_keys: &'a [PathBuf],
}

/// Deepest chain of jump hosts' own ProxyJump followed.
const MAX_JUMP_DEPTH: usize = 8;

/// The hops of a ProxyJump / `jump` value, each resolved through ssh_config with its own
/// settings (user, port, keys, known_hosts, StrictHostKeyChecking, IdentitiesOnly). The first
/// hop's own ProxyJump is followed (its hops come first), as OpenSSH does; a hop's
/// ProxyCommand is refused.
fn resolve_hops(ctx: &HopCtx<'_>, text: &str, depth: usize) -> Result<Vec<JumpHost>, String> {
    if depth > MAX_JUMP_DEPTH {
        return Err(format!(
            "jump hosts' own ProxyJump nest deeper than {MAX_JUMP_DEPTH} (a loop?)"
        ));
    }
    let mut out = Vec::new();
    for (i, hop) in ssh_config::parse_jump(text)?.into_iter().enumerate() {
        let hr = ctx.ssh.query(
            &hop.host,
            &Preset {
                hostname: None,
                user: hop.user.clone(),
                port: hop.port,
            },
        );
        let own_jump = hr
            .proxy_jump
            .clone()
            .filter(|j| !j.eq_ignore_ascii_case("none"));
        if i == 0 {
            out.extend(first_hop_jumps(
                ctx,
                &hop.host,
                &hr,
                own_jump.as_deref(),
                depth,
            )?);
        }
        if let Some(e) = hr.unsupported().into_iter().next() {
            return Err(format!("jump host `{}`: {e}", hop.host));
        }
        let jump_host = if i == 0 {
            ssh_config::jump_token(own_jump.as_deref().unwrap_or(""))
        } else {
            String::new()
        };
        out.push(resolve_hop(ctx, hop, &hr, &jump_host)?);
    }
    Ok(out)
}

/// One jump host from its ProxyJump entry and its ssh_config: the entry's user and port win,
/// then ssh_config's, then the inventory's defaults.
fn resolve_hop(
    ctx: &HopCtx<'_>,
    hop: ssh_config::Hop,
    hr: &Resolved,
    jump_host: &str,
) -> Result<JumpHost, String> {
    let address = hr.hostname.clone().unwrap_or_else(|| hop.host.clone());
    let port = hop.port.or(hr.port).unwrap_or(22);
    let user = hop
        .user
        .clone()
        .or_else(|| hr.user.clone())
        .or_else(|| ctx.user.map(String::from))
        .unwrap_or_else(|| ctx.local_user.to_string());
    let tokens = ssh_config::Tokens {
        hostname: &address,
        original: &hop.host,
        port,
        remote_user: &user,
        jump: jump_host,
        alias: hr.host_key_alias.as_deref(),
    };
    let in_hop = |what: &str, e: String| {
        format!(
            "jump host `{}`: ssh_config {what} ({}): {e}",
            hop.host,
            origin(hr, what)
        )
    };
    let identity_files = if hr.identity_files.is_empty() {
        ctx.fallback_keys.to_vec()
    } else {
        expand_files(&hr.identity_files, &tokens).map_err(|e| in_hop("IdentityFile", e))?
    };
    let known_hosts =
        hop_known_hosts(ctx, hr, &tokens).map_err(|e| in_hop("UserKnownHostsFile", e))?;
    Ok(JumpHost {
        name: hop.host,
        address,
        port,
        user,
        identity_files,
        identities_only: hr.identities_only.unwrap_or(false),
        known_hosts,
        host_key_policy: ctx
            .policy
            .unwrap_or_else(|| policy_of(hr.strict_host_key_checking)),
        key_options: key_options(hr),
    })
}

/// The hops before the first jump host: its own ProxyJump's, resolved in turn. Its ssh_config
/// ProxyCommand (without a ProxyJump) is refused.
fn first_hop_jumps(
    ctx: &HopCtx<'_>,
    host: &str,
    hr: &Resolved,
    own_jump: Option<&str>,
    depth: usize,
) -> Result<Vec<JumpHost>, String> {
    if let Some(j) = own_jump {
        return resolve_hops(ctx, j, depth + 1);
    }
    if let Some(cmd) = &hr.proxy_command
        && !cmd.eq_ignore_ascii_case("none")
    {
        return Err(format!(
            "jump host `{host}`: the ssh_config ({}) sets ProxyCommand, which claw-provision \
             does not run; use ProxyJump",
            origin(hr, "ProxyCommand")
        ));
    }
    Ok(Vec::new())
}

/// A jump host's known_hosts files: `[defaults] known_hosts`, else its ssh_config
/// UserKnownHostsFile (never `none`), else `~/.ssh/known_hosts`. Errors name no setting.
fn hop_known_hosts(
    ctx: &HopCtx<'_>,
    hr: &Resolved,
    tokens: &ssh_config::Tokens<'_>,
) -> Result<Vec<PathBuf>, String> {
    Ok(match (ctx.known_hosts, &hr.user_known_hosts_files) {
        (Some(k), _) => vec![k.clone()],
        (None, Some(files)) => {
            let files: Vec<String> = files.iter().filter(|f| *f != "none").cloned().collect();
            let v = expand_files(&files, tokens)?;
            if v.is_empty() {
                return Err("none: host keys must be checked against a file".into());
            }
            v
        }
        (None, None) => vec![home().join(".ssh/known_hosts")],
    })
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
    pub fn select(&self, selector: &str) -> Result<Vec<&Host>, String> {
        let mut include: Vec<bool> = vec![false; self.hosts.len()];
        let mut any_positive = false;
        let items: Vec<&str> = selector
            .split([',', ':'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            return Err("empty host selector".into());
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
                return Err(format!("`{pat}` matches no host or group of the inventory"));
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

    fn match_pattern(&self, pat: &str) -> Result<Vec<usize>, String> {
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
            .map_err(|e| format!("bad pattern `{pat}`: {e}"))?
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

/// The ssh_config `ssh` chooses (the inventory's `ssh_config`, else `~/.ssh/config` if it
/// exists), or an empty one; its errors go to `errors`.
fn load_ssh_config(
    ssh: &SshConfigChoice,
    d: &RawDefaults,
    dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> SshConfig {
    let ssh_file = match ssh {
        SshConfigChoice::Off => None,
        SshConfigChoice::File(p) => Some(p.clone()),
        SshConfigChoice::Default => match d.ssh_config.as_deref() {
            Some("none") => None,
            Some(p) => Some(resolve_path(dir, p)),
            None => Some(ssh_config::home().join(".ssh/config")).filter(|p| p.exists()),
        },
    };
    match ssh_file {
        None => SshConfig::default(),
        Some(f) => match SshConfig::load(&f) {
            Ok(c) => c,
            Err(e) => {
                let hint = if matches!(ssh, SshConfigChoice::Default) {
                    " (this ssh_config is read by default; --ssh-config none ignores it)"
                } else {
                    ""
                };
                errors.extend(e.0.into_iter().map(|mut e| {
                    e.message.push_str(hint);
                    e
                }));
                SshConfig::default()
            }
        },
    }
}

/// What every host of one inventory shares while it is parsed: the file, `[defaults]` and
/// the ssh_config.
struct HostDefaults<'a> {
    path: &'a Path,
    src: &'a str,
    dir: &'a Path,
    d: &'a RawDefaults,
    ssh_cfg: SshConfig,
    /// `[defaults] port`, if valid.
    explicit_port: Option<u16>,
    /// The user when neither the inventory nor ssh_config names one.
    local_user: String,
    /// `[defaults] identity_file`, resolved.
    default_keys: Vec<PathBuf>,
    /// `[defaults] known_hosts`, resolved.
    known_hosts_explicit: Option<PathBuf>,
}

impl<'a> HostDefaults<'a> {
    fn new(
        path: &'a Path,
        src: &'a str,
        dir: &'a Path,
        d: &'a RawDefaults,
        ssh_cfg: SshConfig,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let explicit_port = d.port.as_ref().and_then(|p| port_of(path, src, p, errors));
        // The user when neither the inventory nor ssh_config names one: $USER, else the
        // password database's name (what OpenSSH uses).
        let local_user = std::env::var("USER").unwrap_or_else(|_| ssh_config::local_user());
        let default_keys: Vec<PathBuf> = d
            .identity_file
            .clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .iter()
            .map(|p| resolve_path(dir, p))
            .collect();
        let known_hosts_explicit = d.known_hosts.as_deref().map(|p| resolve_path(dir, p));
        HostDefaults {
            path,
            src,
            dir,
            d,
            ssh_cfg,
            explicit_port,
            local_user,
            default_keys,
            known_hosts_explicit,
        }
    }

    fn err_at(&self, offset: usize, msg: String) -> ConfigError {
        ConfigError::at(self.path, self.src, offset, msg)
    }

    /// One `[hosts.NAME]` table: inventory values first, then ssh_config, then defaults.
    fn host(
        &self,
        groups: &BTreeMap<String, Group>,
        name: Spanned<String>,
        h: Spanned<RawHost>,
        errors: &mut Vec<ConfigError>,
    ) -> Host {
        let name_off = name.span().start;
        let name = name.into_inner();
        let line = crate::error::line_col(self.src, name_off).0;
        self.check_name(&name, name_off, errors);
        let h = h.into_inner();
        self.check_groups(&name, &h, groups, errors);
        let (r, address, port, user) = self.endpoint(&name, &h, errors);
        for e in r.unsupported() {
            errors.push(self.err_at(name_off, format!("host `{name}`: {e}")));
        }
        let jump_src = h.jump.as_ref().or(self.d.jump.as_ref());
        let jump_text = self.jump_text(&name, name_off, jump_src, &r, errors);
        let jump_host = ssh_config::jump_token(&jump_text);
        let tokens = ssh_config::Tokens {
            hostname: &address,
            original: &name,
            port,
            remote_user: &user,
            jump: &jump_host,
            alias: r.host_key_alias.as_deref(),
        };
        let at = HostAt {
            name: &name,
            offset: name_off,
            resolved: &r,
        };
        let identity_files = self.identity_files(h.identity_file, &tokens, &at, errors);
        let known_hosts = self.known_hosts(&tokens, &at, errors);
        let jump = self.jump(&jump_text, jump_src, &identity_files, &at, errors);
        Host {
            address,
            port,
            user,
            identity_files,
            identities_only: r.identities_only.unwrap_or(false),
            jump,
            known_hosts,
            host_key_policy: self
                .d
                .host_key_policy
                .unwrap_or(policy_of(r.strict_host_key_checking)),
            key_options: key_options(&r),
            connect_timeout: self
                .d
                .connect_timeout
                .map(|s| s.0)
                .or(r.connect_timeout.flatten())
                .unwrap_or(Duration::from_secs(10)),
            command_timeout: self
                .d
                .command_timeout
                .map_or(DEFAULT_COMMAND_TIMEOUT, |s| s.0),
            keepalive_interval: self
                .d
                .keepalive_interval
                .map(|s| s.0)
                .or(r.server_alive_interval)
                .unwrap_or(crate::ssh::DEFAULT_KEEPALIVE_INTERVAL),
            become_: h.become_.or(self.d.become_).unwrap_or(false),
            become_user: h
                .become_user
                .or_else(|| self.d.become_user.clone())
                .unwrap_or_else(|| "root".into()),
            groups: h.groups.into_iter().map(Spanned::into_inner).collect(),
            vars: h.vars,
            line,
            name,
        }
    }

    /// What ssh_config says for the host, given the inventory's address, user and port first;
    /// and from both (then the defaults) its address, port and user.
    fn endpoint(
        &self,
        name: &str,
        h: &RawHost,
        errors: &mut Vec<ConfigError>,
    ) -> (Resolved, String, u16, String) {
        let port = match &h.port {
            Some(p) => port_of(self.path, self.src, p, errors).or(self.explicit_port),
            None => self.explicit_port,
        };
        // The inventory's values are given to ssh_config first, as `ssh -l -p -o HostName`
        // would: they win, and `Match host`/`Match user` see them.
        let preset = Preset {
            hostname: h.address.clone(),
            user: h.user.clone().or_else(|| self.d.user.clone()),
            port,
        };
        let r = self.ssh_cfg.query(name, &preset);
        let address = h
            .address
            .clone()
            .or_else(|| r.hostname.clone())
            .unwrap_or_else(|| name.to_string());
        let port = port.or(r.port).unwrap_or(22);
        let user = preset
            .user
            .clone()
            .or_else(|| r.user.clone())
            .unwrap_or_else(|| self.local_user.clone());
        (r, address, port, user)
    }

    fn check_name(&self, name: &str, name_off: usize, errors: &mut Vec<ConfigError>) {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            errors.push(self.err_at(
                name_off,
                format!("host name `{name}` may only contain letters, digits, `-`, `_` and `.`"),
            ));
        }
    }

    fn check_groups(
        &self,
        name: &str,
        h: &RawHost,
        groups: &BTreeMap<String, Group>,
        errors: &mut Vec<ConfigError>,
    ) {
        for g in &h.groups {
            if !groups.contains_key(g.get_ref()) && g.get_ref() != "all" {
                errors.push(self.err_at(
                    g.span().start,
                    format!(
                        "host `{name}` names group `{}`, which is not defined (add a [groups.{}] table)",
                        g.get_ref(),
                        g.get_ref()
                    ),
                ));
            }
        }
    }

    /// The host's ProxyJump text: the inventory's `jump`, else ssh_config's ProxyJump. An
    /// ssh_config ProxyCommand with neither is refused.
    fn jump_text(
        &self,
        name: &str,
        name_off: usize,
        jump_src: Option<&Spanned<String>>,
        r: &Resolved,
        errors: &mut Vec<ConfigError>,
    ) -> String {
        if jump_src.is_none()
            && r.proxy_jump.is_none()
            && let Some(cmd) = &r.proxy_command
            && !cmd.eq_ignore_ascii_case("none")
        {
            errors.push(self.err_at(
                name_off,
                format!(
                    "host `{name}`: the ssh_config ({}) sets ProxyCommand, which claw-provision \
                     does not run; use ProxyJump there, or set `jump` for the host in the \
                     inventory (`jump = \"none\"` connects directly)",
                    origin(r, "ProxyCommand")
                ),
            ));
        }
        match jump_src {
            Some(j) => j.get_ref().clone(),
            None => r.proxy_jump.clone().unwrap_or_default(),
        }
    }

    /// The host's keys: its own `identity_file`, else `[defaults]`, else ssh_config's.
    fn identity_files(
        &self,
        own: Option<OneOrMany>,
        tokens: &ssh_config::Tokens<'_>,
        at: &HostAt<'_>,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<PathBuf> {
        match own {
            Some(k) => k
                .into_vec()
                .iter()
                .map(|p| resolve_path(self.dir, p))
                .collect(),
            None if !self.default_keys.is_empty() => self.default_keys.clone(),
            None => expand_files(&at.resolved.identity_files, tokens).unwrap_or_else(|e| {
                errors.push(self.err_at(
                    at.offset,
                    format!(
                        "host `{}`: ssh_config IdentityFile ({}): {e}",
                        at.name,
                        origin(at.resolved, "IdentityFile")
                    ),
                ));
                Vec::new()
            }),
        }
    }

    /// The host's known_hosts files: `[defaults] known_hosts`, else ssh_config's
    /// UserKnownHostsFile (never `none`), else `~/.ssh/known_hosts`.
    fn known_hosts(
        &self,
        tokens: &ssh_config::Tokens<'_>,
        at: &HostAt<'_>,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<PathBuf> {
        let name = at.name;
        match (
            &self.known_hosts_explicit,
            &at.resolved.user_known_hosts_files,
        ) {
            (Some(k), _) => vec![k.clone()],
            (None, Some(files)) => {
                let files: Vec<String> = files.iter().filter(|f| *f != "none").cloned().collect();
                match expand_files(&files, tokens) {
                    Ok(v) if !v.is_empty() => v,
                    Ok(_) => {
                        errors.push(self.err_at(
                            at.offset,
                            format!(
                                "host `{name}`: the ssh_config ({}) sets UserKnownHostsFile none; \
                                 host keys must be checked against a file (set `known_hosts` in \
                                 the inventory)",
                                origin(at.resolved, "UserKnownHostsFile")
                            ),
                        ));
                        Vec::new()
                    }
                    Err(e) => {
                        errors.push(self.err_at(
                            at.offset,
                            format!(
                                "host `{name}`: ssh_config UserKnownHostsFile ({}): {e}",
                                origin(at.resolved, "UserKnownHostsFile")
                            ),
                        ));
                        Vec::new()
                    }
                }
            }
            (None, None) => vec![home().join(".ssh/known_hosts")],
        }
    }

    /// The host's jump hosts, resolved through ssh_config; an error points at the `jump`
    /// that gave them (or the host, for ssh_config's ProxyJump).
    fn jump(
        &self,
        jump_text: &str,
        jump_src: Option<&Spanned<String>>,
        identity_files: &[PathBuf],
        at: &HostAt<'_>,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<JumpHost> {
        let hop_ctx = HopCtx {
            ssh: &self.ssh_cfg,
            user: self.d.user.as_deref(),
            local_user: &self.local_user,
            known_hosts: self.known_hosts_explicit.as_ref(),
            policy: self.d.host_key_policy,
            fallback_keys: identity_files,
        };
        match resolve_hops(&hop_ctx, jump_text, 0) {
            Ok(hops) => hops,
            Err(e) => {
                let from = if jump_src.is_some() {
                    String::new()
                } else {
                    format!(" (ssh_config {})", origin(at.resolved, "ProxyJump"))
                };
                errors.push(self.err_at(
                    jump_src.map_or(at.offset, |j| j.span().start),
                    format!("host `{}`: `jump`{from}: {e}", at.name),
                ));
                Vec::new()
            }
        }
    }
}

/// A host being parsed, for its error messages: its name, where it is, its ssh_config.
struct HostAt<'a> {
    name: &'a str,
    offset: usize,
    resolved: &'a Resolved,
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
        assert!(i.select("nosuch").unwrap_err().contains("matches no host"));
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
