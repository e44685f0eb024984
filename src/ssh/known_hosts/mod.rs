//! OpenSSH `known_hosts` files: parsing, host-key checks and trust-on-first-use writes.
//!
//! Our own parser, because russh's (0.65.1) ignores wildcards, negations, `@revoked`, tabs and
//! algorithm-crossing changes (see `shared/notes/russh.md` §3). What is understood:
//!
//! - plain host fields with comma lists, `[host]:port` for ports other than 22 (`[host]:22` is
//!   accepted as the bare host too), wildcards `*` `?` and negated patterns `!pattern`,
//!   case-insensitive like OpenSSH;
//! - hashed host fields `|1|base64(salt)|base64(HMAC-SHA1(salt, host))` as written by
//!   `ssh-keygen -H` / `HashKnownHosts yes`;
//! - markers: `@revoked` (the key is refused for the matching hosts even if also listed as
//!   trusted) and `@cert-authority` (parsed and ignored: host certificates are not trusted yet);
//! - spaces or tabs between fields, comments, blank lines, CRLF line ends.
//!
//! A line that cannot be parsed is skipped, unless its host field names the host being checked:
//! then it counts as a recorded key that does not match anything, so a corrupted entry can never
//! let `accept-new` silently trust a new key. Line numbers are 1-based physical lines.
//!
//! Special files (`/dev/null`, any character or block device, a FIFO, a socket, or a link to one)
//! are read as empty and never written: no lock or temporary file is made beside them (OpenSSH
//! users point `UserKnownHostsFile` at `/dev/null`; replacing it by a regular file would break the
//! machine). A key that accept-new cannot record there, or in a file whose directory cannot be
//! written (read-only), is accepted for this connection only and reported as not recorded
//! ([`AddOutcome::NotRecorded`]), as OpenSSH warns and goes on.
//!
//! ssh_config's `HostKeyAlias` (the name looked up and recorded instead of the address, without
//! port), `GlobalKnownHostsFile` (read, never written) and `HashKnownHosts` are [`KeyOptions`].
//!
//! New entries are written by [`record`] (in `update`: the locked, atomic rewrite of a file).

mod update;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::PoisonError;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

pub(crate) use update::{AddOutcome, entry_line_as, record};
#[cfg(test)]
use update::{add_if_unknown, entry_line};

/// What to do with a host key that `known_hosts` does not know yet. A key that differs from a
/// recorded one is refused under every policy.
///
/// The project's one host-key policy type: the inventory reads it (`host_key_policy`, spelled
/// `strict` / `accept-new` as serde and [`HostKeyPolicy::as_str`] write it) and `crate::connect`
/// passes it here unchanged, where every host's and jump host's key check enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Refuse unknown hosts (OpenSSH `StrictHostKeyChecking yes`).
    #[default]
    Strict,
    /// Record an unknown host's key on first connection (OpenSSH `StrictHostKeyChecking
    /// accept-new`).
    AcceptNew,
}

impl HostKeyPolicy {
    /// The spelling used in inventories and messages: `strict` or `accept-new`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostKeyPolicy::Strict => "strict",
            HostKeyPolicy::AcceptNew => "accept-new",
        }
    }
}

impl fmt::Display for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HostKeyPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(HostKeyPolicy::Strict),
            "accept-new" => Ok(HostKeyPolicy::AcceptNew),
            other => Err(UnknownPolicy {
                given: other.to_string(),
            }),
        }
    }
}

/// A host-key policy spelled neither `strict` nor `accept-new`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown host key policy `{given}`: expected \"strict\" or \"accept-new\"")]
pub struct UnknownPolicy {
    /// The spelling given.
    pub given: String,
}

/// Why a `known_hosts` line says nothing about any host: the fields needed to know which host it
/// is about are missing ([`KnownHosts::bad_lines`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLine {
    /// A first field starting with `@` that is neither `@cert-authority` nor `@revoked`.
    #[error("unknown marker `{marker}`")]
    UnknownMarker { marker: String },
    /// A marker with nothing after it.
    #[error("marker without a host field")]
    NoHostField,
    /// A host field with nothing after it.
    #[error("no key after the host field")]
    NoKey,
}

/// Why the key of an entry cannot be used ([`HostEntry::key`]): the entry still counts as a
/// recorded key for the hosts it names, matching no presented key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadKey {
    /// A key type field and no key data after it.
    #[error("key type `{key_type}` without key data")]
    NoKeyData { key_type: String },
    /// Key data that does not parse as a key of its type.
    #[error("cannot parse the `{key_type}` key: {reason}")]
    Unparsable { key_type: String, reason: String },
}

