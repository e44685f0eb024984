//! `inventory/prod.toml`, the inventory the README names for a real deployment (issue 17 item 4): it
//! lists every variable the claw-ai playbook reads (set, or commented out showing the default), and
//! `validate` accepts it with placeholder operator secrets. No lab: offline checks only.
//!
//! The variables the playbook reads are derived from its sources, not listed by hand: the keys of
//! its `[defaults]` plus every variable its strings (steps, handlers, tasks, `when` expressions) and
//! its templates (`templates/claw-ai/*.tera`) refer to, found by walking Tera's syntax tree. So a
//! variable added to the playbook or a template fails this test until prod.toml names it.

use crate::support::{claw, repo};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use tera::ast::{Expr, ExprVal, Node};

/// Roots of the template context that are not inventory variables: facts of the host, the host
/// and the inventory themselves, secrets (generated on the host or the operator's API keys), and
/// Tera's own names.
const NOT_VARIABLES: [&str; 5] = ["facts", "host", "inventory", "secrets", "loop"];

/// The names one template reads from its context, and the names it binds itself (`set`, `for`,
/// macro arguments).
#[derive(Default)]
struct Names {
    read: BTreeSet<String>,
    bound: BTreeSet<String>,
}

impl Names {
    /// `a.b[c].d["e"]`: reads `a`, and `c` (a subscript that is a name, not a literal).
    fn ident(&mut self, ident: &str) {
        let root_end = ident.find(['.', '[']).unwrap_or(ident.len());
        self.read.insert(ident[..root_end].to_string());
        let mut rest = &ident[root_end..];
        while let Some(open) = rest.find('[') {
            let close = rest[open..].find(']').map_or(rest.len(), |c| open + c);
            let inner = rest[open + 1..close].trim();
            let literal =
                inner.starts_with(['"', '\'']) || inner.starts_with(|c: char| c.is_ascii_digit());
            if !inner.is_empty() && !literal {
                self.ident(inner);
            }
            rest = &rest[(close + 1).min(rest.len())..];
        }
    }

    fn expr(&mut self, e: &Expr) {
        self.val(&e.val);
        for f in &e.filters {
            f.args.values().for_each(|a| self.expr(a));
        }
    }

    fn val(&mut self, v: &ExprVal) {
        match v {
            ExprVal::Ident(i) => self.ident(i),
            ExprVal::Math(m) => {
                self.expr(&m.lhs);
                self.expr(&m.rhs);
            }
            ExprVal::Logic(l) => {
                self.expr(&l.lhs);
                self.expr(&l.rhs);
            }
            ExprVal::In(i) => {
                self.expr(&i.lhs);
                self.expr(&i.rhs);
            }
            ExprVal::Test(t) => {
                self.ident(&t.ident);
                t.args.iter().for_each(|a| self.expr(a));
            }
            ExprVal::MacroCall(m) => m.args.values().for_each(|a| self.expr(a)),
            ExprVal::FunctionCall(f) => f.args.values().for_each(|a| self.expr(a)),
            ExprVal::Array(a) => a.iter().for_each(|e| self.expr(e)),
            ExprVal::StringConcat(s) => s.values.iter().for_each(|v| self.val(v)),
            ExprVal::String(_) | ExprVal::Int(_) | ExprVal::Float(_) | ExprVal::Bool(_) => {}
        }
    }

    fn nodes(&mut self, nodes: &[Node]) {
        for n in nodes {
            match n {
                Node::VariableBlock(_, e) => self.expr(e),
                Node::MacroDefinition(_, m, _) => {
                    self.bound.extend(m.args.keys().cloned());
                    m.args.values().flatten().for_each(|e| self.expr(e));
                    self.nodes(&m.body);
                }
                Node::Set(_, s) => {
                    self.bound.insert(s.key.clone());
                    self.expr(&s.value);
                }
                Node::FilterSection(_, f, _) => {
                    f.filter.args.values().for_each(|a| self.expr(a));
                    self.nodes(&f.body);
                }
                Node::Block(_, b, _) => self.nodes(&b.body),
                Node::Forloop(_, f, _) => {
                    self.bound.extend(f.key.iter().cloned());
                    self.bound.insert(f.value.clone());
                    self.expr(&f.container);
                    self.nodes(&f.body);
                    if let Some(b) = &f.empty_body {
                        self.nodes(b);
                    }
                }
                Node::If(i, _) => {
                    for (_, e, body) in &i.conditions {
                        self.expr(e);
                        self.nodes(body);
                    }
                    if let Some((_, b)) = &i.otherwise {
                        self.nodes(b);
                    }
                }
                Node::Super
                | Node::Text(_)
                | Node::Extends(..)
                | Node::Include(..)
                | Node::ImportMacro(..)
                | Node::Raw(..)
                | Node::Break(_)
                | Node::Continue(_)
                | Node::Comment(..) => {}
            }
        }
    }

