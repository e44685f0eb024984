//! One step table of `[[steps]]`, `[[handlers]]` or a task: its name and kind, the keys every
//! kind takes, and its arguments checked against its kind.

use super::Step;
use crate::duration::Secs;
use crate::error::{ConfigError, line_col};
use crate::inventory::find_key;
use crate::resource::Kind;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// The keys every step kind takes.
const COMMON_KEYS: &[&str] = &[
    "name",
    "kind",
    "when",
    "notify",
    "tags",
    "timeout",
    "recheck_after",
];

pub(super) fn parse_steps(
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
pub(super) struct StepAt<'a> {
    pub(super) path: &'a Path,
    pub(super) src: &'a str,
    pub(super) start: usize,
}

impl StepAt<'_> {
    /// An error at `key` of the table (else at the table).
    pub(super) fn key(&self, key: &str, msg: String) -> ConfigError {
        let off = find_key(self.src, self.start, key).unwrap_or(self.start);
        ConfigError::at(self.path, self.src, off, msg)
    }

    /// An error at the table.
    pub(super) fn table(&self, msg: String) -> ConfigError {
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
