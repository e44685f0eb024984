//! One run of `plan` or `apply`: prepares every host offline, then per host, on ONE connection:
//! probe (one round trip) → diff → (plan: show | apply: only the changes, then handlers).
//!
//! **Invariant:** `plan` never runs anything but the read-only probe and content fetch.
//! **Invariant:** bad input fails the whole run before any connection is made.

use crate::error::{ConfigError, ConfigErrors};
use crate::fact::{ProbeError, ProbeScript};
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
    pub name: String,
    pub kind: String,
    pub notify: Vec<String>,
    pub timeout: Option<Duration>,
    /// None when `when` is false on this host.
    pub desired: Option<Desired>,
    pub skip_reason: String,
}

/// A host with its steps rendered.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub host: Host,
    pub steps: Vec<PreparedStep>,
    pub handlers: Vec<(String, Option<Duration>, command::Desired)>,
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

/// Renders every step for every host. All problems are returned together.
pub fn prepare(
    inv: &Inventory,
    pb: &Playbook,
    hosts: &[&Host],
    extra: &[(String, String)],
) -> Result<Vec<Prepared>, ConfigErrors> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let sources = Sources {
        files_dir: &pb.dir,
        templates_dir: &pb.templates_dir,
    };
    for host in hosts {
        let ctx = crate::vars::context(inv, host, pb, extra);
        let mut steps = Vec::new();
        for step in &pb.steps {
            let mut p = PreparedStep {
                name: step.name.clone(),
                kind: step.kind.clone(),
                notify: step.notify.clone(),
                timeout: step.timeout,
                desired: None,
                skip_reason: String::new(),
            };
            if let Some(w) = &step.when {
                match crate::template::eval_when(w, &ctx) {
                    Ok(true) => {}
                    Ok(false) => {
                        p.skip_reason = format!("when: {w}");
                        steps.push(p);
                        continue;
                    }
                    Err(e) => {
                        errors.push(step_error(pb, step, host, &e));
                        continue;
                    }
                }
            }
            match resource::desired(&step.kind, &step.args, &ctx, &sources) {
                Ok(d) => p.desired = Some(d),
                Err(e) => errors.push(step_error(pb, step, host, &e)),
            }
            steps.push(p);
        }
        let mut handlers = Vec::new();
        for h in &pb.handlers {
            match resource::desired(&h.kind, &h.args, &ctx, &sources) {
                Ok(Desired::Command(c)) => handlers.push((h.name.clone(), h.timeout, c)),
                Ok(_) => {}
                Err(e) => errors.push(step_error(pb, h, host, &e)),
            }
        }
        out.push(Prepared {
            host: (*host).clone(),
            steps,
            handlers,
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
        }
    }

    pub fn count(&self, s: StepStatus) -> usize {
        self.statuses.iter().filter(|x| **x == s).count()
    }
}

/// Events a run reports while it goes (progress lines, JSON events).
pub trait Observer: Send + Sync {
    fn phase(&self, _host: &str, _phase: &str) {}
    fn step(&self, _host: &str, _step: &StepPlan, _status: StepStatus, _error: Option<&str>) {}
    fn handler(&self, _host: &str, _name: &str, _status: StepStatus, _error: Option<&str>) {}
    fn host_done(&self, _outcome: &HostOutcome) {}
}

/// Options of a run that are not in the input files.
pub struct RunOptions {
    pub mode: Mode,
    pub forks: usize,
    pub become_password: Option<Secret>,
    /// Fetch current contents of changed files to show diffs (costs one more round trip).
    pub fetch_diffs: bool,
    pub passphrases: Arc<dyn PassphraseSource>,
}

/// The decision after the plan was shown: apply or not.
pub type Gate = watch::Receiver<Option<bool>>;

/// Where hosts send their plan (Some) before waiting at the gate, and None when they end.
pub type PlanSender = tokio::sync::mpsc::UnboundedSender<(String, Option<HostPlan>)>;

