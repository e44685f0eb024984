//! `secret`: a named secret (random hex from the OS's cryptographic RNG, like `openssl rand
//! -hex`), kept in its own 0600 file on the target, generated once and reused on every later
//! run. Its value is available to templates as `secrets.NAME` and masked in every output.
//!
//! If the file is missing while the data it protects exists (`guard`, e.g. the PostgreSQL data
//! directory), the step stops: a new value would lock the application out of its own data.
//!
//! With `source = "GROUP"`, the value crosses hosts: the one host of GROUP that runs the step
//! keeps the value (generated there once), and every other host that runs the step writes that
//! value ([`Desired::given`]; the runner's `cross` module finds the source and brings it).

use super::StepError;
use super::{AttrDiff, Attrs, check_account, check_path, file};
use crate::fact::SecretState;
use crate::fact::path::PathState;
use crate::plan::Change;
use crate::secret::Secret;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The secret's name, as templates use it: `secrets.NAME` (`name` is the step's).
    #[serde(rename = "secret")]
    pub name: String,
    /// The file on the target that keeps the value.
    pub path: String,
    /// Random bytes (the value has twice as many hex digits). Default 32.
    #[serde(default = "default_length")]
    pub length: usize,
    /// A path whose existence means the data this secret protects exists.
    pub guard: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// The group whose one host keeps the value (or that host's name); the other hosts running
    /// the step write it (a template: the same on every host; empty: none).
    pub source: Option<String>,
}

fn default_length() -> usize {
    32
}

/// The desired secret of one host.
#[derive(Debug, Clone)]
pub struct Desired {
    pub name: String,
    pub path: String,
    pub length: usize,
    pub guard: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// The value generated for this run when the file is missing (set by the runner).
    pub generated: Option<Secret>,
    /// `source`: the group whose one host keeps the value.
    pub source: Option<String>,
    /// On a host that takes the value from its source: that value (set by the runner).
    pub given: Option<Given>,
}

/// The value a host takes from the host that keeps it (`source`).
#[derive(Debug, Clone)]
pub struct Given {
    /// The host that keeps the value, as plans name it (with how it was read, e.g. `db-1
    /// (read only: not in this run)`).
    pub from: String,
    pub value: Secret,
}

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, StepError> {
        crate::secret::check_name(&a.name)?;
        check_path(&a.path)?;
        if let Some(g) = &a.guard {
            check_path(g)?;
        }
        for (what, v) in [("owner", &a.owner), ("group", &a.group)] {
            if let Some(v) = v {
                check_account(what, v)?;
            }
        }
        if !(8..=1024).contains(&a.length) {
            return Err(StepError::arg(format!(
                "`length = {}`: a secret has 8 to 1024 random bytes",
                a.length
            )));
        }
        Ok(Self {
            name: a.name,
            path: a.path,
            length: a.length,
            guard: a.guard,
            owner: a.owner,
            group: a.group,
            generated: None,
            // An empty `source` (a template that renders none): the value stays on each host.
            source: a.source.filter(|g| !g.is_empty()),
            given: None,
        })
    }

    /// The value a missing secret gets: `length` bytes of the OS's RNG, in hex.
    pub fn generate(&self) -> Result<Secret, StepError> {
        use rand::TryRngCore;
        let mut buf = vec![0u8; self.length];
        rand::rngs::OsRng.try_fill_bytes(&mut buf).map_err(|e| {
            StepError::local(format!(
                "the operating system's random generator failed: {e}"
            ))
        })?;
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        buf.fill(0);
        Ok(Secret::new(hex))
    }

    /// The directory of the secret's file.
    pub fn dir(&self) -> String {
        match self.path.rfind('/') {
            Some(0) | None => "/".into(),
            Some(i) => self.path[..i].to_string(),
        }
    }

    /// [`Self::diff`], and the removal of the `leftovers` the probe found in the file's
    /// directory: a secret written by an upload cut after its rename is there (value reused),
    /// its private directory too (see [`file::with_leftovers`]).
    pub fn diff_with(&self, o: &SecretState, leftovers: &[String]) -> Result<Change, StepError> {
        Ok(file::with_leftovers(self.diff(o)?, &self.dir(), leftovers))
    }

    /// What must happen, given the probe's view of the file.
    pub fn diff(&self, o: &SecretState) -> Result<Change, StepError> {
        let target = format!("{} ({})", self.path, self.name);
        if let (Some(g), false) = (&self.given, matches!(o, SecretState::NotAFile)) {
            return self.diff_given(g, o, target);
        }
        self.diff_own(o, target)
    }

    /// [`Self::diff`] of a host that keeps its own value (or has it already).
    fn diff_own(&self, o: &SecretState, target: String) -> Result<Change, StepError> {
        match o {
            SecretState::NotAFile => Err(StepError::host(format!(
                "{} exists but is not a regular file that can be read without following a \
                 symbolic link (a link, a directory or a FIFO, a link on the way to it, or a \
                 file swapped while it was read: another account may have put it there); \
                 nothing was read from it. Remove it or choose another path for secret `{}`",
                self.path, self.name
            ))),
            SecretState::Missing { guarded: true } => Err(StepError::host(format!(
                "the file of secret `{}` ({}) is missing, but {} exists: the data it protects is \
                 there, and a new value would lock the application out of it. Restore {} from \
                 a backup (or, to start over deliberately, remove {} yourself)",
                self.name,
                self.path,
                self.guard.as_deref().unwrap_or("its data"),
                self.path,
                self.guard.as_deref().unwrap_or("the data"),
            ))),
            SecretState::Missing { guarded: false } => {
                let value = self.generated.as_ref().ok_or(StepError::Internal {
                    what: "no value generated for a missing secret (bug, please report)",
                })?;
                let mut c = self.write(value.expose())?;
                c.target = target;
                c.reason = format!("new random value ({} bytes, hex)", self.length);
                Ok(c)
            }
            SecretState::Present {
                mode,
                owner,
                group,
                value,
            } => {
                let attrs = Attrs {
                    mode: *mode,
                    owner,
                    group,
                    uid: u32::MAX,
                    gid: u32::MAX,
                };
                let d = AttrDiff::new(
                    Some(0o600),
                    self.owner.as_deref(),
                    self.group.as_deref(),
                    &attrs,
                );
                if d.is_empty() {
                    return Ok(Change::noop(target, "exists; value reused"));
                }
                // The content as the probe read it (its trailing newline, if any, was removed):
                // the file root changes must still hold it.
                let v = value.expose();
                let sums = [
                    file::sha256_hex(v.as_bytes()),
                    file::sha256_hex(format!("{v}\n").as_bytes()),
                ];
                let mut c = Change::new(
                    crate::plan::Action::Update,
                    target,
                    "value kept",
                    super::file_attr_script(&self.path, &d, &[&sums[0], &sums[1]]),
                );
                c.details = d.details;
                Ok(c)
            }
        }
    }
}

