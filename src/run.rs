//! One run of `plan` or `apply`: prepares every host offline, then per host, on ONE connection:
//! probe (one round trip) → diff → (plan: show | apply: only the changes, then handlers).
//!
//! **Invariant:** `plan` never runs anything but the read-only probe and content fetch.
//! **Invariant:** bad input fails the whole run before any connection is made.

use crate::error::{ConfigError, ConfigErrors};
use crate::fact::lock::LockState;
use crate::fact::{Observed, ProbeError, ProbeScript, Request, SecretState};
use crate::inventory::{Host, HostKeyPolicy, Inventory};
use crate::plan::{Change, HostPlan, StepPlan};
use crate::playbook::{Playbook, Step};
use crate::remote::{Become, Remote, RemoteError};
use crate::resource::{self, Desired, Sources, command};
use crate::secret::Secret;
use crate::ssh::{self, ConnectSpec, PassphraseSource, SessionStats};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

/// Plan or apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
}

/// One step of one host, ready to probe.
#[derive(Debug, Clone)]
pub struct PreparedStep {
    /// The step as written (rendered again with the host's facts and secrets after the probe).
    pub step: Step,
    /// Rendered offline with stand-in facts and secrets: what the first probe asks about.
    /// None when `when` is false with the stand-ins.
    pub probe_desired: Option<Desired>,
    /// Neither the step (arguments, `when`) nor its template names `facts` or `secrets`: the
    /// render with the host's real facts and secrets would be the same as `probe_desired`, so
    /// it is reused instead of rendered again.
    pub context_free: bool,
    /// The step (arguments, `when`) or its template names `secrets`: a file it writes is
    /// sensitive (never diffed in clear), whatever form the secret takes in it.
    pub names_secrets: bool,
}

/// Whether a step or its template names `secrets` (see [`PreparedStep::names_secrets`]).
/// Conservative: a template whose name is itself templated, or cannot be read, counts.
fn names_secrets(step: &Step, templates_dir: &std::path::Path) -> bool {
    if uses_secrets(step) {
        return true;
    }
    if step.kind == "template" {
        let Some(src) = step.args.get("src").and_then(|v| v.as_str()) else {
            return true;
        };
        if src.contains("{{") || src.contains("{%") {
            return true;
        }
        return std::fs::read_to_string(templates_dir.join(src)).map_or(true, |t| {
            tera_code(&t).any(|c| c.contains("secrets") || c.contains("__tera_context"))
        });
    }
    false
}

/// The code of a template's `{{ }}` and `{% %}` blocks (not its text or `{# #}` comments).
fn tera_code(t: &str) -> impl Iterator<Item = &str> {
    let mut rest = t;
    std::iter::from_fn(move || {
        loop {
            let i = rest.find('{')?;
            let close = match rest.as_bytes().get(i + 1) {
                Some(b'{') => "}}",
                Some(b'%') => "%}",
                _ => {
                    rest = &rest[i + 1..];
                    continue;
                }
            };
            let body = &rest[i + 2..];
            let end = body.find(close).unwrap_or(body.len());
            rest = &body[(end + close.len()).min(body.len())..];
            return Some(&body[..end]);
        }
    })
}

/// Whether a step's rendering can depend on the facts or secrets (see
/// [`PreparedStep::context_free`]). Conservative: any mention of either name counts.
fn context_free(step: &Step, templates_dir: &std::path::Path) -> bool {
    fn mentions(s: &str) -> bool {
        s.contains("facts") || s.contains("secrets")
    }
    fn strings_free(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => !mentions(s),
            toml::Value::Array(a) => a.iter().all(strings_free),
            toml::Value::Table(t) => t.iter().all(|(k, v)| !mentions(k) && strings_free(v)),
            _ => true,
        }
    }
    if step.when.as_deref().is_some_and(mentions)
        || !strings_free(&toml::Value::Table(step.args.clone()))
    {
        return false;
    }
    if step.kind == "template" {
        let Some(src) = step.args.get("src").and_then(|v| v.as_str()) else {
            return false;
        };
        if src.contains("{{") || src.contains("{%") {
            return false;
        }
        return std::fs::read_to_string(templates_dir.join(src)).is_ok_and(|t| !mentions(&t));
    }
    true
}

/// What every host of a run shares from the playbook.
#[derive(Debug)]
pub struct PlaybookInfo {
    pub path: std::path::PathBuf,
    pub name: String,
    pub files_dir: std::path::PathBuf,
    pub templates_dir: std::path::PathBuf,
    pub handlers: Vec<Step>,
    pub operator_secrets: Vec<(String, Secret)>,
    /// Names of the `secret` steps' secrets (for the stand-ins).
    pub secret_names: Vec<String>,
    /// A task runs (`--task`): handlers left pending by an earlier apply wait for the next
    /// plain apply (an operation such as `status` must not restart a daemon).
    pub task: bool,
    /// `[rollout]` (apply only).
    pub rollout: crate::rollout::Rollout,
    /// The `inventory` variable, the same for every host.
    pub inventory: Value,
}

/// A host with its steps checked and ready to probe.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub host: Host,
    pub steps: Vec<PreparedStep>,
    /// The host's variables and `host` (without `inventory`, shared in [`PlaybookInfo`], and
    /// without `facts` and `secrets`).
    pub base: Map<String, Value>,
    pub playbook: Arc<PlaybookInfo>,
}

use serde_json::{Map, Value};

/// The steps and handlers of a host rendered with one context.
struct Rendered {
    /// Per step: the desired state, or None with the reason it is skipped.
    steps: Vec<Result<Desired, String>>,
    handlers: Vec<(String, Option<Duration>, command::Desired)>,
    /// Per step: the texts of its rendering a secret flowed into (see `template::track`).
    tainted: Vec<Vec<crate::template::Tainted>>,
    /// The handlers a secret flowed into.
    tainted_handlers: Vec<String>,
    /// Every text rendered from a secret, with its display rendering.
    found: Vec<crate::template::Tainted>,
}

