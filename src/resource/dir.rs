//! `dir`: a directory with mode, owner and group, or its absence. Something else at the path (a
//! file, a symbolic link) is an error unless `force = true`, which replaces (or removes) it.

use super::StepError;
use super::{
    AttrDiff, Attrs, State, accounts_exist, check_account, check_path, chmod_mode, chown_cmd,
    dir_attr_script, enter_dir, fmt_mode, parse_mode,
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
    /// Replace (or, with `state = "absent"`, remove) a file or link found at the path.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub path: String,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub state: State,
    pub force: bool,
}

/// Directories that `state = "absent"` (and a `file` step's `force`) refuses to remove.
pub(crate) const PROTECTED: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
    "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
];

/// Default mode of a directory created without `mode`.
const DEFAULT_MODE: u32 = 0o755;

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, StepError> {
        check_path(&a.path)?;
        if let Some(o) = &a.owner {
            check_account("owner", o)?;
        }
        if let Some(g) = &a.group {
            check_account("group", g)?;
        }
        if a.state == State::Absent && PROTECTED.contains(&a.path.as_str()) {
            return Err(StepError::arg(format!(
                "refusing to remove the system directory `{}`",
                a.path
            )));
        }
        Ok(Self {
            mode: a.mode.as_deref().map(parse_mode).transpose()?,
            path: a.path,
            owner: a.owner,
            group: a.group,
            state: a.state,
            force: a.force,
        })
    }

    /// The parent directory and the last component (`./NAME`), both quoted.
    fn split(&self) -> (String, String) {
        let (dir, name) = match self.path.rfind('/') {
            Some(0) => ("/", &self.path[1..]),
            Some(i) => (&self.path[..i], &self.path[i + 1..]),
            None => ("/", self.path.as_str()),
        };
        (quote(dir), quote(&format!("./{name}")))
    }

    /// Removes what is at the path (`rm FLAGS`) from inside its parent directory, so a link put
    /// in place of a parent is never followed (a link at the path itself is removed, not its
    /// target).
    fn remove(&self, flags: &str) -> String {
        let (dir, name) = self.split();
        format!("{}rm {flags} -- {name}\n", enter_dir(&dir))
    }

    /// The script that creates the directory (after `first`, which clears the way). Owner and
    /// mode are set on `.` once inside it: a link swapped in after `mkdir` is refused.
    fn create(&self, p: &str, mode: u32, first: &str) -> String {
        let mut script = accounts_exist(self.owner.as_deref(), self.group.as_deref());
        script.push_str(first);
        // An existing parent is entered first (never through a link another account can
        // change) and the directory made there; only missing parents are made by `mkdir -p`.
        let (parent, name) = self.split();
        script.push_str(&format!(
            "if [ -e {parent} ] || [ -L {parent} ]; then\n{}[ -d {name} ] || mkdir -- {name}\nelse\nmkdir -p -- {p}\nfi\n",
            enter_dir(&parent)
        ));
        script.push_str(&enter_dir(p));
        if let Some(c) = chown_cmd(self.owner.as_deref(), self.group.as_deref(), ".") {
            script.push_str(&c);
            script.push('\n');
        }
        script.push_str(&format!("chmod {} .\n", chmod_mode(mode)));
        script
    }

    fn details(&self, c: &mut Change, mode: u32) {
        c.details.push(format!("mode {}", fmt_mode(mode)));
        if let Some(o) = &self.owner {
            c.details.push(format!("owner {o}"));
        }
        if let Some(g) = &self.group {
            c.details.push(format!("group {g}"));
        }
    }

    pub fn diff(&self, o: &PathState) -> Result<Change, StepError> {
        let p = quote(&self.path);
        match (self.state, o) {
            (State::Present, PathState::Absent) => Ok(self.create_change(&p)),
            (
                State::Present,
                PathState::Dir {
                    mode,
                    owner,
                    group,
                    uid,
                    gid,
                },
            ) => Ok(self.attrs_change(&Attrs {
                mode: *mode,
                owner,
                group,
                uid: *uid,
                gid: *gid,
            })),
            (State::Present, other) if self.force => Ok(self.replace_change(&p, other)),
            (State::Present, other) => Err(StepError::host(format!(
                "`{}` exists but is {}, not a directory; refusing to replace it (set `force = true` to replace it)",
                self.path,
                kind_name(other)
            ))),
            (State::Absent, PathState::Absent) => {
                Ok(Change::noop(&self.path, "directory is absent"))
            }
            (State::Absent, PathState::Dir { .. }) => Ok(Change {
                clears: Some(self.path.clone()),
                ..Change::new(
                    Action::Delete,
                    &self.path,
                    "directory exists",
                    self.remove("-rf --one-file-system"),
                )
            }),
            (State::Absent, other) if self.force => Ok(Change {
                clears: Some(self.path.clone()),
                ..Change::new(
                    Action::Delete,
                    &self.path,
                    format!("{} is there (`force`: removed)", kind_name(other)),
                    self.remove("-f"),
                )
            }),
            (State::Absent, other) => Err(StepError::host(format!(
                "`{}` is {}, not a directory; refusing to remove it (set `force = true` to remove it)",
                self.path,
                kind_name(other)
            ))),
        }
    }

    /// The change when nothing is at the path (`p`, quoted): the directory created, with `mode`
    /// (default 0755), owner and group.
    fn create_change(&self, p: &str) -> Change {
        let mode = self.mode.unwrap_or(DEFAULT_MODE);
        let mut c = Change::new(
            Action::Create,
            &self.path,
            "directory does not exist",
            self.create(p, mode, ""),
        );
        self.details(&mut c, mode);
        c
    }

    /// Compare mode, owner and group with those of the directory there (`observed`): a no-op
    /// when the declared ones match, else the change that sets those that differ.
    fn attrs_change(&self, observed: &Attrs) -> Change {
        let d = AttrDiff::new(
            self.mode,
            self.owner.as_deref(),
            self.group.as_deref(),
            observed,
        );
        if d.is_empty() {
            let (owner, group) = (observed.owner, observed.group);
            return Change::noop(
                &self.path,
                format!(
                    "directory exists ({} {owner}:{group})",
                    fmt_mode(observed.mode)
                ),
            );
        }
        let mut script = accounts_exist(d.owner, d.group);
        script.push_str(&dir_attr_script(&self.path, &d));
        let details = d.details;
        let mut c = Change::new(Action::Update, &self.path, "attributes differ", script);
        c.details = details;
        c
    }

    /// With `force`, the change when something else (`other`) is at the path (`p`, quoted): it
    /// is removed and the directory created in its place.
    fn replace_change(&self, p: &str, other: &PathState) -> Change {
        let mode = self.mode.unwrap_or(DEFAULT_MODE);
        let mut c = Change::new(
            Action::Update,
            &self.path,
            format!("{} is in the way (`force`: replaced)", kind_name(other)),
            self.create(p, mode, &format!("{}cd / || exit 1\n", self.remove("-f"))),
        );
        c.details.push(format!("replace {}", kind_name(other)));
        self.details(&mut c, mode);
        c.clears = Some(self.path.clone());
        c
    }
}

