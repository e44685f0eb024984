//! `user` and `group`: a (typically non-root, system) runtime account and its groups.
//!
//! Only what is declared is managed: an unset `uid`, `home`, `shell` or `groups` is not compared.
//! `groups` is the exact list of supplementary groups. Removing a user keeps its home directory.

use super::StepError;
use super::{State, check_account, check_path};
use crate::fact::{GroupState, UserState};
use crate::plan::{Action, Change};
use crate::quote::quote;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserArgs {
    /// The account's name (`name` is the step's).
    #[serde(rename = "user")]
    pub name: String,
    pub uid: Option<u32>,
    /// Primary group (must exist; create it with a `group` step first).
    pub group: Option<String>,
    /// Exact list of supplementary groups.
    pub groups: Option<Vec<String>>,
    pub home: Option<String>,
    pub shell: Option<String>,
    /// A system account (`useradd --system`: no aging, low uid, no home created).
    #[serde(default)]
    pub system: bool,
    #[serde(default)]
    pub state: State,
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: Option<u32>,
    pub group: Option<String>,
    pub groups: Option<Vec<String>>,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub system: bool,
    pub state: State,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupArgs {
    /// The group's name (`name` is the step's).
    #[serde(rename = "group")]
    pub name: String,
    pub gid: Option<u32>,
    #[serde(default)]
    pub system: bool,
    #[serde(default)]
    pub state: State,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub gid: Option<u32>,
    pub system: bool,
    pub state: State,
}

impl User {
    pub fn from_args(a: UserArgs) -> Result<Self, StepError> {
        check_account("name", &a.name)?;
        if a.name == "root" && a.state == State::Absent {
            return Err(StepError::arg("refusing to remove the `root` account"));
        }
        if let Some(g) = &a.group {
            check_account("group", g)?;
        }
        let mut groups = a.groups;
        if let Some(gs) = groups.as_mut() {
            for g in gs.iter() {
                check_account("groups", g)?;
            }
            gs.sort();
            gs.dedup();
        }
        for (what, p) in [("home", &a.home), ("shell", &a.shell)] {
            if let Some(p) = p {
                check_path(p).map_err(|e| StepError::in_arg(what, e))?;
            }
        }
        Ok(Self {
            name: a.name,
            uid: a.uid,
            group: a.group,
            groups,
            home: a.home,
            shell: a.shell,
            system: a.system,
            state: a.state,
        })
    }

    pub fn diff(&self, o: &UserState) -> Result<Change, StepError> {
        let n = quote(&self.name);
        match (self.state, o) {
            (State::Present, UserState::Absent) => Ok(self.create_change(&n)),
            (State::Present, UserState::Present(u)) => {
                let (args, details) = self.usermod_args(u);
                if args.is_empty() {
                    return Ok(Change::noop(
                        &self.name,
                        format!("user exists (uid {}, group {})", u.uid, u.group),
                    ));
                }
                let mut c = Change::new(
                    Action::Update,
                    &self.name,
                    "account differs",
                    format!("usermod{args} -- {n}\n"),
                );
                c.details = details;
                Ok(c)
            }
            (State::Absent, UserState::Absent) => Ok(Change::noop(&self.name, "user is absent")),
            (State::Absent, UserState::Present(_)) => Ok(Change::new(
                Action::Delete,
                &self.name,
                "user exists (its home directory is kept)",
                format!("! getent passwd {n} >/dev/null || userdel -- {n}\n"),
            )),
        }
    }

    /// The change when the user is absent: `useradd` (`n`: the quoted name) with every declared
    /// attribute, each one a detail.
    fn create_change(&self, n: &str) -> Change {
        let cmd = self.useradd_cmd();
        let mut c = Change::new(
            Action::Create,
            &self.name,
            "user does not exist",
            format!("getent passwd {n} >/dev/null || {cmd} -- {n}\n"),
        );
        c.details.extend(self.uid.map(|u| format!("uid {u}")));
        c.details
            .extend(self.group.iter().map(|g| format!("group {g}")));
        c.details.extend(
            self.groups
                .iter()
                .map(|g| format!("groups {}", g.join(","))),
        );
        c.details
            .extend(self.home.iter().map(|h| format!("home {h}")));
        c.details
            .extend(self.shell.iter().map(|s| format!("shell {s}")));
        c
    }

    /// `useradd` and its options (without the name): a system account or one with a home, and
    /// the declared uid, primary group (else a group of the user's name), groups, home, shell.
    fn useradd_cmd(&self) -> String {
        let mut cmd = String::from("useradd");
        if self.system {
            cmd.push_str(" --system");
        } else {
            cmd.push_str(" --create-home");
        }
        if let Some(u) = self.uid {
            cmd.push_str(&format!(" --uid {u}"));
        }
        match &self.group {
            Some(g) => cmd.push_str(&format!(" --gid {}", quote(g))),
            // A group of the user's name, as Debian does for ordinary users.
            None => cmd.push_str(" --user-group"),
        }
        if let Some(gs) = self.groups.as_ref().filter(|g| !g.is_empty()) {
            cmd.push_str(&format!(" --groups {}", quote(&gs.join(","))));
        }
        if let Some(h) = &self.home {
            cmd.push_str(&format!(" --home-dir {}", quote(h)));
        }
        if let Some(s) = &self.shell {
            cmd.push_str(&format!(" --shell {}", quote(s)));
        }
        cmd
    }

    /// Compare the declared attributes with the account `u`: the `usermod` options (each with a
    /// leading space; empty: nothing differs) and one detail per attribute that differs.
    fn usermod_args(&self, u: &crate::fact::UserInfo) -> (String, Vec<String>) {
        let mut args = String::new();
        let mut details = vec![];
        if let Some(want) = self.uid.filter(|w| *w != u.uid) {
            args.push_str(&format!(" --uid {want}"));
            details.push(format!("uid {} -> {want}", u.uid));
        }
        if let Some(want) = self
            .group
            .as_ref()
            .filter(|w| **w != u.group && **w != u.gid.to_string())
        {
            args.push_str(&format!(" --gid {}", quote(want)));
            details.push(format!("group {} -> {want}", u.group));
        }
        if let Some(want) = self.groups.as_ref().filter(|w| **w != u.groups) {
            args.push_str(&format!(" --groups {}", quote(&want.join(","))));
            details.push(format!(
                "groups [{}] -> [{}]",
                u.groups.join(","),
                want.join(",")
            ));
        }
        if let Some(want) = self.home.as_ref().filter(|w| **w != u.home) {
            args.push_str(&format!(" --home {}", quote(want)));
            details.push(format!("home {} -> {want}", u.home));
        }
        if let Some(want) = self.shell.as_ref().filter(|w| **w != u.shell) {
            args.push_str(&format!(" --shell {}", quote(want)));
            details.push(format!("shell {} -> {want}", u.shell));
        }
        (args, details)
    }
}

impl Group {
    pub fn from_args(a: GroupArgs) -> Result<Self, StepError> {
        check_account("name", &a.name)?;
        if a.name == "root" && a.state == State::Absent {
            return Err(StepError::arg("refusing to remove the `root` group"));
        }
        Ok(Self {
            name: a.name,
            gid: a.gid,
            system: a.system,
            state: a.state,
        })
    }

    pub fn diff(&self, o: &GroupState) -> Result<Change, StepError> {
        let n = quote(&self.name);
        match (self.state, o) {
            (State::Present, GroupState::Absent) => {
                let mut cmd = String::from("groupadd");
                if self.system {
                    cmd.push_str(" --system");
                }
                if let Some(g) = self.gid {
                    cmd.push_str(&format!(" --gid {g}"));
                }
                let mut c = Change::new(
                    Action::Create,
                    &self.name,
                    "group does not exist",
                    format!("getent group {n} >/dev/null || {cmd} -- {n}\n"),
                );
                c.details.extend(self.gid.map(|g| format!("gid {g}")));
                Ok(c)
            }
            (State::Present, GroupState::Present { gid }) => match self.gid.filter(|w| w != gid) {
                None => Ok(Change::noop(
                    &self.name,
                    format!("group exists (gid {gid})"),
                )),
                Some(want) => {
                    let mut c = Change::new(
                        Action::Update,
                        &self.name,
                        "gid differs",
                        format!("groupmod --gid {want} -- {n}\n"),
                    );
                    c.details.push(format!("gid {gid} -> {want}"));
                    Ok(c)
                }
            },
            (State::Absent, GroupState::Absent) => Ok(Change::noop(&self.name, "group is absent")),
            (State::Absent, GroupState::Present { .. }) => Ok(Change::new(
                Action::Delete,
                &self.name,
                // `userdel` may already have removed a user's own group.
                "group exists",
                format!("! getent group {n} >/dev/null || groupdel -- {n}\n"),
            )),
        }
    }
}

/// The `user` step kind.
pub(crate) struct UserKind;

impl super::StepKind for UserKind {
    fn name(&self) -> &'static str {
        "user"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<UserArgs>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        _: &serde_json::Map<String, serde_json::Value>,
        _: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        Ok(super::Desired::User(User::from_args(super::args(args)?)?))
    }

    /// Needs a user account: `useradd`/`usermod` (shadow utilities) and `getent`.
    fn needs(&self) -> &'static [super::kind::Need] {
        &[
            super::kind::Need::Command {
                name: "useradd",
                package: "passwd",
            },
            super::kind::Need::Command {
                name: "getent",
                package: "libc-bin",
            },
        ]
    }
}

