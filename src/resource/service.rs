//! `service`: a systemd unit enabled (started at boot) and/or running, or neither.
//!
//! Probed with `systemctl is-enabled` / `is-active`; changed with `systemctl enable|disable` and
//! `start|stop`. A unit systemd does not know yet (its package is installed by an earlier step)
//! is "known after apply"; a host without systemd is an error.

use super::StepError;
use crate::fact::ServiceState;
use crate::plan::{Action, Change};
use crate::quote::quote;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The unit: `docker` (= `docker.service`), `nginx.service`, `foo.timer`.
    pub service: String,
    /// Started at boot (`systemctl enable`) or not (`disable`); unset: not managed.
    pub enabled: Option<bool>,
    /// Running now (`systemctl start`) or stopped (`stop`); unset: not managed.
    pub running: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Full unit name (`docker.service`).
    pub unit: String,
    pub enabled: Option<bool>,
    pub running: Option<bool>,
}

/// Unit types that can be enabled and started.
const TYPES: &[&str] = &[
    "service",
    "socket",
    "timer",
    "path",
    "target",
    "mount",
    "automount",
    "swap",
];

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, StepError> {
        let s = a.service.trim();
        let bad = || {
            format!(
                "`service = \"{}\"`: a systemd unit name such as \"docker\" or \"docker.service\" (letters, digits, `:-_.@`)",
                a.service
            )
        };
        if s.is_empty()
            || s.len() > 200
            || s.starts_with(['-', '.'])
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":-_.@".contains(c))
        {
            return Err(StepError::arg(bad()));
        }
        let unit = match s.rsplit_once('.') {
            Some((name, ty)) if TYPES.contains(&ty) && !name.is_empty() => s.to_string(),
            Some((_, ty)) if ["device", "slice", "scope"].contains(&ty) => {
                return Err(StepError::arg(format!(
                    "`service = \"{s}\"`: unit type `.{ty}` cannot be enabled or started here (one of {})",
                    TYPES.join(", ")
                )));
            }
            _ => format!("{s}.service"),
        };
        if a.enabled.is_none() && a.running.is_none() {
            return Err(StepError::arg(
                "a service step needs `enabled` and/or `running`",
            ));
        }
        Ok(Self {
            unit,
            enabled: a.enabled,
            running: a.running,
        })
    }

    fn target(&self) -> String {
        self.unit.clone()
    }

    pub fn diff(&self, o: &ServiceState) -> Result<Change, StepError> {
        let (enabled, active) = match o {
            ServiceState::NoSystemd => {
                return Err(StepError::host(format!(
                    "service needs systemd: this host does not run it (no /run/systemd/system), so {} cannot be managed",
                    self.unit
                )));
            }
            ServiceState::NotFound => {
                return Ok(Change::deferred(
                    self.target(),
                    format!("unit {} does not exist yet", self.unit),
                ));
            }
            ServiceState::Unit { enabled, active } => (enabled.as_str(), active.as_str()),
        };
        let u = quote(&self.unit);
        let mut script = String::new();
        let mut details = vec![];
        let mut reasons = vec![];
        // Enable before start; stop before disable (the order systemctl --now uses).
        let mut after = String::new();
        if let Some(want) = self.enabled {
            match self.compare_enabled(want, enabled, &u)? {
                None => reasons.push(enabled.to_string()),
                Some((detail, line)) => {
                    details.push(detail);
                    if want {
                        script.push_str(&line);
                    } else {
                        after.push_str(&line);
                    }
                }
            }
        }
        if let Some(want) = self.running {
            match self.compare_running(want, active, enabled, &u)? {
                None => reasons.push(active.to_string()),
                Some((detail, line)) => {
                    details.push(detail);
                    script.push_str(&line);
                }
            }
        }
        script.push_str(&after);
        if script.is_empty() {
            return Ok(Change::noop(self.target(), reasons.join(", ")));
        }
        let mut c = Change::new(Action::Update, self.target(), details.join(", "), script);
        c.details = details;
        Ok(c)
    }

    /// Compare `enabled` (`systemctl is-enabled`) with `want`: None when nothing is to do (as
    /// wanted, or masked and not wanted), else the detail and the `systemctl enable|disable`
    /// line for the unit (`u`, quoted). A masked unit to enable, or a state enable/disable do
    /// not switch (static, indirect...), is an error.
    fn compare_enabled(
        &self,
        want: bool,
        enabled: &str,
        u: &str,
    ) -> Result<Option<(String, String)>, StepError> {
        let is = match enabled {
            "enabled" | "alias" => Some(true),
            "disabled" | "masked" | "masked-runtime" | "enabled-runtime" | "linked"
            | "linked-runtime" => Some(false),
            // static, indirect, generated, transient, bad: not switchable with enable/disable.
            _ => None,
        };
        match is {
            Some(is) if is == want => Ok(None),
            Some(_) if enabled.starts_with("masked") => {
                if want {
                    return Err(StepError::host(format!(
                        "{} is masked: `systemctl unmask {}` first, if it should run",
                        self.unit, self.unit
                    )));
                }
                Ok(None)
            }
            Some(_) => {
                let verb = if want { "enable" } else { "disable" };
                let detail = format!("{enabled} -> {}", if want { "enabled" } else { "disabled" });
                Ok(Some((detail, format!("systemctl {verb} --quiet -- {u}\n"))))
            }
            None => Err(StepError::host(format!(
                "{} cannot be {} (`systemctl is-enabled`: {enabled}); leave `enabled` unset for it",
                self.unit,
                if want { "enabled" } else { "disabled" }
            ))),
        }
    }

    /// Compare `active` (`systemctl is-active`) with `want` (running): None when as wanted,
    /// else the detail and the `systemctl start|stop` line for the unit (`u`, quoted). Starting
    /// a masked unit (`enabled`) is an error.
    fn compare_running(
        &self,
        want: bool,
        active: &str,
        enabled: &str,
        u: &str,
    ) -> Result<Option<(String, String)>, StepError> {
        let is = matches!(active, "active" | "reloading" | "activating" | "refreshing");
        if is == want {
            return Ok(None);
        }
        if want && enabled.starts_with("masked") {
            return Err(StepError::host(format!(
                "{} is masked: `systemctl unmask {}` first, if it should run",
                self.unit, self.unit
            )));
        }
        let verb = if want { "start" } else { "stop" };
        let detail = format!("{active} -> {}", if want { "running" } else { "stopped" });
        Ok(Some((detail, format!("systemctl {verb} -- {u}\n"))))
    }
}

