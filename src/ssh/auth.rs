//! Public-key authentication: the ssh-agent first (if enabled and `SSH_AUTH_SOCK` is set), then
//! each identity file in order.
//!
//! - RSA signatures always use `best_supported_rsa_hash()` (a `None` hash means SHA-1
//!   `ssh-rsa`, which OpenSSH >= 8.8 refuses).
//! - An identity file whose public key the agent already offered (and the server refused) is
//!   skipped, so encrypted keys are not unlocked for nothing and `MaxAuthTries` is not wasted.
//! - Encrypted keys ask the [`PassphraseSource`] once per connection; decrypted keys are kept
//!   in the command's [`KeyCache`] (in its [`Client`], keyed by path, size and mtime) so that a
//!   fleet of hosts does not prompt or run bcrypt once per host. Time spent loading keys (prompts included) does not
//!   count against `connect_timeout`.
//! - Every attempt is recorded in words for the error message; passphrases never are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use russh::client::{AuthResult, Handle, Handler};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{MethodKind, MethodSet};
use tokio::time::timeout_at;

use super::known_hosts::fingerprint;
use super::{Client, ConnectSpec, PassphraseSource, SshError};

/// Why an identity file could not be offered.
#[derive(Debug)]
enum KeyProblem {
    Unreadable(String),
    NoPassphrase,
    WrongPassphrase,
    NotAKey(String),
}

/// How the authentication ended without success, for the final error.
struct Failure {
    tried: Vec<String>,
    refused: usize,
    wrong_passphrase: Option<PathBuf>,
    key_problem: Option<(PathBuf, String, &'static str)>,
    server_methods: Option<MethodSet>,
    closed: bool,
}

/// Authenticates `spec.user` on `handle`. `deadline` bounds the network waits and is pushed
/// back by the time spent loading keys. Returns a description of what succeeded.
pub(super) async fn authenticate<H: Handler>(
    handle: &mut Handle<H>,
    spec: &ConnectSpec,
    client: &Client,
    deadline: &mut tokio::time::Instant,
) -> Result<String, SshError> {
    let mut a = Attempt {
        handle,
        spec,
        deadline,
        f: Failure {
            tried: Vec::new(),
            refused: 0,
            wrong_passphrase: None,
            key_problem: None,
            server_methods: None,
            closed: false,
        },
        rsa_hash: None,
        refused_keys: Vec::new(),
    };
    if spec.use_agent
        && let Some(m) = a.with_agent().await?
    {
        return Ok(m);
    }
    for path in &spec.identity_files {
        if let Some(m) = a.with_identity_file(path, client).await? {
            return Ok(m);
        }
    }
    Err(failure_error(spec, a.f))
}

/// One authentication in progress: the connection, what has been tried, and the keys the
/// server refused (not offered again).
struct Attempt<'a, H: Handler> {
    handle: &'a mut Handle<H>,
    spec: &'a ConnectSpec,
    deadline: &'a mut tokio::time::Instant,
    f: Failure,
    /// The RSA hash is asked once, and only if an RSA key comes up.
    rsa_hash: Option<Option<HashAlg>>,
    refused_keys: Vec<PublicKey>,
}

/// What the agent's keys came to, for the line in the error message.
#[derive(Default)]
struct AgentTally {
    offered: usize,
    sign_failed: usize,
    certs: usize,
    skipped: usize,
}

