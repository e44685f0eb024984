//! The firewall's confirm-or-revert: a changed ruleset stays only if a NEW connection to the
//! host can confirm it before the host's timer puts the previous one back.

use super::{Ctx, Prepared};
use crate::connect::connect;
use crate::remote::Remote;
use std::time::{Duration, Instant};

/// Why a firewall change was not kept.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConfirmError {
    /// The applied script printed no usable rollback token (`Confirm::token`'s reason).
    #[error("{0}")]
    NoToken(String),
    /// No new connection confirmed the change in time: why, and what the rollback check found
    /// (`Confirm::failure`).
    #[error("{message}")]
    NotConfirmed { message: String },
}

/// Confirms a firewall change through a new SSH connection to the host (the proof that the
/// new ruleset still lets the operator in). If none can be made in time, the host's timer puts
/// the previous ruleset back: this waits for that, checks it through the old connection, and
/// returns the failure to report.
pub(super) async fn confirm_by_new_connection(
    ctx: &Ctx,
    p: &Prepared,
    remote: &Remote,
    c: &crate::plan::Confirm,
    out: &crate::ssh::ExecOutput,
    timeout: Duration,
) -> Result<(), ConfirmError> {
    let started = Instant::now();
    let token = c
        .token(&out.stdout_lossy())
        .map_err(|e| ConfirmError::NoToken(e.to_string()))?;
    // Leave the host's timer a margin: a confirmation must land before it fires.
    let budget = c.window.saturating_sub(Duration::from_secs(2));
    // A slow connection is still a proof: it may take the whole window (a busy host or client
    // can need more than the inventory's connect_timeout for one handshake).
    let mut host = p.host.clone();
    host.connect_timeout = budget;
    let attempt = async {
        let r2 = connect(&host, ctx.opts.become_password.clone(), &ctx.opts.ssh)
            .await
            .map_err(|e| e.to_string())?;
        let res = r2
            .run_ok(&c.confirm_script(&token), &[], timeout)
            .await
            .map_err(|e| e.to_string());
        r2.session.close().await;
        res.map(|o| o.stdout_lossy().trim().to_string())
    };
    let why = match tokio::time::timeout(budget, attempt).await {
        Ok(Ok(answer)) if c.confirmed(&answer) => return Ok(()),
        Ok(Ok(_)) => "the confirmation came too late".to_string(),
        Ok(Err(e)) => format!("a new SSH connection failed: {e}"),
        Err(_) => format!("no new SSH connection within {} s", budget.as_secs()),
    };
    // The timer fires `window` after the change: wait for it, then look through the old
    // connection (established connections survive a ruleset that blocks new ones).
    tokio::time::sleep((c.window + Duration::from_secs(3)).saturating_sub(started.elapsed())).await;
    let rollback = remote
        .run_ok(&c.rolled_back_script(&token), &[], timeout)
        .await
        .map(|o| o.stdout_lossy().trim().to_string())
        .map_err(|e| e.to_string());
    Err(ConfirmError::NotConfirmed {
        message: c.failure(&why, rollback.as_deref().map_err(String::as_str)),
    })
}
