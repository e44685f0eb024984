//! Progress while a run goes ([`Progress`], the runner's `Observer` for text output): a spinner
//! line per host on a terminal (stderr), plain lines otherwise, and the host keys learned on the
//! way.

use super::Verbosity;
use super::terminal::safe;
use super::text::{Paint, learned_keys};
use crate::run::{HostOutcome, Observer, StepStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Progress while a run goes: a spinner line per host on a terminal (stderr), plain lines
/// otherwise; nothing with `-q`.
pub struct Progress {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// Colours of the lines on stderr.
    paint: Paint,
    /// Print each changed step (apply).
    steps: bool,
    verbosity: Verbosity,
    /// While the plan is shown and confirmed, progress is not drawn.
    paused: std::sync::atomic::AtomicBool,
    /// Host keys recorded under accept-new, not shown yet: (host, key).
    learned: Mutex<Vec<(String, String)>>,
}

impl Progress {
    /// Progress of an `apply` (spinners, step lines) or of a `plan` (nothing to show).
    pub fn new(apply: bool, verbosity: Verbosity) -> Self {
        let shown = apply && verbosity > Verbosity::Quiet;
        let tty = shown && std::io::stderr().is_terminal();
        Self {
            multi: tty.then(MultiProgress::new),
            bars: Mutex::new(HashMap::new()),
            learned: Mutex::new(Vec::new()),
            paint: Paint(crate::report::color_stderr()),
            steps: shown,
            verbosity,
            paused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Removes every progress line and draws nothing until [`Progress::resume`].
    pub fn pause(&self) {
        self.paused.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut bars = self.bars.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, b) in bars.drain() {
            b.finish_and_clear();
        }
    }

    pub fn resume(&self) {
        self.paused
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn bar(&self, host: &str) -> Option<ProgressBar> {
        if self.paused.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        let multi = self.multi.as_ref()?;
        let mut bars = self.bars.lock().unwrap_or_else(PoisonError::into_inner);
        Some(
            bars.entry(host.to_string())
                .or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    // Styled by `Paint` (NO_COLOR), not by the template.
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {prefix} {msg}")
                            .expect("valid template"),
                    );
                    b.set_prefix(self.paint.bold(host));
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                })
                .clone(),
        )
    }

    fn line(&self, s: String) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(s);
            }
            None => super::err(&format!("{s}\n")),
        }
    }

    /// A line of a command's output: on stdout (it can be piped or saved), above the spinners.
    fn out_line(&self, s: String) {
        match &self.multi {
            Some(m) => m.suspend(|| super::out(&format!("{s}\n"))),
            None => super::out(&format!("{s}\n")),
        }
    }

    /// The host keys recorded since the last call, as one block (empty when none), hosts in
    /// `order`.
    pub fn take_learned(&self, order: &[String]) -> String {
        let mut keys =
            std::mem::take(&mut *self.learned.lock().unwrap_or_else(PoisonError::into_inner));
        learned_keys(&mut keys, order)
    }

    /// Removes the spinner lines (before the summary is printed).
    pub fn finish(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

impl Observer for Progress {
    fn host_key_learned(&self, host: &str, key: &str) {
        self.learned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((host.to_string(), key.to_string()));
    }

    fn lock_broken(&self, host: &str, holder: &str) {
        // Host-supplied text: no control character reaches the terminal.
        let holder = holder.replace('\n', " ");
        let holder = safe(&holder);
        self.out_line(format!(
            "{host}: ended the run holding the apply lock and took it: {holder}"
        ));
    }

    fn phase(&self, host: &str, phase: &str) {
        if let Some(b) = self.bar(host) {
            b.set_message(phase.to_string());
        }
    }

    fn step(
        &self,
        host: &str,
        step: &crate::plan::StepPlan,
        status: StepStatus,
        error: Option<&str>,
        elapsed: Duration,
    ) {
        if let (true, Some(out)) = (self.steps, &step.output) {
            // What an operation printed (status, logs, ...), under its step line.
            let mut s = format!("{host}: {} {}", step.kind, step.name);
            for l in out.lines() {
                s.push_str(&format!("\n{host}: | {}", safe(l)));
            }
            self.out_line(s);
            if status != StepStatus::Failed {
                return;
            }
        }
        let all = self.verbosity >= Verbosity::Verbose;
        if !self.steps || !(all || status == StepStatus::Changed || status == StepStatus::Failed) {
            return;
        }
        let c = &step.change;
        let mut s = match status {
            StepStatus::Skipped => format!(
                "{host}: {} {}",
                self.paint.action(c.action),
                safe(&format!("{} `{}` ({})", step.kind, step.name, c.reason))
            ),
            _ => format!(
                "{host}: {} {}",
                self.paint.action(c.action),
                safe(&format!("{} {}", step.kind, c.target))
            ),
        };
        if all && status != StepStatus::Skipped {
            s.push_str(&format!(" ({:.2}s)", elapsed.as_secs_f64()));
        }
        if status == StepStatus::Failed {
            s.push_str(&format!(
                " {} {}",
                self.paint.red("FAILED:"),
                safe(error.unwrap_or(""))
            ));
        }
        self.line(s);
    }

    fn wants_commands(&self) -> bool {
        self.steps && self.verbosity >= Verbosity::Commands
    }

    fn command(&self, host: &str, what: &str, script: Option<&str>) {
        if !self.wants_commands() {
            return;
        }
        let mut s = format!("{host}: $ {what} runs:");
        match script {
            Some(script) => {
                for l in script.lines() {
                    s.push_str(&format!("\n{host}:     {}", safe(l)));
                }
            }
            None => s.push_str(" (not shown: it handles secrets)"),
        }
        self.line(s);
    }

    fn handler(&self, host: &str, name: &str, status: StepStatus, error: Option<&str>) {
        if self.steps {
            self.line(
                safe(&format!(
                    "{host}: handler {name}: {}{}",
                    status.word(),
                    error.map(|e| format!(": {e}")).unwrap_or_default()
                ))
                .into_owned(),
            );
        }
    }

    fn host_done(&self, o: &HostOutcome) {
        let msg = format!("{} in {:.1}s", o.state.word(), o.elapsed.as_secs_f64());
        match self.bar(&o.name) {
            Some(b) => b.finish_with_message(msg),
            None if self.steps && self.multi.is_none() => {
                super::err(&format!("{}: {msg}\n", o.name));
            }
            None => {}
        }
    }
}