impl<H: Handler> Attempt<'_, H> {
    fn timeout(&self) -> SshError {
        SshError::ConnectTimeout {
            host: self.spec.host.clone(),
            target: self.spec.target(),
            phase: "authentication",
            timeout: self.spec.connect_timeout,
        }
    }

    /// The signature hash for a key of `algorithm`: the server's best for RSA, else none.
    async fn hash_for(&mut self, algorithm: Algorithm) -> Result<Option<HashAlg>, SshError> {
        if !algorithm.is_rsa() {
            return Ok(None);
        }
        rsa_hash_for(self.handle, &mut self.rsa_hash, *self.deadline)
            .await
            .map_err(|_| self.timeout())
    }

    /// Records a refusal by the server (and the methods it still offers).
    fn refused(&mut self, key: PublicKey, remaining_methods: MethodSet) {
        self.f.refused += 1;
        self.f.server_methods = Some(remaining_methods);
        self.refused_keys.push(key);
    }

    fn was_refused(&self, key: &PublicKey) -> bool {
        (self.refused_keys)
            .iter()
            .any(|k| k.key_data() == key.key_data())
    }

    /// Tries the agent at `SSH_AUTH_SOCK`: `Some` with what succeeded, `None` after recording
    /// what happened in `tried`.
    async fn with_agent(&mut self) -> Result<Option<String>, SshError> {
        let Some(sock) = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) else {
            (self.f.tried).push("agent: not used (SSH_AUTH_SOCK is not set)".into());
            return Ok(None);
        };
        let sock = PathBuf::from(sock);
        let mut agent = match timeout_at(*self.deadline, AgentClient::connect_uds(&sock)).await {
            Err(_) => return Err(self.timeout()),
            Ok(Err(e)) => {
                (self.f.tried).push(format!("agent at {}: cannot connect ({e})", sock.display()));
                return Ok(None);
            }
            Ok(Ok(agent)) => agent,
        };
        if let Some(binding) = self.handle.agent_session_binding() {
            // OpenSSH agents need this for destination-constrained keys; older
            // agents answer "unsupported", which is fine.
            let _ = timeout_at(*self.deadline, agent.bind_session(binding, false)).await;
        }
        let identities = match timeout_at(*self.deadline, agent.request_identities()).await {
            Err(_) => return Err(self.timeout()),
            Ok(Err(e)) => {
                (self.f.tried).push(format!(
                    "agent at {}: cannot list keys ({e})",
                    sock.display()
                ));
                Vec::new()
            }
            Ok(Ok(ids)) => ids,
        };
        let mut tally = AgentTally::default();
        if let Some(m) = self
            .offer_agent_keys(&mut agent, identities, &mut tally)
            .await?
        {
            return Ok(Some(m));
        }
        self.f.tried.push(agent_line(&sock, &tally));
        Ok(None)
    }

    /// Offers the agent's keys in turn (under IdentitiesOnly, only those beside an identity
    /// file; certificates are skipped), counting in `tally`; stops when the server closes.
    async fn offer_agent_keys(
        &mut self,
        agent: &mut AgentClient<tokio::net::UnixStream>,
        identities: Vec<AgentIdentity>,
        tally: &mut AgentTally,
    ) -> Result<Option<String>, SshError> {
        let spec = self.spec;
        // IdentitiesOnly: only the agent's keys whose public half is beside an
        // identity file (`KEY.pub`), as OpenSSH does.
        let allowed: Option<Vec<PublicKey>> = spec.identities_only.then(|| {
            spec.identity_files
                .iter()
                .filter_map(|p| public_key_beside(p))
                .collect()
        });
        for id in identities {
            let key = match id {
                AgentIdentity::PublicKey { key, .. } => key,
                AgentIdentity::Certificate { .. } => {
                    tally.certs += 1;
                    continue;
                }
            };
            if let Some(allowed) = &allowed
                && !allowed.iter().any(|a| a.key_data() == key.key_data())
            {
                tally.skipped += 1;
                continue;
            }
            let hash = self.hash_for(key.algorithm()).await?;
            tally.offered += 1;
            let r = timeout_at(
                *self.deadline,
                (self.handle).authenticate_publickey_with(
                    spec.user.clone(),
                    key.clone(),
                    hash,
                    agent,
                ),
            )
            .await
            .map_err(|_| self.timeout())?;
            match r {
                Ok(AuthResult::Success) => {
                    return Ok(Some(format!("agent key {}", fingerprint(&key))));
                }
                Ok(AuthResult::Failure {
                    remaining_methods, ..
                }) => self.refused(key, remaining_methods),
                Err(_) => tally.sign_failed += 1,
            }
            if self.handle.is_closed() {
                self.f.closed = true;
                break;
            }
        }
        Ok(None)
    }

    /// Tries the identity file `path` (skipped when the server closed, or when it is a key the
    /// agent already offered): `Some` with what succeeded, `None` after recording what happened.
    async fn with_identity_file(
        &mut self,
        path: &Path,
        client: &Client,
    ) -> Result<Option<String>, SshError> {
        let shown = path.display();
        if self.f.closed {
            self.f.tried.push(format!("{shown}: not tried"));
            return Ok(None);
        }
        if public_key_beside(path).is_some_and(|public| self.was_refused(&public)) {
            (self.f.tried).push(format!("{shown}: same key as the agent's, refused"));
            return Ok(None);
        }
        let started = Instant::now();
        let loaded = load_key(path, client.passphrases(), client.keys()).await;
        *self.deadline += started.elapsed();
        let key = match loaded {
            Ok(key) => key,
            Err(problem) => {
                self.f.key_problem_at(path, problem);
                return Ok(None);
            }
        };
        if self.was_refused(key.public_key()) {
            (self.f.tried).push(format!("{shown}: same key as the agent's, refused"));
            return Ok(None);
        }
        let hash = self.hash_for(key.algorithm()).await?;
        let r = timeout_at(
            *self.deadline,
            (self.handle).authenticate_publickey(
                self.spec.user.clone(),
                PrivateKeyWithHashAlg::new(key.clone(), hash),
            ),
        )
        .await
        .map_err(|_| self.timeout())?;
        match r {
            Ok(AuthResult::Success) => return Ok(Some(format!("key {shown}"))),
            Ok(AuthResult::Failure {
                remaining_methods, ..
            }) => {
                self.refused(key.public_key().clone(), remaining_methods);
                self.f.tried.push(format!("{shown}: refused by the server"));
            }
            Err(e) => self.f.tried.push(format!("{shown}: failed ({e})")),
        }
        if self.handle.is_closed() {
            self.f.closed = true;
        }
        Ok(None)
    }
}

