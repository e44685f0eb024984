//! A hostile owner of a git checkout (issue 16, item 1). `app`, an unprivileged account on h1,
//! owns the checkout a `git` step manages (`owner = "app"`). As `app`, the test plants every
//! way git has to run a program that it could reach: filters (`clean`, `smudge`, `process`),
//! `diff.<x>.textconv`, `diff.external`, `merge.<x>.driver`, `core.pager`, `core.fsmonitor`,
//! `core.sshCommand`, `core.askPass`, `credential.helper`, `remote.origin.uploadpack`,
//! `url.<x>.insteadOf` to an `ext::` URL with `protocol.ext.allow`, `gpg.program` with
//! `log.showSignature`, `include.path`, `includeIf` (`core.hooksPath`), hooks in `.git/hooks`, an
//! origin re-pointed to an `ext::` command, and `.git` replaced by a symbolic link or by a
//! `gitdir:` file. Every payload appends `id -u` to its canary in /tmp/gitcanary and tries to
//! append to a root-only file. Then `plan` and `apply` run: no canary may say uid 0, the
//! root-only file and the deploy key stay unchanged, and the deploy key and the mirror stay out
//! of `app`'s reach. A control first shows that the planted configuration does run as root when
//! root runs git there the way older versions did (`-c safe.directory`).
//! A checkout made by an older version (root's clone, then `chown -R app`), poisoned the same
//! way, is taken over: plan, apply to another tag, apply again (no-op).

use crate::support::{Lab, Scratch, claw};

fn playbook(lab: &Lab, h2: &str, dest: &str, rev: &str, force: bool, owner: &str) -> String {
    format!(
        r#"name = "hostile-git"
hosts = "h1"

[[steps]]
name = "ssh dir"
kind = "dir"
path = "/root/.ssh"
mode = "0700"

[[steps]]
name = "deploy key"
kind = "file"
path = "/root/.ssh/deploy_key"
src = "{key}"
mode = "0600"
sensitive = true

[[steps]]
name = "git server key"
kind = "file"
path = "/root/.ssh/known_hosts_git"
src = "{kh}"
mode = "0644"

[[steps]]
name = "app checkout"
kind = "git"
repo = "ssh://claw@{h2}/srv/git/app.git"
dest = "{dest}"
ref = "{rev}"
key = "/root/.ssh/deploy_key"
known_hosts = "/root/.ssh/known_hosts_git"
{owner}force = {force}
"#,
        key = lab.dir.join("id_ed25519").display(),
        kh = lab.dir.join("known_hosts").display(),
        owner = if owner.is_empty() {
            String::new()
        } else {
            format!("owner = \"{owner}\"\ngroup = \"{owner}\"\n")
        },
    )
}

/// The payload every vector runs: its canary gets the uid it ran as; as root it would also
/// change /root/precious.
const PAYLOAD: &str =
    "#!/bin/sh\nid -u >> /tmp/gitcanary/ran.$1\necho pwned >> /root/precious 2>/dev/null\nexit 0\n";

/// What `app` plants in a repository's git dir `$1` (run as app, `$2` = the git server's URL
/// prefix to redirect).
const PLANT: &str = r#"set -e
gd=$1; prefix=$2
p=/tmp/gitcanary/pwn
c() { git --git-dir="$gd" config "$@"; }
c filter.pwnclean.clean "$p filter-clean; cat"
c filter.pwnclean.smudge "$p filter-smudge; cat"
c filter.pwnproc.process "$p filter-process"
c diff.pwntext.textconv "$p textconv"
c diff.external "$p diff-external"
c merge.pwnmerge.driver "$p merge-driver"
c core.pager "$p pager"
c pager.status true
c core.fsmonitor "$p fsmonitor"
c core.sshCommand "$p ssh-command"
c core.askPass "$p askpass"
c credential.helper "!$p credential"
c remote.origin.uploadpack "$p uploadpack"
c "url.ext::$p ext-insteadof .insteadOf" "$prefix"
c protocol.ext.allow always
c protocol.allow always
c gpg.program "$p gpg"
c log.showSignature true
c core.editor "$p editor"
c include.path /tmp/gitcanary/include.config
c includeIf.gitdir:/.path /tmp/gitcanary/includeif.config
mkdir -p "$gd/info" "$gd/hooks"
printf '* filter=pwnclean diff=pwntext merge=pwnmerge\n*.md filter=pwnproc\n' > "$gd/info/attributes"
for h in post-checkout reference-transaction post-index-change pre-auto-gc post-merge pre-commit fsmonitor-watchman; do
  printf '#!/bin/sh\n/tmp/gitcanary/pwn hook-%s\n' "$h" > "$gd/hooks/$h"; chmod +x "$gd/hooks/$h"
