//! Jump hosts: the connections to the bastions of one chain, made once and shared by every
//! host behind them, and a failed attempt remembered for the hosts that wait for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use russh::client::Handle;

use super::establish::{ClientHandler, Established, establish};
use crate::ssh::{Client, ConnectSpec, SshError};

/// Connections to the jump hosts of one chain, shared by every session that goes through the
/// same chain (a fleet behind one bastion makes one connection to it, not one per host, so the
/// bastion's `MaxStartups` is not hit). Closed when the last session using it is gone.
pub(super) struct HopChain {
    pub(super) hops: Vec<Arc<Handle<ClientHandler>>>,
}

/// Per chain (see [`chain_key`]): the live connections, or why the last attempt failed (and
/// when).
#[derive(Default)]
pub(in crate::ssh) struct ChainSlot {
    live: std::sync::Weak<HopChain>,
    failed: Option<(String, bool, Instant)>,
}

/// The jump chains of one command (held by its [`Client`], living as long as it), by
/// [`chain_key`].
pub(in crate::ssh) type ChainSlots = Mutex<HashMap<String, Arc<tokio::sync::Mutex<ChainSlot>>>>;

/// What makes two hosts' jump chains the same connections: every hop's endpoint, user and
/// keys, and the host-key settings they are checked with.
fn chain_key(spec: &ConnectSpec) -> String {
    let mut k = format!("agent={}", spec.use_agent);
    for j in &spec.jump {
        k.push_str(&format!(
            " | {}@{} {:?} {} {:?} {:?} {:?}",
            j.user,
            crate::ssh::target_of(&j.address, j.port),
            j.identity_files,
            j.identities_only,
            j.known_hosts,
            j.policy,
            j.key_options
        ));
    }
    k
}

/// The jump host connections for `spec`: the live shared ones, else new ones (made once while
/// other hosts of the chain wait). A failure is remembered in `client`: the other hosts fail at
/// once with its reason instead of each waiting for the timeout.
pub(super) async fn shared_hops(
    spec: &ConnectSpec,
    client: &Client,
) -> Result<Arc<HopChain>, SshError> {
    if spec.jump.is_empty() {
        return Ok(Arc::new(HopChain { hops: Vec::new() }));
    }
    let slot = (client.chains())
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(chain_key(spec))
        .or_default()
        .clone();
    let mut slot = slot.lock().await;
    // A failure is given to the hosts that waited for that attempt (and to those that come
    // within the connect timeout); later ones try again.
    if let Some((reason, unreachable, at)) = &slot.failed
        && at.elapsed() < spec.connect_timeout
    {
        return Err(SshError::JumpFailed {
            host: spec.host.clone(),
            target: spec.target(),
            reason: reason.clone(),
            unreachable: *unreachable,
        });
    }
    if let Some(chain) = slot.live.upgrade()
        && !chain.hops.iter().any(|h| h.is_closed())
    {
        return Ok(chain);
    }
    match connect_hops(spec, client).await {
        Ok(hops) => {
            let chain = Arc::new(HopChain { hops });
            slot.live = Arc::downgrade(&chain);
            slot.failed = None;
            Ok(chain)
        }
        Err(e) => {
            slot.failed = Some((e.to_string(), e.is_unreachable(), Instant::now()));
            Err(e)
        }
    }
}

/// Connects the jump hosts of `spec` in order (each through the previous one); returns their
/// handles.
async fn connect_hops(
    spec: &ConnectSpec,
    client: &Client,
) -> Result<Vec<Arc<Handle<ClientHandler>>>, SshError> {
    let mut hops: Vec<Arc<Handle<ClientHandler>>> = Vec::new();
    let mut via: Option<&str> = None;
    for j in &spec.jump {
        let hop = ConnectSpec {
            // Shared by the hosts behind it: the message names the jump host only.
            host: format!("{} (jump host)", j.name),
            address: j.address.clone(),
            port: j.port,
            user: j.user.clone(),
            identity_files: j.identity_files.clone(),
            identities_only: j.identities_only,
            known_hosts: j.known_hosts.clone(),
            policy: j.policy,
            key_options: j.key_options.clone(),
            jump: Vec::new(),
            ..spec.clone()
        };
        let through = hops.last().map(|h| (h.as_ref(), via.unwrap_or("")));
        let Established::Session(handle, _) = establish(&hop, through, client, false).await? else {
            unreachable!("establish returns a session unless it scans");
        };
        hops.push(Arc::new(handle));
        via = Some(&j.name);
    }
    Ok(hops)
}
