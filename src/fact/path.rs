//! Fact: the state of a path (type, mode, owner, group, size, sha256).

use super::FactError;
use crate::quote::quote;

/// What is at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathState {
    Absent,
    File {
        mode: u32,
        owner: String,
        group: String,
        uid: u32,
        gid: u32,
        size: u64,
        sha256: String,
    },
    Dir {
        mode: u32,
        owner: String,
        group: String,
        uid: u32,
        gid: u32,
    },
    /// A symbolic link (not followed).
    Link,
    /// A socket, device, fifo...
    Other,
}

/// Shell function shared by every path probe (defined once per script).
pub const FUNCTION: &str = r#"claw_path() {
  if [ -L "$2" ]; then printf '@%s\tlink\n' "$1"
  elif [ -d "$2" ]; then printf '@%s\tdir\t%s\n' "$1" "$(stat -c '%a %U %G %u %g' -- "$2")"
  elif [ -f "$2" ]; then
    s=$(sha256sum < "$2" 2>/dev/null) || s=unreadable
    printf '@%s\tfile\t%s\t%s\n' "$1" "$(stat -c '%a %U %G %u %g %s' -- "$2")" "${s%% *}"
  elif [ -e "$2" ]; then printf '@%s\tother\n' "$1"
  else printf '@%s\tabsent\n' "$1"; fi
}
"#;

/// The probe line for one path.
pub fn command(id: usize, path: &str) -> String {
    format!("claw_path {id} {}\n", quote(path))
}

fn stat_fields(s: &str, n: usize) -> Result<Vec<&str>, FactError> {
    let v: Vec<&str> = s.split(' ').collect();
    if v.len() == n {
        Ok(v)
    } else {
        Err(FactError(format!("bad stat output `{s}`")))
    }
}

fn num<T: TryFrom<u64>>(s: &str, radix_octal: bool) -> Result<T, FactError> {
    let n = if radix_octal {
        u64::from_str_radix(s, 8)
    } else {
        s.parse::<u64>()
    };
    n.ok()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| FactError(format!("bad number `{s}`")))
}

/// Parses the fields after `@ID`.
pub fn parse(fields: &[&str]) -> Result<PathState, FactError> {
    match fields {
        ["absent"] => Ok(PathState::Absent),
        ["link"] => Ok(PathState::Link),
        ["other"] => Ok(PathState::Other),
        ["dir", st] => {
            let v = stat_fields(st, 5)?;
            Ok(PathState::Dir {
                mode: num(v[0], true)?,
                owner: v[1].into(),
                group: v[2].into(),
                uid: num(v[3], false)?,
                gid: num(v[4], false)?,
            })
        }
        ["file", st, sha] => {
            let v = stat_fields(st, 6)?;
            if *sha == "unreadable" {
                return Err(FactError(
                    "a managed file cannot be read (does the step need `become`?)".into(),
                ));
            }
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(FactError(format!("bad sha256 `{sha}`")));
            }
            Ok(PathState::File {
                mode: num(v[0], true)?,
                owner: v[1].into(),
                group: v[2].into(),
                uid: num(v[3], false)?,
                gid: num(v[4], false)?,
                size: num(v[5], false)?,
                sha256: (*sha).to_string(),
            })
        }
        _ => Err(FactError(format!(
            "bad path record `{}`",
            fields.join("\t")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse(&["absent"]).unwrap(), PathState::Absent);
        assert_eq!(
            parse(&["dir", "755 root root 0 0"]).unwrap(),
            PathState::Dir {
                mode: 0o755,
                owner: "root".into(),
                group: "root".into(),
                uid: 0,
                gid: 0
            }
        );
        let sha = "a".repeat(64);
        assert!(matches!(
            parse(&["file", "600 claw claw 1000 1000 12", &sha]).unwrap(),
            PathState::File {
                mode: 0o600,
                size: 12,
                ..
            }
        ));
        assert!(
            parse(&["file", "600 claw claw 1000 1000 12", "unreadable"])
                .unwrap_err()
                .to_string()
                .contains("become")
        );
        assert!(parse(&["file", "600 claw", &sha]).is_err());
        assert!(parse(&["dir", "9z9 root root 0 0"]).is_err());
        assert!(parse(&["weird"]).is_err());
    }

    #[test]
    fn quoting_keeps_path_literal() {
        assert_eq!(command(3, "/tmp/a b$(x)"), "claw_path 3 '/tmp/a b$(x)'\n");
    }
}
