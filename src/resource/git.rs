//! `git`: a checkout of a repository at a ref (tag, branch or full commit id).
//!
//! A tag or commit is checked out as a detached HEAD; a branch as a local branch of the same name
//! reset to the remote's commit (so `git status` on the host says what it follows). The commit the
//! plan showed is the one apply checks out. Local modifications of tracked files stop the step
//! unless `force = true` (then they are discarded); so does a checkout of another repository.
//! Git runs as root with `-c safe.directory=DEST`; with `owner`/`group` the checkout is handed to
//! them (`chown -R`) after every change.

use super::{check_account, check_path};
use crate::fact::git::{GitState, Query, Resolved};
use crate::plan::{Action, Change};
use crate::quote::{check_remote_path, quote};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// `ssh://user@host/path`, `user@host:path`, `https://host/path`, `file:///path`.
    pub repo: String,
    /// Absolute path of the checkout.
    pub dest: String,
    /// Tag, branch or full (40 hex digits) commit id.
    #[serde(rename = "ref")]
    pub rev: String,
    /// Path ON THE TARGET of the private key used for ssh (a deploy key).
    pub key: Option<String>,
    /// Path ON THE TARGET of a known_hosts file for the git server (strict host key checking).
    pub known_hosts: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Discard local modifications (and re-point a checkout of another URL).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub query: Query,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub force: bool,
}

/// A ref name git would accept (`git check-ref-format` rules that matter here), and nothing
/// a shell or awk could misread.
fn check_ref(r: &str) -> Result<(), String> {
    let bad = r.is_empty()
        || r.starts_with('-')
        || r.starts_with('/')
        || r.ends_with('/')
        || r.ends_with('.')
        || r.ends_with(".lock")
        || r.contains("..")
        || r.contains("@{")
        || r.contains("//")
        || r.chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        return Err(format!(
            "`ref = \"{r}\"` is not a valid tag, branch or commit id"
        ));
    }
    Ok(())
}

fn check_repo(u: &str) -> Result<(), String> {
    if u.is_empty() || u.starts_with('-') || u.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!("`repo = \"{u}\"` is not a repository URL"));
    }
    // A password in the URL would end up in plans, logs and `.git/config`.
    if let Some((scheme, rest)) = u.split_once("://")
        && scheme.starts_with("http")
        && let Some((userinfo, _)) = rest.split('/').next().unwrap_or("").rsplit_once('@')
        && userinfo.contains(':')
    {
        return Err(
            "`repo` holds a password: use an ssh deploy key (`key`) instead of credentials in the URL"
                .into(),
        );
    }
    Ok(())
}

