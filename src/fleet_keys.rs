//! `claw-provision known-hosts`: the host keys of the fleet, read by a key exchange with each
//! host (through its jump hosts; no authentication to the host itself), compared with the
//! known_hosts files, printed as known_hosts lines or pinned (recorded) in the inventory's file.
//! A changed key is never replaced.

use std::path::PathBuf;
use std::sync::Arc;

use crate::inventory::Host;
use crate::ssh::known_hosts::{self, AddOutcome, HostKeyStatus, KnownHosts};
use crate::ssh::{PublicKey, Session, SshError};

/// What was found for one host.
#[derive(Debug, Clone)]
pub(crate) enum KeyState {
    /// A known_hosts file already holds this key.
    Known,
    /// No file names the host (printed; recorded with `--pin`).
    New,
    /// `--pin` recorded it in this file.
    Recorded(PathBuf),
    /// A file holds a different key for the host, at `file:line`. Never replaced.
    Changed { file: PathBuf, line: usize },
    /// The key is `@revoked` for this host.
    Revoked,
    /// The key could not be read (or pinned): why.
    Failed(KeyFailure),
}

/// Why a host's key could not be read or pinned ([`KeyState::Failed`]).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum KeyFailure {
    /// The task reading the key, or checking it, died.
    #[error("internal error: {reason}")]
    Internal { reason: String },
    /// The key exchange with the host (or its jump hosts) failed.
    #[error(transparent)]
    Scan(Arc<SshError>),
    /// A known_hosts file could not be read.
    #[error("cannot read {}: {reason}", file.display())]
    Read { file: PathBuf, reason: String },
    /// `--pin` without any known_hosts file to record in.
    #[error("no known_hosts file is set")]
    NoFile,
    /// `--pin` could not record the key there (a special file, a read-only directory).
    #[error("not recorded: {why}")]
    NotRecorded { why: String },
    /// `--pin` failed to update the file.
    #[error("cannot update {}: {reason}", file.display())]
    Update { file: PathBuf, reason: String },
}

impl KeyState {
    pub(crate) fn word(&self) -> &'static str {
        match self {
            KeyState::Known => "known",
            KeyState::New => "new",
            KeyState::Recorded(_) => "recorded",
            KeyState::Changed { .. } => "CHANGED",
            KeyState::Revoked => "REVOKED",
            KeyState::Failed(_) => "failed",
        }
    }

    /// Whether the command should exit non-zero for this host.
    pub(crate) fn is_problem(&self) -> bool {
        matches!(
            self,
            KeyState::Changed { .. } | KeyState::Revoked | KeyState::Failed(_)
        )
    }
}

/// One host's key and its state.
#[derive(Debug, Clone)]
pub(crate) struct KeyReport {
    pub host: String,
    /// `address:port`
    pub target: String,
    /// The known_hosts line for the presented key (`host algorithm base64`).
    pub line: Option<String>,
    /// `ALGORITHM SHA256:...`
    pub fingerprint: Option<String>,
    pub state: KeyState,
}

/// Reads every host's key (`forks` at a time) and, with `pin`, records the new ones in each
/// host's first known_hosts file (atomically with respect to other writers, under its lock).
pub(crate) async fn scan(
    hosts: Vec<Host>,
    forks: usize,
    pin: bool,
    client: &crate::ssh::Client,
) -> Vec<KeyReport> {
    let sem = Arc::new(tokio::sync::Semaphore::new(forks.max(1)));
    let mut tasks = Vec::new();
    for h in hosts {
        let (sem, client) = (sem.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore is never closed");
            one(h, pin, &client).await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => out.push(r),
            Err(e) => out.push(KeyReport {
                host: String::new(),
                target: String::new(),
                line: None,
                fingerprint: None,
                state: KeyState::Failed(KeyFailure::Internal {
                    reason: e.to_string(),
                }),
            }),
        }
    }
    out
}

