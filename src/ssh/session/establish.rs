//! Establishing one connection: TCP (or a direct-tcpip channel of a jump host), the SSH
//! handshake with the host-key check in [`ClientHandler`], then authentication; and the
//! connection errors in words.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use russh::client::{self, DisconnectReason, Handle};
use russh::keys::{Algorithm, PublicKey, PublicKeyOrCertificate};
use tokio::time::timeout_at;

use super::host_key::{Peer, order_host_key_algorithms, verify_host_key};
use crate::ssh::{Client, ConnectSpec, KEEPALIVE_MAX, SshError, auth};

/// State shared between the russh handler (which runs in the connection's task) and the
/// [`Session`].
#[derive(Default)]
pub(super) struct Shared {
    /// Why the host key was refused, with all details (russh itself only says "unknown key").
    pub(super) refusal: Mutex<Option<SshError>>,
    /// Why the connection ended.
    pub(super) disconnect: Mutex<Option<String>>,
    /// The key the server presented (scan mode).
    pub(super) scanned: Mutex<Option<PublicKey>>,
}

fn take<T>(m: &Mutex<Option<T>>) -> Option<T> {
    m.lock().unwrap_or_else(PoisonError::into_inner).take()
}

fn put<T>(m: &Mutex<Option<T>>, v: T) {
    *m.lock().unwrap_or_else(PoisonError::into_inner) = Some(v);
}

/// The russh client handler: host-key verification and disconnect bookkeeping.
pub(super) struct ClientHandler {
    peer: Peer,
    shared: Arc<Shared>,
    /// The command's known_hosts cache and learned keys.
    client: Client,
    /// Only read the host key (`known-hosts`): keep it and end the handshake.
    scan: bool,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // A host certificate is checked as its plain key (no CA support yet).
        let key = server_key.public_key();
        if self.scan {
            put(&self.shared.scanned, key.clone());
            return Ok(false);
        }
        let (peer, client) = (self.peer.clone(), self.client.clone());
        let verdict = tokio::task::spawn_blocking(move || verify_host_key(&peer, &key, &client))
            .await
            .map_err(|e| russh::Error::IO(std::io::Error::other(e)))?;
        match verdict {
            Ok(_) => Ok(true),
            Err(refusal) => {
                put(&self.shared.refusal, *refusal);
                Ok(false)
            }
        }
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                let msg = if info.message.is_empty() {
                    format!("the server disconnected ({:?})", info.reason_code)
                } else {
                    format!("the server disconnected: {}", info.message)
                };
                put(&self.shared.disconnect, msg);
                Ok(())
            }
            DisconnectReason::Error(e) => {
                put(&self.shared.disconnect, describe_connection_error(&e));
                Err(e)
            }
        }
    }
}

/// A russh connection-level error in words.
fn describe_connection_error(e: &russh::Error) -> String {
    match e {
        russh::Error::KeepaliveTimeout => {
            "the server stopped answering keepalives (host down, frozen, or network cut)".into()
        }
        russh::Error::InactivityTimeout => "no traffic for too long (inactivity timeout)".into(),
        russh::Error::IO(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection".into()
        }
        russh::Error::IO(io) => format!("network error: {io}"),
        russh::Error::HUP | russh::Error::Disconnect => "the server closed the connection".into(),
        other => other.to_string(),
    }
}

/// What [`establish`] ended with.
pub(super) enum Established {
    /// Connected and authenticated: the handle and its shared state.
    Session(Handle<ClientHandler>, Arc<Shared>),
    /// Scan mode: the key the server presented (the handshake was ended there).
    Scanned(PublicKey),
}

