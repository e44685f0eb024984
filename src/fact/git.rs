//! Fact: a git checkout (origin URL, HEAD, local modifications, its owner) and the commit a ref
//! designates.
//!
//! **Who runs git where.** Root never runs git in a work tree another account can write, because
//! git executes what a repository's configuration, attributes and hooks name (filters,
//! `diff.*.textconv`, `core.fsmonitor`, `core.pager`, includes, hooks, ...): no list of `-c`
//! overrides covers them all. So two repositories serve one `git` step:
//! - the **mirror**, `/var/lib/claw-provision/git/<dest, encoded>.git` (root-only, 0700; a login
//!   without root keeps it under `~/.claw-provision/git`): bare, made and configured by us alone.
//!   Every network access (fetch, `ls-remote`) runs here, as root, with the deploy key; the key
//!   never leaves root.
//! - the **checkout** at `dest` (a normal work tree with its `.git`): git runs there only as the
//!   account that owns it (`setpriv --reuid --regid`, supplementary groups of that account,
//!   `--no-new-privs`; directly when that account is the one running the script), so whatever its
//!   configuration runs, runs with that account's rights. When that account is root (a tree root
//!   owns, no `owner`: the owner is taken from the work tree, whatever its group), git runs only
//!   if no group nor other can write the work tree, `.git`, `.git/config`, `.git/hooks` or
//!   `.git/info` and all are root's (`tree_rootcheck`); a root:app 2775 shared-deploy tree is
//!   refused, naming what is writable, until the step names its `owner`. Objects reach it as a pack that root's
//!   `git pack-objects` in the mirror writes into the owner's `git index-pack --stdin`.
//!
//! Both sides run with an empty environment (`env -i`) but `PATH`, `LC_ALL=C`,
//! `HOME=/nonexistent`, `GIT_CONFIG_NOSYSTEM=1`, `GIT_CONFIG_GLOBAL=/dev/null`,
//! `GIT_ATTR_NOSYSTEM=1`, `GIT_TERMINAL_PROMPT=0`: git reads the repository's own configuration
//! only (the mirror's is ours; the checkout's is the owner's, read by the owner).
//!
//! Read-only: the probe never creates the mirror; git runs with `GIT_OPTIONAL_LOCKS=0` (no index
//! refresh written); the only network access is `git ls-remote` (with a timeout) when the ref is
//! neither a full commit id nor a tag already in the mirror. Text that the checkout's owner
//! controls (origin, branch, HEAD) is read line by line and checked, so it cannot forge records.

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
        /// The account that owns the work tree (git ran as it): uid and name.
        owner: Account,
        /// The work tree's group: gid and name.
        group: Account,
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

/// A user or group as `stat` names it: its number and its name (the number when it has none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Account {
    pub id: String,
    pub name: String,
}

impl Account {
    /// Whether `want` (a name or a number) designates this account.
    pub fn is(&self, want: &str) -> bool {
        want == self.name || want == self.id
    }
}

/// Seconds `git ls-remote` may take in a probe.
pub(crate) const LS_REMOTE_TIMEOUT: u32 = 20;

/// The directory of the mirrors when the script runs as root.
pub(crate) const MIRROR_DIR: &str = "/var/lib/claw-provision/git";

/// The mirror's file name in the mirror directory: `dest` encoded (`/` is `%2F`), cut and
/// completed by a hash of `dest` when that would be too long for a file name.
pub(crate) fn mirror_name(dest: &str) -> String {
    use sha2::{Digest, Sha256};
    let e = super::host::encode_name(dest);
    if e.len() <= 200 {
        return format!("{e}.git");
    }
    let h = hex::encode(Sha256::digest(dest.as_bytes()));
    // `e` is ASCII.
    format!("{}-{}.git", &e[..150], &h[..16])
}

