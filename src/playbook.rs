//! The playbook file: name, host selector, vars, ordered steps and handlers.
//!
//! Steps keep their arguments as raw TOML here; they are checked against their kind when the
//! playbook is loaded (unknown keys, wrong types) and rendered per host by the planner.

use crate::duration::Secs;
use crate::error::{ConfigError, ConfigErrors, line_col};
use crate::inventory::{find_key, toml_error};
use crate::resource::Kind;
use crate::secret::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
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

const COMMON_KEYS: &[&str] = &[
    "name",
    "kind",
    "when",
    "notify",
    "tags",
    "timeout",
    "recheck_after",
];

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
    pub fn with_task(&self, name: &str) -> Result<Playbook, String> {
        let Some(t) = self.tasks.iter().find(|t| t.name == name) else {
            let known: Vec<&str> = self.tasks.iter().map(|t| t.name.as_str()).collect();
            return Err(if known.is_empty() {
                format!(
                    "{}: --task {name}: this playbook has no tasks",
                    self.path.display()
                )
            } else {
                format!(
                    "{}: --task {name}: no such task (tasks: {})",
                    self.path.display(),
                    known.join(", ")
                )
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

    /// The operator's secrets, from the environment first, then from `operator_secrets_file`.
    /// A missing one is an error naming where it was looked for (never a value).
    pub fn load_operator_secrets(&self) -> Result<Vec<(String, Secret)>, ConfigErrors> {
        let mut out = Vec::new();
        let mut file: Option<Vec<(String, Secret)>> = None;
        let mut errors = Vec::new();
        for name in &self.operator_secrets {
            if let Some(v) = std::env::var_os(name) {
                match v.into_string() {
                    Ok(v) => out.push((name.clone(), Secret::new(v))),
                    Err(_) => errors.push(self.secret_error(format!(
                        "operator secret `{name}`: the environment variable is not valid UTF-8"
                    ))),
                }
                continue;
            }
            let Some(path) = &self.operator_secrets_file else {
                if self.task.is_some() {
                    continue;
                }
                errors.push(self.secret_error(format!(
                    "operator secret `{name}` is not set: export {name}=... before running                      (or name a git-ignored file in `operator_secrets_file`)"
                )));
                continue;
            };
            if file.is_none() {
                match read_secrets_file(path) {
                    Ok(f) => file = Some(f),
                    // A task uses operator secrets only if a step names them (it then fails to
                    // render, naming the step): a missing file is no error for it.
                    Err(_) if self.task.is_some() && !path.exists() => file = Some(Vec::new()),
                    Err(e) => return Err(ConfigErrors(vec![e])),
                }
            }
            match file
                .as_ref()
                .and_then(|f| f.iter().find(|(k, _)| k == name))
            {
                Some((_, v)) => out.push((name.clone(), v.clone())),
                None if self.task.is_some() => {}
                None => errors.push(self.secret_error(format!(
                    "operator secret `{name}` is neither in the environment nor in {}",
                    path.display()
                ))),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn secret_error(&self, msg: String) -> ConfigError {
        let off = find_key(&self.source, 0, "operator_secrets").unwrap_or(0);
        ConfigError::at(&self.path, &self.source, off, msg)
    }

    /// A step or handler by name.
    pub fn handler(&self, name: &str) -> Option<&Step> {
        self.handlers.iter().find(|h| h.name == name)
    }
}
/// Step and handler names are unique within their list.
fn check_duplicates(path: &Path, steps: &[Step], handlers: &[Step], errors: &mut Vec<ConfigError>) {
    for (list, what) in [(&steps, "step"), (&handlers, "handler")] {
        for (i, s) in list.iter().enumerate() {
            if list[..i].iter().any(|o| o.name == s.name) {
                errors.push(ConfigError::new(
                    path,
                    s.line,
                    1,
                    format!("duplicate {what} name `{}`", s.name),
                ));
            }
        }
    }
}

/// `recheck_after` names earlier steps.
fn check_recheck_after(path: &Path, src: &str, steps: &[Step], errors: &mut Vec<ConfigError>) {
    for (i, s) in steps.iter().enumerate() {
        for r in &s.recheck_after {
            if !steps[..i].iter().any(|o| &o.name == r) {
                let off = find_key(src, line_offset(src, s.line), "recheck_after")
                    .unwrap_or(line_offset(src, s.line));
                errors.push(ConfigError::at(
                    path,
                    src,
                    off,
                    format!(
                        "step `{}`: `recheck_after` names `{r}`, which is not an earlier step",
                        s.name
                    ),
                ));
            }
        }
    }
}

/// What steps (the playbook's and its tasks') notify is a handler.
fn check_notify(
    path: &Path,
    src: &str,
    steps: &[Step],
    tasks: &[Task],
    handlers: &[Step],
    errors: &mut Vec<ConfigError>,
) {
    for s in steps.iter().chain(tasks.iter().flat_map(|t| &t.steps)) {
        for n in &s.notify {
            if !handlers.iter().any(|h| &h.name == n) {
                let off = find_key(src, line_offset(src, s.line), "notify")
                    .unwrap_or(line_offset(src, s.line));
                errors.push(ConfigError::at(
                    path,
                    src,
                    off,
                    format!(
                        "step `{}` notifies `{n}`, but no handler has that name",
                        s.name
                    ),
                ));
            }
        }
    }
}

/// Handlers run commands and notify nothing.
fn check_handlers(path: &Path, handlers: &[Step], errors: &mut Vec<ConfigError>) {
    for h in handlers {
        if !h.kind.runs_when_notified() {
            errors.push(ConfigError::new(
                path,
                h.line,
                1,
                format!(
                    "handler `{}` must be of kind `command` (it runs when notified)",
                    h.name
                ),
            ));
        }
        if !h.notify.is_empty() {
            errors.push(ConfigError::new(
                path,
                h.line,
                1,
                format!("handler `{}` cannot notify other handlers", h.name),
            ));
        }
    }
}

/// The `[rollout]` table; its `health` names a step.
fn parse_rollout(
    path: &Path,
    src: &str,
    rollout: Option<Spanned<RawRollout>>,
    steps: &[Step],
    errors: &mut Vec<ConfigError>,
) -> crate::rollout::Rollout {
    match rollout {
        None => crate::rollout::Rollout::default(),
        Some(r) => {
            let at = r.span().start;
            let r = r.into_inner();
            let mut amount = |key: &str, v: Option<toml::Value>, zero: bool| {
                v.and_then(|v| match crate::rollout::Amount::parse(&v, key, zero) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        let off = find_key(src, at, key).unwrap_or(at);
                        errors.push(ConfigError::at(path, src, off, format!("rollout: {e}")));
                        None
                    }
                })
            };
            let serial = amount("serial", r.serial, false);
            let max_fail = amount("max_fail", r.max_fail, true);
            if let Some(h) = &r.health
                && !steps.iter().any(|s| &s.name == h)
            {
                let off = find_key(src, at, "health").unwrap_or(at);
                errors.push(ConfigError::at(
                    path,
                    src,
                    off,
                    format!("rollout: `health = \"{h}\"` names no step of the playbook"),
                ));
            }
            crate::rollout::Rollout {
                serial,
                max_fail,
                health: r.health,
                order: r.order,
            }
        }
    }
}

/// `operator_secrets` names are valid secret names.
fn check_operator_secrets(path: &Path, src: &str, names: &[String], errors: &mut Vec<ConfigError>) {
    for n in names {
        if let Err(e) = crate::secret::check_name(n) {
            let off = find_key(src, 0, "operator_secrets").unwrap_or(0);
            errors.push(ConfigError::at(
                path,
                src,
                off,
                format!("operator_secrets: {e}"),
            ));
        }
    }
}

/// Reads a `NAME=value` file (`#` comments, blank lines, optional surrounding quotes).
/// Errors name the file and line, never a value.
fn read_secrets_file(path: &Path) -> Result<Vec<(String, Secret)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            path,
            0,
            0,
            format!("cannot read the operator secrets file: {e}"),
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        let Some((k, v)) = l.split_once('=') else {
            return Err(ConfigError::new(
                path,
                i + 1,
                1,
                "expected NAME=value (the line is not shown: it may hold a secret)",
            ));
        };
        let k = k.trim();
        if crate::secret::check_name(k).is_err() {
            return Err(ConfigError::new(path, i + 1, 1, "bad name before `=`"));
        }
        let v = v.trim();
        let v = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(a, b)| v.strip_prefix(*a).and_then(|x| x.strip_suffix(*b)))
            .unwrap_or(v);
        out.push((k.to_string(), Secret::new(v)));
    }
    Ok(out)
}

/// Byte offset of the start of a 1-based line.
pub(crate) fn line_offset(src: &str, line: usize) -> usize {
    src.split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum()
}

fn parse_steps(
    path: &Path,
    src: &str,
    raw: Vec<Spanned<toml::Table>>,
    section: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<Step> {
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, t)| parse_step(path, src, t, &format!("{section}[{}]", i + 1), errors))
        .collect()
}

