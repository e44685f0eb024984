//! Recording a host key in a `known_hosts` file (trust on first use).
//!
//! New entries are added (`host key` or `[host]:port key`, hashed with `HashKnownHosts yes`) by
//! [`record`]: under
//! an exclusive `flock` of `known_hosts.lock` beside the file, the file is re-read and, if the
//! host is still unknown, replaced atomically (temporary file with the old content and the new
//! line, synced, renamed over it), so that concurrent connections (tasks of this process or
//! other processes) never lose or duplicate an entry, and a killed process never leaves a torn
//! line. OpenSSH itself appends without any lock: an `ssh` adding a key to the same file in the
//! instant between our read and our rename would lose its line (the same window `ssh-keygen -R`,
//! which also rewrites the file through a rename, has); it asks again the next time.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use russh::keys::PublicKey;
use sha1::Sha1;

use super::{HostKeyStatus, KnownHosts, host_port_name, special};

/// The outcome of [`record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddOutcome {
    /// The entry was appended to the file.
    Added,
    /// Nothing was written: the file (as re-read under the lock) gave this verdict instead of
    /// `Unknown` — another connection recorded the host meanwhile (`Known`), or it holds a
    /// different key (`Changed`) or revokes this one (`Revoked`).
    NotAdded(HostKeyStatus),
    /// Nothing was written, and the host is still unknown: the file is special (`/dev/null`...)
    /// or its directory cannot be written (why, naming the file).
    NotRecorded(String),
}

/// Appends `host`:`port` with `key` to the `known_hosts` file at `path` if, re-read under an
/// exclusive lock, the file still does not know the host. Creates the file (mode 0644) and its
/// directory (mode 0700) if missing. Blocking: call from a blocking context.
///
/// The update is atomic: the file's content plus the new line go to a temporary file in the
/// same directory, which is synced, given the file's mode and owner, and renamed over the file
/// (then the directory is synced). A process killed at any moment leaves the old file or the
/// new one, never a torn line; a temporary file left by a killed writer is removed by the next
/// one. Writers of this protocol (tasks of this process, other `claw-provision` processes)
/// serialise on an `flock` of `PATH.lock` beside the file: not of the file itself, whose inode
/// the rename replaces (a lock on the old inode would not exclude a writer that opened the new
/// one). A symbolic link is followed: the file it names is replaced, the link stays.
#[cfg(test)]
pub(crate) fn add_if_unknown(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> io::Result<AddOutcome> {
    add_with(path, host, port, key, false, Crash::Never)
}

/// [`add_if_unknown`], the entry hashed when `hash` (`HashKnownHosts yes`). A special file is
/// never written, and neither is a file whose directory is read-only or not ours to write:
/// [`AddOutcome::NotRecorded`].
pub(crate) fn record(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
    hash: bool,
) -> io::Result<AddOutcome> {
    add_with(path, host, port, key, hash, Crash::Never)
}

/// Whether `e` says the place cannot be written at all (permissions, read-only file system).
fn unwritable(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS)
}

/// Where a test makes [`add_with`] stop as if the process had been killed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Crash {
    Never,
    /// The temporary file exists, empty.
    TempCreated,
    /// Half of the new content is in the temporary file.
    HalfWritten,
    /// The whole content is in the temporary file, synced.
    Synced,
    /// Just after the rename (the directory not yet synced).
    Renamed,
}

pub(super) fn add_with(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
    hash: bool,
    crash: Crash,
) -> io::Result<AddOutcome> {
    // `/dev/null` & co: read as empty, never written, nothing made beside them.
    if let Some(what) = special(path) {
        return Ok(AddOutcome::NotRecorded(format!(
            "{} is {what}",
            path.display()
        )));
    }
    let not_recorded = |e: io::Error| -> io::Result<AddOutcome> {
        if unwritable(&e) {
            Ok(AddOutcome::NotRecorded(format!(
                "cannot write {}: {e}",
                path.display()
            )))
        } else {
            Err(e)
        }
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
        && let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    {
        return not_recorded(e);
    }
    // The file a symbolic link names is the one to replace (a dotfiles manager's link stays).
    let path = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e),
    };
    let lock_file = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock_path(&path))
    {
        Ok(f) => f,
        Err(e) => return not_recorded(e),
    };
    let _lock = Flock::exclusive(&lock_file)?;
    remove_stale_temps(&path);
    let (bytes, meta) = match File::open(&path) {
        Ok(mut f) => {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            (bytes, Some(f.metadata()?))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&bytes);
    let status = KnownHosts::parse(&path, &text).check(host, port, key);
    if status != HostKeyStatus::Unknown {
        return Ok(AddOutcome::NotAdded(status));
    }
    let mut new = bytes;
    if !new.is_empty() && !new.ends_with(b"\n") {
        new.push(b'\n');
    }
    new.extend_from_slice(entry_line_as(host, port, key, hash)?.as_bytes());
    new.push(b'\n');
    match replace_file(&path, &new, meta.as_ref(), crash) {
        Ok(()) => Ok(AddOutcome::Added),
        Err(Replace::Create(e)) => not_recorded(e),
        Err(Replace::Other(e)) => Err(e),
    }
}

