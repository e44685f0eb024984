//! One host's task: wait for its batch and a fork slot, connect, then `drive` it through the
//! run's phases on that one connection (see the numbered comments), and write the audit record.

use super::apply::{journal_record, secret_material, uses_secrets};
use super::audit::{audit_record, audit_script, audit_started};
use super::confirm::confirm_by_new_connection;
use super::diff::{check_space, fetch_old_contents, stale_after};
use super::mask::Mask;
use super::prepare::{full_context, render};
use super::probe::run_probe;
use super::{
    Ctx, Gate, HostOutcome, HostState, Mode, PlanSender, Prepared, StepErr, StepStatus, connect,
    failed,
};
use crate::fact::lock::LockState;
use crate::fact::{Observed, ProbeScript, Request, SecretState};
use crate::plan::{Change, HostPlan, StepPlan};
use crate::remote::{Remote, RemoteError};
use crate::resource::Desired;
use crate::secret::Secret;
use crate::ssh;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
    let name = p.host.name.clone();
    ctx.observer.phase(&name, "connecting");
    let remote = connect(
        &p.host,
        ctx.opts.become_password.clone(),
        ctx.opts.passphrases.as_ref(),
    )
    .await;
    // Host keys recorded under accept-new (this host's, its jump hosts', or a concurrent
    // host's): each reported once, whatever became of the connection.
    for (who, key) in ssh::take_learned_host_keys() {
        ctx.observer.host_key_learned(&who, &key);
    }
    let remote = match remote {
        Ok(r) => r,
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
            return o;
        }
    };
    o.connect_time = start.elapsed();
    let mut mask = None;
    let result = drive(ctx, &p, &remote, &mut o, permit, gate, start_rx, &mut mask).await;
    if let Err((at, e)) = result {
        // Every error of the host once more through the host's mask (the one of the operator
        // secrets and the sudo password before its own secrets were known).
        let mask = mask.unwrap_or_else(|| {
            let pw: Vec<(String, Secret)> = (ctx.opts.become_password.iter())
                .map(|pw| (String::new(), pw.clone()))
                .collect();
            Mask::new(&[p.playbook.operator_secrets.as_slice(), &pw].concat(), &[])
        });
        o.state = HostState::Failed;
        o.error = Some(mask.text(&e.to_string()));
        o.failed_at = Some(at);
    }
    if matches!(o.state, HostState::Failed | HostState::Unreachable) && !o.halted {
        ctx.count_failure();
    }
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
            &p,
            &o,
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
    o
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    ctx: &Ctx,
    p: &Prepared,
    remote: &Remote,
    o: &mut HostOutcome,
    permit: tokio::sync::SemaphorePermit<'_>,
    gate: Option<(Gate, PlanSender)>,
    batch_start: Option<watch::Receiver<Option<bool>>>,
    mask_out: &mut Option<Mask>,
) -> Result<(), StepErr> {
    let name = &p.host.name;
    let default_timeout = p.host.command_timeout;
    // 1. Probe: the host's facts, the handler journal, the secrets and every step's facts
    //    (as rendered with stand-ins) in one round trip.
    ctx.observer.phase(name, "probing");
    let probe_started = Instant::now();
    let mut probe = ProbeScript::for_host(&p.playbook.name);
    if let (Mode::Apply, Some(holder)) = (ctx.opts.mode, &ctx.opts.lock_holder) {
        probe.take_lock(holder, ctx.opts.force_unlock);
    }
    let ids: Vec<Vec<usize>> = p
        .steps
        .iter()
        .map(|s| {
            // Rescue steps are probed only when they are needed (after a failure).
            s.probe_desired
                .as_ref()
                .filter(|_| !s.step.rescue)
                .map(|d| d.probe(&mut probe))
                .unwrap_or_default()
        })
        .collect();
    let names: Vec<&str> = p.steps.iter().map(|s| s.step.name.as_str()).collect();
    // The sudo password and the operator secrets are known before the probe (the host's
    // secrets come with its answer): its errors are masked with them.
    let become_pw: Vec<(String, Secret)> = (ctx.opts.become_password.iter())
        .map(|pw| (String::new(), pw.clone()))
        .collect();
    let early = Mask::new(
        &[p.playbook.operator_secrets.as_slice(), &become_pw].concat(),
        &[],
    );
    let mut first = run_probe(remote, &probe, &ids, &names, default_timeout, false, &early).await?;
    // A run of this machine whose process is gone still holds the lock when the host's sshd
    // has not noticed its connection is lost (a cut link: until the running command ends, or
    // sshd's ClientAliveInterval). Its run cannot continue: break its lock (ending that dead
    // connection, as --force-unlock does) in one more round trip.
    if let (
        Some(LockState::Held {
            client: Some(c), ..
        }),
        Some(holder),
    ) = (&first.lock, &ctx.opts.lock_holder)
        && !probe.lock_forced()
        && crate::fact::lock::local_client_gone(c)
    {
        ctx.observer.phase(
            name,
            "taking over the lock of a lost run of this machine (its process is gone)",
        );
        probe.take_lock(holder, true);
        first = run_probe(remote, &probe, &ids, &names, default_timeout, false, &early).await?;
    }
    match &first.lock {
        None | Some(LockState::Taken) => {}
        Some(LockState::TakenFrom(who)) => ctx.observer.lock_broken(name, who),
        Some(LockState::Held { who, .. }) => {
            return Err(failed(
                "lock",
                format!(
                    "another apply holds this host: {who}; wait for it to end, or break the lock with --force-unlock"
                ),
            ));
        }
        Some(LockState::Error(why)) => {
            return Err(failed("lock", format!("cannot take the apply lock: {why}")));
        }
    }
    let facts = first.facts.clone().unwrap_or_default();
    facts.check_supported().map_err(|e| failed("facts", e))?;

    // 2. Secrets: read back, or generated now for the ones that do not exist yet.
    let mut secrets: Vec<(String, Secret)> = p.playbook.operator_secrets.clone();
    let mut generated: Vec<(String, Secret)> = Vec::new();
    for (s, id) in p.steps.iter().zip(&ids) {
        if let (Some(Desired::Secret(d)), [i, ..]) = (&s.probe_desired, id.as_slice()) {
            match &first.observed[*i] {
                Observed::Secret(SecretState::Present { value, .. }) => {
                    secrets.push((d.name.clone(), value.clone()))
                }
                Observed::Secret(SecretState::Missing { guarded: false }) => {
                    let v = d.generate().map_err(|e| failed(&s.step.name, e))?;
                    secrets.push((d.name.clone(), v.clone()));
                    generated.push((d.name.clone(), v));
                }
                // Guarded or blocked: the step's own error says why (before templates that
                // use the secret fail for want of it).
                Observed::Secret(obs) => {
                    if let Err(e) = d.diff(obs) {
                        return Err(failed(&s.step.name, e));
                    }
                }
                _ => {}
            }
        }
    }
    // The sudo password is masked too (a command's error text could echo it).
    let all_secrets = [secrets.as_slice(), &become_pw].concat();
    let mask = Mask::new(&all_secrets, &[]);
    // From here on, a script that holds a secret value goes to the host on stdin.
    remote.hide(mask.needles());
    *mask_out = Some(mask.clone());

    // 3. Render with the real facts and secrets; re-probe the steps whose questions changed.
    // (The full context lives only for the render: a fleet's contexts are not all kept.)
    let full = full_context(&p.base, &p.playbook.inventory, &facts, &secrets);
    let rendered = render(&p.steps, &p.playbook, &full, true);
    drop(full);
    let rendered = rendered.map_err(|es| {
        let (i, e) = &es[0];
        let at = names
            .get(*i)
            .map_or_else(|| "handlers".to_string(), |n| n.to_string());
        (at, RemoteError::Failed(mask.text(e)))
    })?;
    // Every text a secret flowed into is shown as its marker rendering from now on, and a
    // script holding one goes to the host on stdin (the steps it belongs to are private too).
    let mask = Mask::new(&all_secrets, &rendered.found);
    remote.hide(mask.needles());
    *mask_out = Some(mask.clone());
    let tainted: Vec<bool> = rendered.tainted.iter().map(|t| !t.is_empty()).collect();
    let mut desired: Vec<Option<Desired>> = Vec::new();
    let mut skip: Vec<String> = Vec::new();
    for r in rendered.steps {
        match r {
            Ok(mut d) => {
                if let Desired::Secret(sd) = &mut d {
                    sd.generated = generated
                        .iter()
                        .find(|(n, _)| *n == sd.name)
                        .map(|(_, v)| v.clone());
                }
                desired.push(Some(d));
                skip.push(String::new());
            }
            Err(reason) => {
                desired.push(None);
                skip.push(reason);
            }
        }
    }
    let mut observed: Vec<Option<Vec<Observed>>> = vec![None; p.steps.len()];
    let mut again = ProbeScript::default();
    let mut again_ids: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, d) in desired.iter().enumerate() {
        let Some(d) = d else { continue };
        if p.steps[i].step.rescue {
            continue;
        }
        let mut mine = ProbeScript::default();
        let want = d.probe(&mut mine);
        let asked: Vec<&Request> = ids[i].iter().map(|x| &probe.requests()[*x]).collect();
        let same = p.steps[i].probe_desired.is_some()
            && asked.len() == want.len()
            && want
                .iter()
                .zip(&asked)
                .all(|(w, a)| &mine.requests()[*w] == *a);
        if same {
            observed[i] = Some(ids[i].iter().map(|x| first.observed[*x].clone()).collect());
        } else {
            again_ids.push((i, d.probe(&mut again)));
        }
    }
    if !again_ids.is_empty() {
        let flat: Vec<Vec<usize>> = (0..p.steps.len())
            .map(|i| {
                again_ids
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect();
        let private = again_ids.iter().any(|(i, _)| tainted[*i]);
        let second = run_probe(
            remote,
            &again,
            &flat,
            &names,
            default_timeout,
            private,
            &mask,
        )
        .await?;
        for (i, v) in &again_ids {
            observed[*i] = Some(v.iter().map(|x| second.observed[*x].clone()).collect());
        }
    }

    // 4. Diff (pure).
    let mut plan = HostPlan {
        pending_handlers: first
            .journal
            .iter()
            .filter(|_| !p.playbook.task)
            .filter(|j| rendered.handlers.iter().any(|(h, _, _)| h == *j))
            .cloned()
            .collect(),
        ..HostPlan::default()
    };
    for (i, s) in p.steps.iter().enumerate() {
        let change = match (&desired[i], &observed[i]) {
            (Some(_), _) if s.step.rescue => {
                Change::skip(String::new(), "rescue: runs only if a step before it fails")
            }
            (Some(d), Some(obs)) => {
                let diffed = d.diff(&obs.iter().collect::<Vec<_>>());
                // An earlier change makes the answer stale: whatever it says now (even an
                // error, e.g. a file an earlier step creates), the step is probed again.
                let mut c = match (stale_after(d, &s.step, &plan), diffed) {
                    (Some(why), Ok(c)) => Change::deferred(c.target, why),
                    (Some(why), Err(_)) => Change::deferred(String::new(), why),
                    (None, diffed) => {
                        let mut c = diffed.map_err(|e| failed(&s.step.name, mask.text(&e)))?;
                        // The leftovers of interrupted uploads in a directory are removed by
                        // the first step that changes something there for them: a later step
                        // with nothing else to do is up to date.
                        if c.housekeeping
                            && c.tidies.iter().all(|d| {
                                (plan.steps.iter())
                                    .filter(|x| x.change.action.changes())
                                    .any(|x| x.change.tidies.contains(d))
                            })
                        {
                            let warnings = std::mem::take(&mut c.warnings);
                            c = Change::noop(
                                c.target,
                                "up to date (an earlier step removes the leftovers of an interrupted upload here)",
                            );
                            c.warnings = warnings;
                        }
                        if c.action == crate::plan::Action::Deferred
                            && !plan.steps.iter().any(|x| x.change.action.changes())
                        {
                            let unselected = if p.steps[..i]
                                .iter()
                                .any(|x| x.step.not_selected.is_some())
                            {
                                "; earlier steps not selected (--tags, --skip-tags, --step) do not run"
                            } else {
                                ""
                            };
                            return Err(failed(
                                &s.step.name,
                                mask.text(&format!(
                                    "{} (and no earlier step changes anything{unselected})",
                                    c.reason
                                )),
                            ));
                        }
                        c
                    }
                };
                mask.content(&mut c, s.names_secrets, &rendered.tainted[i]);
                c
            }
            _ => Change::skip(String::new(), skip[i].clone()),
        };
        // A housekeeping change (what the step manages is as wanted) notifies nobody.
        let notify = if change.housekeeping {
            vec![]
        } else {
            s.step.notify.clone()
        };
        plan.steps.push(StepPlan {
            name: s.step.name.clone(),
            kind: s.step.kind.clone(),
            change,
            notify,
            output: None,
        });
    }
    check_space(&probe, &first.preflight, &plan).map_err(|e| failed("preflight", e))?;
    if let Some(key) = &ctx.opts.fingerprint {
        plan.probed = Some(crate::saved_plan::probed(key, &facts, &observed));
    }
    if let Some(saved) = &ctx.opts.saved
        && let Err(why) = saved.check_host(name, &plan)
    {
        o.probe_time = probe_started.elapsed();
        o.plan = Some(plan);
        return Err(failed("drift", why));
    }
    // 5. Current contents of changed files, only to show diffs (one more round trip).
    if ctx.opts.fetch_diffs {
        fetch_old_contents(remote, &mut plan, default_timeout, &mask)
            .await
            .map_err(|e| ("diff".to_string(), mask.error(e)))?;
    }
    o.probe_time = probe_started.elapsed();
    o.plan = Some(plan.clone());
    if ctx.opts.mode == Mode::Plan {
        o.state = if plan.is_empty() {
            HostState::Ok
        } else {
            HostState::Changed
        };
        return Ok(());
    }
    // 6. Wait for the operator's decision when asked to.
    let wait_started = Instant::now();
    let _permit = if let Some((mut rx, tx)) = gate {
        drop(permit);
        let _ = tx.send((name.clone(), Some(plan.clone())));
        let decision = loop {
            if let Some(d) = *rx.borrow() {
                break d;
            }
            if rx.changed().await.is_err() {
                break false;
            }
        };
        if !decision {
            o.state = HostState::NotStarted;
            return Ok(());
        }
        // Then this host's batch (the connection stays open meanwhile; no fork slot is held).
        if let Some(rx) = batch_start
            && (!wait_start(rx).await || ctx.halted())
        {
            o.state = HostState::NotStarted;
            return Ok(());
        }
        ctx.sem.acquire().await.expect("semaphore is never closed")
    } else {
        permit
    };
    o.waited = wait_started.elapsed();
    // 7. Apply only the changes, in order; stop this host at the first failure. A step that
    //    notifies handlers first records them in the journal on the target (same command), so
    //    a failure later in the run does not lose them.
    let journal = crate::fact::host::journal_dir(&p.playbook.name);
    o.statuses = plan.steps.iter().map(|_| StepStatus::NotRun).collect();
    let mut changed = false;
    let mut notified: Vec<String> = plan.pending_handlers.clone();
    // A task with rescue steps: the first failure is kept, the remaining steps do not run and
    // the rescue steps do (probed now); the host is failed either way.
    let has_rescue = p.steps.iter().any(|s| s.step.rescue);
    let mut failure: Option<StepErr> = None;
    let mut rescued: Vec<String> = Vec::new();
    let mut rescue_ran = 0;
    let mut ran_any = false;
    // The `started` audit record, prepended to the first change (step or handler). A
    // subshell: whatever happens to the audit log, the step runs.
    let mut audit_started_done = false;
    let audit_prefix = || {
        let line = audit_started(
            p,
            ctx.opts.lock_holder.as_deref().unwrap_or(""),
            &ctx.run_id,
        );
        format!(
            "(\n{}\n) >/dev/null 2>&1 || true\n",
            audit_script(&line).trim_end()
        )
    };
    for i in 0..plan.steps.len() {
        let mut sp = plan.steps[i].clone();
        let rescue = p.steps[i].step.rescue;
        let runs_something =
            sp.change.op.is_some() || sp.change.action == crate::plan::Action::Deferred;
        if ctx.halted()
            && failure.is_none()
            && runs_something
            && sp.change.action != crate::plan::Action::Skip
        {
            // Other hosts used up the failure budget, or the operator interrupted: stop
            // before this step. A host that ran nothing yet has not started.
            o.halted = true;
            if !ran_any {
                o.state = HostState::NotStarted;
                o.error = Some(format!("not started: {}", ctx.halt_reason()));
                return Ok(());
            }
            o.state = HostState::Failed;
            return Err((
                sp.name.clone(),
                RemoteError::Failed(format!("stopped before this step: {}", ctx.halt_reason())),
            ));
        }
        if runs_something && sp.change.action != crate::plan::Action::Skip {
            ran_any = true;
        }
        if failure.is_some() != rescue {
            // Normal steps after a failure never run; rescue steps without one are skipped.
            if rescue {
                o.statuses[i] = StepStatus::Skipped;
            }
            continue;
        }
        let step_started = Instant::now();
        let timeout = p.steps[i].step.timeout.unwrap_or(default_timeout);
        let probe_now =
            sp.change.action == crate::plan::Action::Deferred || (rescue && desired[i].is_some());
        let mut result: Result<StepStatus, StepErr> = Ok(StepStatus::Ok);
        if probe_now {
            // Known after the earlier steps ran (or a rescue step): probe it now.
            let d = desired[i]
                .as_ref()
                .expect("a deferred step has a desired state");
            ctx.observer.phase(name, &format!("probing {}", sp.name));
            let mut one = ProbeScript::default();
            let rid = d.probe(&mut one);
            let mut per = vec![Vec::new(); p.steps.len()];
            per[i] = rid.clone();
            let change =
                match run_probe(remote, &one, &per, &names, timeout, tainted[i], &mask).await {
                    Ok(r) => d
                        .diff(&rid.iter().map(|x| &r.observed[*x]).collect::<Vec<_>>())
                        .map_err(|e| failed(&sp.name, mask.text(&e))),
                    Err(e) => Err(e),
                };
            match change {
                Ok(c) if c.action == crate::plan::Action::Deferred => {
                    result = Err(failed(
                        &sp.name,
                        mask.text(&format!(
                            "{} (still, after the earlier steps ran)",
                            c.reason
                        )),
                    ))
                }
                Ok(mut c) => {
                    mask.content(&mut c, p.steps[i].names_secrets, &rendered.tainted[i]);
                    if c.housekeeping {
                        sp.notify.clear();
                    }
                    sp.change = c;
                    if let Some(ps) = o.plan.as_mut() {
                        ps.steps[i] = sp.clone();
                    }
                }
                Err(e) => result = Err(e),
            }
        }
        if result.is_ok() {
            result = match (&sp.change.op, sp.change.action) {
                (_, crate::plan::Action::Skip) => Ok(StepStatus::Skipped),
                (None, _) => Ok(StepStatus::Ok),
                (Some(op), action) => {
                    ctx.observer
                        .phase(name, &format!("{} {}", action.word(), sp.name));
                    let mut script = String::new();
                    if action.changes() && !audit_started_done {
                        script.push_str(&audit_prefix());
                        audit_started_done = true;
                    }
                    // Only handlers that run on this host (their `when`) are journaled.
                    let notify: Vec<String> = sp
                        .notify
                        .iter()
                        .filter(|n| rendered.handlers.iter().any(|(h, _, _)| h == *n))
                        .cloned()
                        .collect();
                    if action.changes() && !notify.is_empty() {
                        script.push_str(&journal_record(&journal, &notify));
                    }
                    script.push_str(&op.script);
                    let private = secret_material(&p.steps[i].step, &sp.change) || tainted[i];
                    if private {
                        // Not on the command line either (`ps` on the host): on stdin.
                        script = crate::remote::private(&script);
                    }
                    if ctx.observer.wants_commands() {
                        let shown = (!private).then(|| mask.text(&op.script));
                        ctx.observer.command(
                            name,
                            &format!("step `{}`", sp.name),
                            shown.as_deref(),
                        );
                    }
                    let res = match (&op.stdin_from, &op.stdout_to) {
                        (_, Some(to)) => {
                            remote
                                .run_to_file(&script, &to.path, Some(&to.sha256), to.size, timeout)
                                .await
                        }
                        (None, None) => remote.run_op_ok(&script, &op.stdin, timeout).await,
                        (Some(src), None) => {
                            remote.run_stream_ok(&script, &op.stdin, src, timeout).await
                        }
                    };
                    // A firewall change stays only if a NEW connection can confirm it.
                    let res = match (res, &op.confirm) {
                        (Ok(out), Some(c)) => {
                            match confirm_by_new_connection(ctx, p, remote, c, &out, timeout).await
                            {
                                Ok(()) => Ok(out),
                                Err(e) => Err(RemoteError::Failed(e)),
                            }
                        }
                        (res, _) => res,
                    };
                    match res {
                        Ok(out) => {
                            if op.show_output {
                                sp.output = Some(mask.text(&out.stdout_shown(
                                    "; write the output to a file on the host to keep it all",
                                )));
                            }
                            if action == crate::plan::Action::Check {
                                // A passing check changes nothing.
                                Ok(StepStatus::Ok)
                            } else {
                                changed = true;
                                for n in &sp.notify {
                                    if !notified.contains(n) {
                                        notified.push(n.clone());
                                    }
                                }
                                Ok(StepStatus::Changed)
                            }
                        }
                        Err(e) => Err((sp.name.clone(), mask.error(e))),
                    }
                }
            };
        }
        match result {
            Ok(status) => {
                o.statuses[i] = status;
                if rescue && status != StepStatus::Skipped {
                    rescue_ran += 1;
                }
                if rescue && status == StepStatus::Changed {
                    rescued.push(sp.name.clone());
                }
                ctx.observer
                    .step(name, &sp, status, None, step_started.elapsed());
            }
            Err(e) => {
                o.statuses[i] = StepStatus::Failed;
                ctx.observer.step(
                    name,
                    &sp,
                    StepStatus::Failed,
                    Some(&mask.text(&e.1.to_string())),
                    step_started.elapsed(),
                );
                o.state = HostState::Failed;
                match failure.take() {
                    None if has_rescue && !rescue => failure = Some(e),
                    None => return Err(e),
                    Some((at, first)) => {
                        return Err((
                            at,
                            RemoteError::Failed(format!(
                                "{first}; then the rescue step `{}` failed too: {}",
                                e.0, e.1
                            )),
                        ));
                    }
                }
            }
        }
    }
    if let Some((at, e)) = failure {
        // Handlers wait in the journal for the next apply.
        o.state = HostState::Failed;
        let ran = if rescue_ran == 0 {
            "no rescue step applies to this host (`when`)".to_string()
        } else if rescued.is_empty() {
            "the rescue steps ran and changed nothing".to_string()
        } else {
            format!("the rescue steps ran: {}", rescued.join(", "))
        };
        return Err((at, RemoteError::Failed(format!("{e}; {ran}"))));
    }
    // 8. Handlers notified by changed steps (or pending from an earlier run), in the order
    //    they are declared; each removes its journal entry when it succeeded.
    for (hname, timeout, cmd) in rendered
        .handlers
        .iter()
        .filter(|(n, _, _)| notified.contains(n))
    {
        ctx.observer.phase(name, &format!("handler {hname}"));
        let secret = rendered.tainted_handlers.contains(hname)
            || (p.playbook.handlers.iter())
                .find(|h| &h.name == hname)
                .is_none_or(uses_secrets);
        if ctx.observer.wants_commands() {
            let shown = (!secret).then(|| mask.text(&cmd.script()));
            ctx.observer
                .command(name, &format!("handler `{hname}`"), shown.as_deref());
        }
        let marker = crate::quote::quote(&format!(
            "{journal}/{}",
            crate::fact::host::encode_name(hname)
        ));
        let mut script = String::new();
        if !audit_started_done {
            script.push_str(&audit_prefix());
            audit_started_done = true;
        }
        script.push_str(&format!(
            "( {}\n)\nrc=$?\n[ \"$rc\" -ne 0 ] || rm -f -- {marker}\nexit \"$rc\"\n",
            cmd.script()
        ));
        if secret {
            script = crate::remote::private(&script);
        }
        match remote
            .run_op_ok(&script, &[], timeout.unwrap_or(default_timeout))
            .await
        {
            Ok(_) => {
                changed = true;
                o.handlers_run.push(hname.clone());
                ctx.observer.handler(name, hname, StepStatus::Changed, None);
            }
            Err(e) => {
                let e = mask.error(e);
                ctx.observer
                    .handler(name, hname, StepStatus::Failed, Some(&e.to_string()));
                return Err((format!("handler {hname}"), e));
            }
        }
    }
    o.state = if changed {
        HostState::Changed
    } else {
        HostState::Ok
    };
    Ok(())
}
