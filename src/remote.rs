//! Running scripts on a host: the command line around a script (`LC_ALL=C`, a remote `timeout`,
//! `sudo` for become) and the interpretation of the result.
//!
//! **Invariant:** a become password travels only on stdin (first line, consumed by `sudo -S` or,
//! when a cached sudo timestamp makes it unneeded, by the shell before sudo starts); never on a
//! command line; and only to hosts whose sudo asks for it: before the first become command of a
//! connection that has a password to send, `sudo -n -u USER true` (nothing on stdin) tells
//! whether sudo needs one; where it does not (NOPASSWD), commands run under `sudo -n` and the
//! password is never sent. So does a
//! script that holds a secret value (see [`Remote::hide`]) or is marked [`private`]: the command
//! line then only carries a fixed loader that reads the script from stdin (every process's
//! arguments are visible to every user of the host in `ps`).

use crate::plan::LocalSource;
use crate::quote::quote;
use crate::secret::Secret;
use crate::ssh::{Chunk, ExecOutput, Limits, Output, Session, SshError};
use std::sync::PoisonError;
use std::time::Duration;

/// How to become another user.
#[derive(Debug, Clone)]
pub struct Become {
    pub user: String,
    pub password: Option<Secret>,
}

/// A failure of one remote command.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Ssh(#[from] SshError),
    #[error("timed out after {}s (raise the step's `timeout` or the inventory's `command_timeout`)", .0.as_secs())]
    Timeout(Duration),
    #[error("become (sudo) failed: {0}")]
    Become(String),
    #[error("{0}")]
    Failed(String),
}

/// Prologue of every script: predictable output, a sane PATH, a known umask, and `rm` made to
/// take `-rf --one-file-system` where it does not know that option (BusyBox: the option is
/// dropped; GNU's `rm` is asked once per such call and keeps it).
const PROLOGUE: &str = concat!(
    "export LC_ALL=C PATH=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH\"; umask 022; cd / || exit 1\n",
    "rm() { if [ \"$1 $2\" = \"-rf --one-file-system\" ] && ! command rm --one-file-system -f -- /nonexistent/claw-provision 2>/dev/null; then shift 2; set -- -rf \"$@\"; fi; command rm \"$@\"; }\n"
);

/// Extra time the client waits beyond the remote timeout, so the remote side reports first.
const CLIENT_MARGIN: Duration = Duration::from_secs(15);

/// The command line that runs `script`: quoted as one `sh -c` argument, under `timeout`, and
/// under `sudo` when becoming another user. `send_password`: the become password is the first
/// line of stdin (`sudo -S`, or read away by the shell when a cached sudo timestamp makes sudo
/// skip it); else sudo may not ask (`-n`). Pure, unit-tested.
pub fn command_line(
    script: &str,
    become_: Option<&Become>,
    send_password: bool,
    timeout: Duration,
) -> String {
    let secs = timeout.as_secs().max(1);
    let inner = format!(
        "timeout -k 5 {secs} sh -c {}",
        quote(&format!("{PROLOGUE}{script}"))
    );
    match become_ {
        None => format!("exec {inner}"),
        Some(b) if send_password && b.password.is_some() => format!(
            "if sudo -n -u {u} -- true 2>/dev/null; then IFS= read -r _; fi; exec sudo -S -p '' -u {u} -- {inner}",
            u = quote(&b.user)
        ),
        Some(b) => format!("exec sudo -n -u {} -- {inner}", quote(&b.user)),
    }
}

/// The command that asks sudo whether it needs a password, sending none.
fn sudo_asks_line(b: &Become) -> String {
    format!("exec sudo -n -u {} -- true", quote(&b.user))
}

/// Marks a script as private: it travels on stdin, never on the command line (see [`private`]).
const PRIVATE: &str = "# claw-provision: private\n";

/// The script marked private: `Remote` sends it on stdin, not as an argument, whatever it holds.
/// For scripts that carry secret material other than a value `Remote::hide` knows (the sha256
/// of a secret file's content, say).
pub fn private(script: &str) -> String {
    format!("{PRIVATE}{script}")
}

/// The command-line script that reads `lines` lines of script from stdin (shell builtins only:
/// `read` takes a pipe byte by byte, so the stdin that follows, an upload's content, is left
/// whole) and runs them in the same shell.
fn stdin_loader(lines: usize) -> String {
    format!(
        "claw_n={lines}; claw_s=; while [ \"$claw_n\" -gt 0 ] && IFS= read -r claw_l; do claw_s=\"$claw_s$claw_l\n\"; claw_n=$((claw_n - 1)); done\n\
         [ \"$claw_n\" -eq 0 ] || {{ echo 'claw-provision: the script did not arrive whole on stdin' >&2; exit 125; }}\n\
         unset claw_n claw_l; eval \"$claw_s\""
    )
}

