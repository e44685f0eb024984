//! Running commands on a [`Session`]: one session channel per command, its stdin written
//! while its output is read, the output kept within limits, sent on, or written to a sink.

use std::borrow::Cow;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use russh::client;
use russh::{ChannelMsg, ChannelOpenFailure, Sig};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout_at;

use super::Session;
use crate::ssh::SshError;
use crate::ssh::capture::{Capture, Dropped, Keep, Limits};

/// Read size of a streamed stdin ([`Session::exec_with`]): large writes make large packets.
pub const STREAM_CHUNK: usize = 256 * 1024;

/// How long output may still arrive after a command's exit status before the channel is
/// closed (a background child holding stdout open must not hold the run until its timeout).
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What a remote command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code, if the command exited normally.
    pub exit_status: Option<u32>,
    /// The signal name (`TERM`, `KILL`, ...) if the command was killed by one.
    pub exit_signal: Option<String>,
    /// What the client kept of stdout (see [`Limits`]; empty when it went to a sink).
    pub stdout: Vec<u8>,
    /// What the client kept of stderr.
    pub stderr: Vec<u8>,
    /// Bytes of stdout not kept (the middle of a long output, [`Keep::Ends`]).
    pub stdout_dropped: Option<Dropped>,
    /// Bytes of stderr not kept.
    pub stderr_dropped: Option<Dropped>,
    /// With [`Output::Sink`]: the error that stopped writing stdout to the sink (the
    /// command's output was then drained and dropped).
    pub sink_error: Option<String>,
}

impl ExecOutput {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }

    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// stderr as text (invalid UTF-8 replaced).
    pub fn stderr_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// stdout as text, with a line saying how many bytes were not kept where they were
    /// dropped (`hint`: how to get them all).
    pub fn stdout_shown(&self, hint: &str) -> String {
        crate::ssh::capture::shown(&self.stdout, self.stdout_dropped, "stdout", hint)
    }

    /// stderr as text, marked as [`ExecOutput::stdout_shown`].
    pub fn stderr_shown(&self, hint: &str) -> String {
        crate::ssh::capture::shown(&self.stderr, self.stderr_dropped, "stderr", hint)
    }
}

/// Where a command's output goes; every byte is either kept within [`Limits`] or passed on.
pub enum Output<'a> {
    /// Kept in [`ExecOutput`] within these limits.
    Keep(Limits),
    /// stdout written to the sink as it arrives (never held whole in memory); stderr kept.
    Sink(&'a mut (dyn tokio::io::AsyncWrite + Unpin + Send), Keep),
    /// Every chunk sent on the channel as it arrives (waiting for room: a slow reader slows
    /// the command down, through the SSH window), and also kept within the limits.
    Tee(tokio::sync::mpsc::Sender<Chunk>, Limits),
}

/// A piece of a command's output, as it arrived ([`Output::Tee`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

impl Session {
    /// Runs `command` through the remote user's shell (it may be a whole `sh` script),
    /// feeding `stdin` (then EOF; EOF right away without stdin). One call = one channel = one
    /// counted round trip. `timeout` bounds the whole call (including waiting for a free
    /// channel); on expiry the channel is closed and [`SshError::Timeout`] returned — wrap the
    /// remote command in `timeout` too, signals are not reliable. The output is kept within
    /// [`Limits::PROBE`] (more stdout is [`SshError::OutputTooLarge`]).
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ExecOutput, SshError> {
        self.exec_with(
            command,
            stdin.unwrap_or_default(),
            None,
            Output::Keep(Limits::PROBE),
            timeout,
        )
        .await
    }

