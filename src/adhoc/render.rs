//! The text and JSON rendering of ad-hoc results: each host's block (whole or live), the closing
//! table and the `host` and `summary` events. Host-supplied text is shown [`safe`].

use super::HostResult;
use crate::report::terminal::safe;
use crate::ssh::ExecOutput;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;

/// What to do to see a host's whole output (in the line that says what was not kept).
const ALL_OUTPUT_HINT: &str =
    "; --output-dir DIR keeps each host's whole output, --output-limit SIZE shows more";

/// A host's block of text output: a header line, its stdout, then its stderr (marked).
/// Host-supplied text is shown [`safe`].
pub(crate) fn text_block(r: &HostResult) -> String {
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
pub(crate) fn live_header(name: &str, address: &str) -> String {
    format!("==> {name} ({address}): running\n")
}

/// The end of a live host's block: what its stdout kept after the part shown live (when
/// bytes were dropped), its stderr, and a closing line with its result.
pub(crate) fn live_end(r: &HostResult, printed_newline: bool) -> String {
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
pub(crate) fn text_summary(results: &[HostResult], table: bool) -> String {
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
pub(crate) fn host_event(r: &HostResult) -> Value {
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
pub(crate) fn summary_event(results: &[HostResult], elapsed: Duration) -> Value {
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
    use super::super::Failure;
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
}