/// Where a step table is, for its errors.
struct StepAt<'a> {
    path: &'a Path,
    src: &'a str,
    start: usize,
}

impl StepAt<'_> {
    /// An error at `key` of the table (else at the table).
    fn key(&self, key: &str, msg: String) -> ConfigError {
        let off = find_key(self.src, self.start, key).unwrap_or(self.start);
        ConfigError::at(self.path, self.src, off, msg)
    }

    /// An error at the table.
    fn table(&self, msg: String) -> ConfigError {
        ConfigError::at(self.path, self.src, self.start, msg)
    }
}

/// One step table (`what` names it before it has a name); `None` when it is not usable.
fn parse_step(
    path: &Path,
    src: &str,
    t: Spanned<toml::Table>,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Step> {
    let at = StepAt {
        path,
        src,
        start: t.span().start,
    };
    let line = line_col(src, at.start).0;
    let mut table = t.into_inner();
    let step = step_name(&mut table, what, &at)
        .and_then(|name| step_kind(&mut table, &name, &at).map(|kind| (name, kind)));
    let (name, kind) = step.map_err(|e| errors.push(e)).ok()?;
    let common = CommonKeys::take(&mut table, &name, &at, errors);
    if let Err(e) = check_args(kind, &table, &name, &at) {
        errors.push(e);
        return None;
    }
    Some(Step {
        name,
        kind,
        args: table,
        when: common.when,
        notify: common.notify,
        tags: common.tags,
        timeout: common.timeout,
        recheck_after: common.recheck_after,
        rescue: false,
        not_selected: None,
        line,
    })
}

/// The step's `name`: a non-empty string.
fn step_name(table: &mut toml::Table, what: &str, at: &StepAt<'_>) -> Result<String, ConfigError> {
    match table.remove("name") {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(at.key("name", format!("{what}: `name` must be a non-empty string"))),
        None => Err(at.table(format!("{what}: missing `name`"))),
    }
}

/// The step's `kind`: one of the known kinds.
fn step_kind(table: &mut toml::Table, name: &str, at: &StepAt<'_>) -> Result<Kind, ConfigError> {
    match table.remove("kind") {
        Some(toml::Value::String(k)) => Kind::parse(&k).ok_or_else(|| {
            at.key(
                "kind",
                format!(
                    "step `{name}`: unknown step kind `{k}` (known kinds: {})",
                    Kind::names()
                ),
            )
        }),
        Some(_) => Err(at.key("kind", format!("step `{name}`: `kind` must be a string"))),
        None => Err(at.table(format!(
            "step `{name}`: missing `kind` (one of: {})",
            Kind::names()
        ))),
    }
}

/// The keys every step kind takes; a bad one is reported and left out.
struct CommonKeys {
    when: Option<String>,
    notify: Vec<String>,
    tags: Vec<String>,
    recheck_after: Vec<String>,
    timeout: Option<Duration>,
}

impl CommonKeys {
    /// Takes the common keys out of `table`, so that what is left is the kind's arguments.
    fn take(
        table: &mut toml::Table,
        name: &str,
        at: &StepAt<'_>,
        errors: &mut Vec<ConfigError>,
    ) -> CommonKeys {
        let mut common_err =
            |key: &str, msg: &str| errors.push(at.key(key, format!("step `{name}`: {msg}")));
        let when = match table.remove("when") {
            None => None,
            Some(toml::Value::String(s)) => Some(s),
            Some(_) => {
                common_err(
                    "when",
                    "`when` must be a string holding an expression, e.g. when = \"env == 'prod'\"",
                );
                None
            }
        };
        let list =
            |v: Option<toml::Value>, key: &str, errs: &mut dyn FnMut(&str, &str)| -> Vec<String> {
                match v {
                    None => vec![],
                    Some(toml::Value::String(s)) => vec![s],
                    Some(toml::Value::Array(a)) if a.iter().all(toml::Value::is_str) => a
                        .into_iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect(),
                    Some(_) => {
                        errs(
                            key,
                            &format!("`{key}` must be a string or a list of strings"),
                        );
                        vec![]
                    }
                }
            };
        let notify = list(table.remove("notify"), "notify", &mut common_err);
        let tags = list(table.remove("tags"), "tags", &mut common_err);
        let recheck_after = list(
            table.remove("recheck_after"),
            "recheck_after",
            &mut common_err,
        );
        let timeout = match table.remove("timeout") {
            None => None,
            Some(v) => match Secs::deserialize(v) {
                Ok(s) => Some(s.0),
                Err(e) => {
                    common_err("timeout", &format!("`timeout`: {}", e.message()));
                    None
                }
            },
        };
        CommonKeys {
            when,
            notify,
            tags,
            recheck_after,
            timeout,
        }
    }
}

/// The kind's own arguments (what is left of the table) are what it takes.
fn check_args(
    kind: Kind,
    table: &toml::Table,
    name: &str,
    at: &StepAt<'_>,
) -> Result<(), ConfigError> {
    let Err(e) = kind.check_args(toml::Value::Table(table.clone())) else {
        return Ok(());
    };
    let msg = e.message().trim().to_string();
    let key = msg
        .strip_prefix("unknown field `")
        .or_else(|| msg.strip_prefix("missing field `"))
        .and_then(|r| r.split('`').next())
        .unwrap_or("");
    let mut full = format!("step `{name}` ({kind}): {msg}");
    if msg.starts_with("unknown field") {
        full.push_str(&format!(" (common step keys: {})", COMMON_KEYS.join(", ")));
    }
    Err(if msg.starts_with("missing field") {
        at.table(full)
    } else {
        at.key(key, full)
    })
}

/// The `[[tasks]]`: each step is written in place or is `use = "NAME"` (a step of the
/// playbook, optionally renamed with `name`). Names are unique within a task.
fn parse_tasks(
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
        let e = p.with_task("nope").unwrap_err();
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
