//! `http_check`: a URL checked from the target (curl), with retries and backoff. It changes
//! nothing: on apply it runs and passes (`ok`) or fails the host; `plan` shows it as a check.

use super::StepError;
use crate::plan::{Action, Change};
use crate::quote::quote;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub url: String,
    /// Expected HTTP status (default 200).
    pub status: Option<u16>,
    /// A text the body must contain.
    pub contains: Option<String>,
    /// Attempts before giving up (default 5).
    pub retries: Option<u32>,
    /// First pause between attempts, in seconds (default 1); doubles up to 10 s.
    pub delay: Option<u32>,
    /// Limit of one attempt, in seconds (default 5).
    pub attempt_timeout: Option<u32>,
    /// Accept a certificate the target does not trust (lab or self-signed certificates).
    #[serde(default)]
    pub insecure: bool,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub url: String,
    pub status: u16,
    pub contains: Option<String>,
    pub retries: u32,
    pub delay: u32,
    pub attempt_timeout: u32,
    pub insecure: bool,
}

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, StepError> {
        if !(a.url.starts_with("http://") || a.url.starts_with("https://"))
            || a.url.chars().any(char::is_whitespace)
        {
            return Err(StepError::arg(format!(
                "`url = \"{}\"`: expected an http:// or https:// URL without spaces",
                a.url
            )));
        }
        let status = a.status.unwrap_or(200);
        if !(100..=599).contains(&status) {
            return Err(StepError::arg(format!(
                "`status = {status}`: not an HTTP status"
            )));
        }
        let retries = a.retries.unwrap_or(5);
        if retries == 0 || retries > 100 {
            return Err(StepError::arg("`retries` must be between 1 and 100"));
        }
        Ok(Self {
            url: a.url,
            status,
            contains: a.contains.filter(|c| !c.is_empty()),
            retries,
            delay: a.delay.unwrap_or(1).max(1),
            attempt_timeout: a.attempt_timeout.unwrap_or(5).max(1),
            insecure: a.insecure,
        })
    }

    /// The check, run on the target.
    pub fn script(&self) -> String {
        let url = quote(&self.url);
        let k = if self.insecure { " -k" } else { "" };
        let body_ok = match &self.contains {
            Some(c) => format!("grep -qF -- {} \"$body\"", quote(c)),
            None => "true".into(),
        };
        format!(
            r#"command -v curl >/dev/null 2>&1 || {{ echo "curl is not installed on the target (needed by http_check)" >&2; exit 1; }}
body=$(mktemp); trap 'rm -f -- "$body" "$body.err"' EXIT
n=1; d={delay}
while :; do
  code=$(curl -sS{k} -o "$body" -w '%{{http_code}}' --max-time {t} -- {url} 2>"$body.err") || true
  if [ "$code" = {status} ] && {body_ok}; then exit 0; fi
  if [ "$n" -ge {retries} ]; then
    why=$(head -c 300 "$body.err" | tr '\n' ' ')
    if [ "$code" = {status} ]; then why="the body does not contain the expected text"; fi
    printf '%s answered %s (want {status}) after %s attempts: %s\n' {url} "${{code:-nothing}}" "$n" "$why" >&2
    exit 1
  fi
  sleep "$d"; n=$((n + 1)); d=$((d * 2)); [ "$d" -le 10 ] || d=10
done
"#,
            delay = self.delay,
            t = self.attempt_timeout,
            status = self.status,
            retries = self.retries,
        )
    }

    pub fn diff(&self) -> Change {
        let mut c = Change::new(
            Action::Check,
            &self.url,
            format!("checked on apply (want {})", self.status),
            self.script(),
        );
        c.details
            .extend(self.contains.iter().map(|t| format!("body contains {t:?}")));
        c
    }
}

/// The `http_check` step kind.
pub(crate) struct HttpCheckKind;

impl super::StepKind for HttpCheckKind {
    fn name(&self) -> &'static str {
        "http_check"
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
        Ok(super::Desired::HttpCheck(Desired::from_args(super::args(
            args,
        )?)?))
    }

    /// Needs `curl` on the host (the URL is checked from there).
    fn needs(&self) -> &'static [super::kind::Need] {
        &[super::kind::Need::Command {
            name: "curl",
            package: "curl",
        }]
    }
}

/// Asks nothing: the check runs at apply.
impl super::DesiredState for Desired {
    fn probe(&self, _: &mut crate::fact::ProbeScript) -> Vec<usize> {
        vec![]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [] => Some(Ok(self.diff())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str) -> Desired {
        Desired::from_args(Args {
            url: url.into(),
            status: None,
            contains: Some("ok".into()),
            retries: Some(2),
            delay: Some(1),
            attempt_timeout: Some(2),
            insecure: false,
        })
        .unwrap()
    }

    #[test]
    fn validates() {
        assert!(
            Desired::from_args(Args {
                url: "ftp://x".into(),
                ..args()
            })
            .is_err()
        );
        assert!(
            Desired::from_args(Args {
                url: "http://a b".into(),
                ..args()
            })
            .is_err()
        );
        assert!(
            Desired::from_args(Args {
                status: Some(42),
                ..args()
            })
            .is_err()
        );
        assert!(
            Desired::from_args(Args {
                retries: Some(0),
                ..args()
            })
            .is_err()
        );
    }

    fn args() -> Args {
        Args {
            url: "http://127.0.0.1/".into(),
            status: None,
            contains: None,
            retries: None,
            delay: None,
            attempt_timeout: None,
            insecure: false,
        }
    }

    #[test]
    fn a_check_changes_nothing() {
        let c = check("http://10.0.0.2:8000/health").diff();
        assert_eq!(c.action, Action::Check);
        assert!(!c.action.changes());
        assert!(
            c.op.unwrap()
                .script
                .contains("'http://10.0.0.2:8000/health'")
        );
    }

    #[test]
    fn fails_with_a_clear_message_when_nothing_answers() {
        // Port 9 on loopback: nothing listens, the connection is refused at once.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(check("http://127.0.0.1:9/").script())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("http://127.0.0.1:9/ answered 000 (want 200) after 2 attempts"),
            "{err}"
        );
    }
}
