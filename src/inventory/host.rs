//! One `[hosts.NAME]` table turned into a [`Host`]: the inventory's values first, then the
//! operator's ssh_config, then `[defaults]`; and the ssh_config the inventory chooses.

use super::jump::{HopCtx, resolve_hops};
use super::ssh_config::{self, Preset, Resolved, SshConfig};
use super::{
    DEFAULT_COMMAND_TIMEOUT, Group, Host, JumpHost, OneOrMany, RawDefaults, RawHost,
    SshConfigChoice, expand_files, home, key_options, origin, policy_of, port_of, resolve_path,
};
use crate::error::ConfigError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The ssh_config `ssh` chooses (the inventory's `ssh_config`, else `~/.ssh/config` if it
/// exists), or an empty one; its errors go to `errors`.
pub(super) fn load_ssh_config(
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
pub(super) struct HostDefaults<'a> {
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
    pub(super) fn new(
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
    pub(super) fn host(
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
