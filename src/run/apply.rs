//! Phases 7–8 of a host: apply only the changes, in order (a step known only after the
//! earlier ones ran probed first; a rescue step after a failure), then the handlers notified.
//! Also which scripts may carry secret material ([`secret_material`]) and the journal of
//! notified handlers on the host.

use super::audit::{audit_script, audit_started};
use super::confirm::confirm_by_new_connection;
use super::cross::Role;
use super::cross::exchange::Answer;
use super::failure::{HostFailure, Rescue, StepFailure};
use super::host::{HostRun, Known};
use super::prepare::uses_secrets;
use super::probe::run_probe;
use super::{HostOutcome, HostState, StepStatus};
use crate::fact::ProbeScript;
use crate::plan::{Change, HostPlan, Op, StepPlan};
use crate::playbook::Step;
use crate::ssh::ExecOutput;
use std::time::Instant;

/// Phase 7's state while it goes through the steps, and what it leaves for phase 8.
pub(super) struct Applying {
    /// What phase 3 found (replaced by the late render once the values generated on other
    /// hosts exist: `cross::take`).
    known: std::sync::Arc<Known>,
    /// The handler journal's directory on the host.
    journal: String,
    /// A task with rescue steps: the first failure is kept, the remaining steps do not run and
    /// the rescue steps do (probed now); the host is failed either way.
    has_rescue: bool,
    /// The first failure of a task with rescue steps.
    failure: Option<HostFailure>,
    /// The rescue steps that changed something.
    rescued: Vec<String>,
    /// The rescue steps that applied to the host (their `when`).
    rescue_ran: usize,
    /// A step that runs something was reached.
    ran_any: bool,
    /// A step or handler changed something.
    changed: bool,
    /// The handlers to run: pending from an earlier apply, or notified by a changed step.
    notified: Vec<String>,
    /// The `started` audit record went with an earlier change.
    audit_started_done: bool,
}

