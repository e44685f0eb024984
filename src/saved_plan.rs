//! Saved plans: `plan --out FILE` writes what every host's plan was based on; `apply --plan
//! FILE` applies it only where nothing it was based on has changed since.
//!
//! The file is one JSON document (`format`, `version`). Per host it holds the plan as the
//! `plan` event of `--output json` shows it (per step: name, kind, action, target, details,
//! reason) and, per step, two fingerprints:
//! - `desired`: the step as rendered offline by `run::prepare` (inventory, playbook, templates,
//!   local files, with the stand-in facts and secrets): a changed input changes it;
//! - `probed`: the probe answers the step's diff compared against (a file's type, mode, owner
//!   and sha256; a command's guards; a package's state; a secret file's value ...).
//!
//! and a fingerprint of the host's facts. For the run: fingerprints of the inventory and
//! playbook files, of the extra variables and of each operator secret.
//!
//! **Every fingerprint is an HMAC-SHA256 keyed with a random 256-bit key made for that plan**
//! (stored in the file: `apply` needs it to recompute them). The values of secrets are never
//! written; they enter only these keyed digests (a secret read back from a host, through its
//! step's `probed`; an operator secret, through `inputs.operator_secrets`), so the file holds
//! no plain hash of a secret to look up in a table, and equal values give unrelated digests in
//! two plans. Steps whose contents use a secret are fingerprinted as rendered with the
//! stand-ins (no value), plus the secrets' own fingerprints.
//!
//! The canonical text of a probe answer is its `Debug` form (plus a secret's value, which
//! `Debug` redacts). It may change between releases, so a plan is applied only by the build
//! that made it (`tool`).

mod error;
mod fingerprint;

pub(crate) use error::{DriftError, MakeError, ReadError};
pub(crate) use fingerprint::{desired, probed};

use crate::error::Error;
use crate::plan::HostPlan;
// The outcome and preparation types, not the runner that drives hosts (which reads saved plans).
use crate::run::outcome::{HostOutcome, HostState};
use crate::run::prepare::Prepared;
use crate::secret::Secret;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::Path;

/// The `format` of a plan file.
pub(crate) const FORMAT: &str = "claw-provision plan";
/// The version of the file format this build reads and writes.
pub(crate) const VERSION: u32 = 1;

/// The key of a plan's fingerprints.
#[derive(Clone)]
pub(crate) struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A new key from the operating system's random generator.
    pub(crate) fn random() -> Result<Self, Error> {
        use rand::TryRngCore;
        let mut k = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut k).map_err(|e| {
            Error::Io(format!(
                "the operating system's random generator failed: {e}"
            ))
        })?;
        Ok(Self(k))
    }

    fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(Self(v.try_into().ok()?))
    }

    fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// HMAC-SHA256 of the parts (each length-prefixed, so no two lists give the same input), hex.
    pub(crate) fn digest(&self, parts: &[&[u8]]) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key");
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        hex::encode(m.finalize().into_bytes())
    }
}

/// What a plan was made from (the run's inputs besides the hosts' steps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Inputs {
    /// The inventory file as given (for messages; its content is what is compared).
    pub inventory: String,
    pub inventory_fingerprint: String,
    pub playbook: String,
    pub playbook_fingerprint: String,
    pub task: Option<String>,
    pub limit: Option<String>,
    /// The step selection (`--tags`, `--skip-tags`, `--step`) as given; None: every step.
    #[serde(default)]
    pub steps: Option<String>,
    /// The names of the `-e` variables (their values only in the fingerprint).
    pub extra_vars: Vec<String>,
    pub extra_vars_fingerprint: String,
    /// Operator secret name → keyed fingerprint of its value.
    pub operator_secrets: BTreeMap<String, String>,
}

/// The selection of a run, as the command line gave it.
pub(crate) struct Selection<'a> {
    pub inventory: &'a Path,
    pub playbook: &'a crate::playbook::Playbook,
    pub limit: Option<&'a str>,
    /// `--tags`/`--skip-tags`/`--step` as given (None: every step).
    pub steps: Option<String>,
    pub extra: &'a [(String, String)],
}

