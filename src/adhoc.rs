//! `run`: one ad-hoc shell command on every selected host, in parallel (bounded by `forks`), over
//! the same connection as `plan`/`apply` (`run::connect`: keys, known_hosts, become).
//!
//! **Invariant:** the command runs with stdin closed (only a become password precedes the EOF,
//! and sudo consumes it); the password never appears in what is shown (masked if echoed).

use crate::inventory::Host;
use crate::remote::RemoteError;
use crate::secret::Secret;
use crate::ssh::{ExecOutput, PassphraseSource};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Options of an ad-hoc run.
pub struct Options {
    pub forks: usize,
    pub become_password: Option<Secret>,
    pub passphrases: Arc<dyn PassphraseSource>,
    /// Overrides every host's `command_timeout`.
    pub timeout: Option<Duration>,
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

/// Runs `command` on every host (up to `forks` at a time). `done` is called once per host, in
/// the hosts' order, as soon as that host and every host before it have finished.
pub async fn run(
    hosts: Vec<Host>,
    command: String,
    opts: Options,
    mut done: impl FnMut(&HostResult),
) -> Vec<HostResult> {
    let opts = Arc::new(opts);
    let sem = Arc::new(Semaphore::new(opts.forks.max(1)));
    let command = Arc::new(command);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let n = hosts.len();
    let mut names = Vec::new();
    for (i, h) in hosts.into_iter().enumerate() {
        names.push((h.name.clone(), h.address.clone()));
        let (opts, sem, command, tx) = (opts.clone(), sem.clone(), command.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore is never closed");
            let r = one_host(&h, &command, &opts).await;
            let _ = tx.send((i, r));
        });
    }
    drop(tx);
    let mut slots: Vec<Option<HostResult>> = (0..n).map(|_| None).collect();
    let mut next = 0;
    while next < n {
        match rx.recv().await {
            Some((i, r)) => slots[i] = Some(r),
            None => break,
        }
        while next < n {
            let Some(r) = &slots[next] else { break };
            done(r);
            next += 1;
        }
    }
    // A task that ended abnormally sent nothing.
    let mut out = Vec::new();
    for (i, (slot, (name, address))) in slots.into_iter().zip(names).enumerate() {
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
            done(&r);
        }
        out.push(r);
    }
    out
}

async fn one_host(h: &Host, command: &str, opts: &Options) -> HostResult {
    let start = Instant::now();
    let outcome = async {
        let remote =
            crate::run::connect(h, opts.become_password.clone(), opts.passphrases.as_ref())
                .await
                .map_err(|e| Failure {
                    unreachable: e.is_unreachable(),
                    reason: e.to_string(),
                })?;
        let timeout = opts.timeout.unwrap_or(h.command_timeout);
        let res = remote.run(command, b"", timeout).await;
        remote.session.close().await;
        res.map_err(|e| Failure {
            unreachable: false,
            reason: match e {
                RemoteError::Timeout(t) => format!(
                    "timed out after {}s (raise --timeout or the inventory's `command_timeout`)",
                    t.as_secs()
                ),
                other => other.to_string(),
            },
        })
    }
    .await;
    let outcome = match (outcome, &opts.become_password) {
        (Ok(mut o), Some(pw)) => {
            o.stdout = mask(&o.stdout, pw.expose());
            o.stderr = mask(&o.stderr, pw.expose());
            Ok(o)
        }
        (Err(mut f), Some(pw)) => {
            f.reason = String::from_utf8_lossy(&mask(f.reason.as_bytes(), pw.expose())).into();
            Err(f)
        }
        (o, None) => o,
    };
    HostResult {
        name: h.name.clone(),
        address: h.address.clone(),
        outcome,
        elapsed: start.elapsed(),
    }
}

/// Replaces every occurrence of `secret` in `data` by `***`.
pub(crate) fn mask(data: &[u8], secret: &str) -> Vec<u8> {
    let s = secret.as_bytes();
    if s.is_empty() || data.len() < s.len() {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(s) {
            out.extend_from_slice(b"***");
            i += s.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// A host's block of text output: a header line, its stdout, then its stderr (marked).
pub fn text_block(r: &HostResult) -> String {
    let mut out = format!("==> {} ({}): {}", r.name, r.address, r.result_word());
    match &r.outcome {
        Err(f) => {
            let _ = writeln!(out, ": {}", f.reason);
        }
        Ok(o) => {
            out.push('\n');
            let mut add = |b: &[u8]| {
                let t = String::from_utf8_lossy(b);
                out.push_str(&t);
                if !t.ends_with('\n') {
                    out.push('\n');
                }
            };
            if !o.stdout.is_empty() {
                add(&o.stdout);
            }
            if !o.stderr.is_empty() {
                add(b"--- stderr");
                add(&o.stderr);
            }
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
            let _ = writeln!(out, "error: {} ({}): {}", r.name, r.address, f.reason);
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

/// The `host` event: the host's result with its stdout and stderr (as text, invalid UTF-8 replaced).
pub fn host_event(r: &HostResult) -> Value {
    let mut v = host_fields(r);
    let (out, err) = match &r.outcome {
        Ok(o) => (
            Some(o.stdout_lossy().into_owned()),
            Some(o.stderr_lossy().into_owned()),
        ),
        Err(_) => (None, None),
    };
    v["event"] = json!("host");
    v["stdout"] = json!(out);
    v["stderr"] = json!(err);
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
                sink_error: None,
            }),
            elapsed: Duration::from_millis(100),
        }
    }

    #[test]
    fn words_are_joined_like_ssh() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
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
    fn masks_the_password() {
        assert_eq!(mask(b"a pw b pwpw", "pw"), b"a *** b ******");
        assert_eq!(mask(b"short", "longer secret"), b"short");
        assert_eq!(mask(b"x", ""), b"x");
    }
}
