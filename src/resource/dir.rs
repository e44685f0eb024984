//! `dir`: a directory with mode, owner and group, or its absence.

use super::{
    AttrDiff, Attrs, State, check_account, check_path, chmod_mode, chown_cmd, fmt_mode, parse_mode,
};
use crate::fact::PathState;
use crate::plan::{Action, Change};
use crate::quote::quote;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub path: String,
    pub mode: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    #[serde(default)]
    pub state: State,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub path: String,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub state: State,
}

/// Directories that `state = "absent"` refuses to remove.
const PROTECTED: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
    "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
];

/// Default mode of a directory created without `mode`.
const DEFAULT_MODE: u32 = 0o755;

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, String> {
        check_path(&a.path)?;
        if let Some(o) = &a.owner {
            check_account("owner", o)?;
        }
        if let Some(g) = &a.group {
            check_account("group", g)?;
        }
        if a.state == State::Absent && PROTECTED.contains(&a.path.as_str()) {
            return Err(format!(
                "refusing to remove the system directory `{}`",
                a.path
            ));
        }
        Ok(Self {
            mode: a.mode.as_deref().map(parse_mode).transpose()?,
            path: a.path,
            owner: a.owner,
            group: a.group,
            state: a.state,
        })
    }

    pub fn diff(&self, o: &PathState) -> Result<Change, String> {
        let p = quote(&self.path);
        match (self.state, o) {
            (State::Present, PathState::Absent) => {
                let mode = self.mode.unwrap_or(DEFAULT_MODE);
                let mut script = format!("mkdir -p -- {p}\n");
                if let Some(c) = chown_cmd(self.owner.as_deref(), self.group.as_deref(), &p) {
                    script.push_str(&c);
                    script.push('\n');
                }
                script.push_str(&format!("chmod {} {p}\n", chmod_mode(mode)));
                let mut c = Change::new(
                    Action::Create,
                    &self.path,
                    "directory does not exist",
                    script,
                );
                c.details.push(format!("mode {}", fmt_mode(mode)));
                if let Some(o) = &self.owner {
                    c.details.push(format!("owner {o}"));
                }
                if let Some(g) = &self.group {
                    c.details.push(format!("group {g}"));
                }
                Ok(c)
            }
            (
                State::Present,
                PathState::Dir {
                    mode,
                    owner,
                    group,
                    uid,
                    gid,
                },
            ) => {
                let observed = Attrs {
                    mode: *mode,
                    owner,
                    group,
                    uid: *uid,
                    gid: *gid,
                };
                let d = AttrDiff::new(
                    self.mode,
                    self.owner.as_deref(),
                    self.group.as_deref(),
                    &observed,
                );
                if d.is_empty() {
                    return Ok(Change::noop(
                        &self.path,
                        format!("directory exists ({} {owner}:{group})", fmt_mode(*mode)),
                    ));
                }
                let script = d.script(&p);
                let details = d.details;
                let mut c = Change::new(Action::Update, &self.path, "attributes differ", script);
                c.details = details;
                Ok(c)
            }
            (State::Present, other) => Err(format!(
                "`{}` exists but is {}, not a directory; refusing to replace it",
                self.path,
                kind_name(other)
            )),
            (State::Absent, PathState::Absent) => {
                Ok(Change::noop(&self.path, "directory is absent"))
            }
            (State::Absent, PathState::Dir { .. }) => Ok(Change::new(
                Action::Delete,
                &self.path,
                "directory exists",
                format!("rm -rf -- {p}\n"),
            )),
            (State::Absent, other) => Err(format!(
                "`{}` is {}, not a directory; refusing to remove it",
                self.path,
                kind_name(other)
            )),
        }
    }
}

/// "a file", "a symbolic link"... for messages.
pub fn kind_name(o: &PathState) -> &'static str {
    match o {
        PathState::Absent => "absent",
        PathState::File { .. } => "a regular file",
        PathState::Dir { .. } => "a directory",
        PathState::Link => "a symbolic link",
        PathState::Other => "a special file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(mode: Option<&str>, owner: Option<&str>, state: State) -> Desired {
        Desired::from_args(Args {
            path: "/opt/demo".into(),
            mode: mode.map(Into::into),
            owner: owner.map(Into::into),
            group: None,
            state,
        })
        .unwrap()
    }

    fn dir(mode: u32, owner: &str) -> PathState {
        PathState::Dir {
            mode,
            owner: owner.into(),
            group: "root".into(),
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn creates_when_absent() {
        let c = want(Some("0750"), Some("claw"), State::Present)
            .diff(&PathState::Absent)
            .unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(
            c.op.unwrap().script,
            "mkdir -p -- '/opt/demo'\nchown -- 'claw' '/opt/demo'\nchmod 00750 '/opt/demo'\n"
        );
    }

    #[test]
    fn noop_when_equal_and_says_why() {
        let c = want(Some("0755"), Some("root"), State::Present)
            .diff(&dir(0o755, "root"))
            .unwrap();
        assert_eq!(c.action, Action::NoOp);
        assert_eq!(c.reason, "directory exists (0755 root:root)");
        assert!(c.op.is_none());
    }

    #[test]
    fn unmanaged_mode_is_not_compared() {
        let c = want(None, None, State::Present)
            .diff(&dir(0o700, "claw"))
            .unwrap();
        assert_eq!(c.action, Action::NoOp);
    }

    #[test]
    fn updates_only_what_differs() {
        let c = want(Some("0700"), Some("root"), State::Present)
            .diff(&dir(0o755, "root"))
            .unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.details, ["mode 0755 -> 0700"]);
        assert_eq!(c.op.unwrap().script, "chmod 00700 '/opt/demo'\n");
    }

    #[test]
    fn absent() {
        assert_eq!(
            want(None, None, State::Absent)
                .diff(&PathState::Absent)
                .unwrap()
                .action,
            Action::NoOp
        );
        let c = want(None, None, State::Absent)
            .diff(&dir(0o755, "root"))
            .unwrap();
        assert_eq!(c.action, Action::Delete);
        assert_eq!(c.op.unwrap().script, "rm -rf -- '/opt/demo'\n");
    }

    #[test]
    fn wrong_kind_is_an_error() {
        let e = want(None, None, State::Present)
            .diff(&PathState::Link)
            .unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn refuses_system_dirs_and_relative_paths() {
        let a = |p: &str, s| {
            Desired::from_args(Args {
                path: p.into(),
                mode: None,
                owner: None,
                group: None,
                state: s,
            })
        };
        assert!(a("/etc", State::Absent).unwrap_err().contains("refusing"));
        assert!(a("/etc", State::Present).is_ok());
        assert!(a("opt", State::Present).is_err());
        assert!(a("//etc", State::Absent).is_err());
        assert!(a("/./etc", State::Absent).is_err());
        assert!(a("/opt/demo/", State::Present).is_err());
        assert!(a("/", State::Present).is_ok());
        assert!(a("/opt/../etc", State::Present).is_err());
    }
}
