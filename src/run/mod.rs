//! One run of `plan` or `apply`: prepares every host offline, then per host, on ONE connection:
//! probe (one round trip) → diff → (plan: show | apply: only the changes, then handlers).
//!
//! **Invariant:** `plan` never runs anything but the read-only probe and content fetch.
//! **Invariant:** bad input fails the whole run before any connection is made.
//!
//! The run's shape, and where each part lives:
//! - here: [`run`] puts the hosts in rollout order and cuts them into batches, runs each host as
//!   a task (up to `forks` at once), and starts a batch only when the one before it ended and
//!   the policy allows (`batch_verdict`);
//! - `prepare`: offline preparation: every step of every host rendered with stand-in facts and
//!   secrets and checked ([`prepare()`]), and what the first probe asks;
//! - `host`: one host's task: connect, then `drive` it through its phases (1 probe and the
//!   apply lock, 2 secrets, 3 render, 4 diff, 5 fetch diffs, 6 the operator's decision,
//!   7 apply, 8 handlers), then the audit record;
//! - `probe`: phases 1–3 and `run_probe`; `diff`: phases 4–5 (the plan, what makes a probe
//!   answer stale, disk space, the current contents shown in diffs);
//! - `apply`: phases 7–8 (the steps' changes, then the handlers); `confirm`: a firewall
//!   change confirmed through a new connection;
//! - `failure`: why a host failed (the apply layer's error);
//! - `cross`: values across hosts (a `secret` step with a `source`): found and checked offline,
//!   exchanged between the hosts' tasks at run time;
//! - `mask`: hides a host's secrets in everything shown; `audit`: the audit log's lines;
//! - `outcome`: what reports and saved plans read ([`HostOutcome`], [`Observer`], ...).
//!
//! Connecting is not the runner's: [`crate::connect`] is the one way every command connects.

mod apply;
mod audit;
mod confirm;
pub(crate) mod cross;
mod diff;
mod failure;
#[cfg(test)]
mod fixtures;
mod host;
mod mask;
pub(crate) mod outcome;
pub(crate) mod prepare;
mod probe;

pub(crate) use self::outcome::{HostOutcome, HostState, Observer, PlanSender, StepStatus};
pub(crate) use self::prepare::Prepared;
pub use self::prepare::prepare;

use self::outcome::EndGuard;
use crate::secret::Secret;
use std::sync::Arc;
use tokio::sync::{Semaphore, watch};

/// Plan or apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Plan,
    Apply,
}

/// Options of a run that are not in the input files.
pub(crate) struct RunOptions {
    pub mode: Mode,
    pub forks: usize,
    pub become_password: Option<Secret>,
    /// Fetch current contents of changed files to show diffs (costs one more round trip).
    pub fetch_diffs: bool,
    /// The run's connection state: every host's and confirming connection goes through it
    /// (one passphrase prompt per key, one connection per jump chain, known_hosts parsed once);
    /// the host keys learned on the way are reported by each host's task.
    pub ssh: crate::ssh::Client,
    /// apply: who takes each host's apply lock (operator, machine, pid, playbook); None: no lock.
    pub lock_holder: Option<String>,
    /// This process as a lock client (`fact::lock::local_client`), computed once by the command:
    /// recorded in each lock it takes, so a later run can tell a lock left by a dead run.
    pub lock_client: String,
    /// apply --force-unlock: end the current holder's lock first.
    pub force_unlock: bool,
    /// Set on the first Ctrl-C: hosts stop before their next step, no new host starts.
    pub interrupt: Arc<std::sync::atomic::AtomicBool>,
    /// Fingerprint what each host's plan is based on with this key (`plan --out`, `apply
    /// --plan`): `HostPlan::probed`.
    pub fingerprint: Option<crate::saved_plan::Key>,
    /// `apply --plan`: the saved plan; a host whose plan made now differs from it (drift) is
    /// refused before anything changes on it.
    pub saved: Option<Arc<crate::saved_plan::PlanFile>>,
}

/// The decision after the plan was shown: apply or not.
pub(crate) type Gate = watch::Receiver<Option<bool>>;

