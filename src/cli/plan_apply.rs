//! `plan` and `apply` as named steps: read the saved plan, load and prepare, fingerprint the
//! inputs, run with an observer (showing the plans and asking between the two halves of
//! apply), summarise, write the plan file, and the exit.

use super::load::{Loaded, load, select};
use super::options::{PlanApply, Saved, check_confirmable};
use super::*;
use crate::report::prompt::{self, Passphrases, become_password};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

/// Ctrl-C during a run: the first lets every host finish its running step and stop (locks go
/// with the connections, the summary is printed); the second ends the process at once.
pub(super) fn on_ctrl_c(interrupt: Arc<std::sync::atomic::AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        interrupt.store(true, std::sync::atomic::Ordering::SeqCst);
        report::err(
            "\ninterrupted: every host stops after its running step (Ctrl-C again to abort now)\n",
        );
        if tokio::signal::ctrl_c().await.is_ok() {
            report::err("aborted\n");
            std::process::exit(130);
        }
    });
}

/// Who takes the apply lock: `user@machine pid N, playbook NAME[, task T]` (no secret in it).
pub(super) fn lock_holder(pb: &Playbook) -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }));
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let machine = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".into()
    };
    format!(
        "{user}@{machine} pid {}, playbook {}{}",
        std::process::id(),
        pb.name,
        pb.task
            .as_ref()
            .map(|t| format!(", task {t}"))
            .unwrap_or_default()
    )
}

