//! The playbook file: name, host selector, vars, ordered steps and handlers.
//!
//! Steps keep their arguments as raw TOML here; they are checked against their kind when the
//! playbook is loaded (unknown keys, wrong types) and rendered per host by the planner.

use crate::duration::Secs;
use crate::error::{ConfigError, ConfigErrors, line_col};
use crate::inventory::{find_key, toml_error};
use crate::resource;
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
}

/// One step (or handler) of a playbook.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// The resource kind (`dir`, `file`, `template`, `command`).
    pub kind: String,
    /// Kind-specific arguments, unrendered.
    pub args: toml::Table,
    /// A Tera expression; the step is skipped on hosts where it is false.
    pub when: Option<String>,
    /// Handlers notified when this step changes something.
    pub notify: Vec<String>,
    pub tags: Vec<String>,
    pub timeout: Option<Duration>,
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
    /// The file text, for error positions found later (templates, variables).
    pub source: String,
}

const COMMON_KEYS: &[&str] = &["name", "kind", "when", "notify", "tags", "timeout"];

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
        for s in &steps {
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
        for h in &handlers {
            if h.kind != "command" {
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
        for n in &raw.operator_secrets {
            if let Err(e) = resource::secret::check_name(n) {
                let off = find_key(src, 0, "operator_secrets").unwrap_or(0);
                errors.push(ConfigError::at(
                    path,
                    src,
                    off,
                    format!("operator_secrets: {e}"),
                ));
            }
        }
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
            source: src.to_string(),
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
                errors.push(self.secret_error(format!(
                    "operator secret `{name}` is not set: export {name}=... before running                      (or name a git-ignored file in `operator_secrets_file`)"
                )));
                continue;
            };
            if file.is_none() {
                match read_secrets_file(path) {
                    Ok(f) => file = Some(f),
                    Err(e) => return Err(ConfigErrors(vec![e])),
                }
            }
            match file
                .as_ref()
                .and_then(|f| f.iter().find(|(k, _)| k == name))
            {
                Some((_, v)) => out.push((name.clone(), v.clone())),
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
        if resource::secret::check_name(k).is_err() {
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
    let mut out = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let start = t.span().start;
        let line = line_col(src, start).0;
        let mut table = t.into_inner();
        let err_at = |key: &str, msg: String| {
            let off = find_key(src, start, key).unwrap_or(start);
            ConfigError::at(path, src, off, msg)
        };
        let what = format!("{section}[{}]", i + 1);
        let name = match table.remove("name") {
            Some(toml::Value::String(s)) if !s.trim().is_empty() => s,
            Some(_) => {
                errors.push(err_at(
                    "name",
                    format!("{what}: `name` must be a non-empty string"),
                ));
                continue;
            }
            None => {
                errors.push(ConfigError::at(
                    path,
                    src,
                    start,
                    format!("{what}: missing `name`"),
                ));
                continue;
            }
        };
        let kind = match table.remove("kind") {
            Some(toml::Value::String(k)) if resource::KINDS.contains(&k.as_str()) => k,
            Some(toml::Value::String(k)) => {
                errors.push(err_at(
                    "kind",
                    format!(
                        "step `{name}`: unknown step kind `{k}` (known kinds: {})",
                        resource::KINDS.join(", ")
                    ),
                ));
                continue;
            }
            Some(_) => {
                errors.push(err_at(
                    "kind",
                    format!("step `{name}`: `kind` must be a string"),
                ));
                continue;
            }
            None => {
                errors.push(ConfigError::at(
                    path,
                    src,
                    start,
                    format!(
                        "step `{name}`: missing `kind` (one of: {})",
                        resource::KINDS.join(", ")
                    ),
                ));
                continue;
            }
        };
        let mut common_err =
            |key: &str, msg: &str| errors.push(err_at(key, format!("step `{name}`: {msg}")));
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
        if let Err(e) = resource::check_args(&kind, table.clone()) {
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
            errors.push(if msg.starts_with("missing field") {
                ConfigError::at(path, src, start, full)
            } else {
                err_at(key, full)
            });
            continue;
        }
        out.push(Step {
            name,
            kind,
            args: table,
            when,
            notify,
            tags,
            timeout,
            line,
        });
    }
    out
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
        assert_eq!(p.handlers[0].kind, "command");
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
}
