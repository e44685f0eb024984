//! [`SshError`]: every way the SSH transport fails, worded for the operator.
//!
//! Each message says what happened, on which host (`host `h1` (10.0.0.2:22)`), and what to do.
//! No message ever contains a secret (passphrases never reach this type) or a remote command
//! line (which could carry one).

use std::path::PathBuf;
use std::time::Duration;

/// An SSH transport failure. `host` is the inventory name, `target` the `address:port`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SshError {
    /// The address could not be resolved.
    #[error(
        "host `{host}` ({target}) is unreachable: cannot resolve `{address}`: {reason}; check the \
         host's address in the inventory and the DNS"
    )]
    Resolve {
        host: String,
        target: String,
        address: String,
        reason: String,
    },

    /// The jump host connection that other hosts of this run share could not be made (the
    /// first host to try it got the full error).
    #[error("host `{host}` ({target}): cannot connect through the jump host: {reason}")]
    JumpFailed {
        host: String,
        target: String,
        reason: String,
        unreachable: bool,
    },

    /// TCP connect failed (refused, no route, reset).
    #[error("host `{host}` ({target}) is unreachable: {reason}")]
    Unreachable {
        host: String,
        target: String,
        reason: String,
    },

    /// Connecting (name resolution, TCP, SSH handshake or authentication) took longer than
    /// `connect_timeout`.
    #[error(
        "host `{host}` ({target}) is unreachable: no answer within {} during {phase}; {}",
        secs(*.timeout),
        timeout_hint(.phase, .target)
    )]
    ConnectTimeout {
        host: String,
        target: String,
        phase: &'static str,
        timeout: Duration,
    },

    /// The SSH handshake failed. `unreachable`: the peer closed or reset the connection
    /// (overloaded sshd, `MaxStartups`, not an SSH server), as opposed to a configuration
    /// mismatch (no common algorithm).
    #[error("host `{host}` ({target}): the SSH handshake failed: {reason}")]
    Handshake {
        host: String,
        target: String,
        reason: String,
        unreachable: bool,
    },

    /// The presented host key differs from the recorded one(s). Refused before authentication.
    #[error(
        "host key of host `{host}` ({target}) has CHANGED, refusing to connect: the server \
         presented the {algorithm} key {fingerprint}, but {}:{line} records {recorded} for \
         `{name}`. Someone may be intercepting the connection (man-in-the-middle), or the host \
         was reinstalled or re-keyed. Check the new fingerprint on the host (`ssh-keygen -lf \
         /etc/ssh/ssh_host_{}_key.pub`); if the change is expected, remove the old entry with \
         `ssh-keygen -R {} -f {}` and connect again",
        file.display(),
        keyscan_type(.algorithm),
        shell_word(.name),
        shell_word(&file.display().to_string())
    )]
    HostKeyChanged {
        host: String,
        target: String,
        /// Name looked up in known_hosts (`addr` or `[addr]:port`).
        name: String,
        algorithm: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
        /// What the line records, e.g. "a different ssh-ed25519 key (SHA256:...)".
        recorded: String,
    },

    /// No entry for the host and policy `strict`.
    #[error(
        "host key of host `{host}` ({target}) is not known and host_key_policy is \"strict\", \
         refusing to connect: the server presented the {algorithm} key {fingerprint}, and {} has \
         no entry for `{name}`. Check that fingerprint on the host (`ssh-keygen -lf \
         /etc/ssh/ssh_host_{}_key.pub`), then add the key with `ssh-keyscan -p {port} -t {} {} \
         >> {}`, or set host_key_policy = \"accept-new\" to record it on first connection",
        file.display(),
        keyscan_type(.algorithm),
        keyscan_type(.algorithm),
        shell_word(.address),
        shell_word(&file.display().to_string())
    )]
    HostKeyUnknown {
        host: String,
        target: String,
        name: String,
        address: String,
        port: u16,
        algorithm: String,
        fingerprint: String,
        file: PathBuf,
    },

    /// The presented key is marked `@revoked`.
    #[error(
        "host key of host `{host}` ({target}) is REVOKED, refusing to connect: the server \
         presented the {algorithm} key {fingerprint}, which {}:{line} marks @revoked. Give the \
         host a new host key, or delete that line if the revocation is a mistake",
        file.display()
    )]
    HostKeyRevoked {
        host: String,
        target: String,
        algorithm: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },

    /// The known_hosts file could not be read or updated.
    #[error(
        "host `{host}` ({target}): cannot {action} the known_hosts file {}: {reason}; check the \
         known_hosts path and its permissions",
        file.display()
    )]
    KnownHosts {
        host: String,
        target: String,
        file: PathBuf,
        action: &'static str,
        reason: String,
    },

    /// The server refused every key offered (or none could be offered).
    #[error(
        "authentication as `{user}` failed on host `{host}` ({target}): {summary}. Tried: {}. \
         {hint}",
        tried.join("; ")
    )]
    AuthFailed {
        host: String,
        target: String,
        user: String,
        /// One sentence on why, e.g. "the server refused every key offered".
        summary: String,
        /// One line per method or key tried, in order.
        tried: Vec<String>,
        /// What to do.
        hint: String,
    },

    /// A key needed a passphrase and the one given does not decrypt it.
    #[error(
        "authentication as `{user}` failed on host `{host}` ({target}): wrong passphrase for key \
         {} (or the key file is corrupt). Tried: {}. Give the right passphrase \
         (CLAW_SSH_PASSPHRASE or the prompt), or load the key into ssh-agent with `ssh-add`",
        key.display(),
        tried.join("; ")
    )]
    WrongPassphrase {
        host: String,
        target: String,
        user: String,
        key: PathBuf,
        tried: Vec<String>,
    },

    /// No key could even be offered: a key file is missing, unreadable, or encrypted with no
    /// passphrase given.
    #[error(
        "authentication as `{user}` failed on host `{host}` ({target}): key {}: {reason}. Tried: \
         {}. {hint}",
        key.display(),
        tried.join("; ")
    )]
    KeyFile {
        host: String,
        target: String,
        user: String,
        key: PathBuf,
        reason: String,
        hint: &'static str,
        tried: Vec<String>,
    },

    /// A remote command did not finish within its timeout.
    #[error(
        "a remote command on host `{host}` ({target}) did not finish within {}; its channel was \
         closed (the command may run on until its own `timeout` ends it)",
        secs(*.timeout)
    )]
    Timeout {
        host: String,
        target: String,
        timeout: Duration,
    },

    /// A command printed more than the client keeps of output that it parses (a probe or a
    /// check): it was stopped; its output is not used.
    #[error(
        "a remote command on host `{host}` ({target}) printed more than {} on {stream}, more than \
         any probe or check prints: it was stopped and its output not used (a tool on the host, \
         or the login shell, prints without end?)",
        size(*.max)
    )]
    OutputTooLarge {
        host: String,
        target: String,
        stream: &'static str,
        max: usize,
    },

    /// The connection broke (mid-command or between commands).
    #[error(
        "lost the connection to host `{host}` ({target}) {during}: {reason}; the host may have \
         rebooted, sshd may have been restarted, or the network dropped"
    )]
    ConnectionLost {
        host: String,
        target: String,
        /// e.g. "while a command was running (its outcome is unknown)".
        during: &'static str,
        reason: String,
    },

    /// The server refused to open a session channel.
    #[error(
        "host `{host}` ({target}) refused to open an SSH session: {reason}; too many concurrent \
         sessions (sshd MaxSessions) or a restricted account?"
    )]
    ChannelOpen {
        host: String,
        target: String,
        reason: String,
    },

    /// The server answered the exec request with a failure.
    #[error(
        "host `{host}` ({target}) refused to run the command (exec request failed); check sshd's \
         configuration for this account (ForceCommand, restricted shell) and its log"
    )]
    ExecRejected { host: String, target: String },
}

