//! Text output: plans with unified diffs, the summary table, the learned host keys block.

use crate::plan::{Action, ContentChange, HostPlan};
use crate::report::terminal::safe;
use crate::run::{HostOutcome, HostState, StepStatus};
use std::fmt::Write as _;

/// Colours (ANSI) when enabled.
#[derive(Clone, Copy)]
pub struct Paint(pub bool);

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn green(self, s: &str) -> String {
        self.wrap("32", s)
    }
    pub fn yellow(self, s: &str) -> String {
        self.wrap("33", s)
    }
    pub fn red(self, s: &str) -> String {
        self.wrap("31", s)
    }
    pub fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }
    pub(super) fn action(self, a: Action) -> String {
        let w = format!("{} {:<7}", a.sigil(), a.word());
        match a {
            Action::Create | Action::Run => self.green(&w),
            Action::Check => w,
            Action::Update | Action::Deferred => self.yellow(&w),
            Action::Delete => self.red(&w),
            Action::NoOp | Action::Skip => w,
        }
    }
}

/// Longest diff shown for one file, in lines.
const MAX_DIFF_LINES: usize = 300;

fn content_diff(c: &ContentChange, host: &str, out: &mut String, paint: Paint) {
    let indent = "      ";
    if c.sensitive {
        sensitive_diff(c, out, paint);
        return;
    }
    let new = String::from_utf8_lossy(&c.new);
    let old = match (&c.old_sha256, &c.old) {
        (None, _) => String::new(),
        (Some(_), Some(old)) => match std::str::from_utf8(old) {
            Ok(s) => s.to_string(),
            Err(_) => {
                let _ = writeln!(out, "{indent}(binary content changed)");
                return;
            }
        },
        (Some(sha), None) => {
            let _ = writeln!(
                out,
                "{indent}(content changed: sha256 {} -> {}; not shown)",
                &sha[..12],
                &crate::resource::file::sha256_hex(&c.new)[..12]
            );
            return;
        }
    };
    if std::str::from_utf8(&c.new).is_err() {
        let _ = writeln!(out, "{indent}(binary content, {} bytes)", c.new.len());
        return;
    }
    let diff = similar::TextDiff::from_lines(old.as_str(), new.as_ref());
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{} (on {host})", c.path),
            &format!("{} (desired)", c.path),
        )
        .to_string();
    for (n, line) in text.lines().enumerate() {
        let line = &*safe(line);
        if n == MAX_DIFF_LINES {
            let _ = writeln!(out, "{indent}… ({} more lines)", text.lines().count() - n);
            break;
        }
        let l = if line.starts_with('+') && !line.starts_with("+++") {
            paint.green(line)
        } else if line.starts_with('-') && !line.starts_with("---") {
            paint.red(line)
        } else {
            line.to_string()
        };
        let _ = writeln!(out, "{indent}{l}");
    }
    if !new.is_empty() && !new.ends_with('\n') {
        let _ = writeln!(out, "{indent}\\ No newline at end of file");
    }
}

/// A sensitive file: never its content. An env file (`NAME=value` lines) shows its key names,
/// each added, changed, unchanged or removed (compared on the fetched current content).
fn sensitive_diff(c: &ContentChange, out: &mut String, paint: Paint) {
    use crate::plan::KeyState;
    let indent = "      ";
    let keys = match (&c.keys, &c.old_sha256) {
        (Some(k), _) => Some(k.clone()),
        (None, None) => crate::plan::env_keys(None, &c.new),
        (None, Some(_)) => None,
    };
    let Some(keys) = keys else {
        match crate::plan::env_lines(&c.new) {
            Some(lines) if !lines.is_empty() => {
                let names: Vec<&str> = lines.iter().map(|(k, _)| *k).collect();
                let _ = writeln!(
                    out,
                    "{indent}(values hidden: sensitive; keys {}; changes not compared)",
                    names.join(", ")
                );
            }
            _ => {
                let _ = writeln!(out, "{indent}(content hidden: sensitive)");
            }
        }
        return;
    };
    let _ = writeln!(out, "{indent}(values hidden: sensitive)");
    for (k, state) in keys {
        let line = match state {
            KeyState::Added => paint.green(&format!("+ {k}  added")),
            KeyState::Changed => paint.yellow(&format!("~ {k}  changed")),
            KeyState::Unchanged => format!("  {k}  unchanged"),
            KeyState::Removed => paint.red(&format!("- {k}  removed")),
        };
        let _ = writeln!(out, "{indent}{line}");
    }
}

