//! `cert`: a TLS certificate chain and its private key, uploaded as two files (by default
//! `fullchain.pem`, 0644, and `privkey.pem`, 0600, in `dir`).
//!
//! Both files are parsed locally when the step is loaded: a certificate that does not match its
//! key, an encrypted key, a file that is not PEM or a certificate that has already expired stop
//! the plan before anything changes. A certificate that expires within `warn_days` (30) is a
//! warning in the plan. The key's content is never shown (its [`ContentChange`] is sensitive) and
//! never appears in a message; it travels on stdin, the certificate in the script.
//!
//! [`ContentChange`]: crate::plan::ContentChange

use super::StepError;
use super::{check_path, file};
use crate::fact::PathState;
use crate::plan::{Action, Change};
use crate::quote::quote;
use der::Decode;
use der::asn1::{ObjectIdentifier, OctetStringRef};
use serde::Deserialize;
use std::path::Path;
use std::time::{Duration, SystemTime};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Local PEM file with the certificate (and its chain), relative to the playbook's directory.
    pub cert: String,
    /// Local PEM file with the private key, relative to the playbook's directory.
    pub key: String,
    /// Remote directory receiving `fullchain.pem` and `privkey.pem`.
    pub dir: Option<String>,
    /// Remote path of the certificate file (instead of `dir`).
    pub cert_path: Option<String>,
    /// Remote path of the key file (instead of `dir`).
    pub key_path: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Warn when the certificate expires within this many days.
    pub warn_days: Option<u32>,
}

const DEFAULT_WARN_DAYS: u32 = 30;
const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;

#[derive(Debug, Clone)]
pub struct Desired {
    pub cert: file::Desired,
    pub key: file::Desired,
    /// `CN=example.org, expires 2027-01-01T00:00:00Z`, for display.
    pub summary: String,
    /// Shown in every plan of this step (expiry).
    pub warnings: Vec<String>,
}

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A public key, as found in a certificate or derived from a private key.
#[derive(PartialEq, Eq)]
enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    Ed25519([u8; 32]),
}

impl PublicKey {
    fn kind(&self) -> &'static str {
        match self {
            PublicKey::Rsa { .. } => "RSA",
            PublicKey::P256(_) => "EC P-256",
            PublicKey::P384(_) => "EC P-384",
            PublicKey::Ed25519(_) => "Ed25519",
        }
    }
}

/// The PEM blocks of a text: (label, DER). Text outside blocks is ignored (as OpenSSL does).
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, StepError> {
    let mut out = vec![];
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block["-----BEGIN ".len()..]
            .find("-----")
            .ok_or_else(|| StepError::input("a PEM header is not terminated"))?;
        let label = &block["-----BEGIN ".len().."-----BEGIN ".len() + label_end];
        let footer = format!("-----END {label}-----");
        let end = block
            .find(&footer)
            .ok_or_else(|| StepError::input(format!("a `{label}` PEM block has no END line")))?
            + footer.len();
        if block[..end].contains("Proc-Type:") {
            // Legacy OpenSSL encryption headers (`Proc-Type: 4,ENCRYPTED`).
            out.push((format!("ENCRYPTED {label}"), vec![]));
        } else {
            let (l, der) = pem_rfc7468::decode_vec(&block.as_bytes()[..end]).map_err(|e| {
                StepError::input(format!("a `{label}` PEM block is malformed ({e})"))
            })?;
            out.push((l.to_string(), der));
        }
        rest = &block[end..];
    }
    Ok(out)
}

fn read_local(
    what: &'static str,
    rel: &str,
    dir: &Path,
) -> Result<(std::path::PathBuf, Vec<u8>), StepError> {
    let p = dir.join(rel);
    let data = std::fs::read(&p).map_err(|e| StepError::ReadArgFile {
        arg: what,
        path: p.clone(),
        source: e.into(),
    })?;
    Ok((p, data))
}