/// The verdict of [`KnownHosts::check`] for one presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostKeyStatus {
    /// A trusted entry for this host holds exactly this key.
    Known,
    /// No entry names this host (revoked entries for other keys aside).
    Unknown,
    /// Entries name this host, but none holds this key (whatever their algorithm). `line` is
    /// the recorded entry to show: one of the presented key's algorithm if there is one, else
    /// the first.
    Changed { line: usize, file: PathBuf },
    /// The key is listed under `@revoked` for this host.
    Revoked,
}

/// The marker in front of a `known_hosts` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A plain trusted entry.
    None,
    /// `@cert-authority`: a CA for host certificates (ignored for now).
    CertAuthority,
    /// `@revoked`: the key must be refused.
    Revoked,
}

/// One parsed entry of a `known_hosts` file.
#[derive(Debug, Clone)]
pub struct HostEntry {
    /// 1-based physical line number.
    pub line: usize,
    pub marker: Marker,
    /// The host field as written (a pattern list or one hashed name).
    pub hosts: String,
    /// The key, or why it could not be parsed.
    pub key: Result<PublicKey, BadKey>,
}

impl HostEntry {
    /// Whether this entry's host field applies to one of `names` (see [`lookup_names`]).
    fn matches(&self, names: &[String]) -> bool {
        names.iter().any(|n| hosts_match(&self.hosts, n))
    }

    /// Whether this entry records exactly `key`.
    pub(crate) fn holds(&self, key: &PublicKey) -> bool {
        matches!(&self.key, Ok(k) if k.key_data() == key.key_data())
    }
}

/// Size and modification time of a file (None: it does not exist).
type Stamp = Option<(u64, std::time::SystemTime)>;

/// The known_hosts files parsed by one command (held by its `ssh::Client`, living as long as
/// it): a file is not parsed again while its size and modification time stay the same. Every
/// connection of a run reads the same file, and parsing it per host grows with the square of
/// the fleet.
#[derive(Debug, Default)]
pub(crate) struct KnownHostsCache {
    files:
        std::sync::Mutex<std::collections::HashMap<PathBuf, (Stamp, std::sync::Arc<KnownHosts>)>>,
}