/// Shell definitions shared by the probe and the apply scripts (they expect `$m`, the mirror's
/// name; `mirrors` overrides the directory of the mirrors, for tests):
/// - `m`: the mirror's path (root's directory, or the login's own without root);
/// - `genv NAME=VALUE... CMD...`: CMD with git's clean environment;
/// - `gm ARGS...`: git in the mirror (this account, the deploy key in `GIT_SSH_COMMAND`);
/// - `tree_account`: sets `tu`/`tg`/`tgr` to the account that owns the current directory (`tu=.`
///   when that is this process's own), then `tree_rootcheck`;
/// - `tree_rootcheck`: when that account is root, false (`tree_unsafe`: what) unless the work
///   tree, `.git`, `.git/config`, `.git/hooks` and `.git/info` are root's and writable by no
///   group nor other, and `tu=.` (git then runs directly, no `setpriv`);
/// - `tree_refuse`: the error of a refused `tree_rootcheck`, and exit;
/// - `tree ARGS...`: ARGS in the current directory as `tu:tg`, privileges dropped for good.
pub(crate) fn shell_lib(optional_locks: bool, mirrors: Option<&str>) -> String {
    let base = match mirrors {
        Some(d) => format!("mb={}\n", quote(d)),
        None => format!(
            "if [ -O / ]; then mb={MIRROR_DIR}; else mb=\"${{HOME:-/tmp}}/.claw-provision/git\"; fi\n"
        ),
    };
    format!(
        r#"{base}m="$mb/$m"
genv() {{ env -i PATH="$PATH" LC_ALL=C HOME=/nonexistent GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_ATTR_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0{locks} "$@"; }}
gm() {{ genv GIT_SSH_COMMAND="$ssh" git --git-dir="$m" "$@"; }}
tree_account() {{
  if [ -O . ] && [ -G . ]; then tu=.; else
    set -- $(stat -c '%u %g %U' .)
    tu=$1; tg=$2; case $3 in *[!0-9]*) tgr=--init-groups ;; *) tgr=--clear-groups ;; esac
  fi
  tree_rootcheck
}}
tree_rootcheck() {{
  case $tu in .) tr_r=$(id -u) ;; *) tr_r=$(id -u -- "$tu" 2>/dev/null) || tr_r=$tu ;; esac
  [ "$tr_r" = 0 ] || return 0
  for tr_p in . .git .git/config .git/hooks .git/info; do
    [ -e "$tr_p" ] || [ -L "$tr_p" ] || continue
    set -- $(stat -c '%u %a' -- "$tr_p")
    [ "$1" = 0 ] && case $2 in *[2367]?|*[2367]) false ;; esac || {{ tree_unsafe=$tr_p; return 1; }}
  done
  tu=.
}}
tree_refuse() {{
  printf 'refusing to run git as root in %s: %s is writable by group or others, or not owned by root, so another account could make git run its code as root. Set `owner` on the step (git then runs as that account) or remove group/other write (chmod g-w,o-w)\n' "$dest" "$tree_unsafe" >&2
  exit 1
}}
tree() {{
  if [ "$tu" = . ]; then genv "$@"; return; fi
  command -v setpriv >/dev/null 2>&1 || {{ printf 'setpriv (util-linux) is needed to run git as the owner of %s\n' "$dest" >&2; return 1; }}
  genv setpriv --reuid="$tu" --regid="$tg" $tgr --no-new-privs -- "$@" 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
}}
"#,
        locks = if optional_locks {
            " GIT_OPTIONAL_LOCKS=0"
        } else {
            ""
        },
    )
}

/// What the checkout's owner runs (as itself) in the probe: four lines, origin, HEAD, branch,
/// and `clean`/`dirty`/`unknown`.
const TREE_QUERY: &str = r#"o=$(git config --get remote.origin.url 2>/dev/null) || o=
h=$(git rev-parse -q --verify 'HEAD^{commit}' 2>/dev/null) || h=
b=$(git symbolic-ref -q --short HEAD 2>/dev/null) || b=
if s=$(git status --porcelain --untracked-files=no 2>/dev/null); then if [ -z "$s" ]; then d=clean; else d=dirty; fi; else d=unknown; fi
printf '%s\n%s\n%s\n%s\n' "$o" "$h" "$b" "$d"
"#;

/// The probe snippet (in a subshell: its variables and functions do not leak).
pub(crate) fn command(id: usize, q: &Query) -> String {
    command_in(id, q, None)
}

