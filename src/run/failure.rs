//! Why a host failed during a run: [`HostFailure`] (where, and a [`StepFailure`] saying what),
//! the error of the apply layer; its text is what the run reports for the host.

use super::confirm::ConfirmError;
use crate::fact::ProbeError;
use crate::remote::RemoteError;
use crate::resource::StepError;
use crate::saved_plan::DriftError;

/// A host's failure: where (a step's name, or a phase: `probe`, `lock`, `preflight`, `drift`,
/// `diff`, `handler NAME`, ...) and what.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub(super) struct HostFailure {
    pub(super) at: String,
    pub(super) error: StepFailure,
}

impl HostFailure {
    /// A failure at `at`.
    pub(super) fn new(at: impl Into<String>, error: impl Into<StepFailure>) -> Self {
        Self {
            at: at.into(),
            error: error.into(),
        }
    }
}

/// What failed on a host. Texts a host's secrets may reach are masked when shown (the host's
/// mask), string fields already when built.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepFailure {
    /// A remote command (a probe, a step's change, a handler, fetching current contents).
    #[error("{0}")]
    Remote(#[from] RemoteError),
    /// A step that cannot proceed (its secret cannot be generated, what its probe found).
    #[error("{0}")]
    Step(#[from] StepError),
    /// A probe answer that is not what was expected.
    #[error("{0}")]
    Probe(#[from] ProbeError),
    /// A probe script that did not succeed: its stderr described (`probe::probe_failure`).
    #[error("{why}")]
    ProbeFailed { why: String },
    /// Another run holds the host's apply lock: who.
    #[error(
        "another apply holds this host: {who}; wait for it to end, or break the lock with --force-unlock"
    )]
    LockHeld { who: String },
    /// The apply lock cannot be taken: the lock script's reason.
    #[error("cannot take the apply lock: {why}")]
    Lock { why: String },
    /// The uploads do not fit on the host's file systems.
    #[error("{0}")]
    NoSpace(#[from] NoSpace),
    /// The plan made now differs from the saved plan (`apply --plan`).
    #[error("{0}")]
    Drift(#[from] DriftError),
    /// A step or handler that does not render with the host's facts and secrets: the
    /// renderer's message.
    #[error("{why}")]
    Render { why: String },
    /// A value this step takes from another host cannot be had: why (naming that host).
    #[error("{why}")]
    Source { why: String },
    /// The host lacks what the step's kind needs (`resource::kind::unmet_need`).
    #[error("{why}")]
    Unmet { why: String },
    /// A step known only after earlier steps ran, when none of them changes anything: why it
    /// was deferred; `unselected`: earlier steps are not selected.
    #[error("{reason} (and no earlier step changes anything{})", unselected_note(*.unselected))]
    NeverKnown { reason: String, unselected: bool },
    /// A deferred step probed again after the earlier steps ran, still not known: why.
    #[error("{reason} (still, after the earlier steps ran)")]
    StillDeferred { reason: String },
    /// A firewall change that no new connection confirmed.
    #[error("{0}")]
    Confirm(#[from] ConfirmError),
    /// The run stopped (failure budget, interrupt) before the step: why.
    #[error("stopped before this step: {reason}")]
    Stopped { reason: &'static str },
    /// A step failed and no rescue step changed that: the failure, then what the rescue did.
    #[error("{first}; {rescue}")]
    NotRescued {
        first: Box<StepFailure>,
        rescue: Rescue,
    },
    /// A step failed, then the rescue step `step` failed too.
    #[error("{first}; then the rescue step `{step}` failed too: {then}")]
    RescueFailed {
        first: Box<StepFailure>,
        step: String,
        then: Box<StepFailure>,
    },
}

fn unselected_note(unselected: bool) -> &'static str {
    if unselected {
        "; earlier steps not selected (--tags, --skip-tags, --step) do not run"
    } else {
        ""
    }
}

/// What the rescue steps did after a failure they did not make good.
#[derive(Debug, thiserror::Error)]
pub(super) enum Rescue {
    #[error("no rescue step applies to this host (`when`)")]
    NoneApplies,
    #[error("the rescue steps ran and changed nothing")]
    NothingChanged,
    /// The rescue steps that changed something.
    #[error("the rescue steps ran: {}", .0.join(", "))]
    Ran(Vec<String>),
}

/// Uploads that do not fit on one of the target's file systems.
#[derive(Debug, thiserror::Error)]
#[error(
    "not enough disk space for the uploads into {dir}: {need_kib} KiB needed, {free_kib} KiB free"
)]
pub(super) struct NoSpace {
    pub(super) dir: String,
    /// What the uploads need, with a margin of 1 MiB.
    pub(super) need_kib: u64,
    pub(super) free_kib: u64,
}