/// The fingerprints of a run's inputs. Reads the inventory file again (its bytes).
pub(crate) fn inputs(
    key: &Key,
    sel: &Selection<'_>,
    operator_secrets: &[(String, Secret)],
) -> Inputs {
    let inv = std::fs::read(sel.inventory).unwrap_or_default();
    let mut extra: Vec<&(String, String)> = sel.extra.iter().collect();
    // The last `-e` of a name wins, as in the variables; the order of distinct names is free.
    extra.reverse();
    let mut seen = std::collections::BTreeMap::new();
    for (k, v) in extra {
        seen.entry(k.as_str()).or_insert(v.as_str());
    }
    let mut parts: Vec<&[u8]> = vec![b"extra vars"];
    for (k, v) in &seen {
        parts.push(k.as_bytes());
        parts.push(v.as_bytes());
    }
    Inputs {
        inventory: sel.inventory.display().to_string(),
        inventory_fingerprint: key.digest(&[b"inventory", &inv]),
        playbook: sel.playbook.path.display().to_string(),
        playbook_fingerprint: key.digest(&[b"playbook", sel.playbook.source.as_bytes()]),
        task: sel.playbook.task.clone(),
        limit: sel.limit.map(String::from),
        steps: sel.steps.clone(),
        extra_vars: seen.keys().map(ToString::to_string).collect(),
        extra_vars_fingerprint: key.digest(&parts),
        operator_secrets: operator_secrets
            .iter()
            .map(|(k, v)| {
                let d = key.digest(&[b"operator secret", k.as_bytes(), v.expose().as_bytes()]);
                (k.clone(), d)
            })
            .collect(),
    }
}

/// One step of a saved host plan: the change summary of the `plan` event, and fingerprints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepEntry {
    pub name: String,
    pub kind: String,
    pub action: String,
    pub target: String,
    pub details: Vec<String>,
    pub reason: String,
    pub warnings: Vec<String>,
    pub desired: String,
    pub probed: String,
}

/// One host of a saved plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostEntry {
    pub host: String,
    pub address: String,
    pub changes: usize,
    pub facts: String,
    pub steps: Vec<StepEntry>,
    pub handlers: Vec<String>,
    pub pending_handlers: Vec<String>,
}

/// A saved plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanFile {
    pub format: String,
    pub version: u32,
    /// `claw-provision --version` of the build that made it.
    pub tool: String,
    /// The key of every fingerprint of this file (hex).
    pub fingerprint_key: String,
    pub inputs: Inputs,
    pub hosts: Vec<HostEntry>,
}

/// The host entry of a planned host: its `plan` event (`report::json`) with fingerprints.
fn host_entry(key: &Key, p: &Prepared, plan: &HostPlan) -> Result<HostEntry, MakeError> {
    let host = || p.host.name.clone();
    let probed = plan
        .probed
        .as_ref()
        .ok_or_else(|| MakeError::NoFingerprints { host: host() })?;
    let desired = desired(key, p);
    if probed.steps.len() != plan.steps.len() || desired.len() != plan.steps.len() {
        return Err(MakeError::StepsMismatch { host: host() });
    }
    let mut v = plan.event(&p.host.name);
    let m = v.as_object_mut().expect("an object");
    m.remove("event");
    m.insert("address".into(), p.host.address.clone().into());
    m.insert("facts".into(), probed.facts.clone().into());
    if let Some(steps) = m.get_mut("steps").and_then(|s| s.as_array_mut()) {
        for ((s, d), pr) in steps.iter_mut().zip(&desired).zip(&probed.steps) {
            let s = s.as_object_mut().expect("an object");
            s.insert("desired".into(), d.clone().into());
            s.insert("probed".into(), pr.clone().into());
        }
    }
    serde_json::from_value(v).map_err(|source| MakeError::Entry {
        host: host(),
        source,
    })
}

