//! The operator's secrets (`operator_secrets`): read from the environment, else from the
//! `NAME=value` file `operator_secrets_file` names.

use super::Playbook;
use crate::error::{ConfigError, ConfigErrors};
use crate::inventory::find_key;
use crate::secret::Secret;
use std::path::Path;

impl Playbook {
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