    /// The variables read, less the template's own names and the context's non-variables.
    fn variables(self) -> BTreeSet<String> {
        (self.read.difference(&self.bound))
            .filter(|n| !NOT_VARIABLES.contains(&n.as_str()))
            .cloned()
            .collect()
    }
}

/// The variables a template source reads.
fn template_variables(name: &str, source: &str) -> BTreeSet<String> {
    let t = tera::Template::new(name, None, source)
        .unwrap_or_else(|e| panic!("{name}: not a Tera template: {e:?}"));
    let mut n = Names::default();
    n.nodes(&t.ast);
    n.variables()
}

/// Every string of a playbook value (a `when` is an expression, the rest are templates).
fn playbook_strings(key: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::String(s) if key == "when" => {
            out.push((key.into(), format!("{{% if {s} %}}{{% endif %}}")));
        }
        toml::Value::String(s) => out.push((key.into(), s.clone())),
        toml::Value::Array(a) => a.iter().for_each(|x| playbook_strings(key, x, out)),
        toml::Value::Table(t) => t.iter().for_each(|(k, x)| playbook_strings(k, x, out)),
        _ => {}
    }
}

/// The variables the claw-ai playbook reads: `(defaults, read-but-not-defaulted)`.
fn claw_ai_variables() -> (toml::Table, BTreeSet<String>) {
    let root = repo();
    let pb: toml::Table = toml::from_str(
        &std::fs::read_to_string(root.join("playbooks/claw-ai.toml")).expect("claw-ai playbook"),
    )
    .expect("claw-ai playbook is TOML");
    let defaults = pb["defaults"].as_table().expect("[defaults]").clone();
    let mut read = BTreeSet::new();
    let mut strings = Vec::new();
    for (k, v) in &pb {
        playbook_strings(k, v, &mut strings);
    }
    for (key, s) in &strings {
        read.extend(template_variables(&format!("playbook `{key}` = {s:?}"), s));
    }
    let dir = root.join("templates/claw-ai");
    let mut templates = 0;
    for e in std::fs::read_dir(&dir).expect("templates/claw-ai") {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "tera") {
            let src = std::fs::read_to_string(&p).unwrap();
            read.extend(template_variables(&p.display().to_string(), &src));
            templates += 1;
        }
    }
    assert!(
        templates >= 5,
        "only {templates} templates in {}",
        dir.display()
    );
    let extra = read
        .into_iter()
        .filter(|n| !defaults.contains_key(n))
        .collect();
    (defaults, extra)
}

/// The variables inventory/prod.toml names: set (in any `vars`) and commented out (`# name = value`
/// lines inside a `vars` table), with the text after `=` of the commented ones.
fn prod_names(path: &Path) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(path).expect("inventory/prod.toml");
    let inv: toml::Table = toml::from_str(&text).expect("inventory/prod.toml is TOML");
    let mut set = BTreeSet::new();
    let vars_of = |t: Option<&toml::Value>| -> Vec<String> {
        (t.and_then(|t| t.get("vars")).and_then(|v| v.as_table()))
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default()
    };
    set.extend(vars_of(inv.get("defaults")));
    for section in ["groups", "hosts"] {
        if let Some(t) = inv.get(section).and_then(|g| g.as_table()) {
            for v in t.values() {
                set.extend(vars_of(Some(v)));
            }
        }
    }
    let mut commented = BTreeMap::new();
    let mut in_vars = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_vars = l.trim_end_matches(']').ends_with(".vars");
            continue;
        }
        let Some(c) = l.strip_prefix('#') else {
            continue;
        };
        let c = c.trim_start();
        let Some((name, value)) = c.split_once('=') else {
            continue;
        };
        let name = name.trim();
        let is_name = !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if in_vars && is_name && !value.starts_with('=') {
            commented.insert(name.to_string(), value.trim().to_string());
        }
    }
    (set, commented)
}

