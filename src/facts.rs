//! `facts`: what the first probe of a plan learns about each selected host, as one JSON document.
//!
//! One connection and ONE exec per host: the host-facts part of the probe
//! ([`ProbeScript::host_report`]: OS, kernel, architecture, init, hostname, Docker and Compose,
//! plus memory, CPUs, uptime and free space). No playbook is read, so no step, no secret file and
//! no handler journal is probed: the output holds no secret value. A become password is masked
//! in error text like everywhere else.

use crate::fact::{HostFacts, ProbeScript, SystemFacts};
use crate::inventory::Host;
use crate::secret::Secret;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The directories whose free space is reported (each on the file system holding it).
pub(crate) const FREE_DIRS: [&str; 3] = ["/", "/tmp", "/var"];

/// Options of a `facts` run.
pub(crate) struct Options {
    pub forks: usize,
    pub become_password: Option<Secret>,
    /// The command's connection state (passphrases, key and known_hosts caches, jump chains,
    /// the host keys learned on the way).
    pub ssh: crate::ssh::Client,
}

/// What the probe of one host found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gathered {
    pub facts: HostFacts,
    pub system: SystemFacts,
    /// Free KiB per directory of [`FREE_DIRS`], in that order.
    pub free_kb: Vec<u64>,
    /// Why plan/apply would refuse this host (a missing tool; what a step kind needs is
    /// checked per step, `resource::kind::Need`).
    pub problems: Vec<String>,
}

/// Why a host has no facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub unreachable: bool,
    pub reason: String,
}

/// One host's answer.
#[derive(Debug, Clone)]
pub(crate) struct HostReport {
    pub name: String,
    pub address: String,
    pub outcome: Result<Gathered, Failure>,
    pub elapsed: Duration,
}

impl HostReport {
    /// `ok`, `unreachable` or `failed` (sudo, timeout, an unreadable answer).
    pub(crate) fn state(&self) -> &'static str {
        match &self.outcome {
            Ok(_) => "ok",
            Err(f) if f.unreachable => "unreachable",
            Err(_) => "failed",
        }
    }

    /// The host's entry in the document, its keys in a fixed order (state first).
    pub(crate) fn entry(&self) -> Entry<'_> {
        let (error, facts, resources, problems) = match &self.outcome {
            Ok(g) => (
                None,
                Some(g.facts.to_json()),
                Some(Resources {
                    cpus: g.system.cpus,
                    mem_total_kb: g.system.mem_total_kb,
                    mem_available_kb: g.system.mem_available_kb,
                    uptime_s: g.system.uptime_s,
                    free_kb: FREE_DIRS
                        .iter()
                        .copied()
                        .zip(g.free_kb.iter().copied())
                        .collect(),
                }),
                Some(g.problems.as_slice()),
            ),
            Err(f) => (Some(f.reason.as_str()), None, None, None),
        };
        Entry {
            state: self.state(),
            address: &self.address,
            error,
            facts,
            resources,
            problems,
            elapsed_ms: self.elapsed.as_millis() as u64,
        }
    }

    /// The entry as a JSON value (the tests read entries this way).
    #[cfg(test)]
    pub(crate) fn to_json(&self) -> Value {
        serde_json::to_value(self.entry()).expect("an entry serializes")
    }
}

/// One host's entry of the document.
#[derive(Debug, Serialize)]
pub(crate) struct Entry<'a> {
    pub state: &'static str,
    pub address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// Exactly the `facts` object of templates and `when`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<&'a [String]>,
    pub elapsed_ms: u64,
}

