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
pub(crate) const FUNCTION: &str = r#"claw_path() {
  if [ -L "$2" ]; then printf '@%s\tlink\n' "$1"
  elif [ -d "$2" ]; then printf '@%s\tdir\t%s\n' "$1" "$(stat -c '%a %U %G %u %g' -- "$2")"
  elif [ -f "$2" ]; then
    s=$(sha256sum < "$2" 2>/dev/null) || s=unreadable
    printf '@%s\tfile\t%s\t%s\n' "$1" "$(stat -c '%a %U %G %u %g %s' -- "$2")" "${s%% *}"
  elif [ -e "$2" ]; then printf '@%s\tother\n' "$1"
  else printf '@%s\tabsent\n' "$1"; fi
}
"#;

/// The name an upload gives its private directory (`mktemp -d` in the file's directory, see
/// `resource::file`): this prefix and 8 letters or digits.
pub(crate) const PRIVATE_DIR_PREFIX: &str = ".claw-provision.";

/// The shell pattern of [`PRIVATE_DIR_PREFIX`] names (mktemp's X's are ASCII letters and digits).
pub(crate) const PRIVATE_DIR_GLOB: &str = ".claw-provision.[0-9A-Za-z][0-9A-Za-z][0-9A-Za-z][0-9A-Za-z][0-9A-Za-z][0-9A-Za-z][0-9A-Za-z][0-9A-Za-z]";