/// Renders a host's steps and handlers with `ctx`; errors come per step (name, message).
/// `reuse`: the render after the probe, which reuses what cannot have changed, skips the
/// steps not selected (the offline check before it renders every step) and tracks which
/// renderings a secret flowed into (the offline one has stand-ins only).
fn render(
    steps: &[PreparedStep],
    pb: &PlaybookInfo,
    ctx: &Map<String, Value>,
    reuse: bool,
) -> Result<Rendered, Vec<(usize, String)>> {
    let sources = Sources {
        files_dir: &pb.files_dir,
        templates_dir: &pb.templates_dir,
    };
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut tainted = vec![Vec::new(); steps.len()];
    let mut tainted_handlers = Vec::new();
    let mut found: Vec<crate::template::Tainted> = Vec::new();
    let mut tracked = |f: &mut dyn FnMut() -> Result<Desired, String>| {
        if !reuse {
            return (f(), Vec::new());
        }
        let (r, t) = crate::template::track(f);
        for x in &t {
            if !found.contains(x) {
                found.push(x.clone());
            }
        }
        (r, t)
    };
    for (i, ps) in steps.iter().enumerate() {
        let step = &ps.step;
        if let (true, Some(why)) = (reuse, &step.not_selected) {
            out.push(Err(why.clone()));
            continue;
        }
        if reuse && ps.context_free {
            match (&ps.probe_desired, &step.when) {
                (Some(d), _) => {
                    out.push(Ok(d.clone()));
                    continue;
                }
                (None, Some(w)) => {
                    out.push(Err(format!("when: {w}")));
                    continue;
                }
                (None, None) => {}
            }
        }
        if let Some(w) = &step.when {
            match crate::template::eval_when(w, ctx) {
                Ok(true) => {}
                Ok(false) => {
                    out.push(Err(format!("when: {w}")));
                    continue;
                }
                Err(e) => {
                    errors.push((i, e));
                    out.push(Err(String::new()));
                    continue;
                }
            }
        }
        let (r, t) = tracked(&mut || resource::desired(&step.kind, &step.args, ctx, &sources));
        tainted[i] = t;
        match r {
            Ok(d) => out.push(Ok(d)),
            Err(e) => {
                errors.push((i, e));
                out.push(Err(String::new()));
            }
        }
    }
    let mut handlers = Vec::new();
    for (j, h) in pb.handlers.iter().enumerate() {
        // A handler whose `when` is false on this host is never run there.
        if let Some(w) = &h.when {
            match crate::template::eval_when(w, ctx) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    errors.push((steps.len() + j, e));
                    continue;
                }
            }
        }
        let (r, t) = tracked(&mut || resource::desired(&h.kind, &h.args, ctx, &sources));
        if !t.is_empty() {
            tainted_handlers.push(h.name.clone());
        }
        match r {
            Ok(Desired::Command(c)) => handlers.push((h.name.clone(), h.timeout, c)),
            Ok(_) => {}
            Err(e) => errors.push((steps.len() + j, e)),
        }
    }
    if errors.is_empty() {
        Ok(Rendered {
            steps: out,
            handlers,
            tainted,
            tainted_handlers,
            found,
        })
    } else {
        // An error may quote a text rendered from a secret (a path it refuses, say).
        let m = Mask::new(&[], &found);
        Err(errors.into_iter().map(|(i, e)| (i, m.text(&e))).collect())
    }
}

/// The template context of a host once its facts and secrets are known.
fn full_context(
    base: &Map<String, Value>,
    inventory: &Value,
    facts: &crate::fact::HostFacts,
    secrets: &[(String, Secret)],
) -> Map<String, Value> {
    let mut ctx = base.clone();
    ctx.insert("inventory".into(), inventory.clone());
    ctx.insert("facts".into(), facts.to_json());
    let s: Map<String, Value> = secrets
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.expose().to_string())))
        .collect();
    ctx.insert("secrets".into(), Value::Object(s));
    ctx
}

fn step_error(pb: &Playbook, step: &Step, host: &Host, msg: &str) -> ConfigError {
    // Template errors already name their own file and line; keep the step and host as context.
    ConfigError::new(
        &pb.path,
        step.line,
        0,
        format!("step `{}` on host `{}`: {msg}", step.name, host.name),
    )
}

