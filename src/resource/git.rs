//! `git`: a checkout of a repository at a ref (tag, branch or full commit id).
//!
//! A tag or commit is checked out as a detached HEAD; a branch as a local branch of the same name
//! at the remote's commit (so `git status` on the host says what it follows). The commit the
//! plan showed is the one apply checks out. Local modifications of tracked files stop the step
//! unless `force = true` (then they are discarded); so does a checkout of another repository.
//!
//! **Root never runs git in a work tree another account can write** (see `fact::git` for the
//! layout): apply fetches, as root and with the deploy key, into the root-only mirror
//! (`/var/lib/claw-provision/git/<dest, encoded>.git`), resolves the ref there, then writes the
//! missing objects as a pack into the checkout, where git runs as the checkout's account (the
//! step's `owner`/`group`; without `owner`, whoever owns `dest`, root for a new one) to index
//! them, check for local modifications and check the commit out. The owner never sees the deploy
//! key nor the mirror; what its repository configuration runs, runs as the owner.
//!
//! Ownership: a new `dest` is made by root and handed over with `chown -h` (never follows a
//! link); an existing work tree whose owner or group differs from `owner`/`group` is handed over
//! with `chown -hR` (no link followed; only when no directory of `dest`'s path is a symbolic link
//! another account than root can change (`fact::PHYSDIR_FN`), so a link planted in the path
//! cannot redirect it, and only when no regular file of the tree
//! has a second name: a hard link the current owner made to a file outside the tree, root's
//! where `protected_hardlinks` is off, would be handed over too; a link made between that
//! check and the `chown` is not caught). Files git writes afterwards are the
//! owner's already: there is no `chown -R` after each change.
//!
//! **Checkouts made by older versions** (root ran git in the work tree, then `chown -R`): the work
//! tree and its `.git` are the owner's, so git already runs as the owner there; the first apply
//! that changes something makes the mirror (one full fetch) and sends only the objects the
//! checkout lacks. Nothing else changes, and applying again is a no-op. A `plan` of such a
//! checkout asks the remote for tags until the mirror exists.
//!
use super::StepError;
use super::{check_account, check_path};
use crate::fact::git::{self, GitState, Query, Resolved};
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
    /// Another directory for the mirror than root's (tests on the build machine).
    pub mirrors: Option<String>,
}

/// A ref name git would accept (`git check-ref-format` rules that matter here), and nothing
/// a shell or awk could misread.
fn check_ref(r: &str) -> Result<(), StepError> {
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
        return Err(StepError::arg(format!(
            "`ref = \"{r}\"` is not a valid tag, branch or commit id"
        )));
    }
    Ok(())
}

fn check_repo(u: &str) -> Result<(), StepError> {
    if u.is_empty() || u.starts_with('-') || u.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(StepError::arg(format!(
            "`repo = \"{u}\"` is not a repository URL"
        )));
    }
    // A password in the URL would end up in plans, logs and `.git/config`.
    if let Some((scheme, rest)) = u.split_once("://")
        && scheme.starts_with("http")
        && let Some((userinfo, _)) = rest.split('/').next().unwrap_or("").rsplit_once('@')
        && userinfo.contains(':')
    {
        return Err(StepError::arg(
            "`repo` holds a password: use an ssh deploy key (`key`) instead of credentials in the URL",
        ));
    }
    Ok(())
}