struct Ctx {
    opts: RunOptions,
    sem: Semaphore,
    observer: Arc<dyn Observer>,
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
    let ctx = Arc::new(Ctx {
        sem: Semaphore::new(opts.forks.max(1)),
        opts,
        observer,
    });
    let mut tasks = Vec::new();
    for p in prepared {
        let ctx = ctx.clone();
        let gate = gate.clone();
        let name = p.host.name.clone();
        let address = p.host.address.clone();
        // Tells the confirmation gate that this host ended, even if its task panicked.
        let ended = EndGuard(gate.as_ref().map(|(_, tx)| (tx.clone(), name.clone())));
        let task = tokio::spawn(async move {
            let _ended = ended;
            let outcome = host_task(&ctx, p, gate).await;
            ctx.observer.host_done(&outcome);
            outcome
        });
        tasks.push((name, address, task));
    }
    drop(gate);
    let mut out = Vec::new();
    for (name, address, t) in tasks {
        out.push(t.await.unwrap_or_else(|e| HostOutcome {
            state: HostState::Failed,
            error: Some(format!(
                "internal error: the host's task ended abnormally: {e} (bug, please report)"
            )),
            ..HostOutcome::new(name, address)
        }));
    }
    out
}

fn connect_spec(h: &Host) -> ConnectSpec {
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
        known_hosts: h.known_hosts.clone(),
        policy: match h.host_key_policy {
            HostKeyPolicy::Strict => ssh::HostKeyPolicy::Strict,
            HostKeyPolicy::AcceptNew => ssh::HostKeyPolicy::AcceptNew,
        },
        connect_timeout: h.connect_timeout,
        keepalive_interval: ssh::DEFAULT_KEEPALIVE_INTERVAL,
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

async fn host_task(ctx: &Ctx, p: Prepared, gate: Option<(Gate, PlanSender)>) -> HostOutcome {
    let start = Instant::now();
    let mut o = HostOutcome::new(p.host.name.clone(), p.host.address.clone());
    let permit = ctx.sem.acquire().await.expect("semaphore is never closed");
    let name = p.host.name.clone();
    ctx.observer.phase(&name, "connecting");
    let session =
        match ssh::Session::connect(&connect_spec(&p.host), ctx.opts.passphrases.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                o.state = if e.is_unreachable() {
                    HostState::Unreachable
                } else {
                    HostState::Failed
                };
                o.error = Some(e.to_string());
                o.failed_at = Some("connect".into());
                o.elapsed = start.elapsed();
                return o;
            }
        };
    let remote = Remote {
        session,
        // Logged in as the become user already (typically root): no sudo needed.
        become_: (p.host.become_ && p.host.user != p.host.become_user).then(|| Become {
            user: p.host.become_user.clone(),
            password: ctx.opts.become_password.clone(),
        }),
    };
    let result = drive(ctx, &p, &remote, &mut o, permit, gate).await;
    if let Err((at, e)) = result {
        o.state = HostState::Failed;
        o.error = Some(e.to_string());
        o.failed_at = Some(at);
    }
    o.stats = remote.session.stats();
    remote.session.close().await;
    o.elapsed = start.elapsed();
    o
}

type StepErr = (String, RemoteError);