/// Checks every step for every host offline (with stand-in facts and secrets) and works out
/// what the first probe asks. All problems are returned together.
pub fn prepare(
    inv: &Inventory,
    pb: &Playbook,
    hosts: &[&Host],
    extra: &[(String, String)],
) -> Result<Vec<Prepared>, ConfigErrors> {
    let operator_secrets = pb.load_operator_secrets()?;
    let secret_names: Vec<String> = pb
        .steps
        .iter()
        .filter(|s| s.kind == "secret")
        .filter_map(|s| {
            s.args
                .get("secret")
                .and_then(|n| n.as_str())
                .map(String::from)
        })
        .collect();
    let info = Arc::new(PlaybookInfo {
        path: pb.path.clone(),
        name: pb.name.clone(),
        files_dir: pb.dir.clone(),
        templates_dir: pb.templates_dir.clone(),
        handlers: pb.handlers.clone(),
        secret_names,
        operator_secrets,
        task: pb.task.is_some(),
        rollout: pb.rollout.clone(),
        inventory: crate::vars::inventory_value(inv),
    });
    let stand_in_secrets: Vec<(String, Secret)> = info
        .secret_names
        .iter()
        .chain(info.operator_secrets.iter().map(|(k, _)| k))
        .map(|k| (k.clone(), Secret::new(format!("<secret {k}>"))))
        .collect();
    let free: Vec<(bool, bool)> = (pb.steps.iter())
        .map(|s| {
            (
                context_free(s, &pb.templates_dir),
                names_secrets(s, &pb.templates_dir),
            )
        })
        .collect();
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for host in hosts {
        let base = crate::vars::host_context(inv, host, pb, extra);
        let ctx = full_context(
            &base,
            &info.inventory,
            &crate::fact::HostFacts::placeholder(),
            &stand_in_secrets,
        );
        let mut steps: Vec<PreparedStep> = pb
            .steps
            .iter()
            .zip(&free)
            .map(|(s, (free, names))| PreparedStep {
                step: s.clone(),
                probe_desired: None,
                context_free: *free,
                names_secrets: *names,
            })
            .collect();
        match render(&steps, &info, &ctx, false) {
            Ok(r) => {
                for (ps, d) in steps.iter_mut().zip(r.steps) {
                    // A step not selected is checked, but not probed.
                    ps.probe_desired = d.ok().filter(|_| ps.step.not_selected.is_none());
                }
            }
            Err(es) => {
                for (i, e) in es {
                    let s = pb
                        .steps
                        .get(i)
                        .unwrap_or_else(|| &pb.handlers[i - pb.steps.len()]);
                    errors.push(step_error(pb, s, host, &e));
                }
            }
        }
        out.push(Prepared {
            host: (*host).clone(),
            steps,
            base,
            playbook: info.clone(),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

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

/// Sends the end marker of a host to the confirmation gate when dropped.
struct EndGuard(Option<(PlanSender, String)>);

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
pub trait Observer: Send + Sync {
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

/// Options of a run that are not in the input files.
pub struct RunOptions {
    pub mode: Mode,
    pub forks: usize,
    pub become_password: Option<Secret>,
    /// Fetch current contents of changed files to show diffs (costs one more round trip).
    pub fetch_diffs: bool,
    pub passphrases: Arc<dyn PassphraseSource>,
    /// apply: who takes each host's apply lock (operator, machine, pid, playbook); None: no lock.
    pub lock_holder: Option<String>,
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
pub type Gate = watch::Receiver<Option<bool>>;

/// Where hosts send their plan (Some) before waiting at the gate, and None when they end.
pub type PlanSender = tokio::sync::mpsc::UnboundedSender<(String, Option<HostPlan>)>;

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
pub async fn run(
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
    let ctx = Arc::new(Ctx {
        sem: Semaphore::new(opts.forks.max(1)),
        opts,
        observer,
        rollout,
        total,
        failures: Default::default(),
        halt: Default::default(),
        run_id: hex::encode(rand::random::<[u8; 8]>()),
    });
    // Hosts in rollout order, cut into batches; each host waits for its batch's start signal
    // (before connecting; with a confirmation, after the decision) so that a batch starts only
    // when the one before it ended and the policy allows.
    let names: Vec<String> = prepared.iter().map(|p| p.host.name.clone()).collect();
    let order = ctx.rollout.order(&names);
    let batches = ctx.rollout.batches(total);
    let mut slots: Vec<Option<Prepared>> = prepared.into_iter().map(Some).collect();
    let mut starts = Vec::new();
    let mut tasks = Vec::new();
    for (b, range) in batches.iter().enumerate() {
        let (start_tx, start_rx) = watch::channel(None::<bool>);
        starts.push(start_tx);
        for &i in &order[range.clone()] {
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
                let outcome = host_task(&ctx, p, gate, start).await;
                ctx.observer.host_done(&outcome);
                outcome
            });
            tasks.push((b, i, name, address, task));
        }
    }
    drop(gate);
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
        if stopped.is_some() || b + 1 == batches.len() {
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
/// exceeded, or a host of the batch did not pass the health step.
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
        let passed = o.plan.as_ref().is_some_and(|p| {
            p.steps.iter().zip(&o.statuses).any(|(s, st)| {
                &s.name == health && matches!(st, StepStatus::Ok | StepStatus::Changed)
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

/// Connects to a host (its address, keys, known_hosts, timeouts) and wraps the session with its
/// become settings: the one connection path of `plan`, `apply` and `run`.
pub async fn connect(
    h: &Host,
    become_password: Option<Secret>,
    passphrases: &dyn PassphraseSource,
) -> Result<Remote, ssh::SshError> {
    let session = ssh::Session::connect(&connect_spec(h), passphrases).await?;
    Ok(Remote::new(
        session,
        // Logged in as the become user already (typically root): no sudo needed.
        (h.become_ && h.user != h.become_user).then(|| Become {
            user: h.become_user.clone(),
            password: become_password,
        }),
    ))
}

pub(crate) fn connect_spec(h: &Host) -> ConnectSpec {
    ConnectSpec {
        host: h.name.clone(),
        address: h.address.clone(),
        port: h.port,
        user: h.user.clone(),
        identity_files: if h.identity_files.is_empty() {
            default_identities()
        } else {
            h.identity_files.clone()
        },
        use_agent: true,
        identities_only: h.identities_only,
        jump: h
            .jump
            .iter()
            .map(|j| ssh::JumpSpec {
                name: j.name.clone(),
                address: j.address.clone(),
                port: j.port,
                user: j.user.clone(),
                identity_files: if j.identity_files.is_empty() {
                    default_identities()
                } else {
                    j.identity_files.clone()
                },
                identities_only: j.identities_only,
                known_hosts: j.known_hosts.clone(),
                policy: policy(j.host_key_policy),
                key_options: j.key_options.clone(),
            })
            .collect(),
        known_hosts: h.known_hosts.clone(),
        policy: policy(h.host_key_policy),
        key_options: h.key_options.clone(),
        connect_timeout: h.connect_timeout,
        keepalive_interval: h.keepalive_interval,
    }
}

fn policy(p: HostKeyPolicy) -> ssh::HostKeyPolicy {
    match p {
        HostKeyPolicy::Strict => ssh::HostKeyPolicy::Strict,
        HostKeyPolicy::AcceptNew => ssh::HostKeyPolicy::AcceptNew,
    }
}

/// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` that exist, as OpenSSH tries them.
fn default_identities() -> Vec<std::path::PathBuf> {
    let home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|k| home.join(".ssh").join(k))
        .filter(|p| p.exists())
        .collect()
}

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

async fn host_task(
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

type StepErr = (String, RemoteError);

/// Confirms a firewall change through a new SSH connection to the host (the proof that the
/// new ruleset still lets the operator in). If none can be made in time, the host's timer puts
/// the previous ruleset back: this waits for that, checks it through the old connection, and
/// returns the failure to report.
async fn confirm_by_new_connection(
    ctx: &Ctx,
    p: &Prepared,
    remote: &Remote,
    c: &crate::plan::Confirm,
    out: &crate::ssh::ExecOutput,
    timeout: Duration,
) -> Result<(), String> {
    use crate::resource::firewall::{confirm_script, rolled_back_script};
    let started = Instant::now();
    let token = out
        .stdout_lossy()
        .lines()
        .find_map(|l| l.strip_prefix("@fw-token\t").map(|t| t.trim().to_string()))
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or("internal error: the firewall change did not report its rollback token (bug)")?;
    // Leave the host's timer a margin: a confirmation must land before it fires.
    let budget = c.window.saturating_sub(Duration::from_secs(2));
    // A slow connection is still a proof: it may take the whole window (a busy host or client
    // can need more than the inventory's connect_timeout for one handshake).
    let mut host = p.host.clone();
    host.connect_timeout = budget;
    let attempt = async {
        let r2 = connect(
            &host,
            ctx.opts.become_password.clone(),
            ctx.opts.passphrases.as_ref(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let res = r2
            .run_ok(&confirm_script(&c.table, &token), &[], timeout)
            .await
            .map_err(|e| e.to_string());
        r2.session.close().await;
        res.map(|o| o.stdout_lossy().trim().to_string())
    };
    let why = match tokio::time::timeout(budget, attempt).await {
        Ok(Ok(answer)) if answer == "confirmed" => return Ok(()),
        Ok(Ok(_)) => "the confirmation came too late".to_string(),
        Ok(Err(e)) => format!("a new SSH connection failed: {e}"),
        Err(_) => format!("no new SSH connection within {} s", budget.as_secs()),
    };
    // The timer fires `window` after the change: wait for it, then look through the old
    // connection (established connections survive a ruleset that blocks new ones).
    tokio::time::sleep((c.window + Duration::from_secs(3)).saturating_sub(started.elapsed())).await;
    let verdict = match remote
        .run_ok(&rolled_back_script(&c.table, &token), &[], timeout)
        .await
    {
        Ok(o) if o.stdout_lossy().trim().starts_with("rolled-back") => {
            match o
                .stdout_lossy()
                .trim()
                .trim_start_matches("rolled-back")
                .trim()
            {
                "minimal" => format!(
                    "after {} s the host could not load the previous ruleset back and loaded a minimal one instead (the SSH port open, everything else dropped): check the firewall",
                    c.window.as_secs()
                ),
                "deleted" => format!(
                    "after {} s the host could load neither the previous ruleset nor a minimal one and deleted the table: check the firewall",
                    c.window.as_secs()
                ),
                _ => format!(
                    "the host restored the previous ruleset after {} s",
                    c.window.as_secs()
                ),
            }
        }
        Ok(_) => "the host's rollback did not report back: check the firewall".to_string(),
        Err(e) => format!("the rollback cannot be checked ({e})"),
    };
    Err(format!(
        "the new firewall ruleset was not confirmed ({why}); {verdict}"
    ))
}

/// Where the audit log of applies lives on a target.
pub const AUDIT_LOG: &str = "/var/log/claw-provision/audit.log";

/// One audit line (JSON): operator, playbook, task, result, changed steps and handlers, the
/// failed step. Never an error text or a value: names only, so no secret can reach it.
fn audit_record(p: &Prepared, o: &HostOutcome, operator: &str, run: &str) -> String {
    let changed: Vec<&str> = o
        .plan
        .as_ref()
        .map(|pl| {
            pl.steps
                .iter()
                .zip(&o.statuses)
                .filter(|(_, st)| **st == StepStatus::Changed)
                .map(|(s, _)| s.name.as_str())
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "event": "finished",
        "run": run,
        "operator": operator,
        "playbook": p.playbook.name,
        "playbook_file": p.playbook.path.display().to_string(),
        "result": o.state.word(),
        "changed": changed,
        "handlers": o.handlers_run,
        "failed_at": o.failed_at,
        "elapsed_ms": o.elapsed.as_millis() as u64,
    })
    .to_string()
}

/// The `started` audit line, written by the host's first change itself (the same command), so
/// a client that dies mid-apply still leaves a trace: a `started` record without its `finished`.
fn audit_started(p: &Prepared, operator: &str, run: &str) -> String {
    serde_json::json!({
        "event": "started",
        "run": run,
        "operator": operator,
        "playbook": p.playbook.name,
        "playbook_file": p.playbook.path.display().to_string(),
    })
    .to_string()
}

/// Appends `line`, prefixed with the target's time, to the audit log (0600, root's).
fn audit_script(line: &str) -> String {
    let dir = AUDIT_LOG.rsplit_once('/').map_or("/", |(d, _)| d);
    format!(
        r#"umask 077
mkdir -p -- {d} && printf '{{"time":"%s",%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" {rest} >> {f}
"#,
        d = crate::quote::quote(dir),
        rest = crate::quote::quote(line.strip_prefix('{').unwrap_or(line)),
        f = crate::quote::quote(AUDIT_LOG),
    )
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
    let failed = |at: &str, e: String| (at.to_string(), RemoteError::Failed(e));
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

/// Whether the script of a step may carry secret material, so that `-vv` must not show it:
/// its text uses secrets (see [`uses_secrets`]), or it uploads secret content, whose sha256
/// the upload script checks (a hash of a weak password is as good as the password): `secret`
/// and `cert` steps, and files whose content is sensitive or holds a secret.
fn secret_material(step: &Step, change: &Change) -> bool {
    uses_secrets(step)
        || matches!(step.kind.as_str(), "secret" | "cert")
        || change.content.as_ref().is_some_and(|c| c.sensitive)
}

/// Whether a step's text can bring a secret value into its script: it names `secrets` (or
/// Tera's whole-context variable). Such scripts are never shown (`-vv`), masked or not: a
/// filter (`shell_quote`, `upper`, ...) can change a value past recognition.
fn uses_secrets(step: &Step) -> bool {
    fn mentions(s: &str) -> bool {
        s.contains("secrets") || s.contains("__tera_context")
    }
    fn any(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => mentions(s),
            toml::Value::Array(a) => a.iter().any(any),
            toml::Value::Table(t) => t.iter().any(|(k, v)| mentions(k) || any(v)),
            _ => false,
        }
    }
    step.when.as_deref().is_some_and(mentions) || step.args.values().any(any)
}

/// Why a step's probe answer will be stale by the time it runs: an earlier step of the plan
/// changes a file it watches, ships an image (what `compose` runs), or removes or replaces a
/// directory (or a link) above a path it manages.
fn stale_after(d: &Desired, step: &Step, plan: &HostPlan) -> Option<String> {
    if let Some(s) = plan
        .steps
        .iter()
        .find(|s| s.change.action.changes() && step.recheck_after.contains(&s.name))
    {
        return Some(format!("step `{}` changes something first", s.name));
    }
    let paths = d.paths();
    if let Some((s, c)) = plan.steps.iter().find_map(|s| {
        let c = s
            .change
            .clears
            .as_deref()
            .filter(|_| s.change.action.changes())?;
        let below = |p: &str| p.strip_prefix(c).is_some_and(|r| r.starts_with('/')) || c == "/";
        paths.iter().any(|p| below(p)).then_some((s, c))
    }) {
        return Some(format!("step `{}` removes or replaces {c} first", s.name));
    }
    let watched = d.watches();
    if watched.is_empty() {
        return None;
    }
    plan.steps
        .iter()
        .filter(|s| s.change.action.changes())
        .find_map(|s| {
            if s.kind == "image" {
                return Some(format!("step `{}` ships an image first", s.name));
            }
            let path = s.change.content.as_ref().map(|c| c.path.as_str())?;
            watched
                .iter()
                .any(|w| w == path)
                .then(|| format!("step `{}` changes {path} first", s.name))
        })
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

/// Runs a probe script and parses its answer; errors name the step whose record was bad.
/// `private`: it asks about a text a secret flowed into (it goes on stdin). Its errors are
/// masked with `mask`; a failure is described by its stderr only (its stdout holds the host's
/// secret files).
async fn run_probe(
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
        let why = probe_failure(probe, &out, mask);
        return Err(("probe".into(), RemoteError::Failed(why)));
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

/// A failed probe described by its stderr (its stdout holds the host's secret files), masked
/// with `mask`, then with the secret values it has already printed, shown as `********`
/// (`ProbeScript::secrets_read`: the host's secrets are otherwise learnt from a parsed answer,
/// which a failed probe does not give).
fn probe_failure(probe: &ProbeScript, out: &crate::ssh::ExecOutput, mask: &Mask) -> String {
    let read: Vec<(String, Secret)> = (probe.secrets_read(&out.stdout).into_iter())
        .map(|v| (String::new(), v))
        .collect();
    let text = mask.text(&crate::remote::describe_failure_stderr(out));
    Mask::new(&read, &[]).text(&text)
}

/// Hides a host's secrets in everything shown: error messages, details, reasons, targets,
/// warnings, command output, the current content of a file shown in a diff. Two nets:
/// - each text a secret flowed into when rendering (`template::Tainted`) is replaced by its
///   display rendering (each secret a marker `<secret:NAME>`): whole, shell-quoted, and line
///   by line (a display may show one line of it, e.g. a command's first line);
/// - each secret value in any of its common forms (`secret::forms`: quoted, escaped, base64,
///   URL-encoded, hex, upper/lowercase, ...; ASCII case-insensitive) is replaced by its marker
///   (the sudo password by `********`), and so is each value as the spaced hex bytes `od`
///   prints (`secret::SpacedHex`, wrapped over lines).
///
/// A file content holding either is sensitive (never diffed). Values shorter than
/// `secret::MIN_SEARCHED` are not searched for (taint still makes their steps private).
#[derive(Clone)]
struct Mask {
    /// The tainted texts (matched exactly: the texts of two steps may differ only in case) and
    /// the secrets' forms (ASCII case-insensitively): each an automaton over its needles and
    /// what replaces each. Of overlapping matches the leftmost, then longest, is replaced.
    passes: Vec<(std::sync::Arc<aho_corasick::AhoCorasick>, Vec<String>)>,
    /// Every needle (for `Remote::hide`).
    all: Vec<String>,
    /// The secret values as spaced hex bytes (matches: automaton index `passes.len()`).
    od: crate::secret::SpacedHex,
}

impl Mask {
    fn new(secrets: &[(String, Secret)], tainted: &[crate::template::Tainted]) -> Self {
        use crate::quote::quote;
        let mut exact: Vec<(String, String)> = Vec::new();
        for t in tainted {
            exact.push((t.real.clone(), t.display.clone()));
            exact.push((quote(&t.real), quote(&t.display)));
            let r: Vec<&str> = t.real.lines().collect();
            let d: Vec<&str> = t.display.lines().collect();
            for op in similar::capture_diff_slices(similar::Algorithm::Myers, &r, &d) {
                let (tag, old, new) = op.as_tag_tuple();
                if tag == similar::DiffTag::Equal {
                    continue;
                }
                let (rl, dl) = (&r[old], &d[new]);
                for (k, line) in rl.iter().enumerate() {
                    let shown = if rl.len() == dl.len() {
                        dl[k].to_string()
                    } else if dl.is_empty() {
                        crate::template::HIDDEN.to_string()
                    } else {
                        dl.join(" ")
                    };
                    exact.push((line.trim().to_string(), shown.trim().to_string()));
                    exact.push((line.to_string(), shown));
                }
            }
        }
        let mut forms: Vec<(String, String)> = Vec::new();
        let mut od = crate::secret::SpacedHex::default();
        for (name, v) in secrets {
            let shown = if name.is_empty() {
                "********".to_string()
            } else {
                crate::template::marker(name)
            };
            od.push(v, &shown);
            for f in crate::secret::forms(v.expose()) {
                forms.push((f, shown.clone()));
            }
        }
        let mut all = Vec::new();
        let mut passes = Vec::new();
        for (mut subs, ci) in [(exact, false), (forms, true)] {
            subs.retain(|(n, r)| n.len() >= crate::secret::MIN_SEARCHED && n != r);
            // Of equal needles, the first is kept.
            let mut seen = std::collections::HashSet::new();
            subs.retain(|s| seen.insert(s.0.clone()));
            if subs.is_empty() {
                continue;
            }
            let ac = aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(ci)
                .build(subs.iter().map(|s| s.0.as_bytes()))
                .expect("an automaton of a host's secret texts");
            all.extend(subs.iter().map(|s| s.0.clone()));
            passes.push((
                std::sync::Arc::new(ac),
                subs.into_iter().map(|s| s.1).collect(),
            ));
        }
        Self { passes, all, od }
    }

    /// Every text searched for: `Remote::hide` sends a script holding one on stdin.
    fn needles(&self) -> Vec<Secret> {
        self.all.iter().map(|n| Secret::new(n.clone())).collect()
    }

    /// `data` with every needle replaced; None when it holds none. Matches start and end
    /// where the needles' characters do, so UTF-8 text stays UTF-8.
    fn apply(&self, data: &[u8]) -> Option<Vec<u8>> {
        // (start, end, automaton, pattern) of every match, overlapping ones included.
        let mut ms: Vec<(usize, usize, usize, usize)> = Vec::new();
        for (a, (ac, _)) in self.passes.iter().enumerate() {
            for m in ac.find_overlapping_iter(data) {
                ms.push((m.start(), m.end(), a, m.pattern().as_usize()));
            }
        }
        let od = self.passes.len();
        ms.extend(
            self.od
                .find(data)
                .into_iter()
                .map(|(s, e, i)| (s, e, od, i)),
        );
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)).then(x.2.cmp(&y.2)));
        let mut out = Vec::with_capacity(data.len());
        let mut at = 0;
        for (start, end, a, i) in ms {
            if start < at {
                continue;
            }
            out.extend_from_slice(&data[at..start]);
            let shown = match self.passes.get(a) {
                Some(p) => &p.1[i],
                None => self.od.shown(i),
            };
            out.extend_from_slice(shown.as_bytes());
            at = end;
        }
        out.extend_from_slice(&data[at..]);
        Some(out)
    }

    fn text(&self, s: &str) -> String {
        match self.apply(s.as_bytes()) {
            // Matches start and end on character boundaries: still UTF-8.
            Some(b) => String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            None => s.to_string(),
        }
    }

    fn error(&self, e: RemoteError) -> RemoteError {
        match e {
            RemoteError::Failed(m) => RemoteError::Failed(self.text(&m)),
            RemoteError::Become(m) => RemoteError::Become(self.text(&m)),
            other => other,
        }
    }

    /// A step's change as shown. `names_secrets`: the step or its template names `secrets`;
    /// `own`: the texts of its rendering a secret flowed into. Either makes its content
    /// sensitive (even when no value appears in it as such: encoded, hashed, ...). Its own
    /// texts are replaced first: another step may have rendered the same text from other
    /// expressions (`trim` and `striptags` of a secret, say), whose marker rendering differs.
    fn content(&self, c: &mut Change, names_secrets: bool, own: &[crate::template::Tainted]) {
        let tainted = !own.is_empty();
        let own = Mask::new(&[], own);
        let text = |s: &str| self.text(&own.text(s));
        if let Some(cc) = c.content.as_mut() {
            if names_secrets || tainted || self.apply(&cc.new).is_some() {
                cc.sensitive = true;
            }
            self.old_content(cc);
        }
        for d in &mut c.details {
            *d = text(d);
        }
        for w in &mut c.warnings {
            *w = text(w);
        }
        c.reason = text(&c.reason);
        c.target = text(&c.target);
    }

    /// The current content read back from the host (the old side of a diff): a secret in it
    /// is shown as its marker.
    fn old_content(&self, cc: &mut crate::plan::ContentChange) {
        if let Some(old) = &cc.old
            && let Some(masked) = self.apply(old)
        {
            cc.old = Some(masked);
        }
    }
}

/// Refuses uploads that do not fit on the target's file systems.
fn check_space(
    probe: &ProbeScript,
    pre: &crate::fact::preflight::Preflight,
    plan: &HostPlan,
) -> Result<(), String> {
    let dirs = probe.upload_dirs();
    let mut need = vec![0u64; dirs.len()];
    for s in &plan.steps {
        if let Some(d) = &s.change.upload_dir
            && let Some(i) = dirs.iter().position(|x| x == d)
        {
            need[i] += s.change.upload_bytes;
        }
    }
    for (i, d) in dirs.iter().enumerate() {
        let free = pre.free_kb.get(i).copied().unwrap_or(u64::MAX / 1024) * 1024;
        // Keep a margin: the temp file and the old file exist side by side for a moment.
        if need[i] > 0 && need[i] + 1024 * 1024 > free {
            return Err(format!(
                "not enough disk space for the uploads into {d}: {} KiB needed, {} KiB free",
                need[i] / 1024 + 1024,
                free / 1024
            ));
        }
    }
    Ok(())
}

/// Largest file whose current content is fetched to show a diff.
const MAX_DIFF_BYTES: u64 = 512 * 1024;

/// Whether content read back for a diff is the file the probe hashed. Between the probe and
/// this read another account owning the directory may have swapped the file (for a link to a
/// file only root may read, say): what does not match the probed sha256 is never shown.
fn old_content_is_the_probed_one(c: &crate::plan::ContentChange, body: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    c.old_sha256
        .as_deref()
        .is_some_and(|h| h.eq_ignore_ascii_case(&hex::encode(Sha256::digest(body))))
}

async fn fetch_old_contents(
    remote: &Remote,
    plan: &mut HostPlan,
    timeout: Duration,
    mask: &Mask,
) -> Result<(), RemoteError> {
    let mut script = String::new();
    let mut wanted = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        // A sensitive file only when it is an env file: its keys are compared, never shown.
        if let Some(c) = &s.change.content
            && c.old_sha256.is_some()
            && (!c.sensitive || crate::plan::env_lines(&c.new).is_some())
            && s.change.action == crate::plan::Action::Update
        {
            script.push_str(&format!(
                "[ -f {p} ] && [ ! -L {p} ] && s=$(wc -c < {p}) && [ \"$s\" -le {MAX_DIFF_BYTES} ] && {{ printf '@%s\\t%s\\n' {i} \"$s\"; cat -- {p}; }}\n",
                p = crate::quote::quote(&c.path)
            ));
            wanted.push(i);
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    script.push_str("exit 0\n");
    // Bounded by what was asked: each file's header and at most MAX_DIFF_BYTES.
    let max = wanted.len() * (MAX_DIFF_BYTES as usize + 64) + 4096;
    let limits = crate::ssh::Limits {
        stdout: crate::ssh::Keep::Whole { max },
        ..crate::ssh::Limits::PROBE
    };
    let out = remote.run_with(&script, &[], limits, timeout).await?;
    let mut data: &[u8] = &out.stdout;
    while let Some(nl) = data.iter().position(|b| *b == b'\n') {
        let header = String::from_utf8_lossy(&data[..nl]).to_string();
        let Some((i, n)) = header.strip_prefix('@').and_then(|h| h.split_once('\t')) else {
            break;
        };
        let (Ok(i), Ok(n)) = (i.parse::<usize>(), n.trim().parse::<usize>()) else {
            break;
        };
        let body = &data[nl + 1..];
        if body.len() < n || i >= plan.steps.len() {
            break;
        }
        if let Some(c) = plan.steps[i].change.content.as_mut()
            && old_content_is_the_probed_one(c, &body[..n])
        {
            if c.sensitive {
                c.keys = crate::plan::env_keys(Some(&body[..n]), &c.new);
            } else {
                c.old = Some(body[..n].to_vec());
                mask.old_content(c);
            }
        }
        data = &body[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ContentChange;

    #[test]
    fn old_content_is_shown_only_when_it_is_the_probed_file() {
        use sha2::{Digest, Sha256};
        let mut c = ContentChange {
            path: "/srv/app/conf".into(),
            old_sha256: Some(hex::encode(Sha256::digest(b"old\n"))),
            new: Arc::new(b"new\n".to_vec()),
            sensitive: false,
            old: None,
            keys: None,
        };
        assert!(old_content_is_the_probed_one(&c, b"old\n"));
        // Swapped after the probe (a link to another file, say): not the file the probe hashed.
        assert!(!old_content_is_the_probed_one(
            &c,
            b"root:$6$...:19000::::::\n"
        ));
        c.old_sha256 = None;
        assert!(!old_content_is_the_probed_one(&c, b"old\n"));
    }

    fn step(kind: &str, change: Change) -> StepPlan {
        StepPlan {
            name: format!("a {kind}"),
            kind: kind.into(),
            change,
            notify: vec![],
            output: None,
        }
    }

    fn pb_step(recheck_after: &[&str]) -> Step {
        Step {
            name: "s".into(),
            kind: "command".into(),
            args: toml::Table::new(),
            when: None,
            notify: vec![],
            tags: vec![],
            timeout: None,
            recheck_after: recheck_after.iter().map(|s| s.to_string()).collect(),
            rescue: false,
            not_selected: None,
            line: 1,
        }
    }

    #[test]
    fn steps_not_selected_are_checked_but_not_probed() {
        let dir = tempfile::tempdir().unwrap();
        let inv_path = dir.path().join("inv.toml");
        std::fs::write(&inv_path, "[defaults]\nuser = \"u\"\n[hosts.h1]\n").unwrap();
        let inv = Inventory::load_with(&inv_path, &crate::inventory::SshConfigChoice::Off).unwrap();
        let hosts: Vec<&Host> = inv.hosts.iter().collect();
        let src = |second: &str| {
            format!(
                "name = \"p\"\n[[steps]]\nname = \"a\"\nkind = \"dir\"\npath = \"/a\"\ntags = [\"x\"]\n\
                 [[steps]]\nname = \"b\"\nkind = \"dir\"\npath = \"{second}\"\ntags = [\"y\"]\n"
            )
        };
        let filter = crate::select::StepFilter {
            tags: vec!["x".into()],
            ..Default::default()
        };
        let mut pb = Playbook::parse(&dir.path().join("pb.toml"), &src("/b")).unwrap();
        crate::select::select_steps(&mut pb, &filter).unwrap();
        let p = prepare(&inv, &pb, &hosts, &[]).unwrap();
        assert!(p[0].steps[0].probe_desired.is_some());
        assert!(p[0].steps[1].probe_desired.is_none(), "not probed");
        // The render after the probe skips it, with the reason the plan shows.
        let ctx = full_context(
            &p[0].base,
            &p[0].playbook.inventory,
            &crate::fact::HostFacts::placeholder(),
            &[],
        );
        let r = render(&p[0].steps, &p[0].playbook, &ctx, true).unwrap();
        assert!(r.steps[0].is_ok());
        assert_eq!(
            r.steps[1].as_ref().unwrap_err(),
            "not selected: no tag of --tags x"
        );
        // Bad input in a step not selected still stops the run before any connection.
        let mut pb = Playbook::parse(&dir.path().join("pb.toml"), &src("{{ nope }}")).unwrap();
        crate::select::select_steps(&mut pb, &filter).unwrap();
        let e = prepare(&inv, &pb, &hosts, &[]).unwrap_err().to_string();
        assert!(e.contains("step `b` on host `h1`"), "{e}");
    }

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
            s.kind = kind.into();
            assert!(secret_material(&s, &plain), "{kind}");
        }
        // a file whose content is sensitive (or holds a secret: the mask marks it so)
        s.kind = "file".into();
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

    #[test]
    fn steps_naming_secrets_write_sensitive_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            (
                "plain.tera",
                "# the .env holds the secrets\nlisten {{ port }};\n",
            ),
            ("secret.tera", "auth={{ secrets.k | urlencode }}\n"),
            (
                "loop.tera",
                "{% for k, v in secrets %}{{ k }}{% endfor %}\n",
            ),
            ("comment.tera", "{# secrets #}x={{ a }}\n"),
        ];
        for (f, t) in files {
            std::fs::write(dir.path().join(f), t).unwrap();
        }
        let with = |kind: &str, args: &str| {
            let mut s = pb_step(&[]);
            s.kind = kind.into();
            s.args = toml::from_str(args).unwrap();
            names_secrets(&s, dir.path())
        };
        let t = |src: &str| with("template", &format!("src = {src:?}\npath = \"/x\""));
        assert!(!t("plain.tera"));
        assert!(!t("comment.tera"));
        assert!(t("secret.tera"));
        assert!(t("loop.tera"));
        assert!(t("{{ name }}.tera"));
        assert!(t("missing.tera"));
        assert!(with(
            "file",
            "content = \"k={{ secrets.k }}\"\npath = \"/x\""
        ));
        assert!(!with("file", "content = \"k={{ k }}\"\npath = \"/x\""));
        // The mask then hides the content, whatever form the secret took in it: a common
        // encoding is found by the search, anything else by the step's marking.
        let mask = Mask::new(&[("k".into(), Secret::new("value-of-k"))], &[]);
        let mut c = file_change("/x");
        c.content.as_mut().unwrap().new = Arc::new(b"auth=dmFsdWUtb2Ytaw==\n".to_vec());
        mask.content(&mut c, false, &[]);
        assert!(
            c.content.as_ref().unwrap().sensitive,
            "base64 is searched for"
        );
        let mut c = file_change("/x");
        c.content.as_mut().unwrap().new = Arc::new(b"auth=k-fo-eulav\n".to_vec());
        mask.content(&mut c, false, &[]);
        assert!(!c.content.as_ref().unwrap().sensitive);
        mask.content(&mut c, true, &[]);
        assert!(c.content.as_ref().unwrap().sensitive);
    }

    /// A host's secrets and the texts rendered from them, through the real render.
    fn tainted_mask(pw: &str, templates: &[&str]) -> (Mask, Vec<String>, Vec<String>) {
        let ctx = serde_json::json!({"secrets": {"DB_PW": pw}})
            .as_object()
            .unwrap()
            .clone();
        let (real, found) = crate::template::track(|| {
            (templates.iter())
                .map(|t| crate::template::render_str(t, &ctx).unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(found.len(), templates.len());
        let secrets = [
            ("DB_PW".to_string(), Secret::new(pw)),
            (String::new(), Secret::new("sudo-pw-1234")),
        ];
        let shown = found.iter().map(|t| t.display.clone()).collect();
        (Mask::new(&secrets, &found), real, shown)
    }

    #[test]
    fn the_mask_shows_the_marker_rendering_of_tainted_text() {
        let pw = "it's-a-long-secret-value";
        let (mask, real, shown) = tainted_mask(
            pw,
            &[
                "mysql -p{{ secrets.DB_PW | shell_quote }} -e 'select 1'\nsecond {{ secrets.DB_PW | upper }}",
                "{{ secrets.DB_PW | truncate(length=10) }}",
                "/opt/{{ secrets.DB_PW | replace(from='-', to='') | title }}",
            ],
        );
        // The whole text, its first line (a command's summary), shell-quoted.
        assert_eq!(
            mask.text(&format!("run: {}", real[0])),
            "run: mysql -p'<secret:DB_PW>' -e 'select 1'\nsecond <SECRET:DB_PW>"
        );
        let first = real[0].lines().next().unwrap();
        assert_eq!(
            mask.text(&format!("{first} …")),
            "mysql -p'<secret:DB_PW>' -e 'select 1' …"
        );
        assert!(shown[2].starts_with("/opt/<Secret:"), "{}", shown[2]);
        assert_eq!(
            mask.text(&format!("test -e {}", crate::quote::quote(&real[2]))),
            format!("test -e '{}'", shown[2])
        );
        // A truncation is no form of the value the search knows: the taint shows it.
        assert_eq!(mask.text(&format!("[{}]", real[1])), "[<secret:DB…]");
        // The second net: the raw value in any common form, ASCII case-insensitively.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(pw);
        let host_text = format!(
            "err {pw} {} {b64} it%27s-a-long-secret-value {} \"it's-a-long-secret-value\" sudo-pw-1234",
            pw.to_uppercase(),
            crate::quote::quote(pw)
        );
        let shown = mask.text(&host_text);
        assert_eq!(
            shown,
            "err <secret:DB_PW> <secret:DB_PW> <secret:DB_PW> <secret:DB_PW> <secret:DB_PW> \"<secret:DB_PW>\" ********"
        );
        // The needles `Remote::hide` gets include the tainted texts, so a script holding one
        // goes on stdin whatever filter made it.
        let needles: Vec<String> = mask
            .needles()
            .iter()
            .map(|s| s.expose().to_string())
            .collect();
        for r in &real {
            assert!(needles.contains(r), "{r}");
        }
    }

    #[test]
    fn rendering_marks_tainted_steps_and_masks_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let pb = Playbook::parse(
            &dir.path().join("pb.toml"),
            "name = \"p\"\n\
             [[steps]]\nname = \"plain\"\nkind = \"command\"\nrun = \"echo {{ secrets.K | length > 0 }}\"\n\
             [[steps]]\nname = \"tainted\"\nkind = \"command\"\nrun = \"echo {{ secrets.K | upper | shell_quote }}\"\n\
             [[steps]]\nname = \"bad\"\nkind = \"command\"\nrun = \"true\"\ncreates = \"x/{{ secrets.K | reverse }}\"\n\
             [[handlers]]\nname = \"h\"\nkind = \"command\"\nrun = \"echo {{ secrets.K | lower }}\"\n",
        )
        .unwrap();
        let info = PlaybookInfo {
            path: pb.path.clone(),
            name: pb.name.clone(),
            files_dir: dir.path().into(),
            templates_dir: dir.path().into(),
            handlers: pb.handlers.clone(),
            operator_secrets: vec![],
            secret_names: vec![],
            task: false,
            rollout: Default::default(),
            inventory: Value::Null,
        };
        let steps: Vec<PreparedStep> = (pb.steps.iter())
            .map(|s| PreparedStep {
                step: s.clone(),
                probe_desired: None,
                context_free: false,
                names_secrets: true,
            })
            .collect();
        let ctx = serde_json::json!({"secrets": {"K": "key-Value-123"}})
            .as_object()
            .unwrap()
            .clone();
        let r = render(&steps[..2], &info, &ctx, true).unwrap();
        assert_eq!(r.tainted[0], vec![], "a test of the value shows none of it");
        assert_eq!(r.tainted[1].len(), 1);
        assert_eq!(r.tainted[1][0].display, "echo '<SECRET:K>'");
        assert_eq!(r.tainted_handlers, ["h"]);
        assert_eq!(r.found.len(), 2);
        // The offline render (stand-ins) is not tracked.
        let r = render(&steps[..2], &info, &ctx, false).unwrap();
        assert!(r.found.is_empty() && r.tainted[1].is_empty());
        // An error quoting a tainted text (here reversed: no form the search knows).
        let Err(e) = render(&steps, &info, &ctx, true) else {
            panic!("a relative `creates` is an error")
        };
        assert_eq!(e.len(), 1);
        assert!(e[0].1.contains("x/>K:terces<"), "{e:?}");
        assert!(!e[0].1.contains("321-eulaV"), "{e:?}");
    }

    #[test]
    fn the_old_side_of_a_diff_and_host_errors_are_masked() {
        let pw = "Ünï-\"q\\$x-\nline-two-val";
        let (mask, _, _) = tainted_mask(pw, &["{{ secrets.DB_PW | lower }}"]);
        let mut c = file_change("/etc/app.conf");
        {
            let cc = c.content.as_mut().unwrap();
            cc.new = Arc::new(b"password=none\n".to_vec());
            cc.old = Some(format!("password={pw}\nother=LINE-TWO-VAL\n").into_bytes());
        }
        mask.content(&mut c, false, &[]);
        let cc = c.content.as_ref().unwrap();
        assert!(!cc.sensitive, "the new side holds no secret");
        assert_eq!(
            String::from_utf8(cc.old.clone().unwrap()).unwrap(),
            "password=<secret:DB_PW>\nother=<secret:DB_PW>\n"
        );
        // The text the step rendered (lowercased) is its display rendering.
        let e = mask.error(RemoteError::Failed(format!("bad: {}", pw.to_lowercase())));
        assert_eq!(e.to_string(), "bad: <secret:db_pw>");
        // Nothing to hide: the same text.
        assert_eq!(mask.text("ünïcode ok"), "ünïcode ok");
    }

    /// The secret values a probe printed before it failed are masked in its description
    /// (its stderr), in any form, beside the secrets known before (`mask`); its stdout is
    /// never shown. The output is cut inside a second value: the start it holds is masked.
    #[test]
    fn a_failed_probe_is_described_without_the_secrets_it_read() {
        use base64::Engine as _;
        let mut probe = ProbeScript::default();
        for p in ["/srv/a", "/srv/b"] {
            probe.add(crate::fact::Request::Secret {
                path: p.into(),
                guard: None,
            });
        }
        let host = "host-secret-\u{e9}-1234";
        let cut = "second-secret-cut-off-here";
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{host}\n"));
        let od: String = cut.bytes().map(|b| format!(" {b:02x}")).collect();
        let stdout = format!(
            "@fact-os\tlinux\n@0\tpresent\t600 root root\t{b64}\n@secrets\t1\n\
             @secrets-st\t600 root root 26\n@secrets-od\t{}",
            &od[..od.len() - 20]
        );
        let hex: String = host.bytes().map(|b| format!("{b:02x}")).collect();
        let od_host: String = host.bytes().map(|b| format!(" {b:02x}")).collect();
        let stderr = format!(
            "raw {host}\nhex {hex} {}\n{}\nop op-secret-value\ncut {cut}\n",
            hex.to_uppercase(),
            od_host.trim()
        );
        let out = crate::ssh::ExecOutput {
            exit_status: Some(1),
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
            ..Default::default()
        };
        let mask = Mask::new(&[("OP".into(), Secret::new("op-secret-value"))], &[]);
        let why = probe_failure(&probe, &out, &mask);
        assert_eq!(
            why,
            "exit status 1: raw ******** | hex ******** ******** | ******** | \
             op <secret:OP> | cut ********ff-here"
        );
        // Without the records, the same stderr shows the host's secret.
        let bare = crate::ssh::ExecOutput {
            stdout: vec![],
            ..out
        };
        assert!(probe_failure(&probe, &bare, &mask).contains(host));
    }

    #[test]
    fn context_free_steps() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain.tera"), "listen {{ port }};\n").unwrap();
        std::fs::write(dir.path().join("secret.tera"), "KEY={{ secrets.k }}\n").unwrap();
        let with = |kind: &str, args: &str, when: Option<&str>| {
            let mut s = pb_step(&[]);
            s.kind = kind.into();
            s.args = toml::from_str(args).unwrap();
            s.when = when.map(String::from);
            context_free(&s, dir.path())
        };
        assert!(with("command", "run = \"echo {{ app }}\"", None));
        assert!(with(
            "template",
            "src = \"plain.tera\"\npath = \"/x\"",
            Some("app == \"a\"")
        ));
        assert!(!with("command", "run = \"echo {{ facts.arch }}\"", None));
        assert!(!with("command", "env = { A = \"{{ secrets.k }}\" }", None));
        assert!(!with("command", "run = \"true\"", Some("facts.docker")));
        assert!(!with(
            "template",
            "src = \"secret.tera\"\npath = \"/x\"",
            None
        ));
        assert!(!with(
            "template",
            "src = \"{{ name }}.tera\"\npath = \"/x\"",
            None
        ));
        assert!(!with(
            "template",
            "src = \"missing.tera\"\npath = \"/x\"",
            None
        ));
    }

    fn file_change(path: &str) -> Change {
        let mut c = Change::new(crate::plan::Action::Update, path, "", "true".into());
        c.content = Some(ContentChange {
            path: path.into(),
            old_sha256: None,
            new: Arc::new(vec![]),
            sensitive: false,
            old: None,
            keys: None,
        });
        c
    }

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
    }

    #[test]
    fn compose_is_probed_again_after_its_files_or_images_change() {
        let t = toml::from_str::<toml::Table>(
            "project = \"p\"\nfile = \"/opt/p/compose.yml\"\nenv_file = \"/opt/p/.env\"\n",
        )
        .unwrap();
        let d = resource::desired(
            "compose",
            &t,
            &Map::new(),
            &Sources {
                files_dir: std::path::Path::new("."),
                templates_dir: std::path::Path::new("."),
            },
        )
        .unwrap();
        let plan = |steps: Vec<StepPlan>| HostPlan {
            steps,
            ..HostPlan::default()
        };
        // (earlier steps, expected reason)
        let cases = [
            (
                vec![step("template", file_change("/opt/p/compose.yml"))],
                Some("changes /opt/p/compose.yml"),
            ),
            (
                vec![step("template", file_change("/opt/p/.env"))],
                Some("changes /opt/p/.env"),
            ),
            (
                vec![step("template", file_change("/opt/p/nginx.conf"))],
                None,
            ),
            (
                vec![step(
                    "template",
                    Change::noop("/opt/p/compose.yml", "up to date"),
                )],
                None,
            ),
            (
                vec![step(
                    "image",
                    Change::new(crate::plan::Action::Create, "img", "", "x".into()),
                )],
                Some("ships an image first"),
            ),
            (vec![], None),
        ];
        for (steps, want) in cases {
            let got = stale_after(&d, &pb_step(&[]), &plan(steps));
            match want {
                Some(w) => assert!(got.as_deref().is_some_and(|g| g.contains(w)), "{got:?}"),
                None => assert_eq!(got, None),
            }
        }
        // Other kinds watch nothing.
        let dir = toml::from_str::<toml::Table>("path = \"/opt/p\"\n").unwrap();
        let dd = resource::desired(
            "dir",
            &dir,
            &Map::new(),
            &Sources {
                files_dir: std::path::Path::new("."),
                templates_dir: std::path::Path::new("."),
            },
        )
        .unwrap();
        assert!(dd.watches().is_empty());
        // `recheck_after`: stale when a named step changes something, whatever the kind.
        let build = |c: Change| {
            let mut s = step("command", c);
            s.name = "build".into();
            s
        };
        let run = Change::new(crate::plan::Action::Run, "make", "", "make".into());
        let got = stale_after(&dd, &pb_step(&["build"]), &plan(vec![build(run.clone())]));
        assert_eq!(got.as_deref(), Some("step `build` changes something first"));
        assert_eq!(
            stale_after(
                &dd,
                &pb_step(&["build"]),
                &plan(vec![build(Change::noop("make", ""))])
            ),
            None
        );
        assert_eq!(
            stale_after(&dd, &pb_step(&["other"]), &plan(vec![build(run)])),
            None
        );
    }

    /// A path below a directory (or link) an earlier step removes or replaces was probed
    /// before that: it is probed again when reached (a link's target had answered for it).
    #[test]
    fn paths_below_a_replaced_directory_are_probed_again() {
        let src = Sources {
            files_dir: std::path::Path::new("."),
            templates_dir: std::path::Path::new("."),
        };
        let desired = |kind: &str, t: &str| {
            resource::desired(kind, &toml::from_str(t).unwrap(), &Map::new(), &src).unwrap()
        };
        let parent = desired("dir", "path = \"/srv/a\"\nforce = true\n");
        let child = desired("file", "path = \"/srv/a/f\"\ncontent = \"x\"\n");
        let sibling = desired("file", "path = \"/srv/ab\"\ncontent = \"x\"\n");
        let plan = |c: Change| HostPlan {
            steps: vec![step("dir", c)],
            ..HostPlan::default()
        };
        let replaced = match &parent {
            Desired::Dir(d) => d.diff(&crate::fact::PathState::Link).unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(replaced.clears.as_deref(), Some("/srv/a"));
        let got = stale_after(&child, &pb_step(&[]), &plan(replaced.clone()));
        assert_eq!(
            got.as_deref(),
            Some("step `a dir` removes or replaces /srv/a first")
        );
        assert_eq!(stale_after(&sibling, &pb_step(&[]), &plan(replaced)), None);
        assert_eq!(
            stale_after(&child, &pb_step(&[]), &plan(Change::noop("/srv/a", "ok"))),
            None
        );
    }
}
