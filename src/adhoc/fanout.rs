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
pub async fn run(
    hosts: Vec<Host>,
    command: String,
    opts: Options,
    mut show: impl FnMut(Shown<'_>),
) -> Vec<HostResult> {
    let opts = Arc::new(opts);
    let sem = Arc::new(Semaphore::new(opts.forks.max(1)));
    let command = Arc::new(command);
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let n = hosts.len();
    let mut names = Vec::new();
    for (i, h) in hosts.into_iter().enumerate() {
        names.push((h.name.clone(), h.address.clone()));
        let (opts, sem, command, tx) = (opts.clone(), sem.clone(), command.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore is never closed");
            let r = one_host(i, &h, &command, &opts, &tx).await;
            let _ = tx.send(Event::Done(i, r)).await;
        });
    }
    drop(tx);
    let half = (opts.output_limit / 2).max(1);
    let keep = Keep::Ends {
        head: half,
        tail: half,
    };
    let mut held: Vec<Option<Held>> = (0..n).map(|_| None).collect();
    let mut slots: Vec<Option<HostResult>> = (0..n).map(|_| None).collect();
    let mut results: Vec<Option<HostResult>> = (0..n).map(|_| None).collect();
    let mut live: Option<Live> = None;
    let mut next = 0;
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
            Some(Event::Chunk(i, c)) => {
                let h = held[i].get_or_insert_with(|| Held {
                    stdout: Capture::new(keep),
                    stderr: Capture::new(keep),
                    first_output: None,
                });
                h.first_output.get_or_insert_with(Instant::now);
                match c {
                    Chunk::Stdout(d) => {
                        let room = h.stdout.head_room().min(d.len());
                        let _ = h.stdout.push(&d);
                        if i == next
                            && let Some(l) = live.as_mut()
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
            Some(Event::Done(i, r)) => slots[i] = Some(r),
            None => {}
        }
        // The head-of-line host goes live once it has printed for a while.
        if opts.live
            && live.is_none()
            && next < n
            && slots[next].is_none()
            && let Some(h) = held[next].as_mut()
            && h.first_output.is_some_and(|t| t.elapsed() >= LIVE_AFTER)
        {
            let (name, address) = &names[next];
            show(Shown::LiveHeader(name, address));
            let mut l = Live { carry: Vec::new() };
            // What it printed so far (within the head); the rest follows as it arrives.
            if !h.stdout.head().is_empty() {
                show(Shown::Live(&l.text(h.stdout.head())));
            }
            live = Some(l);
        }
        while next < n {
            let Some(mut r) = slots[next].take() else {
                break;
            };
            let was_live = live.take().is_some();
            if let (Ok(o), Some(h)) = (r.outcome.as_mut(), held[next].take()) {
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
            results[next] = Some(r);
            next += 1;
        }
    }
    // A task that ended abnormally sent nothing.
    let mut out = Vec::new();
    for (i, (slot, (name, address))) in results.into_iter().zip(names).enumerate() {
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

/// Files of `--output-dir`: the host's whole stdout and stderr.
struct Files {
    stdout: tokio::fs::File,
    stderr: tokio::fs::File,
}

/// Creates `DIR/HOST.stdout` and `DIR/HOST.stderr` (mode 0600, replacing older ones, never
/// following a link).
async fn open_files(dir: &std::path::Path, host: &str) -> Result<Files, String> {
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
                .map_err(|e| format!("--output-dir: cannot create {}: {e}", p.display()))
        }
    };
    Ok(Files {
        stdout: open("stdout").await?,
        stderr: open("stderr").await?,
    })
}

async fn one_host(
    i: usize,
    h: &Host,
    command: &str,
    opts: &Options,
    events: &mpsc::Sender<Event>,
) -> HostResult {
    let start = Instant::now();
    let pw = opts.become_password.as_ref().map(|p| p.expose().as_bytes());
    let outcome = async {
        let mut files = match &opts.output_dir {
            Some(d) => Some(open_files(d, &h.name).await.map_err(|reason| Failure {
                unreachable: false,
                reason,
            })?),
            None => None,
        };
        let remote = crate::connect::connect(h, opts.become_password.clone(), &opts.ssh)
            .await
            .map_err(|e| Failure {
                unreachable: e.is_unreachable(),
                reason: e.to_string(),
            })?;
        let timeout = opts.timeout.unwrap_or(h.command_timeout);
        let (tee, mut chunks) = mpsc::channel::<Chunk>(16);
        // The client keeps only what the become diagnostics need; the output itself flows
        // on through `events` (shown) and the files.
        let small = Keep::Ends {
            head: 4096,
            tail: 4096,
        };
        let limits = Limits {
            stdout: small,
            stderr: small,
        };
        let copy = async {
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
        };
        let (res, file_error) = tokio::join!(remote.run_tee(command, tee, limits, timeout), copy);
        remote.session.close().await;
        let mut out = res.map_err(|e| Failure {
            unreachable: false,
            reason: match e {
                RemoteError::Timeout(t) => format!(
                    "timed out after {}s (raise --timeout or the inventory's `command_timeout`)",
                    t.as_secs()
                ),
                other => other.to_string(),
            },
        })?;
        if let Some(e) = file_error {
            return Err(Failure {
                unreachable: false,
                reason: format!("{} ({})", e, out_word(&out)),
            });
        }
        // The output was passed on as it came.
        out.stdout.clear();
        out.stderr.clear();
        out.stdout_dropped = None;
        out.stderr_dropped = None;
        Ok(out)
    }
    .await;
    let outcome = match (outcome, &opts.become_password) {
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
    file_error: &mut Option<String>,
) {
    if data.is_empty() {
        return;
    }
    if let Some(f) = files.as_mut()
        && file_error.is_none()
    {
        let w = if is_out { &mut f.stdout } else { &mut f.stderr };
        if let Err(e) = w.write_all(&data).await {
            *file_error = Some(format!("--output-dir: cannot write: {e}"));
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
