//! One host's task: wait for its batch and a fork slot, connect, then [`HostRun::drive`] it
//! through the run's phases, each a function of its own:
//! 1. [`HostRun::probe`] (`probe.rs`): the host's facts, the handler journal, the secrets and
//!    every step's facts in one round trip; the apply lock is taken with it;
//! 2. [`HostRun::secrets`] (`probe.rs`): read back, or generated for the ones missing;
//! 3. [`HostRun::render`] (`probe.rs`): with the real facts and secrets; the steps whose
//!    questions changed are probed again;
//! 4. [`HostRun::diff`] (`diff.rs`): the plan (pure), checked against the disk space and a
//!    saved plan;
//! 5. [`HostRun::fetch_diffs`] (`diff.rs`): the current contents of changed files, to show;
//! 6. [`HostRun::decide`] (here): the operator's decision and the host's batch;
//! 7. [`HostRun::apply_steps`] (`apply.rs`): only the changes, in order;
//! 8. [`HostRun::run_handlers`] (`apply.rs`): the handlers notified;
//!
//! then the audit record and the session's figures ([`finish`]).

use super::audit::{audit_record, audit_script};
use super::failure::HostFailure;
use super::mask::Mask;
use super::prepare::Rendered;
use super::{Ctx, Gate, HostOutcome, HostState, Mode, PlanSender, Prepared};
use crate::connect::connect;
use crate::fact::{Observed, ProbeScript};
use crate::plan::HostPlan;
use crate::remote::Remote;
use crate::resource::Desired;
use crate::secret::Secret;
use std::time::{Duration, Instant};
use tokio::sync::{SemaphorePermit, watch};

