//! The backend image built on the host from its repository's own Dockerfile (issue 17, step "backend image
//! build" of playbooks/claw-ai.toml) on a full lab host: the checkout from the lab's git server, the base
//! image (the python stand-in) shipped under its official name, pip through the lab's PyPI mirror. The
//! rebuild rule in its four cases (same commit: no build; new commit; new base image ID; changed build args
//! or Dockerfile path: build), a credentialed pip_index_url refused before anything runs, and the python
//! stand-in's contract (what python:3.11.15-slim-bookworm has, and has not).

use crate::support::{Lab, Run, claw, ok, repo};
use serde_json::Value;

const KEYS: [(&str, &str); 2] = [
    ("ZHIPUAI_API_KEY", "zhipu-build-key-5e21"),
    ("PINECONE_API_KEY", "pinecone-build-key-0c7a"),
];
const BASE: &str = "python:3.11.15-slim-bookworm";
const STEP: &str = "backend image build";

fn lab_images() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo().join("target/lab-images/images.json"))
            .expect("target/lab-images/images.json (tests/lab/full/stack.sh build)"),
    )
    .unwrap()
}

/// `revision|base IDs|build hash|image ID` of claw-ai/backend on h1.
fn labels(lab: &Lab) -> String {
    ok(
        lab.ssh(
            "h1",
            "sudo docker image inspect --format '{{index .Config.Labels \"claw-ai.revision\"}}|{{index .Config.Labels \"claw-ai.base\"}}|{{index .Config.Labels \"claw-ai.build\"}}|{{.Id}}' claw-ai/backend",
        ),
        "labels of claw-ai/backend",
    )
    .trim()
    .to_string()
}

/// The commit a ref names in the host's checkout of the backend.
fn commit_of(lab: &Lab, r: &str) -> String {
    ok(
        lab.ssh(
            "h1",
            &format!("sudo git -C /opt/claw-ai/backend rev-parse {r}^{{commit}}"),
        ),
        "rev-parse",
    )
    .trim()
    .to_string()
}

