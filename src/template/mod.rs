//! Rendering with Tera: template files, templated step arguments and `when` expressions.
//!
//! Undefined variables are errors (never rendered as empty text); errors name the template
//! file and the line where the variable is used.
//!
//! # Secret taint: which rendered text a secret flowed into
//!
//! Inside [`Renderer::track`], every render whose context can carry a secret (the template names
//! `secrets` or `__tera_context`, or a variable it uses holds a text that was itself rendered
//! from a secret, e.g. a template step's `vars`) is rendered three times: with the real
//! values, with each secret replaced by its marker `<secret:NAME>` ([`marker`]), and with each
//! replaced by a second, unrelated stand-in of another length and alphabet. The result is
//! **tainted** when either substitute rendering differs from the real one (or fails): then
//! some output depended on a secret value, through whatever Tera did with it (any filter,
//! `set`, a macro, a loop, a test, slicing, string concatenation, `__tera_context`). `track`
//! returns each tainted text with its display rendering (the marker version), which is what
//! every output shows instead of it (`run::Mask`), and the runner sends every script built
//! from a tainted text on stdin. Why this construction and not a static reading of the
//! template: data flow through Tera expressions, filters and macros is what Tera itself
//! computes, so letting Tera compute it with other values is exact where a reading would have
//! to model every filter; and an output that does not change when every secret is replaced
//! by two unrelated values does not depend on them (a coincidence would need both stand-ins to
//! hit it, e.g. a test of the value's exact length against both). Text the template holds
//! from elsewhere cannot carry a secret: the one Tera instance of a render holds only that
//! template (`include`, `import` and `extends` of another file are errors), `get_env` is
//! switched off (it would read the operator's environment, where operator secrets live), and
//! the only variables are the context's. `when` expressions are rendered untracked: their
//! result is a choice, never shown. The raw-value search of `run::Mask` stays as a second net.

mod taint;

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use taint::secret_context;
pub use taint::{HIDDEN, Tainted, marker};

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

impl std::error::Error for RenderError {}

/// A templated string argument that does not render: the message of its [`RenderError`]
/// without the place (the caller names the step and the argument).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .source.message)]
pub struct ValueError {
    pub source: RenderError,
}

/// A `when` expression that does not evaluate (`expr` as written).
#[derive(Debug, Clone, thiserror::Error)]
#[error("`when = {expr:?}`: {}", .source.message)]
pub struct WhenError {
    pub expr: String,
    pub source: RenderError,
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

/// What the renders of one run share (owned by the run's preparation, `run::PlaybookInfo`, and
/// reached through a [`Renderer`]; it lives as long as the run):
/// - the parsed templates, by name and source: each distinct template text of a run is parsed
///   once, however many hosts render it (parsing is most of the cost of a render);
/// - the rendered texts, by template and the values of the variables it names ([`memo_key`]):
///   e.g. an nginx.conf listing every backend of a 200-host inventory is rendered once, not once
///   per host (never a text that uses `secrets`).
///
/// Each holds at most 4096 entries (then it starts over): a bound a playbook's own templates
/// never reach.
#[derive(Default)]
pub struct Cache {
    parsed: std::sync::Mutex<std::collections::HashMap<(String, String), std::sync::Arc<Parsed>>>,
    memo: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::sync::Arc<str>>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("template::Cache").finish_non_exhaustive()
    }
}

impl Cache {
    /// The parsed template `name` with text `source`, parsed at most once.
    fn parsed(&self, name: &str, source: &str) -> Result<std::sync::Arc<Parsed>, tera::Error> {
        let key = (name.to_string(), source.to_string());
        if let Some(t) = (self.parsed.lock())
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(t.clone());
        }
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![]);
        register(&mut tera);
        tera.add_raw_template(name, source)?;
        let p = std::sync::Arc::new(Parsed {
            tera,
            words: tag_words(source),
        });
        let mut c = (self.parsed.lock()).unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.len() >= 4096 {
            c.clear(); // a bound, never reached by a playbook's own templates
        }
        c.insert(key, p.clone());
        Ok(p)
    }

    /// A memoised rendering.
    fn memo(&self, key: &[u8; 32]) -> Option<std::sync::Arc<str>> {
        (self.memo.lock())
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Memoises a rendering.
    fn remember(&self, key: [u8; 32], out: &str) {
        let mut c = (self.memo.lock()).unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.len() >= 4096 {
            c.clear(); // a bound
        }
        c.insert(key, out.into());
    }
}

