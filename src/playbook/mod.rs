//! The playbook file: name, host selector, vars, ordered steps and handlers.
//!
//! Steps keep their arguments as raw TOML here; they are checked against their kind when the
//! playbook is loaded (unknown keys, wrong types) and rendered per host by the planner.

mod checks;
mod operator_secrets;
mod steps;
mod tasks;

use crate::error::ConfigErrors;
use crate::inventory::toml_error;
use crate::resource::Kind;
use checks::{
    check_duplicates, check_handlers, check_notify, check_operator_secrets, check_recheck_after,
    parse_rollout,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use steps::parse_steps;
use tasks::parse_tasks;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    name: String,
    #[serde(default)]
    hosts: Option<String>,
    #[serde(default)]
    templates: Option<String>,
    #[serde(default)]
    defaults: toml::Table,
    #[serde(default)]
    vars: toml::Table,
    #[serde(default)]
    operator_secrets: Vec<String>,
    #[serde(default)]
    operator_secrets_file: Option<String>,
    #[serde(default)]
    steps: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    handlers: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    tasks: Vec<Spanned<RawTask>>,
    #[serde(default)]
    rollout: Option<Spanned<RawRollout>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    serial: Option<toml::Value>,
    max_fail: Option<toml::Value>,
    health: Option<String>,
    #[serde(default)]
    order: crate::rollout::Order,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    steps: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    rescue: Vec<Spanned<toml::Table>>,
}

/// A named task (`[[tasks]]`): an operation run with `--task NAME` instead of the playbook's
/// steps (start, stop, backup, update, ...). Its steps are written in place or taken from the
/// playbook's steps by name (`use = "step name"`); its `rescue` steps run only when one of its
/// steps failed on a host (e.g. a rollback), and the host is still reported failed.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub description: String,
    /// Steps, then rescue steps (`Step::rescue`).
    pub steps: Vec<Step>,
    pub line: usize,
}

/// One step (or handler) of a playbook.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// The resource kind (`dir`, `file`, `template`, `command`...), parsed when loaded.
    pub kind: Kind,
    /// Kind-specific arguments, unrendered.
    pub args: toml::Table,
    /// A Tera expression; the step is skipped on hosts where it is false.
    pub when: Option<String>,
    /// Handlers notified when this step changes something.
    pub notify: Vec<String>,
    pub tags: Vec<String>,
    pub timeout: Option<Duration>,
    /// Names of earlier steps: when one of them changes something in this run, this step's
    /// probe answer is stale, so it is shown as "known after apply" and probed again when reached.
    pub recheck_after: Vec<String>,
    /// A task's rescue step: runs only after a step of the task failed on the host.
    pub rescue: bool,
    /// Left out by `--tags`, `--skip-tags` or `--step` (see `src/select.rs`), with the reason
    /// shown in plans (`not selected: ...`): checked offline, never probed or applied.
    pub not_selected: Option<String>,
    /// 1-based line of the step's table header.
    pub line: usize,
}

/// A loaded, validated playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub path: PathBuf,
    /// Directory the playbook lives in; `src` of files is relative to it.
    pub dir: PathBuf,
    pub name: String,
    /// Host selector (default `all`).
    pub hosts: String,
    /// Directory of templates (default: `templates/` beside the playbook if it exists, else
    /// `../templates`, as in this repository's layout).
    pub templates_dir: PathBuf,
    pub vars: toml::Table,
    /// `[defaults]`: the playbook's own defaults, the LOWEST precedence (the inventory's
    /// variables override them; `[vars]` override the inventory's).
    pub defaults: toml::Table,
    /// Secrets the operator supplies (API keys): names, read from the environment or from
    /// `operator_secrets_file`; available to templates as `secrets.NAME`.
    pub operator_secrets: Vec<String>,
    /// A local `NAME=value` file (kept out of git) read for operator secrets missing from the
    /// environment.
    pub operator_secrets_file: Option<PathBuf>,
    pub steps: Vec<Step>,
    pub handlers: Vec<Step>,
    /// Named operations (`--task NAME`).
    pub tasks: Vec<Task>,
    /// `[rollout]`: batches, failure budget, health gate, order.
    pub rollout: crate::rollout::Rollout,
    /// The task whose steps `steps` now holds (see [`Playbook::with_task`]).
    pub task: Option<String>,
    /// The file text, for error positions found later (templates, variables).
    pub source: String,
}