/// Whether `name` is the name of an upload's private directory.
pub(crate) fn is_private_dir_name(name: &str) -> bool {
    name.strip_prefix(PRIVATE_DIR_PREFIX)
        .is_some_and(|x| x.len() == 8 && x.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Shell condition: in the directory `word` (a shell word, quoted) no account but root and the
/// one running can rename entries, so a directory of [`PRIVATE_DIR_GLOB`] name in it owned by
/// the one running is one an upload made there, not one of its other directories another
/// account renamed to that name (to have it removed, tree and all): the directory is owned by
/// root or the one running, and it is not writable by group or others, or it has the sticky
/// bit (then only an entry's owner, or the directory's, can rename it). One `stat`.
pub(crate) fn sweepable(word: &str) -> String {
    format!(
        "claw_m=$(stat -c '%u %a' -- {word}) && {{ [ \"${{claw_m%% *}}\" = 0 ] || [ -O {word} ]; }} && {{ [ $((0${{claw_m#* }} & 01000)) -ne 0 ] || [ $((0${{claw_m#* }} & 022)) -eq 0 ]; }}"
    )
}

/// Shell function `claw_leftovers ID DIR`: the private directories of interrupted uploads in
/// DIR (names of [`PRIVATE_DIR_GLOB`], directories, not links, owned by the account the probe
/// runs as: the one the uploads run as; nobody else's), as `@ID<TAB>leftovers[<TAB>NAME]...`;
/// none when others could have renamed them there (see [`sweepable`]: then they are left
/// alone). Shell builtins, and a `stat` of DIR only when there is a candidate.
pub(crate) const LEFTOVERS_FUNCTION: &str = r#"claw_leftovers() {
  printf '@%s\tleftovers' "$1"
  for t in "${2%/}"/.claw-provision.[0-9A-Za-z][0-9A-Za-z][0-9A-Za-z][0-9A-Za-z][0-9A-Za-z][0-9A-Za-z][0-9A-Za-z][0-9A-Za-z]; do
    if [ -d "$t" ] && [ ! -L "$t" ] && [ -O "$t" ]; then
      if claw_m=$(stat -c '%u %a' -- "${2%/}/.") && { [ "${claw_m%% *}" = 0 ] || [ -O "${2%/}/." ]; } && { [ $((0${claw_m#* } & 01000)) -ne 0 ] || [ $((0${claw_m#* } & 022)) -eq 0 ]; }; then printf '\t%s' "${t##*/}"; else break; fi
    fi
  done
  printf '\n'
}
"#;

/// The probe line asking for the leftovers of interrupted uploads in `dir`.
pub(crate) fn leftovers_command(id: usize, dir: &str) -> String {
    format!("claw_leftovers {id} {}\n", quote(dir))
}

/// Parses the fields after `@ID` of a `claw_leftovers` record: the names, sorted.
pub(crate) fn parse_leftovers(fields: &[&str]) -> Result<Vec<String>, FactError> {
    match fields {
        ["leftovers", names @ ..] => {
            let mut v = Vec::with_capacity(names.len());
            for n in names {
                if !is_private_dir_name(n) {
                    return Err(FactError(format!(
                        "bad leftover upload directory name `{}`",
                        n.escape_debug()
                    )));
                }
                v.push(n.to_string());
            }
            v.sort();
            v.dedup();
            Ok(v)
        }
        _ => Err(FactError("bad leftovers record".into())),
    }
}

/// The probe line for one path (the fallback of [`batch_command`]; the tests call it).
#[cfg(test)]
pub(crate) fn command(id: usize, path: &str) -> String {
    format!("claw_path {id} {}\n", quote(path))
}

/// Shell function that probes many paths with two processes in all (one `stat`, one
/// `sha256sum`) instead of two per path: the kinds are told apart by shell builtins, then
/// `@paths<TAB>KINDS` (one letter per path: `l`ink, `d`ir, `f`ile, `o`ther, `a`bsent), one
/// `@ps<TAB>STAT<TAB>TYPE` per directory or file and one `@ph<TAB>SHA256` per file, in argument
/// order. If either process fails (a path vanished or cannot be read meanwhile), every path gets
/// its own `claw_path` record instead, so nothing is ever matched to the wrong path.
// `stat -c` with the tabs written out (BusyBox's `stat` has no `--printf`, which would read
// `\t`); `-c` ends each record with a newline.
pub(crate) const BATCH_FUNCTION: &str = concat!(
    r#"claw_paths() {
  k=; sl=; fl=; i=0
  for p do
    i=$((i+1)); [ $((i % 2)) -eq 0 ] || continue
    if [ -L "$p" ]; then k="${k}l"
    elif [ -d "$p" ]; then k="${k}d"; sl="$sl \"\${$i}\""
    elif [ -f "$p" ]; then k="${k}f"; sl="$sl \"\${$i}\""; fl="$fl \"\${$i}\""
    elif [ -e "$p" ]; then k="${k}o"
    else k="${k}a"; fi
  done
  st=; hs=; ok=1
  if [ -n "$sl" ]; then
    st=$(eval "stat -c '@ps"#,
    "\t",
    "%a %U %G %u %g %s",
    "\t",
    r#"%F' --$sl" 2>/dev/null) || ok=
  fi
  if [ -n "$fl" ] && [ -n "$ok" ]; then
    hs=$(eval "sha256sum --$fl" 2>/dev/null) || ok=
  fi
  if [ -z "$ok" ]; then
    while [ $# -ge 2 ]; do claw_path "$1" "$2"; shift 2; done
    return
  fi
  printf '@paths\t%s\n' "$k"
  [ -z "$st" ] || printf '%s\n' "$st"
  [ -n "$hs" ] || return 0
  while IFS= read -r l; do l=${l#\\}; printf '@ph\t%s\n' "${l%% *}"; done <<CLAW_EOF
$hs
CLAW_EOF
}
"#
);

/// The probe line for every path request at once: `(id, path)` pairs.
pub(crate) fn batch_command(paths: &[(usize, &str)]) -> String {
    let mut s = String::from("claw_paths");
    for (id, p) in paths {
        s.push_str(&format!(" {id} {}", quote(p)));
    }
    s.push('\n');
    s
}

/// The batched answer ([`BATCH_FUNCTION`]) being collected from the output.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    kinds: Option<String>,
    stats: Vec<(String, String)>,
    hashes: Vec<String>,
}

impl Batch {
    /// Takes one record of the batch (`paths`, `ps` or `ph`); false if `tag` is not one.
    pub(crate) fn take(&mut self, tag: &str, fields: &[&str]) -> Result<bool, FactError> {
        match (tag, fields) {
            ("paths", [k]) if self.kinds.is_none() => self.kinds = Some(k.to_string()),
            ("ps", [st, ty]) => self.stats.push((st.to_string(), ty.to_string())),
            ("ph", [h]) => self.hashes.push(h.to_string()),
            ("paths" | "ps" | "ph", _) => {
                return Err(FactError(format!("bad batched path record `@{tag}`")));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The states of the batched paths, in the order they were asked; None when the batch did
    /// not answer (its paths were then answered one by one). An error comes with the position
    /// (in the batch) of the path whose records are bad, when one is to blame.
    pub(crate) fn states(
        &self,
        count: usize,
    ) -> Result<Option<Vec<PathState>>, (Option<usize>, FactError)> {
        let Some(kinds) = &self.kinds else {
            return Ok(None);
        };
        if kinds.chars().count() != count {
            return Err((
                None,
                FactError(format!(
                    "batched path kinds for {} paths, {count} asked",
                    kinds.chars().count()
                )),
            ));
        }
        let mut stats = self.stats.iter();
        let mut hashes = self.hashes.iter();
        let mut out = Vec::with_capacity(count);
        let short = || FactError("batched path records end early".into());
        for (i, k) in kinds.chars().enumerate() {
            let state = (|| match k {
                'a' => parse(&["absent"]),
                'l' => parse(&["link"]),
                'o' => parse(&["other"]),
                'd' => {
                    let (st, ty) = stats.next().ok_or_else(short)?;
                    if ty != "directory" {
                        return Err(changed(ty));
                    }
                    let v = stat_fields(st, 6)?;
                    parse(&["dir", &v[..5].join(" ")])
                }
                'f' => {
                    let (st, ty) = stats.next().ok_or_else(short)?;
                    if !ty.starts_with("regular") {
                        return Err(changed(ty));
                    }
                    let h = hashes.next().ok_or_else(short)?;
                    parse(&["file", st, h])
                }
                _ => Err(FactError(format!("bad batched path kind `{k}`"))),
            })()
            .map_err(|e| (Some(i), e))?;
            out.push(state);
        }
        if stats.next().is_some() || hashes.next().is_some() {
            return Err((
                None,
                FactError("more batched path records than paths".into()),
            ));
        }
        Ok(Some(out))
    }
}

fn changed(ty: &str) -> FactError {
    FactError(format!(
        "a managed path changed while it was probed (now a {ty}); run again"
    ))
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
pub(crate) fn parse(fields: &[&str]) -> Result<PathState, FactError> {
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

    #[test]
    fn leftover_names() {
        assert!(is_private_dir_name(".claw-provision.AbCd1234"));
        for bad in [
            ".claw-provision.AbCd123",
            ".claw-provision.AbCd12345",
            ".claw-provision.AbCd-234",
            ".claw-provision.AbCd12\u{e9}",
            "claw-provision.AbCd1234",
            "",
        ] {
            assert!(!is_private_dir_name(bad), "{bad}");
        }
        assert_eq!(
            parse_leftovers(&["leftovers"]).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            parse_leftovers(&[
                "leftovers",
                ".claw-provision.zzzzzzzz",
                ".claw-provision.AAAAAAAA"
            ])
            .unwrap(),
            [".claw-provision.AAAAAAAA", ".claw-provision.zzzzzzzz"]
        );
        assert!(parse_leftovers(&["leftovers", "../../etc"]).is_err());
        assert!(parse_leftovers(&["absent"]).is_err());
        assert!(parse_leftovers(&[]).is_err());
        // The shell pattern is the one the names are checked against.
        assert!(LEFTOVERS_FUNCTION.contains(&format!("\"${{2%/}}\"/{PRIVATE_DIR_GLOB};")));
        // So is the condition on the directory.
        assert!(LEFTOVERS_FUNCTION.contains(&format!("if {}; then", sweepable("\"${2%/}/.\""))));
    }
}
