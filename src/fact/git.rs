//! Fact: a git checkout (origin URL, HEAD, local modifications) and the commit a ref designates.
//!
//! Read-only: `git status` runs with `GIT_OPTIONAL_LOCKS=0` (no index refresh written), every git
//! command on the checkout gets `-c safe.directory=DEST` (root probing a checkout owned by another
//! user), and the only network access is `git ls-remote` (with a timeout) when the ref is neither
//! a full commit id nor a tag already in the checkout.

use super::FactError;
use crate::quote::quote;

/// What a git step asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub dest: String,
    pub repo: String,
    /// Tag, branch or full commit id.
    pub rev: String,
    /// Value of `GIT_SSH_COMMAND` (deploy key, known hosts).
    pub ssh_command: String,
}

/// How a ref resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A full commit id, taken as it is.
    Commit(String),
    /// A tag (local or on the remote), peeled to its commit.
    Tag(String),
    /// A branch on the remote.
    Branch(String),
    /// The remote has no such tag or branch.
    Missing,
    /// The remote could not be asked (its error, one line).
    Unreachable(String),
}

impl Resolved {
    pub fn commit(&self) -> Option<&str> {
        match self {
            Resolved::Commit(c) | Resolved::Tag(c) | Resolved::Branch(c) => Some(c),
            _ => None,
        }
    }
}

/// What is at the destination of a git step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitState {
    /// `git` is not installed on the target.
    NoGit,
    /// Nothing there (or an empty directory): a clone goes there.
    Absent(Resolved),
    /// Something that is not a git checkout.
    NotRepo,
    Repo {
        /// `remote.origin.url` (empty: none).
        origin: String,
        /// HEAD's commit (None: no commit yet).
        head: Option<String>,
        /// Tracked files modified.
        dirty: bool,
        /// The checked-out branch (None: detached HEAD).
        branch: Option<String>,
        want: Resolved,
    },
}

/// Seconds `git ls-remote` may take in a probe.
pub const LS_REMOTE_TIMEOUT: u32 = 20;

/// The probe snippet (in a subshell: its variables and functions do not leak).
pub fn command(id: usize, q: &Query) -> String {
    let hex = is_commit_id(&q.rev);
    format!(
        r#"(
id={id}; dest={dest}; url={url}; ref={rev}
GIT_SSH_COMMAND={ssh}; GIT_TERMINAL_PROMPT=0; GIT_OPTIONAL_LOCKS=0
export GIT_SSH_COMMAND GIT_TERMINAL_PROMPT GIT_OPTIONAL_LOCKS
g() {{ git -c safe.directory="$dest" -c core.hooksPath=/dev/null -c core.fsmonitor=false -C "$dest" "$@"; }}
resolve() {{
  if [ {hex} = 1 ]; then printf 'commit\t%s' "$ref"; return; fi
  if [ "$1" = repo ] && c=$(g rev-parse -q --verify "refs/tags/$ref^{{commit}}" 2>/dev/null); then printf 'tag\t%s' "$c"; return; fi
  t=; command -v timeout >/dev/null 2>&1 && t="timeout {timeout}"
  if out=$($t git ls-remote "$url" 2>&1 </dev/null); then
    printf '%s\n' "$out" | awk -F '\t' -v r="$ref" '
      $2 == "refs/tags/" r "^{{}}" {{ p = $1 }} $2 == "refs/tags/" r {{ t = $1 }} $2 == "refs/heads/" r {{ b = $1 }}
      END {{ if (p != "") printf "tag\t%s", p; else if (t != "") printf "tag\t%s", t; else if (b != "") printf "branch\t%s", b; else printf "missing" }}'
  else
    rc=$?; msg=$(printf '%s' "$out" | tr '\t\r\n' '   ' | cut -c1-400)
    [ "$rc" != 124 ] || msg="no answer within {timeout} s"
    printf 'error\t%s' "$msg"
  fi
}}
if ! command -v git >/dev/null 2>&1; then printf '@%s\tnogit\n' "$id"
elif [ ! -e "$dest" ] && [ ! -L "$dest" ]; then printf '@%s\tabsent\t%s\n' "$id" "$(resolve absent)"
elif [ -d "$dest" ] && [ ! -L "$dest" ] && [ -z "$(ls -A -- "$dest" 2>/dev/null)" ]; then printf '@%s\tabsent\t%s\n' "$id" "$(resolve absent)"
elif [ -L "$dest" ] || [ ! -d "$dest/.git" ]; then printf '@%s\tnotrepo\n' "$id"
else
  origin=$(g config --get remote.origin.url 2>/dev/null) || origin=
  head=$(g rev-parse -q --verify 'HEAD^{{commit}}' 2>/dev/null) || head=
  branch=$(g symbolic-ref -q --short HEAD 2>/dev/null) || branch=
  if st=$(g status --porcelain --untracked-files=no 2>/dev/null); then
    if [ -z "$st" ]; then dirty=clean; else dirty=dirty; fi
  else dirty=unknown; fi
  printf '@%s\trepo\t%s\t%s\t%s\t%s\t%s\n' "$id" "$origin" "$head" "$dirty" "$branch" "$(resolve repo)"
fi
)
"#,
        dest = quote(&q.dest),
        url = quote(&q.repo),
        rev = quote(&q.rev),
        ssh = quote(&q.ssh_command),
        hex = u8::from(hex),
        timeout = LS_REMOTE_TIMEOUT,
    )
}