impl KnownHostsCache {
    /// Like [`KnownHosts::load`], through the cache.
    pub(crate) fn load(&self, path: &Path) -> io::Result<std::sync::Arc<KnownHosts>> {
        let stamp: Stamp = match std::fs::metadata(path) {
            Ok(m) => Some((m.len(), m.modified()?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some((s, k)) = (self.files.lock().unwrap_or_else(PoisonError::into_inner)).get(path)
            && *s == stamp
        {
            return Ok(k.clone());
        }
        let k = std::sync::Arc::new(KnownHosts::load(path)?);
        (self.files.lock().unwrap_or_else(PoisonError::into_inner))
            .insert(path.to_path_buf(), (stamp, k.clone()));
        Ok(k)
    }
}

/// A parsed `known_hosts` file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    file: PathBuf,
    entries: Vec<HostEntry>,
    bad_lines: Vec<(usize, BadLine)>,
}

impl KnownHosts {
    /// Reads and parses `path`. A missing file is an empty one, and so is a special file
    /// ([`special`]: never opened, a FIFO would block); any other read error is returned.
    pub(crate) fn load(path: &Path) -> io::Result<KnownHosts> {
        if special(path).is_some() {
            return Ok(Self::parse(path, ""));
        }
        match std::fs::read(path) {
            Ok(bytes) => Ok(Self::parse(path, &String::from_utf8_lossy(&bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::parse(path, "")),
            Err(e) => Err(e),
        }
    }

    /// Parses the text of a `known_hosts` file; `file` is only used in verdicts and messages.
    pub fn parse(file: impl Into<PathBuf>, text: &str) -> KnownHosts {
        let mut entries = Vec::new();
        let mut bad_lines = Vec::new();
        // `split('\n')`, not `lines()`: line numbers must be physical lines, and `lines()`
        // would also treat a lone `\r` differently from OpenSSH.
        for (i, raw) in text.split('\n').enumerate() {
            let line = i + 1;
            match parse_line(raw) {
                Ok(None) => {}
                Ok(Some((marker, hosts, _, key))) => entries.push(HostEntry {
                    line,
                    marker,
                    hosts,
                    key,
                }),
                Err(reason) => bad_lines.push((line, reason)),
            }
        }
        KnownHosts {
            file: file.into(),
            entries,
            bad_lines,
        }
    }

    /// The file this was read from.
    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    /// Lines that could not be parsed at all (no host field or no key field), with the reason.
    pub fn bad_lines(&self) -> &[(usize, BadLine)] {
        &self.bad_lines
    }

    /// Every entry (trusted, revoked or CA) whose host field applies to `host`:`port`.
    pub fn entries_for(&self, host: &str, port: u16) -> Vec<&HostEntry> {
        let names = lookup_names(host, port);
        self.entries.iter().filter(|e| e.matches(&names)).collect()
    }

    /// Checks the key a server presented for `host`:`port`.
    pub(crate) fn check(&self, host: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
        let entries = self.entries_for(host, port);
        if entries
            .iter()
            .any(|e| e.marker == Marker::Revoked && e.holds(key))
        {
            return HostKeyStatus::Revoked;
        }
        let trusted: Vec<&&HostEntry> = entries
            .iter()
            .filter(|e| e.marker == Marker::None)
            .collect();
        if trusted.iter().any(|e| e.holds(key)) {
            return HostKeyStatus::Known;
        }
        let algorithm = key.algorithm();
        let shown = trusted
            .iter()
            .find(|e| matches!(&e.key, Ok(k) if k.algorithm() == algorithm))
            .or_else(|| trusted.first());
        match shown {
            Some(e) => HostKeyStatus::Changed {
                line: e.line,
                file: self.file.clone(),
            },
            None => HostKeyStatus::Unknown,
        }
    }

    /// The algorithms of the trusted keys recorded for `host`:`port`, in file order, without
    /// duplicates. Used to make the server present a key we can check (OpenSSH does the same).
    pub(crate) fn known_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let mut out: Vec<Algorithm> = Vec::new();
        for e in self.entries_for(host, port) {
            if e.marker != Marker::None {
                continue;
            }
            if let Ok(k) = &e.key {
                let a = k.algorithm();
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }
}

/// System-wide known_hosts files (OpenSSH's `GlobalKnownHostsFile` default), read, never written.
pub(crate) const DEFAULT_GLOBAL: &[&str] =
    &["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"];

/// How a host's key is looked up and recorded besides the user's files and the policy:
/// ssh_config's `HostKeyAlias`, `GlobalKnownHostsFile` and `HashKnownHosts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyOptions {
    /// `HostKeyAlias` (lower case): the name looked up and recorded instead of the address,
    /// with no port (`[host]:port`), as OpenSSH does.
    pub alias: Option<String>,
    /// System-wide files: read, never written.
    pub global: Vec<PathBuf>,
    /// `HashKnownHosts yes`: new entries are recorded hashed (`|1|salt|hash`).
    pub hash: bool,
}

impl Default for KeyOptions {
    fn default() -> Self {
        KeyOptions {
            alias: None,
            global: DEFAULT_GLOBAL.iter().map(PathBuf::from).collect(),
            hash: false,
        }
    }
}

impl KeyOptions {
    /// The name and port under which the key of `address`:`port` is looked up and recorded.
    pub fn lookup<'a>(&'a self, address: &'a str, port: u16) -> (&'a str, u16) {
        match &self.alias {
            Some(a) => (a.as_str(), 22),
            None => (address, port),
        }
    }
}

/// Why `path` is not a file to read or write as known_hosts (a device, a FIFO, a socket; links
/// followed), or `None` for a regular file, a directory (its read fails as usual) or nothing.
pub(crate) fn special(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::metadata(path).ok()?.file_type();
    if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        None
    }
}

/// The name under which `host`:`port` is recorded: `host` for port 22, else `[host]:port`.
/// Lower-cased, like OpenSSH does with host names.
pub(crate) fn host_port_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// The OpenSSH-style SHA-256 fingerprint of a key: `SHA256:` + unpadded base64.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Names to look up for `host`:`port`; for port 22 also `[host]:22`.
fn lookup_names(host: &str, port: u16) -> Vec<String> {
    let mut names = vec![host_port_name(host, port)];
    if port == 22 {
        names.push(format!("[{}]:22", host.to_ascii_lowercase()));
    }
    names
}

type ParsedLine = (Marker, String, String, Result<PublicKey, BadKey>);

/// Parses one physical line: `Ok(None)` for blank lines and comments, `Err` for lines without
/// the fields needed to know which host they are about.
fn parse_line(raw: &str) -> Result<Option<ParsedLine>, BadLine> {
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    let mut fields = raw.split([' ', '\t']).filter(|f| !f.is_empty());
    let Some(mut first) = fields.next() else {
        return Ok(None);
    };
    if first.starts_with('#') {
        return Ok(None);
    }
    let marker = if first.starts_with('@') {
        let m = match first {
            "@cert-authority" => Marker::CertAuthority,
            "@revoked" => Marker::Revoked,
            other => {
                return Err(BadLine::UnknownMarker {
                    marker: other.to_string(),
                });
            }
        };
        first = fields.next().ok_or(BadLine::NoHostField)?;
        m
    } else {
        Marker::None
    };
    let hosts = first.to_string();
    let Some(key_type) = fields.next() else {
        return Err(BadLine::NoKey);
    };
    let key = match fields.next() {
        None => Err(BadKey::NoKeyData {
            key_type: key_type.to_string(),
        }),
        Some(blob) => {
            PublicKey::from_openssh(&format!("{key_type} {blob}")).map_err(|e| BadKey::Unparsable {
                key_type: key_type.to_string(),
                reason: e.to_string(),
            })
        }
    };
    Ok(Some((marker, hosts, key_type.to_string(), key)))
}

/// Whether a host field (pattern list or hashed name) applies to `name` (already lower-case).
/// OpenSSH semantics: a matching negated pattern excludes the line whatever else matches.
fn hosts_match(field: &str, name: &str) -> bool {
    let mut positive = false;
    for pattern in field.split(',') {
        if pattern.is_empty() {
            continue;
        }
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(&negated.to_ascii_lowercase(), name) {
                return false;
            }
        } else if pattern.starts_with("|1|") {
            positive |= hashed_match(pattern, name);
        } else {
            positive |= wildcard_match(&pattern.to_ascii_lowercase(), name);
        }
    }
    positive
}

/// `|1|salt|hash`: HMAC-SHA1 keyed by the salt over the name.
fn hashed_match(entry: &str, name: &str) -> bool {
    let mut parts = entry["|1|".len()..].split('|');
    let (Some(salt), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (BASE64.decode(salt), BASE64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Glob match with `*` (any run, also empty) and `?` (one character), over characters.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Position after the last `*` seen and the text position it is tried against.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi + 1, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::update::{Crash, add_with, hashed_name};
    use super::*;

    // Generated with `ssh-keygen -t ... -N ''`; fingerprints from `ssh-keygen -lf`.
    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIdkjSZ3tkrQooIjn1Lt+bneebVTmWTCmutm7dgYOU4A";
    const ED_FP: &str = "SHA256:H1Kxrpz3X9errqug9mUOONKmqfPfH+AfKQAxl1ZS0lc";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKIVYOFh6xBYc3WidmWEq8m5yFx8bSB7vQzvBvXnqfRY";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHIyA68gQpWz3Qk8irv4JeHOnTtPNHSA31tjBp+cLfHuF9/O2sOIEPCOrdN7XlqHFebZVlnATxdmdVy8RcJ+nek=";
    const ECDSA_FP: &str = "SHA256:MMirffBTuDBFwyLevK1BRsarALQ3ctERlblmasuPfZk";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQDSjxtITTxHf06/15RAQYXgTSoQtpmIIfFWsrqL45QLKwUP/9sk6dnz6k3AFAUU2EbXMoVoD6wwCRyti5E25Hjtv+EwUGrAi3+ZE3Z+D+FLjbs3942UCaSvG/+Q7Fd/5lGtuw8ACdB1WtIu4pbjC/N3QOO2YWbYvfTeH6cHi8Yc3VA1mlklVpg2SuADdITOAnbIXGh/3gpFgPcXUu33VdOCVqvbIq0+TxwVwL14uwyu7TA7mx8tmxPGd39Ftcs9VLpQkMe+iGT65HxBUf8jN18jj4Irx2oONw907Rcm7H/uVi1tAsPhe9ayNabV/44Pr1M+L4ys7pyBfa4QSx2el1qI6ju/Agl+27NnGgsre8iO8QSwUVYjVm2i2OvjipNAYg8WzIwPhAd3HR5FJ5Tvjhv7iD6RjvTsUo/Xke2mG5cKMv9Cw3Z4qmBCuacRwGoOK8jc8V6EqUGYYQy/IZyBTIyOkISbKL/81+ury5jxapPZsdz5RCnSFYIDx7wr/PwtC4E=";
    const RSA_FP: &str = "SHA256:wBnEm5Xk8U75qRDoiKJaVrvzFoVjtSrfXzVL0qNk/g8";
    // `ssh-keygen -H` of "[10.0.0.2]:2222 ED" and "web1.example.com ECDSA".
    const HASHED: &str = "|1|gjKGzpEUv3OfWyZFy97zb0blCLM=|kaTgE3NUwN48IkYVbOJ0LS3fFJo= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIdkjSZ3tkrQooIjn1Lt+bneebVTmWTCmutm7dgYOU4A\n\
|1|ZNcU6RWfMxBaiOvO2/TYIlEjyRM=|hg5XcJBKL3DT+Jqfrqqm5dMScqc= ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHIyA68gQpWz3Qk8irv4JeHOnTtPNHSA31tjBp+cLfHuF9/O2sOIEPCOrdN7XlqHFebZVlnATxdmdVy8RcJ+nek=\n";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn kh(text: &str) -> KnownHosts {
        KnownHosts::parse("/kh", text)
    }

    fn changed(line: usize) -> HostKeyStatus {
        HostKeyStatus::Changed {
            line,
            file: PathBuf::from("/kh"),
        }
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        assert_eq!(fingerprint(&key(ED)), ED_FP);
        assert_eq!(fingerprint(&key(ECDSA)), ECDSA_FP);
        assert_eq!(fingerprint(&key(RSA)), RSA_FP);
    }

    #[test]
    fn plain_entries_ports_and_lists() {
        let k = kh(&format!(
            "web1 {ED}\n[10.0.0.2]:2222 {ED}\nalias,db1.example.com,10.0.0.3 {ED} comment here\n"
        ));
        assert_eq!(k.check("web1", 22, &key(ED)), HostKeyStatus::Known);
        assert_eq!(k.check("WEB1", 22, &key(ED)), HostKeyStatus::Known);
        assert_eq!(k.check("web1", 2222, &key(ED)), HostKeyStatus::Unknown);
        assert_eq!(k.check("10.0.0.2", 2222, &key(ED)), HostKeyStatus::Known);
        assert_eq!(k.check("10.0.0.2", 22, &key(ED)), HostKeyStatus::Unknown);
        assert_eq!(k.check("10.0.0.3", 22, &key(ED)), HostKeyStatus::Known);
        assert_eq!(
            k.check("db1.example.com", 22, &key(ED)),
            HostKeyStatus::Known
        );
        assert_eq!(k.check("db1.example", 22, &key(ED)), HostKeyStatus::Unknown);
        assert_eq!(k.check("web2", 22, &key(ED)), HostKeyStatus::Unknown);
    }

    #[test]
    fn bracketed_port_22_counts_as_bare_host() {
        let k = kh(&format!("[web1]:22 {ED}\n"));
        assert_eq!(k.check("web1", 22, &key(ED)), HostKeyStatus::Known);
    }

    #[test]
    fn changed_key_same_and_other_algorithm() {
        let k = kh(&format!("# c\n\nweb1 {ED}\n"));
        assert_eq!(k.check("web1", 22, &key(ED2)), changed(3));
        // Only an RSA key recorded, server offers ed25519: changed too.
        let k = kh(&format!("web1 {RSA}\n"));
        assert_eq!(k.check("web1", 22, &key(ED)), changed(1));
        // Several recorded: the one of the presented algorithm is shown.
        let k = kh(&format!("web1 {RSA}\nweb1 {ED2}\n"));
        assert_eq!(k.check("web1", 22, &key(ED)), changed(2));
        // Several keys recorded, one of them is the presented one: known.
        let k = kh(&format!("web1 {RSA}\nweb1 {ED}\n"));
        assert_eq!(k.check("web1", 22, &key(ED)), HostKeyStatus::Known);
        assert_eq!(k.check("web1", 22, &key(RSA)), HostKeyStatus::Known);
    }

    #[test]
    fn hashed_entries_from_ssh_keygen() {
        let k = kh(HASHED);
        assert_eq!(k.check("10.0.0.2", 2222, &key(ED)), HostKeyStatus::Known);
        assert_eq!(
            k.check("web1.example.com", 22, &key(ECDSA)),
            HostKeyStatus::Known
        );
        assert_eq!(k.check("web1.example.com", 22, &key(ED)), changed(2));
        assert_eq!(k.check("10.0.0.2", 22, &key(ED)), HostKeyStatus::Unknown);
        assert_eq!(
            k.check("web2.example.com", 22, &key(ED)),
            HostKeyStatus::Unknown
        );
        // A broken hash never matches and does not panic.
        let k = kh(&format!("|1|notbase64|@@ {ED}\n|1|abc {ED}\n"));
        assert_eq!(k.check("web1", 22, &key(ED)), HostKeyStatus::Unknown);
    }

    #[test]
    fn wildcards_and_negation() {
        let k = kh(&format!(
            "*.example.com,!bad.example.com {ED}\n[10.0.0.?]:2222 {ECDSA}\n"
        ));
        assert_eq!(
            k.check("web.example.com", 22, &key(ED)),
            HostKeyStatus::Known
        );
        assert_eq!(
            k.check("bad.example.com", 22, &key(ED)),
            HostKeyStatus::Unknown
        );
        assert_eq!(k.check("example.com", 22, &key(ED)), HostKeyStatus::Unknown);
        assert_eq!(k.check("10.0.0.7", 2222, &key(ECDSA)), HostKeyStatus::Known);
        assert_eq!(
            k.check("10.0.0.17", 2222, &key(ECDSA)),
            HostKeyStatus::Unknown
        );
        assert_eq!(k.check("10.0.0.7", 2222, &key(ED)), changed(2));
        let k = kh(&format!("* {ED}\n"));
        assert_eq!(k.check("anything", 2200, &key(ED)), HostKeyStatus::Known);
    }

    #[test]
    fn wildcard_matcher() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(wildcard_match("a*b*c", "abc"));
        assert!(!wildcard_match("a*b*c", "acb"));
        assert!(wildcard_match("?b", "ab"));
        assert!(!wildcard_match("?b", "b"));
        assert!(wildcard_match("*.lan", "x.y.lan"));
        assert!(!wildcard_match("*.lan", "x.lan.com"));
        assert!(wildcard_match("**a", "ba"));
    }

    #[test]
    fn revoked_wins_and_cert_authority_is_ignored() {
        let k = kh(&format!("web1 {ED}\n@revoked * {ED}\n"));
        assert_eq!(k.check("web1", 22, &key(ED)), HostKeyStatus::Revoked);
        assert_eq!(k.check("web2", 22, &key(ED)), HostKeyStatus::Revoked);
        let k = kh(&format!("@revoked web9 {ED}\nweb1 {ED}\n"));
        assert_eq!(k.check("web1", 22, &key(ED)), HostKeyStatus::Known);
        // A revoked entry for another key does not make the host known or changed.
        let k = kh(&format!("@revoked web1 {ED2}\n"));
        assert_eq!(k.check("web1", 22, &key(ED)), HostKeyStatus::Unknown);
        // A CA line neither trusts nor changes anything.
        let k = kh(&format!(
            "@cert-authority *.example.com {ED2}\nweb.example.com {ED}\n"
        ));
        assert_eq!(
            k.check("web.example.com", 22, &key(ED)),
            HostKeyStatus::Known
        );
        assert_eq!(
            k.check("db.example.com", 22, &key(ED)),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            k.check("db.example.com", 22, &key(ED2)),
            HostKeyStatus::Unknown
        );
        assert_eq!(k.entries_for("db.example.com", 22).len(), 1);
        assert_eq!(
            k.entries_for("db.example.com", 22)[0].marker,
            Marker::CertAuthority
        );
    }

    #[test]
    fn tabs_comments_blank_lines_crlf_and_line_numbers() {
        let text = format!(
            "# comment\n\n   \t\n  # indented comment\n\tweb1\t{}\t  trailing comment\r\nweb2 {ED}\n",
            ED.replace(' ', "\t")
        );
        let k = kh(&text);
        assert_eq!(k.check("web1", 22, &key(ED)), HostKeyStatus::Known);
        assert_eq!(k.check("web1", 22, &key(ED2)), changed(5));
        assert_eq!(k.check("web2", 22, &key(ED2)), changed(6));
        assert!(k.bad_lines().is_empty());
    }

    #[test]
    fn bad_lines_are_skipped_unless_they_name_the_host() {
        let text = format!(
            "garbage\n@bogus web1 {ED}\nweb3 ssh-ed25519 !!notbase64!!\nweb4 ssh-ed25519\nweb1 {ED}\nweb5 ssh-rsa {}\n",
            &ED["ssh-ed25519 ".len()..]
        );
        let k = kh(&text);
        assert_eq!(k.bad_lines().len(), 2, "{:?}", k.bad_lines());
        assert_eq!(k.bad_lines()[1].0, 2);
        assert_eq!(k.check("web1", 22, &key(ED)), HostKeyStatus::Known);
        // web3's key is corrupt: whatever web3 presents, it is not silently unknown.
        assert_eq!(k.check("web3", 22, &key(ED)), changed(3));
        assert_eq!(k.check("web4", 22, &key(ED)), changed(4));
        // Key type field disagreeing with the key data is a bad key.
        assert!(k.entries_for("web5", 22)[0].key.is_err());
        assert_eq!(k.check("web5", 22, &key(ED)), changed(6));
        assert_eq!(k.check("garbage", 22, &key(ED)), HostKeyStatus::Unknown);
    }

    /// The parse errors read as the messages they were before they were typed.
    #[test]
    fn parse_errors_keep_their_words() {
        let k = kh("garbage\n@bogus web1\n@revoked\nweb2 ssh-ed25519\nweb3 ssh-ed25519 !!x!!\n");
        let bad: Vec<String> = (k.bad_lines().iter())
            .map(|(line, e)| format!("{line}: {e}"))
            .collect();
        assert_eq!(
            bad,
            [
                "1: no key after the host field",
                "2: unknown marker `@bogus`",
                "3: marker without a host field"
            ]
        );
        let key_error = |host| {
            k.entries_for(host, 22)[0]
                .key
                .clone()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(key_error("web2"), "key type `ssh-ed25519` without key data");
        assert!(
            key_error("web3").starts_with("cannot parse the `ssh-ed25519` key: "),
            "{}",
            key_error("web3")
        );
        assert_eq!(
            "yes".parse::<HostKeyPolicy>().unwrap_err().to_string(),
            "unknown host key policy `yes`: expected \"strict\" or \"accept-new\""
        );
    }

    #[test]
    fn known_algorithms_in_file_order() {
        let k = kh(&format!(
            "web1 {RSA}\nweb1 {ECDSA}\n@revoked web1 {ED}\nweb1 {RSA}\nother {ED2}\n"
        ));
        let algs = k.known_algorithms("web1", 22);
        assert_eq!(algs, vec![key(RSA).algorithm(), key(ECDSA).algorithm()]);
        assert!(k.known_algorithms("web9", 22).is_empty());
    }

    #[test]
    fn entry_lines() {
        assert_eq!(
            entry_line("Web1", 22, &key(ED)).unwrap(),
            format!("web1 {ED}")
        );
        assert_eq!(
            entry_line("10.0.0.2", 2222, &key(ED)).unwrap(),
            format!("[10.0.0.2]:2222 {ED}")
        );
        let mut commented = key(ED);
        commented.set_comment("root@somewhere");
        assert_eq!(entry_line("h", 22, &commented).unwrap(), format!("h {ED}"));
    }

    #[test]
    fn policy_spelling() {
        assert_eq!("strict".parse(), Ok(HostKeyPolicy::Strict));
        assert_eq!("accept-new".parse(), Ok(HostKeyPolicy::AcceptNew));
        assert!("yes".parse::<HostKeyPolicy>().is_err());
        assert_eq!(HostKeyPolicy::AcceptNew.to_string(), "accept-new");
        // The same spelling in inventories (serde) and in `hosts --output json`.
        #[derive(serde::Deserialize)]
        struct Inv {
            p: HostKeyPolicy,
        }
        let p = |t: &str| toml::from_str::<Inv>(t).map(|i| i.p);
        assert_eq!(p("p = \"accept-new\"").unwrap(), HostKeyPolicy::AcceptNew);
        assert_eq!(p("p = \"strict\"").unwrap(), HostKeyPolicy::Strict);
        let e = p("p = \"yes\"").unwrap_err().to_string();
        assert!(
            e.contains("unknown variant `yes`, expected `strict` or `accept-new`"),
            "{e}"
        );
        assert_eq!(
            serde_json::to_string(&HostKeyPolicy::AcceptNew).unwrap(),
            "\"accept-new\""
        );
    }

    #[test]
    fn add_creates_appends_and_rechecks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        assert_eq!(
            add_if_unknown(&path, "10.0.0.2", 2222, &key(ED)).unwrap(),
            AddOutcome::Added
        );
        assert_eq!(
            add_if_unknown(&path, "10.0.0.2", 2222, &key(ED)).unwrap(),
            AddOutcome::NotAdded(HostKeyStatus::Known)
        );
        assert_eq!(
            add_if_unknown(&path, "10.0.0.2", 2222, &key(ED2)).unwrap(),
            AddOutcome::NotAdded(HostKeyStatus::Changed {
                line: 1,
                file: path.clone()
            })
        );
        // A file without a final newline gets one before the new entry.
        std::fs::write(&path, format!("web1 {ED}")).unwrap();
        assert_eq!(
            add_if_unknown(&path, "web2", 22, &key(ECDSA)).unwrap(),
            AddOutcome::Added
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("web1 {ED}\nweb2 {ECDSA}\n"));
        let k = KnownHosts::load(&path).unwrap();
        assert_eq!(k.check("web2", 22, &key(ECDSA)), HostKeyStatus::Known);
        assert!(
            KnownHosts::load(&dir.path().join("missing"))
                .unwrap()
                .entries_for("*", 22)
                .is_empty()
        );
    }

    /// Files in `dir` other than the known_hosts file and its lock.
    fn others(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "known_hosts" && n != "known_hosts.lock")
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_writer_killed_at_any_point_leaves_the_old_file_or_the_new_one() {
        use std::os::unix::fs::PermissionsExt;
        let old = format!("# mine\nweb1 {ED}");
        let new = format!("# mine\nweb1 {ED}\nweb2 {ECDSA}\n");
        for crash in [
            Crash::TempCreated,
            Crash::HalfWritten,
            Crash::Synced,
            Crash::Renamed,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("known_hosts");
            std::fs::write(&path, &old).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let before = std::fs::metadata(&path).unwrap();
            assert_eq!(
                add_with(&path, "web2", 22, &key(ECDSA), false, crash).unwrap(),
                AddOutcome::Added
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let after = std::fs::metadata(&path).unwrap();
            use std::os::unix::fs::MetadataExt;
            if crash == Crash::Renamed {
                assert_eq!(text, new, "{crash:?}");
                assert_ne!(
                    after.ino(),
                    before.ino(),
                    "{crash:?}: replaced, not rewritten"
                );
                assert!(others(dir.path()).is_empty(), "{crash:?}");
            } else {
                assert_eq!(text, old, "{crash:?}: the old file, untouched");
                assert_eq!(after.ino(), before.ino(), "{crash:?}");
                // The killed writer's temporary file is there, hidden, never a known_hosts name.
                let left = others(dir.path());
                assert_eq!(left.len(), 1, "{crash:?}: {left:?}");
                assert!(left[0].starts_with(".known_hosts.claw-tmp."), "{left:?}");
                assert_eq!(
                    KnownHosts::load(&path)
                        .unwrap()
                        .check("web2", 22, &key(ECDSA)),
                    HostKeyStatus::Unknown
                );
                // The next writer removes it and does the work.
                assert_eq!(
                    add_if_unknown(&path, "web2", 22, &key(ECDSA)).unwrap(),
                    AddOutcome::Added,
                    "{crash:?}"
                );
                assert_eq!(std::fs::read_to_string(&path).unwrap(), new, "{crash:?}");
                assert!(others(dir.path()).is_empty(), "{crash:?}");
            }
            // The mode of the file it replaced.
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
                0o600,
                "{crash:?}"
            );
        }
    }

    #[test]
    fn a_symlinked_file_is_updated_through_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles/known_hosts");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, format!("web1 {ED}\n")).unwrap();
        let link = dir.path().join("known_hosts");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(
            add_if_unknown(&link, "web2", 22, &key(ECDSA)).unwrap(),
            AddOutcome::Added
        );
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(&real).unwrap(),
            format!("web1 {ED}\nweb2 {ECDSA}\n")
        );
        assert!(real.with_file_name("known_hosts.lock").exists());
    }

