//! Secret taint (see the module docs of [`super`]): the three renderings of a template whose
//! context can carry a secret, and the [`Tainted`] texts they find.

use super::{Parsed, Renderer, context};
use serde_json::{Map, Value};

/// A text rendered from a secret (see the module docs): never shown, never on a command line.
#[derive(Clone, PartialEq, Eq)]
pub struct Tainted {
    /// The rendering with the real values.
    pub real: String,
    /// The rendering with each secret replaced by its [`marker`]: what outputs show.
    pub display: String,
    /// The rendering with the second stand-ins (None: it failed).
    alt: Option<String>,
}

impl std::fmt::Debug for Tainted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tainted")
            .field("display", &self.display)
            .finish_non_exhaustive()
    }
}

/// How outputs show secret `name`.
pub fn marker(name: &str) -> String {
    format!("<secret:{name}>")
}

/// The second stand-in of secret `name`: another length and alphabet than the marker's.
fn alternate(name: &str) -> String {
    format!("9{}Zq~{}", name.len(), "x7".repeat(name.len() % 5 + 17))
}

/// What an output shows for a secret-dependent text whose marker rendering failed.
pub const HIDDEN: &str = "<secret-dependent value>";

/// Whether a value holds (as one of its strings) a text rendered from a secret.
fn holds_tainted(v: &Value, seen: &[Tainted]) -> bool {
    match v {
        Value::String(s) => seen.iter().any(|t| t.real == *s),
        Value::Array(a) => a.iter().any(|x| holds_tainted(x, seen)),
        Value::Object(o) => o.values().any(|x| holds_tainted(x, seen)),
        _ => false,
    }
}

/// Whether the variables a template names can carry a secret (see the module docs).
pub(super) fn secret_context(
    p: &Parsed,
    ctx: &Map<String, Value>,
    overlay: &Map<String, Value>,
    seen: &[Tainted],
) -> bool {
    // Only the variables the template names are in its context (see [`context`]), also for
    // `__tera_context`.
    ctx.iter().chain(overlay).any(|(k, v)| {
        p.words.contains(k) && ((k == "secrets" && v.is_object()) || holds_tainted(v, seen))
    })
}

/// Which substitute a context is built with.
#[derive(Clone, Copy)]
enum Stand {
    Marker,
    Alternate,
}

/// `v` with the secrets' values (under `secrets`) and the tainted texts replaced.
fn substitute(key: Option<&str>, v: &Value, seen: &[Tainted], how: Stand) -> Value {
    if key == Some("secrets")
        && let Value::Object(o) = v
    {
        return Value::Object(
            o.keys()
                .map(|k| {
                    let s = match how {
                        Stand::Marker => marker(k),
                        Stand::Alternate => alternate(k),
                    };
                    (k.clone(), Value::String(s))
                })
                .collect(),
        );
    }
    match v {
        Value::String(s) => match seen.iter().find(|t| t.real == *s) {
            Some(t) => Value::String(match how {
                Stand::Marker => t.display.clone(),
                // A text whose alternate rendering failed: any other text.
                Stand::Alternate => t.alt.clone().unwrap_or_else(|| alternate("")),
            }),
            None => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(None, x, seen, how)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute(None, x, seen, how)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl Renderer<'_> {
    /// Renders a template whose context can carry a secret three times (see the module docs) and
    /// notes the result as tainted when it depends on a secret.
    pub(super) fn render_tainted(
        &self,
        key: &str,
        p: &Parsed,
        ctx: &Map<String, Value>,
        overlay: &Map<String, Value>,
        seen: &[Tainted],
    ) -> Result<String, tera::Error> {
        let with = |how: Option<Stand>| {
            let c = match how {
                None => context(p, ctx, overlay),
                Some(how) => {
                    let mut c = tera::Context::new();
                    for (k, v) in ctx.iter().chain(overlay) {
                        if p.words.contains(k) {
                            c.insert(k.as_str(), &substitute(Some(k), v, seen, how));
                        }
                    }
                    c
                }
            };
            p.tera.render(key, &c)
        };
        let display = with(Some(Stand::Marker));
        let real = match with(None) {
            Ok(r) => r,
            // A failure with the real values only: its message may quote them (the runner's
            // mask hides them); one the marker rendering shares is reported as that one.
            Err(e) => return Err(display.err().unwrap_or(e)),
        };
        let alt = with(Some(Stand::Alternate)).ok();
        if display.as_ref().ok() != Some(&real) || alt.as_ref() != Some(&real) {
            self.note_tainted(Tainted {
                real: real.clone(),
                display: display.unwrap_or_else(|_| HIDDEN.to_string()),
                alt,
            });
        }
        Ok(real)
    }
}