impl Failure {
    /// Records why the identity file `path` could not be offered: a line in `tried`, and (the
    /// first time) the problem with its hint for the error.
    fn key_problem_at(&mut self, path: &Path, problem: KeyProblem) {
        let shown = path.display();
        let (line, reason, hint) = match problem {
            KeyProblem::Unreadable(e) => (
                format!("{shown}: cannot read ({e})"),
                format!("cannot read the key file ({e})"),
                "Fix the identity file path in the inventory or its permissions",
            ),
            KeyProblem::NoPassphrase => (
                format!("{shown}: encrypted, no passphrase given"),
                "the key is encrypted and no passphrase was given".to_string(),
                "Set CLAW_SSH_PASSPHRASE (or run from a terminal to be prompted), or load \
                 the key into ssh-agent with `ssh-add`",
            ),
            KeyProblem::WrongPassphrase => {
                self.wrong_passphrase
                    .get_or_insert_with(|| path.to_path_buf());
                self.tried.push(format!("{shown}: wrong passphrase"));
                return;
            }
            KeyProblem::NotAKey(e) => (
                format!("{shown}: not a usable private key ({e})"),
                format!("not a usable private key ({e})"),
                "Point the identity file at an OpenSSH, PEM or PKCS#8 private key (not the \
                 .pub file)",
            ),
        };
        self.tried.push(line);
        self.key_problem
            .get_or_insert((path.to_path_buf(), reason, hint));
    }
}