/// The lock file of a known_hosts file: `PATH.lock` beside it.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// The prefix of the temporary files of `path`: `.NAME.claw-tmp.` in its directory (hidden,
/// and never a name OpenSSH reads).
fn temp_prefix(path: &Path) -> String {
    format!(
        ".{}.claw-tmp.",
        path.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// Removes temporary files a killed writer left beside `path`. Called under the lock: no other
/// writer is using one. Best effort (a file we cannot remove is only clutter).
fn remove_stale_temps(path: &Path) {
    let prefix = temp_prefix(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Replaces `path` with `content` atomically (temporary file in the same directory, synced,
/// renamed over it, directory synced), keeping the mode and owner of the file it replaces
/// (`meta`; a new file gets 0644).
/// Why [`replace_file`] failed: the temporary file could not be made (nothing was written), or a
/// later step.
enum Replace {
    Create(io::Error),
    Other(io::Error),
}

impl From<io::Error> for Replace {
    fn from(e: io::Error) -> Self {
        Replace::Other(e)
    }
}

fn replace_file(
    path: &Path,
    content: &[u8],
    meta: Option<&std::fs::Metadata>,
    crash: Crash,
) -> Result<(), Replace> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = temp_prefix(path);
    let (tmp_path, mut tmp) = {
        let mut tries = 0;
        loop {
            let candidate = dir.join(format!("{prefix}{:016x}", rand::random::<u64>()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&candidate)
            {
                Ok(f) => break (candidate, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
                Err(e) => return Err(Replace::Create(e)),
            }
        }
    };
    if crash == Crash::TempCreated {
        return Ok(());
    }
    let result = (|| {
        if crash == Crash::HalfWritten {
            tmp.write_all(&content[..content.len() / 2])?;
            return Ok(false);
        }
        tmp.write_all(content)?;
        // Owner first (chown may clear mode bits), then the mode of the file it replaces.
        if let Some(m) = meta {
            let tm = tmp.metadata()?;
            if (tm.uid(), tm.gid()) != (m.uid(), m.gid()) {
                std::os::unix::fs::fchown(&tmp, Some(m.uid()), Some(m.gid())).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cannot give the new file the owner of the old one (uid {}, gid {}): {e}",
                            m.uid(),
                            m.gid()
                        ),
                    )
                })?;
            }
        }
        let mode = meta.map_or(0o644, |m| m.permissions().mode() & 0o7777);
        tmp.set_permissions(std::fs::Permissions::from_mode(mode))?;
        tmp.sync_all()?;
        if crash == Crash::Synced {
            return Ok(false);
        }
        std::fs::rename(&tmp_path, path)?;
        Ok(true)
    })();
    match result {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(Replace::Other(e));
        }
    }
    if crash == Crash::Renamed {
        return Ok(());
    }
    // The rename is durable once the directory is.
    Ok(File::open(&dir)?.sync_all()?)
}

/// The `known_hosts` line recorded for a new host: `host key-type base64` (or `[host]:port ...`).
#[cfg(test)]
pub(crate) fn entry_line(host: &str, port: u16, key: &PublicKey) -> io::Result<String> {
    entry_line_as(host, port, key, false)
}

/// [`entry_line`], with the host field hashed when `hash` (`|1|base64(salt)|base64(HMAC-SHA1)`,
/// a random 20-byte salt, as `HashKnownHosts yes` and `ssh-keygen -H` write).
pub(crate) fn entry_line_as(
    host: &str,
    port: u16,
    key: &PublicKey,
    hash: bool,
) -> io::Result<String> {
    let mut key = key.clone();
    key.set_comment("");
    let text = key
        .to_openssh()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let name = host_port_name(host, port);
    let name = if hash {
        hashed_name(&name, &rand::random::<[u8; 20]>())
    } else {
        name
    };
    Ok(format!("{name} {}", text.trim_end()))
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
pub(super) fn hashed_name(name: &str, salt: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(name.as_bytes());
    format!(
        "|1|{}|{}",
        BASE64.encode(salt),
        BASE64.encode(mac.finalize().into_bytes())
    )
}

/// Longest wait for the known_hosts lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An exclusive `flock(2)` on a file descriptor, released when dropped (closing the file
/// would release it too; the guard must not outlive the file).
struct Flock(std::os::unix::io::RawFd);

impl Flock {
    /// Waits at most [`LOCK_WAIT`] for the lock: a lock held forever (a stuck process, NFS)
    /// must not hang the run, nor its exit (a blocked thread would keep the runtime alive).
    fn exclusive(file: &File) -> io::Result<Self> {
        let fd = file.as_raw_fd();
        let give_up = std::time::Instant::now() + LOCK_WAIT;
        loop {
            // SAFETY: flock on a valid, open file descriptor owned by `file`.
            if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Flock(fd));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EWOULDBLOCK) if std::time::Instant::now() < give_up => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Some(libc::EWOULDBLOCK) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "another process has held its lock for over {}s",
                            LOCK_WAIT.as_secs()
                        ),
                    ));
                }
                _ => return Err(err),
            }
        }
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        // SAFETY: unlocking a lock we hold on a descriptor that is still open (the guard is
        // declared after the file, so it is dropped first).
        unsafe {
            libc::flock(self.0, libc::LOCK_UN);
        }
    }
}