/// The leaf certificate of a PEM chain (the first block); every block must be a certificate.
fn parse_chain(text: &[u8], shown: &str) -> Result<x509_cert::Certificate, StepError> {
    let not_cert = || {
        StepError::input(format!(
            "{shown} is not a PEM certificate (no `-----BEGIN CERTIFICATE-----` block)"
        ))
    };
    let text = std::str::from_utf8(text).map_err(|_| not_cert())?;
    let blocks = pem_blocks(text).map_err(|e| StepError::input(format!("{shown}: {e}")))?;
    if blocks.is_empty() {
        return Err(not_cert());
    }
    let mut leaf = None;
    for (label, der) in blocks {
        if label != "CERTIFICATE" {
            return Err(StepError::input(format!(
                "{shown} holds a `{label}` PEM block; `cert` must hold certificates only (the key goes in `key`)"
            )));
        }
        let c = x509_cert::Certificate::from_der(&der).map_err(|e| {
            StepError::input(format!("{shown}: a certificate cannot be parsed ({e})"))
        })?;
        leaf.get_or_insert(c);
    }
    leaf.ok_or_else(not_cert)
}

fn named_curve(params: Option<&der::asn1::AnyRef<'_>>) -> Option<ObjectIdentifier> {
    params.and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
}

fn ec_public(curve: Option<ObjectIdentifier>, secret: &[u8]) -> Result<PublicKey, StepError> {
    let bad = || StepError::input("the EC private key is invalid");
    match curve {
        Some(c) if c == OID_P256 => Ok(PublicKey::P256(
            p256::SecretKey::from_slice(secret)
                .map_err(|_| bad())?
                .public_key(),
        )),
        Some(c) if c == OID_P384 => Ok(PublicKey::P384(
            p384::SecretKey::from_slice(secret)
                .map_err(|_| bad())?
                .public_key(),
        )),
        Some(c) => Err(StepError::input(format!(
            "EC curve {c} is not supported (P-256 and P-384 are)"
        ))),
        None => Err(StepError::input(
            "the EC private key does not name its curve",
        )),
    }
}

fn sec1_public(der: &[u8], curve: Option<ObjectIdentifier>) -> Result<PublicKey, StepError> {
    let k = sec1::EcPrivateKey::from_der(der)
        .map_err(|_| StepError::input("the EC private key cannot be parsed"))?;
    let curve = k
        .parameters
        .and_then(sec1::EcParameters::named_curve)
        .or(curve);
    ec_public(curve, k.private_key)
}

fn rsa_public(der: &[u8]) -> Result<PublicKey, StepError> {
    let k = pkcs1::RsaPrivateKey::from_der(der)
        .map_err(|_| StepError::input("the RSA private key cannot be parsed"))?;
    Ok(PublicKey::Rsa {
        n: k.modulus.as_bytes().to_vec(),
        e: k.public_exponent.as_bytes().to_vec(),
    })
}

/// The public key of a PEM private key. Errors never quote the key.
fn key_public(text: &[u8]) -> Result<PublicKey, StepError> {
    let not_key = || {
        "it is not a PEM private key (PKCS#8 `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
            .to_string()
    };
    let text = std::str::from_utf8(text).map_err(|_| StepError::input(not_key()))?;
    let blocks = pem_blocks(text)?;
    // `openssl ecparam -genkey` writes an `EC PARAMETERS` block before the key.
    let keys: Vec<&(String, Vec<u8>)> = blocks
        .iter()
        .filter(|(l, _)| l.ends_with("PRIVATE KEY"))
        .collect();
    let [(label, der)] = keys.as_slice() else {
        return Err(StepError::input(match (keys.len(), blocks.first()) {
            (0, None) => not_key(),
            (0, Some((l, _))) => format!("it holds a `{l}` PEM block, not a private key"),
            _ => "it holds several private keys; give one".into(),
        }));
    };
    match label.as_str() {
        l if l.contains("ENCRYPTED") => Err(StepError::input(
            "the key is encrypted (passphrase-protected), which is not supported: give it unencrypted (e.g. `openssl pkey -in enc.pem -out key.pem`) and keep the file out of version control",
        )),
        "RSA PRIVATE KEY" => rsa_public(der),
        "EC PRIVATE KEY" => sec1_public(der, None),
        "PRIVATE KEY" => {
            let k = pkcs8::PrivateKeyInfoRef::from_der(der)
                .map_err(|_| StepError::input("the PKCS#8 private key cannot be parsed"))?;
            let inner = k.private_key.as_bytes();
            match k.algorithm.oid {
                o if o == OID_RSA => rsa_public(inner),
                o if o == OID_EC => {
                    sec1_public(inner, named_curve(k.algorithm.parameters.as_ref()))
                }
                o if o == OID_ED25519 => {
                    let seed = <&OctetStringRef>::from_der(inner)
                        .ok()
                        .and_then(|s| <[u8; 32]>::try_from(s.as_bytes()).ok())
                        .ok_or_else(|| {
                            StepError::input("the Ed25519 private key cannot be parsed")
                        })?;
                    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
                    Ok(PublicKey::Ed25519(sk.verifying_key().to_bytes()))
                }
                o => Err(StepError::input(format!(
                    "private keys of algorithm {o} are not supported (RSA, EC P-256/P-384 and Ed25519 are)"
                ))),
            }
        }
        l => Err(StepError::input(format!(
            "it holds a `{l}` PEM block, not a private key"
        ))),
    }
}