/// Connects to `spec` (over TCP, or through the jump host connection `through`), checks its
/// host key and authenticates; in `scan` mode only reads the host key.
pub(super) async fn establish(
    spec: &ConnectSpec,
    through: Option<(&Handle<ClientHandler>, &str)>,
    client: &Client,
    scan: bool,
) -> Result<Established, SshError> {
    let mut deadline = tokio::time::Instant::now() + spec.connect_timeout;
    let target = spec.target();
    let timeout = |phase| SshError::ConnectTimeout {
        host: spec.host.clone(),
        target: target.clone(),
        phase,
        timeout: spec.connect_timeout,
    };
    let known = known_algorithms(spec, &target, client).await?;
    let shared = Arc::new(Shared::default());
    let handler = ClientHandler {
        peer: Peer {
            host: spec.host.clone(),
            target: target.clone(),
            address: spec.address.clone(),
            port: spec.port,
            known_hosts: spec.known_hosts.clone(),
            policy: spec.policy,
            key_options: spec.key_options.clone(),
        },
        shared: shared.clone(),
        client: client.clone(),
        scan,
    };
    let config = Arc::new(connection_config(spec, &known));
    let handshake = match through {
        None => {
            let stream = tcp_connect(spec, &target, deadline, &timeout).await?;
            timeout_at(deadline, client::connect_stream(config, stream, handler)).await
        }
        Some((jump, jump_name)) => {
            let channel = jump_channel(spec, &target, jump, jump_name, deadline, &timeout).await?;
            timeout_at(
                deadline,
                client::connect_stream(config, channel.into_stream(), handler),
            )
            .await
        }
    };
    let mut handle = match handshake {
        Err(_) => return Err(timeout("the SSH handshake")),
        Ok(Err(e)) => {
            if let Some(key) = take(&shared.scanned) {
                return Ok(Established::Scanned(key));
            }
            if let Some(refusal) = take(&shared.refusal) {
                return Err(refusal);
            }
            return Err(handshake_error(spec, &target, e));
        }
        Ok(Ok(h)) => h,
    };
    authenticate_or_disconnect(&mut handle, spec, client, &mut deadline).await?;
    Ok(Established::Session(handle, shared))
}

/// Which key types the known_hosts files already hold for `spec`'s host (read off the async
/// threads, through the command's cache).
async fn known_algorithms(
    spec: &ConnectSpec,
    target: &str,
    client: &Client,
) -> Result<Vec<Algorithm>, SshError> {
    let (name, port) = spec.key_options.lookup(&spec.address, spec.port);
    let (paths, address) = (spec.known_hosts.clone(), name.to_string());
    let client = client.clone();
    tokio::task::spawn_blocking(move || {
        let mut known = Vec::new();
        for path in &paths {
            match client.known_hosts().load(path) {
                Ok(k) => known.extend(k.known_algorithms(&address, port)),
                Err(e) => return Err((path.clone(), e)),
            }
        }
        Ok(known)
    })
    .await
    .map_err(|e| (std::path::PathBuf::new(), std::io::Error::other(e)))
    .and_then(|r| r)
    .map_err(|(file, e)| SshError::KnownHosts {
        host: spec.host.clone(),
        target: target.to_string(),
        file,
        action: "read",
        reason: e.to_string(),
    })
}

/// russh's settings for one connection: keepalives and the inactivity limit from `spec`, and the
/// host-key algorithms of the `known` keys first.
fn connection_config(spec: &ConnectSpec, known: &[Algorithm]) -> client::Config {
    let mut config = client::Config {
        nodelay: true,
        keepalive_interval: Some(spec.keepalive_interval).filter(|d| !d.is_zero()),
        keepalive_max: KEEPALIVE_MAX,
        // With keepalive alone, a peer that stops reading is never noticed (russh waits in
        // its flush); replies to keepalives count as activity, so silent commands survive.
        inactivity_timeout: Some(spec.keepalive_interval * (KEEPALIVE_MAX as u32 + 2))
            .filter(|d| !d.is_zero()),
        ..Default::default()
    };
    if !known.is_empty() {
        config.preferred.key = Cow::Owned(order_host_key_algorithms(known, &config.preferred.key));
    }
    config
}

