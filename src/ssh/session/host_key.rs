//! The host-key check: the key a server presents against every known_hosts file (the user's
//! and the system-wide ones), trust on first use under `accept-new`, and the refusal messages.

use std::sync::Arc;

use russh::keys::{Algorithm, PublicKey};

use crate::ssh::known_hosts::{self, AddOutcome, HostKeyStatus, KnownHosts, Marker};
use crate::ssh::{Client, HostKeyPolicy, SshError};

/// Who we are talking to, for the host-key check and messages.
#[derive(Clone)]
pub(super) struct Peer {
    pub(super) host: String,
    pub(super) target: String,
    pub(super) address: String,
    pub(super) port: u16,
    /// The user's known_hosts files; new keys go into the first.
    pub(super) known_hosts: Vec<std::path::PathBuf>,
    pub(super) policy: HostKeyPolicy,
    /// HostKeyAlias, the system-wide files, HashKnownHosts.
    pub(super) key_options: known_hosts::KeyOptions,
}

impl Peer {
    /// The name and port its key is looked up and recorded under (HostKeyAlias, else the
    /// address and port).
    fn key_name(&self) -> (&str, u16) {
        self.key_options.lookup(&self.address, self.port)
    }
}

/// Checks (and under `accept-new` records) the presented key. Blocking (file I/O, flock).
/// `Ok(Some(fingerprint))` when a new key was recorded (and noted in `client`'s learned keys).
pub(super) fn verify_host_key(
    peer: &Peer,
    key: &PublicKey,
    client: &Client,
) -> Result<Option<String>, Box<SshError>> {
    let Some(first) = peer.known_hosts.first() else {
        return Err(file_error(
            peer,
            std::path::Path::new(""),
            "read",
            "no known_hosts file is set".into(),
        ));
    };
    let files = load_files(peer, client)?;
    let (name, port) = peer.key_name();
    let statuses: Vec<HostKeyStatus> = files.iter().map(|f| f.check(name, port, key)).collect();
    if recorded_anywhere(peer, key, &files, &statuses)? {
        return Ok(None);
    }
    match (&statuses[0], peer.policy) {
        (HostKeyStatus::Unknown, HostKeyPolicy::AcceptNew) => accept_new(peer, key, client, first),
        (other, _) => Err(Box::new(refusal(peer, &files[0], other, key))),
    }
}

/// The error for a known_hosts file that could not be read, updated or used (`action`).
fn file_error(
    peer: &Peer,
    file: &std::path::Path,
    action: &'static str,
    reason: String,
) -> Box<SshError> {
    Box::new(SshError::KnownHosts {
        host: peer.host.clone(),
        target: peer.target.clone(),
        file: file.to_path_buf(),
        action,
        reason,
    })
}

/// Every file the key is checked against, through the command's cache: the user's files, then
/// the system-wide ones that exist. As for OpenSSH, all of them count (the system-wide ones are
/// read-only).
fn load_files(peer: &Peer, client: &Client) -> Result<Vec<Arc<KnownHosts>>, Box<SshError>> {
    let global = peer.key_options.global.iter().filter(|p| p.exists());
    peer.known_hosts
        .iter()
        .chain(global)
        .map(|f| {
            (client.known_hosts().load(f)).map_err(|e| file_error(peer, f, "read", e.to_string()))
        })
        .collect()
}

/// What the files say together (`statuses`: the key's status in each): a key revoked in any file
/// is refused; a key recorded in any file is known (`Ok(true)`); otherwise a different key
/// anywhere is a change. A host covered only by a `@cert-authority` line is refused too.
/// `Ok(false)`: no file knows the host.
fn recorded_anywhere(
    peer: &Peer,
    key: &PublicKey,
    files: &[Arc<KnownHosts>],
    statuses: &[HostKeyStatus],
) -> Result<bool, Box<SshError>> {
    if let Some(i) = statuses
        .iter()
        .position(|s| matches!(s, HostKeyStatus::Revoked))
    {
        return Err(Box::new(refusal(peer, &files[i], &statuses[i], key)));
    }
    if statuses.iter().any(|s| matches!(s, HostKeyStatus::Known)) {
        return Ok(true);
    }
    if let Some(i) = statuses
        .iter()
        .position(|s| matches!(s, HostKeyStatus::Changed { .. }))
    {
        return Err(Box::new(refusal(peer, &files[i], &statuses[i], key)));
    }
    // A host vouched for by a certificate authority presents certificates, which we do not check
    // yet: its plain key must not be trusted on first use behind the CA's back.
    let (name, port) = peer.key_name();
    if let Some(f) = files.iter().find(|f| {
        f.entries_for(name, port)
            .iter()
            .any(|e| e.marker == Marker::CertAuthority)
    }) {
        return Err(file_error(
            peer,
            f.file(),
            "check",
            "a @cert-authority line covers this host, and host certificates are not supported yet; \
             add the host's own key to the known_hosts file to connect"
                .into(),
        ));
    }
    Ok(false)
}

/// Trust on first use: records the unknown `key` in `first` (the user's first known_hosts file)
/// and notes it in `client`'s learned keys. A file that cannot hold it leaves the key trusted for
/// this connection only; a different key recorded meanwhile is a refusal.
fn accept_new(
    peer: &Peer,
    key: &PublicKey,
    client: &Client,
    first: &std::path::Path,
) -> Result<Option<String>, Box<SshError>> {
    let (name, port) = peer.key_name();
    let fp = format!(
        "{} {}",
        key.algorithm().as_str(),
        known_hosts::fingerprint(key)
    );
    let learned = |note: &str| {
        client.learned(peer.host.clone(), format!("{} {fp}{note}", peer.target));
    };
    match known_hosts::record(first, name, port, key, peer.key_options.hash)
        .map_err(|e| file_error(peer, first, "update", e.to_string()))?
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
            let kh = KnownHosts::load(first)
                .map_err(|e| file_error(peer, first, "read", e.to_string()))?;
            Err(Box::new(refusal(peer, &kh, &other, key)))
        }
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
pub(super) fn order_host_key_algorithms(
    known: &[Algorithm],
    defaults: &[Algorithm],
) -> Vec<Algorithm> {
    let is_known = |a: &Algorithm| known.iter().any(|k| k == a || (is_rsa(k) && is_rsa(a)));
    let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) =
        defaults.iter().cloned().partition(is_known);
    first.extend(rest);
    first
}

fn is_rsa(a: &Algorithm) -> bool {
    matches!(a, Algorithm::Rsa { .. })
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
}
