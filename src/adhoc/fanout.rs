//! Running the command on every host: one task per host (bounded by `forks`), each streaming
//! its masked output to its `--output-dir` files and to the printer, which keeps each host's
//! output within `--output-limit`, delivers results in inventory order and lets the
//! head-of-line host go live.

use super::mask::{StreamMask, mask};
use super::{Failure, HostResult, Options, Shown};
use crate::inventory::Host;
use crate::remote::RemoteError;
use crate::report::terminal::safe;
use crate::ssh::capture::Capture;
use crate::ssh::{Chunk, ExecOutput, Keep, Limits};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc};

/// A head-of-line host that has printed and not finished for this long is shown live.
const LIVE_AFTER: Duration = Duration::from_secs(2);

enum Event {
    Chunk(usize, Chunk),
    Done(usize, HostResult),
}

/// What the printer holds of one host.
struct Held {
    stdout: Capture,
    stderr: Capture,
    /// When its first output arrived.
    first_output: Option<Instant>,
}

/// The live host's state: bytes of an unfinished UTF-8 character held back.
struct Live {
    carry: Vec<u8>,
}

/// Runs `command` on every host (up to `forks` at a time). `show` is called as output is to be
/// shown: a host's [`Shown::Done`] comes in the hosts' order, as soon as that host and every
/// host before it have finished; the head-of-line host may go live before. The returned
/// results hold no output (it was shown).
pub(crate) async fn run(
    hosts: Vec<Host>,
    command: String,
    opts: Options,
    mut show: impl FnMut(Shown<'_>),
) -> Vec<HostResult> {
    let opts = Arc::new(opts);
    let names = hosts
        .iter()
        .map(|h| (h.name.clone(), h.address.clone()))
        .collect();
    let mut rx = spawn_hosts(hosts, command, &opts);
    let mut printer = Printer::new(names, &opts);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => Some(ev),
                None => break,
            },
            _ = tick.tick() => None,
        };
        match ev {
            Some(Event::Chunk(i, c)) => printer.chunk(i, c, &mut show),
            Some(Event::Done(i, r)) => printer.slots[i] = Some(r),
            None => {}
        }
        printer.go_live(&mut show);
        printer.deliver(&mut show);
    }
    printer.finish(&mut show)
}

/// One task per host, each waiting for one of `forks` permits: their events come through the
/// returned channel, which closes when every task has ended.
fn spawn_hosts(hosts: Vec<Host>, command: String, opts: &Arc<Options>) -> mpsc::Receiver<Event> {
    let sem = Arc::new(Semaphore::new(opts.forks.max(1)));
    let command = Arc::new(command);
    let (tx, rx) = mpsc::channel::<Event>(64);
    for (i, h) in hosts.into_iter().enumerate() {
        let (opts, sem, command, tx) = (opts.clone(), sem.clone(), command.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore is never closed");
            let r = one_host(i, &h, &command, &opts, &tx).await;
            let _ = tx.send(Event::Done(i, r)).await;
        });
    }
    rx
}

/// What is shown, and when: each host's output kept within the limit until its turn comes (in
/// inventory order), and the head-of-line host's stdout once it goes live.
struct Printer {
    /// Each host's name and address, in inventory order.
    names: Vec<(String, String)>,
    /// What is kept of each host's output (first and last halves of `--output-limit`).
    keep: Keep,
    /// The head-of-line host may go live.
    live_allowed: bool,
    /// Each host's output so far.
    held: Vec<Option<Held>>,
    /// Results of hosts that finished and wait for their turn.
    slots: Vec<Option<HostResult>>,
    /// Results shown, their output dropped.
    results: Vec<Option<HostResult>>,
    /// The head-of-line host, when it is live.
    live: Option<Live>,
    /// The head of the line: every host before it was shown.
    next: usize,
}

impl Printer {
    fn new(names: Vec<(String, String)>, opts: &Options) -> Self {
        let n = names.len();
        let half = (opts.output_limit / 2).max(1);
        Self {
            names,
            keep: Keep::Ends {
                head: half,
                tail: half,
            },
            live_allowed: opts.live,
            held: (0..n).map(|_| None).collect(),
            slots: (0..n).map(|_| None).collect(),
            results: (0..n).map(|_| None).collect(),
            live: None,
            next: 0,
        }
    }