/// The `group` step kind.
pub(crate) struct GroupKind;

impl super::StepKind for GroupKind {
    fn name(&self) -> &'static str {
        "group"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<GroupArgs>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        _: &serde_json::Map<String, serde_json::Value>,
        _: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        Ok(super::Desired::Group(Group::from_args(super::args(args)?)?))
    }

    /// Needs a group: `groupadd`/`groupmod` (shadow utilities) and `getent`.
    fn needs(&self) -> &'static [super::kind::Need] {
        &[
            super::kind::Need::Command {
                name: "groupadd",
                package: "passwd",
            },
            super::kind::Need::Command {
                name: "getent",
                package: "libc-bin",
            },
        ]
    }
}

/// Asks for the account.
impl super::DesiredState for User {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        vec![p.add(crate::fact::Request::User(self.name.clone()))]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [crate::fact::Observed::User(o)] => Some(self.diff(o)),
            _ => None,
        }
    }
}

/// Asks for the group.
impl super::DesiredState for Group {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        vec![p.add(crate::fact::Request::Group(self.name.clone()))]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [crate::fact::Observed::Group(o)] => Some(self.diff(o)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::UserInfo;

    fn user(groups: Option<Vec<&str>>, shell: Option<&str>) -> User {
        User::from_args(UserArgs {
            name: "claw".into(),
            uid: None,
            group: None,
            groups: groups.map(|g| g.into_iter().map(String::from).collect()),
            home: Some("/opt/claw-ai".into()),
            shell: shell.map(Into::into),
            system: true,
            state: State::Present,
        })
        .unwrap()
    }

    fn observed(groups: &[&str]) -> UserState {
        UserState::Present(UserInfo {
            uid: 999,
            gid: 996,
            group: "claw".into(),
            home: "/opt/claw-ai".into(),
            shell: "/usr/sbin/nologin".into(),
            groups: groups.iter().map(ToString::to_string).collect(),
        })
    }

    #[test]
    fn creates_a_system_user() {
        let c = user(Some(vec!["docker"]), Some("/usr/sbin/nologin"))
            .diff(&UserState::Absent)
            .unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(
            c.op.unwrap().script,
            "getent passwd 'claw' >/dev/null || useradd --system --user-group --groups 'docker' --home-dir '/opt/claw-ai' --shell '/usr/sbin/nologin' -- 'claw'\n"
        );
    }

    #[test]
    fn noop_when_declared_attributes_match() {
        let c = user(Some(vec!["docker", "adm", "docker"]), None)
            .diff(&observed(&["adm", "docker"]))
            .unwrap();
        assert_eq!(c.action, Action::NoOp, "{c:?}");
        assert_eq!(c.reason, "user exists (uid 999, group claw)");
    }

    #[test]
    fn updates_only_what_differs() {
        let c = user(Some(vec!["docker"]), Some("/bin/sh"))
            .diff(&observed(&[]))
            .unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(
            c.details,
            [
                "groups [] -> [docker]",
                "shell /usr/sbin/nologin -> /bin/sh"
            ]
        );
        assert_eq!(
            c.op.unwrap().script,
            "usermod --groups 'docker' --shell '/bin/sh' -- 'claw'\n"
        );
    }

    /// An ordinary account gets a home; uid and primary group, given, are set and compared
    /// (the group by name or number).
    #[test]
    fn uid_group_and_home() {
        let mut u = user(None, None);
        u.system = false;
        u.uid = Some(1500);
        u.group = Some("staff".into());
        let c = u.diff(&UserState::Absent).unwrap();
        assert_eq!(
            c.op.unwrap().script,
            "getent passwd 'claw' >/dev/null || useradd --create-home --uid 1500 --gid 'staff' --home-dir '/opt/claw-ai' -- 'claw'\n"
        );
        assert_eq!(c.details, ["uid 1500", "group staff", "home /opt/claw-ai"]);
        u.home = Some("/home/claw".into());
        let c = u.diff(&observed(&[])).unwrap();
        assert_eq!(
            c.details,
            [
                "uid 999 -> 1500",
                "group claw -> staff",
                "home /opt/claw-ai -> /home/claw"
            ]
        );
        assert_eq!(
            c.op.unwrap().script,
            "usermod --uid 1500 --gid 'staff' --home '/home/claw' -- 'claw'\n"
        );
        u.uid = Some(999);
        u.group = Some("996".into());
        u.home = None;
        assert_eq!(u.diff(&observed(&[])).unwrap().action, Action::NoOp);
    }

    #[test]
    fn removes_and_refuses_root() {
        let mut u = user(None, None);
        u.state = State::Absent;
        assert_eq!(
            u.diff(&observed(&[])).unwrap().op.unwrap().script,
            "! getent passwd 'claw' >/dev/null || userdel -- 'claw'\n"
        );
        assert_eq!(u.diff(&UserState::Absent).unwrap().action, Action::NoOp);
        let root = UserArgs {
            name: "root".into(),
            uid: None,
            group: None,
            groups: None,
            home: None,
            shell: None,
            system: false,
            state: State::Absent,
        };
        assert!(User::from_args(root).is_err());
    }

    #[test]
    fn groups() {
        let g = Group::from_args(GroupArgs {
            name: "claw".into(),
            gid: Some(996),
            system: true,
            state: State::Present,
        })
        .unwrap();
        assert_eq!(
            g.diff(&GroupState::Absent).unwrap().op.unwrap().script,
            "getent group 'claw' >/dev/null || groupadd --system --gid 996 -- 'claw'\n"
        );
        assert_eq!(
            g.diff(&GroupState::Present { gid: 996 }).unwrap().action,
            Action::NoOp
        );
        assert_eq!(
            g.diff(&GroupState::Present { gid: 5 })
                .unwrap()
                .op
                .unwrap()
                .script,
            "groupmod --gid 996 -- 'claw'\n"
        );
        assert!(
            Group::from_args(GroupArgs {
                name: "$(x)".into(),
                gid: None,
                system: false,
                state: State::Present
            })
            .is_err()
        );
    }
}
