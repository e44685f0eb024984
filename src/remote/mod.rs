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

mod to_file;
mod wire;

pub(crate) use wire::{command_line, private};
use wire::{sudo_asks_line, wire};

use crate::plan::LocalSource;
use crate::secret::Secret;
use crate::ssh::{Chunk, ExecOutput, Limits, Output, Session, SshError};
use std::sync::PoisonError;
use std::time::Duration;

/// How to become another user.
#[derive(Debug, Clone)]
pub(crate) struct Become {
    pub user: String,
    pub password: Option<Secret>,
}

/// A failure of one remote command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RemoteError {
    #[error("{0}")]
    Ssh(#[from] SshError),
    #[error("timed out after {}s (raise the step's `timeout` or the inventory's `command_timeout`)", .0.as_secs())]
    Timeout(Duration),
    #[error("become (sudo) failed: {0}")]
    Become(String),
    #[error("{0}")]
    Failed(String),
}

/// Extra time the client waits beyond the remote timeout, so the remote side reports first.
const CLIENT_MARGIN: Duration = Duration::from_secs(15);

/// A host's connection plus its become settings.
pub(crate) struct Remote {
    pub session: Session,
    pub become_: Option<Become>,
    /// Secret values of this host (see [`Remote::hide`]).
    hidden: std::sync::RwLock<Vec<Secret>>,
    /// Whether this host's sudo asks for the become password: unknown until the first become
    /// command that has one to send.
    sudo_asks: std::sync::Mutex<Option<bool>>,
}

impl Remote {
    pub(crate) fn new(session: Session, become_: Option<Become>) -> Self {
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
    pub(crate) fn hide(&self, values: impl IntoIterator<Item = Secret>) {
        let mut h = self.hidden.write().unwrap_or_else(PoisonError::into_inner);
        h.extend(values.into_iter().filter(|v| !v.is_empty()));
    }

    /// Runs a script (one round trip). Non-zero exit is returned as `Ok` with its status;
    /// timeouts and sudo failures are errors.
    pub(crate) async fn run(
        &self,
        script: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<ExecOutput, RemoteError> {
        self.run_input(script, stdin, None, Output::Keep(Limits::PROBE), timeout)
            .await
    }

    /// Runs a script whose output is kept within `limits` (see [`Remote::run`]).
    pub(crate) async fn run_with(
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
    pub(crate) async fn run_tee(
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
    pub(crate) async fn run_stream_ok(
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
    /// Runs a step's or handler's command, which must succeed: its output is kept within
    /// [`Limits::COMMAND`] (its two ends; the middle of a long output is dropped and counted).
    pub(crate) async fn run_op_ok(
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
    pub(crate) async fn run_ok(
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
pub(crate) fn describe_failure_stderr(out: &ExecOutput) -> String {
    describe_output(out, false)
}

/// "exit status 2: <last lines of stderr>" (of stdout when stderr is empty).
pub(crate) fn describe_failure(out: &ExecOutput) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
