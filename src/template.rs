//! Rendering with Tera: template files, templated step arguments and `when` expressions.
//!
//! Undefined variables are errors (never rendered as empty text); errors name the template
//! file and the line where the variable is used.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A rendering problem, with the place it refers to when known.
#[derive(Debug, Clone)]
pub struct RenderError {
    pub file: Option<PathBuf>,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if self.line > 0 {
                write!(f, ":{}", self.line)?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.message)
    }
}

/// The innermost message of a Tera error chain, which carries the real cause.
fn tera_message(e: &tera::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    msg
}

fn missing_var_line(source: &str, msg: &str) -> usize {
    let Some(var) = msg
        .strip_prefix("Variable `")
        .and_then(|r| r.split('`').next())
    else {
        return 0;
    };
    let root = var.split(['.', '[']).next().unwrap_or(var);
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let uses = |line: &str| {
        (line.contains("{{") || line.contains("{%"))
            && line.match_indices(root).any(|(i, _)| {
                let before = i.checked_sub(1).map(|j| line.as_bytes()[j]);
                let after = line.as_bytes().get(i + root.len()).copied();
                !before.is_some_and(is_word) && !after.is_some_and(is_word)
            })
    };
    source.lines().position(uses).map_or(0, |i| i + 1)
}

/// A parsed template and the words of its tags (`{{ }}`, `{% %}`): a variable the template
/// uses is one of them.
struct Parsed {
    tera: tera::Tera,
    words: std::collections::HashSet<String>,
}

/// The identifier-like words inside the tags of `source` (not its text, where `$host` or a
/// comment may name anything; string literals in tags count too, which only over-includes).
fn tag_words(source: &str) -> std::collections::HashSet<String> {
    let mut words = std::collections::HashSet::new();
    let mut rest = source;
    while let Some(i) = rest.find(['{']) {
        rest = &rest[i..];
        let close = if rest.starts_with("{{") {
            "}}"
        } else if rest.starts_with("{%") {
            "%}"
        } else {
            rest = &rest[1..];
            continue;
        };
        let end = rest[2..].find(close).map_or(rest.len(), |j| j + 2);
        let tag = &rest[2..end];
        for w in tag.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                words.insert(w.to_string());
            }
        }
        rest = &rest[(end + 2).min(rest.len())..];
    }
    words
}

/// The Tera context of one render: only the top-level variables the template's tags name, so a
/// render does not copy the whole context (e.g. `inventory` with every host of a 200-host
/// fleet) for a one-word path.
fn context(p: &Parsed, ctx: &Map<String, Value>, overlay: &Map<String, Value>) -> tera::Context {
    let mut c = tera::Context::new();
    for (k, v) in ctx.iter().chain(overlay) {
        if p.words.contains(k) {
            c.insert(k.as_str(), v);
        }
    }
    c
}

/// Parsed templates, by name and source: each distinct template text of a run is parsed once,
/// however many hosts render it (parsing is most of the cost of a render).
fn parsed(name: &str, source: &str) -> Result<std::sync::Arc<Parsed>, tera::Error> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Cache = Mutex<HashMap<(String, String), Arc<Parsed>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (name.to_string(), source.to_string());
    if let Some(t) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(t.clone());
    }
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    tera.register_filter("shell_quote", shell_quote_filter);
    tera.add_raw_template(name, source)?;
    let p = Arc::new(Parsed {
        tera,
        words: tag_words(source),
    });
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= 4096 {
        c.clear(); // a bound, never reached by a playbook's own templates
    }
    c.insert(key, p.clone());
    Ok(p)
}

/// `{{ value | shell_quote }}`: quotes a value as one word for POSIX sh.
fn shell_quote_filter(
    v: &Value,
    _: &std::collections::HashMap<String, Value>,
) -> tera::Result<Value> {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(Value::String(crate::quote::quote(&s)))
}

/// Renders template text. `name` is used in errors.
pub fn render(name: &Path, source: &str, ctx: &Map<String, Value>) -> Result<String, RenderError> {
    render_with(name, source, ctx, &Map::new())
}