    /// Like [`Session::exec`], with the output going to `output`; and, when `stream` is given,
    /// after `stdin` the command's stdin is read from `stream` in chunks of [`STREAM_CHUNK`]
    /// bytes as the channel's window allows (backpressure: at most one chunk plus the SSH
    /// window is in flight, whatever the stream's length), then EOF. A read error ends the
    /// stream early (EOF is still sent); the caller checks the source. `stream` is dropped
    /// when the command ends, even if it was not read to its end. With [`Output::Sink`], a
    /// write error is reported in `sink_error` (the rest of stdout is then drained and dropped).
    pub async fn exec_with(
        &self,
        command: &str,
        stdin: &[u8],
        stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send + '_>>,
        output: Output<'_>,
        timeout: Duration,
    ) -> Result<ExecOutput, SshError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || SshError::Timeout {
            host: self.host.clone(),
            target: self.target.clone(),
            timeout,
        };
        let _permit = timeout_at(deadline, self.channels_limit.acquire())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| self.lost("before the command was sent"))?;
        let channel = match timeout_at(deadline, self.handle.channel_open_session()).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(russh::Error::ChannelOpenFailure(f))) => {
                return Err(SshError::ChannelOpen {
                    host: self.host.clone(),
                    target: self.target.clone(),
                    reason: open_failure_reason(&f),
                });
            }
            Ok(Err(_)) => return Err(self.lost("before the command was sent")),
            Ok(Ok(c)) => c,
        };
        // Counted once the channel exists, as sshd logs a session for it.
        self.channels.fetch_add(1, Ordering::Relaxed);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let (mut rx, tx) = channel.split();
        let res = match timeout_at(
            deadline,
            self.run(&mut rx, &tx, command, stdin, stream, output),
        )
        .await
        {
            Ok(Err(e @ SshError::OutputTooLarge { .. })) => e,
            Ok(r) => return r,
            Err(_) => timed_out(),
        };
        // Unread messages must not stall the connection while we clean up.
        drop(rx);
        // Best effort: ask sshd to kill the command (ignored for some accounts), and close
        // our side. Dropping `rx` afterwards never stalls the connection.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = tx.signal(Sig::KILL).await;
            let _ = tx.close().await;
        })
        .await;
        Err(res)
    }

    async fn run(
        &self,
        rx: &mut russh::ChannelReadHalf,
        tx: &russh::ChannelWriteHalf<client::Msg>,
        command: &str,
        stdin: &[u8],
        stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send + '_>>,
        output: Output<'_>,
    ) -> Result<ExecOutput, SshError> {
        let (mut sink, tee, limits) = match output {
            Output::Keep(l) => (None, None, l),
            Output::Sink(w, stderr) => (
                Some(w),
                None,
                Limits {
                    stdout: Keep::Whole { max: 0 },
                    stderr,
                },
            ),
            Output::Tee(t, l) => (None, Some(t), l),
        };
        let mut stdout_kept = Capture::new(limits.stdout);
        let mut stderr_kept = Capture::new(limits.stderr);
        let too_large = |stream: &'static str, max: usize| SshError::OutputTooLarge {
            host: self.host.clone(),
            target: self.target.clone(),
            stream,
            max,
        };
        tx.exec(true, command)
            .await
            .map_err(|_| self.lost("before the command was sent"))?;
        self.bytes_sent
            .fetch_add(command.len() as u64, Ordering::Relaxed);

        let writer = async {
            let mut w = tx.make_writer();
            if !stdin.is_empty() {
                // `write_all` on the whole buffer: the writer cuts it into packets of the
                // channel's maximum size (not tokio's 8 KiB copy buffer), waiting for window.
                w.write_all(stdin).await?;
                self.bytes_sent
                    .fetch_add(stdin.len() as u64, Ordering::Relaxed);
            }
            if let Some(mut src) = stream {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; STREAM_CHUNK];
                loop {
                    // A read error ends the stream: the remote side sees it truncated.
                    let n = match src.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // Waits for window: the source is read no faster than the target takes it.
                    w.write_all(&buf[..n]).await?;
                    self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            w.flush().await?;
            tx.eof().await.map_err(std::io::Error::other)
        };
        tokio::pin!(writer);
        let mut writer_done = false;
        let mut out = ExecOutput::default();
        // After the exit status, a background child may keep the channel open (its stdout is
        // ours): give the output a moment to drain, then stop waiting.
        let mut after_exit: Option<tokio::time::Instant> = None;
        loop {
            let grace = after_exit
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                () = tokio::time::sleep_until(grace), if after_exit.is_some() => {
                    let _ = tx.close().await;
                    break;
                }
                // The command may exit without reading all of stdin: then the writer stays
                // blocked on the window and is simply dropped when the channel closes.
                _ = &mut writer, if !writer_done => writer_done = true,
                msg = rx.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        self.bytes_received.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if let Some(t) = &tee {
                            // A reader that went away only stops the copy.
                            let _ = t.send(Chunk::Stdout(data.to_vec())).await;
                        }
                        match sink.as_mut() {
                            None => stdout_kept
                                .push(&data)
                                .map_err(|o| too_large("stdout", o.max))?,
                            Some(w) if out.sink_error.is_none() => {
                                use tokio::io::AsyncWriteExt;
                                if let Err(e) = w.write_all(&data).await {
                                    // The rest is not wanted: stop the command.
                                    out.sink_error = Some(e.to_string());
                                    let _ = tx.signal(Sig::KILL).await;
                                    let _ = tx.close().await;
                                    break;
                                }
                            }
                            Some(_) => {}
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, .. }) => {
                        self.bytes_received.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if let Some(t) = &tee {
                            let _ = t.send(Chunk::Stderr(data.to_vec())).await;
                        }
                        stderr_kept
                            .push(&data)
                            .map_err(|o| too_large("stderr", o.max))?;
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        out.exit_status = Some(exit_status);
                        after_exit.get_or_insert(tokio::time::Instant::now() + EXIT_GRACE);
                    }
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        out.exit_signal = Some(signal_text(&signal_name));
                        after_exit.get_or_insert(tokio::time::Instant::now() + EXIT_GRACE);
                    }
                    Some(ChannelMsg::Failure) => {
                        // sshd keeps a channel whose exec failed open (holding a MaxSessions
                        // slot) until we close it.
                        let _ = tx.close().await;
                        return Err(SshError::ExecRejected {
                            host: self.host.clone(),
                            target: self.target.clone(),
                        });
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
            }
        }
        if out.exit_status.is_none() && out.exit_signal.is_none() && out.sink_error.is_none() {
            return Err(self.lost("while a command was running (its outcome is unknown)"));
        }
        (out.stdout, out.stdout_dropped) = stdout_kept.finish();
        (out.stderr, out.stderr_dropped) = stderr_kept.finish();
        Ok(out)
    }

    fn lost(&self, during: &'static str) -> SshError {
        let reason = self
            .shared
            .disconnect
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "the connection closed".to_string());
        SshError::ConnectionLost {
            host: self.host.clone(),
            target: self.target.clone(),
            during,
            reason,
        }
    }
}

fn signal_text(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(s) => s.clone(),
    }
}

fn open_failure_reason(f: &ChannelOpenFailure) -> String {
    match f {
        ChannelOpenFailure::AdministrativelyProhibited => "administratively prohibited".into(),
        ChannelOpenFailure::ConnectFailed => "the open request was refused".into(),
        ChannelOpenFailure::UnknownChannelType => "session channels are not supported".into(),
        ChannelOpenFailure::ResourceShortage => "resource shortage".into(),
        ChannelOpenFailure::Other { code, reason } => format!("{reason} (code {code})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_output_success() {
        let mut o = ExecOutput::default();
        assert!(!o.success());
        o.exit_status = Some(0);
        assert!(o.success());
        o.exit_status = Some(3);
        assert!(!o.success());
    }
}