/// A direct-tcpip channel from the jump host `jump` (named `jump_name` in messages) to `spec`'s
/// address: the stream the SSH handshake with the host runs over.
async fn jump_channel(
    spec: &ConnectSpec,
    target: &str,
    jump: &Handle<ClientHandler>,
    jump_name: &str,
    deadline: tokio::time::Instant,
    timeout: &(dyn Fn(&'static str) -> SshError + Sync),
) -> Result<russh::Channel<client::Msg>, SshError> {
    match timeout_at(
        deadline,
        jump.channel_open_direct_tcpip(spec.address.clone(), u32::from(spec.port), "127.0.0.1", 0),
    )
    .await
    {
        Err(_) => Err(timeout("opening a channel through the jump host")),
        Ok(Err(e)) => Err(SshError::Unreachable {
            host: spec.host.clone(),
            target: target.to_string(),
            reason: format!(
                "jump host {jump_name} could not open a connection to it ({}); \
                 the jump host's sshd must allow TCP forwarding \
                 (AllowTcpForwarding) and reach the address",
                describe_connection_error(&e)
            ),
        }),
        Ok(Ok(c)) => Ok(c),
    }
}

/// Authenticates on `handle` (see `auth`); on failure disconnects politely (waiting at most a
/// second) before returning the error.
async fn authenticate_or_disconnect(
    handle: &mut Handle<ClientHandler>,
    spec: &ConnectSpec,
    client: &Client,
    deadline: &mut tokio::time::Instant,
) -> Result<String, SshError> {
    match auth::authenticate(handle, spec, client, deadline).await {
        Ok(m) => Ok(m),
        Err(e) => {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                handle.disconnect(russh::Disconnect::ByApplication, "", "en"),
            )
            .await;
            Err(e)
        }
    }
}

/// Resolves `spec.address` and opens a TCP connection to it (the first address that answers).
async fn tcp_connect(
    spec: &ConnectSpec,
    target: &str,
    deadline: tokio::time::Instant,
    timeout: &(dyn Fn(&'static str) -> SshError + Sync),
) -> Result<tokio::net::TcpStream, SshError> {
    let target = target.to_string();
    let addrs: Vec<std::net::SocketAddr> = match timeout_at(
        deadline,
        tokio::net::lookup_host((spec.address.as_str(), spec.port)),
    )
    .await
    {
        Err(_) => return Err(timeout("name resolution")),
        Ok(Err(e)) => {
            return Err(SshError::Resolve {
                host: spec.host.clone(),
                target,
                address: spec.address.clone(),
                reason: e.to_string(),
            });
        }
        Ok(Ok(a)) => a.collect(),
    };
    let mut last_error = None;
    let mut stream = None;
    for addr in &addrs {
        match timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
            Err(_) => return Err(timeout("TCP connect")),
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => last_error = Some(e),
        }
    }
    let Some(stream) = stream else {
        let reason = match last_error {
            None => format!("`{}` resolves to no address", spec.address),
            Some(e) => tcp_error_reason(&e, spec.port),
        };
        return Err(SshError::Unreachable {
            host: spec.host.clone(),
            target,
            reason,
        });
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn tcp_error_reason(e: &std::io::Error, port: u16) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => {
            format!("connection refused (is sshd running and listening on port {port}?)")
        }
        HostUnreachable => "no route to host".into(),
        NetworkUnreachable => "network is unreachable".into(),
        TimedOut => "TCP connect timed out".into(),
        ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

fn handshake_error(spec: &ConnectSpec, target: &str, e: russh::Error) -> SshError {
    let (reason, unreachable) = match &e {
        russh::Error::IO(_)
        | russh::Error::Disconnect
        | russh::Error::HUP
        | russh::Error::KeepaliveTimeout => (
            format!(
                "{} (sshd overloaded or limiting connections, MaxStartups, or a firewall?)",
                describe_connection_error(&e)
            ),
            true,
        ),
        russh::Error::Version => (
            format!(
                "no SSH server answered on port {} (invalid SSH version string)",
                spec.port
            ),
            false,
        ),
        russh::Error::NoCommonAlgo { kind, theirs, .. } => (
            format!(
                "no common {kind:?} algorithm; the server offers: {}",
                theirs.join(", ")
            ),
            false,
        ),
        other => (other.to_string(), false),
    };
    SshError::Handshake {
        host: spec.host.clone(),
        target: target.to_string(),
        reason,
        unreachable,
    }
}