/// Renders template text with `ctx` and, over it, the variables of `overlay`.
pub fn render_with(
    name: &Path,
    source: &str,
    ctx: &Map<String, Value>,
    overlay: &Map<String, Value>,
) -> Result<String, RenderError> {
    let key = name.to_string_lossy();
    let err = |e: tera::Error| {
        let message = tera_message(&e);
        RenderError {
            file: Some(name.to_path_buf()),
            line: missing_var_line(source, &message),
            message,
        }
    };
    let p = parsed(&key, source).map_err(err)?;
    // The same template with the same values of the variables it names renders the same text:
    // e.g. an nginx.conf listing every backend of a 200-host inventory is rendered once, not
    // once per host. Not for text that uses `secrets` (kept out of the cache).
    let memo = memo_key(&key, source, &p, ctx, overlay);
    if let Some(k) = &memo
        && let Some(out) = memo_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(k)
    {
        return Ok(out.to_string());
    }
    let mut out = p
        .tera
        .render(&key, &context(&p, ctx, overlay))
        .map_err(err)?;
    // Tera sizes its buffer for the template, not the result: a path rendered from a short
    // string would keep kilobytes (per host, per argument) unless trimmed.
    out.shrink_to_fit();
    if let Some(k) = memo {
        let mut c = memo_cache().lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= 4096 {
            c.clear(); // a bound
        }
        c.insert(k, out.as_str().into());
    }
    Ok(out)
}

type MemoCache = std::sync::Mutex<std::collections::HashMap<[u8; 32], std::sync::Arc<str>>>;

fn memo_cache() -> &'static MemoCache {
    static CACHE: std::sync::OnceLock<MemoCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// sha256 of the template's name, its source and the variables [`context`] would give it;
/// None when those include `secrets`.
fn memo_key(
    name: &str,
    source: &str,
    p: &Parsed,
    ctx: &Map<String, Value>,
    overlay: &Map<String, Value>,
) -> Option<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [name, source] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for (k, v) in ctx.iter().chain(overlay) {
        if !p.words.contains(k) {
            continue;
        }
        if k == "secrets" {
            return None;
        }
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        serde_json::to_writer(&mut h, v).ok()?;
        h.update([0]);
    }
    Some(h.finalize().into())
}

/// Checks that template text parses (offline validation).
pub fn check_syntax(name: &Path, source: &str) -> Result<(), RenderError> {
    let mut tera = tera::Tera::default();
    tera.register_filter("shell_quote", shell_quote_filter);
    tera.add_raw_template(&name.to_string_lossy(), source)
        .map(|_| ())
        .map_err(|e| RenderError {
            file: Some(name.to_path_buf()),
            line: 0,
            message: tera_message(&e),
        })
}

/// Renders a templated string argument; plain strings are returned as they are.
pub fn render_str(s: &str, ctx: &Map<String, Value>) -> Result<String, String> {
    if !s.contains("{{") && !s.contains("{%") && !s.contains("{#") {
        return Ok(s.to_string());
    }
    render(Path::new("value"), s, ctx).map_err(|e| e.message)
}