/// A `--task NAME` the playbook does not have (`playbook`: its file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("{}: --task {name}: this playbook has no tasks", .playbook.display())]
    NoTasks { playbook: PathBuf, name: String },
    #[error("{}: --task {name}: no such task (tasks: {})", .playbook.display(), .known.join(", "))]
    NoSuchTask {
        playbook: PathBuf,
        name: String,
        known: Vec<String>,
    },
}

impl Playbook {
    pub fn load(path: &Path) -> Result<Playbook, ConfigErrors> {
        let src = crate::error::read_source(path, "playbook")?;
        Self::parse(path, &src)
    }

    pub fn parse(path: &Path, src: &str) -> Result<Playbook, ConfigErrors> {
        let raw: RawPlaybook = toml::from_str(src).map_err(|e| toml_error(path, src, &e))?;
        let dir = crate::error::base_dir(path);
        let mut errors = Vec::new();
        let steps = parse_steps(path, src, raw.steps, "steps", &mut errors);
        let handlers = parse_steps(path, src, raw.handlers, "handlers", &mut errors);
        let tasks = parse_tasks(path, src, raw.tasks, &steps, &mut errors);
        check_duplicates(path, &steps, &handlers, &mut errors);
        check_recheck_after(path, src, &steps, &mut errors);
        check_notify(path, src, &steps, &tasks, &handlers, &mut errors);
        check_handlers(path, &handlers, &mut errors);
        let rollout = parse_rollout(path, src, raw.rollout, &steps, &mut errors);
        check_operator_secrets(path, src, &raw.operator_secrets, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let templates_dir = match raw.templates {
            Some(t) => crate::inventory::resolve_path(&dir, &t),
            None if dir.join("templates").is_dir() => dir.join("templates"),
            None => dir.join("../templates"),
        };
        let operator_secrets_file = raw
            .operator_secrets_file
            .map(|f| crate::inventory::resolve_path(&dir, &f));
        Ok(Playbook {
            path: path.to_path_buf(),
            dir,
            name: raw.name,
            hosts: raw.hosts.unwrap_or_else(|| "all".into()),
            templates_dir,
            vars: raw.vars,
            defaults: raw.defaults,
            operator_secrets: raw.operator_secrets,
            operator_secrets_file,
            steps,
            handlers,
            tasks,
            task: None,
            rollout,
            source: src.to_string(),
        })
    }

    /// This playbook with the steps of task `name` instead of its own (same name, variables,
    /// handlers and secrets). Operator secrets become optional: a task that does not use them
    /// must not need them (one that does fails to render, naming the step).
    pub fn with_task(&self, name: &str) -> Result<Playbook, TaskError> {
        let Some(t) = self.tasks.iter().find(|t| t.name == name) else {
            let known: Vec<String> = self.tasks.iter().map(|t| t.name.clone()).collect();
            let (playbook, name) = (self.path.clone(), name.to_string());
            return Err(if known.is_empty() {
                TaskError::NoTasks { playbook, name }
            } else {
                TaskError::NoSuchTask {
                    playbook,
                    name,
                    known,
                }
            });
        };
        // The playbook's `secret` steps come first: the task's templates see `secrets.NAME`, and
        // the values read back mask every output and error of the task, as in a full apply.
        let mut steps: Vec<Step> = self
            .steps
            .iter()
            .filter(|s| s.kind.provides_secret() && !t.steps.iter().any(|x| x.name == s.name))
            .cloned()
            .collect();
        steps.extend(t.steps.iter().cloned());
        // The health gate applies to a task only if the task has that step.
        let mut rollout = self.rollout.clone();
        if let Some(h) = &rollout.health
            && !steps.iter().any(|s| &s.name == h)
        {
            rollout.health = None;
        }
        Ok(Playbook {
            steps,
            task: Some(t.name.clone()),
            rollout,
            ..self.clone()
        })
    }

    /// A step or handler by name.
    pub fn handler(&self, name: &str) -> Option<&Step> {
        self.handlers.iter().find(|h| h.name == name)
    }
}

/// Byte offset of the start of a 1-based line.
pub(crate) fn line_offset(src: &str, line: usize) -> usize {
    src.split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PB: &str = r#"name = "demo"
hosts = "web"

[vars]
app_dir = "/opt/demo"

[[steps]]
name = "app dir"
kind = "dir"
path = "{{ app_dir }}"
mode = "0755"

[[steps]]
name = "motd"
kind = "file"
path = "{{ app_dir }}/motd"
content = "hello\n"
notify = "say hi"
tags = ["files"]
timeout = "30s"

[[handlers]]
name = "say hi"
kind = "command"
run = "echo hi"
"#;

    #[test]
    fn parses_steps_and_handlers() {
        let p = Playbook::parse(Path::new("/nonexistent/pb.toml"), PB).unwrap();
        assert_eq!(p.name, "demo");
        assert_eq!(p.hosts, "web");
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.steps[1].notify, ["say hi"]);
        assert_eq!(p.steps[1].timeout, Some(Duration::from_secs(30)));
        assert_eq!(p.steps[1].line, 13);
        assert_eq!(p.handlers[0].kind.as_str(), "command");
        assert_eq!(p.templates_dir, PathBuf::from("/nonexistent/../templates"));
    }