/// The `service` step kind.
pub(crate) struct ServiceKind;

impl super::StepKind for ServiceKind {
    fn name(&self) -> &'static str {
        "service"
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
        Ok(super::Desired::Service(Desired::from_args(super::args(
            args,
        )?)?))
    }

    /// Needs `systemctl`.
    fn needs(&self) -> &'static [super::kind::Need] {
        &[super::kind::Need::Systemd]
    }
}

/// Asks for the unit.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        vec![p.add(crate::fact::Request::Service(self.unit.clone()))]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [crate::fact::Observed::Service(o)] => Some(self.diff(o)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(service: &str, enabled: Option<bool>, running: Option<bool>) -> Desired {
        Desired::from_args(Args {
            service: service.into(),
            enabled,
            running,
        })
        .unwrap()
    }

    fn unit(e: &str, a: &str) -> ServiceState {
        ServiceState::Unit {
            enabled: e.into(),
            active: a.into(),
        }
    }

    #[test]
    fn unit_names() {
        assert_eq!(want("docker", Some(true), None).unit, "docker.service");
        assert_eq!(
            want("docker.socket", None, Some(true)).unit,
            "docker.socket"
        );
        assert_eq!(
            want("getty@tty1", Some(true), None).unit,
            "getty@tty1.service"
        );
        // A dot inside the name, no type: a service.
        assert_eq!(
            want("org.example.app", Some(true), None).unit,
            "org.example.app.service"
        );
        let err = |s: &str, e: Option<bool>, r: Option<bool>| {
            Desired::from_args(Args {
                service: s.into(),
                enabled: e,
                running: r,
            })
            .unwrap_err()
            .to_string()
        };
        assert!(err("", Some(true), None).contains("unit name"));
        assert!(err("docker; reboot", Some(true), None).contains("unit name"));
        assert!(err("-docker", Some(true), None).contains("unit name"));
        assert!(err("$(id)", Some(true), None).contains("unit name"));
        assert!(err("foo.device", Some(true), None).contains("`.device`"));
        assert!(err("docker", None, None).contains("`enabled` and/or `running`"));
    }

    /// (desired enabled, desired running, observed) -> Ok((action, script, details)) | Err(part of message).
    #[test]
    fn diff_cases() {
        type Case<'a> = (
            Option<bool>,
            Option<bool>,
            ServiceState,
            Result<(Action, &'a str, &'a [&'a str]), &'a str>,
        );
        let cases: &[Case] = &[
            (
                Some(true),
                Some(true),
                unit("enabled", "active"),
                Ok((Action::NoOp, "", &[])),
            ),
            (
                Some(true),
                Some(true),
                unit("disabled", "inactive"),
                Ok((
                    Action::Update,
                    "systemctl enable --quiet -- 'docker.service'\nsystemctl start -- 'docker.service'\n",
                    &["disabled -> enabled", "inactive -> running"],
                )),
            ),
            (
                Some(true),
                Some(true),
                unit("enabled", "failed"),
                Ok((
                    Action::Update,
                    "systemctl start -- 'docker.service'\n",
                    &["failed -> running"],
                )),
            ),
            (
                Some(true),
                None,
                unit("enabled-runtime", "active"),
                Ok((
                    Action::Update,
                    "systemctl enable --quiet -- 'docker.service'\n",
                    &["enabled-runtime -> enabled"],
                )),
            ),
            (
                Some(false),
                Some(false),
                unit("enabled", "active"),
                Ok((
                    Action::Update,
                    "systemctl stop -- 'docker.service'\nsystemctl disable --quiet -- 'docker.service'\n",
                    &["enabled -> disabled", "active -> stopped"],
                )),
            ),
            (
                Some(false),
                Some(false),
                unit("disabled", "inactive"),
                Ok((Action::NoOp, "", &[])),
            ),
            // Only what is asked is managed.
            (
                None,
                Some(true),
                unit("disabled", "active"),
                Ok((Action::NoOp, "", &[])),
            ),
            (
                Some(true),
                None,
                unit("enabled", "inactive"),
                Ok((Action::NoOp, "", &[])),
            ),
            (
                None,
                Some(true),
                unit("static", "activating"),
                Ok((Action::NoOp, "", &[])),
            ),
            (
                None,
                Some(true),
                unit("static", "inactive"),
                Ok((
                    Action::Update,
                    "systemctl start -- 'docker.service'\n",
                    &["inactive -> running"],
                )),
            ),
            // A masked unit is stopped and not enabled: fine to keep so, refused to start.
            (
                Some(false),
                Some(false),
                unit("masked", "inactive"),
                Ok((Action::NoOp, "", &[])),
            ),
            (
                Some(true),
                None,
                unit("masked", "inactive"),
                Err("is masked"),
            ),
            (
                None,
                Some(true),
                unit("masked", "inactive"),
                Err("is masked"),
            ),
            (
                Some(true),
                None,
                unit("static", "active"),
                Err("cannot be enabled (`systemctl is-enabled`: static)"),
            ),
            (
                Some(true),
                Some(true),
                ServiceState::NoSystemd,
                Err("service needs systemd"),
            ),
            (
                Some(true),
                Some(true),
                ServiceState::NotFound,
                Ok((Action::Deferred, "", &[])),
            ),
        ];
        for (i, (e, r, obs, expect)) in cases.iter().enumerate() {
            let got = want("docker", *e, *r).diff(obs);
            match (got, expect) {
                (Ok(c), Ok((action, script, details))) => {
                    assert_eq!(c.action, *action, "case {i}");
                    assert_eq!(
                        c.op.as_ref().map(|o| o.script.as_str()).unwrap_or(""),
                        *script,
                        "case {i}"
                    );
                    assert_eq!(c.details, *details, "case {i}");
                    assert_eq!(c.target, "docker.service", "case {i}");
                }
                (Err(m), Err(want)) => assert!(m.to_string().contains(want), "case {i}: {m}"),
                (got, _) => panic!("case {i}: {got:?}"),
            }
        }
    }

    #[test]
    fn deferred_and_noop_reasons() {
        let d = want("docker", Some(true), Some(true));
        let c = d.diff(&ServiceState::NotFound).unwrap();
        assert_eq!(c.reason, "unit docker.service does not exist yet");
        let c = d.diff(&unit("enabled", "active")).unwrap();
        assert_eq!(c.reason, "enabled, active");
        let e = d.diff(&ServiceState::NoSystemd).unwrap_err().to_string();
        assert!(e.contains("docker.service"), "{e}");
    }

    #[test]
    fn names_are_quoted_in_scripts() {
        let d = want("getty@tty1", None, Some(true));
        let c = d.diff(&unit("static", "inactive")).unwrap();
        assert_eq!(
            c.op.unwrap().script,
            format!("systemctl start -- {}\n", quote("getty@tty1.service"))
        );
    }
}