/// Renders every string inside a TOML value.
pub fn render_value(v: &toml::Value, ctx: &Map<String, Value>) -> Result<toml::Value, String> {
    Ok(match v {
        toml::Value::String(s) => toml::Value::String(render_str(s, ctx)?),
        toml::Value::Array(a) => toml::Value::Array(
            a.iter()
                .map(|x| render_value(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, x)| Ok((k.clone(), render_value(x, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Evaluates a `when` expression (Tera syntax, e.g. `env == "prod" and host.name != "db-1"`).
pub fn eval_when(expr: &str, ctx: &Map<String, Value>) -> Result<bool, String> {
    let out = render(
        Path::new("when"),
        &format!("{{% if {expr} %}}true{{% else %}}false{{% endif %}}"),
        ctx,
    )
    .map_err(|e| format!("`when = {expr:?}`: {}", e.message))?;
    Ok(out == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Map<String, Value> {
        serde_json::json!({"app": "claw", "port": 8000, "env": "prod", "hosts": ["a", "b"]})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn renders() {
        let out = render(
            Path::new("t"),
            "app={{ app }}\n{% for h in hosts %}server {{ h }}:{{ port }};\n{% endfor %}",
            &ctx(),
        )
        .unwrap();
        assert_eq!(out, "app=claw\nserver a:8000;\nserver b:8000;\n");
    }

    #[test]
    fn no_html_escaping() {
        let c = serde_json::json!({"v": "<a & 'b'>"})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            render(Path::new("x.html"), "{{ v }}", &c).unwrap(),
            "<a & 'b'>"
        );
    }

    #[test]
    fn missing_variable_names_file_and_line() {
        let e = render(
            Path::new("templates/app.conf.tera"),
            "a\nb = {{ app }}\nc = {{ ap }}\n",
            &ctx(),
        )
        .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(
            e.to_string()
                .starts_with("templates/app.conf.tera:3: Variable `ap` not found"),
            "{e}"
        );
    }

    #[test]
    fn overlay_wins_and_unused_variables_are_not_needed() {
        let mut c = ctx();
        c.insert("big".into(), serde_json::json!({"a": [1, 2, 3]}));
        let mut o = Map::new();
        o.insert("app".into(), serde_json::json!("over"));
        let out = render_with(Path::new("t"), "{{ app }} {{ big.a | length }}", &c, &o).unwrap();
        assert_eq!(out, "over 3");
        // The same source again (parsed once, cached) with another context.
        c.insert("big".into(), serde_json::json!({"a": []}));
        let out = render_with(Path::new("t"), "{{ app }} {{ big.a | length }}", &c, &o).unwrap();
        assert_eq!(out, "over 0");
        // A variable that is not in the context is still an error.
        let e = render(Path::new("t"), "{{ nope }}", &c).unwrap_err();
        assert!(e.message.contains("nope"), "{e}");
    }

    #[test]
    fn memoised_renders_follow_the_values() {
        let mut c = ctx();
        let t = "{% for h in hosts %}{{ h }},{% endfor %}";
        assert_eq!(render(Path::new("m"), t, &c).unwrap(), "a,b,");
        c.insert("hosts".into(), serde_json::json!(["c"]));
        assert_eq!(render(Path::new("m"), t, &c).unwrap(), "c,");
        // Text that uses secrets is rendered, never cached.
        c.insert("secrets".into(), serde_json::json!({"k": "v1"}));
        let p = |s: &str| parsed("m", s).unwrap();
        let s = "{{ secrets.k }}";
        assert!(memo_key("m", s, &p(s), &c, &Map::new()).is_none());
        assert_eq!(render(Path::new("m"), "{{ secrets.k }}", &c).unwrap(), "v1");
        c.insert("secrets".into(), serde_json::json!({"k": "v2"}));
        assert_eq!(render(Path::new("m"), "{{ secrets.k }}", &c).unwrap(), "v2");
        // Values are told apart by key and by value boundaries.
        let mut d = Map::new();
        d.insert("ab".into(), serde_json::json!("c"));
        let mut e = Map::new();
        e.insert("a".into(), serde_json::json!("bc"));
        let s = "{{ ab }}{{ a }}";
        assert_ne!(
            memo_key("m", s, &p(s), &d, &Map::new()),
            memo_key("m", s, &p(s), &e, &Map::new())
        );
    }

    #[test]
    fn words_of_the_tags_only() {
        let w = tag_words(
            "$host {# host #} {{ a.b | f(x=c_1) }} x {% for h in hs %}{ {%endfor%} {{ \"s\" }} {{ unclosed",
        );
        let mut w: Vec<&str> = w.iter().map(String::as_str).collect();
        w.sort();
        assert_eq!(
            w,
            [
                "a", "b", "c_1", "endfor", "f", "for", "h", "hs", "in", "s", "unclosed", "x"
            ]
        );
    }

    #[test]
    fn when_expressions() {
        assert!(eval_when("env == 'prod'", &ctx()).unwrap());
        assert!(!eval_when("env == 'dev' or port > 9000", &ctx()).unwrap());
        assert!(eval_when("missing is defined", &ctx()).is_ok());
        assert!(eval_when("missing == 1", &ctx()).is_err());
    }

    #[test]
    fn shell_quote_filter_quotes() {
        let c = serde_json::json!({"v": "$(touch /tmp/x) '; echo"})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            render_str("echo {{ v | shell_quote }}", &c).unwrap(),
            "echo '$(touch /tmp/x) '\\''; echo'"
        );
    }

    #[test]
    fn render_str_leaves_plain_strings() {
        assert_eq!(render_str("/opt/$(x)", &ctx()).unwrap(), "/opt/$(x)");
        assert_eq!(render_str("/opt/{{ app }}", &ctx()).unwrap(), "/opt/claw");
    }
}