/// What a script becomes on the wire: the command line's script and the bytes that precede
/// the command's own stdin. Pure, unit-tested.
fn wire(script: &str, hidden: &[Secret]) -> (String, Vec<u8>) {
    let private = script.starts_with(PRIVATE)
        || hidden
            .iter()
            .any(|v| !v.is_empty() && script.contains(v.expose()));
    if !private {
        return (script.to_string(), Vec::new());
    }
    let mut body = script.strip_prefix(PRIVATE).unwrap_or(script).to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let lines = body.matches('\n').count();
    (stdin_loader(lines), body.into_bytes())
}

/// A host's connection plus its become settings.
pub struct Remote {
    pub session: Session,
    pub become_: Option<Become>,
    /// Secret values of this host (see [`Remote::hide`]).
    hidden: std::sync::RwLock<Vec<Secret>>,
    /// Whether this host's sudo asks for the become password: unknown until the first become
    /// command that has one to send.
    sudo_asks: std::sync::Mutex<Option<bool>>,
}

impl Remote {
    pub fn new(session: Session, become_: Option<Become>) -> Self {
        Self {
            session,
            become_,
            hidden: Default::default(),
            sudo_asks: Default::default(),
        }
    }

    /// Whether to send the become password with a command: only when there is one and this
    /// host's sudo asks for it (asked once per connection, sending nothing).
    async fn send_password(&self, timeout: Duration) -> Result<bool, RemoteError> {
        let Some(b) = self.become_.as_ref().filter(|b| b.password.is_some()) else {
            return Ok(false);
        };
        if let Some(known) = *self
            .sudo_asks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return Ok(known);
        }
        let t = timeout.min(Duration::from_secs(60));
        let out = self
            .session
            .exec(&sudo_asks_line(b), None, t + CLIENT_MARGIN)
            .await
            .map_err(|e| match e {
                SshError::Timeout { .. } => RemoteError::Timeout(t),
                other => RemoteError::Ssh(other),
            })?;
        let asks = !out.success();
        *self
            .sudo_asks
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(asks);
        Ok(asks)
    }

    /// Secret values that must never reach a command line: from now on, a script that holds
    /// one is sent on stdin (read by a fixed loader), never as an argument.
    pub fn hide(&self, values: impl IntoIterator<Item = Secret>) {
        let mut h = self.hidden.write().unwrap_or_else(PoisonError::into_inner);
        h.extend(values.into_iter().filter(|v| !v.is_empty()));
    }

    /// Runs a script (one round trip). Non-zero exit is returned as `Ok` with its status;
    /// timeouts and sudo failures are errors.
    pub async fn run(
        &self,
        script: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<ExecOutput, RemoteError> {
        self.run_input(script, stdin, None, Output::Keep(Limits::PROBE), timeout)
            .await
    }

    /// Runs a script whose output is kept within `limits` (see [`Remote::run`]).
    pub async fn run_with(
        &self,
        script: &str,
        stdin: &[u8],
        limits: Limits,
        timeout: Duration,
    ) -> Result<ExecOutput, RemoteError> {
        self.run_input(script, stdin, None, Output::Keep(limits), timeout)
            .await
    }

    /// Runs a script whose output is sent to `tee` as it arrives (and kept within `limits`).
    pub async fn run_tee(
        &self,
        script: &str,
        tee: tokio::sync::mpsc::Sender<Chunk>,
        limits: Limits,
        timeout: Duration,
    ) -> Result<ExecOutput, RemoteError> {
        self.run_input(script, b"", None, Output::Tee(tee, limits), timeout)
            .await
    }

    /// Runs a script whose stdin is `stdin` followed by the output of a local pipeline, streamed
    /// in chunks (never held whole in memory). The pipeline runs on this machine without a
    /// shell; a stage that fails (non-zero exit, or cannot be started) fails the command with
    /// its stderr, even when the script succeeded on what it got.
    pub async fn run_stream_ok(
        &self,
        script: &str,
        stdin: &[u8],
        source: &LocalSource,
        timeout: Duration,
    ) -> Result<ExecOutput, RemoteError> {
        let n = source.pipeline.len();
        let mut children = Vec::new();
        let mut prev: Option<std::process::Stdio> = None;
        let mut last_out = None;
        for (i, argv) in source.pipeline.iter().enumerate() {
            let (prog, args) = argv
                .split_first()
                .ok_or_else(|| RemoteError::Failed("empty local command (bug)".into()))?;
            let mut child = tokio::process::Command::new(prog)
                .args(args)
                .stdin(prev.take().unwrap_or_else(std::process::Stdio::null))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    RemoteError::Failed(format!("cannot run `{prog}` on this machine: {e}"))
                })?;
            let out = child.stdout.take().expect("piped stdout");
            if i + 1 == n {
                last_out = Some(out);
            } else {
                prev = Some(out.try_into().map_err(|e| {
                    RemoteError::Failed(format!("cannot connect the local pipeline: {e}"))
                })?);
            }
            children.push((argv.join(" "), child));
        }
        let stream =
            last_out.ok_or_else(|| RemoteError::Failed("empty local pipeline (bug)".into()))?;
        // The stream is dropped when the remote command ends: a stage still writing then gets
        // EPIPE and exits, so the waits below always end.
        let remote = self
            .run_input(
                script,
                stdin,
                Some(Box::new(stream)),
                Output::Keep(Limits::COMMAND),
                timeout,
            )
            .await;
        let mut local_failure = None;
        for (what, child) in children {
            let out = child.wait_with_output().await;
            let failure = match out {
                Ok(o) if o.status.success() => None,
                Ok(o) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
                    let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
                    Some(format!("local `{what}` failed ({}): {tail}", o.status))
                }
                Err(e) => Some(format!("local `{what}`: {e}")),
            };
            // The first failing stage explains the others (they see a broken pipe).
            if local_failure.is_none() {
                local_failure = failure;
            }
        }
        // A failing source explains the remote failure it causes (a truncated stream).
        if let Some(f) = local_failure {
            return Err(RemoteError::Failed(f));
        }
        let out = remote?;
        if out.success() {
            Ok(out)
        } else {
            Err(RemoteError::Failed(self.describe(script, &out)))
        }
    }

    /// Whether `script` goes to the host on stdin (it holds secret material).
    fn is_private(&self, script: &str) -> bool {
        let hidden = self.hidden.read().unwrap_or_else(PoisonError::into_inner);
        !wire(script, &hidden).1.is_empty()
    }

    /// [`describe_failure`], or [`describe_failure_stderr`] for a script that holds secret
    /// material: what such a script prints can hold it in any form.
    fn describe(&self, script: &str, out: &ExecOutput) -> String {
        if self.is_private(script) {
            describe_failure_stderr(out)
        } else {
            describe_failure(out)
        }
    }

    async fn run_input(
        &self,
        script: &str,
        stdin: &[u8],
        stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send + '_>>,
        mut output: Output<'_>,
        timeout: Duration,
    ) -> Result<ExecOutput, RemoteError> {
        // The remote side cuts a command line at its first NUL: never run what is left of it.
        // (Step arguments holding one are refused offline; this guards every other path.)
        if script.contains('\0') {
            return Err(RemoteError::Failed(
                "the script holds a NUL byte, which cannot be passed to a remote shell; nothing was run"
                    .into(),
            ));
        }
        let (script, body) = {
            let hidden = self.hidden.read().unwrap_or_else(PoisonError::into_inner);
            wire(script, &hidden)
        };
        let mut send_password = self.send_password(timeout).await?;
        let had_stream = stream.is_some();
        let mut stream = stream;
        loop {
            let out = self
                .run_once(
                    &script,
                    &body,
                    stdin,
                    send_password,
                    stream.take(),
                    &mut output,
                    timeout,
                )
                .await;
            // sudo said NOPASSWD at first but asks now (a cached timestamp that expired, a
            // rule for some commands only): nothing ran; again, with the password. Not for a
            // streamed stdin, which is spent.
            if let Err(RemoteError::Become(m)) = &out
                && !send_password
                && m.contains("password is required")
                && self.become_.as_ref().is_some_and(|b| b.password.is_some())
            {
                *self
                    .sudo_asks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(true);
                if !had_stream {
                    send_password = true;
                    continue;
                }
            }
            return out;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_once(
        &self,
        script: &str,
        body: &[u8],
        stdin: &[u8],
        send_password: bool,
        stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send + '_>>,
        output: &mut Output<'_>,
        timeout: Duration,
    ) -> Result<ExecOutput, RemoteError> {
        let cmd = command_line(script, self.become_.as_ref(), send_password, timeout);
        let mut input: Vec<u8> = Vec::new();
        if send_password && let Some(pw) = self.become_.as_ref().and_then(|b| b.password.as_ref()) {
            input.extend_from_slice(pw.expose().as_bytes());
            input.push(b'\n');
        }
        input.extend_from_slice(body);
        input.extend_from_slice(stdin);
        let started = std::time::Instant::now();
        let output = match output {
            Output::Keep(l) => Output::Keep(*l),
            Output::Sink(w, k) => Output::Sink(&mut **w, *k),
            Output::Tee(t, l) => Output::Tee(t.clone(), *l),
        };
        let res = self
            .session
            .exec_with(&cmd, &input, stream, output, timeout + CLIENT_MARGIN)
            .await;
        let out = res.map_err(|e| match e {
            // Report the limit the operator set, not the client's margin on top of it.
            SshError::Timeout { .. } => RemoteError::Timeout(timeout),
            other => RemoteError::Ssh(other),
        })?;
        // 124: `timeout` fired; 137: killed after the grace period. A command that exits so
        // by itself before its time is not a timeout.
        if matches!(out.exit_status, Some(124 | 137)) && started.elapsed() >= timeout {
            return Err(RemoteError::Timeout(timeout));
        }
        if self.become_.is_some() && out.exit_status == Some(1) && out.stdout.is_empty() {
            let err = String::from_utf8_lossy(&out.stderr);
            if let Some(line) = err.lines().find(|l| l.starts_with("sudo: ")) {
                let hint = if line.contains("password is required") {
                    "; set CLAW_BECOME_PASSWORD or pass --ask-become-pass, or allow NOPASSWD sudo"
                } else if line.contains("incorrect password")
                    || line.contains("no password was provided")
                {
                    "; check the become password"
                } else {
                    ""
                };
                return Err(RemoteError::Become(format!("{}{hint}", line.trim())));
            }
        }
        Ok(out)
    }

    /// Runs a script that must succeed and writes its standard output to the local file `dest`:
    /// streamed into a new temporary file beside it (mode 0600, created exclusively under an
    /// unpredictable name: never an existing file or a link someone placed there), synced and
    /// renamed into place only when the script succeeded and the data has the sha256 `want`
    /// (when given). More than `max` bytes stops the copy. On any failure the temporary file is
    /// removed: `dest` is either the old file or the whole new one.
    pub async fn run_to_file(
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

    /// Runs a step's or handler's command, which must succeed: its output is kept within
    /// [`Limits::COMMAND`] (its two ends; the middle of a long output is dropped and counted).
    pub async fn run_op_ok(
        &self,
        script: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<ExecOutput, RemoteError> {
        let out = self
            .run_input(script, stdin, None, Output::Keep(Limits::COMMAND), timeout)
            .await?;
        if out.success() {
            return Ok(out);
        }
        Err(RemoteError::Failed(self.describe(script, &out)))
    }

    /// Runs a script that must succeed; a failure carries the end of its stderr.
    pub async fn run_ok(
        &self,
        script: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<ExecOutput, RemoteError> {
        let out = self.run(script, stdin, timeout).await?;
        if out.success() {
            return Ok(out);
        }
        Err(RemoteError::Failed(self.describe(script, &out)))
    }
}

/// "exit status 2: <last lines of stderr>", never stdout: for commands whose standard output
/// can hold secrets (the probe reads the host's secret files; scripts holding secret material).
pub fn describe_failure_stderr(out: &ExecOutput) -> String {
    describe_output(out, false)
}

/// "exit status 2: <last lines of stderr>" (of stdout when stderr is empty).
pub fn describe_failure(out: &ExecOutput) -> String {
    describe_output(out, true)
}

fn describe_output(out: &ExecOutput, use_stdout: bool) -> String {
    let status = match (&out.exit_status, &out.exit_signal) {
        (Some(s), _) => format!("exit status {s}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "no exit status".to_string(),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &tail[tail.len().saturating_sub(5)..];
    if tail.is_empty() && !use_stdout {
        status
    } else if tail.is_empty() {
        let outs = String::from_utf8_lossy(&out.stdout);
        let o: Vec<&str> = outs.lines().collect();
        let o = &o[o.len().saturating_sub(5)..];
        if o.is_empty() {
            status
        } else {
            format!("{status}: {}", o.join(" | "))
        }
    } else {
        format!("{status}: {}", tail.join(" | "))
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
    fn plain() {
        let c = command_line("echo hi", None, false, Duration::from_secs(30));
        assert_eq!(
            c,
            format!(
                "exec timeout -k 5 30 sh -c {}",
                quote(&format!("{PROLOGUE}echo hi"))
            )
        );
    }

    #[test]
    fn become_without_password_never_reads_stdin() {
        let b = Become {
            user: "root".into(),
            password: None,
        };
        let c = command_line("id", Some(&b), true, Duration::from_secs(5));
        assert!(
            c.starts_with("exec sudo -n -u 'root' -- timeout -k 5 5 sh -c "),
            "{c}"
        );
    }

    #[test]
    fn become_password_is_not_on_the_command_line() {
        let b = Become {
            user: "root".into(),
            password: Some(Secret::new("s3cret-pw")),
        };
        let c = command_line("id", Some(&b), true, Duration::from_secs(5));
        assert!(!c.contains("s3cret-pw"));
        assert!(c.contains("sudo -S -p '' -u 'root'"), "{c}");
        // Where sudo does not ask (NOPASSWD), it may not read stdin: nothing is sent.
        let c = command_line("id", Some(&b), false, Duration::from_secs(5));
        assert!(
            c.starts_with("exec sudo -n -u 'root' -- timeout -k 5 5 sh -c "),
            "{c}"
        );
        assert_eq!(sudo_asks_line(&b), "exec sudo -n -u 'root' -- true");
    }

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

    #[test]
    fn the_command_line_runs_the_script_literally() {
        // The same layering as on a host, without sudo: the login shell runs the command line.
        let script = "printf '%s' \"$LC_ALL\"; printf ' %s' '$(x)'";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command_line(script, None, false, Duration::from_secs(5)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "C $(x)");
    }

    /// Runs `script` as a host would (the login shell runs the command line), through `wire`.
    fn run_wire(script: &str, hidden: &[Secret], stdin: &[u8]) -> (String, std::process::Output) {
        use std::io::Write;
        let (s, body) = wire(script, hidden);
        let cmd = command_line(&s, None, false, Duration::from_secs(5));
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = body;
        input.extend_from_slice(stdin);
        child.stdin.take().unwrap().write_all(&input).unwrap();
        (cmd, child.wait_with_output().unwrap())
    }

    #[test]
    fn a_failure_of_a_secret_holder_is_described_by_stderr_only() {
        let out = ExecOutput {
            exit_status: Some(3),
            stdout: b"@secret\ttok-9f8e7d\n".to_vec(),
            ..Default::default()
        };
        assert_eq!(describe_failure(&out), "exit status 3: @secret\ttok-9f8e7d");
        assert_eq!(describe_failure_stderr(&out), "exit status 3");
        let out = ExecOutput {
            stderr: b"boom\n".to_vec(),
            ..out
        };
        assert_eq!(describe_failure_stderr(&out), "exit status 3: boom");
    }

    #[test]
    fn a_script_holding_a_secret_travels_on_stdin() {
        let hidden = [Secret::new("tok-9f8e7d")];
        let script = "set -e\nv='tok-9f8e7d'\nprintf '%s|' \"$v\" 'a\\b' \"$(echo x)\"\ncat <<'EOF'\nheredoc $v\nEOF\nhead -c 5\n";
        let (cmd, out) = run_wire(script, &hidden, b"12345rest");
        assert!(!cmd.contains("tok-9f8e7d"), "{cmd}");
        assert!(cmd.contains("eval"), "{cmd}");
        assert!(out.status.success(), "{out:?}");
        // The script ran whole, and the stdin after it (an upload's content) arrived intact.
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "tok-9f8e7d|a\\b|x|heredoc $v\n12345"
        );
        // Its exit status is the script's.
        let (_, out) = run_wire("echo tok-9f8e7d >&2; exit 3", &hidden, b"");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8(out.stderr).unwrap(), "tok-9f8e7d\n");
    }

    #[test]
    fn private_scripts_travel_on_stdin_and_others_as_arguments() {
        let (cmd, out) = run_wire(&private("echo 0123abcd"), &[], b"");
        assert!(!cmd.contains("0123abcd"), "{cmd}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "0123abcd\n");
        let (cmd, _) = run_wire("echo public", &[Secret::new("other")], b"");
        assert!(cmd.contains("echo public"), "{cmd}");
        // A cut stdin is an error, never half a script run.
        let (s, _) = wire(&private("echo a\necho b\n"), &[]);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command_line(&s, None, false, Duration::from_secs(5)))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125));
        assert!(out.stdout.is_empty());
    }
}
