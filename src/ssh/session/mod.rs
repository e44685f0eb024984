//! [`Session`]: one SSH connection to one host, and [`Session::exec`] on it.
//!
//! Connect = resolve, TCP connect (`nodelay`), key exchange with the host-key check in
//! [`ClientHandler::check_server_key`] (refused before authentication), then `auth`. The
//! host-key algorithms already recorded for the host are put first so that the server
//! presents a key we can check, as OpenSSH does.
//!
//! Exec = one session channel per command, at most [`MAX_CHANNELS`] at once. The reader drains
//! `wait()` until `Close`/`None` (never stopping at `ExitStatus` or `Eof`: output can follow
//! them), while stdin is written concurrently in packet-sized chunks and closed with EOF, so
//! neither side can stall the connection. `None` without an exit status or signal means the
//! connection died.
//!
//! This file holds the [`Session`] itself (connect, scan, counters, close). The steps live in
//! `establish` (one connection: TCP or a jump channel, handshake, authentication), `host_key`
//! (the presented key against the known_hosts files), `jump` (the jump host chains shared by the
//! hosts behind them) and `exec` (commands on channels).

mod establish;
mod exec;
mod host_key;
mod jump;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use russh::client::Handle;
use russh::keys::PublicKey;
use tokio::sync::Semaphore;

use super::{Client, ConnectSpec, SshError};
use establish::{ClientHandler, Established, Shared, establish};
pub(crate) use exec::{Chunk, ExecOutput, Output};
pub(super) use jump::ChainSlots;
use jump::{HopChain, shared_hops};

/// Channels (concurrent commands) per connection; sshd's default `MaxSessions` is 10.
pub(crate) const MAX_CHANNELS: usize = 8;

/// Counters of one session (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// SSH connections opened (always 1 for a session).
    pub connections: u32,
    /// Session channels opened.
    pub channels: u64,
    /// Remote round trips: one per [`Session::exec`] call.
    pub round_trips: u64,
    /// Payload sent: command lines and stdin bytes.
    pub bytes_sent: u64,
    /// Payload received: stdout and stderr bytes.
    pub bytes_received: u64,
    /// Time from the start of connect to the end of authentication.
    pub connect_time: Duration,
}

/// An established, authenticated SSH connection to one host. `Send + Sync`: share it with
/// `Arc` to run up to [`MAX_CHANNELS`] commands concurrently.
pub(crate) struct Session {
    handle: Arc<Handle<ClientHandler>>,
    /// Jump host connections, kept open as long as the session (dropped after `handle`).
    hops: Arc<HopChain>,
    shared: Arc<Shared>,
    host: String,
    target: String,
    channels_limit: Semaphore,
    channels: AtomicU64,
    round_trips: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    connect_time: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.host)
            .field("target", &self.target)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects (through `spec.jump` hosts, if any), checks the host key against
    /// `spec.known_hosts` (per `spec.policy`) and authenticates. Each connection (hop or host)
    /// gets `spec.connect_timeout` (passphrase prompts excluded). `client`: the command's shared
    /// state (keys, jump chains, known_hosts, learned keys).
    pub(crate) async fn connect(spec: &ConnectSpec, client: &Client) -> Result<Session, SshError> {
        let started = Instant::now();
        let hops = shared_hops(spec, client).await?;
        let through = hops
            .hops
            .last()
            .map(|h| (h.as_ref(), spec.jump.last().map_or("", |j| j.name.as_str())));
        let Established::Session(handle, shared) = establish(spec, through, client, false).await?
        else {
            unreachable!("establish returns a session unless it scans");
        };
        Ok(Session {
            handle: Arc::new(handle),
            hops,
            shared,
            host: spec.host.clone(),
            target: spec.target(),
            channels_limit: Semaphore::new(MAX_CHANNELS),
            channels: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            connect_time: started.elapsed(),
        })
    }

    /// Reads the host key `spec`'s host presents (through its jump hosts, which are connected
    /// and checked as usual), without checking it and without authenticating to the host.
    pub(crate) async fn scan_host_key(
        spec: &ConnectSpec,
        client: &Client,
    ) -> Result<PublicKey, SshError> {
        let hops = shared_hops(spec, client).await?;
        let through = hops
            .hops
            .last()
            .map(|h| (h.as_ref(), spec.jump.last().map_or("", |j| j.name.as_str())));
        let r = establish(spec, through, client, true).await;
        drop(hops);
        match r? {
            Established::Scanned(key) => Ok(key),
            Established::Session(..) => unreachable!("a scan ends at the host key"),
        }
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> SessionStats {
        SessionStats {
            connections: 1,
            channels: self.channels.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            connect_time: self.connect_time,
        }
    }

    /// Whether the connection is gone (exec would fail with `ConnectionLost`).
    pub(crate) fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Disconnects politely and waits (briefly) for the connection to wind down.
    pub(crate) async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.handle
                .disconnect(russh::Disconnect::ByApplication, "", "en"),
        )
        .await;
        if let Ok(handle) = Arc::try_unwrap(self.handle) {
            let _ = tokio::time::timeout(Duration::from_secs(2), handle).await;
        }
        // The jump host connections close when the last session using them is gone.
        if let Ok(chain) = Arc::try_unwrap(self.hops) {
            for hop in chain.hops.into_iter().rev() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    hop.disconnect(russh::Disconnect::ByApplication, "", "en"),
                )
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}

    /// Sessions are shared across tasks, and their futures are spawned.
    #[test]
    fn session_and_futures_are_send() {
        assert_send_sync::<Session>();
        #[allow(dead_code)]
        fn futures(s: &Session, spec: &ConnectSpec) {
            assert_send(&s.exec("true", None, Duration::ZERO));
            assert_send(&Session::connect(
                spec,
                &Client::new(std::sync::Arc::new(crate::ssh::NoPassphrase)),
            ));
        }
    }
}
