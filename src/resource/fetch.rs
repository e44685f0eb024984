//! `fetch`: copies a file from the host to the operator's machine (an off-host copy of the
//! newest database dump, say). `src` is a file on the host; a symbolic link is followed and the
//! local copy takes the name of the file it leads to, in the local directory `dest` (relative
//! paths: to the current directory). Nothing changes when a file of that name with the same
//! sha256 is already there. The copy is streamed into a temporary file beside the destination,
//! checked against the probed sha256 and renamed into place: never a half-written file.

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
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub src: String,
    pub dest: PathBuf,
}

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, String> {
        check_path(&a.src).map_err(|e| format!("`src`: {e}"))?;
        if a.dest.trim().is_empty() {
            return Err("`dest` is empty".into());
        }
        Ok(Self {
            src: a.src,
            dest: PathBuf::from(a.dest),
        })
    }

    pub fn diff(&self, o: &FetchState) -> Result<Change, String> {
        let (resolved, sha256) = match o {
            FetchState::Absent => return Err(format!("{} does not exist on the host", self.src)),
            FetchState::NotFile => {
                return Err(format!("{} is not a regular file on the host", self.src));
            }
            FetchState::File {
                resolved, sha256, ..
            } => (resolved, sha256),
        };
        let name = Path::new(resolved)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .ok_or_else(|| format!("{} leads to {resolved}: not a usable file name", self.src))?;
        let local = self.dest.join(&name);
        let target = format!("{resolved} -> {}", local.display());
        let action = match local_sha256(&local) {
            Ok(Some(s)) if s == *sha256 => {
                return Ok(Change::noop(target, "already copied (same sha256)"));
            }
            Ok(Some(_)) => Action::Update,
            Ok(None) => Action::Create,
            Err(e) => return Err(format!("cannot read {}: {e}", local.display())),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn d(dest: &Path) -> Desired {
        Desired::from_args(Args {
            src: "/b/latest.sql.gz".into(),
            dest: dest.to_str().unwrap().into(),
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
                dest: "x".into()
            })
            .is_err()
        );
    }
}