/// Memory, CPUs, uptime and free space of a host.
#[derive(Debug, Serialize)]
pub(crate) struct Resources {
    pub cpus: Option<u64>,
    pub mem_total_kb: Option<u64>,
    pub mem_available_kb: Option<u64>,
    pub uptime_s: Option<u64>,
    /// Free KiB of the file system holding each directory (an object, in this order).
    #[serde(serialize_with = "ordered_map")]
    pub free_kb: Vec<(&'static str, u64)>,
}

fn ordered_map<S: serde::Serializer>(v: &[(&'static str, u64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, x) in v {
        m.serialize_entry(k, x)?;
    }
    m.end()
}

/// The whole output: one JSON object keyed by host name, in the order of `reports` (inventory
/// order), pretty-printed, ending with a newline.
pub(crate) fn document(reports: &[HostReport]) -> String {
    if reports.is_empty() {
        return "{}\n".into();
    }
    let mut out = String::from("{\n");
    for (i, r) in reports.iter().enumerate() {
        let key = serde_json::to_string(&r.name).expect("a string serializes");
        let value = serde_json::to_string_pretty(&r.entry()).expect("an entry serializes");
        out.push_str("  ");
        out.push_str(&key);
        out.push_str(": ");
        out.push_str(&value.replace('\n', "\n  "));
        out.push_str(if i + 1 < reports.len() { ",\n" } else { "\n" });
    }
    out.push_str("}\n");
    // Host-supplied values: no control a terminal acts on (see `json_safe`).
    crate::report::terminal::json_safe(&out).into_owned()
}

/// Probes every host (up to `forks` at a time); the reports come back in the hosts' order.
pub(crate) async fn gather(hosts: Vec<Host>, opts: Options) -> Vec<HostReport> {
    let opts = Arc::new(opts);
    let sem = Arc::new(Semaphore::new(opts.forks.max(1)));
    let mut tasks = Vec::new();
    for h in hosts {
        let (opts, sem) = (opts.clone(), sem.clone());
        let (name, address) = (h.name.clone(), h.address.clone());
        let task = tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore is never closed");
            one_host(&h, &opts).await
        });
        tasks.push((name, address, task));
    }
    let mut out = Vec::new();
    for (name, address, task) in tasks {
        out.push(task.await.unwrap_or_else(|_| HostReport {
            name,
            address,
            outcome: Err(Failure {
                unreachable: false,
                reason:
                    "internal error: the host's task ended abnormally (bug, please report)".into(),
            }),
            elapsed: Duration::ZERO,
        }));
    }
    out
}