impl Desired {
    /// The upload of `value` (and a newline) as the secret's file: a new 0600 file renamed
    /// over whatever is there; the value travels on stdin.
    fn write(&self, value: &str) -> Result<Change, StepError> {
        let mut content = value.as_bytes().to_vec();
        content.push(b'\n');
        let f = file::Desired::secret(
            self.path.clone(),
            content,
            self.owner.clone(),
            self.group.clone(),
        )?;
        f.diff(&PathState::Absent)
    }

    /// A host that takes the value from its source (`given`): the file is written with that
    /// value when it is missing or holds another one (the source's value is the truth; a
    /// `guard` matters only where a value is generated), else its attributes are set.
    fn diff_given(&self, g: &Given, o: &SecretState, target: String) -> Result<Change, StepError> {
        let want = g.value.expose();
        let (action, reason) = match o {
            SecretState::Present { value, .. } if value.expose() == want => {
                let mut c = self.diff_own(o, target)?;
                if !c.action.changes() {
                    c.reason = format!("same value as on {}", g.from);
                }
                return Ok(c);
            }
            SecretState::Present { .. } => (
                crate::plan::Action::Update,
                format!("another value: replaced by the one kept on {}", g.from),
            ),
            _ => (
                crate::plan::Action::Create,
                format!("the value kept on {}", g.from),
            ),
        };
        let mut c = self.write(want)?;
        c.action = action;
        c.target = target;
        c.details.insert(0, reason.clone());
        c.reason = reason;
        Ok(c)
    }
}

/// The `secret` step kind.
pub(crate) struct SecretKind;

impl super::StepKind for SecretKind {
    fn name(&self) -> &'static str {
        "secret"
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
        Ok(super::Desired::Secret(Desired::from_args(super::args(
            args,
        )?)?))
    }

    fn provides_secret(&self) -> bool {
        true
    }

    fn uploads_secret_material(&self) -> bool {
        true
    }
}

