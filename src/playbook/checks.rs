//! Checks across a whole playbook: unique names, `recheck_after` and `notify` targets,
//! handlers, the `[rollout]` table (its `health` names a step) and `operator_secrets` names.

use super::{RawRollout, Step, Task, line_offset};
use crate::error::ConfigError;
use crate::inventory::find_key;
use std::path::Path;
use toml::Spanned;

/// Step and handler names are unique within their list.
pub(super) fn check_duplicates(
    path: &Path,
    steps: &[Step],
    handlers: &[Step],
    errors: &mut Vec<ConfigError>,
) {
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
pub(super) fn check_recheck_after(
    path: &Path,
    src: &str,
    steps: &[Step],
    errors: &mut Vec<ConfigError>,
) {
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
pub(super) fn check_notify(
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
pub(super) fn check_handlers(path: &Path, handlers: &[Step], errors: &mut Vec<ConfigError>) {
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
pub(super) fn parse_rollout(
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
            let groups_line =
                crate::error::line_col(src, find_key(src, at, "groups").unwrap_or(at)).0;
            crate::rollout::Rollout {
                serial,
                max_fail,
                health: r.health,
                order: r.order,
                groups: r.groups,
                groups_line,
            }
        }
    }
}

/// `operator_secrets` names are valid secret names.
pub(super) fn check_operator_secrets(
    path: &Path,
    src: &str,
    names: &[String],
    errors: &mut Vec<ConfigError>,
) {
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
