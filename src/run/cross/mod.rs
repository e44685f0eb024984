//! Values that cross hosts: a `secret` step with `source = "GROUP"` is kept on the one host of
//! GROUP that runs it (generated there once) and written, with that value, on every other host
//! that runs it.
//!
//! Offline ([`link`], from `prepare`): every `source` is checked before any connection: the
//! group exists, exactly one of its hosts runs the step (with the stand-in facts), and no two
//! hosts wait for each other (a cycle). A source outside the run (`--limit`) is kept to be read
//! without being changed.
//!
//! At run time ([`exchange`]): the source publishes the value after its probe (or, when it
//! generates it, after its `secret` step wrote it), and the hosts that take it wait for it.

pub(super) mod ahead;
pub(super) mod exchange;
pub(super) mod take;
pub(super) mod taken;

use crate::error::ConfigError;
use crate::inventory::{Host, Inventory};
use crate::playbook::Playbook;
use crate::resource::Desired;

/// One `secret` step whose value crosses hosts.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The step's index in the playbook.
    pub step: usize,
    /// The secret's name (`secrets.NAME`).
    pub name: String,
    /// The host that keeps the value.
    pub source: String,
    /// The file that keeps it there.
    pub path: String,
    /// The hosts of this run that take it (every other host that runs the step).
    pub takers: Vec<String>,
}

/// The values of a run that cross hosts.
#[derive(Debug, Clone, Default)]
pub struct Links {
    pub shared: Vec<Shared>,
    /// The sources that are not hosts of this run (`--limit`): read, never changed.
    pub outside: Vec<Host>,
}

/// What a host is to a step whose value crosses hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role<'a> {
    /// It keeps the value.
    Source,
    /// It takes the value from this host.
    Taker(&'a str),
}

impl Links {
    /// What `host` is to step `step` (None: the step's value does not cross hosts there).
    pub(crate) fn role(&self, step: usize, host: &str) -> Option<Role<'_>> {
        let s = self.shared.iter().find(|s| s.step == step)?;
        if s.source == host {
            Some(Role::Source)
        } else if s.takers.iter().any(|t| t == host) {
            Some(Role::Taker(&s.source))
        } else {
            None
        }
    }

    /// Whether `host` is a source outside the run.
    pub(crate) fn is_outside(&self, host: &str) -> bool {
        self.outside.iter().any(|h| h.name == host)
    }
}

/// The group named by step `s`'s `source`, if it has one.
pub(super) fn source_group(step: &crate::playbook::Step) -> Option<&toml::Value> {
    if step.kind.provides_secret() {
        step.args.get("source")
    } else {
        None
    }
}

/// The hosts of the playbook (its `hosts`, without `--limit`) that are members of a group some
/// step names as its `source` (any host of the playbook when a `source` is a template) and are
/// not in `run`: they are prepared too, to find the sources.
pub(super) fn candidates<'a>(inv: &'a Inventory, pb: &Playbook, run: &[&Host]) -> Vec<&'a Host> {
    let sources: Vec<&str> = (pb.steps.iter())
        .filter_map(source_group)
        .filter_map(toml::Value::as_str)
        .collect();
    if sources.is_empty() {
        return Vec::new();
    }
    let templated = sources.iter().any(|g| g.contains("{{") || g.contains("{%"));
    let all = inv.select(&pb.hosts).unwrap_or_default();
    all.into_iter()
        .filter(|h| !run.iter().any(|r| r.name == h.name))
        .filter(|h| templated || sources.iter().any(|g| is_named(h, g)))
        .collect()
}

/// Whether `source` names host `h`: `all`, a group of it, or its name.
fn is_named(h: &Host, source: &str) -> bool {
    source == "all" || h.name == source || h.groups.iter().any(|x| x == source)
}

/// A prepared host as the linking sees it: the host, whether it is in the run, and per step
/// its desired state as rendered with the stand-ins (None: it does not run there).
pub(super) struct Seen<'a> {
    pub host: &'a Host,
    pub in_run: bool,
    pub steps: Vec<Option<&'a Desired>>,
}