    fn errs(src: &str) -> Vec<String> {
        Playbook::parse(Path::new("pb.toml"), src)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn unknown_kind_names_line() {
        let e = errs("name = \"x\"\n[[steps]]\nname = \"a\"\nkind = \"dri\"\npath = \"/x\"\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("pb.toml:4:1: step `a`: unknown step kind `dri`"),
            "{e:?}"
        );
        // The whole text, as it was when kinds were strings: the file, line and column of
        // the `kind` key, then every known kind in the registry's order.
        let all = "dir, file, template, command, user, group, cron, http_check, secret, apt, apt_repo, firewall, cert, git, compose, service, image, fetch";
        assert_eq!(
            e[0],
            format!("pb.toml:4:1: step `a`: unknown step kind `dri` (known kinds: {all})")
        );
        let e = errs("name = \"x\"\n[[steps]]\nname = \"a\"\npath = \"/x\"\n");
        assert_eq!(
            e,
            [format!(
                "pb.toml:2:1: step `a`: missing `kind` (one of: {all})"
            )]
        );
        let e = errs("name = \"x\"\n[[steps]]\nname = \"a\"\nkind = 3\n");
        assert_eq!(e, ["pb.toml:4:1: step `a`: `kind` must be a string"]);
    }

    #[test]
    fn unknown_arg_names_line_and_all_errors_reported() {
        let e = errs(
            "name = \"x\"\n[[steps]]\nname = \"a\"\nkind = \"dir\"\npath = \"/x\"\nmdoe = \"0755\"\n\n[[steps]]\nname = \"b\"\nkind = \"file\"\npath = \"/y\"\nnotify = \"nobody\"\ncontent = \"\"\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("pb.toml:6:1: step `a` (dir): unknown field `mdoe`"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("pb.toml:12:1: step `b` notifies `nobody`"),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_top_level_key() {
        let e = errs("name = \"x\"\nhostz = \"all\"\n");
        assert!(
            e[0].starts_with("pb.toml:2:1: unknown field `hostz`"),
            "{e:?}"
        );
    }

    const TASKS: &str = r#"name = "ops"

[[steps]]
name = "app dir"
kind = "dir"
path = "/opt/app"

[[steps]]
name = "build"
kind = "command"
run = "make"
recheck_after = ["app dir"]

[[tasks]]
name = "update"
description = "build again"
[[tasks.steps]]
name = "remember"
kind = "command"
run = "true"
[[tasks.steps]]
use = "build"
[[tasks.rescue]]
use = "build"
name = "build the old one"
"#;

    #[test]
    fn tasks_take_steps_by_name_and_have_rescue_steps() {
        let p = Playbook::parse(Path::new("pb.toml"), TASKS).unwrap();
        assert_eq!(p.tasks.len(), 1);
        let t = p.with_task("update").unwrap();
        assert_eq!(t.task.as_deref(), Some("update"));
        let names: Vec<(&str, bool)> = t
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.rescue))
            .collect();
        assert_eq!(
            names,
            [
                ("remember", false),
                ("build", false),
                ("build the old one", true)
            ]
        );
        // A used step keeps its arguments and options; its line is where the task uses it.
        assert_eq!(t.steps[1].args["run"].as_str(), Some("make"));
        assert_eq!(t.steps[1].recheck_after, ["app dir"]);
        assert_eq!(t.steps[1].line, 21);
        // The playbook's secret steps come first (their values mask the task's output).
        let with_secret = TASKS.replacen(
            "[[tasks]]",
            "[[steps]]\nname = \"token\"\nkind = \"secret\"\nsecret = \"token\"\npath = \"/opt/app/token\"\n\n[[tasks]]",
            1,
        );
        let p2 = Playbook::parse(Path::new("pb.toml"), &with_secret).unwrap();
        let t2 = p2.with_task("update").unwrap();
        assert_eq!(t2.steps[0].name, "token");
        assert_eq!(t2.steps.len(), 4);
        let e = p.with_task("nope").unwrap_err().to_string();
        assert!(e.contains("no such task (tasks: update)"), "{e}");
    }

