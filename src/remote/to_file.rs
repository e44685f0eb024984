//! [`Remote::run_to_file`]: a script's standard output streamed into a local file, through a
//! private temporary file beside it that is renamed into place only when the copy is whole.

use super::{Remote, RemoteError, describe_failure};
use crate::ssh::{ExecOutput, Limits, Output};
use std::time::Duration;

impl Remote {
    /// Runs a script that must succeed and writes its standard output to the local file `dest`:
    /// streamed into a new temporary file beside it (mode 0600, created exclusively under an
    /// unpredictable name: never an existing file or a link someone placed there), synced and
    /// renamed into place only when the script succeeded and the data has the sha256 `want`
    /// (when given). More than `max` bytes stops the copy. On any failure the temporary file is
    /// removed: `dest` is either the old file or the whole new one.
    pub(crate) async fn run_to_file(
        &self,
        script: &str,
        dest: &std::path::Path,
        want: Option<&str>,
        max: u64,
        timeout: Duration,
    ) -> Result<ExecOutput, RemoteError> {
        let local = |what: &str, e: &dyn std::fmt::Display| {
            RemoteError::Failed(format!("{what} {} on this machine: {e}", dest.display()))
        };
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| local("cannot create the directory of", &e))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (tmp, file) = create_temp(dir, || temp_name(&name))
            .map_err(|e| local("cannot create a temporary file for", &e))?;
        let file = tokio::fs::File::from_std(file);
        let result = async {
            let mut sink = HashingWriter {
                inner: tokio::io::BufWriter::new(file),
                hash: <sha2::Sha256 as sha2::Digest>::new(),
                written: 0,
                max,
            };
            // Through run_input: the become password, the timeout and sudo diagnostics as
            // for every other command.
            let out = self
                .run_input(
                    script,
                    &[],
                    None,
                    Output::Sink(&mut sink, Limits::COMMAND.stderr),
                    timeout,
                )
                .await?;
            if let Some(e) = &out.sink_error {
                return Err(local("cannot write", e));
            }
            if !out.success() {
                return Err(RemoteError::Failed(describe_failure(&out)));
            }
            use tokio::io::AsyncWriteExt;
            sink.inner
                .flush()
                .await
                .map_err(|e| local("cannot write", &e))?;
            let got = hex::encode(sha2::Digest::finalize(sink.hash));
            if let Some(w) = want
                && w != got
            {
                return Err(RemoteError::Failed(format!(
                    "the file changed on the host while it was copied (sha256 {got}, expected {w}); run again"
                )));
            }
            sink.inner
                .into_inner()
                .sync_all()
                .await
                .map_err(|e| local("cannot write", &e))?;
            tokio::fs::rename(&tmp, dest)
                .await
                .map_err(|e| local("cannot rename the temporary file to", &e))?;
            Ok(out)
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Creates a new file at `path` for writing: mode 0600, exclusively (an existing file, link or
/// anything else at `path` is an error, `AlreadyExists`: never opened, never followed) and
/// without following a link (on Unix).
fn open_new_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    o.open(path)
}

/// A new private file in `dir` ([`open_new_private`]) under the first of up to 9 names from
/// `name` that nothing occupies yet: its path and the open file.
fn create_temp(
    dir: &std::path::Path,
    mut name: impl FnMut() -> String,
) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let mut tries = 0;
    loop {
        let tmp = dir.join(name());
        match open_new_private(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// `.NAME.part-` and 16 random hex digits: a name no one can guess in advance.
fn temp_name(name: &str) -> String {
    format!(".{name}.part-{:016x}", rand::random::<u64>())
}

/// Writes through to `inner` and hashes what was written; refuses to write more than `max`.
struct HashingWriter<W> {
    inner: W,
    hash: sha2::Sha256,
    written: u64,
    max: u64,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for HashingWriter<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.written.saturating_add(buf.len() as u64) > this.max {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the host sent more than the {} bytes the file had when probed; nothing kept",
                this.max
            ))));
        }
        let r = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            sha2::Digest::update(&mut this.hash, &buf[..*n]);
            this.written += *n as u64;
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_unpredictable() {
        let a = temp_name("dump.gz");
        let b = temp_name("dump.gz");
        assert_ne!(a, b);
        let suffix = a.strip_prefix(".dump.gz.part-").unwrap();
        assert_eq!(suffix.len(), 16);
        assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()));
    }

    /// A file's content and mode bits, not following a link.
    #[cfg(unix)]
    fn state(p: &std::path::Path) -> (String, u32) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(p).unwrap();
        assert!(m.is_file(), "{}: {m:?}", p.display());
        (std::fs::read_to_string(p).unwrap(), m.mode() & 0o7777)
    }

    #[cfg(unix)]
    #[test]
    fn a_private_file_is_only_ever_a_new_one() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let refused = |p: &std::path::Path| {
            let e = open_new_private(p).expect_err("opened");
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        };
        // An existing file: refused, unchanged (not truncated, not re-moded).
        let existing = d.join("existing");
        std::fs::write(&existing, "old content").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
        refused(&existing);
        assert_eq!(state(&existing), ("old content".into(), 0o644));
        // A link to a canary: refused, the canary unchanged, the link still a link.
        let canary = d.join("canary");
        std::fs::write(&canary, "canary content").unwrap();
        std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = d.join("link");
        symlink(&canary, &link).unwrap();
        refused(&link);
        assert_eq!(state(&canary), ("canary content".into(), 0o644));
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        // A dangling link: refused, nothing created where it points.
        let nowhere = d.join("nowhere");
        let dangling = d.join("dangling");
        symlink(&nowhere, &dangling).unwrap();
        refused(&dangling);
        assert!(std::fs::symlink_metadata(&nowhere).is_err());
        // A fresh path: a new regular file, no access for group or others whatever the umask.
        let fresh = d.join("fresh");
        let mut f = open_new_private(&fresh).unwrap();
        std::io::Write::write_all(&mut f, b"data").unwrap();
        drop(f);
        let (content, mode) = state(&fresh);
        assert_eq!(content, "data");
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        assert_eq!(std::fs::metadata(&fresh).unwrap().nlink(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_temp_name_someone_took_is_passed_over() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("taken"), "old").unwrap();
        std::fs::write(d.join("canary"), "canary").unwrap();
        symlink(d.join("canary"), d.join("linked")).unwrap();
        symlink(d.join("nowhere"), d.join("dangling")).unwrap();
        let mut names = ["taken", "linked", "dangling", "new"].into_iter();
        let (path, mut f) = create_temp(d, || names.next().unwrap().to_string()).unwrap();
        assert_eq!(path, d.join("new"));
        std::io::Write::write_all(&mut f, b"data").unwrap();
        drop(f);
        assert_eq!(state(&path).0, "data");
        assert_eq!(state(&d.join("taken")).0, "old");
        assert_eq!(state(&d.join("canary")).0, "canary");
        assert!(std::fs::symlink_metadata(d.join("nowhere")).is_err());
        // Every name taken: an error after 9 names, nothing opened.
        let mut tried = 0;
        let e = create_temp(d, || {
            tried += 1;
            "linked".to_string()
        })
        .expect_err("opened");
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(tried, 9);
        assert_eq!(state(&d.join("canary")).0, "canary");
    }
}
