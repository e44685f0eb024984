//! Plan values: what one step would change on one host, and the commands that would do it.
//!
//! Built by the pure diff functions of `src/resource/`; rendered by `src/report/`; executed by
//! `src/run/`. Apply never branches on the human-readable `reason` or `details`.

use std::sync::Arc;

/// What a step would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Already in the desired state.
    NoOp,
    Create,
    Update,
    Delete,
    /// A command whose guard says it must run.
    Run,
    /// A check that runs on apply and changes nothing (`http_check`).
    Check,
    /// Not applied on this host (`when` is false).
    Skip,
    /// Cannot be probed before an earlier step of the plan has run (a tool it needs is not
    /// installed yet, ...): shown as "known after apply"; apply probes it again when it is reached.
    Deferred,
}

impl Action {
    /// The word used in plans, progress and JSON (the same everywhere).
    pub fn word(self) -> &'static str {
        match self {
            Action::NoOp => "ok",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "remove",
            Action::Run => "run",
            Action::Check => "check",
            Action::Skip => "skip",
            Action::Deferred => "known after apply",
        }
    }

    /// The one-character marker of a plan line.
    pub fn sigil(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Delete => "-",
            Action::Run => "!",
            Action::Check => "?",
            Action::Skip => " ",
            Action::Deferred => "*",
        }
    }

    /// Whether applying this action changes the host.
    pub fn changes(self) -> bool {
        !matches!(self, Action::NoOp | Action::Skip | Action::Check)
    }
}

/// One remote command: a POSIX sh script and the bytes fed to its stdin.
#[derive(Clone)]
pub struct Op {
    pub script: String,
    pub stdin: Arc<Vec<u8>>,
    /// A local command whose output is streamed to the script's stdin after `stdin`, in
    /// chunks, never held in memory as a whole (`docker save | gzip`: hundreds of MB).
    pub stdin_from: Option<LocalSource>,
    /// Show the command's output under the step (`command` with `output = true`).
    pub show_output: bool,
    /// Write the command's standard output to this file on the operator's machine (`fetch`):
    /// streamed into a temporary file beside it, renamed into place when the command succeeded.
    pub stdout_to: Option<LocalFile>,
    /// A firewall change the host rolls back by itself unless confirmed through a new SSH
    /// connection within `window` (the script prints `@fw-token\tTOKEN`). The protocol's
    /// scripts and messages are [`Confirm`]'s methods, in `resource/firewall/`.
    pub confirm: Option<Confirm>,
}

impl Op {
    /// A plain command: `script`, fed `stdin` (nothing streamed, output not shown or kept, no
    /// confirmation).
    pub fn new(script: String, stdin: Arc<Vec<u8>>) -> Self {
        Self {
            script,
            stdin,
            stdin_from: None,
            show_output: false,
            stdout_to: None,
            confirm: None,
        }
    }
}

/// See [`Op::confirm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub table: String,
    pub window: std::time::Duration,
}

/// A file on the operator's machine that receives a command's output (`fetch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub path: std::path::PathBuf,
    /// The sha256 the data must have (as probed on the host).
    pub sha256: String,
    /// Its size as probed on the host: the copy stops (and fails) past it.
    pub size: u64,
}

/// A pipeline of local commands run on the operator's machine (no shell): the standard output
/// of each feeds the next, the last one's is the stream. Every stage must exit with status 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSource {
    /// argv of each stage, in order.
    pub pipeline: Vec<Vec<String>>,
}

impl LocalSource {
    /// The pipeline as an operator would type it (for messages; arguments are not secret).
    pub fn display(&self) -> String {
        self.pipeline
            .iter()
            .map(|argv| argv.join(" "))
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // stdin may hold file contents (secrets); never print it.
        f.debug_struct("Op")
            .field("script", &self.script)
            .field("stdin_len", &self.stdin.len())
            .field("stdin_from", &self.stdin_from)
            .field("show_output", &self.show_output)
            .field("stdout_to", &self.stdout_to)
            .field("confirm", &self.confirm)
            .finish()
    }
}