async fn one(h: Host, pin: bool, client: &crate::ssh::Client) -> KeyReport {
    let spec = crate::connect::spec(&h);
    let mut r = KeyReport {
        host: h.name.clone(),
        target: spec.target(),
        line: None,
        fingerprint: None,
        state: KeyState::New,
    };
    let key = match Session::scan_host_key(&spec, client).await {
        Ok(k) => k,
        Err(e) => {
            r.state = KeyState::Failed(KeyFailure::Scan(Arc::new(e)));
            return r;
        }
    };
    r.fingerprint = Some(format!(
        "{} {}",
        key.algorithm().as_str(),
        known_hosts::fingerprint(&key)
    ));
    let (name, port) = h.key_options.lookup(&h.address, h.port);
    let name = name.to_string();
    r.line = known_hosts::entry_line_as(&name, port, &key, h.key_options.hash).ok();
    let files = h.known_hosts.clone();
    let opts = h.key_options.clone();
    let state =
        tokio::task::spawn_blocking(move || state_of(&files, &opts, &name, port, &key, pin))
            .await
            .unwrap_or_else(|e| {
                KeyState::Failed(KeyFailure::Internal {
                    reason: e.to_string(),
                })
            });
    r.state = state;
    r
}

/// The key's state across the user's files and the system-wide ones; records it with `pin`.
fn state_of(
    files: &[PathBuf],
    opts: &known_hosts::KeyOptions,
    address: &str,
    port: u16,
    key: &PublicKey,
    pin: bool,
) -> KeyState {
    let mut statuses = Vec::new();
    let globals = opts.global.iter().filter(|p| p.exists()).cloned();
    for f in files.iter().cloned().chain(globals) {
        match KnownHosts::load(&f) {
            Ok(kh) => statuses.push(kh.check(address, port, key)),
            Err(e) => {
                return KeyState::Failed(KeyFailure::Read {
                    file: f,
                    reason: e.to_string(),
                });
            }
        }
    }
    if statuses.contains(&HostKeyStatus::Revoked) {
        return KeyState::Revoked;
    }
    if statuses.contains(&HostKeyStatus::Known) {
        return KeyState::Known;
    }
    if let Some(HostKeyStatus::Changed { line, file }) = statuses
        .iter()
        .find(|s| matches!(s, HostKeyStatus::Changed { .. }))
    {
        return KeyState::Changed {
            file: file.clone(),
            line: *line,
        };
    }
    if !pin {
        return KeyState::New;
    }
    let Some(first) = files.first() else {
        return KeyState::Failed(KeyFailure::NoFile);
    };
    match known_hosts::record(first, address, port, key, opts.hash) {
        Ok(AddOutcome::Added) => KeyState::Recorded(first.clone()),
        Ok(AddOutcome::NotRecorded(why)) => KeyState::Failed(KeyFailure::NotRecorded { why }),
        Ok(AddOutcome::NotAdded(HostKeyStatus::Known)) => KeyState::Known,
        Ok(AddOutcome::NotAdded(HostKeyStatus::Revoked)) => KeyState::Revoked,
        Ok(AddOutcome::NotAdded(HostKeyStatus::Changed { line, file })) => {
            KeyState::Changed { file, line }
        }
        Ok(AddOutcome::NotAdded(HostKeyStatus::Unknown)) => KeyState::New,
        Err(e) => KeyState::Failed(KeyFailure::Update {
            file: first.clone(),
            reason: e.to_string(),
        }),
    }
}

