//! `fetch`: copies a file from the host to the operator's machine (an off-host copy of the
//! newest database dump, say). `src` is a file on the host; a symbolic link is followed and the
//! local copy takes the name of the file it leads to, in the local directory `dest` (relative
//! paths: to the current directory). Nothing changes when a file of that name with the same
//! sha256 is already there. The copy is streamed into a temporary file beside the destination,
//! checked against the probed sha256 and renamed into place: never a half-written file.

use super::StepError;
use super::check_path;
use crate::fact::FetchState;
use crate::plan::{Action, Change, LocalFile};
use crate::quote::quote;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The file on the host (absolute).
    pub src: String,
    /// The directory on the operator's machine.
    pub dest: String,
    /// The largest file copied (`4G`, `500M`, `1T`, or bytes); a larger one fails the step
    /// before anything is copied. Default [`DEFAULT_MAX_SIZE`].
    #[serde(default)]
    pub max_size: Option<String>,
}

/// The default `max_size`: 4 GiB (a host, or a file that grew, cannot fill this machine's
/// disk unasked).
pub(crate) const DEFAULT_MAX_SIZE: u64 = 4 << 30;

#[derive(Debug, Clone)]
pub struct Desired {
    pub src: String,
    pub dest: PathBuf,
    pub max_size: u64,
}

/// `4G`, `500M`, `64K`, `1T` (powers of 1024, an optional `iB`/`B`), or plain bytes.
pub(crate) fn parse_size(s: &str) -> Result<u64, StepError> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => {
                    return Err(StepError::arg(format!(
                        "`{s}`: unknown unit `{c}` (K, M, G or T)"
                    )));
                }
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num.trim().parse().map_err(|_| {
        StepError::arg(format!(
            "`{s}` is not a size (e.g. `4G`, `500M`, `1048576`)"
        ))
    })?;
    n.checked_mul(1u64 << shift)
        .filter(|v| *v > 0)
        .ok_or_else(|| StepError::arg(format!("`{s}`: not a usable size")))
}

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, StepError> {
        check_path(&a.src).map_err(|e| StepError::in_arg("src", e))?;
        if a.dest.trim().is_empty() {
            return Err(StepError::arg("`dest` is empty"));
        }
        let max_size = match &a.max_size {
            Some(m) => parse_size(m).map_err(|e| StepError::in_arg("max_size", e))?,
            None => DEFAULT_MAX_SIZE,
        };
        Ok(Self {
            src: a.src,
            dest: PathBuf::from(a.dest),
            max_size,
        })
    }

    pub fn diff(&self, o: &FetchState) -> Result<Change, StepError> {
        let (resolved, sha256) = match o {
            FetchState::Absent => {
                return Err(StepError::host(format!(
                    "{} does not exist on the host",
                    self.src
                )));
            }
            FetchState::NotFile => {
                return Err(StepError::host(format!(
                    "{} is not a regular file on the host",
                    self.src
                )));
            }
            FetchState::File {
                resolved,
                sha256,
                size,
            } => {
                if *size > self.max_size {
                    return Err(StepError::host(format!(
                        "{resolved} is {size} bytes, more than the step's `max_size` ({} bytes): \
                         nothing copied; raise `max_size` to copy it",
                        self.max_size
                    )));
                }
                (resolved, sha256)
            }
        };
        let size = match o {
            FetchState::File { size, .. } => *size,
            _ => 0,
        };
        let name = Path::new(resolved)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .ok_or_else(|| {
                StepError::host(format!(
                    "{} leads to {resolved}: not a usable file name",
                    self.src
                ))
            })?;
        let local = self.dest.join(&name);
        let target = format!("{resolved} -> {}", local.display());
        let action = match local_sha256(&local) {
            Ok(Some(s)) if s == *sha256 => {
                return Ok(Change::noop(target, "already copied (same sha256)"));
            }
            Ok(Some(_)) => Action::Update,
            Ok(None) => Action::Create,
            Err(e) => {
                return Err(StepError::ReadLocal {
                    path: local,
                    source: e.into(),
                });
            }
        };
        let mut c = Change::new(
            action,
            target,
            "copy to this machine",
            format!("exec cat -- {}\n", quote(resolved)),
        );
        if let Some(op) = c.op.as_mut() {
            op.stdout_to = Some(LocalFile {
                path: local,
                sha256: sha256.clone(),
                size,
            });
        }
        Ok(c)
    }
}