/// `plan` or `apply`, from validated options.
pub(super) fn run_cmd(
    o: PlanApply,
    ssh: &crate::inventory::SshConfigChoice,
) -> Result<Outcome, Error> {
    if o.confirm_force_unlock {
        prompt::confirm_force_unlock()?;
    }
    check_confirmable(&o, prompt::interactive())?;
    // A saved plan that cannot be used stops the run before anything else.
    let plan_file = read_saved(&o.saved)?;
    let l = load(&o.run.select, &o.run.steps.filter(), ssh)?;
    let hosts = select(&l, &o.run.select)?;
    let prepared = crate::run::prepare(&l.inv, &l.pb, &hosts, &o.run.select.extra)?;
    let (key, inputs) = fingerprint(&o, &l, plan_file.as_deref(), &prepared)?;
    // What `plan --out` writes needs the hosts' steps after the run.
    let kept: Vec<Prepared> = match &o.saved {
        Saved::Out(_) => prepared.clone(),
        _ => Vec::new(),
    };
    let v = o.verbosity;
    if let (Format::Text, Some(sel), true) = (o.format(), &l.selection, v > Verbosity::Quiet) {
        report::out_now(&text::selection(sel));
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    let opts = RunOptions {
        mode: o.mode,
        forks: usize::from(o.run.forks),
        become_password: become_password(o.run.ask_become_pass && hosts.iter().any(|h| h.become_))?,
        fetch_diffs: o.format() == Format::Text && (o.mode == Mode::Plan || o.confirm()),
        ssh: crate::ssh::Client::new(Arc::new(Passphrases::default())),
        lock_holder: (o.mode == Mode::Apply).then(|| lock_holder(&l.pb)),
        lock_client: crate::fact::lock::local_client(),
        force_unlock: o.force_unlock,
        interrupt: interrupt.clone(),
        fingerprint: key.clone(),
        saved: plan_file,
    };
    let shown = Shown::new(&o, &prepared);
    let start = Instant::now();
    let (outcomes, declined) = execute_run(&o, &shown, prepared, opts, &interrupt)?;
    let outcomes = shown.in_order(outcomes);
    summarise(&o, &shown, &outcomes, start);
    if let (Saved::Out(f), Some(k), Some(inputs)) = (&o.saved, &key, inputs) {
        write_plan_file(&o, &shown, f, k, inputs, &kept, &outcomes)?;
    }
    exit(&o, &interrupt, &outcomes, declined)
}

/// Reads the plan `apply --plan` applies, or checks that `plan --out` can write its file.
fn read_saved(saved: &Saved) -> Result<Option<Arc<saved_plan::PlanFile>>, Error> {
    match saved {
        Saved::Apply(f) => Ok(Some(Arc::new(saved_plan::PlanFile::read(f)?))),
        Saved::Out(f) => {
            let dir = crate::error::base_dir(f);
            if !dir.is_dir() {
                return Err(Error::Usage(format!(
                    "--out {}: the directory {} does not exist",
                    f.display(),
                    dir.display()
                )));
            }
            Ok(None)
        }
        Saved::None => Ok(None),
    }
}

/// The key and fingerprints of the inputs a saved plan is bound to (none without one); a plan
/// made from other inputs is refused here.
fn fingerprint(
    o: &PlanApply,
    l: &Loaded,
    plan_file: Option<&saved_plan::PlanFile>,
    prepared: &[Prepared],
) -> Result<(Option<saved_plan::Key>, Option<saved_plan::Inputs>), Error> {
    let key = match (&o.saved, plan_file) {
        (Saved::Out(_), _) => Some(saved_plan::Key::random()?),
        (_, Some(f)) => Some(f.key().map_err(|e| Error::Usage(e.to_string()))?),
        _ => None,
    };
    let inputs = key.as_ref().map(|k| {
        let sel = saved_plan::Selection {
            inventory: &o.run.select.inventory,
            playbook: &l.pb,
            limit: o.run.select.limit.as_deref(),
            steps: o.run.steps.describe(),
            extra: &o.run.select.extra,
        };
        let secrets = prepared
            .first()
            .map_or(&[][..], |p| &p.playbook.operator_secrets[..]);
        saved_plan::inputs(k, &sel, secrets)
    });
    if let (Saved::Apply(f), Some(plan), Some(k), Some(now)) = (&o.saved, plan_file, &key, &inputs)
        && let Err(why) = plan.check_inputs(k, now, prepared)
    {
        return Err(Error::Usage(format!(
            "--plan {}: made from other inputs, nothing was changed; plan again:\n  - {}",
            f.display(),
            why.join("\n  - ")
        )));
    }
    Ok((key, inputs))
}

/// Where the run is shown: JSON events or the text progress, the hosts' order and addresses.
struct Shown {
    events: Arc<json::Events>,
    progress: Arc<crate::report::progress::Progress>,
    observer: Arc<dyn Observer>,
    order: Vec<String>,
    addresses: HashMap<String, String>,
    paint: text::Paint,
}

impl Shown {
    fn new(o: &PlanApply, prepared: &[Prepared]) -> Self {
        let events = Arc::new(json::Events::default());
        let progress = Arc::new(crate::report::progress::Progress::new(
            o.mode == Mode::Apply,
            o.verbosity,
        ));
        let observer: Arc<dyn Observer> = match o.format() {
            Format::Json => Arc::new(json::JsonObserver {
                events: events.clone(),
                apply: o.mode == Mode::Apply,
            }),
            Format::Text => progress.clone(),
        };
        Shown {
            events,
            progress,
            observer,
            order: prepared.iter().map(|p| p.host.name.clone()).collect(),
            addresses: (prepared.iter())
                .map(|p| (p.host.name.clone(), p.host.address.clone()))
                .collect(),
            paint: text::Paint(report::color()),
        }
    }

    /// The outcomes in the inventory's order of the hosts.
    fn in_order(&self, mut outcomes: Vec<HostOutcome>) -> Vec<HostOutcome> {
        let by_name: HashMap<&str, usize> = (self.order.iter())
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        outcomes.sort_by_key(|o| by_name.get(o.name.as_str()).copied().unwrap_or(usize::MAX));
        outcomes
    }
}

/// Runs the hosts; with a confirmation, shows their plans and asks between planning and
/// applying. The outcomes, and whether the operator declined.
fn execute_run(
    o: &PlanApply,
    shown: &Shown,
    prepared: Vec<Prepared>,
    opts: RunOptions,
    interrupt: &Arc<AtomicBool>,
) -> Result<(Vec<HostOutcome>, bool), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    let observer = shown.observer.clone();
    let outcomes = rt.block_on(async {
        if !o.confirm() {
            on_ctrl_c(interrupt.clone());
            return Ok::<_, Error>((crate::run::run(prepared, opts, observer, None).await, false));
        }
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(None);
        let (plan_tx, mut plan_rx) = tokio::sync::mpsc::unbounded_channel();
        let n = prepared.len();
        let handle = tokio::spawn(crate::run::run(
            prepared,
            opts,
            observer,
            Some((gate_rx, plan_tx)),
        ));
        let mut plans: HashMap<String, HostPlan> = HashMap::new();
        let mut ended = HashSet::new();
        while plans.len() + ended.len() < n {
            match plan_rx.recv().await {
                Some((host, Some(plan))) => {
                    plans.insert(host, plan);
                }
                Some((host, None)) => {
                    if !plans.contains_key(&host) {
                        ended.insert(host);
                    }
                }
                None => break,
            }
        }
        shown.progress.pause();
        let go = ask(o, shown, &plans, &ended);
        shown.progress.resume();
        // Until the answer, Ctrl-C ends the process (nothing was changed yet).
        on_ctrl_c(interrupt.clone());
        let _ = gate_tx.send(Some(go));
        let outcomes = handle.await.map_err(|e| {
            Error::Io(format!(
                "internal error: the run ended abnormally: {e} (bug, please report)"
            ))
        })?;
        Ok((outcomes, !go))
    })?;
    shown.progress.finish();
    Ok(outcomes)
}