fn short(c: &str) -> &str {
    &c[..c.len().min(12)]
}

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, String> {
        check_repo(&a.repo)?;
        check_path(&a.dest)?;
        if a.dest == "/" {
            return Err("`dest = \"/\"`: give the checkout its own directory".into());
        }
        check_ref(&a.rev)?;
        for (what, v) in [("owner", &a.owner), ("group", &a.group)] {
            if let Some(v) = v {
                check_account(what, v)?;
            }
        }
        // Never prompt, never learn a host key (the probe must not write known_hosts).
        let mut ssh =
            String::from("ssh -o BatchMode=yes -o ConnectTimeout=15 -o StrictHostKeyChecking=yes");
        if let Some(k) = &a.key {
            check_remote_path(k).map_err(|e| format!("`key`: {e}"))?;
            ssh.push_str(&format!(" -o IdentitiesOnly=yes -i {}", quote(k)));
        }
        if let Some(k) = &a.known_hosts {
            check_remote_path(k).map_err(|e| format!("`known_hosts`: {e}"))?;
            ssh.push_str(&format!(" -o UserKnownHostsFile={}", quote(k)));
        }
        Ok(Desired {
            query: Query {
                dest: a.dest,
                repo: a.repo,
                rev: a.rev,
                ssh_command: ssh,
            },
            owner: a.owner,
            group: a.group,
            force: a.force,
        })
    }

    /// Script prologue: variables, the environment and `g` (git on the checkout).
    fn prologue(&self, want: Option<&str>) -> String {
        let q = &self.query;
        format!(
            "set -e\ndest={}; url={}; ref={}; want={}\nGIT_SSH_COMMAND={}; GIT_TERMINAL_PROMPT=0\nexport GIT_SSH_COMMAND GIT_TERMINAL_PROMPT\ng() {{ git -c safe.directory=\"$dest\" -c core.hooksPath=/dev/null -c core.fsmonitor=false -C \"$dest\" \"$@\"; }}\n",
            quote(&q.dest),
            quote(&q.repo),
            quote(&q.rev),
            quote(want.unwrap_or("")),
            quote(&q.ssh_command),
        )
    }

    /// Checks out `$want` (or what `$ref` designates after the fetch), then hands the checkout
    /// to its owner.
    fn checkout(&self) -> String {
        let f = if self.force { " -f" } else { "" };
        let mut s = String::from(
            r#"if [ -z "$want" ]; then
  want=$(g rev-parse -q --verify "refs/tags/$ref^{commit}" || g rev-parse -q --verify "refs/remotes/origin/$ref^{commit}" || g rev-parse -q --verify "$ref^{commit}") || { printf 'ref %s not found in %s\n' "$ref" "$url" >&2; exit 1; }
fi
g cat-file -e "$want^{commit}" 2>/dev/null || g fetch -q origin "$want" || { printf 'commit %s of ref %s not found in %s\n' "$want" "$ref" "$url" >&2; exit 1; }
"#,
        );
        s.push_str(&format!(
            r#"if ! g show-ref -q --verify "refs/tags/$ref" && g show-ref -q --verify "refs/remotes/origin/$ref"; then
  g checkout -q{f} -B "$ref" "$want"
else
  g checkout -q{f} --detach "$want"
fi
"#
        ));
        if let Some(c) = super::chown_cmd(self.owner.as_deref(), self.group.as_deref(), "\"$dest\"")
        {
            s.push_str(&c.replacen("chown --", "chown -R --", 1).replacen(
                "chgrp --",
                "chgrp -R --",
                1,
            ));
            s.push('\n');
        }
        s
    }

    fn clone_script(&self, want: Option<&str>) -> String {
        let mut s = self.prologue(want);
        s.push_str("git clone -q --no-checkout -- \"$url\" \"$dest\"\n");
        s.push_str(&self.checkout());
        s
    }

    fn update_script(&self, want: Option<&str>, repoint: bool) -> String {
        let mut s = self.prologue(want);
        if repoint {
            s.push_str("g remote set-url origin \"$url\"\n");
        }
        if !self.force {
            // The probe said clean; refuse if someone edited files since.
            s.push_str("if [ -n \"$(g status --porcelain --untracked-files=no)\" ]; then printf '%s has local modifications; refusing to discard them (set `force = true` to discard)\\n' \"$dest\" >&2; exit 1; fi\n");
        }
        s.push_str("g fetch -q --tags --force origin\n");
        s.push_str(&self.checkout());
        s
    }

    fn describe(&self, want: &Resolved) -> String {
        let r = &self.query.rev;
        match want {
            Resolved::Commit(c) => format!("commit {}", short(c)),
            Resolved::Tag(c) => format!("tag {r} ({})", short(c)),
            Resolved::Branch(c) => format!("branch {r} ({})", short(c)),
            _ => format!("ref {r}"),
        }
    }

    pub fn diff(&self, o: &GitState) -> Result<Change, String> {
        let q = &self.query;
        let dest = &q.dest;
        let missing = || format!("ref `{}` not found in {}", q.rev, q.repo);
        match o {
            GitState::NoGit => Ok(Change::deferred(dest, "git is not installed yet")),
            GitState::NotRepo => Err(format!(
                "`{dest}` exists but is not a git checkout; refusing to replace it"
            )),
            GitState::Absent(Resolved::Missing) => Err(missing()),
            GitState::Absent(want) => {
                let mut c = Change::new(
                    Action::Create,
                    dest,
                    format!("clone {}", q.repo),
                    self.clone_script(want.commit()),
                );
                c.details.push(match want {
                    Resolved::Unreachable(_) => {
                        format!("ref {} (commit known after apply)", q.rev)
                    }
                    w => self.describe(w),
                });
                Ok(c)
            }
            GitState::Repo {
                origin,
                head,
                dirty,
                branch,
                want,
            } => {
                let repoint = origin != &q.repo;
                if repoint && !self.force {
                    return Err(format!(
                        "`{dest}` is a checkout of `{origin}`, not `{}`; set `force = true` to re-point it",
                        q.repo
                    ));
                }
                if *dirty && !self.force {
                    return Err(format!(
                        "`{dest}` has local modifications (see `git -C {dest} status`); refusing to discard them (set `force = true` to discard)"
                    ));
                }
                let commit = match want {
                    Resolved::Missing => return Err(missing()),
                    Resolved::Unreachable(e) => {
                        // Maybe the deploy key or known_hosts comes from an earlier step.
                        return Ok(Change::deferred(
                            dest,
                            format!("cannot ask {} for ref `{}`: {e}", q.repo, q.rev),
                        ));
                    }
                    w => w.commit().expect("resolved").to_string(),
                };
                let mut details = vec![];
                if repoint {
                    details.push(format!("origin {origin} -> {}", q.repo));
                }
                if head.as_deref() != Some(commit.as_str()) {
                    details.push(format!(
                        "commit {} -> {}",
                        head.as_deref().map_or("(none)", short),
                        short(&commit)
                    ));
                }
                if let Resolved::Branch(_) = want
                    && branch.as_deref() != Some(q.rev.as_str())
                {
                    details.push(format!(
                        "branch {} -> {}",
                        branch.as_deref().unwrap_or("(detached)"),
                        q.rev
                    ));
                }
                if *dirty {
                    details.push("discard local modifications".into());
                }
                if details.is_empty() {
                    return Ok(Change::noop(dest, format!("at {}", self.describe(want))));
                }
                let mut c = Change::new(
                    Action::Update,
                    dest,
                    format!("check out {}", self.describe(want)),
                    self.update_script(Some(&commit), repoint),
                );
                c.details = details;
                Ok(c)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const URL: &str = "ssh://git@h2/srv/git/app.git";

    fn args(rev: &str) -> Args {
        Args {
            repo: URL.into(),
            dest: "/opt/app".into(),
            rev: rev.into(),
            key: Some("/root/.ssh/deploy key".into()),
            known_hosts: Some("/root/.ssh/known_hosts_git".into()),
            owner: Some("claw".into()),
            group: None,
            force: false,
        }
    }

    fn want(rev: &str) -> Desired {
        Desired::from_args(args(rev)).unwrap()
    }

    fn repo(head: &str, dirty: bool, branch: Option<&str>, want: Resolved) -> GitState {
        GitState::Repo {
            origin: URL.into(),
            head: Some(head.into()),
            dirty,
            branch: branch.map(Into::into),
            want,
        }
    }

    #[test]
    fn diff_cases() {
        type Expect<'a> = Result<(Action, Vec<&'a str>), &'a str>;
        let cases: Vec<(&str, Desired, GitState, Expect)> = vec![
            (
                "git missing",
                want("v1"),
                GitState::NoGit,
                Ok((Action::Deferred, vec![])),
            ),
            (
                "fresh clone",
                want("v1"),
                GitState::Absent(Resolved::Tag(A.into())),
                Ok((Action::Create, vec!["tag v1 (aaaaaaaaaaaa)"])),
            ),
            (
                "clone, remote not reachable yet",
                want("v1"),
                GitState::Absent(Resolved::Unreachable("Permission denied".into())),
                Ok((Action::Create, vec!["ref v1 (commit known after apply)"])),
            ),
            (
                "no such ref",
                want("v9"),
                GitState::Absent(Resolved::Missing),
                Err("ref `v9` not found in ssh://git@h2/srv/git/app.git"),
            ),
            (
                "not a checkout",
                want("v1"),
                GitState::NotRepo,
                Err("is not a git checkout"),
            ),
            (
                "up to date (tag)",
                want("v1"),
                repo(A, false, None, Resolved::Tag(A.into())),
                Ok((Action::NoOp, vec![])),
            ),
            (
                "new tag",
                want("v2"),
                repo(A, false, None, Resolved::Tag(B.into())),
                Ok((Action::Update, vec!["commit aaaaaaaaaaaa -> bbbbbbbbbbbb"])),
            ),
            (
                "up to date (branch)",
                want("main"),
                repo(A, false, Some("main"), Resolved::Branch(A.into())),
                Ok((Action::NoOp, vec![])),
            ),
            (
                "branch moved",
                want("main"),
                repo(A, false, Some("main"), Resolved::Branch(B.into())),
                Ok((Action::Update, vec!["commit aaaaaaaaaaaa -> bbbbbbbbbbbb"])),
            ),
            (
                "detached, branch wanted",
                want("main"),
                repo(A, false, None, Resolved::Branch(A.into())),
                Ok((Action::Update, vec!["branch (detached) -> main"])),
            ),
            (
                "dirty",
                want("v1"),
                repo(A, true, None, Resolved::Tag(A.into())),
                Err("has local modifications"),
            ),
            (
                "dirty, forced",
                Desired::from_args(Args {
                    force: true,
                    ..args("v1")
                })
                .unwrap(),
                repo(A, true, None, Resolved::Tag(A.into())),
                Ok((Action::Update, vec!["discard local modifications"])),
            ),
            (
                "other origin",
                want("v1"),
                GitState::Repo {
                    origin: "ssh://elsewhere/x".into(),
                    head: Some(A.into()),
                    dirty: false,
                    branch: None,
                    want: Resolved::Tag(A.into()),
                },
                Err("is a checkout of `ssh://elsewhere/x`"),
            ),
            (
                "other origin, forced",
                Desired::from_args(Args {
                    force: true,
                    ..args("v1")
                })
                .unwrap(),
                GitState::Repo {
                    origin: "ssh://elsewhere/x".into(),
                    head: Some(A.into()),
                    dirty: false,
                    branch: None,
                    want: Resolved::Tag(A.into()),
                },
                Ok((
                    Action::Update,
                    vec!["origin ssh://elsewhere/x -> ssh://git@h2/srv/git/app.git"],
                )),
            ),
            (
                "remote unreachable",
                want("main"),
                repo(
                    A,
                    false,
                    Some("main"),
                    Resolved::Unreachable("timeout".into()),
                ),
                Ok((Action::Deferred, vec![])),
            ),
            (
                "remote lost the ref",
                want("main"),
                repo(A, false, Some("main"), Resolved::Missing),
                Err("not found"),
            ),
        ];
        for (name, d, o, expect) in cases {
            match (d.diff(&o), expect) {
                (Ok(c), Ok((action, details))) => {
                    assert_eq!(c.action, action, "{name}: {c:?}");
                    assert_eq!(c.details, details, "{name}");
                }
                (Err(e), Err(want)) => assert!(e.contains(want), "{name}: {e}"),
                (got, _) => panic!("{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn scripts_quote_and_pin_the_planned_commit() {
        let c = want("v2")
            .diff(&repo(A, false, None, Resolved::Tag(B.into())))
            .unwrap();
        let s = c.op.unwrap().script;
        assert!(s.contains(&format!("want='{B}'")), "{s}");
        assert!(s.contains("-i '\\''/root/.ssh/deploy key'\\''"), "{s}");
        assert!(s.contains("StrictHostKeyChecking=yes"), "{s}");
        assert!(s.contains("safe.directory=\"$dest\""), "{s}");
        assert!(s.contains("chown -R -- 'claw' \"$dest\""), "{s}");
        assert!(s.contains("local modifications; refusing"), "{s}");
        assert!(!s.contains("checkout -q -f"), "{s}");
    }

    #[test]
    fn rejects_bad_args() {
        for (f, want) in [
            (
                Args {
                    rev: "v1 x".into(),
                    ..args("v1")
                },
                "not a valid tag",
            ),
            (
                Args {
                    rev: "-v".into(),
                    ..args("v1")
                },
                "not a valid tag",
            ),
            (
                Args {
                    rev: "a..b".into(),
                    ..args("v1")
                },
                "not a valid tag",
            ),
            (
                Args {
                    repo: "-oProxyCommand=x".into(),
                    ..args("v1")
                },
                "not a repository URL",
            ),
            (
                Args {
                    repo: "https://u:pw@h/x.git".into(),
                    ..args("v1")
                },
                "holds a password",
            ),
            (
                Args {
                    dest: "opt/app".into(),
                    ..args("v1")
                },
                "absolute",
            ),
            (
                Args {
                    dest: "/".into(),
                    ..args("v1")
                },
                "own directory",
            ),
            (
                Args {
                    key: Some("id".into()),
                    ..args("v1")
                },
                "`key`",
            ),
            (
                Args {
                    owner: Some("a b".into()),
                    ..args("v1")
                },
                "owner",
            ),
        ] {
            let e = Desired::from_args(f).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        assert!(
            Desired::from_args(Args {
                repo: "https://h/x.git".into(),
                ..args(A)
            })
            .is_ok()
        );
        assert!(
            Desired::from_args(Args {
                repo: "git@h:x.git".into(),
                ..args("release/1.2")
            })
            .is_ok()
        );
        assert!(crate::fact::git::is_commit_id(A));
    }

    /// Clone, update, refuse a dirty tree, and force, with real git on local repositories.
    #[test]
    fn scripts_work_locally() {
        use crate::fact::git;
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let sh = |s: &str| {
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(s)
                .current_dir(d)
                .output()
                .unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr),
            )
        };
        let ok = |s: &str| {
            let (good, out) = sh(s);
            assert!(good, "{s}: {out}");
            out
        };
        ok(
            "git init -q --bare -b main remote.git && git init -q work && cd work && git branch -M main && echo 1 > f && git add f \
            && git -c user.name=t -c user.email=t@t commit -qm one && git tag v1 \
            && echo 2 > f && git -c user.name=t -c user.email=t@t commit -qam two && git tag -a -m v2 v2 \
            && git push -q ../remote.git main v1 v2",
        );
        let url = format!("file://{}/remote.git", d.display());
        let dest = d.join("co").to_str().unwrap().to_string();
        let step = |rev: &str, force: bool| {
            Desired::from_args(Args {
                repo: url.clone(),
                dest: dest.clone(),
                rev: rev.into(),
                key: None,
                known_hosts: None,
                owner: None,
                group: None,
                force,
            })
            .unwrap()
        };
        let converge = |rev: &str, force: bool| -> Result<Change, String> {
            let s = step(rev, force);
            let out = ok(&git::command(0, &s.query));
            let f: Vec<&str> = out
                .trim_end()
                .strip_prefix("@0\t")
                .unwrap()
                .split('\t')
                .collect();
            let c = s.diff(&git::parse(&f).unwrap())?;
            if let Some(op) = &c.op {
                let (good, out) = sh(&op.script);
                if !good {
                    return Err(out);
                }
            }
            Ok(c)
        };
        let head = || {
            ok(&format!("git -C {dest} rev-parse HEAD"))
                .trim()
                .to_string()
        };
        let v1 = ok("git -C work rev-parse v1").trim().to_string();
        let v2 = ok("git -C work rev-parse v2^{commit}").trim().to_string();
        assert_eq!(converge("v1", false).unwrap().action, Action::Create);
        assert_eq!(head(), v1);
        assert_eq!(converge("v1", false).unwrap().action, Action::NoOp);
        let c = converge("v2", false).unwrap();
        assert_eq!(
            c.details,
            [format!("commit {} -> {}", &v1[..12], &v2[..12])]
        );
        assert_eq!(head(), v2);
        // A branch: a local branch of that name.
        assert_eq!(converge("main", false).unwrap().action, Action::Update);
        assert_eq!(
            ok(&format!("git -C {dest} symbolic-ref --short HEAD")).trim(),
            "main"
        );
        assert_eq!(converge("main", false).unwrap().action, Action::NoOp);
        ok(
            "cd work && echo 3 > f && git -c user.name=t -c user.email=t@t commit -qam three && git push -q ../remote.git main",
        );
        let v3 = ok("git -C work rev-parse HEAD").trim().to_string();
        assert_eq!(converge("main", false).unwrap().action, Action::Update);
        assert_eq!(head(), v3);
        // A local edit: refused, kept; forced: discarded.
        ok(&format!("echo local > {dest}/f"));
        assert!(
            converge("v1", false)
                .unwrap_err()
                .contains("local modifications")
        );
        assert_eq!(ok(&format!("cat {dest}/f")), "local\n");
        assert_eq!(converge("v1", true).unwrap().action, Action::Update);
        assert_eq!(head(), v1);
        assert_eq!(ok(&format!("cat {dest}/f")), "1\n");
        // Hooks planted in the checkout never run (git runs as root there).
        ok(&format!(
            "printf '#!/bin/sh\\ntouch {d}/pwned\\n' > {dest}/.git/hooks/post-checkout && chmod +x {dest}/.git/hooks/post-checkout",
            d = d.display()
        ));
        // A commit id.
        assert_eq!(converge(&v2, false).unwrap().action, Action::Update);
        assert_eq!(head(), v2);
        assert!(!d.join("pwned").exists(), "a hook of the checkout ran");
    }
}
