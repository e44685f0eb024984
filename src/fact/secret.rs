//! A secret file on the target: its value (read back to render templates), its attributes, and
//! whether the data it protects exists.
//!
//! **Invariant:** the value never appears in an error message: parse errors name the record,
//! never its fields.

use super::FactError;
use crate::quote::quote;
use crate::secret::Secret;
use base64::Engine;

/// What the probe saw of a secret file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretState {
    /// The file exists: its value (trailing newline removed) and attributes.
    Present {
        value: Secret,
        mode: u32,
        owner: String,
        group: String,
    },
    /// No file. `guarded`: the path named by `guard` exists (the data the secret protects).
    Missing { guarded: bool },
    /// Something that is not a regular file is at the path.
    NotAFile,
}

/// Shell function that opens the secret file `$1` on fd `$2` without following a link and
/// sets `claw_st` to `MODE OWNER GROUP SIZE`; false (fd closed) if that cannot be done safely.
///
/// The directory may be writable by another account, which can swap the file for a link (to a
/// file only root can read, say) at any moment. So the file is opened from inside its directory
/// (`cd -P`, which must land at the directory's path itself, or where the path leads through
/// links root alone can change: `fact::PHYSDIR_FN`, which the script must define), then one
/// `stat` compares `lstat` of the name with `fstat` of the open file (`-`, on the fd; where
/// `stat` does not know `-`, as BusyBox's, a second one reads `/proc/self/fd/FD`): the same
/// regular file (device, inode, mode) with a single name (not a hard link to, say, root's
/// file where `protected_hardlinks` is off) or nothing is read. Whatever is at the name afterwards,
/// the value is then read from the fd. Changes the working directory.
pub(crate) const OPEN_FUNCTION: &str = r#"claw_nl='
'
claw_secret_open() {
  claw_d=${1%/*}; claw_n=./${1##*/}; [ -n "$claw_d" ] || claw_d=/
  cd -P -- "$claw_d" 2>/dev/null && { [ "$PWD" = "$claw_d" ] || [ "$PWD" = "$(claw_physdir "$claw_d")" ]; } &&
    [ -f "$claw_n" ] && [ ! -L "$claw_n" ] &&
    eval "command exec $2<\"\$claw_n\"" 2>/dev/null || return 1
  claw_f='%d:%i %h %f|%a %U %G %s'
  # (BusyBox's `stat` has no `-` for its stdin: the fd's file is reached through /proc instead.)
  if { claw_s=$(stat -c "$claw_f" -- "$claw_n" - <&"$2" 2>/dev/null) ||
    claw_s=$({ stat -c "$claw_f" -- "$claw_n" && stat -L -c "$claw_f" -- "/proc/self/fd/$2"; } 2>/dev/null); } &&
    [ "${claw_s%%"$claw_nl"*}" = "${claw_s#*"$claw_nl"}" ]; then
    claw_h=${claw_s%%|*}; claw_st=${claw_s#*|}; claw_st=${claw_st%%"$claw_nl"*}
    case ${claw_h#* } in '1 '8???) return 0;; esac
  fi
  eval "exec $2<&-"; return 1
}
"#;

/// Shell function for one secret (needs [`OPEN_FUNCTION`]):
/// `@ID<TAB>present<TAB>MODE OWNER GROUP<TAB>BASE64`, `@ID<TAB>missing<TAB>0|1` or
/// `@ID<TAB>other` (not a regular file, or not one that could be read without following a
/// link). Arguments: id, path, guard ("" = none).
pub(crate) const FUNCTION: &str = r#"claw_secret() {
  if [ -f "$2" ] && [ ! -L "$2" ]; then
    if claw_secret_open "$2" 9; then
      if claw_v=$(base64 -w0 <&9); then printf '@%s\tpresent\t%s\t%s\n' "$1" "${claw_st% *}" "$claw_v"
      else printf '@%s\tother\n' "$1"; fi
      exec 9<&-
    else printf '@%s\tother\n' "$1"; fi
  elif [ -e "$2" ] || [ -L "$2" ]; then printf '@%s\tother\n' "$1"
  else g=0; [ -z "$3" ] || [ ! -e "$3" ] || g=1; printf '@%s\tmissing\t%s\n' "$1" "$g"; fi
}
"#;

/// Shell function for every secret of a script at once (id, path, guard triples; needs
/// [`OPEN_FUNCTION`] and [`FUNCTION`]): missing and other ones answered as by [`FUNCTION`]; the
/// present ones opened safely (one `stat` each, [`OPEN_FUNCTION`]) on fds 3 to 8, then read
/// through those fds by one `od` per six: `@secrets<TAB>IDS`, one
/// `@secrets-st<TAB>MODE OWNER GROUP SIZE` per file and `@secrets-od<TAB>HEX BYTES` lines
/// (1 MiB each), these three repeated per group. If `od` fails, each file of the group is read
/// from its fd on its own. The working directory is restored afterwards.
pub(crate) const BATCH_FUNCTION: &str = r#"claw_secrets_flush() {
  [ -n "$claw_fb" ] || return 0
  if claw_v=$(od -An -v -tx1 -w1048576 -- $claw_fds 2>/dev/null); then
    printf '@secrets\t%s\n' "$claw_ids"
    while read -r i f a; do printf '@secrets-st\t%s\n' "$a"; done <<CLAW_EOF
${claw_fb%"$claw_nl"}
CLAW_EOF
    while IFS= read -r l; do printf '@secrets-od\t%s\n' "$l"; done <<CLAW_EOF
$claw_v
CLAW_EOF
  else
    while read -r i f a; do
      if claw_v=$(base64 -w0 <&"$f"); then printf '@%s\tpresent\t%s\t%s\n' "$i" "${a% *}" "$claw_v"
      else printf '@%s\tother\n' "$i"; fi
    done <<CLAW_EOF
${claw_fb%"$claw_nl"}
CLAW_EOF
  fi
  while [ "$claw_fd" -gt 3 ]; do claw_fd=$((claw_fd - 1)); eval "exec $claw_fd<&-"; done
  claw_ids=; claw_fb=; claw_fds=
}
claw_secrets() {
  claw_ids=; claw_fb=; claw_fds=; claw_fd=3; claw_owd=$PWD
  while [ $# -ge 3 ]; do
    if [ -f "$2" ] && [ ! -L "$2" ]; then
      if claw_secret_open "$2" "$claw_fd"; then
        claw_ids="$claw_ids$1 "; claw_fds="$claw_fds /proc/self/fd/$claw_fd"
        claw_fb="$claw_fb$1 $claw_fd $claw_st$claw_nl"; claw_fd=$((claw_fd + 1))
        [ "$claw_fd" -lt 9 ] || claw_secrets_flush
      else printf '@%s\tother\n' "$1"; fi
    else claw_secret "$1" "$2" "$3"; fi
    shift 3
  done
  claw_secrets_flush
  cd -- "$claw_owd" 2>/dev/null || cd /
}
"#;

/// The call of [`BATCH_FUNCTION`] for `(id, path, guard)` triples.
pub(crate) fn batch_command(secrets: &[(usize, &str, Option<&str>)]) -> String {
    let mut s = String::from("claw_secrets");
    for (id, p, g) in secrets {
        s.push_str(&format!(" {id} {} {}", quote(p), quote(g.unwrap_or(""))));
    }
    s.push('\n');
    s
}

/// The probe line for one secret (needs [`FUNCTION`]); scripts use [`batch_command`].
#[cfg(test)]
pub(crate) fn command(id: usize, path: &str, guard: Option<&str>) -> String {
    format!(
        "claw_secret {id} {} {}\n",
        quote(path),
        quote(guard.unwrap_or(""))
    )
}

/// The batched answer ([`BATCH_FUNCTION`]) being collected from the output.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    ids: Option<Vec<usize>>,
    stats: Vec<String>,
    bytes: Option<String>,
}