/// The agent's line in the error message: how many keys were refused, not signed with, or
/// skipped.
fn agent_line(sock: &Path, t: &AgentTally) -> String {
    if t.offered == 0 && t.certs == 0 && t.skipped == 0 {
        return format!("agent at {}: holds no keys", sock.display());
    }
    let mut line = format!(
        "agent at {}: {} refused",
        sock.display(),
        plural(t.offered - t.sign_failed, "key")
    );
    if t.sign_failed > 0 {
        line.push_str(&format!(
            ", {} the agent would not sign with",
            plural(t.sign_failed, "key")
        ));
    }
    if t.certs > 0 {
        line.push_str(&format!(
            ", {} skipped (not supported)",
            plural(t.certs, "certificate")
        ));
    }
    if t.skipped > 0 {
        line.push_str(&format!(
            ", {} not used (IdentitiesOnly)",
            plural(t.skipped, "key")
        ));
    }
    line
}

fn failure_error(spec: &ConnectSpec, f: Failure) -> SshError {
    let mut tried = f.tried;
    if tried.is_empty() {
        tried.push("nothing: the agent is disabled and no identity files are configured".into());
    }
    let (host, target, user) = (spec.host.clone(), spec.target(), spec.user.clone());
    if let Some(key) = f.wrong_passphrase {
        return SshError::WrongPassphrase {
            host,
            target,
            user,
            key,
            tried,
        };
    }
    if f.refused == 0
        && let Some((key, reason, hint)) = f.key_problem
    {
        return SshError::KeyFile {
            host,
            target,
            user,
            key,
            reason,
            hint,
            tried,
        };
    }
    let refused_hint = format!(
        "Add one of these public keys to ~{}/.ssh/authorized_keys on the host, or fix the user or \
         identity files in the inventory",
        spec.user
    );
    let (summary, hint) = if f.closed {
        (
            format!(
                "the server closed the connection after {}",
                plural(f.refused, "refused key")
            ),
            "sshd's MaxAuthTries limits how many keys a client may offer: list the right key \
             first, or remove unneeded keys from the agent"
                .to_string(),
        )
    } else if f.refused == 0 {
        (
            "no key could be offered".to_string(),
            "Load a key into ssh-agent (`ssh-add`) or list identity files in the inventory"
                .to_string(),
        )
    } else if let Some(methods) = f
        .server_methods
        .filter(|m| !m.is_empty() && !m.contains(&MethodKind::PublicKey))
    {
        let names: Vec<&str> = methods.iter().map(<&str>::from).collect();
        (
            format!(
                "the server does not accept public keys for this user (it offers: {})",
                names.join(", ")
            ),
            "Allow public-key authentication for this user on the host (sshd \
             PubkeyAuthentication, AuthenticationMethods)"
                .to_string(),
        )
    } else {
        (
            "the server refused every key offered".to_string(),
            refused_hint,
        )
    };
    SshError::AuthFailed {
        host,
        target,
        user,
        summary,
        tried,
        hint,
    }
}