/// [`command`] with another directory of mirrors (tests on the build machine).
pub(crate) fn command_in(id: usize, q: &Query, mirrors: Option<&str>) -> String {
    let hex = is_commit_id(&q.rev);
    format!(
        r#"(
id={id}; dest={dest}; url={url}; ref={rev}; ssh={ssh}; m={name}
{lib}resolve() {{
  if [ {hex} = 1 ]; then printf 'commit\t%s' "$ref"; return; fi
  if [ -d "$m" ] && [ -O "$m" ] && c=$(gm rev-parse -q --verify "refs/tags/$ref^{{commit}}" 2>/dev/null); then printf 'tag\t%s' "$c"; return; fi
  t=; command -v timeout >/dev/null 2>&1 && t="timeout {timeout}"
  if out=$(genv GIT_SSH_COMMAND="$ssh" $t git ls-remote "$url" 2>&1 </dev/null); then
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
elif [ -L "$dest" ] || [ ! -d "$dest" ] || [ -L "$dest/.git" ] || [ ! -d "$dest/.git" ]; then printf '@%s\tnotrepo\n' "$id"
elif u=$(cd -P -- "$dest" && {{ tree_account || printf '%s' "$tree_unsafe"; }}) && [ -n "$u" ]; then printf '@%s\trootunsafe\t%s\n' "$id" "$u"
else
  # The checkout's state, asked by git running as the account that owns the work tree (what
  # that account prints is cut at 64 KiB).
  st=$(cd -P -- "$dest" && stat -c '%u %g %U %G' . && tree_account && {{ tree sh -c {query} sh </dev/null 2>/dev/null | head -c 65536; }}) || :
  {{ IFS= read -r own; IFS= read -r origin; IFS= read -r head; IFS= read -r branch; IFS= read -r dirty; }} <<EOF
$st
EOF
  set -- $own
  [ $# = 4 ] || set -- '?' '?' '?' '?'
  case $origin$branch in *'{tab}'*|*'{cr}'*) origin=; branch=; dirty=unknown ;; esac
  case $head in *[!0-9a-f]*) head=; dirty=unknown ;; esac
  case $dirty in clean|dirty) ;; *) dirty=unknown ;; esac
  printf '@%s\trepo\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$1" "$3" "$2" "$4" "$origin" "$head" "$dirty" "$branch" "$(resolve repo)"
fi
)
"#,
        dest = quote(&q.dest),
        url = quote(&q.repo),
        rev = quote(&q.rev),
        ssh = quote(&q.ssh_command),
        name = quote(&mirror_name(&q.dest)),
        lib = shell_lib(true, mirrors),
        query = quote(TREE_QUERY),
        hex = u8::from(hex),
        timeout = LS_REMOTE_TIMEOUT,
        tab = '\t',
        cr = '\r',
    )
}

