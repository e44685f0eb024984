//! JSON output: one event per line, each with `"schema"`, ending with a `summary` event.
//! The event shapes are built here (DTOs), not derived from internal types.

use crate::error::Error;
use crate::plan::{HostPlan, StepPlan};
use crate::run::{HostOutcome, Observer, StepStatus};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Mutex, PoisonError};

/// Version of the event format; bumped on incompatible changes.
pub const SCHEMA: u32 = 1;

/// Writes events to stdout, one per line, never interleaved.
#[derive(Default)]
pub struct Events {
    lock: Mutex<()>,
}

impl Events {
    pub fn emit(&self, mut v: Value) {
        if let Some(m) = v.as_object_mut() {
            m.insert("schema".into(), json!(SCHEMA));
        }
        let _g = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", super::terminal::json_safe(&v.to_string()));
        let _ = out.flush();
    }
}

fn host_json(o: &HostOutcome, apply: bool) -> Value {
    let (changed, ok, failed, skipped) = if apply {
        (
            o.count(StepStatus::Changed),
            o.count(StepStatus::Ok),
            o.count(StepStatus::Failed),
            o.count(StepStatus::Skipped),
        )
    } else {
        let p = o.plan.as_ref();
        let skipped = p.map_or(0, |p| {
            p.steps
                .iter()
                .filter(|s| s.change.action == crate::plan::Action::Skip)
                .count()
        });
        (
            p.map_or(0, HostPlan::changes),
            p.map_or(0, |p| p.steps.len() - p.step_changes() - skipped),
            0,
            skipped,
        )
    };
    json!({
        "host": o.name,
        "address": o.address,
        "state": o.state.word(),
        "changed": changed,
        "ok": ok,
        "failed": failed,
        "skipped": skipped,
        "handlers": o.handlers_run,
        "error": o.error,
        "failed_at": o.failed_at,
        "connections": o.stats.connections,
        "channels": o.stats.channels,
        "round_trips": o.stats.round_trips,
        "bytes_sent": o.stats.bytes_sent,
        "bytes_received": o.stats.bytes_received,
        "elapsed_ms": o.elapsed.as_millis() as u64,
        "connect_ms": o.connect_time.as_millis() as u64,
        "probe_ms": o.probe_time.as_millis() as u64,
        "apply_ms": o.apply_time.as_millis() as u64,
    })
}

/// The closing `summary` event.
pub fn summary_event(
    command: &str,
    outcomes: &[HostOutcome],
    elapsed: std::time::Duration,
) -> Value {
    let apply = command == "apply";
    let count = |w: &str| outcomes.iter().filter(|o| o.state.word() == w).count();
    json!({
        "event": "summary",
        "command": command,
        "hosts": outcomes.iter().map(|o| host_json(o, apply)).collect::<Vec<_>>(),
        "totals": {
            "ok": count("ok"), "changed": count("changed"), "failed": count("failed"),
            "unreachable": count("unreachable"), "not_started": count("not started"),
        },
        "elapsed_ms": elapsed.as_millis() as u64,
        "peak_rss_kb": crate::report::peak_rss_kb(),
        "cpu_ms": crate::report::cpu_time().as_millis() as u64,
    })
}

/// The `error` events of a command that failed before its report (none when the report already
/// told it: failed hosts are in the summary). An input error is one event per problem, with
/// `file`, `line` and `column` (null when the problem concerns the whole file or the column is
/// unknown); the others have only `kind` and `message`.
pub fn error_events(e: &Error) -> Vec<Value> {
    let pos = |n: usize| (n > 0).then_some(n);
    let kind = match e {
        Error::Config(c) => {
            return c
                .0
                .iter()
                .map(|c| {
                    json!({
                        "event": "error", "kind": "input", "file": c.file.display().to_string(),
                        "line": pos(c.line), "column": pos(c.col), "message": c.message,
                    })
                })
                .collect();
        }
        _ if !e.needs_report() => return Vec::new(),
        Error::Arguments(_) => "arguments",
        Error::Usage(_) => "usage",
        Error::Io(_) => "io",
        _ => "failed",
    };
    vec![json!({"event": "error", "kind": kind, "message": e.to_string().trim_end()})]
}

/// Streams step and host events while an apply runs.
pub struct JsonObserver {
    pub events: std::sync::Arc<Events>,
    pub apply: bool,
}

impl Observer for JsonObserver {
    fn host_key_learned(&self, host: &str, key: &str) {
        self.events
            .emit(json!({"event": "host_key_learned", "host": host, "key": key}));
    }

    fn lock_broken(&self, host: &str, holder: &str) {
        self.events
            .emit(json!({"event": "lock_broken", "host": host, "holder": holder}));
    }

    fn step(
        &self,
        host: &str,
        step: &StepPlan,
        status: StepStatus,
        error: Option<&str>,
        elapsed: std::time::Duration,
    ) {
        let mut v = step.json();
        let m = v.as_object_mut().expect("object");
        m.insert("event".into(), json!("step"));
        m.insert("host".into(), json!(host));
        m.insert("status".into(), json!(status.word()));
        m.insert("elapsed_ms".into(), json!(elapsed.as_millis() as u64));
        if let Some(out) = &step.output {
            m.insert("output".into(), json!(out));
        }
        if let Some(e) = error {
            m.insert("error".into(), json!(e));
        }
        self.events.emit(v);
    }

    fn handler(&self, host: &str, name: &str, status: StepStatus, error: Option<&str>) {
        self.events.emit(json!({"event": "handler", "host": host, "handler": name, "status": status.word(), "error": error}));
    }

    fn host_done(&self, o: &HostOutcome) {
        let mut v = host_json(o, self.apply);
        v.as_object_mut()
            .expect("object")
            .insert("event".into(), json!("host"));
        self.events.emit(v);
    }
}