    #[test]
    fn hashed_entries_are_written_with_hash_known_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        assert_eq!(
            record(&path, "Web1.Example.com", 22, &key(ED), true).unwrap(),
            AddOutcome::Added
        );
        assert_eq!(
            record(&path, "10.0.0.2", 2222, &key(ECDSA), true).unwrap(),
            AddOutcome::Added
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("web1") && !text.contains("10.0.0.2"),
            "{text}"
        );
        assert_eq!(text.lines().filter(|l| l.starts_with("|1|")).count(), 2);
        let k = KnownHosts::load(&path).unwrap();
        assert_eq!(
            k.check("web1.example.com", 22, &key(ED)),
            HostKeyStatus::Known
        );
        assert_eq!(k.check("10.0.0.2", 2222, &key(ECDSA)), HostKeyStatus::Known);
        assert_eq!(k.check("10.0.0.2", 22, &key(ECDSA)), HostKeyStatus::Unknown);
        // OpenSSH finds them too (`ssh-keygen -F` reads hashed entries).
        for name in ["web1.example.com", "[10.0.0.2]:2222"] {
            let out = std::process::Command::new("ssh-keygen")
                .args(["-F", name, "-f"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{name}: {out:?}");
        }
        // A known salt gives OpenSSH's hash (`|1|` + base64 salt + base64 HMAC-SHA1).
        let h = hashed_name("web1", &[0u8; 20]);
        assert!(hashed_match(&h, "web1") && !hashed_match(&h, "web2"), "{h}");
    }

    #[test]
    fn special_files_are_read_as_empty_and_never_written() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        for p in [&fifo, &link] {
            // Never opened: a FIFO without a writer would block here.
            assert!(KnownHosts::load(p).unwrap().entries_for("*", 22).is_empty());
            assert_eq!(special(p), Some("a FIFO"));
            match record(p, "web1", 22, &key(ED), false).unwrap() {
                AddOutcome::NotRecorded(why) => assert!(why.contains("is a FIFO"), "{why}"),
                o => panic!("{o:?}"),
            }
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["fifo", "link"],
            "no lock or temporary file beside them"
        );
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(special(&dir.path().join("missing")), None);
        assert_eq!(special(dir.path()), None);
    }