/// The plan's action for the build step.
fn planned(run: &Run) -> String {
    let ev = run
        .events()
        .into_iter()
        .find(|e| e["event"] == "plan")
        .unwrap_or_else(|| panic!("no plan event:\n{}\n{}", run.stdout, run.stderr));
    let step = ev["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == STEP)
        .cloned()
        .unwrap_or_else(|| panic!("no `{STEP}` in {ev}"));
    step["action"].as_str().unwrap().to_string()
}

/// The status of the build step in an apply.
fn applied(run: &Run) -> String {
    run.events()
        .into_iter()
        .find(|e| e["event"] == "step" && e["name"] == STEP)
        .map(|e| e["status"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no `{STEP}` step event:\n{}\n{}", run.stdout, run.stderr))
}

#[test]
fn backend_image_is_rebuilt_exactly_when_commit_base_or_build_settings_change() {
    let lab = Lab::up_full("f-build", 1);
    lab.add_lab_mirror("h1");
    lab.install_docker("h1", "docker.io git");
    // What a full apply has made before (the secret steps run under any --tags and need it).
    ok(
        lab.ssh("h1", "sudo install -d -m 0700 /opt/claw-ai/.secrets"),
        "secrets directory",
    );
    let images = lab_images();
    let python = images["python"]["tag"].as_str().unwrap().to_string();
    let pypi = lab.json["pypi"]["url"]
        .as_str()
        .expect("lab.json pypi.url (the lab's PyPI mirror)")
        .to_string();
    let git = &lab.json["git"];
    let git_addr = git["address"].as_str().unwrap();
    // (The other images' steps are not selected, but checked: they need a reference too.)
    let others: String = ["postgres", "redis", "nginx"]
        .iter()
        .map(|n| {
            format!(
                "{n}_image_local = {:?}, ",
                images[n]["tag"].as_str().unwrap()
            )
        })
        .collect();
    let common = format!(
        "ship_images = true, backend_build = true, backend_image = \"claw-ai/backend\", \
         backend_image_local = {python:?}, backend_repo = {:?}, backend_ref = \"v1\", \
         deploy_key_src = {:?}, git_known_hosts = {:?}, pip_index_url = {pypi:?}, {others}",
        format!("git@{git_addr}:{}", git["repo_path"].as_str().unwrap()),
        git["deploy_key"].as_str().unwrap(),
        format!("{git_addr} {}", git["host_key"].as_str().unwrap()),
    );
    let base = std::fs::read_to_string(lab.inventory()).unwrap();
    let write = |file: &str, extra: &str| -> String {
        let text = base.replacen(
            "vars = { tls_dir",
            &format!("vars = {{ {common}{extra}tls_dir"),
            1,
        );
        assert_ne!(text, base, "the lab inventory has its defaults vars line");
        let p = lab.dir.join(file);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let inv = write("build.toml", "");
    let pb = repo().join("playbooks/claw-ai.toml");
    let pb = pb.to_str().unwrap().to_string();
    // Only the backend's steps (tag "backend"): its code, the shipped base image, the build.
    let run = |verb: &str, inv: &str, extra: &[&str]| -> Run {
        let mut args = vec![verb, inv, "--playbook", pb.as_str(), "--tags", "backend"];
        if verb == "apply" {
            args.push("--yes");
        }
        args.extend(["--output", "json"]);
        for e in extra {
            args.extend(["-e", *e]);
        }
        claw(&args, &KEYS)
    };

    // First apply: checkout of v1, the stand-in shipped as python:3.11.15-slim-bookworm, a build.
    let t = std::time::Instant::now();
    let first = run("apply", &inv, &[]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert_eq!(applied(&first), "changed");
    eprintln!("first apply (ship base + build): {:?}", t.elapsed());
    let v1 = commit_of(&lab, "HEAD"); // the checkout of v1
    let base_id = ok(
        lab.ssh(
            "h1",
            &format!("sudo docker image inspect --format '{{{{.Id}}}}' {BASE}"),
        ),
        "base id",
    )
    .trim()
    .to_string();
    let l1 = labels(&lab);
    let parts: Vec<&str> = l1.split('|').collect();
    assert_eq!(parts[0], v1, "{l1}");
    assert_eq!(parts[1].trim(), base_id, "{l1}");
    // The image is the repository's own: its Dockerfile's user, HEALTHCHECK (python urllib), the commit.
    let cfg = ok(
        lab.ssh(
            "h1",
            "sudo docker image inspect --format '{{.Config.User}} {{json .Config.Healthcheck.Test}} {{index .Config.Labels \"org.opencontainers.image.revision\"}}' claw-ai/backend",
        ),
        "image config",
    );
    assert!(
        cfg.starts_with("app ") && cfg.contains("urllib.request") && cfg.contains(&v1),
        "{cfg}"
    );
    // pip used the lab's mirror, given as a build arg (visible in the history: never a secret).
    let history = ok(
        lab.ssh("h1", "sudo docker history --no-trunc claw-ai/backend"),
        "docker history",
    );
    assert!(
        history.contains(&format!("PIP_INDEX_URL={pypi}")),
        "{history}"
    );
    let root = ok(
        lab.ssh(
            "h1",
            "sudo docker run --rm --network none claw-ai/backend python3 -c \"import app, json; print(json.dumps(app.root()))\"",
        ),
        "GET / of the image",
    );
    assert!(
        root.contains("\"version\": \"1.0.0\"") && root.contains(&format!("\"commit\": \"{v1}\"")),
        "{root}"
    );

    // 1. Same commit, same base, same settings: the plan shows nothing to do, and an apply builds nothing.
    let plan = run("plan", &inv, &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert_eq!(planned(&plan), "ok", "{}", plan.stdout);
    let again = run("apply", &inv, &[]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(again.host("h1")["changed"], 0, "{}", again.stdout);
    assert_eq!(labels(&lab), l1);

    // 2. A new commit: built again, labelled with it.
    let plan = run("plan", &inv, &["backend_ref=v2"]);
    assert_eq!(planned(&plan), "known after apply", "{}", plan.stdout);
    let t = std::time::Instant::now();
    let v2run = run("apply", &inv, &["backend_ref=v2"]);
    assert_eq!(v2run.code, 0, "{}\n{}", v2run.stdout, v2run.stderr);
    assert_eq!(applied(&v2run), "changed");
    eprintln!("rebuild for a new commit: {:?}", t.elapsed());
    let v2 = commit_of(&lab, "HEAD"); // the checkout of v2
    assert_ne!(v1, v2);
    let l2 = labels(&lab);
    assert!(l2.starts_with(&format!("{v2}|")), "{l2}");
    let inv_v2 = write("build-v2.toml", "");
    let inv_v2 = {
        let text = std::fs::read_to_string(&inv_v2)
            .unwrap()
            .replace("backend_ref = \"v1\"", "backend_ref = \"v2\"");
        std::fs::write(&inv_v2, text).unwrap();
        inv_v2
    };
    assert_eq!(planned(&run("plan", &inv_v2, &[])), "ok");

    // 3. A new image under the base's name (a new release of the tag): built again on it. Without
    //    ship_images the shipped tag is not put back; the FROM image is taken as the host has it.
    ok(
        lab.ssh(
            "h1",
            &format!(
                "printf 'FROM {BASE}\\nLABEL claw-test.base-release=2\\n' | sudo DOCKER_BUILDKIT=0 docker build -q -t {BASE} -"
            ),
        ),
        "a new base image",
    );
    let new_base = ok(
        lab.ssh(
            "h1",
            &format!("sudo docker image inspect --format '{{{{.Id}}}}' {BASE}"),
        ),
        "new base id",
    )
    .trim()
    .to_string();
    assert_ne!(new_base, base_id);
    let inv_noship = {
        let text = std::fs::read_to_string(&inv_v2)
            .unwrap()
            .replace("ship_images = true", "ship_images = false");
        let p = lab.dir.join("build-noship.toml");
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let plan = run("plan", &inv_noship, &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert_eq!(planned(&plan), "run", "{}", plan.stdout);
    let rebased = run("apply", &inv_noship, &[]);
    assert_eq!(rebased.code, 0, "{}\n{}", rebased.stdout, rebased.stderr);
    assert_eq!(applied(&rebased), "changed");
    let l3 = labels(&lab);
    assert!(
        l3.starts_with(&format!("{v2}|{new_base}")),
        "{l3} (base {new_base})"
    );
    assert_eq!(planned(&run("plan", &inv_noship, &[])), "ok");

    // 4. Changed build args, or another Dockerfile path: built again.
    let inv_args = {
        let text = std::fs::read_to_string(&inv_noship).unwrap().replacen(
            "vars = { ",
            "vars = { backend_build_args = { BUILD_NOTE = \"second\" }, ",
            1,
        );
        let p = lab.dir.join("build-args.toml");
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    assert_eq!(planned(&run("plan", &inv_args, &[])), "run");
    let with_args = run("apply", &inv_args, &[]);
    assert_eq!(
        with_args.code, 0,
        "{}\n{}",
        with_args.stdout, with_args.stderr
    );
    assert_eq!(applied(&with_args), "changed");
    let l4 = labels(&lab);
    assert_ne!(l4.split('|').nth(2), l3.split('|').nth(2), "{l4} / {l3}");
    assert_eq!(planned(&run("plan", &inv_args, &[])), "ok");
    let path = ["backend_dockerfile=./Dockerfile"];
    assert_eq!(planned(&run("plan", &inv_args, &path)), "run");
    let moved = run("apply", &inv_args, &path);
    assert_eq!(moved.code, 0, "{}\n{}", moved.stdout, moved.stderr);
    assert_eq!(applied(&moved), "changed");
    assert_eq!(planned(&run("plan", &inv_args, &path)), "ok");
    let l5 = labels(&lab);

    // A pip mirror URL with credentials is refused before anything runs, naming the variable and not
    // showing the password; the image stays as it was.
    let secret = "pw-never-shown-81f3";
    let creds = format!("pip_index_url=http://mirror-user:{secret}@10.0.0.1/simple/");
    let refused = run("apply", &inv_args, &[&creds]);
    assert_ne!(refused.code, 0, "{}\n{}", refused.stdout, refused.stderr);
    let all = format!("{}\n{}", refused.stdout, refused.stderr);
    assert!(
        all.contains("pip_index_url") && all.contains("credentials"),
        "{all}"
    );
    assert!(!all.contains(secret), "the password is shown:\n{all}");
    assert!(
        !refused.events().iter().any(|e| e["event"] == "step"),
        "a step ran:\n{all}"
    );
    assert_eq!(labels(&lab), l5);
}

/// The python stand-in keeps python:3.11.15-slim-bookworm's contract and nothing more
/// (templates/claw-ai/README.md, "python"): checked in the image itself on this machine.
#[test]
fn python_stand_in_has_python_and_pip_and_no_http_client() {
    let images = lab_images();
    let tag = images["python"]["tag"].as_str().unwrap();
    let sh = |script: &str| {
        std::process::Command::new("docker")
            .args(["run", "--rm", "--network", "none", tag, "sh", "-c", script])
            .output()
            .expect("docker run")
    };
    let out = ok(
        sh(
            "for t in python python3 pip pip3; do command -v $t; done; python --version; \
            pip --version; echo LANG=$LANG; python3 -c 'import urllib.request, ssl, sqlite3'; \
            test ! -e /usr/lib/python3.11/EXTERNALLY-MANAGED && echo managed=no; \
            command -v useradd groupadd",
        ),
        "python stand-in",
    );
    for want in [
        "/usr/local/bin/python\n",
        "/usr/local/bin/python3\n",
        "/usr/local/bin/pip\n",
        "/usr/local/bin/pip3\n",
        "Python 3.11.",
        "LANG=C.UTF-8",
        "managed=no",
        "useradd",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    // The official image has no curl and no wget: neither has the stand-in.
    for absent in ["curl", "wget", "healthcheck"] {
        let o = sh(&format!("command -v {absent}"));
        assert!(
            !o.status.success(),
            "{absent} in the python stand-in: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let cfg = ok(
        std::process::Command::new("docker")
            .args([
                "image",
                "inspect",
                "--format",
                "{{json .Config.Cmd}} {{.Config.User}}|{{json .Config.Entrypoint}}",
                tag,
            ])
            .output()
            .unwrap(),
        "inspect",
    );
    assert_eq!(cfg.trim(), "[\"python3\"] |null", "{cfg}");
}
