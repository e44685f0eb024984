//! Connecting to a host: its inventory settings to a connection spec, and the session wrapped
//! with its become settings.

use crate::inventory::{Host, HostKeyPolicy};
use crate::remote::{Become, Remote};
use crate::secret::Secret;
use crate::ssh::{self, ConnectSpec, PassphraseSource};

/// Connects to a host (its address, keys, known_hosts, timeouts) and wraps the session with its
/// become settings: the one connection path of `plan`, `apply` and `run`.
pub async fn connect(
    h: &Host,
    become_password: Option<Secret>,
    passphrases: &dyn PassphraseSource,
) -> Result<Remote, ssh::SshError> {
    let session = ssh::Session::connect(&connect_spec(h), passphrases).await?;
    Ok(Remote::new(
        session,
        // Logged in as the become user already (typically root): no sudo needed.
        (h.become_ && h.user != h.become_user).then(|| Become {
            user: h.become_user.clone(),
            password: become_password,
        }),
    ))
}

pub(crate) fn connect_spec(h: &Host) -> ConnectSpec {
    ConnectSpec {
        host: h.name.clone(),
        address: h.address.clone(),
        port: h.port,
        user: h.user.clone(),
        identity_files: if h.identity_files.is_empty() {
            default_identities()
        } else {
            h.identity_files.clone()
        },
        use_agent: true,
        identities_only: h.identities_only,
        jump: h
            .jump
            .iter()
            .map(|j| ssh::JumpSpec {
                name: j.name.clone(),
                address: j.address.clone(),
                port: j.port,
                user: j.user.clone(),
                identity_files: if j.identity_files.is_empty() {
                    default_identities()
                } else {
                    j.identity_files.clone()
                },
                identities_only: j.identities_only,
                known_hosts: j.known_hosts.clone(),
                policy: policy(j.host_key_policy),
                key_options: j.key_options.clone(),
            })
            .collect(),
        known_hosts: h.known_hosts.clone(),
        policy: policy(h.host_key_policy),
        key_options: h.key_options.clone(),
        connect_timeout: h.connect_timeout,
        keepalive_interval: h.keepalive_interval,
    }
}

fn policy(p: HostKeyPolicy) -> ssh::HostKeyPolicy {
    match p {
        HostKeyPolicy::Strict => ssh::HostKeyPolicy::Strict,
        HostKeyPolicy::AcceptNew => ssh::HostKeyPolicy::AcceptNew,
    }
}

/// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` that exist, as OpenSSH tries them.
fn default_identities() -> Vec<std::path::PathBuf> {
    let home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|k| home.join(".ssh").join(k))
        .filter(|p| p.exists())
        .collect()
}
