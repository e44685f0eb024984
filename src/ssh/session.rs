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

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use russh::client::{self, DisconnectReason, Handle};
use russh::keys::{Algorithm, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelOpenFailure, Sig};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::time::timeout_at;

use super::capture::{Capture, Dropped, Keep, Limits};
use super::known_hosts::{self, AddOutcome, HostKeyStatus, KnownHosts, Marker};
use super::{Client, ConnectSpec, HostKeyPolicy, KEEPALIVE_MAX, SshError, auth};

/// Read size of a streamed stdin ([`Session::exec_with`]): large writes make large packets.
pub const STREAM_CHUNK: usize = 256 * 1024;

/// Channels (concurrent commands) per connection; sshd's default `MaxSessions` is 10.
pub const MAX_CHANNELS: usize = 8;

/// How long output may still arrive after a command's exit status before the channel is
/// closed (a background child holding stdout open must not hold the run until its timeout).
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What a remote command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code, if the command exited normally.
    pub exit_status: Option<u32>,
    /// The signal name (`TERM`, `KILL`, ...) if the command was killed by one.
    pub exit_signal: Option<String>,
    /// What the client kept of stdout (see [`Limits`]; empty when it went to a sink).
    pub stdout: Vec<u8>,
    /// What the client kept of stderr.
    pub stderr: Vec<u8>,
    /// Bytes of stdout not kept (the middle of a long output, [`Keep::Ends`]).
    pub stdout_dropped: Option<Dropped>,
    /// Bytes of stderr not kept.
    pub stderr_dropped: Option<Dropped>,
    /// With [`Output::Sink`]: the error that stopped writing stdout to the sink (the
    /// command's output was then drained and dropped).
    pub sink_error: Option<String>,
}

impl ExecOutput {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }

    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// stderr as text (invalid UTF-8 replaced).
    pub fn stderr_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// stdout as text, with a line saying how many bytes were not kept where they were
    /// dropped (`hint`: how to get them all).
    pub fn stdout_shown(&self, hint: &str) -> String {
        super::capture::shown(&self.stdout, self.stdout_dropped, "stdout", hint)
    }

    /// stderr as text, marked as [`ExecOutput::stdout_shown`].
    pub fn stderr_shown(&self, hint: &str) -> String {
        super::capture::shown(&self.stderr, self.stderr_dropped, "stderr", hint)
    }
}

/// Where a command's output goes; every byte is either kept within [`Limits`] or passed on.
pub enum Output<'a> {
    /// Kept in [`ExecOutput`] within these limits.
    Keep(Limits),
    /// stdout written to the sink as it arrives (never held whole in memory); stderr kept.
    Sink(&'a mut (dyn tokio::io::AsyncWrite + Unpin + Send), Keep),
    /// Every chunk sent on the channel as it arrives (waiting for room: a slow reader slows
    /// the command down, through the SSH window), and also kept within the limits.
    Tee(tokio::sync::mpsc::Sender<Chunk>, Limits),
}

/// A piece of a command's output, as it arrived ([`Output::Tee`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

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

/// State shared between the russh handler (which runs in the connection's task) and the
/// [`Session`].
#[derive(Default)]
struct Shared {
    /// Why the host key was refused, with all details (russh itself only says "unknown key").
    refusal: Mutex<Option<SshError>>,
    /// Why the connection ended.
    disconnect: Mutex<Option<String>>,
    /// The key the server presented (scan mode).
    scanned: Mutex<Option<PublicKey>>,
}

fn take<T>(m: &Mutex<Option<T>>) -> Option<T> {
    m.lock().unwrap_or_else(PoisonError::into_inner).take()
}

fn put<T>(m: &Mutex<Option<T>>, v: T) {
    *m.lock().unwrap_or_else(PoisonError::into_inner) = Some(v);
}

/// Who we are talking to, for the host-key check and messages.
#[derive(Clone)]
struct Peer {
    host: String,
    target: String,
    address: String,
    port: u16,
    /// The user's known_hosts files; new keys go into the first.
    known_hosts: Vec<std::path::PathBuf>,
    policy: HostKeyPolicy,
    /// HostKeyAlias, the system-wide files, HashKnownHosts.
    key_options: known_hosts::KeyOptions,
}