/// The public key of a certificate.
fn cert_public(c: &x509_cert::Certificate) -> Result<PublicKey, StepError> {
    let spki = c.tbs_certificate().subject_public_key_info();
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| StepError::input("its public key is not a whole number of bytes"))?;
    let params = spki
        .algorithm
        .parameters
        .as_ref()
        .map(der::asn1::AnyRef::from);
    match spki.algorithm.oid {
        o if o == OID_RSA => {
            let k = pkcs1::RsaPublicKey::from_der(bits)
                .map_err(|_| StepError::input("its RSA public key cannot be parsed"))?;
            Ok(PublicKey::Rsa {
                n: k.modulus.as_bytes().to_vec(),
                e: k.public_exponent.as_bytes().to_vec(),
            })
        }
        o if o == OID_EC => match named_curve(params.as_ref()) {
            Some(c) if c == OID_P256 => p256::PublicKey::from_sec1_bytes(bits)
                .map(PublicKey::P256)
                .map_err(|_| StepError::input("its EC public key cannot be parsed")),
            Some(c) if c == OID_P384 => p384::PublicKey::from_sec1_bytes(bits)
                .map(PublicKey::P384)
                .map_err(|_| StepError::input("its EC public key cannot be parsed")),
            c => Err(StepError::input(format!(
                "its EC curve {} is not supported (P-256 and P-384 are)",
                c.map_or("(unnamed)".to_string(), |c| c.to_string())
            ))),
        },
        o if o == OID_ED25519 => <[u8; 32]>::try_from(bits)
            .map(PublicKey::Ed25519)
            .map_err(|_| StepError::input("its Ed25519 public key cannot be parsed")),
        o => Err(StepError::input(format!(
            "its public key algorithm {o} is not supported (RSA, EC P-256/P-384 and Ed25519 are)"
        ))),
    }
}

/// The expiry warning (or error, once expired) for a certificate valid until `not_after`.
fn expiry(
    shown: &str,
    not_after: Duration,
    date: &str,
    now: Duration,
    warn_days: u32,
) -> Result<Option<String>, StepError> {
    let Some(left) = not_after.checked_sub(now).filter(|l| !l.is_zero()) else {
        // Deploying it would break every TLS client: nothing good can come of this plan.
        return Err(StepError::input(format!(
            "the certificate in {shown} expired on {date}; renew it before deploying"
        )));
    };
    let days = left.as_secs() / 86_400;
    if left < Duration::from_secs(u64::from(warn_days) * 86_400) {
        let when = match days {
            0 => "in less than a day".to_string(),
            1 => "in 1 day".to_string(),
            d => format!("in {d} days"),
        };
        return Ok(Some(format!(
            "the certificate in {shown} expires {when} (on {date}); renew it"
        )));
    }
    Ok(None)
}

impl Desired {
    pub fn from_args(a: Args, files_dir: &Path) -> Result<Self, StepError> {
        Self::at(a, files_dir, SystemTime::now())
    }