/// The plan of one host, as shown by `plan` and before a confirmed `apply`. The steps of a
/// host with nothing to change are listed only with `all` (`-v`).
pub fn plan(host: &str, address: &str, plan: &HostPlan, paint: Paint, all: bool) -> String {
    let mut out = String::new();
    let n = plan.changes();
    let mut summary = if n == 0 {
        "no changes".to_string()
    } else {
        format!("{n} to change")
    };
    let checks = plan
        .steps
        .iter()
        .filter(|s| s.change.action == Action::Check)
        .count();
    if checks > 0 {
        summary.push_str(&format!(
            ", {checks} check{} on apply",
            if checks == 1 { "" } else { "s" }
        ));
    }
    let _ = writeln!(out, "{} ({address}): {summary}", paint.bold(host));
    let warnings = || {
        let mut w = String::new();
        for s in plan.steps.iter().filter(|s| !s.change.warnings.is_empty()) {
            for x in &s.change.warnings {
                let _ = writeln!(
                    w,
                    "  {} {}",
                    paint.yellow("warning:"),
                    safe(&format!("{} `{}`: {x}", s.kind, s.name))
                );
            }
        }
        w
    };
    if n == 0 && !all {
        // Listing every `ok` step of every unchanged host buries the changes.
        out.push_str(&warnings());
        return out;
    }
    for s in &plan.steps {
        let c = &s.change;
        let what = match (c.action, c.target.is_empty()) {
            (Action::Skip, _) => format!("{} `{}` ({})", s.kind, s.name, c.reason),
            _ => {
                let mut w = format!("{} {}", s.kind, c.target);
                if !c.details.is_empty() {
                    w.push_str(&format!(": {}", c.details.join(", ")));
                }
                if matches!(
                    c.action,
                    Action::NoOp | Action::Run | Action::Check | Action::Deferred
                ) {
                    w.push_str(&format!(": {}", c.reason));
                }
                w
            }
        };
        let _ = writeln!(out, "  {} {}", paint.action(c.action), safe(&what));
        if c.action.changes()
            && let Some(cc) = &c.content
        {
            content_diff(cc, host, &mut out, paint);
        }
    }
    let notified = plan.notified();
    if !notified.is_empty() {
        let _ = writeln!(out, "  then handlers: {}", notified.join(", "));
    }
    if !plan.pending_handlers.is_empty() {
        let _ = writeln!(
            out,
            "  (pending from an earlier run that did not finish: {})",
            plan.pending_handlers.join(", ")
        );
    }
    out.push_str(&warnings());
    out
}

/// The width of the HOST column.
fn name_width(outcomes: &[HostOutcome]) -> usize {
    outcomes
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(4)
        .max(4)
}