impl Peer {
    /// The name and port its key is looked up and recorded under (HostKeyAlias, else the
    /// address and port).
    fn key_name(&self) -> (&str, u16) {
        self.key_options.lookup(&self.address, self.port)
    }
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

/// Checks (and under `accept-new` records) the presented key. Blocking (file I/O, flock).
/// `Ok(Some(fingerprint))` when a new key was recorded (and noted in `client`'s learned keys).
fn verify_host_key(
    peer: &Peer,
    key: &PublicKey,
    client: &Client,
) -> Result<Option<String>, Box<SshError>> {
    let error = |file: &std::path::Path, action, reason: String| {
        Box::new(SshError::KnownHosts {
            host: peer.host.clone(),
            target: peer.target.clone(),
            file: file.to_path_buf(),
            action,
            reason,
        })
    };
    let Some(first) = peer.known_hosts.first() else {
        return Err(error(
            std::path::Path::new(""),
            "read",
            "no known_hosts file is set".into(),
        ));
    };
    let read_error = |e: std::io::Error, action| error(first, action, e.to_string());
    let (name, port) = peer.key_name();
    // Every user file and the system-wide files count, as for OpenSSH (the system-wide ones are
    // read-only): a key revoked in any file is refused; a key recorded in any file is known;
    // otherwise a different key anywhere is a change.
    let mut files = Vec::new();
    for f in &peer.known_hosts {
        files.push((client.known_hosts().load(f)).map_err(|e| error(f, "read", e.to_string()))?);
    }
    for g in peer.key_options.global.iter().filter(|p| p.exists()) {
        files.push((client.known_hosts().load(g)).map_err(|e| error(g, "read", e.to_string()))?);
    }
    let statuses: Vec<HostKeyStatus> = files.iter().map(|f| f.check(name, port, key)).collect();
    if let Some(i) = statuses
        .iter()
        .position(|s| matches!(s, HostKeyStatus::Revoked))
    {
        return Err(Box::new(refusal(peer, &files[i], &statuses[i], key)));
    }
    if statuses.iter().any(|s| matches!(s, HostKeyStatus::Known)) {
        return Ok(None);
    }
    if let Some(i) = statuses
        .iter()
        .position(|s| matches!(s, HostKeyStatus::Changed { .. }))
    {
        return Err(Box::new(refusal(peer, &files[i], &statuses[i], key)));
    }
    // A host vouched for by a certificate authority presents certificates, which we do not check
    // yet: its plain key must not be trusted on first use behind the CA's back.
    if let Some(f) = files.iter().find(|f| {
        f.entries_for(name, port)
            .iter()
            .any(|e| e.marker == Marker::CertAuthority)
    }) {
        return Err(error(
            f.file(),
            "check",
            "a @cert-authority line covers this host, and host certificates are not supported yet; \
             add the host's own key to the known_hosts file to connect"
                .into(),
        ));
    }
    let kh = &files[0];
    match (&statuses[0], peer.policy) {
        (HostKeyStatus::Unknown, HostKeyPolicy::AcceptNew) => {
            let fp = format!(
                "{} {}",
                key.algorithm().as_str(),
                known_hosts::fingerprint(key)
            );
            let learned = |note: &str| {
                client.learned(peer.host.clone(), format!("{} {fp}{note}", peer.target));
            };
            match known_hosts::record(first, name, port, key, peer.key_options.hash)
                .map_err(|e| read_error(e, "update"))?
            {
                AddOutcome::Added => {
                    learned("");
                    Ok(Some(fp))
                }
                // `/dev/null`, a read-only directory: trusted for this connection only, as
                // OpenSSH does (it warns and goes on); the report says it was not recorded.
                AddOutcome::NotRecorded(why) => {
                    learned(&format!(
                        " (accepted for this run only, not recorded: {why})"
                    ));
                    Ok(Some(fp))
                }
                AddOutcome::NotAdded(HostKeyStatus::Known) => Ok(None),
                AddOutcome::NotAdded(other) => {
                    // Someone recorded a different key meanwhile: explain from the new content.
                    let kh = KnownHosts::load(first).map_err(|e| read_error(e, "read"))?;
                    Err(Box::new(refusal(peer, &kh, &other, key)))
                }
            }
        }
        (other, _) => Err(Box::new(refusal(peer, kh, other, key))),
    }
}

/// The error for a refused host key.
fn refusal(peer: &Peer, kh: &KnownHosts, status: &HostKeyStatus, key: &PublicKey) -> SshError {
    let (host, target) = (peer.host.clone(), peer.target.clone());
    let algorithm = key.algorithm().as_str().to_string();
    let fingerprint = known_hosts::fingerprint(key);
    let (key_name, key_port) = peer.key_name();
    let name = known_hosts::host_port_name(key_name, key_port);
    let entries = kh.entries_for(key_name, key_port);
    match status {
        HostKeyStatus::Revoked => {
            let line = entries
                .iter()
                .find(|e| e.marker == Marker::Revoked && e.holds(key))
                .map_or(0, |e| e.line);
            SshError::HostKeyRevoked {
                host,
                target,
                algorithm,
                fingerprint,
                file: kh.file().to_path_buf(),
                line,
            }
        }
        HostKeyStatus::Changed { line, file } => {
            let shown = entries.iter().find(|e| e.line == *line);
            let recorded = match shown.map(|e| &e.key) {
                Some(Ok(k)) if k.algorithm() == key.algorithm() => format!(
                    "a different {} key ({})",
                    k.algorithm().as_str(),
                    known_hosts::fingerprint(k)
                ),
                Some(Ok(_)) => {
                    let others: Vec<String> = entries
                        .iter()
                        .filter(|e| e.marker == Marker::None)
                        .filter_map(|e| e.key.as_ref().ok())
                        .map(|k| {
                            format!("{} {}", k.algorithm().as_str(), known_hosts::fingerprint(k))
                        })
                        .collect();
                    format!(
                        "only keys of other types ({}) and no {algorithm} key",
                        others.join(", ")
                    )
                }
                Some(Err(reason)) => format!("an entry that cannot be parsed ({reason})"),
                None => "a different key".to_string(),
            };
            SshError::HostKeyChanged {
                host,
                target,
                name,
                algorithm,
                fingerprint,
                file: file.clone(),
                line: *line,
                recorded,
            }
        }
        HostKeyStatus::Unknown | HostKeyStatus::Known => SshError::HostKeyUnknown {
            host,
            target,
            name,
            address: peer.address.clone(),
            port: peer.port,
            algorithm,
            fingerprint,
            file: kh.file().to_path_buf(),
        },
    }
}

/// Host-key algorithms in russh's default order, those of the already known keys first.
fn order_host_key_algorithms(known: &[Algorithm], defaults: &[Algorithm]) -> Vec<Algorithm> {
    let is_known = |a: &Algorithm| known.iter().any(|k| k == a || (is_rsa(k) && is_rsa(a)));
    let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) =
        defaults.iter().cloned().partition(is_known);
    first.extend(rest);
    first
}

