//! `run`: one ad-hoc shell command on every selected host, in parallel (bounded by `forks`), over
//! the same connection as `plan`/`apply` (`connect::connect`: keys, known_hosts, become).
//!
//! **Output is streamed with a bound.** Every byte a host prints passes through once: masked
//! (the become password, [`StreamMask`]), written whole to `--output-dir` files when asked, and
//! kept for the terminal and JSON only within `--output-limit` per host and stream (its first
//! and last halves; what lies between is counted and named). The host at the head of the
//! inventory order goes "live" once it has printed for a while without finishing: its stdout
//! is shown as it arrives. The client's memory does not grow with what a host prints.
//!
//! **Invariant:** the command runs with stdin closed (only a become password precedes the EOF,
//! and sudo consumes it); the password never appears in what is shown (masked if echoed).

use crate::inventory::Host;
use crate::remote::RemoteError;
use crate::report::terminal::safe;
use crate::secret::Secret;
use crate::ssh::capture::Capture;
use crate::ssh::{Chunk, ExecOutput, Keep, Limits};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc};

/// Default `--output-limit`: what is kept per host and stream for the terminal and JSON.
pub const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;

/// A head-of-line host that has printed and not finished for this long is shown live.
const LIVE_AFTER: Duration = Duration::from_secs(2);

/// Options of an ad-hoc run.
pub struct Options {
    pub forks: usize,
    pub become_password: Option<Secret>,
    /// The command's connection state (passphrases, key and known_hosts caches, jump chains,
    /// the host keys learned on the way).
    pub ssh: crate::ssh::Client,
    /// Overrides every host's `command_timeout`.
    pub timeout: Option<Duration>,
    /// Bytes kept per host and stream for the terminal and JSON (first and last halves).
    pub output_limit: usize,
    /// Each host's whole stdout and stderr go to `DIR/HOST.stdout` and `DIR/HOST.stderr`.
    pub output_dir: Option<PathBuf>,
    /// Show the head-of-line host's stdout as it arrives ([`Shown::LiveHeader`], [`Shown::Live`]).
    pub live: bool,
}

/// Why a host has no exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub unreachable: bool,
    pub reason: String,
}

/// What one host did.
#[derive(Debug)]
pub struct HostResult {
    pub name: String,
    pub address: String,
    pub outcome: Result<ExecOutput, Failure>,
    pub elapsed: Duration,
}

impl HostResult {
    /// The command exited 0.
    pub fn ok(&self) -> bool {
        matches!(&self.outcome, Ok(o) if o.success())
    }

    /// `ok`, `failed` (non-zero exit, signal, timeout, sudo or SSH error) or `unreachable`.
    pub fn state(&self) -> &'static str {
        match &self.outcome {
            Ok(o) if o.success() => "ok",
            Err(f) if f.unreachable => "unreachable",
            _ => "failed",
        }
    }

    /// `exit 3`, `killed by signal KILL`, `unreachable`, `failed`.
    fn result_word(&self) -> String {
        match &self.outcome {
            Ok(o) => match (&o.exit_status, &o.exit_signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                (None, None) => "no exit status".into(),
            },
            Err(f) if f.unreachable => "unreachable".into(),
            Err(_) => "failed".into(),
        }
    }
}

/// What the caller shows, in order.
pub enum Shown<'a> {
    /// The head-of-line host goes live: its header ([`live_header`]), then [`Shown::Live`]
    /// text, then [`Shown::Done`] with `live` set.
    LiveHeader(&'a str, &'a str),
    /// Safe text of the live host's stdout, as it arrives.
    Live(&'a str),
    /// A host finished (hosts in inventory order).
    Done { result: &'a HostResult, live: bool },
}

/// The remote command line: the words joined with spaces, as `ssh host WORDS...` does (the
/// remote shell then parses it: quoting, pipes and `;` work as in a terminal).
pub fn command_line(words: &[String]) -> Result<String, String> {
    let line = words.join(" ");
    if line.trim().is_empty() {
        return Err(
            "run: no command given; put it after `--`, e.g. `run INVENTORY -- uptime`".into(),
        );
    }
    Ok(line)
}

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

/// Masks a secret in a stream cut into chunks: holds back what could be the start of the
/// secret until the next chunk tells.
pub(crate) struct StreamMask<'a> {
    secret: Option<&'a [u8]>,
    pending: Vec<u8>,
}

impl<'a> StreamMask<'a> {
    pub(crate) fn new(secret: Option<&'a [u8]>) -> Self {
        Self {
            secret: secret.filter(|s| !s.is_empty()),
            pending: Vec::new(),
        }
    }

    /// The bytes that can be shown now (masked).
    pub(crate) fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        let Some(s) = self.secret else {
            return data.to_vec();
        };
        self.pending.extend_from_slice(data);
        let masked = mask_bytes(&self.pending, s);
        // Keep back the longest end that is a proper prefix of the secret.
        let keep = (1..s.len())
            .rev()
            .find(|&k| masked.len() >= k && masked.ends_with(&s[..k]))
            .unwrap_or(0);
        let (now, later) = masked.split_at(masked.len() - keep);
        self.pending = later.to_vec();
        now.to_vec()
    }

    /// What was held back at the end of the stream.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// [`mask`] for bytes.