/// Renders templates through a run's [`Cache`], and notes which rendered texts a secret flowed
/// into while [`Renderer::track`] runs. Made per use (one host's render, say), so its tracking
/// is that use's own; not `Sync` (tracking is the state of one thread's render).
pub struct Renderer<'a> {
    cache: &'a Cache,
    /// The tainted texts found by the innermost [`Renderer::track`] running; None outside one.
    tracker: std::cell::RefCell<Option<Vec<Tainted>>>,
}

/// The filters and functions we add to (or take from) Tera's.
fn register(tera: &mut tera::Tera) {
    tera.register_filter("shell_quote", shell_quote_filter);
    // The operator's environment holds the operator secrets: a template reaching it would
    // bypass `secrets` (and its taint tracking). Operator secrets are declared instead.
    tera.register_function(
        "get_env",
        |_: &std::collections::HashMap<String, Value>| -> tera::Result<Value> {
            Err(tera::Error::msg(
                "get_env is not available: declare the value in `operator_secrets` and use `secrets.NAME`",
            ))
        },
    );
}

/// The filters we register (besides Tera's own): the secret-leak tests try each.
pub const OWN_FILTERS: &[&str] = &["shell_quote"];

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

/// Renders template text with a cache of its own (nothing shared, nothing tracked): for a
/// one-off render. `name` is used in errors. A run renders through its [`Renderer`].
pub fn render(name: &Path, source: &str, ctx: &Map<String, Value>) -> Result<String, RenderError> {
    Renderer::new(&Cache::default()).render(name, source, ctx)
}

/// Renders a templated string argument with a cache of its own (see [`render`]); plain strings
/// are returned as they are.
pub fn render_str(s: &str, ctx: &Map<String, Value>) -> Result<String, ValueError> {
    Renderer::new(&Cache::default()).render_str(s, ctx)
}

impl<'a> Renderer<'a> {
    /// A renderer through `cache`, tracking nothing until [`Renderer::track`].
    pub fn new(cache: &'a Cache) -> Self {
        Renderer {
            cache,
            tracker: std::cell::RefCell::new(None),
        }
    }

    /// Renders template text. `name` is used in errors.
    pub fn render(
        &self,
        name: &Path,
        source: &str,
        ctx: &Map<String, Value>,
    ) -> Result<String, RenderError> {
        self.render_with(name, source, ctx, &Map::new())
    }

    /// Renders template text with `ctx` and, over it, the variables of `overlay`.
    pub fn render_with(
        &self,
        name: &Path,
        source: &str,
        ctx: &Map<String, Value>,
        overlay: &Map<String, Value>,
    ) -> Result<String, RenderError> {
        self.render_inner(name, source, ctx, overlay, true)
    }

