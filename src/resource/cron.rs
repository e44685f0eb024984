//! `cron`: one entry in its own file under `/etc/cron.d/` (root-owned, 0644), managed like a
//! `file` step whose content is generated from the schedule, user and command.

use super::State;
use super::StepError;
use super::file;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Args {
    /// File name under /etc/cron.d (letters, digits, `-` and `_`: cron ignores other names).
    #[serde(rename = "entry")]
    pub name: String,
    /// Five fields (`30 3 * * *`) or a shortcut (`@daily`, `@reboot`, ...).
    pub schedule: Option<String>,
    /// The user the command runs as (default root).
    pub user: Option<String>,
    pub command: Option<String>,
    /// Variables written above the entry (`PATH`, `MAILTO`, ...).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub state: State,
}

const SHORTCUTS: &[&str] = &[
    "@reboot",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

fn check_schedule(s: &str) -> Result<(), StepError> {
    let s = s.trim();
    if s.starts_with('@') {
        return if SHORTCUTS.contains(&s) {
            Ok(())
        } else {
            Err(StepError::arg(format!(
                "`schedule = \"{s}\"`: unknown shortcut (one of {})",
                SHORTCUTS.join(", ")
            )))
        };
    }
    // Fields are separated by spaces or tabs: a line break would start another cron line.
    let fields: Vec<&str> = s.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
    let ok_field = |f: &str| {
        !f.is_empty()
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || "*/,-".contains(c))
    };
    if fields.len() != 5 || !fields.iter().all(|f| ok_field(f)) {
        return Err(StepError::arg(format!(
            "`schedule = \"{s}\"`: expected five fields (minute hour day month weekday), e.g. \"30 3 * * *\", or a shortcut such as \"@daily\""
        )));
    }
    Ok(())
}

/// The desired file of a cron entry.
pub(crate) fn desired(a: Args) -> Result<file::Desired, StepError> {
    if a.name.is_empty()
        || !a
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(StepError::arg(format!(
            "`entry = \"{}\"`: only letters, digits, `-` and `_` (cron skips files with other names)",
            a.name
        )));
    }
    let path = format!("/etc/cron.d/{}", a.name);
    if a.state == State::Absent {
        return file::Desired::absent(path);
    }
    let (Some(schedule), Some(command)) = (a.schedule, a.command) else {
        return Err(StepError::arg(
            "a cron entry needs `schedule` and `command`",
        ));
    };
    check_schedule(&schedule)?;
    if command.contains('\n') || command.trim().is_empty() {
        return Err(StepError::arg("`command` must be one non-empty line"));
    }
    // cron turns an unescaped `%` into a newline (the rest becomes the command's stdin).
    if command.replace("\\%", "").contains('%') {
        return Err(StepError::arg(
            "`command` contains `%`, which cron turns into a newline: write `\\%` or move the command into a script",
        ));
    }
    build(path, &schedule, a.user, &command, &a.env)
}

fn build(
    path: String,
    schedule: &str,
    user: Option<String>,
    command: &str,
    env: &BTreeMap<String, String>,
) -> Result<file::Desired, StepError> {
    let user = user.unwrap_or_else(|| "root".into());
    super::check_account("user", &user)?;
    let mut text = String::from("# managed by claw-provision; changes made here are overwritten\n");
    for (k, v) in env {
        if k.is_empty()
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || v.contains('\n')
        {
            return Err(StepError::arg(format!(
                "`env.{k}`: names are letters, digits and `_`; values are one line"
            )));
        }
        text.push_str(&format!("{k}={v}\n"));
    }
    text.push_str(&format!("{} {user} {command}\n", schedule.trim()));
    file::Desired::generated(path, text.into_bytes(), 0o644)
}

/// The `cron` step kind (a file in `/etc/cron.d`).
pub(crate) struct CronKind;

impl super::StepKind for CronKind {
    fn name(&self) -> &'static str {
        "cron"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<Args>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        _: &serde_json::Map<String, serde_json::Value>,
        _: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        Ok(super::Desired::File(desired(super::args(args)?)?))
    }

    fn needs(&self) -> &'static [super::kind::Need] {
        &[super::kind::Need::CronD]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(schedule: &str, command: &str) -> Args {
        Args {
            name: "claw-backup".into(),
            schedule: Some(schedule.into()),
            user: None,
            command: Some(command.into()),
            env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
            state: State::Present,
        }
    }

    #[test]
    fn renders_the_entry() {
        let d = desired(args("0 3 * * *", "/opt/claw-ai/backup.sh")).unwrap();
        assert_eq!(d.path, "/etc/cron.d/claw-backup");
        assert_eq!(
            String::from_utf8(d.content.to_vec()).unwrap(),
            "# managed by claw-provision; changes made here are overwritten\nPATH=/usr/bin:/bin\n0 3 * * * root /opt/claw-ai/backup.sh\n"
        );
        assert_eq!(d.mode, Some(0o644));
        assert_eq!(d.owner.as_deref(), Some("root"));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(
            desired(args("0 3 * *", "x"))
                .unwrap_err()
                .to_string()
                .contains("five fields")
        );
        assert!(
            desired(args("@sometimes", "x"))
                .unwrap_err()
                .to_string()
                .contains("shortcut")
        );
        assert!(
            desired(args("@daily", "date +%F"))
                .unwrap_err()
                .to_string()
                .contains("`%`")
        );
        assert!(desired(args("@daily", "date +\\%F")).is_ok());
        assert!(desired(args("@daily", "a\nb")).is_err());
        // A line break between the fields would start another cron line.
        assert!(
            desired(args("0 3 * *\n*", "x"))
                .unwrap_err()
                .to_string()
                .contains("five fields")
        );
        assert!(desired(args("0\t3 * * *", "x")).is_ok());
        let mut a = args("@daily", "x");
        a.user = Some("-root".into());
        assert!(desired(a).is_err());
        let mut a = args("@daily", "x");
        a.name = "has.dot".into();
        assert!(desired(a).is_err());
    }
}