/// Waits for a batch's start signal: true = go, false (or the run ended) = do not start.
async fn wait_start(mut rx: watch::Receiver<Option<bool>>) -> bool {
    loop {
        if let Some(d) = *rx.borrow() {
            return d;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

pub(super) async fn host_task(
    ctx: &Ctx,
    p: Prepared,
    gate: Option<(Gate, PlanSender)>,
    start_rx: watch::Receiver<Option<bool>>,
) -> HostOutcome {
    let mut o = HostOutcome::new(p.host.name.clone(), p.host.address.clone());
    // Without a confirmation, a host of a later batch is not even connected to before its
    // batch starts; with one, every host is probed for the plan first (see `drive`).
    let start_rx = if gate.is_none() {
        if !wait_start(start_rx).await || ctx.halted() {
            return o;
        }
        None
    } else {
        Some(start_rx)
    };
    let start = Instant::now();
    let permit = ctx.sem.acquire().await.expect("semaphore is never closed");
    if ctx.halted() {
        o.error = Some(format!("not started: {}", ctx.halt_reason()));
        return o;
    }
    let Some(remote) = open(ctx, &p, &mut o, start).await else {
        return o;
    };
    o.connect_time = start.elapsed();
    let mut run = HostRun::new(ctx, &p, &remote);
    let result = run.drive(&mut o, permit, gate, start_rx).await;
    if let Err(HostFailure { at, error }) = result {
        // Every error of the host through the host's mask (the one of the operator secrets and
        // the sudo password before its own secrets were known): the texts built in the phases
        // are masked already, the errors they hold (`StepFailure`) here.
        let mask = run
            .mask
            .lock()
            .expect("not poisoned")
            .take()
            .unwrap_or_else(|| {
                let pw: Vec<(String, Secret)> = (ctx.opts.become_password.iter())
                    .map(|pw| (String::new(), pw.clone()))
                    .collect();
                Mask::new(&[p.playbook.operator_secrets.as_slice(), &pw].concat(), &[])
            });
        o.state = HostState::Failed;
        o.error = Some(mask.text(&error.to_string()));
        o.failed_at = Some(at);
    }
    if matches!(o.state, HostState::Failed | HostState::Unreachable) && !o.halted {
        ctx.count_failure();
    }
    finish(ctx, &p, remote, &mut o, start).await;
    o
}

/// Connects to the host; None when it cannot (the outcome says why, and counts as a failure).
async fn open(ctx: &Ctx, p: &Prepared, o: &mut HostOutcome, start: Instant) -> Option<Remote> {
    ctx.observer.phase(&p.host.name, "connecting");
    let remote = connect(&p.host, ctx.opts.become_password.clone(), &ctx.opts.ssh).await;
    // Host keys recorded under accept-new (this host's, its jump hosts', or a concurrent
    // host's): each reported once, whatever became of the connection.
    for (who, key) in ctx.opts.ssh.take_learned_host_keys() {
        ctx.observer.host_key_learned(&who, &key);
    }
    match remote {
        Ok(r) => Some(r),
        Err(e) => {
            o.state = if e.is_unreachable() {
                HostState::Unreachable
            } else {
                HostState::Failed
            };
            o.error = Some(e.to_string());
            o.failed_at = Some("connect".into());
            o.elapsed = start.elapsed();
            ctx.count_failure();
            None
        }
    }
}

/// The end of a host: the audit record, the session's figures, the connection closed and the
/// times.
async fn finish(ctx: &Ctx, p: &Prepared, remote: Remote, o: &mut HostOutcome, start: Instant) {
    // The audit record: after an apply that changed something or failed once it held the
    // lock (best effort: a lost connection cannot write it).
    let audited = match o.state {
        HostState::Changed => true,
        HostState::Failed => !matches!(
            o.failed_at.as_deref(),
            Some("lock" | "facts" | "probe" | "drift")
        ),
        _ => false,
    };
    o.elapsed = start.elapsed();
    if ctx.opts.mode == Mode::Apply && audited && !remote.session.is_closed() {
        let line = audit_record(
            p,
            o,
            ctx.opts.lock_holder.as_deref().unwrap_or(""),
            &ctx.run_id,
        );
        let _ = remote
            .run_ok(&audit_script(&line), &[], Duration::from_secs(30))
            .await;
    }
    o.stats = remote.session.stats();
    remote.session.close().await;
    o.elapsed = start.elapsed();
    if ctx.opts.mode == Mode::Apply && !o.probe_time.is_zero() {
        o.apply_time = o
            .elapsed
            .saturating_sub(o.connect_time + o.probe_time + o.waited);
    }
}

/// What the phases of one host share: the run, the host, its connection.
pub(super) struct HostRun<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) p: &'a Prepared,
    pub(super) remote: &'a Remote,
    /// The host's name.
    pub(super) name: &'a str,
    /// The steps' names (what a probe error names).
    pub(super) names: Vec<&'a str>,
    /// The host's `command_timeout`.
    pub(super) default_timeout: Duration,
    /// The host's mask once its secrets are known (phase 2; phase 3 adds what they flowed into,
    /// an apply's late render the values generated on other hosts).
    pub(super) mask: std::sync::Mutex<Option<Mask>>,
}

/// What phase 1 found.
pub(super) struct Probed {
    /// When the probe started (the probe time ends after the diffs' contents were fetched).
    pub(super) started: Instant,
    /// The first probe's questions.
    pub(super) probe: ProbeScript,
    /// Per step: its requests in the first probe.
    pub(super) ids: Vec<Vec<usize>>,
    /// The first probe's answer.
    pub(super) first: crate::fact::ProbeResult,
    pub(super) facts: crate::fact::HostFacts,
    /// The sudo password as a secret without a name (shown as `********`).
    pub(super) become_pw: Vec<(String, Secret)>,
}

/// What phase 2 found.
pub(super) struct HostSecrets {
    /// The operator's secrets and the host's.
    pub(super) secrets: Vec<(String, Secret)>,
    /// The host's secrets generated in this run (the `secret` steps write them).
    pub(super) generated: Vec<(String, Secret)>,
    /// The values taken from other hosts.
    pub(super) taken: super::cross::taken::Taken,
    /// `secrets` and the sudo password: what the mask hides.
    pub(super) all: Vec<(String, Secret)>,
    /// The mask of `all` (the render's errors are masked with it).
    pub(super) mask: Mask,
}

/// What phase 3 found: every step as rendered with the host's facts and secrets, and what the
/// host answered about it.
pub(super) struct Known {
    pub(super) mask: Mask,
    /// The handlers and taint of the render (its steps are taken into `desired` and `skip`).
    pub(super) rendered: Rendered,
    /// Per step: a secret flowed into its rendering (its scripts go on stdin, never shown).
    pub(super) tainted: Vec<bool>,
    /// Per step: its desired state, or None when it is skipped (for `skip`'s reason).
    pub(super) desired: Vec<Option<Desired>>,
    pub(super) skip: Vec<String>,
    /// Per step: the host's answers (None: not probed).
    pub(super) observed: Vec<Option<Vec<Observed>>>,
    /// Per step: why it is known only after another host's apply (a value generated there
    /// flows into it).
    pub(super) awaits: Vec<Option<String>>,
    /// Per step: what a saved plan binds of the value it takes from another host.
    pub(super) received: Vec<Option<Vec<u8>>>,
    /// What an apply needs to render again once those values exist (None: none is pending).
    pub(super) late: Option<Box<super::cross::taken::Late>>,
}

impl<'a> HostRun<'a> {
    fn new(ctx: &'a Ctx, p: &'a Prepared, remote: &'a Remote) -> Self {
        Self {
            ctx,
            p,
            remote,
            name: &p.host.name,
            names: p.steps.iter().map(|s| s.step.name.as_str()).collect(),
            default_timeout: p.host.command_timeout,
            mask: std::sync::Mutex::new(None),
        }
    }

    /// The host's mask from now on; a script holding what it hides goes to the host on stdin.
    pub(super) fn set_mask(&self, mask: &Mask) {
        self.remote.hide(mask.needles());
        *self.mask.lock().expect("not poisoned") = Some(mask.clone());
    }

    /// The host's phases, in order (see the module's documentation).
    async fn drive(
        &mut self,
        o: &mut HostOutcome,
        permit: SemaphorePermit<'a>,
        gate: Option<(Gate, PlanSender)>,
        batch_start: Option<watch::Receiver<Option<bool>>>,
    ) -> Result<(), HostFailure> {
        let probed = self.probe().await?;
        let secrets = self.secrets(&probed).await?;
        let known = self.render(&probed, &secrets).await?;
        let mut plan = self.diff(o, &probed, &known)?;
        self.fetch_diffs(&mut plan, &known.mask).await?;
        o.probe_time = probed.started.elapsed();
        o.plan = Some(plan.clone());
        if self.ctx.opts.mode == Mode::Plan {
            o.state = if plan.is_empty() {
                HostState::Ok
            } else {
                HostState::Changed
            };
            return Ok(());
        }
        let wait_started = Instant::now();
        let Some(_permit) = self.decide(&plan, permit, gate, batch_start).await else {
            o.state = HostState::NotStarted;
            return Ok(());
        };
        o.waited = wait_started.elapsed();
        let Some(applied) = self.apply_steps(o, &plan, known).await? else {
            return Ok(());
        };
        self.run_handlers(o, applied).await
    }

    /// 6. Wait for the operator's decision when asked to, then for this host's batch: the fork
    ///    slot to apply with, None when the host does not go on.
    async fn decide(
        &self,
        plan: &HostPlan,
        permit: SemaphorePermit<'a>,
        gate: Option<(Gate, PlanSender)>,
        batch_start: Option<watch::Receiver<Option<bool>>>,
    ) -> Option<SemaphorePermit<'a>> {
        let Some((mut rx, tx)) = gate else {
            return Some(permit);
        };
        drop(permit);
        let _ = tx.send((self.name.to_string(), Some(plan.clone())));
        let decision = loop {
            if let Some(d) = *rx.borrow() {
                break d;
            }
            if rx.changed().await.is_err() {
                break false;
            }
        };
        if !decision {
            return None;
        }
        // Then this host's batch (the connection stays open meanwhile; no fork slot is held).
        if let Some(rx) = batch_start
            && (!wait_start(rx).await || self.ctx.halted())
        {
            return None;
        }
        Some(
            self.ctx
                .sem
                .acquire()
                .await
                .expect("semaphore is never closed"),
        )
    }
}