fn short(c: &str) -> &str {
    &c[..c.len().min(12)]
}

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, StepError> {
        check_repo(&a.repo)?;
        check_path(&a.dest)?;
        if a.dest == "/" {
            return Err(StepError::arg(
                "`dest = \"/\"`: give the checkout its own directory",
            ));
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
            check_remote_path(k).map_err(|e| StepError::in_arg("key", e.into()))?;
            ssh.push_str(&format!(" -o IdentitiesOnly=yes -i {}", quote(k)));
        }
        if let Some(k) = &a.known_hosts {
            check_remote_path(k).map_err(|e| StepError::in_arg("known_hosts", e.into()))?;
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
            mirrors: None,
        })
    }

    /// Script prologue: variables and the shell functions of [`git::shell_lib`].
    fn prologue(&self, want: Option<&str>) -> String {
        let q = &self.query;
        format!(
            "set -e\ndest={}; url={}; ref={}; want={}; ssh={}; m={}\n{}",
            quote(&q.dest),
            quote(&q.repo),
            quote(&q.rev),
            quote(want.unwrap_or("")),
            quote(&q.ssh_command),
            quote(&git::mirror_name(&q.dest)),
            git::shell_lib(false, self.mirrors.as_deref()),
        )
    }

    /// Root's part: the mirror made or updated from the remote (the only network access, with the
    /// deploy key), `$want` resolved in it when the plan could not, `$kind` (`branch` or
    /// `detach`).
    fn sync_mirror() -> &'static str {
        r#"mb=${m%/*}
[ -d "$mb" ] || mkdir -p -m 0700 -- "$mb"
if [ ! -d "$m" ] && [ ! -L "$m" ]; then
  rm -rf -- "$m.new"
  genv git -c init.defaultBranch=main init -q --bare "$m.new"
  genv git --git-dir="$m.new" remote add origin "$url"
  mv -- "$m.new" "$m"
fi
if [ -L "$m" ] || [ ! -O "$m" ]; then printf '%s is not a directory of this account; refusing to use it\n' "$m" >&2; exit 1; fi
[ "$(gm config --get remote.origin.url)" = "$url" ] || gm config remote.origin.url "$url"
gm fetch -q --tags --force --prune origin
if [ -z "$want" ]; then
  want=$(gm rev-parse -q --verify "refs/tags/$ref^{commit}" || gm rev-parse -q --verify "refs/remotes/origin/$ref^{commit}" || gm rev-parse -q --verify "$ref^{commit}") || { printf 'ref %s not found in %s\n' "$ref" "$url" >&2; exit 1; }
