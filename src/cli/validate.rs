//! `validate`: load and render everything offline, say what would run.

use super::load::{load, select};
use super::*;

pub(super) fn validate(
    va: &ValidateArgs,
    v: Verbosity,
    ssh: &crate::inventory::SshConfigChoice,
) -> Result<Outcome, Error> {
    let a = &va.select;
    let l = load(a, &va.steps.filter(), ssh)?;
    let hosts = select(&l, a)?;
    crate::run::prepare(&l.inv, &l.pb, &hosts, &a.extra)?;
    let steps = l.pb.steps.len();
    let selected: Vec<&str> = (l.pb.steps.iter())
        .filter(|s| s.not_selected.is_none())
        .map(|s| s.name.as_str())
        .collect();
    match a.output {
        Format::Text if v == Verbosity::Quiet => {}
        Format::Text => {
            if let Some(sel) = &l.selection {
                report::out(&text::selection(sel));
            }
            report::out(&format!(
                "ok: {} hosts, playbook `{}`{} with {steps} steps and {} handlers\n",
                hosts.len(),
                l.pb.name,
                l.pb.task
                    .as_ref()
                    .map(|t| format!(", task `{t}`"))
                    .unwrap_or_default(),
                l.pb.handlers.len()
            ));
            if v >= Verbosity::Verbose {
                report::out("steps:\n");
                for s in &l.pb.steps {
                    let tags = if s.tags.is_empty() {
                        String::new()
                    } else {
                        format!(" [tags: {}]", s.tags.join(", "))
                    };
                    let what = match (&s.not_selected, s.rescue) {
                        (Some(why), _) => format!(" ({why})"),
                        (None, true) => " (rescue)".into(),
                        (None, false) => String::new(),
                    };
                    report::out(&format!("  {} {}{tags}{what}\n", s.kind, s.name));
                }
            }
            if l.pb.task.is_none() && !l.pb.tasks.is_empty() {
                report::out("tasks (--task NAME):\n");
                let w = l.pb.tasks.iter().map(|t| t.name.len()).max().unwrap_or(0);
                for t in &l.pb.tasks {
                    report::out(&format!("  {:w$}  {}\n", t.name, t.description));
                }
            }
        }
        Format::Json => json::Events::default().emit(serde_json::json!({"event": "validate", "ok": true, "hosts": hosts.len(), "steps": steps, "selected_steps": selected, "task": l.pb.task, "tasks": l.pb.tasks.iter().map(|t| serde_json::json!({"name": t.name, "description": t.description})).collect::<Vec<_>>()})),
    }
    Ok(Outcome::Done)
}
