//! `plan` and `apply`: prepare, connect, show the plan, confirm, apply, summarise.

use super::load::{load, select};
use super::secrets::{Passphrases, become_password};
use super::*;

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

/// --force-unlock without --yes: the operator confirms on a terminal.
pub(super) fn confirm_force_unlock() -> Result<(), Error> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "apply --force-unlock: no terminal to confirm on; add --yes to break the locks without asking"
                .into(),
        ));
    }
    report::err(
        "--force-unlock ends the connection of any other apply running on the selected hosts (its running step is cut short, and that run fails). Break the locks? [y/N] ",
    );
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::Usage(
            "cancelled: no lock was broken, nothing was changed".into(),
        ))
    }
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

/// A saved plan to write (`plan --out`) or to apply (`apply --plan`).
pub(super) enum Saved {
    None,
    Out(PathBuf),
    Apply(PathBuf),
}

pub(super) fn run_cmd(
    a: RunArgs,
    mode: Mode,
    yes: bool,
    force_unlock: bool,
    v: Verbosity,
    saved: Saved,
) -> Result<Outcome, Error> {
    // A saved plan that cannot be used stops the run before anything else.
    let plan_file = match &saved {
        Saved::Apply(f) => Some(Arc::new(saved_plan::PlanFile::read(f)?)),
        Saved::Out(f) => {
            let dir = crate::error::base_dir(f);
            if !dir.is_dir() {
                return Err(Error::Usage(format!(
                    "--out {}: the directory {} does not exist",
                    f.display(),
                    dir.display()
                )));
            }
            None
        }
        Saved::None => None,
    };
    let interactive = std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal();
    if mode == Mode::Apply && !yes && !interactive {
        return Err(Error::Usage(
            "apply: no terminal to confirm on; pass --yes to apply without asking".into(),
        ));
    }
    if mode == Mode::Apply && !yes && a.select.output == Format::Json {
        return Err(Error::Usage(
            "apply --output json needs --yes (the plan cannot be confirmed in JSON mode)".into(),
        ));
    }
    let l = load(&a.select, &a.steps.filter())?;
    let hosts = select(&l, &a.select)?;
    let prepared = crate::run::prepare(&l.inv, &l.pb, &hosts, &a.select.extra)?;
    let key = match (&saved, &plan_file) {
        (Saved::Out(_), _) => Some(saved_plan::Key::random()?),
        (_, Some(f)) => Some(f.key().map_err(Error::Usage)?),
        _ => None,
    };
    let inputs = key.as_ref().map(|k| {
        let sel = saved_plan::Selection {
            inventory: &a.select.inventory,
            playbook: &l.pb,
            limit: a.select.limit.as_deref(),
            steps: a.steps.describe(),
            extra: &a.select.extra,
        };
        let secrets = prepared
            .first()
            .map_or(&[][..], |p| &p.playbook.operator_secrets[..]);
        saved_plan::inputs(k, &sel, secrets)
    });
    if let (Saved::Apply(f), Some(plan), Some(k), Some(now)) = (&saved, &plan_file, &key, &inputs)
        && let Err(why) = plan.check_inputs(k, now, &prepared)
    {
        return Err(Error::Usage(format!(
            "--plan {}: made from other inputs, nothing was changed; plan again:\n  - {}",
            f.display(),
            why.join("\n  - ")
        )));
    }
    // What `plan --out` writes needs the hosts' steps after the run.
    let kept: Vec<Prepared> = match &saved {
        Saved::Out(_) => prepared.clone(),
        _ => Vec::new(),
    };
    let format = a.select.output;
    if let (Format::Text, Some(sel), true) = (format, &l.selection, v > Verbosity::Quiet) {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", text::selection(sel));
        let _ = out.flush();
    }
    let interrupt = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let confirm = mode == Mode::Apply && !yes;
    let opts = RunOptions {
        mode,
        forks: usize::from(a.forks),
        become_password: become_password(a.ask_become_pass && hosts.iter().any(|h| h.become_))?,
        fetch_diffs: format == Format::Text && (mode == Mode::Plan || confirm),
        passphrases: Arc::new(Passphrases {
            cache: Mutex::new(HashMap::new()),
        }),
        lock_holder: (mode == Mode::Apply).then(|| lock_holder(&l.pb)),
        force_unlock,
        interrupt: interrupt.clone(),
        fingerprint: key.clone(),
        saved: plan_file.clone(),
    };
    let events = Arc::new(json::Events::default());
    let progress = Arc::new(text::Progress::new(mode == Mode::Apply, v));
    let observer: Arc<dyn Observer> = match format {
        Format::Json => Arc::new(json::JsonObserver {
            events: events.clone(),
            apply: mode == Mode::Apply,
        }),
        Format::Text => progress.clone(),
    };
    let order: Vec<String> = prepared.iter().map(|p| p.host.name.clone()).collect();
    let addresses: HashMap<String, String> = prepared
        .iter()
        .map(|p| (p.host.name.clone(), p.host.address.clone()))
        .collect();
    let paint = text::Paint(report::color());
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    // The operator answered no to the confirmation.
    let mut declined = false;
    let mut outcomes: Vec<HostOutcome> = rt.block_on(async {
        if !confirm {
            on_ctrl_c(interrupt.clone());
            return Ok(crate::run::run(prepared, opts, observer, None).await);
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
        let mut ended = std::collections::HashSet::new();
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
        progress.pause();
        let mut out = std::io::stdout().lock();
        for h in &order {
            if let Some(p) = plans.get(h) {
                let _ = write!(
                    out,
                    "{}",
                    text::plan(h, &addresses[h], p, paint, v >= Verbosity::Verbose)
                );
            }
        }
        // All new host keys at once, before the question (never a prompt per host).
        let _ = write!(out, "{}", progress.take_learned(&order));
        if !ended.is_empty() {
            let mut names: Vec<&String> = ended.iter().collect();
            names.sort_by_key(|n| order.iter().position(|o| o == *n));
            let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            let _ = writeln!(
                out,
                "\nnot planned (failed or unreachable; see the summary): {}",
                names.join(", ")
            );
        }
        let changes: usize = plans.values().map(HostPlan::changes).sum();
        let go = if changes == 0 {
            if !plans.is_empty() {
                let _ = writeln!(out, "\nNothing to change.");
            }
            true
        } else {
            let hosts = plans.values().filter(|p| !p.is_empty()).count();
            let _ = write!(
                out,
                "\nApply {changes} change{} on {hosts} host{}? [y/N] ",
                if changes == 1 { "" } else { "s" },
                if hosts == 1 { "" } else { "s" }
            );
            let _ = out.flush();
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            let yes = matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes");
            if !yes {
                let _ = writeln!(out, "Cancelled: nothing was changed.");
            }
            declined = !yes;
            yes
        };
        drop(out);
        progress.resume();
        // Until the answer, Ctrl-C ends the process (nothing was changed yet).
        on_ctrl_c(interrupt.clone());
        let _ = gate_tx.send(Some(go));
        handle.await.map_err(|e| {
            Error::Io(format!(
                "internal error: the run ended abnormally: {e} (bug, please report)"
            ))
        })
    })?;
    progress.finish();
    let by_name: HashMap<String, usize> = order
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    outcomes.sort_by_key(|o| by_name.get(&o.name).copied().unwrap_or(usize::MAX));
    let command = if mode == Mode::Plan { "plan" } else { "apply" };
    match format {
        Format::Json => {
            if mode == Mode::Plan {
                for o in &outcomes {
                    if let Some(p) = &o.plan {
                        events.emit(p.event(&o.name));
                    }
                }
            }
            events.emit(json::summary_event(command, &outcomes, start.elapsed()));
        }
        Format::Text => {
            let mut out = std::io::stdout().lock();
            if mode == Mode::Plan && v > Verbosity::Quiet {
                for o in &outcomes {
                    if let Some(p) = &o.plan {
                        let all = v >= Verbosity::Verbose;
                        let _ = write!(out, "{}", text::plan(&o.name, &o.address, p, paint, all));
                    }
                }
            }
            let _ = write!(out, "{}", progress.take_learned(&order));
            let summary = if v == Verbosity::Quiet {
                text::summary_quiet(&outcomes, mode == Mode::Apply, paint)
            } else {
                text::summary(&outcomes, mode == Mode::Apply, paint)
            };
            let _ = write!(out, "{summary}");
            if a.stats {
                let _ = write!(out, "{}", text::stats(&outcomes, start.elapsed()));
            }
        }
    }
    if let (Saved::Out(f), Some(k), Some(inputs)) = (&saved, &key, inputs) {
        let file = saved_plan::PlanFile::new(k, inputs, &kept, &outcomes).map_err(|e| {
            Error::HostsFailed(format!("--out {}: no plan written: {e}", f.display()))
        })?;
        file.write(f)?;
        let changes: usize = file.hosts.iter().map(|h| h.changes).sum();
        match format {
            Format::Json => events.emit(serde_json::json!({"event": "plan_saved", "file": f.display().to_string(), "changes": changes, "hosts": file.hosts.len()})),
            Format::Text => report::out(&format!(
                "Plan saved to {}: apply exactly it with `claw-provision apply {} --plan {}`\n",
                f.display(),
                a.select.inventory.display(),
                f.display()
            )),
        }
    }
    // Ctrl-C wins: the hosts it stopped count as failed.
    if interrupt.load(std::sync::atomic::Ordering::SeqCst) {
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
    Ok(if a.detailed_exitcode && changed {
        Outcome::Changes
    } else {
        Outcome::Done
    })
}
