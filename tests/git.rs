//! `git` on real hosts: h2 serves a bare repository over SSH; h1 gets a deploy key and a
//! known_hosts file from earlier steps and checks the repository out at a tag, then another tag,
//! then a branch that moves; a local edit is refused (naming host and step) until `force`.

use crate::support::{Lab, Scratch, claw};

fn playbook(lab: &Lab, repo_addr: &str, rev: &str, force: bool) -> String {
    format!(
        r#"name = "deploy"
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
repo = "ssh://claw@{repo_addr}/srv/git/app.git"
dest = "/opt/app"
ref = "{rev}"
key = "/root/.ssh/deploy_key"
known_hosts = "/root/.ssh/known_hosts_git"
owner = "claw"
group = "claw"
force = {force}
"#,
        key = lab.dir.join("id_ed25519").display(),
        kh = lab.dir.join("known_hosts").display(),
    )
}

/// Commits on h2's working copy and pushes; returns the new commit.
fn commit_on_h2(lab: &Lab, text: &str, push: &str) -> String {
    lab.ssh_ok(
        "h2",
        &format!(
            "set -e; cd /tmp/work; echo '{text}' > README; git add README; \
             git commit -qm '{text}'; {push}; git rev-parse HEAD"
        ),
    )
    .trim()
    .to_string()
}

#[test]
fn git_clone_update_refuse_and_follow_a_branch() {
    let lab = Lab::up("t-git", 2);
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
    let stable = commit_on_h2(
        &lab,
        "three",
        "git push -q origin main:stable; git push -q origin main",
    );

    let s = Scratch::new();
    let write = |rev: &str, force: bool| {
        let pb = s.file("pb.toml", &playbook(&lab, &h2, rev, force));
        lab.write_inventory("git.toml", &pb, &[])
            .to_str()
            .unwrap()
            .to_string()
    };
    let head = || {
        lab.ssh_ok("h1", "git -C /opt/app rev-parse HEAD")
            .trim()
            .to_string()
    };

    // Fresh host: the deploy key comes from an earlier step, so the commit is known after apply.
    let inv = write("v1", false);
    let plan = claw(&["plan", &inv], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("+ create  git /opt/app: ref v1 (commit known after apply)"),
        "{}",
        plan.stdout
    );
    let r = claw(&["apply", &inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(head(), v1);
    assert_eq!(
        lab.ssh_ok("h1", "stat -c %U:%G /opt/app /opt/app/.git /opt/app/README"),
        "claw:claw\nclaw:claw\nclaw:claw\n"
    );
    assert_eq!(
        lab.ssh_ok(
            "h1",
            "git -C /opt/app status --porcelain --branch | head -1"
        )
        .trim(),
        "## HEAD (no branch)",
        "a tag is checked out detached"
    );

    // Second apply: nothing to do (the tag resolves locally, root reads claw's checkout).
    let again = claw(&["apply", &inv, "--yes", "--output", "json"], &[]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(again.host("h1")["changed"], 0, "{}", again.stdout);

    // Another tag: the plan shows both commits; apply moves the checkout.
    let inv = write("v2", false);
    let plan = claw(&["plan", &inv], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let want = format!(
        "~ update  git /opt/app: commit {} -> {}",
        &v1[..12],
        &v2[..12]
    );
    assert!(plan.stdout.contains(&want), "{}", plan.stdout);
    let r = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(head(), v2);

    // A local edit: plan and apply refuse, naming host and step; the edit is kept.
    lab.ssh_ok("h1", "echo 'hotfix' >> /opt/app/README");
    let inv = write("stable", false);
    for args in [
        vec!["plan", inv.as_str()],
        vec!["apply", inv.as_str(), "--yes"],
    ] {
        let r = claw(&args, &[]);
        assert_ne!(r.code, 0, "{args:?}: {}\n{}", r.stdout, r.stderr);
        let all = r.stdout.clone() + &r.stderr;
        assert!(
            all.contains("h1")
                && all.contains("app checkout")
                && all.contains("`/opt/app` has local modifications"),
            "{args:?}: {all}"
        );
    }
    assert!(lab.ssh_ok("h1", "cat /opt/app/README").contains("hotfix"));
    assert_eq!(head(), v2);

    // With force: discarded, and the branch is checked out as a local branch.
    let inv = write("stable", true);
    let r = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(head(), stable);
    assert_eq!(lab.ssh_ok("h1", "cat /opt/app/README"), "three\n");
    assert_eq!(
        lab.ssh_ok("h1", "git -C /opt/app symbolic-ref --short HEAD")
            .trim(),
        "stable"
    );

    // The branch moves on h2: the plan sees it (ls-remote through the deploy key), apply follows.
    let inv = write("stable", false);
    let p = claw(&["plan", &inv, "--detailed-exitcode"], &[]);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    let four = commit_on_h2(&lab, "four", "git push -q origin main:stable");
    let plan = claw(&["plan", &inv], &[]);
    let want = format!(
        "~ update  git /opt/app: commit {} -> {}",
        &stable[..12],
        &four[..12]
    );
    assert!(plan.stdout.contains(&want), "{}", plan.stdout);
    let r = claw(&["apply", &inv, "--yes"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(head(), four);
    assert_eq!(lab.ssh_ok("h1", "cat /opt/app/README"), "four\n");
    let again = claw(&["apply", &inv, "--yes", "--output", "json"], &[]);
    assert_eq!(again.host("h1")["changed"], 0, "{}", again.stdout);
}