/// Shows the plans (with the new host keys and the hosts not planned) and asks whether to
/// apply them.
fn ask(
    o: &PlanApply,
    shown: &Shown,
    plans: &HashMap<String, HostPlan>,
    ended: &HashSet<String>,
) -> bool {
    let mut text = String::new();
    for h in &shown.order {
        if let Some(p) = plans.get(h) {
            let all = o.verbosity >= Verbosity::Verbose;
            text += &text::plan(h, &shown.addresses[h], p, shown.paint, all);
        }
    }
    // All new host keys at once, before the question (never a prompt per host).
    text += &shown.progress.take_learned(&shown.order);
    if !ended.is_empty() {
        let mut names: Vec<&String> = ended.iter().collect();
        names.sort_by_key(|n| shown.order.iter().position(|o| o == *n));
        let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        text += &format!(
            "\nnot planned (failed or unreachable; see the summary): {}\n",
            names.join(", ")
        );
    }
    let changes: usize = plans.values().map(HostPlan::changes).sum();
    let hosts = plans.values().filter(|p| !p.is_empty()).count();
    prompt::confirm_apply(&text, changes, hosts, !plans.is_empty())
}

/// The plans (plan), new host keys, summary and statistics; or the JSON events.
fn summarise(o: &PlanApply, shown: &Shown, outcomes: &[HostOutcome], start: Instant) {
    let (v, apply) = (o.verbosity, o.mode == Mode::Apply);
    match o.format() {
        Format::Json => {
            if !apply {
                for h in outcomes {
                    if let Some(p) = &h.plan {
                        shown.events.emit(p.event(&h.name));
                    }
                }
            }
            let command = if apply { "apply" } else { "plan" };
            (shown.events).emit(json::summary_event(command, outcomes, start.elapsed()));
        }
        Format::Text => {
            let mut out = String::new();
            if !apply && v > Verbosity::Quiet {
                for h in outcomes {
                    if let Some(p) = &h.plan {
                        let all = v >= Verbosity::Verbose;
                        out += &text::plan(&h.name, &h.address, p, shown.paint, all);
                    }
                }
            }
            out += &shown.progress.take_learned(&shown.order);
            out += &if v == Verbosity::Quiet {
                text::summary_quiet(outcomes, apply, shown.paint)
            } else {
                text::summary(outcomes, apply, shown.paint)
            };
            if o.run.stats {
                out += &text::stats(outcomes, start.elapsed());
            }
            report::out(&out);
        }
    }
}

/// `plan --out FILE`: writes the saved plan and says how to apply it.
fn write_plan_file(
    o: &PlanApply,
    shown: &Shown,
    f: &Path,
    k: &saved_plan::Key,
    inputs: saved_plan::Inputs,
    kept: &[Prepared],
    outcomes: &[HostOutcome],
) -> Result<(), Error> {
    let file = saved_plan::PlanFile::new(k, inputs, kept, outcomes)
        .map_err(|e| Error::HostsFailed(format!("--out {}: no plan written: {e}", f.display())))?;
    file.write(f)?;
    let changes: usize = file.hosts.iter().map(|h| h.changes).sum();
    match o.format() {
        Format::Json => shown.events.emit(serde_json::json!({"event": "plan_saved", "file": f.display().to_string(), "changes": changes, "hosts": file.hosts.len()})),
        Format::Text => report::out(&format!(
            "Plan saved to {}: apply exactly it with `claw-provision apply {} --plan {}`\n",
            f.display(),
            o.run.select.inventory.display(),
            f.display()
        )),
    }
    Ok(())
}

/// How the run ended: Ctrl-C, a failed host, a declined confirmation, or changes.
fn exit(
    o: &PlanApply,
    interrupt: &AtomicBool,
    outcomes: &[HostOutcome],
    declined: bool,
) -> Result<Outcome, Error> {
    // Ctrl-C wins: the hosts it stopped count as failed.
    if interrupt.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    if outcomes
        .iter()
        .any(|o| matches!(o.state, HostState::Failed | HostState::Unreachable))
    {
        return Err(Error::Reported);
    }
    if declined {
        return Err(Error::Declined);
    }
    let changed = outcomes.iter().any(|o| o.state == HostState::Changed);
    Ok(if o.run.detailed_exitcode && changed {
        Outcome::Changes
    } else {
        Outcome::Done
    })
}