struct Ctx {
    opts: RunOptions,
    sem: Semaphore,
    observer: Arc<dyn Observer>,
    rollout: crate::rollout::Rollout,
    /// Hosts of the run (for a percentage of `max_fail`).
    total: usize,
    /// Hosts failed or unreachable so far.
    failures: std::sync::atomic::AtomicUsize,
    /// Set when the failure budget is exceeded: running hosts stop before their next step.
    halt: std::sync::atomic::AtomicBool,
    /// Ties a host's audit records of this run together (`started`, then `finished`).
    run_id: String,
    /// The values that cross hosts: their sources publish them, the hosts that take them wait.
    exchange: cross::exchange::Exchange,
}

impl Ctx {
    /// Counts a failed host; halts the run when the budget is exceeded.
    fn count_failure(&self) {
        use std::sync::atomic::Ordering;
        let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
        if self.rollout.over_budget(n, self.total) {
            self.halt.store(true, Ordering::SeqCst);
        }
    }

    fn halted(&self) -> bool {
        self.halt.load(std::sync::atomic::Ordering::SeqCst) || self.interrupted()
    }

    fn interrupted(&self) -> bool {
        self.opts
            .interrupt
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Why a host stops before a step, or does not start.
    fn halt_reason(&self) -> &'static str {
        if self.interrupted() {
            "interrupted (Ctrl-C)"
        } else {
            "other hosts failed, more than max_fail allows"
        }
    }
}

/// Runs every prepared host concurrently (up to `forks`). When `gate` is given, each host
/// stops after its plan and waits for the decision (apply with confirmation); `plans` receives
/// each host's plan as soon as it is known.
pub(crate) async fn run(
    prepared: Vec<Prepared>,
    opts: RunOptions,
    observer: Arc<dyn Observer>,
    gate: Option<(Gate, PlanSender)>,
) -> Vec<HostOutcome> {
    // The rollout policy applies to apply; a plan probes every host at once.
    let rollout = match (opts.mode, prepared.first()) {
        (Mode::Apply, Some(p)) => p.playbook.rollout.clone(),
        _ => crate::rollout::Rollout::default(),
    };
    let total = prepared.len();
    let links = prepared
        .first()
        .map(|p| p.playbook.links.clone())
        .unwrap_or_default();
    let (batches, batch_of) = batches(&prepared, &rollout, opts.mode);
    let apply = opts.mode == Mode::Apply;
    // Hosts that connect batch by batch (apply --yes) cannot wait for a source of a later batch
    // to be probed: it is read ahead, as one outside the run is.
    let ahead = cross::exchange::read_ahead(&links, &batch_of, gate.is_none() && apply);
    let ctx = Arc::new(Ctx {
        sem: Semaphore::new(opts.forks.max(1)),
        opts,
        observer,
        rollout,
        total,
        failures: Default::default(),
        halt: Default::default(),
        run_id: hex::encode(rand::random::<[u8; 8]>()),
        exchange: cross::exchange::Exchange::new(links, batch_of, apply, &ahead),
    });
    let ahead = cross::ahead::spawn(&ctx, &prepared, ahead);
    let (starts, tasks) = spawn_hosts(&ctx, prepared, &batches, gate);
    let outcomes = await_batches(&ctx, starts, tasks).await;
    for t in ahead {
        t.abort();
    }
    outcomes
}

/// The batches of a run (host indexes, `Rollout::plan`) and each host's batch in the apply's
/// rollout: a plan probes every host at once (`rollout` is the default one then) but says what
/// the apply's batches will allow a host that takes a value from another.
fn batches(
    prepared: &[Prepared],
    rollout: &crate::rollout::Rollout,
    mode: Mode,
) -> (Vec<Vec<usize>>, std::collections::HashMap<String, usize>) {
    let names: Vec<String> = prepared.iter().map(|p| p.host.name.clone()).collect();
    let groups_of: Vec<Vec<String>> = prepared.iter().map(|p| p.host.groups.clone()).collect();
    let mut batches = rollout.plan(&names, &groups_of);
    let applied = match (mode, prepared.first()) {
        (Mode::Plan, Some(p)) => p.playbook.rollout.plan(&names, &groups_of),
        _ => batches.clone(),
    };
    let batch_of = (applied.into_iter().enumerate())
        .flat_map(|(b, hosts)| hosts.into_iter().map(move |i| (i, b)))
        .map(|(i, b)| (names[i].clone(), b))
        .collect();
    // Within a batch, the hosts that keep values for others start first: the hosts that take
    // them wait for their answers (lending their fork slot meanwhile).
    if let Some(p) = prepared.first() {
        let gives = |i: &usize| {
            p.playbook
                .links
                .shared
                .iter()
                .any(|s| s.source == names[*i])
        };
        for b in &mut batches {
            b.sort_by_key(|i| !gives(i));
        }
    }
    (batches, batch_of)
}

