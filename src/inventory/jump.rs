//! A host's jump hosts (ProxyJump, the inventory's `jump`): each hop resolved through
//! ssh_config with its own settings, the first hop's own ProxyJump followed.

use super::ssh_config::{self, Preset, Resolved, SshConfig};
use super::{JumpHost, expand_files, home, key_options, origin, policy_of};
use crate::ssh::HostKeyPolicy;
use std::path::PathBuf;

/// What resolving a host's jump hosts needs from the inventory.
pub(super) struct HopCtx<'a> {
    pub(super) ssh: &'a SshConfig,
    /// `[defaults] user`.
    pub(super) user: Option<&'a str>,
    pub(super) local_user: &'a str,
    /// `[defaults] known_hosts`.
    pub(super) known_hosts: Option<&'a PathBuf>,
    /// `[defaults] host_key_policy`.
    pub(super) policy: Option<HostKeyPolicy>,
    /// The host's keys, for hops ssh_config gives none.
    pub(super) fallback_keys: &'a [PathBuf],
}

/// Why a host's jump hosts cannot be resolved (the caller names the host and its `jump`).
#[derive(Debug, thiserror::Error)]
pub(super) enum JumpError {
    #[error("jump hosts' own ProxyJump nest deeper than {MAX_JUMP_DEPTH} (a loop?)")]
    TooDeep,
    #[error(transparent)]
    BadHop(#[from] ssh_config::BadHop),
    /// A host-key option of the hop's ssh_config we do not implement ([`Resolved::unsupported`]).
    #[error("jump host `{host}`: {problem}")]
    Unsupported { host: String, problem: String },
    /// A file setting of the hop's ssh_config, set at `origin` (`file:line`).
    #[error("jump host `{host}`: ssh_config {setting} ({origin}): {source}")]
    Setting {
        host: String,
        setting: &'static str,
        origin: String,
        source: HopFileError,
    },
    #[error(
        "jump host `{host}`: the ssh_config ({origin}) sets ProxyCommand, which claw-provision \
         does not run; use ProxyJump"
    )]
    ProxyCommand { host: String, origin: String },
}

/// A jump host's key or known_hosts file setting that gives no usable file.
#[derive(Debug, thiserror::Error)]
pub(super) enum HopFileError {
    #[error(transparent)]
    Expand(#[from] ssh_config::ExpandError),
    #[error("none: host keys must be checked against a file")]
    KnownHostsNone,
}

/// Deepest chain of jump hosts' own ProxyJump followed.
const MAX_JUMP_DEPTH: usize = 8;

/// The hops of a ProxyJump / `jump` value, each resolved through ssh_config with its own
/// settings (user, port, keys, known_hosts, StrictHostKeyChecking, IdentitiesOnly). The first
/// hop's own ProxyJump is followed (its hops come first), as OpenSSH does; a hop's
/// ProxyCommand is refused.
pub(super) fn resolve_hops(
    ctx: &HopCtx<'_>,
    text: &str,
    depth: usize,
) -> Result<Vec<JumpHost>, JumpError> {
    if depth > MAX_JUMP_DEPTH {
        return Err(JumpError::TooDeep);
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
        if let Some(problem) = hr.unsupported().into_iter().next() {
            return Err(JumpError::Unsupported {
                host: hop.host,
                problem,
            });
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
) -> Result<JumpHost, JumpError> {
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
    let in_hop = |setting: &'static str, e: HopFileError| JumpError::Setting {
        host: hop.host.clone(),
        setting,
        origin: origin(hr, setting),
        source: e,
    };
    let identity_files = if hr.identity_files.is_empty() {
        ctx.fallback_keys.to_vec()
    } else {
        expand_files(&hr.identity_files, &tokens).map_err(|e| in_hop("IdentityFile", e.into()))?
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
) -> Result<Vec<JumpHost>, JumpError> {
    if let Some(j) = own_jump {
        return resolve_hops(ctx, j, depth + 1);
    }
    if let Some(cmd) = &hr.proxy_command
        && !cmd.eq_ignore_ascii_case("none")
    {
        return Err(JumpError::ProxyCommand {
            host: host.into(),
            origin: origin(hr, "ProxyCommand"),
        });
    }
    Ok(Vec::new())
}

/// A jump host's known_hosts files: `[defaults] known_hosts`, else its ssh_config
/// UserKnownHostsFile (never `none`), else `~/.ssh/known_hosts`. Errors name no setting.
fn hop_known_hosts(
    ctx: &HopCtx<'_>,
    hr: &Resolved,
    tokens: &ssh_config::Tokens<'_>,
) -> Result<Vec<PathBuf>, HopFileError> {
    Ok(match (ctx.known_hosts, &hr.user_known_hosts_files) {
        (Some(k), _) => vec![k.clone()],
        (None, Some(files)) => {
            let files: Vec<String> = files.iter().filter(|f| *f != "none").cloned().collect();
            let v = expand_files(&files, tokens)?;
            if v.is_empty() {
                return Err(HopFileError::KnownHostsNone);
            }
            v
        }
        (None, None) => vec![home().join(".ssh/known_hosts")],
    })
}
