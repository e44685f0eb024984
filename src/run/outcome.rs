//! What a run tells about each host: the state words, the steps' statuses, the outcome that
//! reports and saved plans read, and the [`Observer`] of events while the run goes.

use crate::plan::{HostPlan, StepPlan};
use crate::ssh::SessionStats;
use std::time::Duration;

/// The state of a host at the end of a run (the same words everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    Ok,
    Changed,
    Failed,
    Unreachable,
    NotStarted,
}

impl HostState {
    pub fn word(self) -> &'static str {
        match self {
            HostState::Ok => "ok",
            HostState::Changed => "changed",
            HostState::Failed => "failed",
            HostState::Unreachable => "unreachable",
            HostState::NotStarted => "not started",
        }
    }
}

/// What happened to one step during apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Ok,
    Changed,
    Failed,
    Skipped,
    /// Not reached because an earlier step failed.
    NotRun,
}

impl StepStatus {
    pub fn word(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::Changed => "changed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::NotRun => "not run",
        }
    }
}

/// Where hosts send their plan (Some) before waiting at the gate, and None when they end.
pub(crate) type PlanSender = tokio::sync::mpsc::UnboundedSender<(String, Option<HostPlan>)>;

/// Sends the end marker of a host to the confirmation gate when dropped.
pub(super) struct EndGuard(pub(super) Option<(PlanSender, String)>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        if let Some((tx, name)) = self.0.take() {
            let _ = tx.send((name, None));
        }
    }
}

/// Everything known about one host after the run.
#[derive(Debug, Clone)]
pub struct HostOutcome {
    pub name: String,
    pub address: String,
    pub state: HostState,
    pub plan: Option<HostPlan>,
    /// Per step of the plan (apply only).
    pub statuses: Vec<StepStatus>,
    /// Handlers that ran.
    pub handlers_run: Vec<String>,
    pub error: Option<String>,
    /// The step (or phase: `connect`, `probe`) where the error happened.
    pub failed_at: Option<String>,
    pub stats: SessionStats,
    pub elapsed: Duration,
    /// Stopped by the rollout (other hosts exceeded `max_fail`), not by a failure of its own.
    pub halted: bool,
    /// Time spent connecting (TCP, key exchange, authentication).
    pub connect_time: Duration,
    /// Time from the connection to the diff (the probes; content fetched for diffs).
    pub probe_time: Duration,
    /// Time applying changes and handlers (the audit record included).
    pub apply_time: Duration,
    /// Time waiting for the operator's answer or the host's batch after the plan.
    pub waited: Duration,
}

impl HostOutcome {
    /// A host that has not started.
    pub fn new(name: String, address: String) -> Self {
        Self {
            name,
            address,
            state: HostState::NotStarted,
            plan: None,
            statuses: vec![],
            handlers_run: vec![],
            error: None,
            failed_at: None,
            stats: SessionStats::default(),
            elapsed: Duration::ZERO,
            halted: false,
            connect_time: Duration::ZERO,
            probe_time: Duration::ZERO,
            apply_time: Duration::ZERO,
            waited: Duration::ZERO,
        }
    }

    pub fn count(&self, s: StepStatus) -> usize {
        self.statuses.iter().filter(|x| **x == s).count()
    }
}

/// Events a run reports while it goes (progress lines, JSON events).
pub(crate) trait Observer: Send + Sync {
    fn phase(&self, _host: &str, _phase: &str) {}
    /// A step of apply ended, after `elapsed` (probing it again included).
    fn step(
        &self,
        _host: &str,
        _step: &StepPlan,
        _status: StepStatus,
        _error: Option<&str>,
        _elapsed: Duration,
    ) {
    }
    /// Whether [`Observer::command`] is wanted (the runner masks scripts only then).
    fn wants_commands(&self) -> bool {
        false
    }
    /// The script a step or handler (`what`: "step `NAME`", "handler `NAME`") of apply is
    /// about to run on the host (under `sh -c`), secret values masked; None when it is not
    /// shown because it handles secrets (see `secret_material`).
    fn command(&self, _host: &str, _what: &str, _script: Option<&str>) {}
    fn handler(&self, _host: &str, _name: &str, _status: StepStatus, _error: Option<&str>) {}
    fn host_done(&self, _outcome: &HostOutcome) {}
    /// A host key was recorded in known_hosts (accept-new): `ADDRESS:PORT ALGORITHM SHA256:...`.
    fn host_key_learned(&self, _host: &str, _key: &str) {}
    /// The apply lock of `host` was taken by ending the run that held it (`--force-unlock`, or
    /// a lost run of this machine): that run's description.
    fn lock_broken(&self, _host: &str, _holder: &str) {}
}