/// `64 MiB`, `512 KiB`, `100 bytes`.
pub(crate) fn size(n: usize) -> String {
    const KIB: usize = 1024;
    match n {
        n if n >= KIB * KIB && n % (KIB * KIB) == 0 => format!("{} MiB", n / (KIB * KIB)),
        n if n >= KIB && n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} bytes"),
    }
}

impl SshError {
    /// Whether the host could not be reached at all (name resolution, TCP connect, connect
    /// timeout, connection closed during the handshake): the caller reports it "unreachable".
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            SshError::Resolve { .. }
            | SshError::Unreachable { .. }
            | SshError::ConnectTimeout { .. } => true,
            SshError::Handshake { unreachable, .. } | SshError::JumpFailed { unreachable, .. } => {
                *unreachable
            }
            _ => false,
        }
    }

    /// Whether an established connection broke; the session is unusable afterwards.
    #[cfg(test)]
    pub(crate) fn is_connection_lost(&self) -> bool {
        matches!(self, SshError::ConnectionLost { .. })
    }

    /// Whether the host key was refused (changed, unknown under `strict`, or revoked).
    #[cfg(test)]
    pub(crate) fn is_host_key(&self) -> bool {
        matches!(
            self,
            SshError::HostKeyChanged { .. }
                | SshError::HostKeyUnknown { .. }
                | SshError::HostKeyRevoked { .. }
        )
    }
}