/// A full (40 hex digits) commit id.
pub(crate) fn is_commit_id(s: &str) -> bool {
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
pub(crate) fn parse(fields: &[&str]) -> Result<GitState, FactError> {
    match fields {
        ["nogit"] => Ok(GitState::NoGit),
        ["rootunsafe", what] => Err(FactError(format!(
            "refusing to run git as root in this checkout: `{what}` is writable by group or \
             others, or not owned by root, so another account could make git run its code as \
             root. Set `owner` on the step (git then runs as that account) or remove group/other \
             write (chmod g-w,o-w)"
        ))),
        ["notrepo"] => Ok(GitState::NotRepo),
        ["absent", rest @ ..] => Ok(GitState::Absent(parse_resolved(rest)?)),
        [
            "repo",
            uid,
            user,
            gid,
            group,
            origin,
            head,
            dirty,
            branch,
            rest @ ..,
        ] => {
            let account = |id: &str, name: &str| Account {
                id: id.to_string(),
                name: name.to_string(),
            };
            let owner = account(uid, user);
            Ok(GitState::Repo {
                head: if head.is_empty() {
                    None
                } else {
                    Some(sha(head)?)
                },
                dirty: match *dirty {
                    "clean" => false,
                    "dirty" => true,
                    "unknown" => {
                        return Err(FactError(format!(
                            "could not read the checkout's state with git running as its owner `{}` \
                             (a damaged repository, a `.git` owned by another account than the work tree, \
                             or no root to run as that account?)",
                            owner.name
                        )));
                    }
                    d => return Err(FactError(format!("bad git status `{d}`"))),
                },
                owner,
                group: account(gid, group),
                origin: (*origin).to_string(),
                branch: (!branch.is_empty()).then(|| (*branch).to_string()),
                want: parse_resolved(rest)?,
            })
        }
        _ => Err(FactError(format!("bad git record `{}`", fields.join("\t")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";

    /// Root's own tree (no `owner`): git runs directly as root only where no group nor other
    /// can write the work tree or what of `.git` names code to run; otherwise a refusal that
    /// names what is writable. A tree of another account is left to `setpriv`.
    #[test]
    fn root_runs_git_only_in_a_tree_nobody_else_writes() {
        use std::os::unix::fs::PermissionsExt;
        let is_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap();
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("tree");
        std::fs::create_dir_all(t.join(".git/hooks")).unwrap();
        std::fs::write(t.join(".git/config"), "").unwrap();
        let mode = |p: &str, m: u32| {
            std::fs::set_permissions(t.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        };
        mode(".", 0o755);
        mode(".git", 0o755);
        mode(".git/config", 0o644);
        let lib = shell_lib(true, Some("/nonexistent"));
        let check = || {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "m=x\n{lib}cd -P -- \"$1\" || exit 9\nif tree_account; then echo \"ok $tu\"; else echo \"refused $tree_unsafe\"; fi"
                ))
                .arg("sh")
                .arg(&t)
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        if !is_root {
            // Not root: never a root check, git runs as this account.
            assert_eq!(check(), "ok .\n");
            return;
        }
        assert_eq!(check(), "ok .\n");
        // A shared-deploy tree, root:1 2775: refused (it falls through to uid 0 otherwise).
        std::os::unix::fs::chown(&t, None, Some(1)).unwrap();
        mode(".", 0o2775);
        assert_eq!(check(), "refused .\n");
        mode(".", 0o755);
        assert_eq!(check(), "ok .\n");
        mode(".git/config", 0o664);
        assert_eq!(check(), "refused .git/config\n");
        mode(".git/config", 0o644);
        mode(".git/hooks", 0o757);
        assert_eq!(check(), "refused .git/hooks\n");
        mode(".git/hooks", 0o755);
        std::os::unix::fs::chown(t.join(".git"), Some(1), None).unwrap();
        // `.git` owned by another account than root: refused too.
        std::os::unix::fs::chown(&t, Some(0), Some(0)).unwrap();
        assert_eq!(check(), "refused .git\n");
        // The whole tree another account's: its uid, for setpriv.
        std::os::unix::fs::chown(&t, Some(1), Some(1)).unwrap();
        assert_eq!(check(), "ok 1\n");
        let e = parse(&["rootunsafe", ".git/config"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`.git/config`") && e.contains("owner"), "{e}");
    }

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
            parse(&[
                "repo",
                "1000",
                "app",
                "1001",
                "apps",
                "ssh://x/y",
                A,
                "dirty",
                "",
                "missing"
            ])
            .unwrap(),
            GitState::Repo {
                owner: Account {
                    id: "1000".into(),
                    name: "app".into()
                },
                group: Account {
                    id: "1001".into(),
                    name: "apps".into()
                },
                origin: "ssh://x/y".into(),
                head: Some(A.into()),
                dirty: true,
                branch: None,
                want: Resolved::Missing
            }
        );
        assert!(matches!(
            parse(&[
                "repo", "0", "root", "0", "root", "u", "", "clean", "main", "branch", A
            ])
            .unwrap(),
            GitState::Repo {
                head: None,
                dirty: false,
                branch: Some(_),
                want: Resolved::Branch(_),
                ..
            }
        ));
        for bad in [
            &[
                "repo", "0", "root", "0", "root", "u", "zz", "clean", "", "missing",
            ][..],
            &[
                "repo", "0", "root", "0", "root", "u", A, "maybe", "", "missing",
            ],
            &[
                "repo", "0", "root", "0", "root", "u", A, "unknown", "", "missing",
            ],
            &["repo", "u", A, "clean", "", "missing"],
            &["absent", "tag", "12"],
            &["absent"],
            &["weird"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mirror_names() {
        assert_eq!(mirror_name("/opt/app"), "%2Fopt%2Fapp.git");
        assert_eq!(mirror_name("/srv/my app"), "%2Fsrv%2Fmy%20app.git");
        let long = format!("/{}", "a".repeat(300));
        let n = mirror_name(&long);
        assert!(n.len() < 200 && n.ends_with(".git"), "{n}");
        assert_ne!(n, mirror_name(&format!("{long}b")));
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
            let out = sh(&command_in(
                7,
                &q,
                Some(d.join("mirrors").to_str().unwrap()),
            ));
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
                owner,
                group: _,
                origin,
                head,
                dirty,
                branch,
                want,
            } => {
                // Git ran as the owner of the checkout (this process's account).
                assert_eq!(owner.id, sh("id -u").trim());
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
        // The checkout's owner cannot forge records: an origin holding a newline and a record.
        sh("git -C co config remote.origin.url \"$(printf 'u\\n@9\\tnogit')\"");
        let q = Query {
            dest: d.join("co").to_str().unwrap().into(),
            repo: url.clone(),
            rev: "main".into(),
            ssh_command: "ssh".into(),
        };
        let out = sh(&command_in(
            9,
            &q,
            Some(d.join("mirrors").to_str().unwrap()),
        ));
        assert_eq!(out.lines().count(), 1, "{out}");
        let fields: Vec<&str> = out
            .trim_end()
            .strip_prefix("@9\trepo\t")
            .expect(&out)
            .split('\t')
            .collect();
        assert_eq!(fields[4], "u", "{out}");
        assert!(parse(&[&["repo"][..], &fields].concat()).is_err(), "{out}");
        // An unreachable remote is a normal answer.
        let q = Query {
            dest: d.join("none").to_str().unwrap().into(),
            repo: format!("file://{}/missing.git", d.display()),
            rev: "main".into(),
            ssh_command: "ssh".into(),
        };
        let out = sh(&command_in(
            0,
            &q,
            Some(d.join("mirrors").to_str().unwrap()),
        ));
        assert!(out.starts_with("@0\tabsent\terror\t"), "{out}");
    }
}
