//! Why a plan file cannot be made ([`MakeError`]), read ([`ReadError`]) or applied to a host
//! whose state drifted ([`DriftError`]).

use super::{FORMAT, VERSION};

/// Why `plan --out FILE` writes no plan.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MakeError {
    #[error("host {host}: the plan has no fingerprints (bug)")]
    NoFingerprints { host: String },
    #[error("host {host}: the plan's steps do not match the playbook's (bug)")]
    StepsMismatch { host: String },
    #[error("host {host}: {source} (bug)")]
    Entry {
        host: String,
        source: serde_json::Error,
    },
    #[error("host(s) {} could not be planned (see the summary)", .hosts.join(", "))]
    NotPlanned { hosts: Vec<String> },
}

/// Why a plan file's text is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("`fingerprint_key`: not 64 hex digits")]
    BadKey,
    #[error("not a saved plan (JSON: {source})")]
    NotJson { source: serde_json::Error },
    #[error(
        "not a saved plan (no `\"format\": \"{FORMAT}\"`); make one with `claw-provision plan INVENTORY --out FILE`"
    )]
    NotAPlan,
    #[error(
        "plan format version {version} is not supported by this build (it reads version {VERSION}); plan again with this build"
    )]
    Version { version: u64 },
    #[error("`version`: missing or not a number")]
    NoVersion,
    /// The document does not have the plan file's fields.
    #[error(transparent)]
    Shape { source: serde_json::Error },
    /// `tool`: the build that made the plan.
    #[error(
        "made by claw-provision {tool}; this is {}: a plan is applied by the build that made it, plan again",
        crate::version::VERSION
    )]
    OtherBuild { tool: String },
    #[error("host {host}: changes but no steps")]
    ChangesWithoutSteps { host: String },
}

/// Why a host is not applied from the plan: it is not in it, or its state changed since.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DriftError {
    #[error("host {host} is not in the plan")]
    NotInPlan { host: String },
    #[error("no fingerprints were made (bug)")]
    NoFingerprints,
    /// `what`: each thing that changed (the facts, a step, the pending handlers).
    #[error(
        "the host changed since the plan: {}; nothing was changed on it: plan again",
        .what.join(", ")
    )]
    Changed { what: Vec<String> },
}