/// A content change of a file, for showing a diff.
#[derive(Clone)]
pub struct ContentChange {
    pub path: String,
    /// sha256 of the current content; None when the file does not exist.
    pub old_sha256: Option<String>,
    pub new: Arc<Vec<u8>>,
    /// Hide the content in every output.
    pub sensitive: bool,
    /// Current content, fetched only to show a diff (never for a sensitive file).
    pub old: Option<Vec<u8>>,
    /// A sensitive env file (`NAME=value` lines): how each key changes, compared on the
    /// fetched current content, which is then dropped. Names only, never a value.
    pub keys: Option<Vec<(String, KeyState)>>,
}

/// How one key of a sensitive env file changes (see [`env_keys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Added,
    Changed,
    Unchanged,
    Removed,
}

impl KeyState {
    pub fn word(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Changed => "changed",
            Self::Unchanged => "unchanged",
            Self::Removed => "removed",
        }
    }
}

/// The `NAME=value` lines of an env file (blank lines, `#` comments and `export ` allowed; a
/// later line wins), or None when `data` is not one.
pub(crate) fn env_lines(data: &[u8]) -> Option<Vec<(&str, &[u8])>> {
    let text = std::str::from_utf8(data).ok()?;
    let mut out: Vec<(&str, &[u8])> = Vec::new();
    for line in text.lines() {
        let l = line.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        let (k, v) = l.split_once('=')?;
        crate::secret::check_name(k).ok()?;
        out.retain(|(n, _)| *n != k);
        out.push((k, v.as_bytes()));
    }
    Some(out)
}

/// How the keys of an env file change from `old` (None: the file does not exist) to `new`:
/// the keys of `new` in order, then the removed ones. None when either is not an env file.
pub(crate) fn env_keys(old: Option<&[u8]>, new: &[u8]) -> Option<Vec<(String, KeyState)>> {
    let new = env_lines(new)?;
    let old = match old {
        Some(o) => env_lines(o)?,
        None => Vec::new(),
    };
    let mut out: Vec<(String, KeyState)> = new
        .iter()
        .map(|(k, v)| {
            let state = match old.iter().find(|(o, _)| o == k) {
                None => KeyState::Added,
                Some((_, ov)) if ov == v => KeyState::Unchanged,
                Some(_) => KeyState::Changed,
            };
            (k.to_string(), state)
        })
        .collect();
    for (k, _) in &old {
        if !new.iter().any(|(n, _)| n == k) {
            out.push((k.to_string(), KeyState::Removed));
        }
    }
    Some(out)
}

impl std::fmt::Debug for ContentChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentChange")
            .field("path", &self.path)
            .field("old_sha256", &self.old_sha256)
            .finish_non_exhaustive()
    }
}

/// What one step would do on one host.
#[derive(Debug, Clone)]
pub struct Change {
    pub action: Action,
    /// What the step manages, for display (`/opt/demo`, `command: make install`).
    pub target: String,
    /// Attribute changes, e.g. `mode 0644 -> 0600`, for display only.
    pub details: Vec<String>,
    /// Why nothing (or something) happens, for display only.
    pub reason: String,
    /// Content diff for files and templates.
    pub content: Option<ContentChange>,
    /// The command that makes the change; None for NoOp and Skip.
    pub op: Option<Op>,
    /// Bytes this change uploads (checked against free disk space in the preflight).
    pub upload_bytes: u64,
    /// Directory that receives the upload.
    pub upload_dir: Option<String>,
    /// Things the operator should know even when nothing changes (a certificate that expires
    /// soon), shown in plans and apply output.
    pub warnings: Vec<String>,
    /// A path whose whole subtree the change removes or replaces (a directory deleted, a link
    /// or directory replaced with `force`): what later steps probed below it (possibly through
    /// a link) is gone afterwards, so they are probed again when reached.
    pub clears: Option<String>,
    /// The change only tidies up after an interrupted run (the private directory an upload
    /// cut short left): what the step manages is already as wanted, so its handlers are not
    /// notified.
    pub housekeeping: bool,
    /// Directories whose leftovers of interrupted uploads this change removes.
    pub tidies: Vec<String>,
}