/// A host's task: its batch, its index, name and address, and the task.
type HostTask = (
    usize,
    usize,
    String,
    String,
    tokio::task::JoinHandle<HostOutcome>,
);

/// Spawns every host's task: each waits for its batch's start signal (one sender per batch)
/// and, when it ends, fails the values it was to give and did not (`Gives`).
fn spawn_hosts(
    ctx: &Arc<Ctx>,
    prepared: Vec<Prepared>,
    batches: &[Vec<usize>],
    gate: Option<(Gate, PlanSender)>,
) -> (Vec<watch::Sender<Option<bool>>>, Vec<HostTask>) {
    // Hosts in rollout order, cut into batches (`batches`: `Rollout::plan`); each host waits
    // for its batch's start signal (before connecting; with a confirmation, after the
    // decision) so that a batch starts only when the one before it ended and the policy allows.
    let mut slots: Vec<Option<Prepared>> = prepared.into_iter().map(Some).collect();
    let mut starts = Vec::new();
    let mut tasks = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let (start_tx, start_rx) = watch::channel(None::<bool>);
        starts.push(start_tx);
        for &i in batch {
            let p = slots[i].take().expect("each host once");
            let ctx = ctx.clone();
            let gate = gate.clone();
            let start = start_rx.clone();
            let name = p.host.name.clone();
            let address = p.host.address.clone();
            // Tells the confirmation gate that this host ended, even if its task panicked.
            let ended = EndGuard(gate.as_ref().map(|(_, tx)| (tx.clone(), name.clone())));
            let task = tokio::spawn(async move {
                let _ended = ended;
                let gives = cross::exchange::Gives::new(&ctx.exchange, &p.host.name);
                let outcome = host::host_task(&ctx, p, gate, start).await;
                gives.ended(&outcome);
                ctx.observer.host_done(&outcome);
                outcome
            });
            tasks.push((b, i, name, address, task));
        }
    }
    (starts, tasks)
}

/// Starts the batches one after the other, each when the one before it ended and the policy
/// allows, and collects the hosts' outcomes (in the order they were prepared).
async fn await_batches(
    ctx: &Ctx,
    starts: Vec<watch::Sender<Option<bool>>>,
    tasks: Vec<HostTask>,
) -> Vec<HostOutcome> {
    let (total, n_batches) = (ctx.total, starts.len());
    let mut out: Vec<Option<HostOutcome>> = (0..total).map(|_| None).collect();
    let mut stopped: Option<String> = None;
    let mut pending = tasks.into_iter().peekable();
    for (b, start) in starts.into_iter().enumerate() {
        let _ = start.send(Some(stopped.is_none()));
        let mut batch = Vec::new();
        while let Some((_, i, name, address, t)) = pending.next_if(|x| x.0 == b) {
            let mut o = t.await.unwrap_or_else(|e| HostOutcome {
                state: HostState::Failed,
                error: Some(format!(
                    "internal error: the host's task ended abnormally: {e} (bug, please report)"
                )),
                ..HostOutcome::new(name, address)
            });
            if o.state == HostState::NotStarted
                && o.error.is_none()
                && let Some(why) = &stopped
            {
                o.error = Some(why.clone());
            }
            batch.push(i);
            out[i] = Some(o);
        }
        if stopped.is_some() || b + 1 == n_batches {
            continue;
        }
        if ctx.interrupted() {
            stopped = Some(format!(
                "interrupted (Ctrl-C): the rollout stopped after batch {}",
                b + 1
            ));
            continue;
        }
        let outcomes: Vec<&HostOutcome> = batch.iter().filter_map(|i| out[*i].as_ref()).collect();
        stopped = batch_verdict(
            &ctx.rollout,
            &outcomes,
            ctx.failures.load(std::sync::atomic::Ordering::SeqCst),
            total,
            b,
        );
    }
    out.into_iter()
        .map(|o| o.expect("every host has an outcome"))
        .collect()
}