impl Batch {
    /// Takes one record of the batch; false if `tag` is not one. Never echoes a field.
    pub(crate) fn take(&mut self, tag: &str, fields: &[&str]) -> Result<bool, FactError> {
        let bad = || {
            FactError(format!(
                "bad batched secret record `@{tag}` (contents not shown)"
            ))
        };
        match (tag, fields) {
            ("secrets", [ids]) => {
                // One record per group of files read by one `od`: the groups follow each other.
                let ids: Vec<usize> = (ids.split_whitespace())
                    .map(|i| i.parse().map_err(|_| bad()))
                    .collect::<Result<_, _>>()?;
                self.ids.get_or_insert_with(Vec::new).extend(ids);
            }
            ("secrets-st", [st]) => self.stats.push(st.to_string()),
            ("secrets-od", [v]) => {
                let b = self.bytes.get_or_insert_with(String::new);
                b.push(' ');
                b.push_str(v);
            }
            ("secrets" | "secrets-st" | "secrets-od", _) => return Err(bad()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The present secrets answered by the batch, by id.
    pub(crate) fn states(&self) -> Result<Vec<(usize, SecretState)>, FactError> {
        let Some(ids) = &self.ids else {
            return Ok(vec![]);
        };
        let short = || {
            FactError(
                "the batched secret records do not add up (a secret file changed while it was \
                 read); contents not shown"
                    .into(),
            )
        };
        if self.stats.len() != ids.len() {
            return Err(short());
        }
        let hex: Vec<&str> = self
            .bytes
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let mut at = 0;
        let mut out = Vec::with_capacity(ids.len());
        for (id, st) in ids.iter().zip(&self.stats) {
            let (attrs, size) = st.rsplit_once(' ').ok_or_else(short)?;
            let size: usize = size.parse().map_err(|_| short())?;
            let part = hex.get(at..at + size).ok_or_else(short)?;
            at += size;
            let bytes = (part.iter())
                .map(|h| u8::from_str_radix(h, 16).map_err(|_| short()))
                .collect::<Result<Vec<u8>, _>>()?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            out.push((*id, parse(&["present", attrs, &b64])?));
        }
        if at != hex.len() {
            return Err(short());
        }
        Ok(out)
    }
}

/// Every secret value the output of a probe that failed holds (to mask them in what is shown
/// of the failure: the values are otherwise learnt from a parsed answer only). `is_secret`:
/// whether a request id asks for a secret. Both record forms, `@ID present` (base64) and the
/// batch (`@secrets-st` sizes, `@secrets-od` hex bytes); whatever does not decode is passed
/// over, never reported. A record cut off (the output ends inside it, or the batch's bytes
/// fall short of its sizes) gives the start of its value, as far as it decodes.
pub(crate) fn recover(out: &str, is_secret: impl Fn(usize) -> bool) -> Vec<Secret> {
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut sizes: Vec<usize> = Vec::new();
    let mut hex: Vec<u8> = Vec::new();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix('@') else {
            continue;
        };
        let f: Vec<&str> = rest.split('\t').collect();
        match f.as_slice() {
            ["secrets-st", st] => {
                sizes.extend(
                    st.rsplit_once(' ')
                        .and_then(|(_, n)| n.parse::<usize>().ok()),
                );
            }
            ["secrets-od", v] => {
                // Up to the first token that is not a byte (the end of a cut line).
                let byte = |h: &str| (h.len() == 2).then(|| u8::from_str_radix(h, 16).ok());
                hex.extend(v.split_whitespace().map_while(|h| byte(h).flatten()));
            }
            [id, "present", _, b64] if id.parse().is_ok_and(&is_secret) => {
                // Whole groups of four only (a cut record).
                let b64 = b64.trim().as_bytes();
                let b64 = &b64[..b64.len() - b64.len() % 4];
                let eng = base64::engine::general_purpose::STANDARD;
                values.extend(eng.decode(b64));
            }
            _ => {}
        }
    }
    let mut at = 0;
    for n in sizes {
        let end = (at + n).min(hex.len());
        values.push(hex[at..end].to_vec());
        at = end;
    }
    values
        .into_iter()
        .map(|b| {
            // A cut value may end inside a character: its whole characters.
            let text = match String::from_utf8(b) {
                Ok(t) => t,
                Err(e) => {
                    let ok = e.utf8_error().valid_up_to();
                    let mut b = e.into_bytes();
                    b.truncate(ok);
                    String::from_utf8(b).unwrap_or_default()
                }
            };
            Secret::new(text.strip_suffix('\n').unwrap_or(&text))
        })
        .filter(|v| !v.is_empty())
        .collect()
}

/// Parses the fields after `@ID`.
pub(crate) fn parse(f: &[&str]) -> Result<SecretState, FactError> {
    let bad = || FactError("bad secret record (contents not shown)".into());
    match f {
        ["missing", g] => Ok(SecretState::Missing { guarded: *g == "1" }),
        ["other"] => Ok(SecretState::NotAFile),
        ["present", attrs, b64] => {
            let mut a = attrs.split(' ');
            let (Some(mode), Some(owner), Some(group), None) =
                (a.next(), a.next(), a.next(), a.next())
            else {
                return Err(bad());
            };
            let mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| bad())?;
            let text = String::from_utf8(bytes).map_err(|_| {
                FactError("the secret file is not text (contents not shown)".into())
            })?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            Ok(SecretState::Present {
                value: Secret::new(value),
                mode,
                owner: owner.to_string(),
                group: group.to_string(),
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{}{OPEN_FUNCTION}{FUNCTION}{BATCH_FUNCTION}{script}",
                crate::fact::PHYSDIR_FN
            ))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    fn fields(line: &str) -> Vec<&str> {
        line.trim_end_matches('\n').split('\t').skip(1).collect()
    }

    #[test]
    fn runs_locally_and_parses() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pw");
        std::fs::write(&f, "s3cr3t value\n").unwrap();
        let p = f.to_str().unwrap();
        let out = run(&command(3, p, None));
        assert!(out.starts_with("@3\tpresent\t"));
        match parse(&fields(&out)).unwrap() {
            SecretState::Present { value, .. } => assert_eq!(value.expose(), "s3cr3t value"),
            s => panic!("{s:?}"),
        }
        let missing = d.path().join("nope");
        let out = run(&command(0, missing.to_str().unwrap(), Some(p)));
        assert_eq!(
            parse(&fields(&out)).unwrap(),
            SecretState::Missing { guarded: true }
        );
        let out = run(&command(
            0,
            missing.to_str().unwrap(),
            Some("/no/such/data"),
        ));
        assert_eq!(
            parse(&fields(&out)).unwrap(),
            SecretState::Missing { guarded: false }
        );
        let out = run(&command(0, d.path().to_str().unwrap(), None));
        assert_eq!(parse(&fields(&out)).unwrap(), SecretState::NotAFile);
    }

    /// Several secrets in one batch (one empty, one without a final newline, one with a
    /// multi-byte character), beside missing ones; then the same with an `od` that fails, so
    /// each is read on its own: the same answers.
    #[test]
    fn batch_reads_them_all() {
        let d = tempfile::tempdir().unwrap();
        let vals = ["one\n", "", "tw\u{e9}", "three\nlines\n"];
        let mut triples = vec![];
        let paths: Vec<String> = (0..vals.len())
            .map(|i| d.path().join(format!("s{i}")).to_str().unwrap().to_string())
            .collect();
        for (i, v) in vals.iter().enumerate() {
            std::fs::write(&paths[i], v).unwrap();
            triples.push((i * 2, paths[i].as_str(), None));
            triples.push((i * 2 + 1, "/no/such/secret", Some(paths[i].as_str())));
        }
        let script = batch_command(&triples);
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("od"), "#!/bin/sh\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("od"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let fallback = format!("PATH={}:$PATH\n{script}", bin.display());
        for (out, batched) in [(run(&script), true), (run(&fallback), false)] {
            assert_eq!(out.contains("@secrets\t"), batched, "{out}");
            let mut b = Batch::default();
            let mut per_id = std::collections::BTreeMap::new();
            for line in out.lines() {
                let mut f = line[1..].split('\t');
                let tag = f.next().unwrap();
                let f: Vec<&str> = f.collect();
                if !b.take(tag, &f).unwrap() {
                    per_id.insert(tag.parse::<usize>().unwrap(), parse(&f).unwrap());
                }
            }
            per_id.extend(b.states().unwrap());
            for (i, v) in vals.iter().enumerate() {
                match &per_id[&(i * 2)] {
                    SecretState::Present { value, .. } => {
                        assert_eq!(value.expose(), v.strip_suffix('\n').unwrap_or(v));
                    }
                    s => panic!("{s:?}"),
                }
                assert_eq!(per_id[&(i * 2 + 1)], SecretState::Missing { guarded: true });
            }
        }
        // Over 1 MiB in all: `od` prints several lines, each a record.
        let big = ["a".repeat(700_000), "b".repeat(700_000)];
        let mut triples = vec![];
        for (i, v) in big.iter().enumerate() {
            std::fs::write(&paths[i], v).unwrap();
            triples.push((i, paths[i].as_str(), None));
        }
        let out = run(&batch_command(&triples));
        assert!(out.matches("@secrets-od\t").count() >= 2);
        let mut b = Batch::default();
        for line in out.lines() {
            let mut f = line[1..].split('\t');
            let tag = f.next().unwrap();
            assert!(b.take(tag, &f.collect::<Vec<_>>()).unwrap(), "{tag}");
        }
        for (i, st) in b.states().unwrap() {
            match st {
                SecretState::Present { value, .. } => assert!(value.expose() == big[i]),
                s => panic!("{s:?}"),
            }
        }
        // Records that do not add up are an error that shows no value.
        let mut b = Batch::default();
        b.take("secrets", &["0"]).unwrap();
        b.take("secrets-st", &["600 root root 3"]).unwrap();
        b.take("secrets-od", &["68 75"]).unwrap();
        let e = b.states().unwrap_err().to_string();
        assert!(e.contains("do not add up") && !e.contains("68"), "{e}");
    }

    /// A directory of shims (each logs its name to `log`, then runs the real tool); `swap`:
    /// the `stat` shim first replaces `victim` by a link to `canary` (as another account that
    /// owns the directory can do at any moment).
    fn shims(dir: &std::path::Path, swap: Option<(&str, &str)>) -> (String, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("shims");
        std::fs::create_dir_all(&bin).unwrap();
        let log = dir.join("log");
        for tool in ["stat", "od", "base64", "cat", "head", "dd"] {
            let real = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| format!("{d}/{tool}"))
                .find(|p| std::path::Path::new(p).exists())
                .unwrap();
            let mut sh = format!("#!/bin/sh\necho {tool} >> '{}'\n", log.display());
            if let (Some((victim, canary)), "stat") = (swap, tool) {
                sh.push_str(&format!(
                    "[ -L '{victim}' ] || {{ mv -f '{victim}' '{victim}.old'; ln -s '{canary}' '{victim}'; }}\n"
                ));
            }
            sh.push_str(&format!("exec {real} \"$@\"\n"));
            std::fs::write(bin.join(tool), sh).unwrap();
            std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        (format!("PATH={}:$PATH\n", bin.display()), log)
    }

    /// Three present secrets cost three `stat` and one `od` (was one and one before files were
    /// read through an fd checked against the name), nothing else.
    #[test]
    fn batch_process_count() {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<String> = (0..3)
            .map(|i| d.path().join(format!("s{i}")).to_str().unwrap().to_string())
            .collect();
        let mut triples = vec![];
        for (i, p) in paths.iter().enumerate() {
            std::fs::write(p, format!("value{i}\n")).unwrap();
            triples.push((i, p.as_str(), None));
        }
        let (path, log) = shims(d.path(), None);
        let out = run(&format!("{path}{}", batch_command(&triples)));
        assert_eq!(out.matches("@secrets-st\t").count(), 3, "{out}");
        let mut calls: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        calls.sort();
        assert_eq!(calls, ["od", "stat", "stat", "stat"]);
    }

    /// Another account swaps a secret file for a link to a file only root may read, after the
    /// probe checked the name (here: inside `stat`, so after the open). The value is never taken
    /// from the link's target: the secret reads as `other`, for the batch and on its own, and
    /// the target's content appears nowhere in the output.
    #[test]
    fn swapped_for_a_link_is_never_read() {
        let d = tempfile::tempdir().unwrap();
        let canary = d.path().join("canary");
        std::fs::write(&canary, "CANARYCONTENT-7f3a\n").unwrap();
        let canary = canary.to_str().unwrap().to_string();
        let hex: String = (canary_bytes())
            .iter()
            .map(|b| format!("{b:02x} "))
            .collect();
        for batched in [true, false] {
            let victim = d.path().join(format!("pw{batched}"));
            std::fs::write(&victim, "real secret\n").unwrap();
            let victim = victim.to_str().unwrap().to_string();
            let (path, _) = shims(d.path(), Some((&victim, &canary)));
            let call = if batched {
                batch_command(&[(5, &victim, None)])
            } else {
                command(5, &victim, None)
            };
            let out = run(&format!("{path}{call}"));
            assert_eq!(out, "@5\tother\n", "{out}");
            assert!(
                !out.contains("CANARY") && !out.contains(hex.trim()),
                "{out}"
            );
            assert_eq!(parse(&fields(&out)).unwrap(), SecretState::NotAFile);
            assert_eq!(
                std::fs::read_to_string(&canary).unwrap(),
                "CANARYCONTENT-7f3a\n"
            );
        }
        // A link on the directory's path that another account could change is not followed
        // (one only root can change is: `fact::PHYSDIR_FN`, as for every managed path).
        use std::os::unix::fs::PermissionsExt;
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("pw"), "x\n").unwrap();
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink(&real, open.join("via")).unwrap();
        let via = open.join("via/pw");
        let out = run(&batch_command(&[(1, via.to_str().unwrap(), None)]));
        assert_eq!(out, "@1\tother\n");
        // A second name (a hard link, e.g. to root's file where `protected_hardlinks` is off).
        std::fs::hard_link(real.join("pw"), real.join("pw2")).unwrap();
        let out = run(&batch_command(&[(
            1,
            real.join("pw").to_str().unwrap(),
            None,
        )]));
        assert_eq!(out, "@1\tother\n");
    }

    /// The values of a failed probe's output: each whole one, batched (`od`) or on its own
    /// (base64, as when `od` fails); cut off anywhere, the start of the one it ends in (never
    /// anything else); a record of a request that is not a secret is passed over.
    #[test]
    fn recovered_from_a_failed_probe() {
        let d = tempfile::tempdir().unwrap();
        let vals = ["first-value\n", "second \u{e9}t\u{e9}", "third\nlines\n"];
        let mut triples = vec![];
        let paths: Vec<String> = (0..vals.len())
            .map(|i| d.path().join(format!("s{i}")).to_str().unwrap().to_string())
            .collect();
        for (i, v) in vals.iter().enumerate() {
            std::fs::write(&paths[i], v).unwrap();
            triples.push((i, paths[i].as_str(), None));
        }
        let want: Vec<&str> = vals
            .iter()
            .map(|v| v.strip_suffix('\n').unwrap_or(v))
            .collect();
        let script = batch_command(&triples);
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("od"), "#!/bin/sh\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("od"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let fallback = format!("PATH={}:$PATH\n{script}", bin.display());
        for out in [run(&script), run(&fallback)] {
            let all = |_| true;
            let got: Vec<String> = (recover(&out, all).iter())
                .map(|v| v.expose().to_string())
                .collect();
            assert_eq!(got, want, "{out}");
            assert!(recover(&out, |id| id > 5).len() < 3 || out.contains("@secrets"));
            // Cut anywhere: each value recovered is (the start of) a true one, at most one cut.
            for cut in (0..out.len()).filter(|c| out.is_char_boundary(*c)) {
                let got = recover(&out[..cut], all);
                let cut_ones = got.iter().filter(|v| !want.contains(&v.expose())).count();
                assert!(cut_ones <= 1, "{cut}");
                for v in got {
                    assert!(
                        vals.iter().any(|w| w.starts_with(v.expose())),
                        "{cut}: not a true value's start"
                    );
                }
            }
        }
        // Garbage: nothing, no panic.
        for out in [
            "@1\tpresent\t600 root root\t!!notbase64\n",
            "@secrets\t1\n@secrets-st\tbad\n@secrets-od\tzz 61\n",
            "@secrets-st\t600 root root 99999\n@secrets-od\t\n",
            "@1\tpresent\t600 root root\taHV\u{e9}dGVy\n",
        ] {
            assert!(recover(out, |_| true).is_empty(), "{out}");
        }
        // A `present` record of a request that is not a secret is not taken for one.
        let out = "@1\tpresent\t600 root root\taHVudGVyMg==\n";
        assert_eq!(recover(out, |id| id == 1).len(), 1);
        assert!(recover(out, |id| id != 1).is_empty());
    }

    fn canary_bytes() -> &'static [u8] {
        b"CANARYCONTENT"
    }

    #[test]
    fn garbage_never_echoes_the_value() {
        for f in [
            vec!["present", "600 root root", "!!notbase64 hunter2"],
            vec!["present", "6x0 root root", "aHVudGVyMg=="],
            vec!["present", "600 root", "aHVudGVyMg=="],
            vec!["what"],
            vec![],
        ] {
            let e = parse(&f).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && !e.contains("aHVudGVyMg"), "{e}");
        }
    }
}