    fn at(a: Args, files_dir: &Path, now: SystemTime) -> Result<Self, StepError> {
        let (cert_path, key_path) = match (a.dir, a.cert_path, a.key_path) {
            (Some(d), None, None) => {
                check_path(&d)?;
                let d = d.trim_end_matches('/');
                (format!("{d}/fullchain.pem"), format!("{d}/privkey.pem"))
            }
            (None, Some(c), Some(k)) => (c, k),
            _ => {
                return Err(StepError::arg(
                    "give either `dir` (for fullchain.pem and privkey.pem) or both `cert_path` and `key_path`",
                ));
            }
        };
        if cert_path == key_path {
            return Err(StepError::arg("`cert_path` and `key_path` must differ"));
        }
        let (cert_file, cert_pem) = read_local("cert", &a.cert, files_dir)?;
        let (key_file, key_pem) = read_local("key", &a.key, files_dir)?;
        let cert_shown = cert_file.display().to_string();
        let key_shown = key_file.display().to_string();
        let leaf = parse_chain(&cert_pem, &cert_shown)?;
        let cert_key =
            cert_public(&leaf).map_err(|e| StepError::unusable("certificate", &cert_shown, e))?;
        let key =
            key_public(&key_pem).map_err(|e| StepError::unusable("private key", &key_shown, e))?;
        if cert_key != key {
            let kinds = if cert_key.kind() == key.kind() {
                String::new()
            } else {
                format!(" (a {} certificate, a {} key)", cert_key.kind(), key.kind())
            };
            return Err(StepError::input(format!(
                "the certificate in {cert_shown} does not match the private key in {key_shown}{kinds}"
            )));
        }
        let validity = leaf.tbs_certificate().validity();
        let date = validity.not_after.to_date_time().to_string();
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let warnings = expiry(
            &cert_shown,
            validity.not_after.to_unix_duration(),
            &date,
            now,
            a.warn_days.unwrap_or(DEFAULT_WARN_DAYS),
        )?
        .into_iter()
        .collect();
        let summary = format!("{}, expires {date}", leaf.tbs_certificate().subject());
        // Both files parsed as PEM above, so they are text.
        let mk = |path: String, content: Vec<u8>, mode: u32, sensitive: bool| {
            file::Desired::from_file_args(
                file::FileArgs {
                    path,
                    src: None,
                    content: Some(
                        String::from_utf8(content).map_err(|_| StepError::input("not text"))?,
                    ),
                    mode: Some(format!("{mode:04o}")),
                    owner: a.owner.clone(),
                    group: a.group.clone(),
                    state: super::State::Present,
                    sensitive,
                    force: false,
                },
                files_dir,
            )
        };
        Ok(Desired {
            cert: mk(cert_path, cert_pem, CERT_MODE, false)?,
            key: mk(key_path, key_pem, KEY_MODE, true)?,
            summary,
            warnings,
        })
    }

    /// Compares with the observed certificate and key files.
    pub fn diff(&self, cert: &PathState, key: &PathState) -> Result<Change, StepError> {
        self.diff_with(cert, key, [&[], &[]])
    }

    /// [`Self::diff`], and the removal of the leftovers of interrupted uploads the probe found
    /// in the directories of the certificate and of the key (see [`file::with_leftovers`]).
    pub fn diff_with(
        &self,
        cert: &PathState,
        key: &PathState,
        leftovers: [&[String]; 2],
    ) -> Result<Change, StepError> {
        let c = self.cert.diff_with(cert, leftovers[0])?;
        // Both in one directory: the certificate's change removes them.
        let lk = if self.key.parent() == self.cert.parent() {
            &[][..]
        } else {
            leftovers[1]
        };
        let k = self.key.diff_with(key, lk)?;
        let target = format!("{} + {}", self.cert.path, self.key.path);
        if c.action == Action::NoOp && k.action == Action::NoOp {
            let mut n = Change::noop(
                target,
                format!("certificate and key are up to date ({})", self.summary),
            );
            n.warnings = self.warnings.clone();
            return Ok(n);
        }
        let action = if c.action == Action::Create && k.action == Action::Create {
            Action::Create
        } else {
            Action::Update
        };
        let name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
        let mut details = vec![];
        let mut script = String::from("set -e\n");
        let mut change = Change::new(action, target, self.summary.clone(), String::new());
        for (ch, d) in [(&c, &self.cert), (&k, &self.key)] {
            if ch.action == Action::NoOp {
                continue;
            }
            let file = name(&d.path);
            details.extend(ch.details.iter().map(|x| format!("{file} {x}")));
            let Some(s) = self.file_script(ch, d, &mut change)? else {
                continue;
            };
            // A subshell per file: each upload has its own variables and traps; `set -e` holds
            // in both and stops the step at the first failure.
            script.push_str(&format!("(\n{s})\n"));
            change.upload_bytes += ch.upload_bytes;
            if change.upload_dir.is_none() {
                change.upload_dir = ch.upload_dir.clone();
            }
        }
        // Show the key's change (hidden) rather than the certificate's when both change.
        change.content = k.content.clone().or_else(|| c.content.clone());
        if let Some(cc) = change.content.as_mut()
            && cc.path == self.key.path
        {
            cc.sensitive = true;
        }
        let stdin = change.op.take().map(|o| o.stdin).unwrap_or_default();
        change.op = Some(crate::plan::Op::new(script, stdin));
        change.details = details;
        change.warnings = self.warnings.clone();
        change.housekeeping = [&c, &k]
            .iter()
            .all(|x| x.housekeeping || x.action == Action::NoOp);
        change.tidies = [&c, &k].iter().flat_map(|x| x.tidies.clone()).collect();
        Ok(change)
    }