    #[test]
    fn an_alias_is_looked_up_without_port() {
        let o = KeyOptions {
            alias: Some("web-alias".into()),
            ..KeyOptions::default()
        };
        assert_eq!(o.lookup("10.0.0.2", 2222), ("web-alias", 22));
        assert_eq!(
            KeyOptions::default().lookup("10.0.0.2", 2222),
            ("10.0.0.2", 2222)
        );
        assert_eq!(
            KeyOptions::default().global,
            [
                PathBuf::from("/etc/ssh/ssh_known_hosts"),
                PathBuf::from("/etc/ssh/ssh_known_hosts2")
            ]
        );
    }

    #[test]
    fn concurrent_adds_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let keys = [ED, ED2, ECDSA, RSA];
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let path = path.clone();
                let k = key(keys[i % keys.len()]);
                std::thread::spawn(move || {
                    // Two writers race for every host (with different keys): exactly one entry wins.
                    add_if_unknown(&path, &format!("host{}", i / 2), 22, &k).unwrap()
                })
            })
            .collect();
        let added = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|o| *o == AddOutcome::Added)
            .count();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 16);
        assert_eq!(added, 16);
        let k = KnownHosts::load(&path).unwrap();
        assert!(k.bad_lines().is_empty());
        for h in 0..16 {
            assert_eq!(k.entries_for(&format!("host{h}"), 22).len(), 1);
        }
    }
}