fi
gm cat-file -e "$want^{commit}" 2>/dev/null || gm fetch -q origin "$want" || { printf 'commit %s of ref %s not found in %s\n' "$want" "$ref" "$url" >&2; exit 1; }
gm update-ref refs/claw-provision/checkout "$want"
kind=detach
if ! gm show-ref -q --verify "refs/tags/$ref" && gm show-ref -q --verify "refs/remotes/origin/$ref"; then kind=branch; fi
"#
    }

    /// `owner:group` (or `owner`, or `:group`) for chown, if any.
    fn chown_spec(&self) -> Option<String> {
        match (&self.owner, &self.group) {
            (None, None) => None,
            (Some(o), None) => Some(o.clone()),
            (o, Some(g)) => Some(format!("{}:{g}", o.as_deref().unwrap_or(""))),
        }
    }

    /// Into the work tree (`cd`: what follows acts on that directory, whatever becomes of the
    /// path), made (`new`) or handed to `owner`/`group` first, then `tu`/`tg` set to the account
    /// git runs as there.
    fn enter_tree(&self, new: bool) -> String {
        let mut s = String::from(super::PHYSDIR_FN);
        s.push_str(
            r#"parent=${dest%/*}; base=${dest##*/}; [ -n "$parent" ] || parent=/
physical() { [ "$(pwd -P)" = "$parent" ] || [ "$(pwd -P)" = "$(claw_physdir "$parent")" ] || { printf 'a directory of %s is a symbolic link another account than root can change: refusing to hand it to another account (give the physical path)\n' "$dest" >&2; exit 1; }; }
"#,
        );
        let spec = self.chown_spec();
        if new {
            s.push_str(&Self::make_dest(spec.as_deref()));
        } else {
            s.push_str("cd -P -- \"$parent\"\n");
            if let Some(spec) = &spec {
                s.push_str(&self.hand_over(spec));
            }
        }
        s.push_str("cd -P -- \"./$base\"\n");
        s.push_str(&self.tree_account());
        if !new {
            s.push_str("{ [ -d .git ] && [ ! -L .git ]; } || { printf '%s/.git is no longer a directory; refusing\\n' \"$dest\" >&2; exit 1; }\n");
        }
        s
    }

    /// A new checkout's directory, from inside its parent (`cd -P`): made empty (an empty
    /// directory already there is taken; anything else stops the script) and, with `spec`
    /// (`owner:group`, see [`Self::chown_spec`]), handed over with `chown -h`.
    fn make_dest(spec: Option<&str>) -> String {
        let mut s = String::from(
            r#"[ -d "$parent" ] || mkdir -p -- "$parent"
cd -P -- "$parent"
"#,
        );
        if spec.is_some() {
            // Before anything is made there: no directory of the path may be a link.
            s.push_str("physical\n");
        }
        s.push_str(
            r#"if [ -e "./$base" ] || [ -L "./$base" ]; then
  { [ -d "./$base" ] && [ ! -L "./$base" ] && [ -z "$(ls -A -- "./$base")" ]; } || { printf '%s appeared since the plan; refusing to replace it\n' "$dest" >&2; exit 1; }
else mkdir -- "./$base"; fi
"#,
        );
        if let Some(spec) = spec {
            s.push_str(&format!("chown -h -- {} \"./$base\"\n", quote(spec)));
        }
        s
    }

    /// An existing work tree handed to `spec` (`owner:group`) with `chown -hR`, only when its
    /// owner or group is not the wanted one, and refused when a directory of the path is a link
    /// another account can change or a file of the tree has a second name.
    fn hand_over(&self, spec: &str) -> String {
        let mut cond = vec![];
        if let Some(o) = &self.owner {
            cond.push(format!(
                "[ \"$1\" != {o} ] && [ \"$3\" != {o} ]",
                o = quote(o)
            ));
        }
        if let Some(g) = &self.group {
            cond.push(format!(
                "[ \"$2\" != {g} ] && [ \"$4\" != {g} ]",
                g = quote(g)
            ));
        }
        format!(
            r#"set -- $(stat -c '%u %g %U %G' -- "./$base")
if {{ {cond}; }}; then
  physical
  {{ [ -d "./$base" ] && [ ! -L "./$base" ]; }} || {{ printf '%s is no longer a directory\n' "$dest" >&2; exit 1; }}
  hl=$(find "./$base" -type f -links +1 -print -quit) || hl=?
  [ -z "$hl" ] || {{ printf '%s holds a file with more than one name (%s: a hard link, maybe to a file outside the checkout): refusing to hand the tree to another account\n' "$dest" "$hl" >&2; exit 1; }}
  chown -hR -- {spec} "./$base"
fi
"#,
            cond = cond
                .iter()
                .map(|c| format!("{{ {c}; }}"))
                .collect::<Vec<_>>()
                .join(" || "),
            spec = quote(spec),
        )
    }

    /// `tu`/`tg`/`tgr`: the account git runs as in the work tree entered, `owner` (and `group`)
    /// when given, else whoever owns the tree; git as root in a tree another account can write
    /// stops the script (`tree_refuse`).
    fn tree_account(&self) -> String {
        match &self.owner {
            // The named account, whatever the directory we are in turns out to be.
            Some(o) => format!(
                r#"tu={o}; tg={g}; tgr=--init-groups
getent passwd "$tu" >/dev/null 2>&1 || tgr=--clear-groups
[ -n "$tg" ] || tg=$(id -g -- "$tu")
# Without root there is no other account to run as: git's own ownership check then applies.
[ -O / ] || tu=.
tree_rootcheck || tree_refuse
"#,
                o = quote(o),
                g = quote(self.group.as_deref().unwrap_or("")),
            ),
            None => "tree_account || tree_refuse\n".to_string(),
        }
    }

    /// The planned commit into the checkout (as its account: only the objects it lacks, from
    /// the mirror), then checked out.
    fn checkout(&self) -> String {
        let f = if self.force { " -f" } else { "" };
        format!(
            r#"if ! tree git cat-file -e "$want^{{commit}}" 2>/dev/null </dev/null; then
  have=$(tree git rev-parse -q --verify 'HEAD^{{commit}}' 2>/dev/null </dev/null) || have=
  case $have in *[!0-9a-f]*) have= ;; esac
  [ ${{#have}} = 40 ] && gm cat-file -e "$have^{{commit}}" 2>/dev/null || have=
  {{ printf '%s\n' "$want"; [ -z "$have" ] || printf '^%s\n' "$have"; }} | gm pack-objects -q --revs --stdout | tree git index-pack --stdin >/dev/null
  tree git cat-file -e "$want^{{commit}}" </dev/null || {{ printf 'commit %s did not reach the checkout\n' "$want" >&2; exit 1; }}
fi
if [ "$kind" = branch ]; then
  tree git checkout -q{f} -B "$ref" "$want" </dev/null >&2
else
  tree git checkout -q{f} --detach "$want" </dev/null >&2
fi
"#
        )
    }

    fn clone_script(&self, want: Option<&str>) -> String {
        let mut s = self.prologue(want);
        s.push_str(Self::sync_mirror());
        s.push_str(&self.enter_tree(true));
        s.push_str("tree git -c init.defaultBranch=main init -q </dev/null >&2\ntree git remote add origin \"$url\" </dev/null\n");
        s.push_str(&self.checkout());
        s
    }

    fn update_script(&self, want: Option<&str>, repoint: bool) -> String {
        let mut s = self.prologue(want);
        s.push_str(Self::sync_mirror());
        s.push_str(&self.enter_tree(false));
        if repoint {
            s.push_str("tree git config remote.origin.url \"$url\" </dev/null\n");
        }
        if !self.force {
            // The probe said clean; refuse if someone edited files since.
            s.push_str("if [ -n \"$(tree git status --porcelain --untracked-files=no </dev/null)\" ]; then printf '%s has local modifications; refusing to discard them (set `force = true` to discard)\\n' \"$dest\" >&2; exit 1; fi\n");
        }
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

    pub fn diff(&self, o: &GitState) -> Result<Change, StepError> {
        let q = &self.query;
        let dest = &q.dest;
        let missing = || StepError::host(format!("ref `{}` not found in {}", q.rev, q.repo));
        match o {
            GitState::NoGit => Ok(Change::deferred(dest, "git is not installed yet")),
            GitState::NotRepo => Err(StepError::host(format!(
                "`{dest}` exists but is not a git checkout; refusing to replace it"
            ))),
            GitState::Absent(Resolved::Missing) => Err(missing()),
            GitState::Absent(want) => Ok(self.clone_change(want)),
            GitState::Repo {
                owner,
                group,
                origin,
                head,
                dirty,
                branch,
                want,
            } => {
                let repoint = origin != &q.repo;
                self.refuse_unforced(origin, repoint, *dirty)?;
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
                details.extend(self.head_details(
                    head.as_deref(),
                    &commit,
                    want,
                    branch.as_deref(),
                ));
                if *dirty {
                    details.push("discard local modifications".into());
                }
                details.extend(self.ownership_details(owner, group));
                Ok(self.checkout_change(want, &commit, repoint, details))
            }
        }
    }

    /// The change when nothing is at `dest`: a clone of the commit `want` names (known after
    /// apply when the remote could not be asked yet).
    fn clone_change(&self, want: &Resolved) -> Change {
        let q = &self.query;
        let mut c = Change::new(
            Action::Create,
            &q.dest,
            format!("clone {}", q.repo),
            self.clone_script(want.commit()),
        );
        c.details.push(match want {
            Resolved::Unreachable(_) => {
                format!("ref {} (commit known after apply)", q.rev)
            }
            w => self.describe(w),
        });
        c
    }

    /// Without `force`, a checkout of another repository (`repoint`) or one with local
    /// modifications stops the step.
    fn refuse_unforced(&self, origin: &str, repoint: bool, dirty: bool) -> Result<(), StepError> {
        let q = &self.query;
        let dest = &q.dest;
        if repoint && !self.force {
            return Err(StepError::host(format!(
                "`{dest}` is a checkout of `{origin}`, not `{}`; set `force = true` to re-point it",
                q.repo
            )));
        }
        if dirty && !self.force {
            return Err(StepError::host(format!(
                "`{dest}` has local modifications (see `git -C {dest} status`); refusing to discard them (set `force = true` to discard)"
            )));
        }
        Ok(())
    }

    /// Compare HEAD: the commit checked out against the planned one and, for a branch, the
    /// branch checked out (None: detached HEAD) against `ref`.
    fn head_details(
        &self,
        head: Option<&str>,
        commit: &str,
        want: &Resolved,
        branch: Option<&str>,
    ) -> Vec<String> {
        let rev = self.query.rev.as_str();
        let mut details = vec![];
        if head != Some(commit) {
            details.push(format!(
                "commit {} -> {}",
                head.map_or("(none)", short),
                short(commit)
            ));
        }
        if let Resolved::Branch(_) = want
            && branch != Some(rev)
        {
            details.push(format!(
                "branch {} -> {}",
                branch.unwrap_or("(detached)"),
                rev
            ));
        }
        details
    }

    /// Compare ownership: the work tree's owner and group against `owner`/`group` (a name or a
    /// number), where given.
    fn ownership_details(&self, owner: &git::Account, group: &git::Account) -> Vec<String> {
        let mut details = vec![];
        if let Some(o) = &self.owner
            && !owner.is(o)
        {
            details.push(format!("owner {} -> {o}", owner.name));
        }
        if let Some(g) = &self.group
            && !group.is(g)
        {
            details.push(format!("group {} -> {g}", group.name));
        }
        details
    }

    /// The change to an existing checkout from what differs (`details`): nothing, a no-op;
    /// else the planned `commit` checked out (after re-pointing origin when `repoint`).
    fn checkout_change(
        &self,
        want: &Resolved,
        commit: &str,
        repoint: bool,
        details: Vec<String>,
    ) -> Change {
        let dest = &self.query.dest;
        if details.is_empty() {
            return Change::noop(dest, format!("at {}", self.describe(want)));
        }
        let mut c = Change::new(
            Action::Update,
            dest,
            format!("check out {}", self.describe(want)),
            self.update_script(Some(commit), repoint),
        );
        c.details = details;
        c
    }
}

/// The `git` step kind.
pub(crate) struct GitKind;

impl super::StepKind for GitKind {
    fn name(&self) -> &'static str {
        "git"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<Args>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        _: &serde_json::Map<String, serde_json::Value>,
        _: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        Ok(super::Desired::Git(Desired::from_args(super::args(args)?)?))
    }

    /// git, and `setpriv` (git in a checkout runs as its owner; the kind does not see whether
    /// a step names an `owner`, so every git step asks for it).
    fn needs(&self) -> &'static [super::kind::Need] {
        &[
            super::kind::Need::Command {
                name: "git",
                package: "git",
            },
            super::kind::Need::Command {
                name: "setpriv",
                package: "util-linux",
            },
        ]
    }
}

