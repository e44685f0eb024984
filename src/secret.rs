//! The one type that carries secret values (passphrases, sudo passwords, generated secrets).
//!
//! `Debug`, `Display` and `Serialize` all print `<redacted>`; the only way to the bytes is
//! [`Secret::expose`], so every place that reveals a secret is greppable.
//!
//! Also the rule for a secret's name ([`check_name`]), shared by `secret` steps, operator
//! secrets and env-file keys.

use std::fmt;

/// A secret string. Never printed, logged or serialized in clear.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value. Call only where the value must leave the process (stdin of a remote
    /// command, a key decryption), never for output.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the buffer before it is freed.
        // SAFETY: writing zero bytes keeps the String valid UTF-8.
        unsafe {
            for b in self.0.as_bytes_mut() {
                std::ptr::write_volatile(b, 0);
            }
        }
    }
}

/// Checks a secret's name: a `secret` step's, an operator-supplied secret's, a key of an env
/// file. It is used as `secrets.NAME` in templates.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut c = name.chars();
    let ok = c
        .next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "secret name `{name}`: use letters, digits and `_` (it is used as `secrets.{name}`)"
        ))
    }
}

/// Shortest text searched for as (a form of) a secret value: shorter ones would match
/// ordinary text everywhere.
pub const MIN_SEARCHED: usize = 4;

/// The forms a secret value commonly takes in text, for the search that backs up taint
/// tracking (`run::Mask`, `Remote::hide`): the value, shell-quoted (whole and as the quoted
/// part), JSON-escaped, backslash-escaped, HTML/XML-escaped, base64 (standard and URL-safe,
/// with and without padding), URL-encoded (upper- and lowercase hex), upper- and lowercase,
/// trimmed, and each line of a multi-line value. Upper/lowercase of ASCII is also covered by
/// the search (`run::Mask`) being ASCII-case-insensitive. Forms shorter than [`MIN_SEARCHED`] are left out.
pub fn forms(v: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![v.to_string(), v.trim().to_string()];
    let quoted = crate::quote::quote(v);
    out.push(quoted[1..quoted.len() - 1].to_string());
    out.push(quoted);
    let json = serde_json::to_string(v).unwrap_or_default();
    out.push(
        json.get(1..json.len().saturating_sub(1))
            .unwrap_or("")
            .to_string(),
    );
    out.push(
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\'', "\\'"),
    );
    let html = |v: &str, apos: &str, slash: bool| {
        let mut o = String::new();
        for c in v.chars() {
            match c {
                '&' => o.push_str("&amp;"),
                '<' => o.push_str("&lt;"),
                '>' => o.push_str("&gt;"),
                '"' => o.push_str("&quot;"),
                '\'' => o.push_str(apos),
                '/' if slash => o.push_str("&#x2F;"),
                c => o.push(c),
            }
        }
        o
    };
    out.push(html(v, "&#x27;", true));
    out.push(html(v, "&apos;", false));
    for e in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.push(e.encode(v));
    }
    for upper in [true, false] {
        out.push(
            v.bytes()
                .map(|b| match b {
                    b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                        (b as char).to_string()
                    }
                    b if upper => format!("%{b:02X}"),
                    b => format!("%{b:02x}"),
                })
                .collect(),
        );
    }
    out.push(v.to_uppercase());
    out.push(v.to_lowercase());
    if v.contains('\n') {
        out.extend(v.lines().map(|l| l.trim().to_string()));
    }
    out.retain(|f| f.len() >= MIN_SEARCHED);
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn forms_of_a_value() {
        let f = forms("it's a \"pw\"/\\ x\nline two");
        for want in [
            "it's a \"pw\"/\\ x\nline two",
            "it'\\''s a \"pw\"/\\ x\nline two",
            "it's a \\\"pw\\\"/\\\\ x\\nline two",
            "it&#x27;s a &quot;pw&quot;&#x2F;\\ x\nline two",
            "IT'S A \"PW\"/\\ X\nLINE TWO",
            "it%27s%20a%20%22pw%22%2F%5C%20x%0Aline%20two",
            "line two",
            "it's a \"pw\"/\\ x",
        ] {
            assert!(f.iter().any(|x| x == want), "{want:?} in {f:?}");
        }
        assert!(
            !forms("ab").iter().any(|f| f == "ab"),
            "too short to search"
        );
    }
}