    #[test]
    fn bad_tasks_are_reported_with_their_lines() {
        let bad = |from: &str, to: &str| {
            let src = TASKS.replacen(from, to, 1);
            Playbook::parse(Path::new("pb.toml"), &src)
                .unwrap_err()
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        let e = bad(
            "use = \"build\"\n[[tasks.rescue]]",
            "use = \"buidl\"\n[[tasks.rescue]]",
        );
        assert!(
            e[0].starts_with("pb.toml:22:1: tasks `update` steps: `use = \"buidl\"`: the playbook has no step of that name"),
            "{e:?}"
        );
        let e = bad("name = \"build the old one\"", "when = \"x\"");
        assert!(
            e[0].contains("a step with `use` takes only `name` (found `when`)"),
            "{e:?}"
        );
        let e = bad("name = \"build the old one\"", "");
        assert!(
            e[0].contains("task `update`: duplicate step name `build`"),
            "{e:?}"
        );
        let e = bad(
            "recheck_after = [\"app dir\"]",
            "recheck_after = [\"later\"]",
        );
        assert!(
            e[0].contains("`recheck_after` names `later`, which is not an earlier step"),
            "{e:?}"
        );
        let e = bad(
            "run = \"true\"\n",
            "run = \"true\"\nrecheck_after = [\"build\"]\n",
        );
        assert!(
            e[0].contains("task `update`: step `remember`: `recheck_after` names `build`, which is not an earlier step of the task"),
            "{e:?}"
        );
        let e = bad("description = \"build again\"", "descr = 1");
        assert!(e[0].contains("unknown field `descr`"), "{e:?}");
    }

    #[test]
    fn rollout_settings_are_checked() {
        let with = |r: &str| format!("{TASKS}\n[rollout]\n{r}\n");
        let p = Playbook::parse(
            Path::new("pb.toml"),
            &with("serial = \"25%\"\nmax_fail = 0\nhealth = \"build\"\norder = \"sorted\""),
        )
        .unwrap();
        assert_eq!(p.rollout.serial, Some(crate::rollout::Amount::Percent(25)));
        assert_eq!(p.rollout.max_fail, Some(crate::rollout::Amount::Count(0)));
        assert_eq!(p.rollout.health.as_deref(), Some("build"));
        // A task that has the health step keeps the gate (one without it runs without).
        assert_eq!(
            p.with_task("update").unwrap().rollout.health.as_deref(),
            Some("build")
        );
        let errs = |r: &str| {
            Playbook::parse(Path::new("pb.toml"), &with(r))
                .unwrap_err()
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            errs("serial = 0").contains("rollout: `serial` must be a number of hosts (at least 1)")
        );
        assert!(errs("max_fail = \"x\"").contains("rollout: `max_fail` must be"));
        assert!(errs("health = \"nope\"").contains("rollout: `health = \"nope\"` names no step"));
        assert!(errs("order = \"random\"").contains("unknown variant `random`"));
        assert!(errs("batch = 2").contains("unknown field `batch`"));
    }
}