/// Asks for the checkout.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        vec![p.add(crate::fact::Request::Git(self.query.clone()))]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [crate::fact::Observed::Git(o)] => Some(self.diff(o)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::git::Account;

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

    fn claw() -> Account {
        Account {
            id: "1000".into(),
            name: "claw".into(),
        }
    }

    fn repo(head: &str, dirty: bool, branch: Option<&str>, want: Resolved) -> GitState {
        GitState::Repo {
            owner: claw(),
            group: claw(),
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
                    owner: claw(),
                    group: claw(),
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
                    owner: claw(),
                    group: claw(),
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
                "another owner (a checkout of root's, now the app's)",
                want("v1"),
                GitState::Repo {
                    owner: Account {
                        id: "0".into(),
                        name: "root".into(),
                    },
                    group: claw(),
                    origin: URL.into(),
                    head: Some(A.into()),
                    dirty: false,
                    branch: None,
                    want: Resolved::Tag(A.into()),
                },
                Ok((Action::Update, vec!["owner root -> claw"])),
            ),
            (
                "owner given by number",
                Desired::from_args(Args {
                    owner: Some("1000".into()),
                    ..args("v1")
                })
                .unwrap(),
                repo(A, false, None, Resolved::Tag(A.into())),
                Ok((Action::NoOp, vec![])),
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
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{name}: {e}"),
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
        // Root's git only in the mirror; the checkout's git as its owner; no override list.
        assert!(!s.contains("safe.directory"), "{s}");
        assert!(!s.contains("hooksPath"), "{s}");
        assert!(s.contains("m='%2Fopt%2Fapp.git'"), "{s}");
        assert!(s.contains("setpriv --reuid=\"$tu\""), "{s}");
        assert!(s.contains("tu='claw'"), "{s}");
        assert!(s.contains("chown -hR -- 'claw' \"./$base\""), "{s}");
        // A file with a second name (a hard link to a file outside the tree) stops the handover.
        let find = s
            .find("find \"./$base\" -type f -links +1")
            .expect("hard-link check");
        assert!(find < s.find("chown -hR").unwrap(), "{s}");
        assert!(!s.contains("chown -R"), "{s}");
        assert!(s.contains("local modifications; refusing"), "{s}");
        assert!(!s.contains("checkout -q -f"), "{s}");
    }

    /// A new checkout's directory is handed to `owner` (after checking its path has no link
    /// another account can change) only when an owner or group is given; an existing tree is
    /// handed over when its owner or its group differs; git runs as `owner`/`group` if given.
    #[test]
    fn enter_tree_hands_over_only_what_is_asked() {
        let with = |owner: Option<&str>, group: Option<&str>| {
            Desired::from_args(Args {
                owner: owner.map(Into::into),
                group: group.map(Into::into),
                ..args("v1")
            })
            .unwrap()
        };
        let made = with(Some("claw"), None).enter_tree(true);
        let physical = made.find("cd -P -- \"$parent\"\nphysical\n").expect(&made);
        assert!(
            physical < made.find("mkdir -- \"./$base\"").unwrap(),
            "{made}"
        );
        assert!(made.contains("chown -h -- 'claw' \"./$base\"\n"), "{made}");
        assert!(made.contains("tu='claw'; tg=''"), "{made}");
        let made = with(None, None).enter_tree(true);
        assert!(!made.contains("\nphysical\n"), "{made}");
        assert!(!made.contains("chown"), "{made}");
        assert!(made.contains("\ntree_account || tree_refuse\n"), "{made}");
        let kept = with(Some("claw"), Some("app")).enter_tree(false);
        assert!(
            kept.contains(
                "if { { [ \"$1\" != 'claw' ] && [ \"$3\" != 'claw' ]; } || { [ \"$2\" != 'app' ] && [ \"$4\" != 'app' ]; }; }; then"
            ),
            "{kept}"
        );
        assert!(
            kept.contains("chown -hR -- 'claw:app' \"./$base\""),
            "{kept}"
        );
        assert!(kept.contains("tu='claw'; tg='app'"), "{kept}");
        assert!(!with(None, None).enter_tree(false).contains("chown"));
    }

    /// Handing a tree over to its new owner (`chown -hR`) stops when a file has a second name:
    /// a hard link to a file outside the tree would be handed over with it.
    #[test]
    fn a_hard_linked_file_stops_the_handover() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().canonicalize().unwrap();
        let dest = t.join("app");
        std::fs::create_dir_all(dest.join(".git")).unwrap();
        std::fs::write(dest.join("tracked"), "x").unwrap();
        std::fs::write(t.join("outside"), "keep").unwrap();
        let run = || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "dest={}\n{}",
                    quote(dest.to_str().unwrap()),
                    want("v2").enter_tree(false)
                ))
                .output()
                .unwrap()
        };
        let before = std::fs::metadata(t.join("outside")).unwrap();
        std::fs::hard_link(t.join("outside"), dest.join("sub-link")).unwrap();
        let o = run();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("holds a file with more than one name") && err.contains("sub-link"),
            "{err}"
        );
        let after = std::fs::metadata(t.join("outside")).unwrap();
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        // No second name: the check lets the handover go on.
        std::fs::remove_file(dest.join("sub-link")).unwrap();
        let o = run();
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains("more than one name"),
            "{o:?}"
        );
        // Through a link root alone can change (root's, in this 0700 directory of root's): the
        // handover goes on; through one in a directory others can write: refused.
        if before.uid() == 0 {
            std::os::unix::fs::symlink(&t, t.join("link")).unwrap();
            let via = |dir: &std::path::Path| {
                let o = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "dest={}\n{}",
                        quote(dir.join("link/app").to_str().unwrap()),
                        want("v2").enter_tree(false)
                    ))
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&o.stderr).into_owned()
            };
            std::fs::remove_dir_all(dest.join(".git")).unwrap();
            std::fs::create_dir(dest.join(".git")).unwrap();
            let err = via(&t);
            assert!(!err.contains("symbolic link"), "{err}");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o777)).unwrap();
            std::os::unix::fs::chown(&dest, Some(0), Some(0)).unwrap();
            let err = via(&t);
            assert!(
                err.contains("is a symbolic link another account than root can change"),
                "{err}"
            );
        }
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
            let e = Desired::from_args(f).unwrap_err().to_string();
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
        let mirrors = d.join("mirrors").to_str().unwrap().to_string();
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
            .map(|s| Desired {
                mirrors: Some(mirrors.clone()),
                ..s
            })
            .unwrap()
        };
        let converge = |rev: &str, force: bool| -> Result<Change, StepError> {
            let s = step(rev, force);
            let out = ok(&git::command_in(0, &s.query, Some(&mirrors)));
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
                    return Err(StepError::host(out));
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
                .to_string()
                .contains("local modifications")
        );
        assert_eq!(ok(&format!("cat {dest}/f")), "local\n");
        assert_eq!(converge("v1", true).unwrap().action, Action::Update);
        assert_eq!(head(), v1);
        assert_eq!(ok(&format!("cat {dest}/f")), "1\n");
        // A hook planted in the checkout runs as the checkout's account (this process's here), never
        // as another: git never runs in the checkout but as its owner.
        ok(&format!(
            "printf '#!/bin/sh\\nid -u > {d}/hook-ran\\n' > {dest}/.git/hooks/post-checkout && chmod +x {dest}/.git/hooks/post-checkout",
            d = d.display()
        ));
        // A commit id.
        assert_eq!(converge(&v2, false).unwrap().action, Action::Update);
        assert_eq!(head(), v2);
        assert_eq!(
            std::fs::read_to_string(d.join("hook-ran")).unwrap(),
            ok("id -u"),
            "the checkout's hook ran as another account"
        );
        // The mirror is the root-only part: a bare repository named after `dest`, origin `url`.
        let m = format!("{mirrors}/{}", git::mirror_name(&dest));
        assert_eq!(
            ok(&format!("git --git-dir={m} config remote.origin.url")).trim(),
            url
        );
        // A lost mirror is made again; a checkout made by an older version (no mirror) too.
        ok(&format!("rm -rf {m}"));
        assert_eq!(converge(&v1, false).unwrap().action, Action::Update);
        assert_eq!(head(), v1);
        assert!(std::path::Path::new(&m).is_dir());
    }
}
