//! The audit log of applies on a target: a `started` line written by the host's first change,
//! a `finished` line after the apply. Names only, never an error text or a value.

use super::{HostOutcome, Prepared, StepStatus};

/// Where the audit log of applies lives on a target.
pub(crate) const AUDIT_LOG: &str = "/var/log/claw-provision/audit.log";

/// One audit line (JSON): operator, playbook, task, result, changed steps and handlers, the
/// failed step. Never an error text or a value: names only, so no secret can reach it.
pub(super) fn audit_record(p: &Prepared, o: &HostOutcome, operator: &str, run: &str) -> String {
    let changed: Vec<&str> = o
        .plan
        .as_ref()
        .map(|pl| {
            pl.steps
                .iter()
                .zip(&o.statuses)
                .filter(|(_, st)| **st == StepStatus::Changed)
                .map(|(s, _)| s.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "event": "finished",
        "run": run,
        "operator": operator,
        "playbook": p.playbook.name,
        "playbook_file": p.playbook.path.display().to_string(),
        "result": o.state.word(),
        "changed": changed,
        "handlers": o.handlers_run,
        "failed_at": o.failed_at,
        "elapsed_ms": o.elapsed.as_millis() as u64,
    })
    .to_string()
}

/// The `started` audit line, written by the host's first change itself (the same command), so
/// a client that dies mid-apply still leaves a trace: a `started` record without its `finished`.
pub(super) fn audit_started(p: &Prepared, operator: &str, run: &str) -> String {
    serde_json::json!({
        "event": "started",
        "run": run,
        "operator": operator,
        "playbook": p.playbook.name,
        "playbook_file": p.playbook.path.display().to_string(),
    })
    .to_string()
}

/// Appends `line`, prefixed with the target's time, to the audit log (0600, root's).
pub(super) fn audit_script(line: &str) -> String {
    let dir = AUDIT_LOG.rsplit_once('/').map_or("/", |(d, _)| d);
    format!(
        r#"umask 077
mkdir -p -- {d} && printf '{{"time":"%s",%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" {rest} >> {f}
"#,
        d = crate::quote::quote(dir),
        rest = crate::quote::quote(line.strip_prefix('{').unwrap_or(line)),
        f = crate::quote::quote(AUDIT_LOG),
    )
}