/// "a file", "a symbolic link"... for messages.
pub(crate) fn kind_name(o: &PathState) -> &'static str {
    match o {
        PathState::Absent => "absent",
        PathState::File { .. } => "a regular file",
        PathState::Dir { .. } => "a directory",
        PathState::Link => "a symbolic link",
        PathState::Other => "a special file",
    }
}

/// The `dir` step kind.
pub(crate) struct DirKind;

impl super::StepKind for DirKind {
    fn name(&self) -> &'static str {
        "dir"
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
        Ok(super::Desired::Dir(Desired::from_args(super::args(args)?)?))
    }
}

/// Asks for the path; diffs its state.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        vec![p.add(crate::fact::Request::Path(self.path.clone()))]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [crate::fact::Observed::Path(o)] => Some(self.diff(o)),
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

    fn want(mode: Option<&str>, owner: Option<&str>, state: State) -> Desired {
        Desired::from_args(Args {
            path: "/opt/demo".into(),
            mode: mode.map(Into::into),
            owner: owner.map(Into::into),
            group: None,
            state,
            force: false,
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
        let s = c.op.unwrap().script;
        assert!(
            s.starts_with(
                "if command -v getent >/dev/null 2>&1; then getent passwd 'claw' >/dev/null; else "
            ),
            "{s}"
        );
        let tail = format!(
            "\nif [ -e '/opt' ] || [ -L '/opt' ]; then\n{}[ -d './demo' ] || mkdir -- './demo'\nelse\nmkdir -p -- '/opt/demo'\nfi\n{}chown -- 'claw' .\nchmod 00750 .\n",
            enter_dir("'/opt'"),
            enter_dir("'/opt/demo'")
        );
        assert!(s.ends_with(&tail), "{s}");
    }

    fn forced(state: State) -> Desired {
        let mut d = want(Some("0700"), None, state);
        d.force = true;
        d
    }

    fn a_file() -> PathState {
        PathState::File {
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
            uid: 0,
            gid: 0,
            size: 1,
            sha256: "0".repeat(64),
        }
    }

    #[test]
    fn force_replaces_a_file_or_link() {
        let e = want(None, None, State::Present)
            .diff(&a_file())
            .unwrap_err()
            .to_string();
        assert!(e.contains("set `force = true`"), "{e}");
        for o in [a_file(), PathState::Link, PathState::Other] {
            let c = forced(State::Present).diff(&o).unwrap();
            assert_eq!(c.action, Action::Update);
            assert_eq!(c.details[1], "mode 0700");
            assert_eq!(
                c.op.unwrap().script,
                format!(
                    "{e}rm -f -- './demo'\ncd / || exit 1\nif [ -e '/opt' ] || [ -L '/opt' ]; then\n{e}[ -d './demo' ] || mkdir -- './demo'\nelse\nmkdir -p -- '/opt/demo'\nfi\n{}chmod 00700 .\n",
                    enter_dir("'/opt/demo'"),
                    e = enter_dir("'/opt'"),
                )
            );
        }
        let c = forced(State::Absent).diff(&PathState::Link).unwrap();
        assert_eq!(c.action, Action::Delete);
        assert_eq!(
            c.op.unwrap().script,
            format!("{}rm -f -- './demo'\n", enter_dir("'/opt'"))
        );
        assert!(want(None, None, State::Absent).diff(&a_file()).is_err());
    }

    /// The scripts run here: the replacement makes a directory of a file and of a link (never
    /// following it), and a missing owner stops the script before it creates anything.
    #[test]
    fn scripts_work_locally() {
        let tmp = tempfile::tempdir().unwrap();
        let run = |d: &Desired, o: &PathState| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(d.diff(o).unwrap().op.unwrap().script)
                .output()
                .unwrap()
        };
        let at = |name: &str| {
            let mut d = forced(State::Present);
            d.path = tmp.path().join(name).to_str().unwrap().to_string();
            d
        };
        std::fs::write(tmp.path().join("f"), "x").unwrap();
        std::fs::create_dir(tmp.path().join("target")).unwrap();
        std::os::unix::fs::symlink("target", tmp.path().join("l")).unwrap();
        assert!(run(&at("f"), &a_file()).status.success());
        assert!(run(&at("l"), &PathState::Link).status.success());
        use std::os::unix::fs::PermissionsExt;
        for n in ["f", "l"] {
            let m = std::fs::symlink_metadata(tmp.path().join(n)).unwrap();
            assert!(m.is_dir(), "{n}");
            assert_eq!(m.permissions().mode() & 0o7777, 0o700);
        }
        let mut d = at("new");
        d.owner = Some("claw-no-such-user".into());
        let o = run(&d, &PathState::Absent);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("owner `claw-no-such-user` does not exist")
        );
        assert!(!tmp.path().join("new").exists(), "nothing was created");
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
        assert_eq!(
            c.op.unwrap().script,
            format!("{}chmod 00700 .\n", enter_dir("'/opt/demo'"))
        );
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
        assert_eq!(
            c.op.unwrap().script,
            format!(
                "{}rm -rf --one-file-system -- './demo'\n",
                enter_dir("'/opt'")
            )
        );
    }

    #[test]
    fn wrong_kind_is_an_error() {
        let e = want(None, None, State::Present)
            .diff(&PathState::Link)
            .unwrap_err()
            .to_string();
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
                force: false,
            })
        };
        assert!(
            a("/etc", State::Absent)
                .unwrap_err()
                .to_string()
                .contains("refusing")
        );
        assert!(a("/etc", State::Present).is_ok());
        assert!(a("opt", State::Present).is_err());
        assert!(a("//etc", State::Absent).is_err());
        assert!(a("/./etc", State::Absent).is_err());
        assert!(a("/opt/demo/", State::Present).is_err());
        assert!(a("/", State::Present).is_ok());
        assert!(a("/opt/../etc", State::Present).is_err());
    }
    /// A parent directory swapped for a link: creating, changing or removing the directory
    /// below it is refused, and nothing appears where the link points.
    #[test]
    fn a_linked_parent_is_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::os::unix::fs::symlink(&outside, tmp.path().join("app")).unwrap();
        // In a directory everyone can write (as /tmp): another account could change the link.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let mut d = want(Some("0700"), None, State::Present);
        d.path = tmp.path().join("app/new").to_str().unwrap().to_string();
        let mut sub = d.clone();
        sub.path = tmp.path().join("app/sub").to_str().unwrap().to_string();
        let mut gone = sub.clone();
        gone.state = State::Absent;
        for (d, o) in [
            (&d, PathState::Absent),
            (&sub, dir(0o755, "root")),
            (&gone, dir(0o755, "root")),
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(d.diff(&o).unwrap().op.unwrap().script)
                .output()
                .unwrap();
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("reached through a symbolic link"), "{err}");
        }
        let names: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only `sub`, untouched");
        let m = std::fs::metadata(outside.join("sub")).unwrap();
        assert_ne!(m.permissions().mode() & 0o777, 0o700);
    }
}