    /// A chunk of host `i`'s output: kept; shown now when `i` is live (what fits in the head).
    fn chunk(&mut self, i: usize, c: Chunk, show: &mut impl FnMut(Shown<'_>)) {
        let keep = self.keep;
        let h = self.held[i].get_or_insert_with(|| Held {
            stdout: Capture::new(keep),
            stderr: Capture::new(keep),
            first_output: None,
        });
        h.first_output.get_or_insert_with(Instant::now);
        match c {
            Chunk::Stdout(d) => {
                let room = h.stdout.head_room().min(d.len());
                let _ = h.stdout.push(&d);
                if i == self.next
                    && let Some(l) = self.live.as_mut()
                    && room > 0
                {
                    show(Shown::Live(&l.text(&d[..room])));
                }
            }
            Chunk::Stderr(d) => {
                let _ = h.stderr.push(&d);
            }
        }
    }

    /// The head-of-line host goes live once it has printed for a while.
    fn go_live(&mut self, show: &mut impl FnMut(Shown<'_>)) {
        let next = self.next;
        if self.live_allowed
            && self.live.is_none()
            && next < self.names.len()
            && self.slots[next].is_none()
            && let Some(h) = self.held[next].as_mut()
            && h.first_output.is_some_and(|t| t.elapsed() >= LIVE_AFTER)
        {
            let (name, address) = &self.names[next];
            show(Shown::LiveHeader(name, address));
            let mut l = Live { carry: Vec::new() };
            // What it printed so far (within the head); the rest follows as it arrives.
            if !h.stdout.head().is_empty() {
                show(Shown::Live(&l.text(h.stdout.head())));
            }
            self.live = Some(l);
        }
    }

    /// Shows the finished hosts at the head of the line, in order, and drops their output.
    fn deliver(&mut self, show: &mut impl FnMut(Shown<'_>)) {
        while self.next < self.names.len() {
            let next = self.next;
            let Some(mut r) = self.slots[next].take() else {
                break;
            };
            let was_live = self.live.take().is_some();
            if let (Ok(o), Some(h)) = (r.outcome.as_mut(), self.held[next].take()) {
                (o.stdout, o.stdout_dropped) = h.stdout.finish();
                (o.stderr, o.stderr_dropped) = h.stderr.finish();
            }
            show(Shown::Done {
                result: &r,
                live: was_live,
            });
            // Shown: the output is not kept.
            if let Ok(o) = r.outcome.as_mut() {
                o.stdout = Vec::new();
                o.stderr = Vec::new();
            }
            self.results[next] = Some(r);
            self.next += 1;
        }
    }

    /// Every host's result once all tasks ended; a task that ended abnormally sent nothing: its
    /// host fails (and is shown now).
    fn finish(self, show: &mut impl FnMut(Shown<'_>)) -> Vec<HostResult> {
        let mut out = Vec::new();
        let next = self.next;
        for (i, (slot, (name, address))) in self.results.into_iter().zip(self.names).enumerate() {
            let r = slot.unwrap_or_else(|| HostResult {
                name,
                address,
                outcome: Err(Failure {
                    unreachable: false,
                    reason: "internal error: the host's task ended abnormally (bug, please report)"
                        .into(),
                }),
                elapsed: Duration::ZERO,
            });
            if i >= next {
                show(Shown::Done {
                    result: &r,
                    live: false,
                });
            }
            out.push(r);
        }
        out
    }
}

impl Live {
    /// Safe text of `data`, holding back an unfinished UTF-8 character for the next call.
    fn text(&mut self, data: &[u8]) -> String {
        self.carry.extend_from_slice(data);
        let cut = match std::str::from_utf8(&self.carry) {
            Ok(_) => self.carry.len(),
            // An incomplete character at the end (at most 3 bytes) waits for the rest.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.carry.len(),
        };
        let rest = self.carry.split_off(cut);
        let text = safe(&String::from_utf8_lossy(&self.carry)).into_owned();
        self.carry = rest;
        text
    }
}

/// Why a host's `--output-dir` files failed.
#[derive(Debug, thiserror::Error)]
enum OutputDirError {
    #[error("--output-dir: cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--output-dir: cannot write: {0}")]
    Write(std::io::Error),
}

/// Files of `--output-dir`: the host's whole stdout and stderr.
struct Files {
    stdout: tokio::fs::File,
    stderr: tokio::fs::File,
}

/// Creates `DIR/HOST.stdout` and `DIR/HOST.stderr` (mode 0600, replacing older ones, never
/// following a link).
async fn open_files(dir: &std::path::Path, host: &str) -> Result<Files, OutputDirError> {
    let open = |ext: &str| {
        let p = dir.join(format!("{host}.{ext}"));
        async move {
            let mut o = tokio::fs::OpenOptions::new();
            o.write(true).create(true).truncate(true);
            #[cfg(unix)]
            o.mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
            o.open(&p)
                .await
                .map_err(|source| OutputDirError::Create { path: p, source })
        }
    };
    Ok(Files {
        stdout: open("stdout").await?,
        stderr: open("stderr").await?,
    })
}

/// What the client keeps of a host's output: only what the become diagnostics need (the output
/// itself flows on to the printer and the files).
const KEPT_FOR_BECOME: Limits = Limits {
    stdout: Keep::Ends {
        head: 4096,
        tail: 4096,
    },
    stderr: Keep::Ends {
        head: 4096,
        tail: 4096,
    },
};

/// Host `i`'s task: the command run on it, its output passed on to `events` as it arrives; the
/// become password masked in the reason of a failure.
async fn one_host(
    i: usize,
    h: &Host,
    command: &str,
    opts: &Options,
    events: &mpsc::Sender<Event>,
) -> HostResult {
    let start = Instant::now();
    let outcome = match (
        run_on(i, h, command, opts, events).await,
        &opts.become_password,
    ) {
        (Err(mut f), Some(pw)) => {
            f.reason = String::from_utf8_lossy(&mask(f.reason.as_bytes(), pw.expose())).into();
            Err(f)
        }
        (o, _) => o,
    };
    HostResult {
        name: h.name.clone(),
        address: h.address.clone(),
        outcome,
        elapsed: start.elapsed(),
    }
}

/// Opens the host's files (if asked) and its connection, runs the command with its output
/// passed on ([`pass_on`]), and closes the connection. The result holds no output.
async fn run_on(
    i: usize,
    h: &Host,
    command: &str,
    opts: &Options,
    events: &mpsc::Sender<Event>,
) -> Result<ExecOutput, Failure> {
    let failed = |reason: String| Failure {
        unreachable: false,
        reason,
    };
    let files = match &opts.output_dir {
        Some(d) => Some(
            open_files(d, &h.name)
                .await
                .map_err(|e| failed(e.to_string()))?,
        ),
        None => None,
    };
    let remote = crate::connect::connect(h, opts.become_password.clone(), &opts.ssh)
        .await
        .map_err(|e| Failure {
            unreachable: e.is_unreachable(),
            reason: e.to_string(),
        })?;
    let timeout = opts.timeout.unwrap_or(h.command_timeout);
    let (tee, chunks) = mpsc::channel::<Chunk>(16);
    let pw = opts.become_password.as_ref().map(|p| p.expose().as_bytes());
    let (res, file_error) = tokio::join!(
        remote.run_tee(command, tee, KEPT_FOR_BECOME, timeout),
        pass_on(i, chunks, pw, files, events)
    );
    remote.session.close().await;
    let mut out = res.map_err(|e| {
        failed(match e {
            RemoteError::Timeout(t) => format!(
                "timed out after {}s (raise --timeout or the inventory's `command_timeout`)",
                t.as_secs()
            ),
            other => other.to_string(),
        })
    })?;
    if let Some(e) = file_error {
        return Err(failed(format!("{} ({})", e, out_word(&out))));
    }
    // The output was passed on as it came.
    out.stdout.clear();
    out.stderr.clear();
    out.stdout_dropped = None;
    out.stderr_dropped = None;
    Ok(out)
}

/// Passes the host's output on as it arrives: masked (`pw`), to its files (if any) and to the
/// printer. The first error writing the files, if any (they are not written after it).
async fn pass_on(
    i: usize,
    mut chunks: mpsc::Receiver<Chunk>,
    pw: Option<&[u8]>,
    mut files: Option<Files>,
    events: &mpsc::Sender<Event>,
) -> Option<OutputDirError> {
    let mut out_mask = StreamMask::new(pw);
    let mut err_mask = StreamMask::new(pw);
    let mut file_error = None;
    while let Some(c) = chunks.recv().await {
        let (data, is_out) = match c {
            Chunk::Stdout(d) => (out_mask.feed(&d), true),
            Chunk::Stderr(d) => (err_mask.feed(&d), false),
        };
        forward(i, data, is_out, &mut files, events, &mut file_error).await;
    }
    let (o, e) = (out_mask.finish(), err_mask.finish());
    forward(i, o, true, &mut files, events, &mut file_error).await;
    forward(i, e, false, &mut files, events, &mut file_error).await;
    if let Some(f) = files.as_mut() {
        let _ = f.stdout.flush().await;
        let _ = f.stderr.flush().await;
    }
    file_error
}

fn out_word(o: &ExecOutput) -> String {
    match (&o.exit_status, &o.exit_signal) {
        (Some(c), _) => format!("the command's exit status: {c}"),
        (None, Some(s)) => format!("the command was killed by signal {s}"),
        (None, None) => "no exit status".into(),
    }
}

/// Writes masked output to the host's files (if any) and passes it to the printer.
async fn forward(
    i: usize,
    data: Vec<u8>,
    is_out: bool,
    files: &mut Option<Files>,
    events: &mpsc::Sender<Event>,
    file_error: &mut Option<OutputDirError>,
) {
    if data.is_empty() {
        return;
    }
    if let Some(f) = files.as_mut()
        && file_error.is_none()
    {
        let w = if is_out { &mut f.stdout } else { &mut f.stderr };
        if let Err(e) = w.write_all(&data).await {
            *file_error = Some(OutputDirError::Write(e));
        }
    }
    let c = if is_out {
        Chunk::Stdout(data)
    } else {
        Chunk::Stderr(data)
    };
    let _ = events.send(Event::Chunk(i, c)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_text_keeps_characters_whole_and_escapes() {
        let mut l = Live { carry: Vec::new() };
        let rlo = "\u{202e}".as_bytes();
        assert_eq!(l.text(b"a\xe2"), "a");
        assert_eq!(l.text(&rlo[1..]), "\\u{202e}");
        assert_eq!(l.text("é\x1b".as_bytes()), "é\\x1b");
        assert_eq!(l.text(b"\xff!"), "\u{fffd}!");
    }
}
