//! [`Client`]: what the connections of one command share, owned by that command and passed to
//! every connect ([`Session::connect`](super::Session::connect),
//! [`Session::scan_host_key`](super::Session::scan_host_key)). No process-wide state: two
//! `Client`s share nothing.

use std::sync::{Arc, Mutex, PoisonError};

use super::PassphraseSource;
use super::auth::KeyCache;
use super::known_hosts::KnownHostsCache;
use super::session::ChainSlots;

/// The state shared by every connection of one command (a `plan`/`apply` run, `run`, `facts`,
/// `known-hosts`), created once by the command and dropped with it. Cheap to clone (the clones
/// share it). It holds:
/// - the [`PassphraseSource`] that unlocks encrypted keys;
/// - the decrypted private keys (by path, size and mtime) and one gate per key path, so a fleet
///   prompts once per key, not once per host, and runs bcrypt once;
/// - the jump-host chains: one connection per chain of bastions, shared by the hosts behind it,
///   and the last failure of each (told at once to the hosts that wait for it);
/// - the parsed known_hosts files (by path, size and mtime): each parsed once while unchanged;
/// - the host keys recorded under accept-new and not reported yet
///   ([`Client::take_learned_host_keys`]).
#[derive(Clone)]
pub(crate) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    passphrases: Arc<dyn PassphraseSource>,
    keys: KeyCache,
    chains: ChainSlots,
    known_hosts: KnownHostsCache,
    learned: Mutex<Vec<(String, String)>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client with empty caches that unlocks keys with `passphrases`.
    pub(crate) fn new(passphrases: Arc<dyn PassphraseSource>) -> Client {
        Client {
            inner: Arc::new(Inner {
                passphrases,
                keys: KeyCache::default(),
                chains: ChainSlots::default(),
                known_hosts: KnownHostsCache::default(),
                learned: Mutex::default(),
            }),
        }
    }

    /// Takes the host keys recorded under accept-new since the last call: (who, key), who being
    /// the inventory host or `NAME (jump host)`, key `ADDRESS:PORT ALGORITHM SHA256:...`. Every
    /// recording lands here, whatever happens to the connection afterwards (an authentication
    /// failure, a scan), so none goes unreported.
    pub(crate) fn take_learned_host_keys(&self) -> Vec<(String, String)> {
        std::mem::take(
            &mut *self
                .inner
                .learned
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    pub(super) fn passphrases(&self) -> &dyn PassphraseSource {
        self.inner.passphrases.as_ref()
    }

    pub(super) fn keys(&self) -> &KeyCache {
        &self.inner.keys
    }

    pub(super) fn chains(&self) -> &ChainSlots {
        &self.inner.chains
    }

    pub(super) fn known_hosts(&self) -> &KnownHostsCache {
        &self.inner.known_hosts
    }

    /// Notes a host key recorded under accept-new (see [`Client::take_learned_host_keys`]).
    pub(super) fn learned(&self, who: String, key: String) {
        (self
            .inner
            .learned
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
        .push((who, key));
    }
}