async fn one_host(h: &Host, opts: &Options) -> HostReport {
    let start = Instant::now();
    let outcome = async {
        let remote = crate::connect::connect(h, opts.become_password.clone(), &opts.ssh)
            .await
            .map_err(|e| Failure {
                unreachable: e.is_unreachable(),
                reason: format!("connect: {e}"),
            })?;
        let probe = ProbeScript::host_report(&FREE_DIRS);
        let res = remote.run(&probe.script(), b"", h.command_timeout).await;
        remote.session.close().await;
        let failed = |reason: String| Failure {
            unreachable: false,
            reason: format!("probe: {reason}"),
        };
        let out = res.map_err(|e| failed(e.to_string()))?;
        if !out.success() {
            return Err(failed(crate::remote::describe_failure(&out)));
        }
        let r = probe
            .parse(&String::from_utf8_lossy(&out.stdout))
            .map_err(|e| failed(e.to_string()))?;
        let facts = r.facts.unwrap_or_default();
        let problems = r.problems;
        Ok(Gathered {
            facts,
            system: r.system.unwrap_or_default(),
            free_kb: r.preflight.free_kb,
            problems,
        })
    }
    .await;
    let outcome = match (outcome, &opts.become_password) {
        (Err(mut f), Some(pw)) => {
            f.reason =
                String::from_utf8_lossy(&crate::adhoc::mask(f.reason.as_bytes(), pw.expose()))
                    .into();
            Err(f)
        }
        (o, _) => o,
    };
    HostReport {
        name: h.name.clone(),
        address: h.address.clone(),
        outcome,
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gathered() -> Gathered {
        let mut facts = HostFacts::default();
        for line in [
            "os\tdebian\t13\ttrixie\t",
            "arch\tx86_64\tamd64",
            "kernel\t6.12.57+deb13-amd64",
            "init\tsystemd",
            "hostname\tweb-1",
            "docker\tyes\t26.1.5",
            "compose\t2.26.1",
        ] {
            let f: Vec<&str> = line.split('\t').collect();
            facts.parse_line(f[0], &f[1..]).unwrap();
        }
        assert!(facts.complete());
        Gathered {
            facts,
            system: SystemFacts {
                mem_total_kb: Some(4_000_000),
                mem_available_kb: Some(3_000_000),
                cpus: Some(2),
                uptime_s: None,
            },
            free_kb: vec![100, 200, 300],
            problems: vec![],
        }
    }

    fn report(name: &str, outcome: Result<Gathered, Failure>) -> HostReport {
        HostReport {
            name: name.into(),
            address: "10.0.0.2".into(),
            outcome,
            elapsed: Duration::from_millis(42),
        }
    }

    #[test]
    fn a_host_entry() {
        let v = report("web-1", Ok(gathered())).to_json();
        assert_eq!(
            v,
            json!({
                "state": "ok",
                "address": "10.0.0.2",
                "facts": {
                    "os_id": "debian", "os_version": "13", "os_codename": "trixie", "os_like": "",
                    "arch": "x86_64", "deb_arch": "amd64", "init": "systemd", "hostname": "web-1",
                    "kernel": "6.12.57+deb13-amd64", "docker": true, "docker_version": "26.1.5",
                    "compose": true, "compose_version": "2.26.1",
                },
                "resources": {
                    "cpus": 2, "mem_total_kb": 4_000_000, "mem_available_kb": 3_000_000,
                    "uptime_s": null, "free_kb": {"/": 100, "/tmp": 200, "/var": 300},
                },
                "problems": [],
                "elapsed_ms": 42,
            })
        );
        let text = serde_json::to_string(&report("web-1", Ok(gathered())).entry()).unwrap();
        assert!(text.starts_with("{\"state\":\"ok\",\"address\":"), "{text}");
        assert!(
            text.contains("\"free_kb\":{\"/\":100,\"/tmp\":200,\"/var\":300}"),
            "{text}"
        );
        // `facts` is exactly what templates and `when` see as `facts.*`.
        assert_eq!(v["facts"], gathered().facts.to_json());
    }

    #[test]
    fn unreachable_and_failed_entries() {
        let u = report(
            "db",
            Err(Failure {
                unreachable: true,
                reason: "connect: connection refused".into(),
            }),
        );
        assert_eq!(
            u.to_json(),
            json!({"state": "unreachable", "address": "10.0.0.2",
                   "error": "connect: connection refused", "elapsed_ms": 42})
        );
        let f = report(
            "db",
            Err(Failure {
                unreachable: false,
                reason: "probe: become (sudo) failed".into(),
            }),
        );
        assert_eq!(f.to_json()["state"], "failed");
        assert!(f.to_json().get("facts").is_none());
    }

    #[test]
    fn one_document_in_inventory_order() {
        let reports = [
            report("zeta", Ok(gathered())),
            report(
                "alpha \"quoted\"",
                Err(Failure {
                    unreachable: true,
                    reason: "x".into(),
                }),
            ),
            report("mid", Ok(gathered())),
        ];
        let doc = document(&reports);
        assert!(doc.ends_with("}\n"));
        let v: Value = serde_json::from_str(&doc).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 3);
        assert_eq!(v["mid"]["facts"]["hostname"], "web-1");
        assert_eq!(v["alpha \"quoted\""]["state"], "unreachable");
        // Keys appear in the hosts' order, not sorted.
        let pos = |k: &str| {
            doc.find(&format!("\n  {}: ", serde_json::to_string(k).unwrap()))
                .unwrap()
        };
        assert!(pos("zeta") < pos("alpha \"quoted\"") && pos("alpha \"quoted\"") < pos("mid"));
        assert_eq!(document(&[]), "{}\n");
        assert_eq!(
            serde_json::from_str::<Value>(&document(&[])).unwrap(),
            json!({})
        );
    }
}
