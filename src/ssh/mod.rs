//! The SSH transport: one authenticated connection per host, and remote commands on it.
//!
//! This module is the only user of `russh` in the project. It owns:
//! - [`ConnectSpec`] (what to connect to and how), [`PassphraseSource`] (how to unlock keys);
//! - [`Client`]: what the connections of one command share (decrypted keys, jump chains, parsed
//!   known_hosts, learned host keys), owned by the command and passed to every connect;
//! - [`Session`]: connect (TCP, key exchange, host-key check, authentication) and
//!   [`Session::exec`] (one command = one channel = one counted round trip);
//! - host-key trust in [`known_hosts`] (our own OpenSSH-compatible parser and writer);
//! - authentication (agent, then identity files) in `auth`;
//! - the operator-facing errors in [`SshError`];
//! - the key type the layers above handle ([`PublicKey`], re-exported from russh).
//!
//! Facts about russh 0.65.1 that shaped this code are in `shared/notes/russh.md`.

mod auth;
pub(crate) mod capture;
mod client;
mod error;
pub(crate) mod known_hosts;
mod session;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::Secret;

pub(crate) use capture::{Keep, Limits};
pub(crate) use client::Client;
pub(crate) use error::SshError;
pub use known_hosts::KnownHosts;
pub(crate) use known_hosts::{HostKeyPolicy, KeyOptions};
/// A public key: a host's key as [`Session::scan_host_key`] reads it, or as a known_hosts line
/// holds it (`PublicKey::from_openssh("ssh-ed25519 AAAA...")`). russh's type, re-exported so
/// that the modules above `ssh/` use keys without naming russh.
pub(crate) use russh::keys::PublicKey;
pub(crate) use session::{Chunk, ExecOutput, Output, Session, SessionStats};

/// Default interval between SSH keepalives when the server is silent; the connection is
/// declared lost after [`KEEPALIVE_MAX`] unanswered ones.
pub(crate) const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Unanswered keepalives before the connection is declared lost.
pub(crate) const KEEPALIVE_MAX: usize = 3;

/// Everything needed to open one connection to one host.
#[derive(Debug, Clone)]
pub(crate) struct ConnectSpec {
    /// Inventory name, for messages.
    pub host: String,
    /// IP address or DNS name to connect to; also the name looked up in `known_hosts`.
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Private keys tried in order, after the agent.
    pub identity_files: Vec<PathBuf>,
    /// Try the agent at `SSH_AUTH_SOCK` first (if the variable is set).
    pub use_agent: bool,
    /// Only the agent's keys that match an identity file (OpenSSH's `IdentitiesOnly`).
    pub identities_only: bool,
    /// Jump hosts, connected in order; the next hop (or the host) is reached through a
    /// direct-tcpip channel of the previous one. Each hop's host key is checked too.
    pub jump: Vec<JumpSpec>,
    /// known_hosts files: all are read; new keys (accept-new) are recorded in the first.
    pub known_hosts: Vec<PathBuf>,
    pub policy: HostKeyPolicy,
    /// HostKeyAlias, the system-wide files, HashKnownHosts.
    pub key_options: KeyOptions,
    /// Limit for TCP connect + key exchange + authentication together (time spent waiting
    /// for a passphrase is not counted).
    pub connect_timeout: Duration,
    /// Keepalive interval (see [`DEFAULT_KEEPALIVE_INTERVAL`]).
    pub keepalive_interval: Duration,
}

/// One jump host.
#[derive(Debug, Clone)]
pub(crate) struct JumpSpec {
    /// As written in the inventory or ssh_config, for messages.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    pub identities_only: bool,
    /// The hop's own known_hosts files and policy.
    pub known_hosts: Vec<PathBuf>,
    pub policy: HostKeyPolicy,
    pub key_options: KeyOptions,
}

impl ConnectSpec {
    /// `address:port` as shown in messages (`[v6addr]:port` for IPv6 addresses).
    pub(crate) fn target(&self) -> String {
        target(&self.address, self.port)
    }
}

/// Supplies passphrases for encrypted private keys (from `CLAW_SSH_PASSPHRASE` or a prompt;
/// implemented by the caller). Called at most once per key file and connection, only when the
/// key is actually needed; may block (a terminal prompt). Returning `None` skips the key.
pub(crate) trait PassphraseSource: Send + Sync {
    fn passphrase(&self, key_path: &Path) -> Option<Secret>;
}

/// A [`PassphraseSource`] that never has a passphrase (encrypted keys are skipped).
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoPassphrase;

#[cfg(test)]
impl PassphraseSource for NoPassphrase {
    fn passphrase(&self, _key_path: &Path) -> Option<Secret> {
        None
    }
}

/// `address:port`, bracketing IPv6 addresses.
pub(crate) fn target_of(address: &str, port: u16) -> String {
    target(address, port)
}

/// `address:port`, bracketing IPv6 addresses.
fn target(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target("10.0.0.2", 22), "10.0.0.2:22");
        assert_eq!(target("::1", 2222), "[::1]:2222");
        assert_eq!(target("web1.example.com", 22), "web1.example.com:22");
    }
}