/// Why no further batch may start after batch `b` (None: go on): the failure budget is
/// exceeded, or a host of the batch did not pass the health step (a host on which the step's
/// `when` is false passes; one that skipped it otherwise does not).
fn batch_verdict(
    rollout: &crate::rollout::Rollout,
    batch: &[&HostOutcome],
    failures: usize,
    total: usize,
    b: usize,
) -> Option<String> {
    if rollout.over_budget(failures, total) {
        return Some(format!(
            "the rollout stopped after batch {}: {failures} host(s) failed, more than max_fail allows",
            b + 1
        ));
    }
    let health = rollout.health.as_ref()?;
    for o in batch {
        if o.state == HostState::NotStarted {
            continue;
        }
        // Passed, or the step does not apply to the host (its `when`: a role without it).
        let passed = o.plan.as_ref().is_some_and(|p| {
            p.steps.iter().zip(&o.statuses).any(|(s, st)| {
                &s.name == health
                    && (matches!(st, StepStatus::Ok | StepStatus::Changed) || s.not_here)
            })
        });
        if !passed {
            return Some(format!(
                "the rollout stopped after batch {}: host {} did not pass the health step `{health}`",
                b + 1,
                o.name
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::fixtures::step;
    use super::*;
    use crate::plan::{Change, HostPlan};

    #[test]
    fn a_batch_closes_the_rollout_when_the_budget_is_spent_or_a_host_is_not_healthy() {
        use crate::rollout::{Amount, Rollout};
        let host = |name: &str, state: HostState, health: Option<StepStatus>| {
            let mut o = HostOutcome::new(name.into(), "10.0.0.1".into());
            o.state = state;
            if let Some(st) = health {
                let mut plan = HostPlan::default();
                plan.steps.push(step("http_check", Change::noop("", "")));
                plan.steps[0].name = "health".into();
                o.plan = Some(plan);
                o.statuses = vec![st];
            }
            o
        };
        let budget = Rollout {
            max_fail: Some(Amount::Count(1)),
            ..Rollout::default()
        };
        let ok = host("a", HostState::Changed, None);
        assert_eq!(batch_verdict(&budget, &[&ok], 1, 12, 0), None);
        let v = batch_verdict(&budget, &[&ok], 2, 12, 1).unwrap();
        assert_eq!(
            v,
            "the rollout stopped after batch 2: 2 host(s) failed, more than max_fail allows"
        );
        let gated = Rollout {
            health: Some("health".into()),
            ..Rollout::default()
        };
        let healthy = host("a", HostState::Ok, Some(StepStatus::Ok));
        let never = host("c", HostState::NotStarted, None);
        assert_eq!(batch_verdict(&gated, &[&healthy, &never], 0, 3, 0), None);
        let failed = host("b", HostState::Failed, Some(StepStatus::NotRun));
        let v = batch_verdict(&gated, &[&healthy, &failed], 1, 3, 0).unwrap();
        assert!(
            v.contains("host b did not pass the health step `health`"),
            "{v}"
        );
        let skipped = host("d", HostState::Ok, Some(StepStatus::Skipped));
        assert!(batch_verdict(&gated, &[&skipped], 0, 3, 0).is_some());
        // Its `when` false there (a role without a health step): passes.
        let mut elsewhere = host("e", HostState::Ok, Some(StepStatus::Skipped));
        elsewhere.plan.as_mut().unwrap().steps[0].not_here = true;
        assert_eq!(
            batch_verdict(&gated, &[&elsewhere, &healthy], 0, 3, 0),
            None
        );
    }
}