/// A full (40 hex digits) commit id.
pub fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn sha(s: &str) -> Result<String, FactError> {
    if is_commit_id(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(FactError(format!("bad commit id `{s}`")))
    }
}

fn parse_resolved(f: &[&str]) -> Result<Resolved, FactError> {
    match f {
        ["commit", c] => Ok(Resolved::Commit(sha(c)?)),
        ["tag", c] => Ok(Resolved::Tag(sha(c)?)),
        ["branch", c] => Ok(Resolved::Branch(sha(c)?)),
        ["missing"] => Ok(Resolved::Missing),
        ["error", msg] => Ok(Resolved::Unreachable(msg.trim().to_string())),
        _ => Err(FactError(format!("bad ref resolution `{}`", f.join("\t")))),
    }
}

/// Parses the fields after `@ID`.
pub fn parse(fields: &[&str]) -> Result<GitState, FactError> {
    match fields {
        ["nogit"] => Ok(GitState::NoGit),
        ["notrepo"] => Ok(GitState::NotRepo),
        ["absent", rest @ ..] => Ok(GitState::Absent(parse_resolved(rest)?)),
        ["repo", origin, head, dirty, branch, rest @ ..] => Ok(GitState::Repo {
            origin: (*origin).to_string(),
            head: if head.is_empty() {
                None
            } else {
                Some(sha(head)?)
            },
            dirty: match *dirty {
                "clean" => false,
                "dirty" => true,
                "unknown" => {
                    return Err(FactError(
                        "`git status` failed in the checkout (is it a damaged repository?)".into(),
                    ));
                }
                d => return Err(FactError(format!("bad git status `{d}`"))),
            },
            branch: (!branch.is_empty()).then(|| (*branch).to_string()),
            want: parse_resolved(rest)?,
        }),
        _ => Err(FactError(format!("bad git record `{}`", fields.join("\t")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn parses() {
        assert_eq!(parse(&["nogit"]).unwrap(), GitState::NoGit);
        assert_eq!(
            parse(&["absent", "tag", A]).unwrap(),
            GitState::Absent(Resolved::Tag(A.into()))
        );
        assert_eq!(
            parse(&["absent", "error", "Permission denied (publickey). "]).unwrap(),
            GitState::Absent(Resolved::Unreachable(
                "Permission denied (publickey).".into()
            ))
        );
        assert_eq!(
            parse(&["repo", "ssh://x/y", A, "dirty", "", "missing"]).unwrap(),
            GitState::Repo {
                origin: "ssh://x/y".into(),
                head: Some(A.into()),
                dirty: true,
                branch: None,
                want: Resolved::Missing
            }
        );
        assert!(matches!(
            parse(&["repo", "u", "", "clean", "main", "branch", A]).unwrap(),
            GitState::Repo {
                head: None,
                dirty: false,
                branch: Some(_),
                want: Resolved::Branch(_),
                ..
            }
        ));
        for bad in [
            &["repo", "u", "zz", "clean", "", "missing"][..],
            &["repo", "u", A, "maybe", "", "missing"],
            &["repo", "u", A, "unknown", "", "missing"],
            &["absent", "tag", "12"],
            &["absent"],
            &["weird"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_git_is_a_normal_answer() {
        let empty = tempfile::tempdir().unwrap();
        let q = Query {
            dest: "/opt/app".into(),
            repo: "ssh://h/x".into(),
            rev: "main".into(),
            ssh_command: "ssh".into(),
        };
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command(3, &q))
            .env("PATH", empty.path())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "@3\tnogit\n");
    }

    /// Runs the probe against real local repositories (git is on the build machine).
    #[test]
    fn probes_local_repositories() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let sh = |s: &str| {
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(s)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{s}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8(o.stdout).unwrap()
        };
        sh(
            "git init -q --bare -b main remote.git && git init -q work && cd work && echo 1 > f && git add f \
            && git -c user.name=t -c user.email=t@t commit -qm one && git tag -a -m v1 v1 \
            && git branch -M main && git push -q ../remote.git main v1",
        );
        let v1 = sh("git -C work rev-parse HEAD").trim().to_string();
        let url = format!("file://{}/remote.git", d.display());
        let probe = |dest: &str, rev: &str| {
            let q = Query {
                dest: d.join(dest).to_str().unwrap().into(),
                repo: url.clone(),
                rev: rev.into(),
                ssh_command: "ssh -o BatchMode=yes".into(),
            };
            let out = sh(&command(7, &q));
            let line = out.lines().next().unwrap_or_default().to_string();
            let fields: Vec<&str> = line.strip_prefix("@7\t").expect(&out).split('\t').collect();
            parse(&fields).unwrap()
        };
        assert_eq!(
            probe("none", "v1"),
            GitState::Absent(Resolved::Tag(v1.clone()))
        );
        assert_eq!(
            probe("none", "main"),
            GitState::Absent(Resolved::Branch(v1.clone()))
        );
        assert_eq!(probe("none", "nope"), GitState::Absent(Resolved::Missing));
        assert_eq!(
            probe("none", A),
            GitState::Absent(Resolved::Commit(A.into()))
        );
        assert_eq!(probe("work/f", "v1"), GitState::NotRepo);
        sh("git clone -q remote.git co");
        match probe("co", "v1") {
            GitState::Repo {
                origin,
                head,
                dirty,
                branch,
                want,
            } => {
                assert!(origin.ends_with("remote.git"));
                assert_eq!(head.as_deref(), Some(v1.as_str()));
                assert!(!dirty);
                assert_eq!(branch.as_deref(), Some("main"));
                assert_eq!(want, Resolved::Tag(v1.clone()));
            }
            o => panic!("{o:?}"),
        }
        sh("echo 2 >> co/f");
        assert!(matches!(
            probe("co", "main"),
            GitState::Repo { dirty: true, .. }
        ));
        // An unreachable remote is a normal answer.
        let q = Query {
            dest: d.join("none").to_str().unwrap().into(),
            repo: format!("file://{}/missing.git", d.display()),
            rev: "main".into(),
            ssh_command: "ssh".into(),
        };
        let out = sh(&command(0, &q));
        assert!(out.starts_with("@0\tabsent\terror\t"), "{out}");
    }
}