fn is_rsa(a: &Algorithm) -> bool {
    matches!(a, Algorithm::Rsa { .. })
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

/// An established, authenticated SSH connection to one host. `Send + Sync`: share it with
/// `Arc` to run up to [`MAX_CHANNELS`] commands concurrently.
pub struct Session {
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
    authenticated_with: String,
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
    pub async fn connect(spec: &ConnectSpec, client: &Client) -> Result<Session, SshError> {
        let started = Instant::now();
        let hops = shared_hops(spec, client).await?;
        let through = hops
            .hops
            .last()
            .map(|h| (h.as_ref(), spec.jump.last().map_or("", |j| j.name.as_str())));
        let Established::Session(handle, shared, authenticated_with) =
            establish(spec, through, client, false).await?
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
            authenticated_with,
        })
    }

    /// Reads the host key `spec`'s host presents (through its jump hosts, which are connected
    /// and checked as usual), without checking it and without authenticating to the host.
    pub async fn scan_host_key(spec: &ConnectSpec, client: &Client) -> Result<PublicKey, SshError> {
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

    /// Runs `command` through the remote user's shell (it may be a whole `sh` script),
    /// feeding `stdin` (then EOF; EOF right away without stdin). One call = one channel = one
    /// counted round trip. `timeout` bounds the whole call (including waiting for a free
    /// channel); on expiry the channel is closed and [`SshError::Timeout`] returned — wrap the
    /// remote command in `timeout` too, signals are not reliable. The output is kept within
    /// [`Limits::PROBE`] (more stdout is [`SshError::OutputTooLarge`]).
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ExecOutput, SshError> {
        self.exec_with(
            command,
            stdin.unwrap_or_default(),
            None,
            Output::Keep(Limits::PROBE),
            timeout,
        )
        .await
    }

    /// Like [`Session::exec`], with the output going to `output`; and, when `stream` is given,
    /// after `stdin` the command's stdin is read from `stream` in chunks of [`STREAM_CHUNK`]
    /// bytes as the channel's window allows (backpressure: at most one chunk plus the SSH
    /// window is in flight, whatever the stream's length), then EOF. A read error ends the
    /// stream early (EOF is still sent); the caller checks the source. `stream` is dropped
    /// when the command ends, even if it was not read to its end. With [`Output::Sink`], a
    /// write error is reported in `sink_error` (the rest of stdout is then drained and dropped).
    pub async fn exec_with(
        &self,
        command: &str,
        stdin: &[u8],
        stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send + '_>>,
        output: Output<'_>,
        timeout: Duration,
    ) -> Result<ExecOutput, SshError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || SshError::Timeout {
            host: self.host.clone(),
            target: self.target.clone(),
            timeout,
        };
        let _permit = timeout_at(deadline, self.channels_limit.acquire())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| self.lost("before the command was sent"))?;
        let channel = match timeout_at(deadline, self.handle.channel_open_session()).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(russh::Error::ChannelOpenFailure(f))) => {
                return Err(SshError::ChannelOpen {
                    host: self.host.clone(),
                    target: self.target.clone(),
                    reason: open_failure_reason(&f),
                });
            }
            Ok(Err(_)) => return Err(self.lost("before the command was sent")),
            Ok(Ok(c)) => c,
        };
        // Counted once the channel exists, as sshd logs a session for it.
        self.channels.fetch_add(1, Ordering::Relaxed);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let (mut rx, tx) = channel.split();
        let res = match timeout_at(
            deadline,
            self.run(&mut rx, &tx, command, stdin, stream, output),
        )
        .await
        {
            Ok(Err(e @ SshError::OutputTooLarge { .. })) => e,
            Ok(r) => return r,
            Err(_) => timed_out(),
        };
        // Unread messages must not stall the connection while we clean up.
        drop(rx);
        // Best effort: ask sshd to kill the command (ignored for some accounts), and close
        // our side. Dropping `rx` afterwards never stalls the connection.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = tx.signal(Sig::KILL).await;
            let _ = tx.close().await;
        })
        .await;
        Err(res)
    }

    async fn run(
        &self,
        rx: &mut russh::ChannelReadHalf,
        tx: &russh::ChannelWriteHalf<client::Msg>,
        command: &str,
        stdin: &[u8],
        stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send + '_>>,
        output: Output<'_>,
    ) -> Result<ExecOutput, SshError> {
        let (mut sink, tee, limits) = match output {
            Output::Keep(l) => (None, None, l),
            Output::Sink(w, stderr) => (
                Some(w),
                None,
                Limits {
                    stdout: Keep::Whole { max: 0 },
                    stderr,
                },
            ),
            Output::Tee(t, l) => (None, Some(t), l),
        };
        let mut stdout_kept = Capture::new(limits.stdout);
        let mut stderr_kept = Capture::new(limits.stderr);
        let too_large = |stream: &'static str, max: usize| SshError::OutputTooLarge {
            host: self.host.clone(),
            target: self.target.clone(),
            stream,
            max,
        };
        tx.exec(true, command)
            .await
            .map_err(|_| self.lost("before the command was sent"))?;
        self.bytes_sent
            .fetch_add(command.len() as u64, Ordering::Relaxed);

        let writer = async {
            let mut w = tx.make_writer();
            if !stdin.is_empty() {
                // `write_all` on the whole buffer: the writer cuts it into packets of the
                // channel's maximum size (not tokio's 8 KiB copy buffer), waiting for window.
                w.write_all(stdin).await?;
                self.bytes_sent
                    .fetch_add(stdin.len() as u64, Ordering::Relaxed);
            }
            if let Some(mut src) = stream {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; STREAM_CHUNK];
                loop {
                    // A read error ends the stream: the remote side sees it truncated.
                    let n = match src.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // Waits for window: the source is read no faster than the target takes it.
                    w.write_all(&buf[..n]).await?;
                    self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            w.flush().await?;
            tx.eof().await.map_err(std::io::Error::other)
        };
        tokio::pin!(writer);
        let mut writer_done = false;
        let mut out = ExecOutput::default();
        // After the exit status, a background child may keep the channel open (its stdout is
        // ours): give the output a moment to drain, then stop waiting.
        let mut after_exit: Option<tokio::time::Instant> = None;
        loop {
            let grace = after_exit
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                () = tokio::time::sleep_until(grace), if after_exit.is_some() => {
                    let _ = tx.close().await;
                    break;
                }
                // The command may exit without reading all of stdin: then the writer stays
                // blocked on the window and is simply dropped when the channel closes.
                _ = &mut writer, if !writer_done => writer_done = true,
                msg = rx.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        self.bytes_received.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if let Some(t) = &tee {
                            // A reader that went away only stops the copy.
                            let _ = t.send(Chunk::Stdout(data.to_vec())).await;
                        }
                        match sink.as_mut() {
                            None => stdout_kept
                                .push(&data)
                                .map_err(|o| too_large("stdout", o.max))?,
                            Some(w) if out.sink_error.is_none() => {
                                use tokio::io::AsyncWriteExt;
                                if let Err(e) = w.write_all(&data).await {
                                    // The rest is not wanted: stop the command.
                                    out.sink_error = Some(e.to_string());
                                    let _ = tx.signal(Sig::KILL).await;
                                    let _ = tx.close().await;
                                    break;
                                }
                            }
                            Some(_) => {}
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, .. }) => {
                        self.bytes_received.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if let Some(t) = &tee {
                            let _ = t.send(Chunk::Stderr(data.to_vec())).await;
                        }
                        stderr_kept
                            .push(&data)
                            .map_err(|o| too_large("stderr", o.max))?;
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        out.exit_status = Some(exit_status);
                        after_exit.get_or_insert(tokio::time::Instant::now() + EXIT_GRACE);
                    }
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        out.exit_signal = Some(signal_text(&signal_name));
                        after_exit.get_or_insert(tokio::time::Instant::now() + EXIT_GRACE);
                    }
                    Some(ChannelMsg::Failure) => {
                        // sshd keeps a channel whose exec failed open (holding a MaxSessions
                        // slot) until we close it.
                        let _ = tx.close().await;
                        return Err(SshError::ExecRejected {
                            host: self.host.clone(),
                            target: self.target.clone(),
                        });
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
            }
        }
        if out.exit_status.is_none() && out.exit_signal.is_none() && out.sink_error.is_none() {
            return Err(self.lost("while a command was running (its outcome is unknown)"));
        }
        (out.stdout, out.stdout_dropped) = stdout_kept.finish();
        (out.stderr, out.stderr_dropped) = stderr_kept.finish();
        Ok(out)
    }

    fn lost(&self, during: &'static str) -> SshError {
        let reason = self
            .shared
            .disconnect
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "the connection closed".to_string());
        SshError::ConnectionLost {
            host: self.host.clone(),
            target: self.target.clone(),
            during,
            reason,
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            connections: 1,
            channels: self.channels.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            connect_time: self.connect_time,
        }
    }

    /// What authenticated the session: `agent key SHA256:...` or `key /path/to/id`.
    pub fn authenticated_with(&self) -> &str {
        &self.authenticated_with
    }

    /// Whether the connection is gone (exec would fail with `ConnectionLost`).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Disconnects politely and waits (briefly) for the connection to wind down.
    pub async fn close(self) {
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

/// Connections to the jump hosts of one chain, shared by every session that goes through the
/// same chain (a fleet behind one bastion makes one connection to it, not one per host, so the
/// bastion's `MaxStartups` is not hit). Closed when the last session using it is gone.
pub(super) struct HopChain {
    hops: Vec<Arc<Handle<ClientHandler>>>,
}

/// Per chain (see [`chain_key`]): the live connections, or why the last attempt failed (and
/// when).
#[derive(Default)]
pub(super) struct ChainSlot {
    live: std::sync::Weak<HopChain>,
    failed: Option<(String, bool, Instant)>,
}

/// The jump chains of one command (held by its [`Client`], living as long as it), by
/// [`chain_key`].
pub(super) type ChainSlots = Mutex<HashMap<String, Arc<tokio::sync::Mutex<ChainSlot>>>>;

/// What makes two hosts' jump chains the same connections: every hop's endpoint, user and
/// keys, and the host-key settings they are checked with.
fn chain_key(spec: &ConnectSpec) -> String {
    let mut k = format!("agent={}", spec.use_agent);
    for j in &spec.jump {
        k.push_str(&format!(
            " | {}@{} {:?} {} {:?} {:?} {:?}",
            j.user,
            super::target_of(&j.address, j.port),
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
async fn shared_hops(spec: &ConnectSpec, client: &Client) -> Result<Arc<HopChain>, SshError> {
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
        let Established::Session(handle, _, _) = establish(&hop, through, client, false).await?
        else {
            unreachable!("establish returns a session unless it scans");
        };
        hops.push(Arc::new(handle));
        via = Some(&j.name);
    }
    Ok(hops)
}

/// What [`establish`] ended with.
enum Established {
    /// Connected and authenticated: the handle, its shared state, what authenticated.
    Session(Handle<ClientHandler>, Arc<Shared>, String),
    /// Scan mode: the key the server presented (the handshake was ended there).
    Scanned(PublicKey),
}

/// Connects to `spec` (over TCP, or through the jump host connection `through`), checks its
/// host key and authenticates; in `scan` mode only reads the host key.
async fn establish(
    spec: &ConnectSpec,
    through: Option<(&Handle<ClientHandler>, &str)>,
    client: &Client,
    scan: bool,
) -> Result<Established, SshError> {
    let mut deadline = tokio::time::Instant::now() + spec.connect_timeout;
    let target = spec.target();
    let peer = Peer {
        host: spec.host.clone(),
        target: target.clone(),
        address: spec.address.clone(),
        port: spec.port,
        known_hosts: spec.known_hosts.clone(),
        policy: spec.policy,
        key_options: spec.key_options.clone(),
    };
    let timeout = |phase| SshError::ConnectTimeout {
        host: spec.host.clone(),
        target: target.clone(),
        phase,
        timeout: spec.connect_timeout,
    };

    // Which key types do we already know for this host?
    let known = {
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
            target: target.clone(),
            file,
            action: "read",
            reason: e.to_string(),
        })?
    };
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
        config.preferred.key = Cow::Owned(order_host_key_algorithms(&known, &config.preferred.key));
    }

    let shared = Arc::new(Shared::default());
    let handler = ClientHandler {
        peer,
        shared: shared.clone(),
        client: client.clone(),
        scan,
    };
    let config = Arc::new(config);
    let handshake = match through {
        None => {
            let stream = tcp_connect(spec, &target, deadline, &timeout).await?;
            timeout_at(deadline, client::connect_stream(config, stream, handler)).await
        }
        Some((jump, jump_name)) => {
            let channel = match timeout_at(
                deadline,
                jump.channel_open_direct_tcpip(
                    spec.address.clone(),
                    u32::from(spec.port),
                    "127.0.0.1",
                    0,
                ),
            )
            .await
            {
                Err(_) => return Err(timeout("opening a channel through the jump host")),
                Ok(Err(e)) => {
                    return Err(SshError::Unreachable {
                        host: spec.host.clone(),
                        target,
                        reason: format!(
                            "jump host {jump_name} could not open a connection to it ({}); \
                             the jump host's sshd must allow TCP forwarding \
                             (AllowTcpForwarding) and reach the address",
                            describe_connection_error(&e)
                        ),
                    });
                }
                Ok(Ok(c)) => c,
            };
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

    let authenticated_with =
        match auth::authenticate(&mut handle, spec, client, &mut deadline).await {
            Ok(m) => m,
            Err(e) => {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    handle.disconnect(russh::Disconnect::ByApplication, "", "en"),
                )
                .await;
                return Err(e);
            }
        };

    Ok(Established::Session(handle, shared, authenticated_with))
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

fn signal_text(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(s) => s.clone(),
    }
}

fn open_failure_reason(f: &ChannelOpenFailure) -> String {
    match f {
        ChannelOpenFailure::AdministrativelyProhibited => "administratively prohibited".into(),
        ChannelOpenFailure::ConnectFailed => "the open request was refused".into(),
        ChannelOpenFailure::UnknownChannelType => "session channels are not supported".into(),
        ChannelOpenFailure::ResourceShortage => "resource shortage".into(),
        ChannelOpenFailure::Other { code, reason } => format!("{reason} (code {code})"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::HashAlg;

    #[test]
    fn known_algorithms_go_first() {
        let defaults = russh::Preferred::default().key.to_vec();
        let rsa = Algorithm::Rsa { hash: None };
        let ordered = order_host_key_algorithms(&[rsa], &defaults);
        assert_eq!(ordered.len(), defaults.len());
        assert_eq!(
            ordered[0],
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512)
            }
        );
        assert!(ordered[..3].iter().all(is_rsa));
        assert_eq!(ordered[3], Algorithm::Ed25519);
        let ordered = order_host_key_algorithms(&[], &defaults);
        assert_eq!(ordered, defaults);
    }

    #[test]
    fn refusal_messages() {
        let peer = Peer {
            host: "h1".into(),
            target: "10.0.0.2:2222".into(),
            address: "10.0.0.2".into(),
            port: 2222,
            known_hosts: vec!["/kh".into()],
            policy: HostKeyPolicy::Strict,
            key_options: Default::default(),
        };
        let ed = PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIdkjSZ3tkrQooIjn1Lt+bneebVTmWTCmutm7dgYOU4A",
        )
        .unwrap();
        let ed2 =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKIVYOFh6xBYc3WidmWEq8m5yFx8bSB7vQzvBvXnqfRY";
        let kh = KnownHosts::parse("/kh", &format!("# x\n[10.0.0.2]:2222 {ed2}\n"));
        let status = kh.check("10.0.0.2", 2222, &ed);
        let m = refusal(&peer, &kh, &status, &ed).to_string();
        assert!(m.contains("has CHANGED"), "{m}");
        assert!(
            m.contains("SHA256:H1Kxrpz3X9errqug9mUOONKmqfPfH+AfKQAxl1ZS0lc"),
            "{m}"
        );
        assert!(
            m.contains("/kh:2 records a different ssh-ed25519 key (SHA256:w01g"),
            "{m}"
        );
        assert!(m.contains("ssh-keygen -R '[10.0.0.2]:2222' -f /kh"), "{m}");

        let kh = KnownHosts::parse("/kh", "");
        let m = refusal(&peer, &kh, &HostKeyStatus::Unknown, &ed).to_string();
        assert!(m.contains("is not known"), "{m}");
        assert!(
            m.contains("ssh-keyscan -p 2222 -t ed25519 10.0.0.2 >> /kh"),
            "{m}"
        );

        let kh = KnownHosts::parse("/kh", &format!("@revoked * {}\n", ed.to_openssh().unwrap()));
        let m = refusal(&peer, &kh, &HostKeyStatus::Revoked, &ed).to_string();
        assert!(m.contains("REVOKED") && m.contains("/kh:1"), "{m}");
    }

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
                &Client::new(std::sync::Arc::new(super::super::NoPassphrase)),
            ));
        }
    }

    #[test]
    fn exec_output_success() {
        let mut o = ExecOutput::default();
        assert!(!o.success());
        o.exit_status = Some(0);
        assert!(o.success());
        o.exit_status = Some(3);
        assert!(!o.success());
    }
}
