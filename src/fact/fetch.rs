//! Fact: the file a `fetch` step copies to the operator's machine — where its path leads
//! (a symbolic link such as `latest.sql.gz` is followed), its size and sha256.
//!
//! Read-only: `readlink -f`, `stat`, `sha256sum`.

use super::FactError;
use crate::quote::quote;

/// The remote file, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchState {
    /// Nothing there (or a dangling link).
    Absent,
    /// Not a regular file (a directory, a device, ...).
    NotFile,
    File {
        /// The path with every link resolved (its last component names the local copy).
        resolved: String,
        size: u64,
        sha256: String,
    },
}

/// The probe snippet (in a subshell: its variables do not leak).
pub(crate) fn command(id: usize, path: &str) -> String {
    format!(
        r#"(
id={id}; p={p}
r=$(readlink -f -- "$p" 2>/dev/null) || r=
if [ -z "$r" ] || [ ! -e "$r" ]; then printf '@%s\tabsent\n' "$id"
elif [ ! -f "$r" ]; then printf '@%s\tnotfile\n' "$id"
else
  s=$(sha256sum < "$r" 2>/dev/null) || s=unreadable
  printf '@%s\tfile\t%s\t%s\t%s\n' "$id" "$(stat -c %s -- "$r")" "${{s%% *}}" "$r"
fi
)
"#,
        p = quote(path)
    )
}

/// Parses the fields of one record.
pub(crate) fn parse(fields: &[&str]) -> Result<FetchState, FactError> {
    match fields {
        ["absent"] => Ok(FetchState::Absent),
        ["notfile"] => Ok(FetchState::NotFile),
        ["file", size, sha, resolved] => {
            let size = size
                .parse()
                .map_err(|_| FactError(format!("bad file size `{size}`")))?;
            if *sha == "unreadable" {
                return Err(FactError(format!("cannot read {resolved}")));
            }
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(FactError("bad sha256".into()));
            }
            if !resolved.starts_with('/') {
                return Err(FactError("bad resolved path".into()));
            }
            Ok(FetchState::File {
                resolved: resolved.to_string(),
                size,
                sha256: sha.to_string(),
            })
        }
        _ => Err(FactError("unexpected fetch record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records() {
        assert_eq!(parse(&["absent"]).unwrap(), FetchState::Absent);
        assert_eq!(parse(&["notfile"]).unwrap(), FetchState::NotFile);
        let sha = "a".repeat(64);
        assert_eq!(
            parse(&["file", "12", &sha, "/b/x.sql.gz"]).unwrap(),
            FetchState::File {
                resolved: "/b/x.sql.gz".into(),
                size: 12,
                sha256: sha.clone()
            }
        );
        assert!(parse(&["file", "x", &sha, "/b"]).is_err());
        assert!(parse(&["file", "1", "zz", "/b"]).is_err());
        assert!(parse(&["file", "1", "unreadable", "/b"]).is_err());
        assert!(parse(&["file", "1", &sha, "rel"]).is_err());
        assert!(parse(&["what"]).is_err());
    }

    #[test]
    fn the_path_is_quoted() {
        let c = command(3, "/tmp/a b'c");
        assert!(c.contains("p='/tmp/a b'\\''c'"), "{c}");
    }
}