async fn drive(
    ctx: &Ctx,
    p: &Prepared,
    remote: &Remote,
    o: &mut HostOutcome,
    permit: tokio::sync::SemaphorePermit<'_>,
    gate: Option<(Gate, PlanSender)>,
) -> Result<(), StepErr> {
    let name = &p.host.name;
    let default_timeout = p.host.command_timeout;
    // 1. Probe: every step's facts and the preflight in one round trip.
    ctx.observer.phase(name, "probing");
    let mut probe = ProbeScript::default();
    let ids: Vec<Vec<usize>> = p
        .steps
        .iter()
        .map(|s| {
            s.desired
                .as_ref()
                .map(|d| d.probe(&mut probe))
                .unwrap_or_default()
        })
        .collect();
    let out = remote
        .run(&probe.script(), &[], default_timeout)
        .await
        .map_err(|e| ("probe".to_string(), e))?;
    if !out.success() {
        return Err((
            "probe".into(),
            RemoteError::Failed(crate::remote::describe_failure(&out)),
        ));
    }
    let facts = probe
        .parse(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| {
            let at = match &e {
                ProbeError::Preflight(_) => "preflight".to_string(),
                ProbeError::Output {
                    request: Some(r), ..
                } => ids
                    .iter()
                    .position(|id| id.contains(r))
                    .map_or_else(|| "probe".to_string(), |i| p.steps[i].name.clone()),
                ProbeError::Output { request: None, .. } => "probe".to_string(),
            };
            (at, RemoteError::Failed(e.to_string()))
        })?;
    // 2. Diff (pure).
    let mut plan = HostPlan::default();
    for (s, id) in p.steps.iter().zip(&ids) {
        let change = match &s.desired {
            Some(d) => d
                .diff(&id.iter().map(|i| &facts.observed[*i]).collect::<Vec<_>>())
                .map_err(|e| (s.name.clone(), RemoteError::Failed(e)))?,
            None => Change::skip(String::new(), s.skip_reason.clone()),
        };
        plan.steps.push(StepPlan {
            name: s.name.clone(),
            kind: s.kind.clone(),
            change,
            notify: s.notify.clone(),
        });
    }
    check_space(&probe, &facts.preflight, &plan)
        .map_err(|e| ("preflight".to_string(), RemoteError::Failed(e)))?;
    // 3. Current contents of changed files, only to show diffs (one more round trip).
    if ctx.opts.fetch_diffs {
        fetch_old_contents(remote, &mut plan, default_timeout)
            .await
            .map_err(|e| ("diff".to_string(), e))?;
    }
    o.plan = Some(plan.clone());
    if ctx.opts.mode == Mode::Plan {
        o.state = if plan.is_empty() {
            HostState::Ok
        } else {
            HostState::Changed
        };
        return Ok(());
    }
    // 4. Wait for the operator's decision when asked to.
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
        ctx.sem.acquire().await.expect("semaphore is never closed")
    } else {
        permit
    };
    // 5. Apply only the changes, in order; stop this host at the first failure.
    o.statuses = plan.steps.iter().map(|_| StepStatus::NotRun).collect();
    let mut changed = false;
    for (i, (sp, ps)) in plan.steps.iter().zip(&p.steps).enumerate() {
        let status = match (&sp.change.op, sp.change.action) {
            (_, crate::plan::Action::Skip) => StepStatus::Skipped,
            (None, _) => StepStatus::Ok,
            (Some(op), _) => {
                ctx.observer
                    .phase(name, &format!("{} {}", sp.change.action.word(), sp.name));
                let timeout = ps.timeout.unwrap_or(default_timeout);
                match remote.run_ok(&op.script, &op.stdin, timeout).await {
                    // A passing check changes nothing.
                    Ok(_) if sp.change.action == crate::plan::Action::Check => StepStatus::Ok,
                    Ok(_) => {
                        changed = true;
                        StepStatus::Changed
                    }
                    Err(e) => {
                        o.statuses[i] = StepStatus::Failed;
                        ctx.observer
                            .step(name, sp, StepStatus::Failed, Some(&e.to_string()));
                        o.state = HostState::Failed;
                        return Err((sp.name.clone(), e));
                    }
                }
            }
        };
        o.statuses[i] = status;
        ctx.observer.step(name, sp, status, None);
    }
    // 6. Handlers notified by changed steps, in the order they are declared.
    let notified = plan.notified();
    for (hname, timeout, cmd) in p.handlers.iter().filter(|(n, _, _)| notified.contains(n)) {
        ctx.observer.phase(name, &format!("handler {hname}"));
        match remote
            .run_ok(&cmd.script(), &[], timeout.unwrap_or(default_timeout))
            .await
        {
            Ok(_) => {
                o.handlers_run.push(hname.clone());
                ctx.observer.handler(name, hname, StepStatus::Changed, None);
            }
            Err(e) => {
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

async fn fetch_old_contents(
    remote: &Remote,
    plan: &mut HostPlan,
    timeout: Duration,
) -> Result<(), RemoteError> {
    let mut script = String::new();
    let mut wanted = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        if let Some(c) = &s.change.content
            && c.old_sha256.is_some()
            && !c.sensitive
            && s.change.action == crate::plan::Action::Update
        {
            script.push_str(&format!(
                "s=$(wc -c < {p}) && [ \"$s\" -le {MAX_DIFF_BYTES} ] && {{ printf '@%s\\t%s\\n' {i} \"$s\"; cat -- {p}; }}\n",
                p = crate::quote::quote(&c.path)
            ));
            wanted.push(i);
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    script.push_str("exit 0\n");
    let out = remote.run(&script, &[], timeout).await?;
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
        if let Some(c) = plan.steps[i].change.content.as_mut() {
            c.old = Some(body[..n].to_vec());
        }
        data = &body[n..];
    }
    Ok(())
}
