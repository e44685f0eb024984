//! Fact: the preflight that travels with every probe: POSIX sh, `sha256sum`, free disk space.

use super::FactError;
use crate::quote::quote;

/// Start of every probe script: checks the target's requirements.
pub(crate) const HEADER: &str = "exec </dev/null\ncommand -v sha256sum >/dev/null 2>&1 && echo '@pre-sha256sum\tyes' || echo '@pre-sha256sum\tno'\n\
command -v stat >/dev/null 2>&1 && echo '@pre-stat\tyes' || echo '@pre-stat\tno'\n";

/// Shell function: the free space (KiB) of the file system holding each directory (or its
/// nearest existing ancestor), one `@pre-free<TAB>INDEX<TAB>DF-LINE` each, from ONE `df` (one
/// `df` per directory only if that fails, e.g. a directory vanished meanwhile).
pub(crate) const FREE_FUNCTION: &str = r#"claw_free() {
  n=$#
  for d do
    while [ ! -d "$d" ]; do d=${d%/*}; [ -n "$d" ] || d=/; done
    set -- "$@" "$d"
  done
  shift $n
  if o=$(df -Pk -- "$@" 2>/dev/null); then
    i=-1
    while IFS= read -r l; do [ $i -lt 0 ] || printf '@pre-free\t%s\t%s\n' $i "$l"; i=$((i+1)); done <<CLAW_EOF
$o
CLAW_EOF
  else
    i=0; for d do printf '@pre-free\t%s\t%s\n' $i "$(df -Pk -- "$d" | tail -n 1)"; i=$((i+1)); done
  fi
}
"#;

/// The call of [`FREE_FUNCTION`] for the upload directories, in order.
pub(crate) fn free_space(dirs: &[String]) -> String {
    let mut s = String::from("claw_free");
    for d in dirs {
        s.push(' ');
        s.push_str(&quote(d));
    }
    s.push('\n');
    s
}

/// What the preflight found.
#[derive(Debug, Default, Clone)]
pub struct Preflight {
    pub sha256sum: bool,
    pub stat: bool,
    /// Free KiB per upload directory, in the order they were added.
    pub free_kb: Vec<u64>,
}

impl Preflight {
    pub(super) fn parse_line(
        &mut self,
        tag: &str,
        fields: &[&str],
        dirs: &[String],
    ) -> Result<(), FactError> {
        match (tag, fields) {
            ("sha256sum", [v]) => self.sha256sum = *v == "yes",
            ("stat", [v]) => self.stat = *v == "yes",
            ("free", [i, df]) => {
                let i: usize = i
                    .parse()
                    .map_err(|_| FactError(format!("bad free-space index `{i}`")))?;
                // df -P: Filesystem 1024-blocks Used Available Capacity Mounted-on
                let avail = df
                    .split_whitespace()
                    .nth(3)
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| FactError(format!("bad df output `{df}`")))?;
                if i >= dirs.len() {
                    return Err(FactError(format!(
                        "free-space record for unknown directory {i}"
                    )));
                }
                if self.free_kb.len() <= i {
                    self.free_kb.resize(i + 1, 0);
                }
                self.free_kb[i] = avail;
            }
            _ => return Err(FactError(format!("bad preflight record `{tag}`"))),
        }
        Ok(())
    }

    /// Checks that every upload directory got its free space.
    pub(super) fn check_free(&self, dirs: &[String]) -> Result<(), FactError> {
        if self.free_kb.len() < dirs.len() {
            return Err(FactError(format!(
                "no free-space answer for `{}`",
                dirs[self.free_kb.len()]
            )));
        }
        Ok(())
    }

    /// The problems that make the host unusable, as operator messages.
    pub fn problems(&self) -> Vec<String> {
        let mut p = vec![];
        if !self.sha256sum {
            p.push(
                "`sha256sum` is not installed on the target (coreutils is required)".to_string(),
            );
        }
        if !self.stat {
            p.push("`stat` is not installed on the target (coreutils is required)".to_string());
        }
        p
    }
}