impl Change {
    pub fn noop(target: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            action: Action::NoOp,
            target: target.into(),
            details: vec![],
            reason: reason.into(),
            content: None,
            op: None,
            upload_bytes: 0,
            upload_dir: None,
            warnings: vec![],
            clears: None,
            housekeeping: false,
            tidies: vec![],
        }
    }

    /// A step that cannot be probed until an earlier step has run; `why` says what is missing.
    pub fn deferred(target: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            action: Action::Deferred,
            ..Self::noop(target, why)
        }
    }

    pub fn skip(target: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            action: Action::Skip,
            ..Self::noop(target, reason)
        }
    }

    pub fn new(
        action: Action,
        target: impl Into<String>,
        reason: impl Into<String>,
        script: String,
    ) -> Self {
        Self {
            action,
            op: Some(Op::new(script, Arc::new(vec![]))),
            ..Self::noop(target, reason)
        }
    }
}

/// One step's entry in a host's plan.
#[derive(Debug, Clone)]
pub struct StepPlan {
    pub name: String,
    /// The step's kind, as written in the playbook (for display).
    pub kind: String,
    pub change: Change,
    /// A change by this step makes stale the probe answers of later steps that watch paths
    /// (the step kind says so: an image shipped is what a compose project runs).
    pub makes_watchers_stale: bool,
    pub notify: Vec<String>,
    /// What the step's command printed (`output = true`), secrets masked; set by apply.
    pub output: Option<String>,
    /// The step does not apply to this host: its `when` is false there (not: left out by the
    /// operator's selection). A rollout's health gate passes such a host.
    pub not_here: bool,
}

/// Everything that would happen on one host.
#[derive(Debug, Clone, Default)]
pub struct HostPlan {
    pub steps: Vec<StepPlan>,
    /// Handlers notified by an earlier run that did not get to run them (read from the
    /// target's journal); they run on this apply.
    pub pending_handlers: Vec<String>,
    /// Fingerprints of what this plan was based on, when a saved plan is written or applied
    /// (`src/saved_plan.rs`).
    pub probed: Option<Probed>,
}

/// Keyed fingerprints (hex) of the probe answers a host's plan was based on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probed {
    /// The host's facts (OS, architecture, init, Docker).
    pub facts: String,
    /// Per step, in plan order: what its probe answered (steps not probed have one too).
    pub steps: Vec<String>,
}

impl StepPlan {
    /// The step as JSON events and saved plans show it.
    pub fn json(&self) -> serde_json::Value {
        let c = &self.change;
        serde_json::json!({
            "name": self.name,
            "kind": self.kind,
            "action": c.action.word(),
            "target": c.target,
            "details": c.details,
            "reason": c.reason,
            "warnings": c.warnings,
        })
    }
}

impl HostPlan {
    /// The `plan` event of a host (JSON output; a saved plan's hosts are built from it).
    pub fn event(&self, host: &str) -> serde_json::Value {
        serde_json::json!({
            "event": "plan",
            "host": host,
            "changes": self.changes(),
            "steps": self.steps.iter().map(StepPlan::json).collect::<Vec<_>>(),
            "handlers": self.notified(),
            "pending_handlers": self.pending_handlers,
        })
    }

    /// Number of steps (and pending handlers) that would change something.
    pub fn changes(&self) -> usize {
        self.step_changes() + self.pending_handlers.len()
    }

    /// Number of steps that would change something.
    pub fn step_changes(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.change.action.changes())
            .count()
    }

    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.changes() == 0
    }

    /// Handlers that changed steps would notify, in notification order, without repeats.
    pub fn notified(&self) -> Vec<String> {
        let mut out: Vec<String> = self.pending_handlers.clone();
        for s in self.steps.iter().filter(|s| s.change.action.changes()) {
            for n in &s.notify {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
        }
        out
    }
}