    /// The script of one file's change (`ch`, the change of `d`), None when it has none. The
    /// key's content travels on stdin (kept in `change.op` until the joined op is made); the
    /// (public) certificate's is written into its script.
    fn file_script(
        &self,
        ch: &Change,
        d: &file::Desired,
        change: &mut Change,
    ) -> Result<Option<String>, StepError> {
        let Some(op) = &ch.op else { return Ok(None) };
        let mut s = op.script.clone();
        if !op.stdin.is_empty() && std::ptr::eq(d, &self.cert) {
            // Only the key travels on stdin; the (public) certificate is in the script.
            let from_stdin = "cat > ./new\n";
            if !s.contains(from_stdin) {
                return Err(StepError::Internal {
                    what: "unexpected upload script (bug, please report)",
                });
            }
            s = s.replace(
                from_stdin,
                &format!(
                    "printf '%s' {} > ./new\n",
                    quote(&String::from_utf8_lossy(&d.content))
                ),
            );
        } else if !op.stdin.is_empty() {
            change.op = Some(crate::plan::Op::new(String::new(), op.stdin.clone()));
        }
        Ok(Some(s))
    }
}

/// The `cert` step kind.
pub(crate) struct CertKind;

impl super::StepKind for CertKind {
    fn name(&self) -> &'static str {
        "cert"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<Args>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        _: &serde_json::Map<String, serde_json::Value>,
        src: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        Ok(super::Desired::Cert(Desired::from_args(
            super::args(args)?,
            src.files_dir,
        )?))
    }

    fn uploads_secret_material(&self) -> bool {
        true
    }
}