done
"#;

/// Prepared once on h1 (as root): the canary directory, payload, hooks directory and include
/// files (all `app`'s: the attacker's own).
const CANARY_SETUP: &str = r#"set -e
install -d -m 1777 /tmp/gitcanary
install -d -o app -g app /tmp/gitcanary/hooks
printf '%s' "$1" > /tmp/gitcanary/pwn; chmod 755 /tmp/gitcanary/pwn; chown app:app /tmp/gitcanary/pwn
for h in post-checkout reference-transaction post-index-change; do
  printf '#!/bin/sh\n/tmp/gitcanary/pwn hookspath-%s\n' "$h" > /tmp/gitcanary/hooks/$h; chmod 755 /tmp/gitcanary/hooks/$h
done
chown -R app:app /tmp/gitcanary/hooks
printf '[core]\n\tfsmonitor = /tmp/gitcanary/pwn fsmonitor-include\n[diff "pwntext"]\n\ttextconv = /tmp/gitcanary/pwn textconv-include\n' > /tmp/gitcanary/include.config
printf '[core]\n\thooksPath = /tmp/gitcanary/hooks\n' > /tmp/gitcanary/includeif.config
chown app:app /tmp/gitcanary/include.config /tmp/gitcanary/includeif.config
printf 'root only\n' > /root/precious; chmod 600 /root/precious
"#;

fn commit_on_h2(lab: &Lab, text: &str, push: &str) -> String {
    lab.ssh_ok(
        "h2",
        &format!(
            "set -e; cd /tmp/work; echo '{text}' > README; echo '{text}' > notes.md; git add README notes.md; \
             git commit -qm '{text}'; {push}; git rev-parse HEAD"
        ),
    )
    .trim()
    .to_string()
}

/// Every canary: `ran.NAME` → the uids it recorded.
fn canaries(lab: &Lab) -> Vec<(String, String)> {
    lab.ssh_ok(
        "h1",
        "cd /tmp/gitcanary && for f in ran.*; do [ -e \"$f\" ] || continue; printf '%s %s\\n' \"$f\" \"$(stat -c %u \"$f\"):$(tr '\\n' ' ' < \"$f\")\"; done",
    )
    .lines()
    .filter_map(|l| l.split_once(' '))
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

/// No canary was written by root or records uid 0; returns how many ran (as `app`).
fn assert_never_root(lab: &Lab, app_uid: &str, when: &str) -> usize {
    assert_ran_as(lab, &[app_uid], when)
}

/// No canary was written by root; each ran as one of `uids`; returns how many ran.
fn assert_ran_as(lab: &Lab, uids: &[&str], when: &str) -> usize {
    let c = canaries(lab);
    for (name, v) in &c {
        let (owner, ran) = v.split_once(':').unwrap();
        assert_ne!(owner, "0", "{when}: {name} was written by root: {v}");
        for u in ran.split_whitespace() {
            assert!(uids.contains(&u), "{when}: {name} ran as uid {u}");
        }
    }
    c.len()
}

/// Root's files: the precious file and the deploy key, unchanged, key 0600 root, and out of
/// app's reach (nor any copy of it app can read); the mirror root-only.
fn assert_root_files(lab: &Lab, key_sha: &str, when: &str) {
    assert_eq!(
        lab.ssh_ok("h1", "sudo cat /root/precious"),
        "root only\n",
        "{when}: a payload ran as root"
    );
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "sudo stat -c '%a %U:%G' /root/.ssh/deploy_key /var/lib/claw-provision/git"
        ),
        "600 root:root\n700 root:root\n",
        "{when}"
    );
    assert_eq!(
        lab.ssh_ok("h1", "sudo sha256sum /root/.ssh/deploy_key"),
        key_sha,
        "{when}"
    );
    let probe = lab.ssh(
        "h1",
        "sudo -u app sh -c 'cat /root/.ssh/deploy_key; ls /var/lib/claw-provision/git'",
    );
    assert!(
        !probe.status.success() && probe.stdout.is_empty(),
        "{when}: app reads the key or the mirror: {}",
        String::from_utf8_lossy(&probe.stdout)
    );
    let copies = lab.ssh_ok(
        "h1",
        "sudo -u app grep -rlsF 'OPENSSH PRIVATE KEY' /srv /tmp /home/app /var/lib 2>/dev/null || true",
    );
    assert_eq!(copies, "", "{when}: a copy of the key app can read");
}