impl PlanFile {
    /// The plan of a run that planned every host (a failed or unreachable host: no plan).
    pub(crate) fn new(
        key: &Key,
        inputs: Inputs,
        prepared: &[Prepared],
        outcomes: &[HostOutcome],
    ) -> Result<Self, MakeError> {
        let mut hosts = Vec::new();
        let mut missing = Vec::new();
        for p in prepared {
            let o = outcomes.iter().find(|o| o.name == p.host.name);
            match o.and_then(|o| o.plan.as_ref().filter(|_| o.state != HostState::Failed)) {
                Some(plan) => hosts.push(host_entry(key, p, plan)?),
                None => missing.push(p.host.name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(MakeError::NotPlanned { hosts: missing });
        }
        Ok(Self {
            format: FORMAT.into(),
            version: VERSION,
            tool: crate::version::VERSION.into(),
            fingerprint_key: key.to_hex(),
            inputs,
            hosts,
        })
    }

    /// The key of its fingerprints.
    pub(crate) fn key(&self) -> Result<Key, ReadError> {
        Key::from_hex(&self.fingerprint_key).ok_or(ReadError::BadKey)
    }

    /// Parses a plan file's text; checks its format, version and the build that made it.
    pub(crate) fn parse(text: &str) -> Result<Self, ReadError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|source| ReadError::NotJson { source })?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(ReadError::NotAPlan);
        }
        match v.get("version").and_then(serde_json::Value::as_u64) {
            Some(n) if n == u64::from(VERSION) => {}
            Some(version) => return Err(ReadError::Version { version }),
            None => return Err(ReadError::NoVersion),
        }
        let f: PlanFile =
            serde_json::from_value(v).map_err(|source| ReadError::Shape { source })?;
        if f.tool != crate::version::VERSION {
            return Err(ReadError::OtherBuild { tool: f.tool });
        }
        f.key()?;
        if let Some(h) = f.hosts.iter().find(|h| h.steps.is_empty() && h.changes > 0) {
            return Err(ReadError::ChangesWithoutSteps {
                host: h.host.clone(),
            });
        }
        Ok(f)
    }

    /// Reads a plan file.
    pub(crate) fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("--plan {}: cannot read it: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::Usage(format!("--plan {}: {e}", path.display())))
    }

    /// Writes the plan to `path` atomically (a temporary file beside it, renamed), mode 0600.
    pub(crate) fn write(&self, path: &Path) -> Result<(), Error> {
        let io = |e: std::io::Error| {
            Error::Io(format!(
                "--out {}: cannot write the plan: {e}",
                path.display()
            ))
        };
        let text = serde_json::to_string_pretty(self).expect("a plan serializes") + "\n";
        write_atomically(path, text.as_bytes()).map_err(io)
    }

    /// Why this plan cannot be applied with these inputs and hosts (every reason), or Ok.
    /// `prepared` are the hosts this apply selected, with their steps rendered offline.
    pub(crate) fn check_inputs(
        &self,
        key: &Key,
        now: &Inputs,
        prepared: &[Prepared],
    ) -> Result<(), Vec<String>> {
        let mut why = Vec::new();
        let was = &self.inputs;
        self.check_hosts(was, now, prepared, &mut why);
        changed_inputs(was, now, &mut why);
        self.check_steps(key, prepared, &mut why);
        if why.is_empty() { Ok(()) } else { Err(why) }
    }

    /// The hosts this apply selects are the plan's.
    fn check_hosts(
        &self,
        was: &Inputs,
        now: &Inputs,
        prepared: &[Prepared],
        why: &mut Vec<String>,
    ) {
        let limit = |l: &Option<String>| {
            l.as_ref()
                .map_or_else(|| "no --limit".to_string(), |l| format!("--limit '{l}'"))
        };
        let planned: Vec<&str> = self.hosts.iter().map(|h| h.host.as_str()).collect();
        let selected: Vec<&str> = prepared.iter().map(|p| p.host.name.as_str()).collect();
        let mut a = planned.clone();
        let mut b = selected.clone();
        a.sort_unstable();
        b.sort_unstable();
        if a != b {
            why.push(format!(
                "the plan is for host(s) {} ({}); this apply selects {} ({})",
                planned.join(", "),
                limit(&was.limit),
                selected.join(", "),
                limit(&now.limit)
            ));
        }
    }

    /// Each host's address, step names and desired states are the plan's.
    fn check_steps(&self, key: &Key, prepared: &[Prepared], why: &mut Vec<String>) {
        for p in prepared {
            let Some(h) = self.hosts.iter().find(|h| h.host == p.host.name) else {
                continue;
            };
            if h.address != p.host.address {
                why.push(format!(
                    "host {}: its address is {} now, the plan was made for {}",
                    h.host, p.host.address, h.address
                ));
            }
            let now_desired = desired(key, p);
            if now_desired.len() != h.steps.len() {
                why.push(format!(
                    "host {}: {} steps now, {} in the plan",
                    h.host,
                    now_desired.len(),
                    h.steps.len()
                ));
                continue;
            }
            for ((s, d), ps) in h.steps.iter().zip(&now_desired).zip(&p.steps) {
                if s.name != ps.step.name {
                    why.push(format!(
                        "host {}: step `{}` is `{}` in the plan",
                        h.host, ps.step.name, s.name
                    ));
                } else if &s.desired != d {
                    why.push(format!(
                        "host {}, step `{}`: its desired state changed (a template, file or variable it uses)",
                        h.host, s.name
                    ));
                }
            }
        }
    }

    /// Why a host's state drifted since the plan (the steps, and what), or Ok when the plan
    /// made now is the one saved: same facts, same probe answers, same actions, same pending
    /// handlers. `plan` is the host's plan made now, with fingerprints.
    pub(crate) fn check_host(&self, host: &str, plan: &HostPlan) -> Result<(), DriftError> {
        let Some(saved) = self.hosts.iter().find(|h| h.host == host) else {
            return Err(DriftError::NotInPlan { host: host.into() });
        };
        let Some(now) = &plan.probed else {
            return Err(DriftError::NoFingerprints);
        };
        let mut drifted = Vec::new();
        if saved.facts != now.facts {
            drifted.push("the host's facts (OS, architecture, init, Docker)".to_string());
        }
        for (i, s) in saved.steps.iter().enumerate() {
            let (Some(p), Some(step)) = (now.steps.get(i), plan.steps.get(i)) else {
                drifted.push(format!("step `{}` (missing now)", s.name));
                continue;
            };
            let action = step.change.action.word();
            if &s.probed != p {
                drifted.push(format!(
                    "step `{}` (its probed state changed; it would now: {action})",
                    s.name
                ));
            } else if s.action != action {
                drifted.push(format!(
                    "step `{}` (it would now: {action}; the plan said: {})",
                    s.name, s.action
                ));
            }
        }
        if saved.pending_handlers != plan.pending_handlers {
            drifted.push(format!(
                "the pending handlers ({} now, {} in the plan)",
                list(&plan.pending_handlers),
                list(&saved.pending_handlers)
            ));
        }
        if drifted.is_empty() {
            Ok(())
        } else {
            Err(DriftError::Changed { what: drifted })
        }
    }
}