/// Finds the source and takers of every `secret` step with a `source`, and checks them (see
/// the module's documentation); errors name the playbook's file, the step's line and the hosts.
pub(super) fn link(
    inv: &Inventory,
    pb: &Playbook,
    seen: &[Seen<'_>],
) -> Result<Links, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut links = Links::default();
    for (i, step) in pb.steps.iter().enumerate() {
        let Some(v) = source_group(step) else {
            continue;
        };
        let err = |msg: String| {
            ConfigError::new(
                &pb.path,
                step.line,
                0,
                format!("step `{}`: {msg}", step.name),
            )
        };
        if v.as_str().is_none() {
            errors.push(err(
                "`source` is the name of a group of the inventory".into()
            ));
            continue;
        }
        let group = match rendered_source(i, seen) {
            Ok(None) => continue,
            Ok(Some(g))
                if g == "all"
                    || inv.groups.contains_key(g)
                    || inv.hosts.iter().any(|h| h.name == g) =>
            {
                g
            }
            Ok(Some(g)) => {
                let known: Vec<&str> = inv.groups.keys().map(String::as_str).collect();
                errors.push(err(format!(
                    "`source = \"{g}\"`: the inventory has no group or host `{g}` (its groups: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
                continue;
            }
            Err(msg) => {
                errors.push(err(msg));
                continue;
            }
        };
        match shared(i, group, seen) {
            Ok(Some(s)) => links.shared.push(s),
            Ok(None) => {}
            Err(msg) => errors.push(err(msg)),
        }
    }
    if let Some((msg, secret)) = cycle(&links.shared) {
        let at = (links.shared.iter()).find(|s| s.name == secret);
        let s = &pb.steps[at.map_or(links.shared[0].step, |s| s.step)];
        let msg = format!("step `{}`: {msg}", s.name);
        errors.push(ConfigError::new(&pb.path, s.line, 0, msg));
    }
    for s in &links.shared {
        let outside = seen.iter().find(|x| x.host.name == s.source && !x.in_run);
        if let Some(x) = outside
            && !links.outside.iter().any(|h| h.name == s.source)
        {
            links.outside.push(x.host.clone());
        }
    }
    if errors.is_empty() {
        Ok(links)
    } else {
        Err(errors)
    }
}

/// The group step `i`'s `source` names, as rendered on the hosts that run it (None: on none, or
/// empty); it must be the same on all of them.
fn rendered_source<'a>(i: usize, seen: &[Seen<'a>]) -> Result<Option<&'a str>, String> {
    let mut found: Vec<(&str, &str)> = Vec::new();
    for x in seen {
        if let Some(Some(Desired::Secret(d))) = x.steps.get(i) {
            let g = d.source.as_deref().unwrap_or("");
            if !found.iter().any(|(v, _)| *v == g) {
                found.push((g, x.host.name.as_str()));
            }
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [(g, _)] => Ok((!g.is_empty()).then_some(*g)),
        [(a, ha), (b, hb), ..] => Err(format!(
            "`source` must name the same group on every host that runs the step: it is `{a}` on \
             {ha} and `{b}` on {hb}"
        )),
    }
}

/// Step `i` with `source = group`: its one source among the hosts that run it, and the hosts
/// of the run that take its value (None: no host of the run runs it).
fn shared(i: usize, group: &str, seen: &[Seen<'_>]) -> Result<Option<Shared>, String> {
    let runs = |x: &&Seen<'_>| x.steps.get(i).is_some_and(Option::is_some);
    let in_group = |x: &&Seen<'_>| is_named(x.host, group);
    let takers_and_source: Vec<&Seen<'_>> = seen.iter().filter(|x| x.in_run).filter(runs).collect();
    if takers_and_source.is_empty() {
        return Ok(None);
    }
    let sources: Vec<&Seen<'_>> = seen.iter().filter(runs).filter(in_group).collect();
    let source = match sources.as_slice() {
        [one] => one,
        [] => {
            return Err(format!(
                "`source = \"{group}\"`: no host of `{group}` runs this step (a host of the group, \
                 or the host of that name, in the playbook's `hosts` and whose `when` holds keeps \
                 the value)"
            ));
        }
        many => {
            let names: Vec<&str> = many.iter().map(|x| x.host.name.as_str()).collect();
            return Err(format!(
                "`source = \"{group}\"`: {} hosts of group `{group}` run this step ({}); the value \
                 is kept on one host: name a group of one host, or the host",
                many.len(),
                names.join(", ")
            ));
        }
    };
    let Some(Desired::Secret(d)) = source.steps[i] else {
        return Err("`source` is an argument of `secret` steps only".into());
    };
    Ok(Some(Shared {
        step: i,
        name: d.name.clone(),
        source: source.host.name.clone(),
        path: d.path.clone(),
        takers: takers_and_source
            .iter()
            .filter(|x| x.host.name != source.host.name)
            .map(|x| x.host.name.clone())
            .collect(),
    }))
}

/// A cycle between hosts (each waits for a value the next one keeps), described, with the
/// secret of its first hop; None if there is none.
fn cycle(shared: &[Shared]) -> Option<(String, String)> {
    // Edges taker -> source, each with the secret it waits for.
    let edges: Vec<(&str, &str, &str)> = shared
        .iter()
        .flat_map(|s| {
            s.takers
                .iter()
                .map(move |t| (t.as_str(), s.source.as_str(), s.name.as_str()))
        })
        .collect();
    let mut nodes: Vec<&str> = edges.iter().flat_map(|e| [e.0, e.1]).collect();
    nodes.sort_unstable();
    nodes.dedup();
    // Depth-first search from each node, in name order; a node on the current path again is
    // a cycle.
    fn visit<'a>(
        n: &'a str,
        edges: &[(&'a str, &'a str, &'a str)],
        path: &mut Vec<(&'a str, &'a str)>,
        done: &mut Vec<&'a str>,
    ) -> Option<Vec<(&'a str, &'a str)>> {
        if let Some(at) = path.iter().position(|(h, _)| *h == n) {
            return Some(path[at..].to_vec());
        }
        if done.contains(&n) {
            return None;
        }
        for (from, to, secret) in edges.iter().filter(|e| e.0 == n) {
            path.push((from, secret));
            if let Some(c) = visit(to, edges, path, done) {
                return Some(c);
            }
            path.pop();
        }
        done.push(n);
        None
    }
    let mut done = Vec::new();
    for n in &nodes {
        let mut path = Vec::new();
        if let Some(c) = visit(n, &edges, &mut path, &mut done) {
            let hops: Vec<String> = c
                .iter()
                .enumerate()
                .map(|(k, (h, secret))| {
                    let next = c[(k + 1) % c.len()].0;
                    format!("{h} takes `{secret}` from {next}")
                })
                .collect();
            let msg = format!(
                "the values of `secret` steps with a `source` go round in a cycle between hosts \
                 ({}): each would wait for the other; keep each value on a host that takes none \
                 from the hosts it gives to",
                hops.join(", ")
            );
            return Some((msg, c[0].1.to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(step: usize, name: &str, source: &str, takers: &[&str]) -> Shared {
        Shared {
            step,
            name: name.into(),
            source: source.into(),
            path: format!("/s/{name}"),
            takers: takers.iter().map(|t| (*t).to_string()).collect(),
        }
    }

    #[test]
    fn a_cycle_between_hosts_is_found_and_described() {
        assert_eq!(cycle(&[s(0, "a", "db", &["w1", "w2"])]), None);
        assert_eq!(
            cycle(&[s(0, "a", "db", &["w1"]), s(1, "b", "w1", &["w2"])]),
            None,
            "a chain is not a cycle"
        );
        let (c, first) = cycle(&[s(0, "a", "h1", &["h2"]), s(1, "b", "h2", &["h1"])]).unwrap();
        assert_eq!(first, "b");
        assert!(
            c.contains("h1 takes `b` from h2, h2 takes `a` from h1"),
            "{c}"
        );
        let (c, _) = cycle(&[
            s(0, "a", "h1", &["h2"]),
            s(1, "b", "h2", &["h3"]),
            s(2, "c", "h3", &["h1"]),
        ])
        .unwrap();
        assert!(c.contains("h1 takes `c` from h3"), "{c}");
    }

    /// An inventory (groups data: db, app: w1 w2) and a playbook of `steps`, prepared for the
    /// hosts `run` (None: all): the links, or the errors as text.
    fn prepared(steps: &str, run: Option<&[&str]>) -> Result<Links, String> {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inv.toml");
        std::fs::write(
            &inv,
            "[defaults]\nuser = \"u\"\n[groups.data]\n[groups.app]\n\
             [hosts.db]\ngroups = [\"data\"]\n[hosts.w1]\ngroups = [\"app\"]\n\
             [hosts.w2]\ngroups = [\"app\"]\n",
        )
        .unwrap();
        let inv = Inventory::load_with(&inv, &crate::inventory::SshConfigChoice::Off).unwrap();
        let pb = Playbook::parse(
            &dir.path().join("pb.toml"),
            &format!("name = \"p\"\n{steps}"),
        )
        .map_err(|e| e.to_string())?;
        let hosts: Vec<&Host> = (inv.hosts.iter())
            .filter(|h| run.is_none_or(|r| r.contains(&h.name.as_str())))
            .collect();
        let p = crate::run::prepare(&inv, &pb, &hosts, &[]).map_err(|e| e.to_string())?;
        Ok(p[0].playbook.links.clone())
    }

    fn secret_step(step: &str, secret: &str, source: &str, when: &str) -> String {
        format!(
            "[[steps]]\nname = \"{step}\"\nkind = \"secret\"\nsecret = \"{secret}\"\n\
             path = \"/s/{secret}\"\nsource = \"{source}\"\n{when}\n"
        )
    }

    #[test]
    fn the_source_and_takers_are_found_offline_and_a_source_outside_the_run_is_kept() {
        let l = prepared(&secret_step("pw", "pw", "data", ""), None).unwrap();
        assert_eq!(l.shared.len(), 1);
        assert_eq!((l.shared[0].source.as_str(), l.shared[0].step), ("db", 0));
        assert_eq!(l.shared[0].takers, ["w1", "w2"]);
        assert!(l.outside.is_empty());
        let l = prepared(&secret_step("pw", "pw", "data", ""), Some(&["w2"])).unwrap();
        assert_eq!(l.shared[0].takers, ["w2"]);
        assert_eq!(l.outside.len(), 1);
        assert!(l.is_outside("db") && !l.is_outside("w2"));
        // A step that runs nowhere in the run shares nothing.
        let never = secret_step("pw", "pw", "data", "when = \"false\"");
        assert!(prepared(&never, None).unwrap().shared.is_empty());
    }

    #[test]
    fn a_bad_source_is_an_error_naming_the_file_the_line_and_the_step() {
        let e = prepared(&secret_step("pw", "pw", "dta", ""), None).unwrap_err();
        assert!(
            e.contains("pb.toml:2:") && e.contains("step `pw`: `source = \"dta\"`: the inventory has no group or host `dta` (its groups: app, data)"),
            "{e}"
        );
        let e = prepared(&secret_step("pw", "pw", "app", ""), None).unwrap_err();
        assert!(
            e.contains("2 hosts of group `app` run this step (w1, w2)"),
            "{e}"
        );
        let only_app = secret_step("pw", "pw", "data", "when = \"host.name != 'db'\"");
        let e = prepared(&only_app, None).unwrap_err();
        assert!(e.contains("no host of `data` runs this step"), "{e}");
        // A host named as the source.
        let l = prepared(&secret_step("pw", "pw", "db", ""), Some(&["w1"])).unwrap();
        assert_eq!((l.shared[0].source.as_str(), l.outside.len()), ("db", 1));
        assert_eq!(l.shared[0].takers, ["w1"]);
        let e = prepared(
            &secret_step("pw", "pw", "data", "").replace("\"data\"", "3"),
            None,
        )
        .unwrap_err();
        assert!(
            e.contains(
                "pb.toml:2:1: step `pw` (secret): invalid type: integer `3`, expected a string"
            ),
            "{e}"
        );
    }

    /// A `source` may be a template (e.g. none in one topology, a group in another); it must
    /// render the same on every host that runs the step.
    #[test]
    fn a_templated_source_names_one_group_or_none() {
        let t = |tpl: &str| secret_step("pw", "pw", tpl, "");
        let l = prepared(&t("{% if 1 == 1 %}data{% endif %}"), None).unwrap();
        assert_eq!(l.shared[0].source, "db");
        let l = prepared(&t("{% if 1 == 2 %}data{% endif %}"), Some(&["w1"])).unwrap();
        assert!(
            l.shared.is_empty() && l.outside.is_empty(),
            "empty: no source"
        );
        let e = prepared(&t("{{ host.groups[0] }}"), None).unwrap_err();
        assert!(
            e.contains("`source` must name the same group on every host that runs the step: it is `data` on db and `app` on w1"),
            "{e}"
        );
        // Templated: the source outside the run is still found.
        let l = prepared(&t("{{ 'da' ~ 'ta' }}"), Some(&["w2"])).unwrap();
        assert_eq!((l.shared[0].source.as_str(), l.outside.len()), ("db", 1));
    }

    #[test]
    fn a_cycle_between_hosts_is_an_offline_error() {
        // db keeps `a` for w1 and w2; w1 keeps `b` for db (w2 does not run it).
        let b = "[[steps]]\nname = \"b\"\nkind = \"secret\"\nsecret = \"b\"\npath = \"/s/b\"\n\
                 source = \"app\"\nwhen = \"host.name != 'w2'\"\n";
        let e = prepared(&(secret_step("a", "a", "data", "") + b), None).unwrap_err();
        assert!(
            e.contains("pb.toml:9: step `b`: the values of")
                && e.contains("cycle between hosts (db takes `b` from w1, w1 takes `a` from db)"),
            "{e}"
        );
    }

    #[test]
    fn roles() {
        let l = Links {
            shared: vec![s(2, "pw", "db", &["w1"])],
            outside: vec![],
        };
        assert_eq!(l.role(2, "db"), Some(Role::Source));
        assert_eq!(l.role(2, "w1"), Some(Role::Taker("db")));
        assert_eq!(l.role(2, "w9"), None);
        assert_eq!(l.role(1, "db"), None);
    }
}