#[test]
fn the_variable_scan_finds_reads_and_skips_the_templates_own_names() {
    let got = template_variables(
        "t",
        "{% set x = a | default(value=b) %}{% for i in items %}{{ i }}{{ loop.index }}{% endfor %}\
         {{ inventory.groups[grp] | length }}{{ m[\"lit\"] }}{% if c is defined and facts.init == 'x' %}\
         {{ throw(message='no ' ~ d) }}{% endif %}{% macro f(p) %}{{ p }}{{ e }}{% endmacro f %}\
         {{ self::f(p=g) }}{% raw %}{{ h }}{% endraw %}{{ x }}{{ secrets.k }}{{ host.name }}",
    );
    let want: BTreeSet<String> = ["a", "b", "items", "grp", "m", "c", "d", "e", "g"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
}

#[test]
fn prod_inventory_names_every_variable_the_claw_ai_playbook_reads() {
    let (defaults, extra) = claw_ai_variables();
    // The scan must find what is known to be read outside [defaults] (a scan that finds nothing
    // would pass everything).
    for n in [
        "tls_dir",
        "backend_repo",
        "deploy_key_src",
        "git_known_hosts",
        "docker_repo_url",
    ] {
        assert!(extra.contains(n), "the scan missed `{n}`: {extra:?}");
    }
    let prod = repo().join("inventory/prod.toml");
    let (set, commented) = prod_names(&prod);
    let named: BTreeSet<&String> = set.iter().chain(commented.keys()).collect();
    let missing: Vec<&String> = (defaults.keys().chain(&extra))
        .filter(|n| !named.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "inventory/prod.toml does not name these variables of playbooks/claw-ai.toml and \
         templates/claw-ai/ (set them, or add a commented `# name = default` line with what it does): {}",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Nothing stale: every name in prod.toml's vars is one the playbook reads.
    let unknown: Vec<&&String> = named
        .iter()
        .filter(|n| !defaults.contains_key(n.as_str()) && !extra.contains(n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "inventory/prod.toml names variables the claw-ai playbook does not read: {unknown:?}"
    );
    // A commented default shows the playbook's current default.
    let mut wrong = Vec::new();
    for (name, text) in &commented {
        let Some(default) = defaults.get(name) else {
            continue;
        };
        let shown: Result<toml::Table, _> = toml::from_str(&format!("v = {text}"));
        match shown {
            Ok(t) if &t["v"] == default => {}
            _ => wrong.push(format!("{name}: `{text}`, default {default}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "commented lines of inventory/prod.toml that do not show the playbook's default (mark examples `e.g.`):\n{}",
        wrong.join("\n")
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (tests/lab/lab.sh deps installs it)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// What CI runs too (scripts/test.sh): `validate inventory/prod.toml` with placeholder API keys, a
/// throwaway certificate and deploy key in place of the operator's files.
#[test]
fn prod_inventory_validates_with_placeholder_operator_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let tls = tmp.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    openssl(
        &tls,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=claw-ai.example.com",
            "-keyout",
            "privkey.pem",
            "-out",
            "fullchain.pem",
        ],
    );
    let key = tmp.path().join("deploy-key");
    std::fs::write(&key, "placeholder deploy key\n").unwrap();
    let inv = repo().join("inventory/prod.toml");
    let inv = inv.to_str().unwrap();
    let tls_dir = format!("tls_dir={}", tls.display());
    let deploy = format!("deploy_key_src={}", key.display());
    let secrets = [
        ("ZHIPUAI_API_KEY", "placeholder-zhipu-5c1e"),
        ("PINECONE_API_KEY", "placeholder-pinecone-77ad"),
    ];
    let r = claw(&["validate", inv, "-e", &tls_dir, "-e", &deploy], &secrets);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("ok: 1 hosts, playbook `claw-ai`"),
        "{}",
        r.stdout
    );
    for (_, v) in secrets {
        assert!(!r.stdout.contains(v) && !r.stderr.contains(v));
    }
    // Without the certificate the operator is told which file is missing, and nothing else runs.
    let r = claw(
        &[
            "validate",
            inv,
            "-e",
            &format!("tls_dir={}/none", tmp.path().display()),
            "-e",
            &deploy,
        ],
        &secrets,
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("none/fullchain.pem"), "{}", r.stderr);
}