/// Asks for the certificate and key files, then the leftovers beside each.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        p.add_upload_dir(&self.cert.parent());
        p.add_upload_dir(&self.key.parent());
        vec![
            p.add(crate::fact::Request::Path(self.cert.path.clone())),
            p.add(crate::fact::Request::Path(self.key.path.clone())),
            p.add(crate::fact::Request::Leftovers(self.cert.parent())),
            p.add(crate::fact::Request::Leftovers(self.key.parent())),
        ]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [
                crate::fact::Observed::Path(cert),
                crate::fact::Observed::Path(key),
                crate::fact::Observed::Leftovers(lc),
                crate::fact::Observed::Leftovers(lk),
            ] => Some(self.diff_with(cert, key, [lc, lk])),
            _ => None,
        }
    }

    fn paths(&self) -> Vec<&str> {
        vec![self.cert.path.as_str(), self.key.path.as_str()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Test material made with the `openssl` CLI: a CA, certificates and keys of several kinds.
    struct Pki {
        dir: tempfile::TempDir,
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    impl Pki {
        fn new() -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "365",
                    "-subj",
                    "/CN=Lab CA",
                ],
            );
            Pki { dir }
        }

        fn path(&self, f: &str) -> std::path::PathBuf {
            self.dir.path().join(f)
        }

        /// A key (`rsa`, `p256`, `p384`, `ed25519`) and a certificate for it signed by the CA,
        /// valid for `days`; the certificate file holds the chain (leaf + CA).
        fn issue(&self, name: &str, alg: &str, days: &str) {
            let d = self.dir.path();
            let key = format!("{name}.key");
            match alg {
                "rsa" => openssl(
                    d,
                    &[
                        "genpkey",
                        "-algorithm",
                        "RSA",
                        "-pkeyopt",
                        "rsa_keygen_bits:2048",
                        "-out",
                        &key,
                    ],
                ),
                "p256" => openssl(
                    d,
                    &[
                        "genpkey",
                        "-algorithm",
                        "EC",
                        "-pkeyopt",
                        "ec_paramgen_curve:P-256",
                        "-out",
                        &key,
                    ],
                ),
                "p384" => openssl(
                    d,
                    &[
                        "genpkey",
                        "-algorithm",
                        "EC",
                        "-pkeyopt",
                        "ec_paramgen_curve:P-384",
                        "-out",
                        &key,
                    ],
                ),
                "ed25519" => openssl(d, &["genpkey", "-algorithm", "ED25519", "-out", &key]),
                a => panic!("{a}"),
            }
            let csr = format!("{name}.csr");
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-key",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={name}.lab"),
                ],
            );
            let leaf = format!("{name}.leaf");
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &leaf,
                    "-days",
                    days,
                ],
            );
            let chain = [
                std::fs::read(d.join(&leaf)).unwrap(),
                std::fs::read(d.join("ca.pem")).unwrap(),
            ]
            .concat();
            std::fs::write(d.join(format!("{name}.pem")), chain).unwrap();
        }

        fn load(&self, cert: &str, key: &str) -> Result<Desired, StepError> {
            Desired::from_args(
                Args {
                    cert: cert.into(),
                    key: key.into(),
                    dir: Some("/etc/ssl/claw".into()),
                    cert_path: None,
                    key_path: None,
                    owner: None,
                    group: None,
                    warn_days: None,
                },
                self.dir.path(),
            )
        }
    }

    fn key_body(pem: &[u8]) -> String {
        let s = String::from_utf8_lossy(pem);
        s.lines()
            .find(|l| !l.starts_with("-----"))
            .unwrap()
            .to_string()
    }

    #[test]
    fn keys_of_every_supported_kind_match_their_certificates() {
        let pki = Pki::new();
        for alg in ["rsa", "p256", "p384", "ed25519"] {
            pki.issue(alg, alg, "365");
            let d = pki
                .load(&format!("{alg}.pem"), &format!("{alg}.key"))
                .unwrap();
            assert_eq!(d.cert.path, "/etc/ssl/claw/fullchain.pem");
            assert_eq!(d.key.path, "/etc/ssl/claw/privkey.pem");
            assert_eq!(d.key.mode, Some(0o600));
            assert_eq!(d.cert.mode, Some(0o644));
            assert!(d.key.sensitive && !d.cert.sensitive);
            assert!(d.warnings.is_empty(), "{:?}", d.warnings);
            assert!(
                d.summary.contains(&format!("CN={alg}.lab")),
                "{}",
                d.summary
            );
        }
        // The traditional encodings: PKCS#1 and SEC1.
        openssl(
            pki.dir.path(),
            &["pkey", "-in", "rsa.key", "-traditional", "-out", "rsa1.key"],
        );
        assert!(
            std::fs::read_to_string(pki.path("rsa1.key"))
                .unwrap()
                .contains("BEGIN RSA PRIVATE KEY")
        );
        pki.load("rsa.pem", "rsa1.key").unwrap();
        openssl(
            pki.dir.path(),
            &["ec", "-in", "p256.key", "-out", "p256s.key"],
        );
        assert!(
            std::fs::read_to_string(pki.path("p256s.key"))
                .unwrap()
                .contains("BEGIN EC PRIVATE KEY")
        );
        pki.load("p256.pem", "p256s.key").unwrap();
        // With an `EC PARAMETERS` block in front (openssl ecparam -genkey).
        openssl(
            pki.dir.path(),
            &["ecparam", "-name", "prime256v1", "-out", "params.pem"],
        );
        let both = [
            std::fs::read(pki.path("params.pem")).unwrap(),
            std::fs::read(pki.path("p256s.key")).unwrap(),
        ]
        .concat();
        std::fs::write(pki.path("p256p.key"), both).unwrap();
        pki.load("p256.pem", "p256p.key").unwrap();
    }

    #[test]
    fn refuses_mismatches_and_bad_files_without_showing_the_key() {
        let pki = Pki::new();
        pki.issue("a", "rsa", "365");
        pki.issue("b", "rsa", "365");
        pki.issue("e", "p256", "365");
        let cases: &[(&str, &str, &str)] = &[
            ("a.pem", "b.key", "does not match the private key in"),
            ("a.pem", "e.key", "(a RSA certificate, a EC P-256 key)"),
            ("a.pem", "missing.key", "cannot read `key` file"),
            ("missing.pem", "a.key", "cannot read `cert` file"),
            (
                "a.key",
                "a.key",
                "holds a `PRIVATE KEY` PEM block; `cert` must hold certificates only",
            ),
            ("a.csr", "a.key", "holds a `CERTIFICATE REQUEST`"),
            ("a.pem", "a.pem", "not a private key"),
            ("a.pem", "a.csr", "not a private key"),
        ];
        for (cert, key, want) in cases {
            let e = pki.load(cert, key).unwrap_err().to_string();
            assert!(e.contains(want), "{cert} {key}: {e}");
            for k in ["a.key", "b.key", "e.key"] {
                let body = key_body(&std::fs::read(pki.path(k)).unwrap());
                assert!(!e.contains(&body[..20]), "key material in `{e}`");
            }
        }
        std::fs::write(pki.path("junk.pem"), "hello\n").unwrap();
        let e = pki.load("junk.pem", "a.key").unwrap_err().to_string();
        assert!(e.contains("is not a PEM certificate"), "{e}");
        let e = pki.load("a.pem", "junk.pem").unwrap_err().to_string();
        assert!(e.contains("not a PEM private key"), "{e}");
        // Encrypted keys, PKCS#8 and legacy OpenSSL style.
        openssl(
            pki.dir.path(),
            &[
                "pkey",
                "-in",
                "a.key",
                "-aes256",
                "-passout",
                "pass:secret",
                "-out",
                "enc8.key",
            ],
        );
        openssl(
            pki.dir.path(),
            &[
                "pkey",
                "-in",
                "a.key",
                "-traditional",
                "-aes256",
                "-passout",
                "pass:secret",
                "-out",
                "enc1.key",
            ],
        );
        for k in ["enc8.key", "enc1.key"] {
            let e = pki.load("a.pem", k).unwrap_err().to_string();
            assert!(
                e.contains("encrypted") && e.contains("not supported"),
                "{k}: {e}"
            );
        }
        // Neither `dir` nor both paths.
        let mut a = Args {
            cert: "a.pem".into(),
            key: "a.key".into(),
            dir: None,
            cert_path: Some("/etc/x.pem".into()),
            key_path: None,
            owner: None,
            group: None,
            warn_days: None,
        };
        assert!(
            Desired::from_args(a, pki.dir.path())
                .unwrap_err()
                .to_string()
                .contains("either `dir`")
        );
        a = Args {
            cert: "a.pem".into(),
            key: "a.key".into(),
            dir: None,
            cert_path: Some("/etc/x.pem".into()),
            key_path: Some("etc/x.key".into()),
            owner: None,
            group: None,
            warn_days: None,
        };
        assert!(Desired::from_args(a, pki.dir.path()).is_err());
    }

    #[test]
    fn expiry_warns_then_refuses() {
        let day = 86_400;
        let now = Duration::from_secs(1_000 * day);
        let at = |d: u64| Duration::from_secs(1_000 * day + d);
        assert_eq!(expiry("c", at(40 * day), "D", now, 30).unwrap(), None);
        let w = expiry("c", at(10 * day + 5), "D", now, 30)
            .unwrap()
            .unwrap();
        assert_eq!(
            w,
            "the certificate in c expires in 10 days (on D); renew it"
        );
        assert!(
            expiry("c", at(5), "D", now, 30)
                .unwrap()
                .unwrap()
                .contains("less than a day")
        );
        assert_eq!(expiry("c", at(10 * day), "D", now, 5).unwrap(), None);
        let e = expiry("c", now, "D", now, 30).unwrap_err().to_string();
        assert_eq!(
            e,
            "the certificate in c expired on D; renew it before deploying"
        );

        let pki = Pki::new();
        pki.issue("soon", "p256", "10");
        let d = pki.load("soon.pem", "soon.key").unwrap();
        assert_eq!(d.warnings.len(), 1);
        assert!(
            d.warnings[0].contains("expires in 9 days")
                || d.warnings[0].contains("expires in 10 days"),
            "{:?}",
            d.warnings
        );
        let later = SystemTime::now() + Duration::from_secs(11 * day);
        let a = Args {
            cert: "soon.pem".into(),
            key: "soon.key".into(),
            dir: Some("/etc/ssl/x".into()),
            cert_path: None,
            key_path: None,
            owner: None,
            group: None,
            warn_days: Some(5),
        };
        let e = Desired::at(a, pki.dir.path(), later)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expired on"), "{e}");
    }

    fn file(content: &[u8], mode: u32) -> PathState {
        PathState::File {
            mode,
            owner: "root".into(),
            group: "root".into(),
            uid: 0,
            gid: 0,
            size: content.len() as u64,
            sha256: file::sha256_hex(content),
        }
    }

    #[test]
    fn diff_cases() {
        let pki = Pki::new();
        pki.issue("a", "p256", "365");
        let d = pki.load("a.pem", "a.key").unwrap();
        let cert = std::fs::read(pki.path("a.pem")).unwrap();
        let key = std::fs::read(pki.path("a.key")).unwrap();

        // Both absent: one create; the key on stdin, the certificate in the script.
        let c = d.diff(&PathState::Absent, &PathState::Absent).unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(
            c.target,
            "/etc/ssl/claw/fullchain.pem + /etc/ssl/claw/privkey.pem"
        );
        assert_eq!(
            c.details,
            ["fullchain.pem mode 0644", "privkey.pem mode 0600"]
        );
        let op = c.op.as_ref().unwrap();
        assert_eq!(op.stdin.as_slice(), key.as_slice());
        assert!(!op.script.contains(&key_body(&key)));
        assert!(op.script.contains(&key_body(&cert)));
        assert!(c.content.as_ref().unwrap().sensitive);
        assert_eq!(c.upload_bytes, (cert.len() + key.len()) as u64);

        // Up to date.
        let ok = d.diff(&file(&cert, 0o644), &file(&key, 0o600)).unwrap();
        assert_eq!(ok.action, Action::NoOp);
        assert!(ok.reason.contains("CN=a.lab"), "{}", ok.reason);

        // Only the key's mode drifted: a chmod, nothing uploaded.
        let m = d.diff(&file(&cert, 0o644), &file(&key, 0o644)).unwrap();
        assert_eq!(m.action, Action::Update);
        assert_eq!(m.details, ["privkey.pem mode 0644 -> 0600"]);
        assert!(m.op.as_ref().unwrap().stdin.is_empty());
        let s = m.op.unwrap().script;
        assert!(s.contains("'./privkey.pem'") && s.contains("chmod 00600 /proc/self/fd/3"));

        // Only the certificate changed: shown (public), nothing on stdin.
        let u = d.diff(&file(b"old", 0o644), &file(&key, 0o600)).unwrap();
        assert_eq!(u.action, Action::Update);
        assert_eq!(u.details, ["fullchain.pem content"]);
        assert!(!u.content.as_ref().unwrap().sensitive);
        assert!(u.op.unwrap().stdin.is_empty());

        // A directory in the way.
        let dir = PathState::Dir {
            mode: 0o755,
            owner: "root".into(),
            group: "root".into(),
            uid: 0,
            gid: 0,
        };
        assert!(d.diff(&dir, &PathState::Absent).is_err());

        // Warnings ride along, also on a no-op.
        pki.issue("s", "rsa", "3");
        let s = pki.load("s.pem", "s.key").unwrap();
        let sc = std::fs::read(pki.path("s.pem")).unwrap();
        let sk = std::fs::read(pki.path("s.key")).unwrap();
        assert_eq!(
            s.diff(&file(&sc, 0o644), &file(&sk, 0o600))
                .unwrap()
                .warnings
                .len(),
            1
        );
    }

    #[test]
    fn the_script_uploads_both_files_locally() {
        let pki = Pki::new();
        pki.issue("a", "rsa", "365");
        let out = tempfile::tempdir().unwrap();
        let mut d = pki.load("a.pem", "a.key").unwrap();
        let dir = out.path().to_str().unwrap();
        d.cert.path = format!("{dir}/fullchain.pem");
        d.key.path = format!("{dir}/privkey.pem");
        let op = d
            .diff(&PathState::Absent, &PathState::Absent)
            .unwrap()
            .op
            .unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&op.script)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&op.stdin).unwrap();
        assert!(child.wait().unwrap().success());
        use std::os::unix::fs::PermissionsExt;
        for (f, src, mode) in [
            ("fullchain.pem", "a.pem", 0o644),
            ("privkey.pem", "a.key", 0o600),
        ] {
            let p = out.path().join(f);
            assert_eq!(
                std::fs::read(&p).unwrap(),
                std::fs::read(pki.path(src)).unwrap()
            );
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
                mode
            );
        }
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 2);
    }
}