fn mask_bytes(data: &[u8], secret: &[u8]) -> Vec<u8> {
    if secret.is_empty() || data.len() < secret.len() {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(secret) {
            out.extend_from_slice(b"***");
            i += secret.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// Replaces every occurrence of `secret` in `data` by `***`.
pub(crate) fn mask(data: &[u8], secret: &str) -> Vec<u8> {
    mask_bytes(data, secret.as_bytes())
}

/// What to do to see a host's whole output (in the line that says what was not kept).
const ALL_OUTPUT_HINT: &str =
    "; --output-dir DIR keeps each host's whole output, --output-limit SIZE shows more";

/// A host's block of text output: a header line, its stdout, then its stderr (marked).
/// Host-supplied text is shown [`safe`].
pub fn text_block(r: &HostResult) -> String {
    let mut out = format!("==> {} ({}): {}", r.name, r.address, r.result_word());
    match &r.outcome {
        Err(f) => {
            let _ = writeln!(out, ": {}", safe(&f.reason));
        }
        Ok(o) => {
            out.push('\n');
            if !o.stdout.is_empty() || o.stdout_dropped.is_some() {
                add_text(&mut out, &o.stdout_shown(ALL_OUTPUT_HINT));
            }
            add_stderr(&mut out, o);
        }
    }
    out
}

fn add_text(out: &mut String, t: &str) {
    out.push_str(&safe(t));
    if !t.ends_with('\n') {
        out.push('\n');
    }
}

fn add_stderr(out: &mut String, o: &ExecOutput) {
    if !o.stderr.is_empty() || o.stderr_dropped.is_some() {
        out.push_str("--- stderr\n");
        add_text(out, &o.stderr_shown(ALL_OUTPUT_HINT));
    }
}

/// The header of a host shown live (its result comes in [`live_end`]).
pub fn live_header(name: &str, address: &str) -> String {
    format!("==> {name} ({address}): running\n")
}

/// The end of a live host's block: what its stdout kept after the part shown live (when
/// bytes were dropped), its stderr, and a closing line with its result.
pub fn live_end(r: &HostResult, printed_newline: bool) -> String {
    let mut out = String::new();
    if !printed_newline {
        out.push('\n');
    }
    match &r.outcome {
        Err(f) => {
            let _ = writeln!(
                out,
                "==> {} ({}): {}: {}",
                r.name,
                r.address,
                r.result_word(),
                safe(&f.reason)
            );
        }
        Ok(o) => {
            if let Some(d) = o.stdout_dropped {
                let _ = writeln!(
                    out,
                    "[claw-provision: {} bytes of stdout not kept here{ALL_OUTPUT_HINT}]",
                    d.bytes
                );
                let tail = &o.stdout[d.at.min(o.stdout.len())..];
                if !tail.is_empty() {
                    add_text(&mut out, &String::from_utf8_lossy(tail));
                }
            }
            add_stderr(&mut out, o);
            let _ = writeln!(out, "==> {} ({}): {}", r.name, r.address, r.result_word());
        }
    }
    out
}

/// The closing table: each host's result and time (without `table`, `-q`: not), then the
/// reasons of failed hosts and the count of hosts where the command exited 0.
pub fn text_summary(results: &[HostResult], table: bool) -> String {
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    if table {
        let _ = write!(
            out,
            "\n{:<width$}  {:<22}  {:>7}\n",
            "HOST", "RESULT", "TIME"
        );
    }
    for r in results.iter().filter(|_| table) {
        let _ = writeln!(
            out,
            "{:<width$}  {:<22}  {:>6.1}s",
            r.name,
            r.result_word(),
            r.elapsed.as_secs_f64()
        );
    }
    for r in results {
        if let Err(f) = &r.outcome {
            let _ = writeln!(
                out,
                "error: {} ({}): {}",
                r.name,
                r.address,
                safe(&f.reason)
            );
        }
    }
    let bad = results.iter().filter(|r| !r.ok()).count();
    let _ = writeln!(
        out,
        "{} of {} hosts exited 0",
        results.len() - bad,
        results.len()
    );
    out
}

fn host_fields(r: &HostResult) -> Value {
    let (code, signal, error) = match &r.outcome {
        Ok(o) => (o.exit_status, o.exit_signal.clone(), None),
        Err(f) => (None, None, Some(f.reason.clone())),
    };
    json!({
        "host": r.name, "address": r.address, "state": r.state(), "exit_code": code,
        "signal": signal, "error": error, "elapsed_ms": r.elapsed.as_millis() as u64,
    })
}

/// The `host` event: the host's result with its stdout and stderr (as text, invalid UTF-8
/// replaced; where bytes were not kept, a line says so) and how many bytes were not kept.
pub fn host_event(r: &HostResult) -> Value {
    let mut v = host_fields(r);
    let (out, err, dropped) = match &r.outcome {
        Ok(o) => (
            Some(o.stdout_shown(ALL_OUTPUT_HINT)),
            Some(o.stderr_shown(ALL_OUTPUT_HINT)),
            Some((
                o.stdout_dropped.map_or(0, |d| d.bytes),
                o.stderr_dropped.map_or(0, |d| d.bytes),
            )),
        ),
        Err(_) => (None, None, None),
    };
    v["event"] = json!("host");
    v["stdout"] = json!(out);
    v["stderr"] = json!(err);
    v["stdout_dropped"] = json!(dropped.map(|d| d.0));
    v["stderr_dropped"] = json!(dropped.map(|d| d.1));
    v
}

/// The closing `summary` event.
pub fn summary_event(results: &[HostResult], elapsed: Duration) -> Value {
    let count = |w: &str| results.iter().filter(|r| r.state() == w).count();
    json!({
        "event": "summary",
        "command": "run",
        "hosts": results.iter().map(host_fields).collect::<Vec<_>>(),
        "totals": {"ok": count("ok"), "failed": count("failed"), "unreachable": count("unreachable")},
        "elapsed_ms": elapsed.as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(name: &str, code: u32, out: &str, err: &str) -> HostResult {
        HostResult {
            name: name.into(),
            address: "10.0.0.2".into(),
            outcome: Ok(ExecOutput {
                exit_status: Some(code),
                exit_signal: None,
                stdout: out.as_bytes().to_vec(),
                stderr: err.as_bytes().to_vec(),
                ..Default::default()
            }),
            elapsed: Duration::from_millis(100),
        }
    }

    #[test]
    fn words_are_joined_like_ssh() {
        let w = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(command_line(&w(&["hostname"])).unwrap(), "hostname");
        assert_eq!(
            command_line(&w(&["echo", "a b", "|", "wc -c"])).unwrap(),
            "echo a b | wc -c"
        );
        assert_eq!(command_line(&w(&["exit 3"])).unwrap(), "exit 3");
        assert!(command_line(&[]).unwrap_err().contains("no command"));
        assert!(command_line(&w(&["  "])).is_err());
    }

    #[test]
    fn blocks_and_summary() {
        let a = exited("h1", 0, "h1\n", "");
        assert_eq!(text_block(&a), "==> h1 (10.0.0.2): exit 0\nh1\n");
        let b = exited("h2", 3, "partial", "oops\n");
        assert_eq!(
            text_block(&b),
            "==> h2 (10.0.0.2): exit 3\npartial\n--- stderr\noops\n"
        );
        let c = HostResult {
            name: "h3".into(),
            address: "10.0.0.4".into(),
            outcome: Err(Failure {
                unreachable: true,
                reason: "connection refused".into(),
            }),
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            text_block(&c),
            "==> h3 (10.0.0.4): unreachable: connection refused\n"
        );
        let all = [a, b, c];
        let s = text_summary(&all, true);
        assert!(s.contains("h2    exit 3"), "{s}");
        assert!(s.contains("h3    unreachable"), "{s}");
        assert!(
            s.contains("error: h3 (10.0.0.4): connection refused"),
            "{s}"
        );
        assert!(s.contains("1 of 3 hosts exited 0"), "{s}");
        // -q: no table, the errors and the count only
        let q = text_summary(&all, false);
        assert_eq!(
            q,
            "error: h3 (10.0.0.4): connection refused\n1 of 3 hosts exited 0\n"
        );
    }

    #[test]
    fn json_events() {
        let b = exited("h2", 3, "x", "y");
        let e = host_event(&b);
        assert_eq!(e["event"], "host");
        assert_eq!(e["exit_code"], 3);
        assert_eq!(e["state"], "failed");
        assert_eq!(
            (e["stdout"].as_str(), e["stderr"].as_str()),
            (Some("x"), Some("y"))
        );
        let s = summary_event(&[b], Duration::ZERO);
        assert_eq!(s["hosts"][0]["exit_code"], 3);
        assert_eq!(s["totals"]["failed"], 1);
    }

    #[test]
    fn masks_a_password_cut_across_chunks() {
        let mut m = StreamMask::new(Some(b"labpass"));
        let mut out = Vec::new();
        for c in [&b"x lab"[..], b"pa", b"ss y la", b"bpas", b"t", b" lab"] {
            out.extend(m.feed(c));
        }
        out.extend(m.finish());
        assert_eq!(out, b"x *** y labpast lab");
        let mut none = StreamMask::new(None);
        assert_eq!(none.feed(b"abc"), b"abc");
    }

    #[test]
    fn live_text_keeps_characters_whole_and_escapes() {
        let mut l = Live { carry: Vec::new() };
        let rlo = "\u{202e}".as_bytes();
        assert_eq!(l.text(b"a\xe2"), "a");
        assert_eq!(l.text(&rlo[1..]), "\\u{202e}");
        assert_eq!(l.text("é\x1b".as_bytes()), "é\\x1b");
        assert_eq!(l.text(b"\xff!"), "\u{fffd}!");
    }

    #[test]
    fn masks_the_password() {
        assert_eq!(mask(b"a pw b pwpw", "pw"), b"a *** b ******");
        assert_eq!(mask(b"short", "longer secret"), b"short");
        assert_eq!(mask(b"x", ""), b"x");
    }
}