/// `1.5s`, `30s`.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.1}s")
    }
}

fn timeout_hint(phase: &str, target: &str) -> String {
    let port = target.rsplit_once(':').map_or("22", |(_, p)| p);
    match phase {
        "name resolution" => "check the DNS (connect_timeout)".to_string(),
        "TCP connect" => format!(
            "check that the host is up and that a firewall lets port {port} through \
             (connect_timeout)"
        ),
        "authentication" => "the server or the ssh-agent stopped answering while authenticating \
                             (connect_timeout)"
            .to_string(),
        _ => format!(
            "port {port} accepted the connection but no SSH server answered in time (wrong \
             port, or sshd overloaded?) (connect_timeout)"
        ),
    }
}

/// `ssh-ed25519` → `ed25519` (the `-t` of ssh-keyscan and the name in
/// `/etc/ssh/ssh_host_*_key`).
fn keyscan_type(algorithm: &str) -> &'static str {
    if algorithm.contains("ed25519") {
        "ed25519"
    } else if algorithm.starts_with("ecdsa") {
        "ecdsa"
    } else if algorithm.contains("rsa") {
        "rsa"
    } else if algorithm.contains("dss") {
        "dsa"
    } else {
        "ed25519"
    }
}

/// Quotes a word for a local shell command shown in a hint, only when needed.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_message_has_fingerprint_location_and_remedy() {
        let e = SshError::HostKeyChanged {
            host: "h1".into(),
            target: "10.0.0.2:2222".into(),
            name: "[10.0.0.2]:2222".into(),
            algorithm: "ssh-ed25519".into(),
            fingerprint: "SHA256:abc".into(),
            file: "/home/op/.ssh/known_hosts".into(),
            line: 7,
            recorded: "a different ssh-ed25519 key (SHA256:old)".into(),
        };
        let m = e.to_string();
        assert!(
            m.starts_with("host key of host `h1` (10.0.0.2:2222) has CHANGED"),
            "{m}"
        );
        assert!(m.contains("SHA256:abc"), "{m}");
        assert!(m.contains("/home/op/.ssh/known_hosts:7"), "{m}");
        assert!(
            m.contains("`ssh-keygen -R '[10.0.0.2]:2222' -f /home/op/.ssh/known_hosts`"),
            "{m}"
        );
        assert!(m.contains("ssh_host_ed25519_key.pub"), "{m}");
        assert!(e.is_host_key() && !e.is_unreachable());
    }

    #[test]
    fn unknown_message_has_keyscan_hint() {
        let e = SshError::HostKeyUnknown {
            host: "h1".into(),
            target: "10.0.0.2:22".into(),
            name: "10.0.0.2".into(),
            address: "10.0.0.2".into(),
            port: 22,
            algorithm: "ecdsa-sha2-nistp256".into(),
            fingerprint: "SHA256:xyz".into(),
            file: "/tmp/kh".into(),
        };
        let m = e.to_string();
        assert!(m.contains("SHA256:xyz"), "{m}");
        assert!(
            m.contains("`ssh-keyscan -p 22 -t ecdsa 10.0.0.2 >> /tmp/kh`"),
            "{m}"
        );
        assert!(m.contains("host_key_policy = \"accept-new\""), "{m}");
    }

    #[test]
    fn classification_and_small_helpers() {
        let e = SshError::ConnectTimeout {
            host: "h1".into(),
            target: "10.0.0.2:2222".into(),
            phase: "TCP connect",
            timeout: Duration::from_millis(1500),
        };
        assert!(e.is_unreachable());
        assert!(e.to_string().contains("within 1.5s during TCP connect"));
        assert!(e.to_string().contains("lets port 2222 through"));
        assert_eq!(secs(Duration::from_secs(30)), "30s");
        assert_eq!(shell_word("/a/b"), "/a/b");
        assert_eq!(shell_word("a b'c"), "'a b'\\''c'");
        let lost = SshError::ConnectionLost {
            host: "h".into(),
            target: "t:22".into(),
            during: "while a command was running",
            reason: "x".into(),
        };
        assert!(lost.is_connection_lost() && !lost.is_unreachable());
    }
}