/// The RSA signature hash the server supports, asked once (waits up to 1 s for EXT_INFO).
/// `Err`: `deadline` passed while waiting for the answer.
async fn rsa_hash_for<H: Handler>(
    handle: &Handle<H>,
    cache: &mut Option<Option<HashAlg>>,
    deadline: tokio::time::Instant,
) -> Result<Option<HashAlg>, tokio::time::error::Elapsed> {
    if let Some(h) = *cache {
        return Ok(h);
    }
    let h = match timeout_at(deadline, handle.best_supported_rsa_hash()).await {
        Err(elapsed) => return Err(elapsed),
        // No answer: SHA-256 is what every server of the last decade accepts.
        Ok(Err(_)) => Some(HashAlg::Sha256),
        Ok(Ok(h)) => h.flatten(),
    };
    *cache = Some(h);
    Ok(h)
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The `.pub` file next to a private key, if there is a readable one.
fn public_key_beside(path: &Path) -> Option<PublicKey> {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    russh::keys::load_public_key(PathBuf::from(p)).ok()
}

struct CachedKey {
    len: u64,
    modified: Option<SystemTime>,
    key: Arc<PrivateKey>,
}

/// The decrypted keys of one command (held by its [`Client`], living as long as it): by path,
/// valid while the file's size and mtime stay the same; and one async lock per key path, so
/// that concurrent connections wait for the first one's prompt instead of prompting again.
#[derive(Default)]
pub(super) struct KeyCache {
    keys: Mutex<HashMap<PathBuf, CachedKey>>,
    gates: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyCache {
    /// The prompt gate of `path`.
    fn gate(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        gates.entry(path.to_path_buf()).or_default().clone()
    }
}

/// Loads (and if needed decrypts) a private key, through the command's key cache.
async fn load_key(
    path: &Path,
    pass: &dyn PassphraseSource,
    cache: &KeyCache,
) -> Result<Arc<PrivateKey>, KeyProblem> {
    let gate = cache.gate(path);
    let _guard = gate.lock().await;
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| KeyProblem::Unreadable(io_reason(&e)))?;
    let (len, modified) = (meta.len(), meta.modified().ok());
    if let Some(c) = (cache.keys)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(path)
        && c.len == len
        && c.modified == modified
    {
        return Ok(c.key.clone());
    }
    let text = tokio::fs::read(path)
        .await
        .map_err(|e| KeyProblem::Unreadable(io_reason(&e)))?;
    let text = String::from_utf8(text)
        .map_err(|_| KeyProblem::NotAKey("the file is not text".to_string()))?;
    let text = Arc::new(text);
    let key = match decode(text.clone(), None).await {
        Ok(k) => k,
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let Some(secret) = pass.passphrase(path) else {
                return Err(KeyProblem::NoPassphrase);
            };
            decode(text, Some(secret))
                .await
                .map_err(|_| KeyProblem::WrongPassphrase)?
        }
        Err(e) => return Err(KeyProblem::NotAKey(e.to_string())),
    };
    let key = Arc::new(key);
    (cache.keys)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            path.to_path_buf(),
            CachedKey {
                len,
                modified,
                key: key.clone(),
            },
        );
    Ok(key)
}