/// What changed in the inputs since the plan: inventory, playbook, selection, task, extra
/// variables, operator secrets.
fn changed_inputs(was: &Inputs, now: &Inputs, why: &mut Vec<String>) {
    if was.inventory_fingerprint != now.inventory_fingerprint {
        why.push(format!(
            "the inventory changed (the plan was made from {}, this apply reads {})",
            was.inventory, now.inventory
        ));
    }
    if was.playbook_fingerprint != now.playbook_fingerprint {
        why.push(format!(
            "the playbook changed (the plan was made from {}, this apply reads {})",
            was.playbook, now.playbook
        ));
    }
    if was.steps != now.steps {
        let t = |t: &Option<String>| t.clone().unwrap_or_else(|| "every step".to_string());
        why.push(format!(
            "the plan was made for {}, this apply selects {}",
            t(&was.steps),
            t(&now.steps)
        ));
    }
    if was.task != now.task {
        let t = |t: &Option<String>| {
            t.as_ref()
                .map_or_else(|| "no --task".to_string(), |t| format!("--task {t}"))
        };
        why.push(format!(
            "the plan was made with {}, this apply has {}",
            t(&was.task),
            t(&now.task)
        ));
    }
    if was.extra_vars_fingerprint != now.extra_vars_fingerprint {
        let e = |v: &[String]| {
            if v.is_empty() {
                "no -e".to_string()
            } else {
                format!("-e {}", v.join(", "))
            }
        };
        why.push(format!(
            "the extra variables differ (the plan was made with {}; this apply has {}; values are compared, not shown)",
            e(&was.extra_vars),
            e(&now.extra_vars)
        ));
    }
    for (name, d) in &was.operator_secrets {
        match now.operator_secrets.get(name) {
            Some(n) if n == d => {}
            Some(_) => why.push(format!("operator secret `{name}` has another value")),
            None => why.push(format!("operator secret `{name}` is not used any more")),
        }
    }
    for name in now.operator_secrets.keys() {
        if !was.operator_secrets.contains_key(name) {
            why.push(format!("operator secret `{name}` is new"));
        }
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Writes `data` to `path` through a new 0600 temporary file in the same directory, flushed
/// to disk and renamed over `path`: a reader sees the old file or the new one, never a part.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = crate::error::base_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?
        .to_string_lossy()
        .into_owned();
    let mut n = 0u32;
    let (tmp, mut f) = loop {
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    };
    let res = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res?;
    // The rename itself reaches the disk with the directory.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::{HostFacts, Observed, PathState, SecretState};
    use crate::plan::{Action, Change, StepPlan};
    use crate::resource::file;
    use base64::Engine;

    const API_KEY: &str = "hunter2-operator-key";
    const DB_PASSWORD: &str = "s3cret-db-password";

    /// An inventory of two hosts and a playbook with an operator secret, a `secret` step, a
    /// template that uses both, and a plain file; in a temporary directory.
    struct Site {
        dir: tempfile::TempDir,
    }

    impl Site {
        fn new() -> Site {
            let dir = tempfile::tempdir().unwrap();
            let w = |rel: &str, text: &str| {
                let p = dir.path().join(rel);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, text).unwrap();
            };
            w(
                "inventory.toml",
                "playbook = \"playbook.toml\"\n[hosts.h1]\naddress = \"127.0.0.1\"\n[hosts.h2]\naddress = \"127.0.0.2\"\n",
            );
            w(
                "playbook.toml",
                r#"name = "t"
operator_secrets = ["CLAW_TEST_SAVED_PLAN_API_KEY"]
operator_secrets_file = "secrets.env"

[vars]
who = "world"

[[steps]]
name = "db password"
kind = "secret"
secret = "db_password"
path = "/etc/app/db_password"

[[steps]]
name = "env"
kind = "template"
path = "/etc/app/.env"
src = "env.tera"

[[steps]]
name = "motd"
kind = "file"
path = "/etc/motd"
content = "hello {{ who }}\n"
"#,
            );
            w(
                "secrets.env",
                &format!("CLAW_TEST_SAVED_PLAN_API_KEY={API_KEY}\n"),
            );
            w(
                "templates/env.tera",
                "API_KEY={{ secrets.CLAW_TEST_SAVED_PLAN_API_KEY }}\nDB={{ secrets.db_password }}\n",
            );
            Site { dir }
        }

        fn path(&self, rel: &str) -> std::path::PathBuf {
            self.dir.path().join(rel)
        }

        fn write(&self, rel: &str, text: &str) {
            std::fs::write(self.path(rel), text).unwrap();
        }

        /// Prepared hosts and the inputs, as `plan`/`apply` compute them.
        fn prepare(
            &self,
            key: &Key,
            limit: Option<&str>,
            extra: &[(String, String)],
        ) -> (Vec<Prepared>, Inputs) {
            let inv_path = self.path("inventory.toml");
            let inv = crate::inventory::Inventory::load_with(
                &inv_path,
                &crate::inventory::SshConfigChoice::Off,
            )
            .unwrap();
            let pb = crate::playbook::Playbook::load(&self.path("playbook.toml")).unwrap();
            let hosts = inv.select(limit.unwrap_or("all")).unwrap();
            let prepared = crate::run::prepare(&inv, &pb, &hosts, extra).unwrap();
            let sel = Selection {
                inventory: &inv_path,
                playbook: &pb,
                limit,
                steps: None,
                extra,
            };
            let inputs = inputs(key, &sel, &prepared[0].playbook.operator_secrets);
            (prepared, inputs)
        }
    }

    fn file_state(content: &str) -> Observed {
        Observed::Path(PathState::File {
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
            uid: 0,
            gid: 0,
            size: content.len() as u64,
            sha256: file::sha256_hex(content.as_bytes()),
        })
    }

    fn secret_state(value: &str) -> Observed {
        Observed::Secret(SecretState::Present {
            value: Secret::new(value),
            mode: 0o600,
            owner: "root".into(),
            group: "root".into(),
        })
    }

    /// What a host's probe answered: the secret, the .env file and the motd.
    fn answers(db: &str, motd: &str) -> Vec<Option<Vec<Observed>>> {
        vec![
            Some(vec![secret_state(db)]),
            Some(vec![file_state(&format!("API_KEY={API_KEY}\nDB={db}\n"))]),
            Some(vec![file_state(motd)]),
        ]
    }

    /// A host's plan as the runner makes it: the env file is up to date, the motd changes.
    fn host_plan(key: &Key, observed: &[Option<Vec<Observed>>]) -> HostPlan {
        let step = |name: &str, kind: &str, change: Change| StepPlan {
            name: name.into(),
            kind: kind.into(),
            makes_watchers_stale: false,
            change,
            notify: vec![],
            output: None,
            not_here: false,
        };
        let mut motd = Change::new(Action::Update, "/etc/motd", "content", "true".into());
        motd.details = vec!["content".into()];
        HostPlan {
            steps: vec![
                step(
                    "db password",
                    "secret",
                    Change::noop("/etc/app/db_password (db_password)", "exists"),
                ),
                step(
                    "env",
                    "template",
                    Change::noop("/etc/app/.env", "up to date"),
                ),
                step("motd", "file", motd),
            ],
            pending_handlers: vec![],
            probed: Some(probed(key, &HostFacts::placeholder(), observed, &[])),
        }
    }

    fn outcome(name: &str, plan: HostPlan) -> HostOutcome {
        let mut o = HostOutcome::new(name.into(), String::new());
        o.state = HostState::Changed;
        o.plan = Some(plan);
        o
    }

    fn plan_file(site: &Site, key: &Key) -> PlanFile {
        let (prepared, inputs) = site.prepare(key, None, &[]);
        let outcomes = vec![
            outcome("h1", host_plan(key, &answers(DB_PASSWORD, "old\n"))),
            outcome("h2", host_plan(key, &answers(DB_PASSWORD, "old\n"))),
        ];
        PlanFile::new(key, inputs, &prepared, &outcomes).unwrap()
    }

    #[test]
    fn a_plan_file_round_trips_and_is_written_0600_atomically() {
        let site = Site::new();
        let key = Key::random().unwrap();
        let plan = plan_file(&site, &key);
        assert_eq!(plan.hosts.len(), 2);
        let h1 = &plan.hosts[0];
        assert_eq!(
            (h1.host.as_str(), h1.address.as_str(), h1.changes),
            ("h1", "127.0.0.1", 1)
        );
        let names: Vec<&str> = h1.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db password", "env", "motd"]);
        assert_eq!(h1.steps[2].action, "update");
        assert_eq!(h1.steps[2].target, "/etc/motd");

        let out = site.path("saved.plan");
        std::fs::write(&out, "an older plan, world-readable").unwrap();
        plan.write(&out).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = PlanFile::read(&out).unwrap();
        assert_eq!(back, plan);
        assert_eq!(back.key().unwrap().to_hex(), key.to_hex());
        // Only the plan is left in the directory: no temporary file.
        let leftovers: Vec<String> = std::fs::read_dir(site.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // An unwritable place: an error naming the file, the old plan kept.
        let err = plan
            .write(&site.path("missing-dir/saved.plan"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing-dir/saved.plan"), "{err}");
    }

    #[test]
    fn fingerprints_are_stable_keyed_and_change_with_what_they_cover() {
        let key = Key::random().unwrap();
        let facts = HostFacts::placeholder();
        let a = probed(&key, &facts, &answers(DB_PASSWORD, "old\n"), &[]);
        assert_eq!(a, probed(&key, &facts, &answers(DB_PASSWORD, "old\n"), &[]));
        assert_eq!(a.steps.len(), 3);
        assert!(a.steps.iter().all(|s| s.len() == 64));
        // Another key: unrelated fingerprints for the same state.
        let other = probed(
            &Key::random().unwrap(),
            &facts,
            &answers(DB_PASSWORD, "old\n"),
            &[],
        );
        assert_ne!(a.facts, other.facts);
        assert!(a.steps.iter().zip(&other.steps).all(|(x, y)| x != y));
        // A changed file changes its step only.
        let b = probed(&key, &facts, &answers(DB_PASSWORD, "edited\n"), &[]);
        assert_eq!(
            (a.steps[0] == b.steps[0], a.steps[1] == b.steps[1]),
            (true, true)
        );
        assert_ne!(a.steps[2], b.steps[2]);
        // A secret rewritten on the host changes its step (and the file holding it).
        let c = probed(&key, &facts, &answers("another-password", "old\n"), &[]);
        assert_ne!(a.steps[0], c.steps[0]);
        assert_ne!(a.steps[1], c.steps[1]);
        assert_eq!(a.steps[2], c.steps[2]);
        // Facts.
        let mut f2 = HostFacts::placeholder();
        f2.docker = !f2.docker;
        assert_ne!(
            a.facts,
            probed(&key, &f2, &answers(DB_PASSWORD, "old\n"), &[]).facts
        );
        // Not probed and probed with no answer differ; parts are length-prefixed.
        let none = probed(&key, &facts, &[None, Some(vec![])], &[]);
        assert_ne!(none.steps[0], none.steps[1]);
        assert_ne!(key.digest(&[b"ab", b"c"]), key.digest(&[b"a", b"bc"]));
        // The desired fingerprints of the same inputs are the same in two preparations.
        let site = Site::new();
        let (p1, i1) = site.prepare(&key, None, &[]);
        let (p2, i2) = site.prepare(&key, None, &[]);
        assert_eq!(i1, i2);
        assert_eq!(desired(&key, &p1[0]), desired(&key, &p2[0]));
    }

    #[test]
    fn bad_files_other_versions_and_other_builds_are_refused() {
        let site = Site::new();
        let key = Key::random().unwrap();
        let plan = plan_file(&site, &key);
        let text = serde_json::to_value(&plan).unwrap();
        let with = |k: &str, v: serde_json::Value| {
            let mut t = text.clone();
            t[k] = v;
            PlanFile::parse(&t.to_string()).unwrap_err().to_string()
        };
        let e = with("version", 2.into());
        assert!(e.contains("plan format version 2 is not supported"), "{e}");
        let e = with("format", "something else".into());
        assert!(e.contains("not a saved plan"), "{e}");
        let e = with("tool", "0.0.1 (commit 000000000000)".into());
        assert!(e.contains("made by claw-provision 0.0.1"), "{e}");
        let e = with("fingerprint_key", "abc".into());
        assert!(e.contains("fingerprint_key"), "{e}");
        let e = PlanFile::parse("{ not json").unwrap_err().to_string();
        assert!(e.contains("not a saved plan"), "{e}");
        let e = PlanFile::read(&site.path("none.plan"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.plan") && e.contains("cannot read"), "{e}");
    }

    #[test]
    fn other_inputs_are_refused_naming_what_changed() {
        let site = Site::new();
        let key = Key::random().unwrap();
        let plan = plan_file(&site, &key);
        let check = |limit: Option<&str>, extra: &[(String, String)]| {
            let (prepared, now) = site.prepare(&key, limit, extra);
            plan.check_inputs(&key, &now, &prepared)
        };
        assert_eq!(check(None, &[]), Ok(()));
        // Another step selection (--tags, --skip-tags, --step).
        let (prepared, mut now) = site.prepare(&key, None, &[]);
        now.steps = Some("--tags web".into());
        let why = plan.check_inputs(&key, &now, &prepared).unwrap_err();
        assert!(
            why.iter()
                .any(|w| w.contains("made for every step, this apply selects --tags web")),
            "{why:?}"
        );
        // Other hosts.
        let why = check(Some("h1"), &[]).unwrap_err();
        assert!(
            why[0].contains(
                "the plan is for host(s) h1, h2 (no --limit); this apply selects h1 (--limit 'h1')"
            ),
            "{why:?}"
        );
        // Extra variables: named, their values never shown.
        let why = check(None, &[("who".into(), "the-new-value".into())]).unwrap_err();
        assert!(why.iter().any(|w| w.contains("-e who")), "{why:?}");
        assert!(
            why.iter()
                .any(|w| w.contains("step `motd`: its desired state changed")),
            "{why:?}"
        );
        assert!(!why.join("\n").contains("the-new-value"));
        // A template: the steps that use it.
        site.write(
            "templates/env.tera",
            "API_KEY={{ secrets.CLAW_TEST_SAVED_PLAN_API_KEY }}\nDB={{ secrets.db_password }}\nNEW=1\n",
        );
        let why = check(None, &[]).unwrap_err();
        assert_eq!(
            why,
            [
                "host h1, step `env`: its desired state changed (a template, file or variable it uses)",
                "host h2, step `env`: its desired state changed (a template, file or variable it uses)",
            ]
        );
        // The playbook, and an operator secret (never shown).
        let pb = std::fs::read_to_string(site.path("playbook.toml")).unwrap();
        site.write("playbook.toml", &pb.replace("world", "planet"));
        site.write("secrets.env", "CLAW_TEST_SAVED_PLAN_API_KEY=rotated-key\n");
        let why = check(None, &[]).unwrap_err().join("\n");
        assert!(why.contains("the playbook changed"), "{why}");
        assert!(
            why.contains("operator secret `CLAW_TEST_SAVED_PLAN_API_KEY` has another value"),
            "{why}"
        );
        assert!(
            !why.contains("rotated-key") && !why.contains(API_KEY),
            "{why}"
        );
        // The inventory.
        let inv = std::fs::read_to_string(site.path("inventory.toml")).unwrap();
        site.write("inventory.toml", &inv.replace("127.0.0.2", "127.0.0.3"));
        let why = check(None, &[]).unwrap_err().join("\n");
        assert!(why.contains("the inventory changed"), "{why}");
        assert!(
            why.contains("host h2: its address is 127.0.0.3 now, the plan was made for 127.0.0.2"),
            "{why}"
        );
    }

    #[test]
    fn drift_names_the_steps_whose_probed_state_changed() {
        let site = Site::new();
        let key = Key::random().unwrap();
        let plan = plan_file(&site, &key);
        assert_eq!(
            plan.check_host("h1", &host_plan(&key, &answers(DB_PASSWORD, "old\n"))),
            Ok(())
        );
        let e = plan
            .check_host("h1", &host_plan(&key, &answers(DB_PASSWORD, "edited\n")))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the host changed since the plan: step `motd` (its probed state changed; it would now: update); nothing was changed on it: plan again"
        );
        // A secret rewritten on the host: its step and the file that holds it, no value shown.
        let e = plan
            .check_host("h2", &host_plan(&key, &answers("rotated", "old\n")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("step `db password`") && e.contains("step `env`"),
            "{e}"
        );
        assert!(!e.contains("rotated") && !e.contains(DB_PASSWORD), "{e}");
        // The same probe answers but another decision; pending handlers.
        let mut p = host_plan(&key, &answers(DB_PASSWORD, "old\n"));
        p.steps[2].change.action = Action::NoOp;
        p.pending_handlers = vec!["reload app".into()];
        let e = plan.check_host("h1", &p).unwrap_err().to_string();
        assert!(
            e.contains("step `motd` (it would now: ok; the plan said: update)"),
            "{e}"
        );
        assert!(
            e.contains("the pending handlers (reload app now, none in the plan)"),
            "{e}"
        );
        assert!(
            plan.check_host("h9", &p)
                .unwrap_err()
                .to_string()
                .contains("not in the plan")
        );
    }

    #[test]
    fn no_secret_value_nor_an_unkeyed_hash_of_one_is_in_the_file() {
        let site = Site::new();
        let key = Key::random().unwrap();
        let text = serde_json::to_string_pretty(&plan_file(&site, &key)).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for secret in [API_KEY, DB_PASSWORD] {
            let env = format!("API_KEY={API_KEY}\nDB={DB_PASSWORD}\n");
            for forbidden in [
                secret.to_string(),
                b64.encode(secret),
                b64url.encode(secret),
                hex::encode(secret),
                file::sha256_hex(secret.as_bytes()),
                file::sha256_hex(format!("{secret}\n").as_bytes()),
                // The .env file's content and its plain sha256.
                b64.encode(&env),
                file::sha256_hex(env.as_bytes()),
            ] {
                assert!(!text.contains(&forbidden), "{forbidden} in\n{text}");
            }
        }
        // Its fingerprints are all keyed: they change with the key.
        let again =
            serde_json::to_string_pretty(&plan_file(&site, &Key::random().unwrap())).unwrap();
        let fps = |t: &str| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            let mut out = vec![
                v["inputs"]["inventory_fingerprint"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                v["inputs"]["operator_secrets"]["CLAW_TEST_SAVED_PLAN_API_KEY"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ];
            for h in v["hosts"].as_array().unwrap() {
                out.push(h["facts"].as_str().unwrap().into());
                for s in h["steps"].as_array().unwrap() {
                    out.push(s["desired"].as_str().unwrap().into());
                    out.push(s["probed"].as_str().unwrap().into());
                }
            }
            out
        };
        for (a, b) in fps(&text).iter().zip(fps(&again)) {
            assert_ne!(*a, b);
        }
    }
}
