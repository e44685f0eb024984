//! The `[[tasks]]`: named operations whose steps are written in place or taken from the
//! playbook's own steps (`use = "NAME"`), with their rescue steps.

use super::steps::{StepAt, parse_steps};
use super::{RawTask, Step, Task};
use crate::error::{ConfigError, line_col};
use crate::inventory::find_key;
use std::path::Path;
use toml::Spanned;

/// The `[[tasks]]`: each step is written in place or is `use = "NAME"` (a step of the
/// playbook, optionally renamed with `name`). Names are unique within a task.
pub(super) fn parse_tasks(
    path: &Path,
    src: &str,
    raw: Vec<Spanned<RawTask>>,
    main: &[Step],
    errors: &mut Vec<ConfigError>,
) -> Vec<Task> {
    let mut out: Vec<Task> = Vec::new();
    for t in raw {
        let start = t.span().start;
        let line = line_col(src, start).0;
        let t = t.into_inner();
        let err = |msg: String| ConfigError::at(path, src, start, msg);
        if t.name.trim().is_empty() {
            errors.push(err("tasks: `name` must be a non-empty string".into()));
            continue;
        }
        if out.iter().any(|o| o.name == t.name) {
            errors.push(err(format!("duplicate task name `{}`", t.name)));
        }
        if t.steps.is_empty() {
            errors.push(err(format!("task `{}` has no steps", t.name)));
        }
        let mut steps = Vec::new();
        for (list, rescue) in [(t.steps, false), (t.rescue, true)] {
            let section = format!(
                "tasks `{}` {}",
                t.name,
                if rescue { "rescue" } else { "steps" }
            );
            for table in list {
                let in_place = !table.get_ref().contains_key("use");
                let mut parsed = task_step(path, src, table, &section, main, errors);
                for s in &mut parsed {
                    s.rescue = rescue;
                    check_task_step(path, &t.name, s, &steps, in_place, errors);
                }
                steps.extend(parsed);
            }
        }
        out.push(Task {
            name: t.name,
            description: t.description,
            steps,
            line,
        });
    }
    out
}

/// One step of a task: written in place, or `use = "NAME"` (a step of the playbook, `main`).
fn task_step(
    path: &Path,
    src: &str,
    table: Spanned<toml::Table>,
    section: &str,
    main: &[Step],
    errors: &mut Vec<ConfigError>,
) -> Vec<Step> {
    let at = table.span().start;
    match table.get_ref().get("use").cloned() {
        None => parse_steps(path, src, vec![table], section, errors),
        Some(toml::Value::String(u)) => {
            let at = StepAt {
                path,
                src,
                start: at,
            };
            used_step(&u, table.into_inner(), &at, section, main, errors)
                .into_iter()
                .collect()
        }
        Some(_) => {
            errors.push(ConfigError::at(
                path,
                src,
                find_key(src, at, "use").unwrap_or(at),
                format!("{section}: `use` must be the name of a step of the playbook"),
            ));
            vec![]
        }
    }
}

/// `use = "u"`: the playbook's step `u`, renamed if the table gives a `name` (it may give
/// nothing else).
fn used_step(
    u: &str,
    mut rest: toml::Table,
    at: &StepAt<'_>,
    section: &str,
    main: &[Step],
    errors: &mut Vec<ConfigError>,
) -> Option<Step> {
    rest.remove("use");
    let rename = match rest.remove("name") {
        None => None,
        Some(toml::Value::String(n)) if !n.trim().is_empty() => Some(n),
        Some(_) => {
            errors.push(at.key(
                "name",
                format!("{section}: `name` must be a non-empty string"),
            ));
            None
        }
    };
    if let Some(k) = rest.keys().next() {
        errors.push(at.key(
            k,
            format!(
                "{section}: a step with `use` takes only `name` (found `{k}`); \
                 change the playbook's step or write the step in place"
            ),
        ));
    }
    let Some(s) = main.iter().find(|s| s.name == u) else {
        errors.push(at.key(
            "use",
            format!("{section}: `use = \"{u}\"`: the playbook has no step of that name"),
        ));
        return None;
    };
    let mut s = s.clone();
    if let Some(n) = rename {
        s.name = n;
    }
    s.line = line_col(at.src, at.start).0;
    Some(s)
}

/// A task's step against the task's earlier `steps`: its `recheck_after` names one of them (for
/// a step written in place; one taken with `use` keeps its playbook's names, checked there),
/// and its name is none of theirs.
fn check_task_step(
    path: &Path,
    task: &str,
    s: &Step,
    steps: &[Step],
    in_place: bool,
    errors: &mut Vec<ConfigError>,
) {
    for r in s.recheck_after.iter().filter(|_| in_place) {
        if !steps.iter().any(|o: &Step| &o.name == r) {
            errors.push(ConfigError::new(
                path,
                s.line,
                1,
                format!(
                    "task `{task}`: step `{}`: `recheck_after` names `{r}`, which is not an earlier step of the task",
                    s.name
                ),
            ));
        }
    }
    if steps.iter().any(|o: &Step| o.name == s.name) {
        errors.push(ConfigError::new(
            path,
            s.line,
            1,
            format!(
                "task `{task}`: duplicate step name `{}` (rename it: `name = \"...\"`)",
                s.name
            ),
        ));
    }
}