/// Decodes a key off the async threads (bcrypt-pbkdf takes ~100 ms).
async fn decode(
    text: Arc<String>,
    passphrase: Option<crate::secret::Secret>,
) -> Result<PrivateKey, russh::keys::Error> {
    tokio::task::spawn_blocking(move || {
        russh::keys::decode_secret_key(
            &text,
            passphrase.as_ref().map(crate::secret::Secret::expose),
        )
    })
    .await
    .unwrap_or(Err(russh::keys::Error::CouldNotReadKey))
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use std::time::Duration;

    // `ssh-keygen -t ed25519 -N 'correct horse' -C ''`.
    const ENCRYPTED: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABC20SRbuO
kggv1lO34YlWbkAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIBsYIKaKua9AYrkx
MS+l7PgvsMVotIOx5Z8QfDABrZsJAAAAkAS51C39Tc+saq/g3ngQK6sioip7q11i/farGb
0GODLpCd5Um9DbBzwwN52HFf8LXJG2jfCkSqcheG1jZ9RYXkhnQJ8POv6GFRMS/vcVVuIG
SgqtDrBqdBVSn7aSG1dqzXhLilpF31UrecGcCFHMwUF1VertKcIXEUb6P09ABlcgVmkzZ5
/y4Y/M/HFx0eYt7g==
-----END OPENSSH PRIVATE KEY-----
";

    struct Fixed(Option<&'static str>, std::sync::atomic::AtomicUsize);

    impl PassphraseSource for Fixed {
        fn passphrase(&self, _: &Path) -> Option<Secret> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.map(Secret::new)
        }
    }

    fn spec() -> ConnectSpec {
        ConnectSpec {
            host: "h1".into(),
            address: "10.0.0.2".into(),
            port: 22,
            user: "root".into(),
            identity_files: vec![],
            use_agent: false,
            known_hosts: vec!["/kh".into()],
            identities_only: false,
            jump: Vec::new(),
            policy: super::super::HostKeyPolicy::Strict,
            key_options: Default::default(),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
        }
    }

    /// The encrypted key in a fresh directory.
    fn write_key() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id");
        std::fs::write(&p, ENCRYPTED).unwrap();
        (dir, p)
    }

    #[tokio::test]
    async fn encrypted_key_asks_once_and_is_cached() {
        let (_dir, p) = write_key();
        let src = Fixed(Some("correct horse"), Default::default());
        let cache = KeyCache::default();
        let k1 = load_key(&p, &src, &cache).await.unwrap();
        let k2 = load_key(&p, &src, &cache).await.unwrap();
        assert!(Arc::ptr_eq(&k1, &k2));
        assert_eq!(src.1.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(k1.algorithm().is_ed25519());
        // Another command's cache is its own: it asks again.
        load_key(&p, &src, &KeyCache::default()).await.unwrap();
        assert_eq!(src.1.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn key_problems_are_told_apart() {
        let (_dir, p) = write_key();
        let wrong = Fixed(Some("battery staple"), Default::default());
        let cache = KeyCache::default();
        assert!(matches!(
            load_key(&p, &wrong, &cache).await,
            Err(KeyProblem::WrongPassphrase)
        ));
        let none = Fixed(None, Default::default());
        assert!(matches!(
            load_key(&p, &none, &cache).await,
            Err(KeyProblem::NoPassphrase)
        ));
        let missing = p.with_file_name("nope");
        assert!(matches!(
            load_key(&missing, &none, &cache).await,
            Err(KeyProblem::Unreadable(r)) if r == "no such file"
        ));
        let public = p.with_file_name("id.pub");
        std::fs::write(&public, "ssh-ed25519 AAAA x\n").unwrap();
        assert!(matches!(
            load_key(&public, &none, &cache).await,
            Err(KeyProblem::NotAKey(_))
        ));
    }

    #[test]
    fn failure_messages_pick_the_decisive_cause() {
        let base = || Failure {
            tried: vec!["a".into()],
            refused: 0,
            wrong_passphrase: None,
            key_problem: None,
            server_methods: None,
            closed: false,
        };
        let mut f = base();
        f.key_problem = Some((
            "/k".into(),
            "cannot read the key file (no such file)".into(),
            "Fix",
        ));
        let e = failure_error(&spec(), f);
        assert!(matches!(e, SshError::KeyFile { .. }));
        assert!(
            e.to_string()
                .contains("key /k: cannot read the key file (no such file)"),
            "{e}"
        );

        let mut f = base();
        f.wrong_passphrase = Some("/k".into());
        let e = failure_error(&spec(), f);
        assert!(e.to_string().contains("wrong passphrase for key /k"), "{e}");

        let mut f = base();
        f.refused = 2;
        f.tried = vec![
            "agent at /s: 1 key refused".into(),
            "/k: refused by the server".into(),
        ];
        let e = failure_error(&spec(), f);
        let m = e.to_string();
        assert!(
            m.starts_with("authentication as `root` failed on host `h1` (10.0.0.2:22)"),
            "{m}"
        );
        assert!(m.contains("the server refused every key offered"), "{m}");
        assert!(
            m.contains("Tried: agent at /s: 1 key refused; /k: refused by the server."),
            "{m}"
        );

        let mut f = base();
        f.refused = 1;
        f.server_methods = Some(MethodSet::from(&[MethodKind::Password][..]));
        let m = failure_error(&spec(), f).to_string();
        assert!(
            m.contains("does not accept public keys for this user (it offers: password)"),
            "{m}"
        );
        assert!(!m.contains("correct horse"));
    }
}