#[test]
fn hostile_git_owner_never_gets_root_nor_the_key() {
    let lab = Lab::up("git-hostile", 2);
    let h2 = lab.host("h2").address;
    lab.ssh_ok(
        "h2",
        "set -e; sudo install -d -o claw -g claw /srv/git; git init -q --bare /srv/git/app.git; \
         git init -q -b main /tmp/work; cd /tmp/work; git remote add origin /srv/git/app.git; \
         git config user.name lab; git config user.email lab@lab",
    );
    let v1 = commit_on_h2(
        &lab,
        "one",
        "git tag -a -m 'release 1' v1; git push -q origin main v1",
    );
    let v2 = commit_on_h2(&lab, "two", "git tag v2; git push -q origin main v2");
    let v3 = commit_on_h2(&lab, "three", "git tag v3; git push -q origin main v3");
    lab.ssh_ok("h1", "sudo useradd -m -U -s /bin/sh app");
    let app_uid = lab.ssh_ok("h1", "id -u app").trim().to_string();
    let setup = format!("sudo sh -c {} sh {}", shq(CANARY_SETUP), shq(PAYLOAD));
    lab.ssh_ok("h1", &setup);
    let plant = |gd: &str| {
        lab.ssh_ok(
            "h1",
            &format!(
                "sudo -u app sh -c {} sh {gd} {}",
                shq(PLANT),
                shq(&format!("ssh://claw@{h2}/"))
            ),
        )
    };
    let clear = || lab.ssh_ok("h1", "sudo rm -f /tmp/gitcanary/ran.*");

    let s = Scratch::new();
    let write_as = |dest: &str, rev: &str, force: bool, owner: &str| {
        let pb = s.file("pb.toml", &playbook(&lab, &h2, dest, rev, force, owner));
        lab.write_inventory("hostile-git.toml", &pb, &[])
            .to_str()
            .unwrap()
            .to_string()
    };
    let write = |dest: &str, rev: &str, force: bool| write_as(dest, rev, force, "app");
    let head = |dest: &str| {
        lab.ssh_ok("h1", &format!("sudo -u app git -C {dest} rev-parse HEAD"))
            .trim()
            .to_string()
    };

    // A clean start: the checkout is app's, the deploy key root's.
    let inv = write("/srv/app", "v1", false);
    let r = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(head("/srv/app"), v1);
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "stat -c %U:%G /srv/app /srv/app/.git /srv/app/README /srv/app/.git/config"
        ),
        "app:app\napp:app\napp:app\napp:app\n"
    );
    let key_sha = lab.ssh_ok("h1", "sudo sha256sum /root/.ssh/deploy_key");
    assert_root_files(&lab, &key_sha, "first apply");

    // app poisons its checkout, and touches tracked files (so `git status` runs the clean filter).
    plant("/srv/app/.git");
    lab.ssh_ok("h1", "sudo -u app touch /srv/app/README /srv/app/notes.md");

    // Control: root running git there as older versions did executes app's payload as uid 0.
    lab.ssh_ok(
        "h1",
        "sudo env GIT_OPTIONAL_LOCKS=0 git -c safe.directory=/srv/app -c core.hooksPath=/dev/null -c core.fsmonitor=false \
         -C /srv/app status --porcelain >/dev/null 2>&1 || true",
    );
    let control = canaries(&lab);
    assert!(
        control
            .iter()
            .any(|(n, v)| n == "ran.filter-clean" && v.split(':').nth(1) == Some("0 ")),
        "the control did not run the filter as root: {control:?}"
    );
    lab.ssh_ok(
        "h1",
        "sudo rm -f /tmp/gitcanary/ran.*; printf 'root only\\n' | sudo tee /root/precious >/dev/null",
    );
    clear();

    // plan (read only) and apply of another tag: app's configuration runs, but only as app.
    let inv = write("/srv/app", "v2", false);
    let plan = claw(&["plan", &inv], &[]);
    let apply = claw(&["apply", &inv, "--yes"], &[]);
    let ran = assert_never_root(&lab, &app_uid, "plan and apply of a poisoned checkout");
    assert!(
        canaries(&lab).iter().any(|(n, _)| n == "ran.filter-clean"),
        "the planted filter never ran at all (the attack was not exercised): plan {}\n{}\napply {}\n{}",
        plan.stdout,
        plan.stderr,
        apply.stdout,
        apply.stderr
    );
    assert!(ran > 0);
    assert_root_files(&lab, &key_sha, "poisoned checkout");
    // The process filter dies: app's own git fails in its own checkout, and the step says so.
    assert_ne!(apply.code, 0, "{}", apply.stdout);
    assert!(
        (apply.stdout.clone() + &apply.stderr)
            .contains("could not read the checkout's state with git running as its owner `app`"),
        "{}\n{}",
        apply.stdout,
        apply.stderr
    );
    assert_eq!(head("/srv/app"), v1);
    // Without it the other vectors stay planted; the checkout moves, as app.
    lab.ssh_ok(
        "h1",
        "sudo -u app git -C /srv/app config --unset filter.pwnproc.process",
    );
    clear();
    let plan = claw(&["plan", &inv], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let apply = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(apply.code, 0, "{}\n{}", apply.stdout, apply.stderr);
    assert_eq!(head("/srv/app"), v2);
    assert!(assert_never_root(&lab, &app_uid, "poisoned checkout, moved") > 0);
    eprintln!(
        "vectors that ran (as app, uid {app_uid}): {:?}",
        canaries(&lab)
    );
    assert_root_files(&lab, &key_sha, "poisoned checkout, moved");
    clear();

    // `.git` replaced by a link to app's own repository, then by a `gitdir:` file: refused.
    for (how, swap) in [
        (
            "a symbolic link",
            "mv /srv/app/.git /home/app/real.git && ln -s /home/app/real.git /srv/app/.git",
        ),
        (
            "a gitdir: file",
            "mv /srv/app/.git /home/app/real.git && echo 'gitdir: /home/app/real.git' > /srv/app/.git",
        ),
    ] {
        lab.ssh_ok("h1", &format!("sudo -u app sh -c {}", shq(swap)));
        let inv = write("/srv/app", "v3", false);
        for args in [
            vec!["plan", inv.as_str()],
            vec!["apply", inv.as_str(), "--yes"],
        ] {
            let r = claw(&args, &[]);
            assert_ne!(r.code, 0, "{how}: {args:?}: {}", r.stdout);
            let all = r.stdout.clone() + &r.stderr;
            assert!(all.contains("is not a git checkout"), "{how}: {all}");
        }
        assert_never_root(&lab, &app_uid, how);
        assert_root_files(&lab, &key_sha, how);
        lab.ssh_ok(
            "h1",
            "sudo -u app sh -c 'rm -f /srv/app/.git && mv /home/app/real.git /srv/app/.git'",
        );
    }

    // The origin re-pointed to an `ext::` command: refused, then with `force` re-pointed back by
    // root without ever running it.
    lab.ssh_ok(
        "h1",
        "sudo -u app git -C /srv/app remote set-url origin 'ext::/tmp/gitcanary/pwn ext-origin'",
    );
    let inv = write("/srv/app", "v3", false);
    let r = claw(&["plan", &inv], &[]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        (r.stdout.clone() + &r.stderr).contains("is a checkout of `ext::"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let inv = write("/srv/app", "v3", true);
    let r = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(head("/srv/app"), v3);
    assert_eq!(
        lab.ssh_ok("h1", "sudo -u app git -C /srv/app config remote.origin.url")
            .trim(),
        format!("ssh://claw@{h2}/srv/git/app.git")
    );
    assert_never_root(&lab, &app_uid, "ext:: origin");
    assert_root_files(&lab, &key_sha, "ext:: origin");
    clear();

    // A checkout made by an older version: root cloned it (with the key) and chowned it to app;
    // app then poisoned it. Plan: no-op at its tag (asked over the network, no mirror yet for
    // it); apply of another tag: the mirror is made, the checkout moves as app; again: no-op.
    lab.ssh_ok(
        "h1",
        &format!(
            "sudo env GIT_SSH_COMMAND='ssh -i /root/.ssh/deploy_key -o IdentitiesOnly=yes -o UserKnownHostsFile=/root/.ssh/known_hosts_git -o StrictHostKeyChecking=yes' \
             git clone -q ssh://claw@{h2}/srv/git/app.git /srv/old && sudo git -C /srv/old checkout -q --detach v1 && sudo chown -R app:app /srv/old"
        ),
    );
    plant("/srv/old/.git");
    lab.ssh_ok(
        "h1",
        "sudo -u app sh -c 'git -C /srv/old config --unset filter.pwnproc.process && touch /srv/old/README'",
    );
    let inv = write("/srv/old", "v1", false);
    let plan = claw(&["plan", &inv, "--detailed-exitcode"], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let inv = write("/srv/old", "v2", false);
    let r = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(head("/srv/old"), v2);
    assert_eq!(
        lab.ssh_ok("h1", "sudo stat -c %U:%G /srv/old /srv/old/.git /srv/old/README /var/lib/claw-provision/git/%2Fsrv%2Fold.git"),
        "app:app\napp:app\napp:app\nroot:root\n"
    );
    let again = claw(&["apply", &inv, "--yes", "--output", "json"], &[]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(again.host("h1")["changed"], 0, "{}", again.stdout);
    assert_never_root(&lab, &app_uid, "checkout of an older version");
    assert_root_files(&lab, &key_sha, "checkout of an older version");

    // The checkout goes to another account, app2: root hands it over with `chown -hR`, which
    // changes the links app planted in it, never what they point to.
    lab.ssh_ok("h1", "sudo useradd -m -U -s /bin/sh app2");
    let app2_uid = lab.ssh_ok("h1", "id -u app2").trim().to_string();
    lab.ssh_ok(
        "h1",
        "sudo -u app sh -c 'ln -s /root/precious /srv/old/precious-link && ln -s /root /srv/old/rootdir \
         && mkdir /srv/old/d && ln -s /root/.ssh /srv/old/d/ssh'",
    );
    let root_before = lab.ssh_ok(
        "h1",
        "sudo stat -c '%n %a %U:%G' /root /root/precious /root/.ssh /root/.ssh/deploy_key",
    );
    let inv = write_as("/srv/old", "v2", false, "app2");
    let plan = claw(&["plan", &inv], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("owner app -> app2") && plan.stdout.contains("group app -> app2"),
        "{}",
        plan.stdout
    );
    let r = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "sudo stat -c %U:%G /srv/old /srv/old/.git /srv/old/.git/config /srv/old/README \
             /srv/old/precious-link /srv/old/rootdir /srv/old/d/ssh"
        ),
        "app2:app2\n".repeat(7)
    );
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "sudo stat -c '%n %a %U:%G' /root /root/precious /root/.ssh /root/.ssh/deploy_key"
        ),
        root_before
    );
    // app's planted configuration now runs as app2 (the tree is app2's), never as root.
    assert_ran_as(&lab, &[&app_uid, &app2_uid], "handed to app2");
    assert_root_files(&lab, &key_sha, "handed to app2");
    let again = claw(&["apply", &inv, "--yes", "--output", "json"], &[]);
    assert_eq!(again.host("h1")["changed"], 0, "{}", again.stdout);

    // Without `owner` (as the claw-ai playbook): root's checkout, git run by root there (the tree
    // is root's); clone, move, no-op.
    let inv = write_as("/srv/rootco", "v1", false, "");
    let r = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let inv = write_as("/srv/rootco", "v2", false, "");
    let r = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "sudo stat -c %U:%G /srv/rootco /srv/rootco/.git /srv/rootco/README && sudo git -C /srv/rootco rev-parse HEAD"
        ),
        format!("root:root\nroot:root\nroot:root\n{v2}\n")
    );
    let again = claw(&["apply", &inv, "--yes", "--output", "json"], &[]);
    assert_eq!(again.host("h1")["changed"], 0, "{}", again.stdout);

    // A new checkout whose path app redirected (a directory of it is app's link to /root):
    // refused before anything is made there.
    lab.ssh_ok(
        "h1",
        "sudo install -d -o app -g app /srv/apphome && sudo -u app ln -s /root /srv/apphome/sub",
    );
    let inv = write("/srv/apphome/sub/co", "v1", false);
    let r = claw(&["apply", &inv, "--yes"], &[]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        (r.stdout.clone() + &r.stderr).contains(
            "is a symbolic link another account than root can change: refusing to hand it"
        ),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        lab.ssh_ok("h1", "sudo ls -A /root | grep -c '^co$' || true")
            .trim(),
        "0"
    );
    assert_root_files(&lab, &key_sha, "redirected path");
}