/// Which steps a `--tags`/`--skip-tags`/`--step` filter selected, before a run.
pub fn selection(sel: &crate::select::Selection) -> String {
    let names = |v: &[String]| {
        v.iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let total = sel.selected.len() + sel.not_selected.len();
    let mut out = format!(
        "selected {} of {total} steps ({})",
        sel.selected.len(),
        sel.filter
    );
    if !sel.not_selected.is_empty() {
        let _ = write!(out, "; not selected: {}", names(&sel.not_selected));
    }
    out.push('\n');
    for (name, why) in &sel.kept {
        let _ = writeln!(out, "  `{name}` runs anyway: {why}");
    }
    out
}

/// `-q`: one line for the whole run, then the errors.
pub fn summary_quiet(outcomes: &[HostOutcome], apply: bool, paint: Paint) -> String {
    let mut out = String::new();
    let count = |s: HostState| outcomes.iter().filter(|o| o.state == s).count();
    let mut parts = Vec::new();
    for s in [
        HostState::Ok,
        HostState::Changed,
        HostState::Failed,
        HostState::Unreachable,
        HostState::NotStarted,
    ] {
        let n = count(s);
        if n > 0 {
            parts.push(format!("{n} {}", s.word()));
        }
    }
    let steps: usize = outcomes
        .iter()
        .map(|o| {
            if apply {
                o.count(StepStatus::Changed)
            } else {
                o.plan.as_ref().map_or(0, HostPlan::changes)
            }
        })
        .sum();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let _ = writeln!(
        out,
        "{}: {} host{}: {}; {steps} {}",
        if apply { "apply" } else { "plan" },
        outcomes.len(),
        plural(outcomes.len()),
        parts.join(", "),
        if apply {
            format!("step{} changed", plural(steps))
        } else {
            format!("change{} pending", plural(steps))
        }
    );
    out.push_str(&errors(outcomes, paint));
    out
}

/// The error line of every host that has one.
fn errors(outcomes: &[HostOutcome], paint: Paint) -> String {
    let mut out = String::new();
    for o in outcomes {
        if let Some(e) = &o.error {
            let at = o
                .failed_at
                .as_deref()
                .map(|a| format!(" at {a}"))
                .unwrap_or_default();
            let label = if o.state == HostState::NotStarted {
                "not started:".to_string()
            } else {
                paint.red("error:")
            };
            let _ = writeln!(
                out,
                "{label} {}",
                safe(&format!("{} ({}){at}: {e}", o.name, o.address))
            );
        }
    }
    out
}

/// One line per host: state, counts, time.
pub fn summary(outcomes: &[HostOutcome], apply: bool, paint: Paint) -> String {
    let mut out = String::new();
    let width = name_width(outcomes);
    let _ = writeln!(
        out,
        "\n{:<width$}  {:<11}  {:>7}  {:>7}  {:>6}  {:>7}",
        "HOST", "STATE", "CHANGED", "OK", "FAILED", "TIME"
    );
    for o in outcomes {
        let (changed, ok, failed) = if apply {
            (
                o.count(StepStatus::Changed),
                o.count(StepStatus::Ok),
                o.count(StepStatus::Failed),
            )
        } else {
            let p = o.plan.as_ref();
            (
                p.map_or(0, HostPlan::changes),
                p.map_or(0, |p| p.steps.len() - p.step_changes()),
                0,
            )
        };
        let state = format!("{:<11}", o.state.word());
        let state = match o.state {
            HostState::Ok => paint.green(&state),
            HostState::Changed => paint.yellow(&state),
            HostState::Failed | HostState::Unreachable => paint.red(&state),
            HostState::NotStarted => state,
        };
        let _ = writeln!(
            out,
            "{:<width$}  {state}  {changed:>7}  {ok:>7}  {failed:>6}  {:>6.1}s",
            o.name,
            o.elapsed.as_secs_f64()
        );
    }
    out.push_str(&errors(outcomes, paint));
    out
}

/// `--stats`: the cost of the run, per host and in total.
pub fn stats(outcomes: &[HostOutcome], wall: std::time::Duration) -> String {
    let mut out = String::new();
    let width = name_width(outcomes);
    let _ = writeln!(
        out,
        "\n{:<width$}  {:>5}  {:>5}  {:>5}  {:>9}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}",
        "HOST", "CONN", "CHAN", "RT", "SENT", "RECEIVED", "CONNECT", "PROBE", "APPLY", "TOTAL"
    );
    let ms = |d: std::time::Duration| format!("{}ms", d.as_millis());
    for o in outcomes {
        let _ = writeln!(
            out,
            "{:<width$}  {:>5}  {:>5}  {:>5}  {:>9}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}",
            o.name,
            o.stats.connections,
            o.stats.channels,
            o.stats.round_trips,
            o.stats.bytes_sent,
            o.stats.bytes_received,
            ms(o.connect_time),
            ms(o.probe_time),
            ms(o.apply_time),
            ms(o.elapsed),
        );
    }
    let _ = writeln!(
        out,
        "run: {} hosts, wall {:.3}s, cpu {}ms, peak memory {:.1} MiB",
        outcomes.len(),
        wall.as_secs_f64(),
        super::cpu_time().as_millis(),
        super::peak_rss_kb() as f64 / 1024.0
    );
    out
}

/// The block that lists host keys recorded under accept-new, sorted by `order`.
pub fn learned_keys(keys: &mut [(String, String)], order: &[String]) -> String {
    if keys.is_empty() {
        return String::new();
    }
    keys.sort_by_key(|(h, k)| (order.iter().position(|o| o == h), k.clone()));
    let width = keys.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
    let mut out = format!(
        "\nNew host keys recorded in known_hosts (accept-new), {} in all; compare them with \
         the hosts' own (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub):\n",
        keys.len()
    );
    for (h, k) in keys.iter() {
        let _ = writeln!(out, "  {h:<width$}  {k}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Change, StepPlan};

    fn step(name: &str, change: Change) -> StepPlan {
        StepPlan {
            name: name.into(),
            kind: "file".into(),
            makes_watchers_stale: false,
            change,
            notify: vec![],
            output: None,
            not_here: false,
        }
    }

    #[test]
    fn selection_line_names_what_does_not_run() {
        let sel = crate::select::Selection {
            filter: "--tags web".into(),
            selected: vec!["token".into(), "web config".into()],
            not_selected: vec!["db config".into()],
            kept: vec![("token".into(), "a secret step")],
        };
        assert_eq!(
            selection(&sel),
            "selected 2 of 3 steps (--tags web); not selected: `db config`\n  `token` runs anyway: a secret step\n"
        );
    }

    #[test]
    fn unchanged_hosts_list_their_steps_only_when_verbose() {
        let p = HostPlan {
            steps: vec![
                step("motd", Change::noop("/etc/motd", "up to date")),
                step("db", Change::skip("", "not selected: no tag of --tags web")),
            ],
            ..HostPlan::default()
        };
        let normal = plan("h1", "10.0.0.1", &p, Paint(false), false);
        assert_eq!(normal, "h1 (10.0.0.1): no changes\n");
        let all = plan("h1", "10.0.0.1", &p, Paint(false), true);
        assert_eq!(
            all,
            "h1 (10.0.0.1): no changes\n    ok      file /etc/motd: up to date\n    skip    file `db` (not selected: no tag of --tags web)\n"
        );
    }

    #[test]
    fn quiet_summary_is_one_line_and_the_errors() {
        let mut a = HostOutcome::new("h1".into(), "10.0.0.1".into());
        a.state = HostState::Changed;
        a.statuses = vec![StepStatus::Changed, StepStatus::Ok, StepStatus::Changed];
        let mut b = HostOutcome::new("h2".into(), "10.0.0.2".into());
        b.state = HostState::Unreachable;
        b.error = Some("connection refused".into());
        b.failed_at = Some("connect".into());
        let c = HostOutcome::new("h3".into(), "10.0.0.3".into());
        assert_eq!(
            summary_quiet(&[a, b, c], true, Paint(false)),
            "apply: 3 hosts: 1 changed, 1 unreachable, 1 not started; 2 steps changed\nerror: h2 (10.0.0.2) at connect: connection refused\n"
        );
        let mut d = HostOutcome::new("h1".into(), "10.0.0.1".into());
        d.state = HostState::Changed;
        d.plan = Some(HostPlan {
            steps: vec![step("motd", Change::deferred("/etc/motd", "later"))],
            ..HostPlan::default()
        });
        assert_eq!(
            summary_quiet(&[d], false, Paint(false)),
            "plan: 1 host: 1 changed; 1 change pending\n"
        );
    }

    #[test]
    fn host_text_in_diffs_is_escaped() {
        let c = ContentChange {
            path: "/opt/motd".into(),
            old_sha256: Some("ab".repeat(32)),
            new: std::sync::Arc::new(b"clean\n".to_vec()),
            sensitive: false,
            old: Some(b"a\x1b[2Jb\n\x1b]52;c;eA==\x07\n\xc2\x9b1m\n\xe2\x80\xaeexe\n".to_vec()),
            keys: None,
        };
        for paint in [Paint(false), Paint(true)] {
            let mut out = String::new();
            content_diff(&c, "h1", &mut out, paint);
            let raw: String = out
                .replace("\x1b[31m", "")
                .replace("\x1b[32m", "")
                .replace("\x1b[0m", "");
            assert!(
                !raw.contains(['\x1b', '\x07', '\u{9b}', '\u{202e}']),
                "{out:?}"
            );
            for e in [
                "-a\\x1b[2Jb",
                "\\x1b]52;c;eA==\\x07",
                "-\\u{9b}1m",
                "-\\u{202e}exe",
            ] {
                assert!(out.contains(e), "{e} in {out}");
            }
        }
    }

    fn env_change(old: Option<&[u8]>, new: &[u8], fetched: bool) -> ContentChange {
        ContentChange {
            path: "/opt/app/.env".into(),
            old_sha256: old.map(|_| "ab".repeat(32)),
            new: std::sync::Arc::new(new.to_vec()),
            sensitive: true,
            old: None,
            keys: old
                .filter(|_| fetched)
                .and_then(|o| crate::plan::env_keys(Some(o), new)),
        }
    }

    #[test]
    fn env_diffs_show_key_names_and_states_never_values() {
        let old = b"# app\nA='a-old-value'\nB=b-same-value\nGONE=gone-value\n";
        let new = b"# app\nA='a-new-value'\nB=b-same-value\nexport NEW=new-value\n";
        let mut out = String::new();
        content_diff(
            &env_change(Some(old), new, true),
            "h1",
            &mut out,
            Paint(false),
        );
        assert_eq!(
            out,
            "      (values hidden: sensitive)\n      ~ A  changed\n        B  unchanged\n      + NEW  added\n      - GONE  removed\n"
        );
        // A new file: every key added.
        let mut out = String::new();
        content_diff(&env_change(None, new, true), "h1", &mut out, Paint(false));
        assert_eq!(
            out,
            "      (values hidden: sensitive)\n      + A  added\n      + B  added\n      + NEW  added\n"
        );
        // Current content not fetched: names only.
        let mut out = String::new();
        content_diff(
            &env_change(Some(old), new, false),
            "h1",
            &mut out,
            Paint(false),
        );
        assert_eq!(
            out,
            "      (values hidden: sensitive; keys A, B, NEW; changes not compared)\n"
        );
        // Not an env file: nothing at all.
        let mut out = String::new();
        let pem = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n";
        content_diff(&env_change(None, pem, true), "h1", &mut out, Paint(false));
        assert_eq!(out, "      (content hidden: sensitive)\n");
        for v in [
            "a-old-value",
            "a-new-value",
            "b-same-value",
            "gone-value",
            "new-value",
        ] {
            assert!(!out.contains(v));
        }
    }
}
