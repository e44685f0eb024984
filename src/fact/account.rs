//! Fact: a user account (`getent passwd`, its groups) or a group (`getent group`).

use super::FactError;
use crate::quote::quote;

/// An account as the target's user database reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub uid: u32,
    pub gid: u32,
    /// Name of the primary group (or the gid as text when it has no name).
    pub group: String,
    pub home: String,
    pub shell: String,
    /// Supplementary groups, sorted, without the primary group.
    pub groups: Vec<String>,
}

/// A user, or its absence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserState {
    Absent,
    Present(UserInfo),
}

/// A group, or its absence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupState {
    Absent,
    Present { gid: u32 },
}

/// Probe line for a user: the passwd entry, the primary group's name, all group names.
pub(crate) fn user_command(id: usize, name: &str) -> String {
    let n = quote(name);
    format!(
        "if e=$(getent passwd {n}); then g=${{e#*:*:*:}}; g=$(getent group \"${{g%%:*}}\"); g=${{g%%:*}}; printf '@%s\\tuser\\t%s\\t%s\\t%s\\n' {id} \"$e\" \"$g\" \"$(id -Gn {n} 2>/dev/null)\"; else printf '@%s\\tnouser\\n' {id}; fi\n"
    )
}

/// Probe line for a group.
pub(crate) fn group_command(id: usize, name: &str) -> String {
    format!(
        "if e=$(getent group {}); then printf '@%s\\tgroup\\t%s\\n' {id} \"$e\"; else printf '@%s\\tnogroup\\n' {id}; fi\n",
        quote(name)
    )
}

fn num(s: &str) -> Result<u32, FactError> {
    s.parse().map_err(|_| FactError(format!("bad id `{s}`")))
}

pub(crate) fn parse_user(fields: &[&str]) -> Result<UserState, FactError> {
    match fields {
        ["nouser"] => Ok(UserState::Absent),
        ["user", passwd, group, all] => {
            let p: Vec<&str> = passwd.split(':').collect();
            if p.len() != 7 {
                return Err(FactError(format!("bad passwd entry `{passwd}`")));
            }
            let group = if group.is_empty() {
                p[3].to_string()
            } else {
                (*group).to_string()
            };
            let mut groups: Vec<String> = all
                .split_whitespace()
                .filter(|g| *g != group)
                .map(String::from)
                .collect();
            groups.sort();
            groups.dedup();
            Ok(UserState::Present(UserInfo {
                uid: num(p[2])?,
                gid: num(p[3])?,
                group,
                home: p[5].into(),
                shell: p[6].into(),
                groups,
            }))
        }
        _ => Err(FactError(format!(
            "bad user record `{}`",
            fields.join("\t")
        ))),
    }
}

pub(crate) fn parse_group(fields: &[&str]) -> Result<GroupState, FactError> {
    match fields {
        ["nogroup"] => Ok(GroupState::Absent),
        ["group", entry] => {
            let g: Vec<&str> = entry.split(':').collect();
            if g.len() != 4 {
                return Err(FactError(format!("bad group entry `{entry}`")));
            }
            Ok(GroupState::Present { gid: num(g[2])? })
        }
        _ => Err(FactError(format!(
            "bad group record `{}`",
            fields.join("\t")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users() {
        assert_eq!(parse_user(&["nouser"]).unwrap(), UserState::Absent);
        let u = parse_user(&[
            "user",
            "claw:x:999:996::/opt/claw-ai:/usr/sbin/nologin",
            "claw",
            "claw docker adm",
        ])
        .unwrap();
        assert_eq!(
            u,
            UserState::Present(UserInfo {
                uid: 999,
                gid: 996,
                group: "claw".into(),
                home: "/opt/claw-ai".into(),
                shell: "/usr/sbin/nologin".into(),
                groups: vec!["adm".into(), "docker".into()],
            })
        );
        assert!(parse_user(&["user", "broken", "", ""]).is_err());
    }

    #[test]
    fn parses_groups() {
        assert_eq!(parse_group(&["nogroup"]).unwrap(), GroupState::Absent);
        assert_eq!(
            parse_group(&["group", "docker:x:998:claw"]).unwrap(),
            GroupState::Present { gid: 998 }
        );
        assert!(parse_group(&["group", "x"]).is_err());
    }

    #[test]
    fn probes_run_locally() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{}{}{}",
                user_command(0, "root"),
                user_command(1, "no-such-user-x"),
                group_command(2, "root")
            ))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split('\t').skip(1).collect())
            .collect();
        match parse_user(&lines[0]).unwrap() {
            UserState::Present(u) => {
                assert_eq!((u.uid, u.gid, u.group.as_str()), (0, 0, "root"), "{u:?}");
                assert_eq!(u.home, "/root");
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(parse_user(&lines[1]).unwrap(), UserState::Absent);
        assert_eq!(
            parse_group(&lines[2]).unwrap(),
            GroupState::Present { gid: 0 }
        );
    }
}