/// The text report: known_hosts lines (each under a comment naming the host and its state),
/// or with `pin` one line per host. Problems are explained after.
pub(crate) fn text(reports: &[KeyReport], pin: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let width = reports.iter().map(|r| r.host.len()).max().unwrap_or(0);
    for r in reports {
        let fp = r.fingerprint.as_deref().unwrap_or("-");
        if pin {
            let what = match &r.state {
                KeyState::Recorded(f) => format!("recorded in {}", f.display()),
                KeyState::Known => "already known".into(),
                s => s.word().to_string(),
            };
            let _ = writeln!(out, "{:<width$}  {}  {fp}  {what}", r.host, r.target);
        } else if let Some(line) = &r.line {
            let _ = writeln!(out, "# {} {} {fp} ({})", r.host, r.target, r.state.word());
            let _ = writeln!(out, "{line}");
        }
    }
    let problems: Vec<&KeyReport> = reports.iter().filter(|r| r.state.is_problem()).collect();
    if !problems.is_empty() {
        let _ = writeln!(out);
    }
    for r in problems {
        let why = match &r.state {
            KeyState::Changed { file, line } => format!(
                "the host presents {} but {}:{line} holds a different key; it was not replaced. If the \
                 change is expected, remove the old entry (ssh-keygen -R '{}' -f FILE) and run again",
                r.fingerprint.as_deref().unwrap_or("a key"),
                file.display(),
                r.line
                    .as_deref()
                    .and_then(|l| l.split(' ').next())
                    .unwrap_or(&r.target)
            ),
            KeyState::Revoked => "the key it presents is @revoked in a known_hosts file".into(),
            KeyState::Failed(e) => e.to_string(),
            _ => continue,
        };
        let _ = writeln!(out, "{}: {why}", r.host);
    }
    out
}

/// One JSON object per host.
pub(crate) fn json(r: &KeyReport) -> serde_json::Value {
    let detail = match &r.state {
        KeyState::Recorded(f) => Some(f.display().to_string()),
        KeyState::Changed { file, line } => Some(format!("{}:{line}", file.display())),
        KeyState::Failed(e) => Some(e.to_string()),
        _ => None,
    };
    serde_json::json!({
        "event": "host_key", "host": r.host, "target": r.target, "fingerprint": r.fingerprint,
        "known_hosts_line": r.line, "state": r.state.word().to_lowercase(), "detail": detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PublicKey {
        PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ",
        )
        .unwrap()
    }

    #[test]
    fn states_across_files_and_pinning() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let k = key();
        let o = known_hosts::KeyOptions::default();
        assert!(matches!(
            state_of(std::slice::from_ref(&a), &o, "192.0.2.1", 22, &k, false),
            KeyState::New
        ));
        assert!(!a.exists(), "printing writes nothing");
        match state_of(&[a.clone(), b.clone()], &o, "192.0.2.1", 22, &k, true) {
            KeyState::Recorded(f) => assert_eq!(f, a),
            s => panic!("{s:?}"),
        }
        // Known from the first file even when the second is asked first.
        assert!(matches!(
            state_of(&[b.clone(), a.clone()], &o, "192.0.2.1", 22, &k, true),
            KeyState::Known
        ));
        // A different key recorded: never replaced.
        std::fs::write(
            &b,
            "[192.0.2.2]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
        )
        .unwrap();
        let before = std::fs::read(&b).unwrap();
        match state_of(std::slice::from_ref(&b), &o, "192.0.2.2", 2222, &k, true) {
            KeyState::Changed { file, line } => assert_eq!((file, line), (b.clone(), 1)),
            s => panic!("{s:?}"),
        }
        assert_eq!(std::fs::read(&b).unwrap(), before);
    }

    #[test]
    fn text_report() {
        let r = vec![
            KeyReport {
                host: "h1".into(),
                target: "10.0.0.1:22".into(),
                line: Some("10.0.0.1 ssh-ed25519 AAAA".into()),
                fingerprint: Some("ssh-ed25519 SHA256:x".into()),
                state: KeyState::New,
            },
            KeyReport {
                host: "h2".into(),
                target: "10.0.0.2:22".into(),
                line: None,
                fingerprint: None,
                state: KeyState::Failed(KeyFailure::NotRecorded {
                    why: "/dev/null is a character device".into(),
                }),
            },
        ];
        let t = text(&r, false);
        assert!(
            t.starts_with(
                "# h1 10.0.0.1:22 ssh-ed25519 SHA256:x (new)\n10.0.0.1 ssh-ed25519 AAAA\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("h2: not recorded: /dev/null is a character device"),
            "{t}"
        );
        let p = text(&r, true);
        assert!(
            p.contains("h1  10.0.0.1:22  ssh-ed25519 SHA256:x  new"),
            "{p}"
        );
    }
}