/// sha256 of a local file; None when there is none.
fn local_sha256(p: &Path) -> std::io::Result<Option<String>> {
    use sha2::Digest;
    let mut f = match std::fs::File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(Some(hex::encode(h.finalize())))
}

/// The `fetch` step kind.
pub(crate) struct FetchKind;

impl super::StepKind for FetchKind {
    fn name(&self) -> &'static str {
        "fetch"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<Args>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        _: &serde_json::Map<String, serde_json::Value>,
        _: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        Ok(super::Desired::Fetch(Desired::from_args(super::args(
            args,
        )?)?))
    }
}

/// Asks for the remote file.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        vec![p.add(crate::fact::Request::Fetch(self.src.clone()))]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [crate::fact::Observed::Fetch(o)] => Some(self.diff(o)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(dest: &Path) -> Desired {
        Desired::from_args(Args {
            src: "/b/latest.sql.gz".into(),
            dest: dest.to_str().unwrap().into(),
            max_size: None,
        })
        .unwrap()
    }

    #[test]
    fn copies_only_what_is_not_here() {
        let dir = std::env::temp_dir().join(format!("claw-fetch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sha_of = |b: &[u8]| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(b))
        };
        let remote = FetchState::File {
            resolved: "/b/claw-ai-1.sql.gz".into(),
            size: 3,
            sha256: sha_of(b"abc"),
        };
        let c = d(&dir).diff(&remote).unwrap();
        assert_eq!(c.action, Action::Create);
        let op = c.op.unwrap();
        assert_eq!(op.script, "exec cat -- '/b/claw-ai-1.sql.gz'\n");
        assert_eq!(op.stdout_to.unwrap().path, dir.join("claw-ai-1.sql.gz"));
        std::fs::write(dir.join("claw-ai-1.sql.gz"), b"abd").unwrap();
        assert_eq!(d(&dir).diff(&remote).unwrap().action, Action::Update);
        std::fs::write(dir.join("claw-ai-1.sql.gz"), b"abc").unwrap();
        assert_eq!(d(&dir).diff(&remote).unwrap().action, Action::NoOp);
        assert!(d(&dir).diff(&FetchState::Absent).is_err());
        assert!(d(&dir).diff(&FetchState::NotFile).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            Desired::from_args(Args {
                src: "rel".into(),
                dest: "x".into(),
                max_size: None,
            })
            .is_err()
        );
    }

    #[test]
    fn max_size() {
        assert_eq!(parse_size("4G").ok(), Some(4 << 30));
        assert_eq!(parse_size("500MiB").ok(), Some(500 << 20));
        assert_eq!(parse_size("64k").ok(), Some(64 << 10));
        assert_eq!(parse_size("1T").ok(), Some(1 << 40));
        assert_eq!(parse_size("1000").ok(), Some(1000));
        for bad in ["", "x", "4X", "0", "-1", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let small = Desired::from_args(Args {
            src: "/b/dump".into(),
            dest: "/nonexistent-claw-dir".into(),
            max_size: Some("1K".into()),
        })
        .unwrap();
        let file = |size| FetchState::File {
            resolved: "/b/dump.gz".into(),
            size,
            sha256: "0".repeat(64),
        };
        let e = small.diff(&file(1025)).unwrap_err().to_string();
        assert!(e.contains("1025 bytes") && e.contains("max_size"), "{e}");
        let c = small.diff(&file(1024)).unwrap();
        assert_eq!(c.op.unwrap().stdout_to.unwrap().size, 1024);
        assert!(
            Desired::from_args(Args {
                src: "/b/dump".into(),
                dest: "x".into(),
                max_size: Some("lots".into()),
            })
            .unwrap_err()
            .to_string()
            .contains("max_size")
        );
    }
}
