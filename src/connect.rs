//! The one way to connect: an inventory [`Host`] (ssh_config already applied by
//! [`Inventory::load_with`](crate::inventory::Inventory::load_with)) becomes an
//! [`ssh::ConnectSpec`] and, with its become settings, a [`Remote`]. The runner (`plan`, `apply`,
//! the firewall's confirming connection) and every subcommand (`run`, `facts`, `known-hosts`)
//! connect through here, so a connection setting is turned into what the transport needs in one
//! place.
//!
//! Layers, top to bottom: the commands and the runner → `connect` → `inventory` (input, with its
//! `ssh_config` parser) and `remote` → `ssh` (the transport, the only user of russh).
//!
//! **The host-key policy is declared once, by `ssh/`** ([`ssh::HostKeyPolicy`], used under that
//! one path everywhere): `ssh/` is the layer that enforces it (the known_hosts check of every host
//! and jump host), and the inventory, which reads it from input, already sits above `ssh/` (it
//! takes `KeyOptions` from there). Declared here or in the inventory, it would make `ssh/` import
//! upward, or need a second enum and a copy between the two, which is what this module replaced.

use std::path::PathBuf;

use crate::inventory::{Host, JumpHost};
use crate::remote::{Become, Remote};
use crate::secret::Secret;
use crate::ssh::{self, ConnectSpec, JumpSpec};

/// Connects to a host (its address, keys, known_hosts, timeouts, jump hosts) and wraps the
/// session with its become settings. `client`: the command's connection state (passphrases, key
/// and known_hosts caches, jump chains, learned host keys).
pub(crate) async fn connect(
    h: &Host,
    become_password: Option<Secret>,
    client: &ssh::Client,
) -> Result<Remote, ssh::SshError> {
    let session = ssh::Session::connect(&spec(h), client).await?;
    Ok(Remote::new(session, become_of(h, become_password)))
}

/// The sudo settings of `h`'s commands: none when it does not become, or logs in as the become
/// user already (typically root).
fn become_of(h: &Host, password: Option<Secret>) -> Option<Become> {
    (h.become_ && h.user != h.become_user).then(|| Become {
        user: h.become_user.clone(),
        password,
    })
}

/// What the transport needs to reach `h`: the inventory's settings, with the usual
/// `~/.ssh/id_*` keys for a host or hop that names none, and the agent always tried first.
pub(crate) fn spec(h: &Host) -> ConnectSpec {
    ConnectSpec {
        host: h.name.clone(),
        address: h.address.clone(),
        port: h.port,
        user: h.user.clone(),
        identity_files: identities_or_default(&h.identity_files),
        use_agent: true,
        identities_only: h.identities_only,
        jump: h.jump.iter().map(jump_spec).collect(),
        known_hosts: h.known_hosts.clone(),
        policy: h.host_key_policy,
        key_options: h.key_options.clone(),
        connect_timeout: h.connect_timeout,
        keepalive_interval: h.keepalive_interval,
    }
}

/// One hop of `h.jump`, as the transport takes it.
fn jump_spec(j: &JumpHost) -> JumpSpec {
    JumpSpec {
        name: j.name.clone(),
        address: j.address.clone(),
        port: j.port,
        user: j.user.clone(),
        identity_files: identities_or_default(&j.identity_files),
        identities_only: j.identities_only,
        known_hosts: j.known_hosts.clone(),
        policy: j.host_key_policy,
        key_options: j.key_options.clone(),
    }
}

/// The files given, or when none is, [`default_identities`].
fn identities_or_default(files: &[PathBuf]) -> Vec<PathBuf> {
    if files.is_empty() {
        default_identities()
    } else {
        files.to_vec()
    }
}

/// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` that exist, as OpenSSH tries them.
fn default_identities() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|k| home.join(".ssh").join(k))
        .filter(|p| p.exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Inventory;
    use crate::ssh::HostKeyPolicy;
    use std::path::Path;

    const INV: &str = r#"
[defaults]
user = "deploy"
identity_file = "keys/id"
known_hosts = "kh"
host_key_policy = "accept-new"
connect_timeout = 7
keepalive_interval = 9
become = true

[hosts.web]
address = "10.0.0.2"
port = 2222
jump = "ops@bastion:2200"

[hosts.db]
address = "::1"
user = "root"
become_user = "root"
"#;

    fn inv() -> Inventory {
        Inventory::parse(Path::new("/srv/inv/prod.toml"), INV).unwrap()
    }

    #[test]
    fn spec_carries_the_hosts_settings() {
        let inv = inv();
        let web = inv.hosts.iter().find(|h| h.name == "web").unwrap();
        let s = spec(web);
        assert_eq!((s.host.as_str(), s.address.as_str()), ("web", "10.0.0.2"));
        assert_eq!((s.port, s.user.as_str()), (2222, "deploy"));
        assert_eq!(s.identity_files, [PathBuf::from("/srv/inv/keys/id")]);
        assert!(s.use_agent);
        assert_eq!(s.known_hosts, [PathBuf::from("/srv/inv/kh")]);
        assert_eq!(s.policy, HostKeyPolicy::AcceptNew);
        assert_eq!(s.connect_timeout.as_secs(), 7);
        assert_eq!(s.keepalive_interval.as_secs(), 9);
        assert_eq!(s.target(), "10.0.0.2:2222");
        let [hop] = s.jump.as_slice() else {
            panic!("one hop: {:?}", s.jump)
        };
        assert_eq!(hop.name, "bastion");
        assert_eq!((hop.address.as_str(), hop.port), ("bastion", 2200));
        assert_eq!(hop.user, "ops");
        assert_eq!(hop.policy, HostKeyPolicy::AcceptNew);
        assert_eq!(hop.known_hosts, s.known_hosts);
        assert_eq!(hop.identity_files, s.identity_files);
    }

    #[test]
    fn become_only_when_another_user() {
        let inv = inv();
        let web = inv.hosts.iter().find(|h| h.name == "web").unwrap();
        let b = become_of(web, None).expect("deploy becomes root");
        assert_eq!(b.user, "root");
        let db = inv.hosts.iter().find(|h| h.name == "db").unwrap();
        assert!(become_of(db, None).is_none(), "root needs no sudo");
        let mut plain = web.clone();
        plain.become_ = false;
        assert!(become_of(&plain, None).is_none());
    }
}