    /// [`Renderer::render_with`]; `tracked`: whether a render inside [`Renderer::track`] is
    /// checked for taint.
    fn render_inner(
        &self,
        name: &Path,
        source: &str,
        ctx: &Map<String, Value>,
        overlay: &Map<String, Value>,
        tracked: bool,
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
        let p = self.cache.parsed(&key, source).map_err(err)?;
        if tracked && let Some(seen) = self.tracking_seen() {
            let taint = secret_context(&p, ctx, overlay, &seen);
            if taint {
                return self
                    .render_tainted(&key, &p, ctx, overlay, &seen)
                    .map_err(err);
            }
        }
        // The same template with the same values of the variables it names renders the same
        // text: e.g. an nginx.conf listing every backend of a 200-host inventory is rendered
        // once, not once per host. Not for text that uses `secrets` (kept out of the cache).
        let memo = memo_key(&key, source, &p, ctx, overlay);
        if let Some(k) = &memo
            && let Some(out) = self.cache.memo(k)
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
            self.cache.remember(k, &out);
        }
        Ok(out)
    }

    /// Runs `f` and returns, besides its result, every tainted text rendered by this renderer
    /// inside it (each text once). Nested calls also report to the outer one.
    pub fn track<T>(&self, f: impl FnOnce() -> T) -> (T, Vec<Tainted>) {
        struct Restore<'r>(
            &'r std::cell::RefCell<Option<Vec<Tainted>>>,
            Option<Vec<Tainted>>,
        );
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                let prev = self.1.take();
                let t = self.0;
                let mine = std::mem::replace(&mut *t.borrow_mut(), prev);
                if let (Some(outer), Some(mine)) = (t.borrow_mut().as_mut(), mine) {
                    for x in mine {
                        if !outer.contains(&x) {
                            outer.push(x);
                        }
                    }
                }
            }
        }
        let prev = self.tracker.borrow_mut().replace(Vec::new());
        let restore = Restore(&self.tracker, prev);
        let out = f();
        let found = self.tracker.borrow().clone().unwrap_or_default();
        drop(restore);
        (out, found)
    }

    /// The tainted texts of the running [`Renderer::track`] so far; None outside one.
    fn tracking_seen(&self) -> Option<Vec<Tainted>> {
        self.tracker.borrow().clone()
    }

    fn note_tainted(&self, x: Tainted) {
        if let Some(v) = self.tracker.borrow_mut().as_mut()
            && !v.contains(&x)
        {
            v.push(x);
        }
    }

    /// Renders a templated string argument; plain strings are returned as they are.
    pub fn render_str(&self, s: &str, ctx: &Map<String, Value>) -> Result<String, ValueError> {
        if !s.contains("{{") && !s.contains("{%") && !s.contains("{#") {
            return Ok(s.to_string());
        }
        self.render(Path::new("value"), s, ctx)
            .map_err(|source| ValueError { source })
    }

    /// Renders every string inside a TOML value.
    pub fn render_value(
        &self,
        v: &toml::Value,
        ctx: &Map<String, Value>,
    ) -> Result<toml::Value, ValueError> {
        Ok(match v {
            toml::Value::String(s) => toml::Value::String(self.render_str(s, ctx)?),
            toml::Value::Array(a) => toml::Value::Array(
                a.iter()
                    .map(|x| self.render_value(x, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::Table(t) => toml::Value::Table(
                t.iter()
                    .map(|(k, x)| Ok((k.clone(), self.render_value(x, ctx)?)))
                    .collect::<Result<_, ValueError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Evaluates a `when` expression (Tera syntax, e.g. `env == "prod" and host.name !=
    /// "db-1"`). Never tracked: its result is a choice, never shown.
    pub fn eval_when(&self, expr: &str, ctx: &Map<String, Value>) -> Result<bool, WhenError> {
        let out = self
            .render_inner(
                Path::new("when"),
                &format!("{{% if {expr} %}}true{{% else %}}false{{% endif %}}"),
                ctx,
                &Map::new(),
                false,
            )
            .map_err(|source| WhenError {
                expr: expr.into(),
                source,
            })?;
        Ok(out == "true")
    }
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
    register(&mut tera);
    tera.add_raw_template(&name.to_string_lossy(), source)
        .map_err(|e| RenderError {
            file: Some(name.to_path_buf()),
            line: 0,
            message: tera_message(&e),
        })
}

/// Converts a TOML value (a variable, a template step's `vars`) to the JSON value that
/// templates see (dates become strings).
pub fn to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => Value::Object(table_to_json(t)),
    }
}

/// Converts a TOML table to the JSON object that templates see (see [`to_json`]).
pub fn table_to_json(t: &toml::Table) -> Map<String, Value> {
    t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// The tests' renderer (its cache lives as long as the test thread).
        static R: Renderer<'static> = Renderer::new(Box::leak(Box::default()));
    }

    fn render(name: &Path, source: &str, ctx: &Map<String, Value>) -> Result<String, RenderError> {
        R.with(|r| r.render(name, source, ctx))
    }

    fn render_with(
        name: &Path,
        source: &str,
        ctx: &Map<String, Value>,
        overlay: &Map<String, Value>,
    ) -> Result<String, RenderError> {
        R.with(|r| r.render_with(name, source, ctx, overlay))
    }

    fn render_str(s: &str, ctx: &Map<String, Value>) -> Result<String, ValueError> {
        R.with(|r| r.render_str(s, ctx))
    }

    fn eval_when(expr: &str, ctx: &Map<String, Value>) -> Result<bool, WhenError> {
        R.with(|r| r.eval_when(expr, ctx))
    }

    fn track<T>(f: impl FnOnce() -> T) -> (T, Vec<Tainted>) {
        R.with(|r| r.track(f))
    }

    fn parsed(name: &str, source: &str) -> Result<std::sync::Arc<Parsed>, tera::Error> {
        R.with(|r| r.cache.parsed(name, source))
    }

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

    fn with_secret(pw: &str) -> Map<String, Value> {
        with_secrets(pw, "o-value")
    }

    fn with_secrets(pw: &str, other: &str) -> Map<String, Value> {
        serde_json::json!({"app": "claw", "n": 2, "secrets": {"pw": pw, "other": other}})
            .as_object()
            .unwrap()
            .clone()
    }

    /// The rendering with each secret replaced by its marker, outside any tracking.
    fn marked(t: &str) -> String {
        render_str(t, &with_secrets(&marker("pw"), &marker("other"))).unwrap()
    }

    const PW: &str = "Qz'7-a \"long\" \\ $HOME-x\nsecond-ligne-é€-yy";

    /// Every filter of Tera 1.20 that takes a string (or what `split` makes of one), with the
    /// arguments it needs, plus ours; numeric and array-of-objects filters (`abs`, `round`,
    /// `pluralize`, `group_by`, `filter`, `map`) have no string to transform.
    pub(crate) const STRING_FILTERS: &[&str] = &[
        "upper",
        "lower",
        "trim",
        "trim_start",
        "trim_end",
        "trim_start_matches(pat=\"Qz\")",
        "trim_end_matches(pat=\"yy\")",
        "truncate(length=9)",
        "wordcount",
        "replace(from=\"-\", to=\"_\")",
        "capitalize",
        "title",
        "linebreaksbr",
        "indent(prefix=\"> \")",
        "striptags",
        "spaceless",
        "escape",
        "escape_xml",
        "addslashes",
        "split(pat=\"-\") | join(sep=\"+\")",
        "split(pat=\"-\") | first",
        "split(pat=\"-\") | last",
        "split(pat=\"-\") | nth(n=1)",
        "split(pat=\"-\") | sort | join(sep=\",\")",
        "split(pat=\"-\") | unique | join(sep=\",\")",
        "split(pat=\"-\") | slice(start=1) | join(sep=\",\")",
        "split(pat=\"-\") | concat(with=\"z\") | join(sep=\",\")",
        "reverse",
        "length",
        "json_encode",
        "as_str",
        "shell_quote",
    ];

    #[test]
    fn taint_follows_every_filter() {
        let c = with_secret(PW);
        for f in STRING_FILTERS {
            let t = format!("echo {{{{ secrets.pw | {f} }}}} done");
            let (r, found) = track(|| render_str(&t, &c));
            let r = r.unwrap();
            assert_eq!(found.len(), 1, "{t}: {found:?}");
            assert_eq!(found[0].real, r, "{t}");
            assert_eq!(found[0].display, marked(&t), "{t}");
            assert!(found[0].display.contains("done"), "{t}");
            for piece in ["Qz'7", "long", "HOME", "ligne", "é€"] {
                assert!(
                    !found[0].display.contains(piece),
                    "{t}: {}",
                    found[0].display
                );
            }
        }
        // `get` reads a secret by name out of the whole map.
        let (r, found) = track(|| render_str("{{ secrets | get(key=\"pw\") | upper }}", &c));
        assert_eq!(found[0].real, r.unwrap());
        assert_eq!(found[0].display, "<SECRET:PW>");
    }

    #[test]
    fn filters_left_out_of_our_tera_build_are_errors() {
        // Tera's `builtins` feature is off: these are not available, so cannot carry a secret.
        let c = with_secret(PW);
        for f in [
            "urlencode",
            "urlencode_strict",
            "slugify",
            "filesizeformat",
            "date",
        ] {
            let e = render_str(&format!("{{{{ secrets.pw | {f} }}}}"), &c)
                .unwrap_err()
                .to_string();
            assert!(e.contains(f), "{f}: {e}");
        }
    }

    #[test]
    fn taint_follows_set_macros_loops_and_variables() {
        let c = with_secret(PW);
        let flows = [
            "{% set p = secrets.pw | upper %}a={{ p }}",
            "{% set_global p = secrets.pw %}{% for i in [1] %}{% set_global p = p ~ i %}{% endfor %}{{ p }}",
            "{% macro m(v) %}[{{ v | lower }}]{% endmacro m %}{{ self::m(v=secrets.pw) }}",
            "{% for part in secrets.pw | split(pat=\"-\") %}{{ part }};{% endfor %}",
            "{% for k, v in secrets %}{{ k }}={{ v | length }};{% endfor %}",
            "{{ secrets.pw ~ app }}",
            "{{ secrets.pw | split(pat=\"\") | slice(end=4) | join(sep=\"\") }}",
            "{{ secrets['pw'] }}",
            "{% if secrets.pw is starting_with(\"Qz\") %}yes{% else %}no{% endif %}",
            "{% if secrets %}{{ __tera_context }}{% endif %}",
        ];
        for t in flows {
            let (r, found) = track(|| render_str(t, &c));
            let r = r.unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(found.len(), 1, "{t}");
            assert_eq!(found[0].real, r, "{t}");
            if !t.contains("__tera_context") {
                assert_eq!(found[0].display, marked(t), "{t}");
            }
            assert!(!found[0].display.contains("Qz'7"), "{t}");
        }
        // A variable defined from a secret (a template step's `vars`): rendered as an argument
        // first, then used by a template that never names `secrets`.
        let ((), found) = track(|| {
            let v = render_str("{{ secrets.pw | upper }}", &c).unwrap();
            let mut vars = Map::new();
            vars.insert("p".into(), serde_json::json!({"list": [v]}));
            let out =
                render_with(Path::new("t.tera"), "P={{ p.list[0] | lower }}", &c, &vars).unwrap();
            assert!(out.starts_with("P=qz'7"));
        });
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[1].display, "P=<secret:pw>");
        // Nested tracking reports to the outer one too.
        let (inner, outer) = track(|| track(|| render_str("{{ secrets.pw }}", &c).unwrap()).1);
        assert_eq!(inner.len(), 1);
        assert_eq!(outer, inner);
    }

    #[test]
    fn what_does_not_depend_on_a_secret_is_not_tainted() {
        let c = with_secret(PW);
        for t in [
            "{{ app }}",
            "{{ secrets.pw is defined }}",
            "{% for k, v in secrets %}{{ k }},{% endfor %}",
            "{{ secrets.pw | int(default=3) }}",
            "plain {{ n + 1 }}",
            // Only the variables a template names are in its context.
            "{{ __tera_context }}",
        ] {
            let (r, found) = track(|| render_str(t, &c));
            r.unwrap();
            assert!(found.is_empty(), "{t}: {found:?}");
        }
        // `when` is a choice, never shown: not tracked.
        let (r, found) = track(|| eval_when("secrets.pw is starting_with('Qz')", &c));
        assert!(r.unwrap());
        assert!(found.is_empty());
        // Outside `track` nothing is rendered twice, nothing noted.
        assert_eq!(render_str("{{ secrets.pw }}", &c).unwrap(), PW);
    }

    #[test]
    fn errors_with_a_secret_are_the_marker_renderings() {
        let c = with_secret(PW);
        let (r, _) = track(|| render_str("{{ throw(message=\"bad \" ~ secrets.pw | upper) }}", &c));
        let e = r.unwrap_err().to_string();
        assert!(e.contains("BAD <SECRET:PW>"), "{e}");
        assert!(!e.contains("QZ'7"), "{e}");
        // A marker rendering that fails where the real one does not: still tainted, hidden.
        let (r, found) = track(|| {
            render_str(
                "{% if secrets.pw is starting_with('<') %}{{ throw(message='x') }}{% endif %}{{ secrets.pw | upper }}",
                &c,
            )
        });
        assert!(r.unwrap().starts_with("QZ'7"));
        assert_eq!(found[0].display, HIDDEN);
    }

    #[test]
    fn no_other_template_or_environment_reaches_a_render() {
        let c = with_secret(PW);
        for t in [
            "{% include \"other.tera\" %}",
            "{% import \"macros.tera\" as m %}{{ m::x() }}",
            "{% extends \"base.tera\" %}",
            "{{ get_env(name=\"HOME\") }}",
        ] {
            assert!(render_str(t, &c).is_err(), "{t}");
        }
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