/// Asks for the secret file (its value) and the leftovers beside it.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        vec![
            p.add(crate::fact::Request::Secret {
                path: self.path.clone(),
                guard: self.guard.clone(),
            }),
            p.add(crate::fact::Request::Leftovers(self.dir())),
        ]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [
                crate::fact::Observed::Secret(o),
                crate::fact::Observed::Leftovers(l),
            ] => Some(self.diff_with(o, l)),
            _ => None,
        }
    }

    fn paths(&self) -> Vec<&str> {
        vec![self.path.as_str()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;

    fn desired(guard: Option<&str>) -> Desired {
        Desired::from_args(Args {
            name: "postgres_password".into(),
            path: "/opt/claw-ai/.secrets/postgres_password".into(),
            length: 32,
            guard: guard.map(String::from),
            owner: None,
            group: None,
            source: None,
        })
        .unwrap()
    }

    fn present(mode: u32) -> SecretState {
        SecretState::Present {
            value: Secret::new("abc"),
            mode,
            owner: "root".into(),
            group: "root".into(),
        }
    }

    /// The mode is set only on the file holding the value the probe read (with or without its
    /// trailing newline): another file swapped in at the name is left alone.
    #[test]
    fn attribute_change_only_on_the_value_the_probe_read() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("pw");
        let mut d = desired(None);
        d.path = f.to_str().unwrap().to_string();
        let script = d.diff(&present(0o644)).unwrap().op.unwrap().script;
        let mode = || std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        for (content, ok) in [("abc\n", true), ("abc", true), ("abd\n", false)] {
            std::fs::write(&f, content).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert_eq!(o.status.success(), ok, "{content:?}: {o:?}");
            assert_eq!(mode(), if ok { 0o600 } else { 0o644 }, "{content:?}");
        }
    }

    #[test]
    fn generated_values_are_random_hex() {
        let d = desired(None);
        let a = d.generate().unwrap();
        let b = d.generate().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn cases() {
        // (observed, generated?, expected action, expected text in reason or error)
        let mut d = desired(Some("/opt/claw-ai/data/postgres"));
        let c = d.diff(&present(0o600)).unwrap();
        assert_eq!(c.action, Action::NoOp);
        assert!(c.reason.contains("reused"));

        let c = d.diff(&present(0o644)).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.details, vec!["mode 0644 -> 0600"]);
        assert!(c.op.unwrap().script.contains("chmod 00600"));

        let e = d
            .diff(&SecretState::Missing { guarded: true })
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is missing") && e.contains("/opt/claw-ai/data/postgres"),
            "{e}"
        );

        assert!(d.diff(&SecretState::NotAFile).is_err());

        d.generated = Some(Secret::new("f00d"));
        let c = d.diff(&SecretState::Missing { guarded: false }).unwrap();
        assert_eq!(c.action, Action::Create);
        let content = c.content.as_ref().unwrap();
        assert!(content.sensitive);
        assert_eq!(content.new.as_slice(), b"f00d\n");
        assert!(!format!("{c:?}").contains("f00d"));
        let op = c.op.unwrap();
        assert!(
            !op.script.contains("f00d"),
            "the value travels on stdin only"
        );
        assert!(op.script.contains("chmod 00600 ./new"));
    }

    /// A host that takes the value kept on another writes that value (its own is replaced;
    /// a `guard` does not stop it: no value is generated here), and it travels on stdin only.
    #[test]
    fn a_taken_value_is_written_as_its_source_keeps_it() {
        let mut d = desired(Some("/opt/claw-ai/data/postgres"));
        d.given = Some(Given {
            from: "db-1".into(),
            value: Secret::new("kept-on-db"),
        });
        for guarded in [false, true] {
            let c = d.diff(&SecretState::Missing { guarded }).unwrap();
            assert_eq!(c.action, Action::Create);
            assert_eq!(c.reason, "the value kept on db-1");
            assert_eq!(c.content.as_ref().unwrap().new.as_slice(), b"kept-on-db\n");
            assert!(!c.op.unwrap().script.contains("kept-on-db"));
        }
        let same = SecretState::Present {
            value: Secret::new("kept-on-db"),
            mode: 0o600,
            owner: "root".into(),
            group: "root".into(),
        };
        let c = d.diff(&same).unwrap();
        assert_eq!(
            (c.action, c.reason.as_str()),
            (Action::NoOp, "same value as on db-1")
        );
        let c = d.diff(&present(0o600)).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "another value: replaced by the one kept on db-1");
        assert_eq!(c.details[0], c.reason);
        assert!(d.diff(&SecretState::NotAFile).is_err());
    }

    #[test]
    fn bad_args() {
        let mk = |name: &str, length: usize| {
            Desired::from_args(Args {
                name: name.into(),
                path: "/s".into(),
                length,
                guard: None,
                owner: None,
                group: None,
                source: None,
            })
        };
        assert!(mk("ok_name1", 32).is_ok());
        assert!(mk("bad-name", 32).is_err());
        assert!(mk("1x", 32).is_err());
        assert!(mk("x", 4).is_err());
    }
}
