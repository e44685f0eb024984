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
pub(super) const STREAM_CHUNK: usize = 256 * 1024;

/// How long output may still arrive after a command's exit status before the channel is
/// closed (a background child holding stdout open must not hold the run until its timeout).
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What a remote command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExecOutput {
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
    pub(crate) fn success(&self) -> bool {
        self.exit_status == Some(0)
    }

    /// stdout as text (invalid UTF-8 replaced).
    pub(crate) fn stdout_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// stdout as text, with a line saying how many bytes were not kept where they were
    /// dropped (`hint`: how to get them all).
    pub(crate) fn stdout_shown(&self, hint: &str) -> String {
        crate::ssh::capture::shown(&self.stdout, self.stdout_dropped, "stdout", hint)
    }

    /// stderr as text, marked as [`ExecOutput::stdout_shown`].
    pub(crate) fn stderr_shown(&self, hint: &str) -> String {
        crate::ssh::capture::shown(&self.stderr, self.stderr_dropped, "stderr", hint)
    }
}

/// Where a command's output goes; every byte is either kept within [`Limits`] or passed on.
pub(crate) enum Output<'a> {
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
pub(crate) enum Chunk {
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
    pub(crate) async fn exec(
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
    pub(crate) async fn exec_with(
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

    /// Sends `command` on the channel, writes its stdin while reading its output (see
    /// [`Reader`]), and ends when the channel closes (or the output has had its grace after the
    /// exit status).
    async fn run(
        &self,
        rx: &mut russh::ChannelReadHalf,
        tx: &russh::ChannelWriteHalf<client::Msg>,
        command: &str,
        stdin: &[u8],
        stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send + '_>>,
        output: Output<'_>,
    ) -> Result<ExecOutput, SshError> {
        let mut reader = Reader::new(self, output);
        tx.exec(true, command)
            .await
            .map_err(|_| self.lost("before the command was sent"))?;
        self.bytes_sent
            .fetch_add(command.len() as u64, Ordering::Relaxed);
        let writer = self.feed_stdin(tx, stdin, stream);
        tokio::pin!(writer);
        let mut writer_done = false;
        loop {
            let grace = (reader.after_exit)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
            let next = tokio::select! {
                () = tokio::time::sleep_until(grace), if reader.after_exit.is_some() => {
                    let _ = tx.close().await;
                    Next::Stop
                }
                // The command may exit without reading all of stdin: then the writer stays
                // blocked on the window and is simply dropped when the channel closes.
                _ = &mut writer, if !writer_done => {
                    writer_done = true;
                    Next::Read
                }
                msg = rx.wait() => reader.on_message(msg, tx).await?,
            };
            if let Next::Stop = next {
                break;
            }
        }
        if !reader.ended() {
            return Err(self.lost("while a command was running (its outcome is unknown)"));
        }
        Ok(reader.finish())
    }

    /// Writes `stdin`, then `stream` in chunks of [`STREAM_CHUNK`] bytes, each as the channel's
    /// window allows, then EOF.
    async fn feed_stdin(
        &self,
        tx: &russh::ChannelWriteHalf<client::Msg>,
        stdin: &[u8],
        stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send + '_>>,
    ) -> std::io::Result<()> {
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

/// Whether [`Reader`] goes on reading the channel.
enum Next {
    Read,
    Stop,
}

/// The output side of one running command: where its output goes (kept, sent on, written to a
/// sink), what has come so far, and when it exited.
struct Reader<'s, 'o> {
    session: &'s Session,
    sink: Option<&'o mut (dyn tokio::io::AsyncWrite + Unpin + Send)>,
    tee: Option<tokio::sync::mpsc::Sender<Chunk>>,
    stdout_kept: Capture,
    stderr_kept: Capture,
    out: ExecOutput,
    /// After the exit status, a background child may keep the channel open (its stdout is
    /// ours): the output is given until then to drain, then no longer waited for.
    after_exit: Option<tokio::time::Instant>,
}

impl<'s, 'o> Reader<'s, 'o> {
    fn new(session: &'s Session, output: Output<'o>) -> Self {
        let (sink, tee, limits) = match output {
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
        Reader {
            session,
            sink,
            tee,
            stdout_kept: Capture::new(limits.stdout),
            stderr_kept: Capture::new(limits.stderr),
            out: ExecOutput::default(),
            after_exit: None,
        }
    }

    fn too_large(&self, stream: &'static str, max: usize) -> SshError {
        SshError::OutputTooLarge {
            host: self.session.host.clone(),
            target: self.session.target.clone(),
            stream,
            max,
        }
    }

    /// Takes one message of the channel (`None`: the connection is gone).
    async fn on_message(
        &mut self,
        msg: Option<ChannelMsg>,
        tx: &russh::ChannelWriteHalf<client::Msg>,
    ) -> Result<Next, SshError> {
        match msg {
            Some(ChannelMsg::Data { data }) => return self.on_stdout(&data, tx).await,
            Some(ChannelMsg::ExtendedData { data, .. }) => {
                (self.session.bytes_received).fetch_add(data.len() as u64, Ordering::Relaxed);
                if let Some(t) = &self.tee {
                    let _ = t.send(Chunk::Stderr(data.to_vec())).await;
                }
                (self.stderr_kept)
                    .push(&data)
                    .map_err(|o| self.too_large("stderr", o.max))?;
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                self.out.exit_status = Some(exit_status);
                (self.after_exit).get_or_insert(tokio::time::Instant::now() + EXIT_GRACE);
            }
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                self.out.exit_signal = Some(signal_text(&signal_name));
                (self.after_exit).get_or_insert(tokio::time::Instant::now() + EXIT_GRACE);
            }
            Some(ChannelMsg::Failure) => {
                // sshd keeps a channel whose exec failed open (holding a MaxSessions
                // slot) until we close it.
                let _ = tx.close().await;
                return Err(SshError::ExecRejected {
                    host: self.session.host.clone(),
                    target: self.session.target.clone(),
                });
            }
            Some(ChannelMsg::Close) | None => return Ok(Next::Stop),
            Some(_) => {}
        }
        Ok(Next::Read)
    }

    /// Takes a piece of stdout: sent on, then kept or written to the sink. A sink that fails
    /// stops the command (the rest is not wanted).
    async fn on_stdout(
        &mut self,
        data: &[u8],
        tx: &russh::ChannelWriteHalf<client::Msg>,
    ) -> Result<Next, SshError> {
        (self.session.bytes_received).fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Some(t) = &self.tee {
            // A reader that went away only stops the copy.
            let _ = t.send(Chunk::Stdout(data.to_vec())).await;
        }
        match self.sink.as_mut() {
            None => {
                if let Err(o) = self.stdout_kept.push(data) {
                    return Err(self.too_large("stdout", o.max));
                }
            }
            Some(w) if self.out.sink_error.is_none() => {
                if let Err(e) = w.write_all(data).await {
                    self.out.sink_error = Some(e.to_string());
                    let _ = tx.signal(Sig::KILL).await;
                    let _ = tx.close().await;
                    return Ok(Next::Stop);
                }
            }
            Some(_) => {}
        }
        Ok(Next::Read)
    }

    /// Whether the command said how it ended (an exit status or signal), or the sink failed:
    /// without either, the connection died while it ran.
    fn ended(&self) -> bool {
        let out = &self.out;
        out.exit_status.is_some() || out.exit_signal.is_some() || out.sink_error.is_some()
    }

    /// What the command produced, once the channel is closed.
    fn finish(mut self) -> ExecOutput {
        (self.out.stdout, self.out.stdout_dropped) = self.stdout_kept.finish();
        (self.out.stderr, self.out.stderr_dropped) = self.stderr_kept.finish();
        self.out
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