impl HostRun<'_> {
    /// 7. Apply only the changes, in order; stop this host at the first failure. A step that
    ///    notifies handlers first records them in the journal on the target (same command), so
    ///    a failure later in the run does not lose them. None: the host stopped before it ran
    ///    anything (it has not started).
    pub(super) async fn apply_steps(
        &self,
        o: &mut HostOutcome,
        plan: &HostPlan,
        known: Known,
    ) -> Result<Option<Applying>, HostFailure> {
        let (ctx, p) = (self.ctx, self.p);
        o.statuses = plan.steps.iter().map(|_| StepStatus::NotRun).collect();
        let mut run = Applying {
            known: std::sync::Arc::new(known),
            journal: crate::fact::host::journal_dir(&p.playbook.name),
            has_rescue: p.steps.iter().any(|s| s.step.rescue),
            failure: None,
            rescued: Vec::new(),
            rescue_ran: 0,
            ran_any: false,
            changed: false,
            notified: plan.pending_handlers.clone(),
            audit_started_done: false,
        };
        for i in 0..plan.steps.len() {
            let mut sp = plan.steps[i].clone();
            let rescue = p.steps[i].step.rescue;
            let runs_something =
                sp.change.op.is_some() || sp.change.action == crate::plan::Action::Deferred;
            if ctx.halted()
                && run.failure.is_none()
                && runs_something
                && sp.change.action != crate::plan::Action::Skip
            {
                // Other hosts used up the failure budget, or the operator interrupted: stop
                // before this step. A host that ran nothing yet has not started.
                o.halted = true;
                if !run.ran_any {
                    o.state = HostState::NotStarted;
                    o.error = Some(format!("not started: {}", ctx.halt_reason()));
                    return Ok(None);
                }
                o.state = HostState::Failed;
                let reason = ctx.halt_reason();
                return Err(HostFailure::new(&sp.name, StepFailure::Stopped { reason }));
            }
            if runs_something && sp.change.action != crate::plan::Action::Skip {
                run.ran_any = true;
            }
            if run.failure.is_some() != rescue {
                // Normal steps after a failure never run; rescue steps without one are skipped.
                if rescue {
                    o.statuses[i] = StepStatus::Skipped;
                }
                continue;
            }
            let step_started = Instant::now();
            let result = self.apply_step(o, i, &mut sp, &mut run).await;
            self.step_ended(o, i, &sp, result, step_started, &mut run)?;
        }
        if let Some(HostFailure { at, error }) = run.failure {
            // Handlers wait in the journal for the next apply.
            o.state = HostState::Failed;
            let rescue = if run.rescue_ran == 0 {
                Rescue::NoneApplies
            } else if run.rescued.is_empty() {
                Rescue::NothingChanged
            } else {
                Rescue::Ran(run.rescued)
            };
            let first = Box::new(error);
            return Err(HostFailure::new(
                at,
                StepFailure::NotRescued { first, rescue },
            ));
        }
        Ok(Some(run))
    }

    /// Step `i` (its plan `sp`): probed first when it is known only after the earlier steps
    /// ran (or is a rescue step), then its change, if any.
    async fn apply_step(
        &self,
        o: &mut HostOutcome,
        i: usize,
        sp: &mut StepPlan,
        run: &mut Applying,
    ) -> Result<StepStatus, HostFailure> {
        if run.known.awaits[i].is_some() && run.known.late.is_some() {
            // A value generated on another host flows into this step: wait for it (and stop
            // here if the run was halted meanwhile).
            run.known = std::sync::Arc::new(self.late_render(&run.known).await?);
            if self.ctx.halted() {
                o.halted = true;
                let reason = self.ctx.halt_reason();
                return Err(HostFailure::new(&sp.name, StepFailure::Stopped { reason }));
            }
        }
        let known = run.known.clone();
        let mask = &known.mask;
        let rescue = self.p.steps[i].step.rescue;
        let probe_now = sp.change.action == crate::plan::Action::Deferred
            || (rescue && known.desired[i].is_some());
        if probe_now {
            self.probe_deferred(o, i, sp, &known).await?;
        }
        match (&sp.change.op, sp.change.action) {
            (_, crate::plan::Action::Skip) => Ok(StepStatus::Skipped),
            (None, _) => Ok(StepStatus::Ok),
            (Some(op), action) => match self.run_op(i, sp, op, run).await {
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
                        self.gives(i, &known, action);
                        run.changed = true;
                        for n in &sp.notify {
                            if !run.notified.contains(n) {
                                run.notified.push(n.clone());
                            }
                        }
                        Ok(StepStatus::Changed)
                    }
                }
                Err(StepFailure::Remote(e)) => Err(HostFailure::new(&sp.name, mask.error(e))),
                Err(e) => Err(HostFailure::new(&sp.name, e)),
            },
        }
    }

    /// Step `i` changed (`action`): a value generated here that other hosts take is published
    /// to them once its file was created (an update of a present secret keeps the value read,
    /// published already).
    fn gives(&self, i: usize, known: &Known, action: crate::plan::Action) {
        use crate::resource::Desired;
        if let (Some(Role::Source), Some(Desired::Secret(d)), crate::plan::Action::Create) = (
            self.p.playbook.links.role(i, self.name),
            &known.desired[i],
            action,
        ) && let Some(value) = &d.generated
        {
            let (value, from) = (value.clone(), self.name.to_string());
            (self.ctx.exchange).publish(i, Answer::Stored { value, from });
        }
    }

    /// Step `i`, probed again, found its secret's file present: if other hosts take it, that
    /// value is theirs (whatever phase 2 read or generated).
    fn gives_present(&self, i: usize, observed: &crate::fact::Observed) {
        use crate::fact::{Observed, SecretState};
        if let (Some(Role::Source), Observed::Secret(SecretState::Present { value, .. })) =
            (self.p.playbook.links.role(i, self.name), observed)
        {
            let (value, from) = (value.clone(), self.name.to_string());
            (self.ctx.exchange).publish(i, Answer::Stored { value, from });
        }
    }

    /// Known after the earlier steps ran (or a rescue step): probes step `i` now, and puts its
    /// change in `sp` and the host's plan.
    async fn probe_deferred(
        &self,
        o: &mut HostOutcome,
        i: usize,
        sp: &mut StepPlan,
        known: &Known,
    ) -> Result<(), HostFailure> {
        let mask = &known.mask;
        let timeout = self.p.steps[i].step.timeout.unwrap_or(self.default_timeout);
        let d = known.desired[i]
            .as_ref()
            .expect("a deferred step has a desired state");
        self.ctx
            .observer
            .phase(self.name, &format!("probing {}", sp.name));
        let mut one = ProbeScript::default();
        let rid = d.probe(&mut one);
        let mut per = vec![Vec::new(); self.p.steps.len()];
        per[i] = rid.clone();
        let (remote, names, private) = (self.remote, &self.names, known.tainted[i]);
        let change = match run_probe(remote, &one, &per, names, timeout, private, mask).await {
            Ok(r) => {
                if let Some(first) = rid.first() {
                    self.gives_present(i, &r.observed[*first]);
                }
                d.diff(&rid.iter().map(|x| &r.observed[*x]).collect::<Vec<_>>())
                    .map_err(|e| HostFailure::new(&sp.name, e))
            }
            Err(e) => Err(e),
        };
        match change {
            Ok(c) if c.action == crate::plan::Action::Deferred => Err(HostFailure::new(
                &sp.name,
                StepFailure::StillDeferred {
                    reason: mask.text(&c.reason),
                },
            )),
            Ok(mut c) => {
                mask.content(
                    &mut c,
                    self.p.steps[i].names_secrets,
                    &known.rendered.tainted[i],
                );
                if c.housekeeping {
                    sp.notify.clear();
                }
                sp.change = c;
                if let Some(ps) = o.plan.as_mut() {
                    ps.steps[i] = sp.clone();
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs the operation `op` of step `i` (its plan `sp`), with the `started` audit record
    /// and the journal of the handlers it notifies before it; a firewall change stays only if
    /// a NEW connection can confirm it.
    async fn run_op(
        &self,
        i: usize,
        sp: &StepPlan,
        op: &Op,
        run: &mut Applying,
    ) -> Result<ExecOutput, StepFailure> {
        let (ctx, name, remote, known) = (self.ctx, self.name, self.remote, run.known.clone());
        let action = sp.change.action;
        let timeout = self.p.steps[i].step.timeout.unwrap_or(self.default_timeout);
        ctx.observer
            .phase(name, &format!("{} {}", action.word(), sp.name));
        let mut script = String::new();
        if action.changes() && !run.audit_started_done {
            script.push_str(&self.audit_prefix());
            run.audit_started_done = true;
        }
        // Only handlers that run on this host (their `when`) are journaled.
        let notify: Vec<String> = sp
            .notify
            .iter()
            .filter(|n| known.rendered.handlers.iter().any(|(h, _, _)| h == *n))
            .cloned()
            .collect();
        if action.changes() && !notify.is_empty() {
            script.push_str(&journal_record(&run.journal, &notify));
        }
        script.push_str(&op.script);
        let private = secret_material(&self.p.steps[i].step, &sp.change) || known.tainted[i];
        if private {
            // Not on the command line either (`ps` on the host): on stdin.
            script = crate::remote::private(&script);
        }
        if ctx.observer.wants_commands() {
            let shown = (!private).then(|| known.mask.text(&op.script));
            ctx.observer
                .command(name, &format!("step `{}`", sp.name), shown.as_deref());
        }
        let res = match (&op.stdin_from, &op.stdout_to) {
            (_, Some(to)) => {
                remote
                    .run_to_file(&script, &to.path, Some(&to.sha256), to.size, timeout)
                    .await
            }
            (None, None) => remote.run_op_ok(&script, &op.stdin, timeout).await,
            (Some(src), None) => remote.run_stream_ok(&script, &op.stdin, src, timeout).await,
        };
        // A firewall change stays only if a NEW connection can confirm it.
        match (res, &op.confirm) {
            (Ok(out), Some(c)) => {
                confirm_by_new_connection(ctx, self.p, remote, c, &out, timeout).await?;
                Ok(out)
            }
            (res, _) => Ok(res?),
        }
    }

    /// Records how step `i` (its plan `sp`) ended, started at `started`; the error to stop the
    /// host with (a failure, unless a rescue step is left to run).
    // The phases share `HostFailure` (large: a `RemoteError`, a `StepError` inside); only a
    // failure builds one.
    #[allow(clippy::result_large_err)]
    fn step_ended(
        &self,
        o: &mut HostOutcome,
        i: usize,
        sp: &StepPlan,
        result: Result<StepStatus, HostFailure>,
        started: Instant,
        run: &mut Applying,
    ) -> Result<(), HostFailure> {
        let (name, rescue) = (self.name, self.p.steps[i].step.rescue);
        match result {
            Ok(status) => {
                o.statuses[i] = status;
                if rescue && status != StepStatus::Skipped {
                    run.rescue_ran += 1;
                }
                if rescue && status == StepStatus::Changed {
                    run.rescued.push(sp.name.clone());
                }
                self.ctx
                    .observer
                    .step(name, sp, status, None, started.elapsed());
            }
            Err(e) => {
                o.statuses[i] = StepStatus::Failed;
                self.ctx.observer.step(
                    name,
                    sp,
                    StepStatus::Failed,
                    Some(&run.known.mask.text(&e.error.to_string())),
                    started.elapsed(),
                );
                o.state = HostState::Failed;
                match run.failure.take() {
                    None if run.has_rescue && !rescue => run.failure = Some(e),
                    None => return Err(e),
                    Some(HostFailure { at, error: first }) => {
                        let rescue_failed = StepFailure::RescueFailed {
                            first: Box::new(first),
                            step: e.at,
                            then: Box::new(e.error),
                        };
                        return Err(HostFailure::new(at, rescue_failed));
                    }
                }
            }
        }
        Ok(())
    }

    /// 8. Handlers notified by changed steps (or pending from an earlier run), in the order
    ///    they are declared; each removes its journal entry when it succeeded.
    pub(super) async fn run_handlers(
        &self,
        o: &mut HostOutcome,
        mut run: Applying,
    ) -> Result<(), HostFailure> {
        if run.known.late.is_some() && !run.notified.is_empty() {
            // The handlers too are rendered with the values generated on other hosts.
            run.known = std::sync::Arc::new(self.late_render(&run.known).await?);
        }
        let (ctx, p, name, known) = (self.ctx, self.p, self.name, run.known.clone());
        let (mask, journal) = (&known.mask, &run.journal);
        for (hname, timeout, cmd) in
            (known.rendered.handlers.iter()).filter(|(n, _, _)| run.notified.contains(n))
        {
            ctx.observer.phase(name, &format!("handler {hname}"));
            let secret = known.rendered.tainted_handlers.contains(hname)
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
            if !run.audit_started_done {
                script.push_str(&self.audit_prefix());
                run.audit_started_done = true;
            }
            script.push_str(&format!(
                "( {}\n)\nrc=$?\n[ \"$rc\" -ne 0 ] || rm -f -- {marker}\nexit \"$rc\"\n",
                cmd.script()
            ));
            if secret {
                script = crate::remote::private(&script);
            }
            match (self.remote)
                .run_op_ok(&script, &[], timeout.unwrap_or(self.default_timeout))
                .await
            {
                Ok(_) => {
                    run.changed = true;
                    o.handlers_run.push(hname.clone());
                    ctx.observer.handler(name, hname, StepStatus::Changed, None);
                }
                Err(e) => {
                    let e = mask.error(e);
                    ctx.observer
                        .handler(name, hname, StepStatus::Failed, Some(&e.to_string()));
                    return Err(HostFailure::new(format!("handler {hname}"), e));
                }
            }
        }
        o.state = if run.changed {
            HostState::Changed
        } else {
            HostState::Ok
        };
        Ok(())
    }

    /// The `started` audit record, prepended to the first change (step or handler). A
    /// subshell: whatever happens to the audit log, the step runs.
    fn audit_prefix(&self) -> String {
        let line = audit_started(
            self.p,
            self.ctx.opts.lock_holder.as_deref().unwrap_or(""),
            &self.ctx.run_id,
        );
        format!(
            "(\n{}\n) >/dev/null 2>&1 || true\n",
            audit_script(&line).trim_end()
        )
    }
}

/// Whether the script of a step may carry secret material, so that `-vv` must not show it:
/// its text uses secrets (see [`uses_secrets`]), or it uploads secret content, whose sha256
/// the upload script checks (a hash of a weak password is as good as the password): `secret`
/// and `cert` steps, and files whose content is sensitive or holds a secret.
fn secret_material(step: &Step, change: &Change) -> bool {
    uses_secrets(step)
        || step.kind.uploads_secret_material()
        || change.content.as_ref().is_some_and(|c| c.sensitive)
}

/// The lines that record notified handlers in the journal before a step changes anything.
fn journal_record(dir: &str, handlers: &[String]) -> String {
    let mut s = format!("mkdir -p -m 0700 -- {} && ", crate::quote::quote(dir));
    let files: Vec<String> = handlers
        .iter()
        .map(|h| crate::quote::quote(&format!("{dir}/{}", crate::fact::host::encode_name(h))))
        .collect();
    s.push_str(&format!("touch -- {} || exit 1\n", files.join(" ")));
    s
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::pb_step;
    use super::*;
    use crate::plan::ContentChange;
    use std::sync::Arc;

    #[test]
    fn scripts_with_secret_material_are_never_shown() {
        let mut s = pb_step(&[]);
        s.args.insert("run".into(), "systemctl restart app".into());
        let plain = Change::noop("x", "y");
        assert!(!secret_material(&s, &plain));
        for run in [
            "echo {{ secrets.db | shell_quote }}",
            "echo {{ __tera_context }}",
        ] {
            s.args.insert("run".into(), run.into());
            assert!(secret_material(&s, &plain), "{run}");
        }
        s.args.insert("run".into(), "true".into());
        s.when = Some("secrets.db != ''".into());
        assert!(uses_secrets(&s));
        s.when = None;
        // nested: a template's `vars`
        s.args.insert(
            "vars".into(),
            toml::Value::Table(toml::toml! { dsn = "{{ secrets.db }}" }),
        );
        assert!(uses_secrets(&s));
        s.args.remove("vars");
        for kind in ["secret", "cert"] {
            s.kind = kind.parse().unwrap();
            assert!(secret_material(&s, &plain), "{kind}");
        }
        // a file whose content is sensitive (or holds a secret: the mask marks it so)
        s.kind = "file".parse().unwrap();
        let mut c = Change::noop("x", "y");
        c.content = Some(ContentChange {
            path: "/etc/app.env".into(),
            old_sha256: None,
            new: Arc::new(b"KEY=...".to_vec()),
            sensitive: true,
            old: None,
            keys: None,
        });
        assert!(secret_material(&s, &c));
        c.content.as_mut().unwrap().sensitive = false;
        assert!(!secret_material(&s, &c));
    }
}