/// Single-quotes a string for a remote shell.
fn shq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A root-owned checkout (no `owner`): git runs there as root, directly, while nobody else can
/// write it. Turned into a shared-deploy tree (root:app, 2775, `.git` group-writable) that
/// `app` poisons, and with the step naming a `group` but no `owner`: plan and apply refuse
/// clearly (host, step, what is writable, what to do) and no payload runs as uid 0.
#[test]
fn fixread_group_writable_root_checkout_is_refused() {
    let lab = Lab::up("fixread-git", 2);
    let h2 = lab.host("h2").address;
    lab.ssh_ok(
        "h2",
        "set -e; sudo install -d -o claw -g claw /srv/git; git init -q --bare /srv/git/app.git; \
         git init -q -b main /tmp/work; cd /tmp/work; git remote add origin /srv/git/app.git; \
         git config user.name lab; git config user.email lab@lab",
    );
    let v1 = commit_on_h2(&lab, "one", "git tag v1; git push -q origin main v1");
    let v2 = commit_on_h2(&lab, "two", "git tag v2; git push -q origin main v2");
    lab.ssh_ok("h1", "sudo useradd -m -U -s /bin/sh app");
    let app_uid = lab.ssh_ok("h1", "id -u app").trim().to_string();
    let setup = format!("sudo sh -c {} sh {}", shq(CANARY_SETUP), shq(PAYLOAD));
    lab.ssh_ok("h1", &setup);
    let s = Scratch::new();
    let write = |rev: &str, group: bool| {
        let mut pb = playbook(&lab, &h2, "/srv/rootapp", rev, false, "");
        if group {
            pb.push_str("group = \"app\"\n");
        }
        let pb = s.file("pb.toml", &pb);
        lab.write_inventory("fixread-git.toml", &pb, &[])
            .to_str()
            .unwrap()
            .to_string()
    };
    let head = || {
        lab.ssh_ok("h1", "sudo git -C /srv/rootapp rev-parse HEAD")
            .trim()
            .to_string()
    };

    // A plain root-owned checkout (0755): cloned, planned and moved, git running as root.
    let r = claw(&["apply", &write("v1", false), "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(head(), v1);
    assert_eq!(
        lab.ssh_ok("h1", "stat -c '%U:%G %a' /srv/rootapp /srv/rootapp/.git"),
        "root:root 755\nroot:root 755\n"
    );
    let inv = write("v2", false);
    let plan = claw(&["plan", &inv], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let r = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(head(), v2);

    // The shared-deploy setup: root:app, 2775, a group-writable (shared) `.git`. app plants
    // its payloads and a tracked file changes (so `git status` would run the clean filter).
    lab.ssh_ok(
        "h1",
        "sudo chgrp -R app /srv/rootapp && sudo chmod 2775 /srv/rootapp && sudo chmod -R g+w /srv/rootapp/.git \
         && sudo touch /srv/rootapp/README /srv/rootapp/notes.md",
    );
    lab.ssh_ok(
        "h1",
        &format!(
            "sudo -u app sh -c {} sh /srv/rootapp/.git {}",
            shq(PLANT),
            shq(&format!("ssh://claw@{h2}/"))
        ),
    );
    // A `group` and no `owner`: the tree's owner (root) would run git.
    let inv = write("v1", true);
    for args in [vec!["plan", inv.as_str()], vec!["apply", &inv, "--yes"]] {
        let r = claw(&args, &[]);
        let out = format!("{}{}", r.stdout, r.stderr);
        assert_ne!(r.code, 0, "{args:?}: {out}");
        assert!(!out.contains("panicked"), "{out}");
        let ran = assert_ran_as(&lab, &[app_uid.as_str()], &format!("{args:?}"));
        assert_eq!(ran, 0, "{args:?}: a payload ran: {:?}", canaries(&lab));
        assert_eq!(
            lab.ssh_ok("h1", "sudo cat /root/precious"),
            "root only\n",
            "{args:?}: a payload ran as root"
        );
        assert!(
            out.lines().any(|l| l.contains("error: h1 (")
                && l.contains("app checkout")
                && l.contains("refusing to run git as root")
                && l.contains("owner")),
            "{args:?}: a clear refusal naming host and step:\n{out}"
        );
    }
    assert_eq!(head(), v2);
}
