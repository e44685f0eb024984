//! Running one probe script ([`run_probe`]): its answer parsed, its errors masked and named
//! after the step whose record was bad.

use super::StepErr;
use super::mask::Mask;
use crate::fact::{ProbeError, ProbeScript};
use crate::remote::{Remote, RemoteError};
use std::time::Duration;

/// Runs a probe script and parses its answer; errors name the step whose record was bad.
/// `private`: it asks about a text a secret flowed into (it goes on stdin). Its errors are
/// masked with `mask`; a failure is described by its stderr only (its stdout holds the host's
/// secret files).
pub(super) async fn run_probe(
    remote: &Remote,
    probe: &ProbeScript,
    ids: &[Vec<usize>],
    names: &[&str],
    timeout: Duration,
    private: bool,
    mask: &Mask,
) -> Result<crate::fact::ProbeResult, StepErr> {
    let mut script = probe.script();
    if private {
        script = crate::remote::private(&script);
    }
    let out = remote
        .run(&script, &[], timeout)
        .await
        .map_err(|e| ("probe".to_string(), mask.error(e)))?;
    if !out.success() {
        return Err((
            "probe".into(),
            RemoteError::Failed(mask.text(&crate::remote::describe_failure_stderr(&out))),
        ));
    }
    probe
        .parse(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| {
            let at = match &e {
                ProbeError::Preflight(_) => "preflight".to_string(),
                ProbeError::Output {
                    request: Some(r), ..
                } => ids
                    .iter()
                    .position(|id| id.contains(r))
                    .map_or_else(|| "probe".to_string(), |i| names[i].to_string()),
                ProbeError::Output { request: None, .. } => "probe".to_string(),
            };
            (at, RemoteError::Failed(mask.text(&e.to_string())))
        })
}
