//! Fact: a systemd unit (does systemd run, is the unit loaded, `is-enabled`, `is-active`).
//!
//! Read-only: `systemctl show`, `is-enabled` and `is-active` only.

use super::FactError;
use crate::quote::quote;

/// What the probe saw of a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceState {
    /// systemd does not run on the host (no `/run/systemd/system`, or no `systemctl`).
    NoSystemd,
    /// systemd knows no such unit (its package is not installed yet, or a typo).
    NotFound,
    Unit {
        /// `systemctl is-enabled` (`enabled`, `disabled`, `static`, `masked`, ...).
        enabled: String,
        /// `systemctl is-active` (`active`, `inactive`, `failed`, `activating`, ...).
        active: String,
    },
}

/// The probe snippet (in a subshell: its variables do not leak).
pub(crate) fn command(id: usize, unit: &str) -> String {
    format!(
        r#"(
id={id}; u={u}
if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then
  printf '@%s\tnosystemd\n' "$id"
else
  l=$(systemctl show -p LoadState --value -- "$u" 2>/dev/null)
  if [ "$l" = not-found ]; then printf '@%s\tnotfound\n' "$id"
  else
    e=$(systemctl is-enabled -- "$u" 2>/dev/null | head -n 1); [ -n "$e" ] || e=unknown
    a=$(systemctl is-active -- "$u" 2>/dev/null | head -n 1); [ -n "$a" ] || a=unknown
    printf '@%s\tunit\t%s\t%s\n' "$id" "$e" "$a"
  fi
fi
)
"#,
        u = quote(unit)
    )
}

fn word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

/// Parses the fields after `@ID`.
pub(crate) fn parse(fields: &[&str]) -> Result<ServiceState, FactError> {
    match fields {
        ["nosystemd"] => Ok(ServiceState::NoSystemd),
        ["notfound"] => Ok(ServiceState::NotFound),
        ["unit", e, a] if word(e) && word(a) => Ok(ServiceState::Unit {
            enabled: (*e).to_string(),
            active: (*a).to_string(),
        }),
        _ => Err(FactError(format!(
            "bad service record `{}`",
            fields.join("\t").chars().take(120).collect::<String>()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse(&["nosystemd"]).unwrap(), ServiceState::NoSystemd);
        assert_eq!(parse(&["notfound"]).unwrap(), ServiceState::NotFound);
        assert_eq!(
            parse(&["unit", "enabled", "active"]).unwrap(),
            ServiceState::Unit {
                enabled: "enabled".into(),
                active: "active".into()
            }
        );
        assert_eq!(
            parse(&["unit", "masked-runtime", "inactive"]).unwrap(),
            ServiceState::Unit {
                enabled: "masked-runtime".into(),
                active: "inactive".into()
            }
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &[][..],
            &["unit"][..],
            &["unit", "enabled"][..],
            &["unit", "Failed to get unit file state", "active"][..],
            &["unit", "enabled", "active", "x"][..],
            &["weird"][..],
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("bad service record"), "{e}");
        }
    }

    #[test]
    fn snippet_without_systemd_reports_a_record() {
        // The machine running unit tests may or may not run systemd: either way one record.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command(7, "claw-no-such-unit-4f1e.service"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let line = text.lines().next().expect("a record");
        let fields: Vec<&str> = line.strip_prefix("@7\t").expect(line).split('\t').collect();
        assert!(
            matches!(
                parse(&fields).unwrap(),
                ServiceState::NoSystemd | ServiceState::NotFound
            ),
            "{line}"
        );
    }
}
