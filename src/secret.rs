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

/// A secret name that [`check_name`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret name `{name}`: use letters, digits and `_` (it is used as `secrets.{name}`)")]
pub struct BadSecretName {
    pub name: String,
}

/// Checks a secret's name: a `secret` step's, an operator-supplied secret's, a key of an env
/// file. It is used as `secrets.NAME` in templates.
pub(crate) fn check_name(name: &str) -> Result<(), BadSecretName> {
    let mut c = name.chars();
    let ok = c
        .next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_');
    if ok {
        Ok(())
    } else {
        Err(BadSecretName { name: name.into() })
    }
}

/// Shortest text searched for as (a form of) a secret value: shorter ones would match
/// ordinary text everywhere.
pub(crate) const MIN_SEARCHED: usize = 4;

/// The forms a secret value commonly takes in text, for the search that backs up taint
/// tracking (`run::Mask`, `Remote::hide`): the value, shell-quoted (whole and as the quoted
/// part), JSON-escaped, backslash-escaped, HTML/XML-escaped, base64 (standard and URL-safe,
/// with and without padding), URL-encoded (upper- and lowercase hex), upper- and lowercase,
/// trimmed, each line of a multi-line value, and its bytes in hex (lower- and uppercase, as
/// `xxd -p` or `sha256sum`-like tools print them; only for values of at least [`MIN_SEARCHED`]
/// bytes: the hex of a shorter one is too likely in ordinary hex output). Upper/lowercase of
/// ASCII is also covered by the search (`run::Mask`) being ASCII-case-insensitive. Forms
/// shorter than [`MIN_SEARCHED`] are left out. The hex bytes `od` prints (spaced, wrapped over
/// lines) are searched for by [`SpacedHex`].
pub(crate) fn forms(v: &str) -> Vec<String> {
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
    if v.len() >= MIN_SEARCHED {
        out.push(v.bytes().map(|b| format!("{b:02x}")).collect());
        out.push(v.bytes().map(|b| format!("{b:02X}")).collect());
    }
    out.retain(|f| f.len() >= MIN_SEARCHED);
    out.sort();
    out.dedup();
    out
}

/// Secret values searched for as the bytes `od -An -tx1` (or `hexdump`, `xxd` without `-p`)
/// prints them: two-digit hex tokens between spaces, wrapped over lines at any width. The
/// tokens of a text are read as one byte stream across spaces, line ends and `|` (a failure
/// description joins the lines it shows with ` | `); a match is the tokens of
/// - a whole value anywhere in a stream;
/// - at least [`MIN_SEARCHED`] bytes of a value's start at a stream's end, or of its end at a
///   stream's start (the rest cut off: a tail of lines, one line shown alone);
/// - a whole stream of at least [`MIN_SEARCHED`] bytes found inside a value.
///
/// Values shorter than [`MIN_SEARCHED`] bytes are not searched for. Each value is kept with
/// what replaces it (`shown`).
#[derive(Clone, Default)]
pub(crate) struct SpacedHex {
    /// Value, what is shown instead, and the KMP failure functions of its bytes and of its
    /// bytes reversed.
    values: Vec<(Secret, String, Vec<usize>, Vec<usize>)>,
}

/// The KMP failure function of the pattern `p(0..n)`.
fn failure(n: usize, p: impl Fn(usize) -> u8) -> Vec<usize> {
    let mut f = vec![0; n];
    let mut k = 0;
    for i in 1..n {
        while k > 0 && p(i) != p(k) {
            k = f[k - 1];
        }
        if p(i) == p(k) {
            k += 1;
        }
        f[i] = k;
    }
    f
}

/// Runs the pattern `p` (failure function `f`) over `text`: calls `hit` with the index of the
/// last byte of each whole match; returns how much of the pattern's start the text ends with.
fn scan(
    f: &[usize],
    p: impl Fn(usize) -> u8,
    text: impl Iterator<Item = u8>,
    mut hit: impl FnMut(usize),
) -> usize {
    let mut k = 0;
    for (i, c) in text.enumerate() {
        while k > 0 && c != p(k) {
            k = f[k - 1];
        }
        if c == p(k) {
            k += 1;
        }
        if k == f.len() {
            hit(i);
            k = f[k - 1];
        }
    }
    k
}

impl SpacedHex {
    /// Adds a value (ignored if shorter than [`MIN_SEARCHED`] bytes).
    pub(crate) fn push(&mut self, v: &Secret, shown: &str) {
        let b = v.expose().as_bytes();
        let n = b.len();
        if n >= MIN_SEARCHED {
            let fwd = failure(n, |i| b[i]);
            let back = failure(n, |i| b[n - 1 - i]);
            self.values.push((v.clone(), shown.to_string(), fwd, back));
        }
    }

    /// What replaces the value of index `i` (as returned by [`SpacedHex::find`]).
    pub(crate) fn shown(&self, i: usize) -> &str {
        &self.values[i].1
    }

    /// `(start, end, value index)` of every match in `data` (overlapping ones included).
    pub(crate) fn find(&self, data: &[u8]) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        if self.values.is_empty() {
            return out;
        }
        let sep = |c: u8| c.is_ascii_whitespace() || c == b'|';
        // Streams of (start, end, byte) tokens.
        let mut stream: Vec<(usize, usize, u8)> = Vec::new();
        let mut i = 0;
        while i <= data.len() {
            let start = i;
            while i < data.len() && !sep(data[i]) {
                i += 1;
            }
            let tok = &data[start..i];
            let byte = (tok.len() == 2)
                .then(|| std::str::from_utf8(tok).ok())
                .flatten()
                .and_then(|t| u8::from_str_radix(t, 16).ok());
            match byte {
                Some(b) => stream.push((start, i, b)),
                None if tok.is_empty() && i < data.len() => {}
                None => {
                    self.stream(&stream, &mut out);
                    stream.clear();
                }
            }
            if i == data.len() {
                self.stream(&stream, &mut out);
                break;
            }
            i += 1;
        }
        out
    }

    /// The matches in one stream of tokens.
    fn stream(&self, s: &[(usize, usize, u8)], out: &mut Vec<(usize, usize, usize)>) {
        let m = s.len();
        if m < MIN_SEARCHED {
            return;
        }
        let span = |a: usize, b: usize| (s[a].0, s[b - 1].1);
        for (vi, (v, _, fwd, back)) in self.values.iter().enumerate() {
            let v = v.expose().as_bytes();
            let n = v.len();
            let mut push = |(a, b): (usize, usize)| out.push((a, b, vi));
            let end = scan(
                fwd,
                |k| v[k],
                s.iter().map(|t| t.2),
                |i| push(span(i + 1 - n, i + 1)),
            );
            if end >= MIN_SEARCHED {
                push(span(m - end, m));
            }
            let start = scan(back, |k| v[n - 1 - k], s.iter().rev().map(|t| t.2), |_| {});
            if start >= MIN_SEARCHED {
                push(span(0, start));
            }
            if m < n {
                let f = failure(m, |k| s[k].2);
                let mut inside = false;
                scan(&f, |k| s[k].2, v.iter().copied(), |_| inside = true);
                if inside {
                    push(span(0, m));
                }
            }
        }
    }
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

    /// `od -An -tx1 -wW` of `data`, as the tool prints it.
    fn od(data: &[u8], w: usize) -> String {
        data.chunks(w)
            .map(|c| c.iter().map(|b| format!(" {b:02x}")).collect::<String>() + "\n")
            .collect()
    }

    fn hide(h: &SpacedHex, text: &str) -> String {
        let mut ms = h.find(text.as_bytes());
        ms.sort_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)));
        let mut out = String::new();
        let mut at = 0;
        for (s, e, i) in ms {
            if s >= at {
                out.push_str(&text[at..s]);
                out.push_str(h.shown(i));
                at = e;
            }
        }
        out + &text[at..]
    }

    #[test]
    fn hex_forms() {
        let f = forms("pw\u{e9}1");
        assert!(f.iter().any(|x| x == "7077c3a931"), "{f:?}");
        assert!(f.iter().any(|x| x == "7077C3A931"), "{f:?}");
        // Too short for its hex to be searched for.
        assert!(!forms("abc").iter().any(|x| x == "616263"));
    }

    /// The value in `od` output after any number of other bytes, at several widths, whole or as
    /// the tail of lines a failure description shows (joined by ` | `): no byte of it that
    /// stands in a run of four or more is left; the other bytes are.
    #[test]
    fn spaced_hex_is_found_wrapped_at_any_place() {
        let v = "a-secret-of-40-bytes-0123456789abcdefghi";
        let mut h = SpacedHex::default();
        h.push(&Secret::new(v), "<secret:x>");
        let bytes = |t: &str| t.split_whitespace().count();
        for w in [8, 16, 32] {
            for lead in 0..w {
                let data = [&b"#".repeat(lead)[..], v.as_bytes(), b"\n"].concat();
                let out = od(&data, w);
                let shown = hide(&h, &out);
                assert!(shown.contains("<secret:x>"), "{w} {lead}: {shown}");
                // The lead bytes (23) and the newline (0a) stay, nothing of the value does.
                assert_eq!(shown.matches("23").count(), lead, "{w} {lead}: {shown}");
                assert!(shown.contains("0a"), "{shown}");
                assert_eq!(
                    bytes(&shown),
                    lead + 1 + shown.matches("<secret:x>").count()
                );
                // The last three lines, joined as a description shows them.
                let lines: Vec<&str> = out.lines().collect();
                let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
                let shown = hide(&h, &tail);
                let left: Vec<&str> = shown
                    .split(['|', ' '])
                    .filter(|t| t.len() == 2 && *t != "23" && *t != "0a")
                    .collect();
                assert!(left.len() < MIN_SEARCHED, "{w} {lead}: {tail} -> {shown}");
            }
        }
        // A line alone from the middle of the value, uppercase.
        let mid: String = v.as_bytes()[10..26]
            .iter()
            .map(|b| format!("{b:02X} "))
            .collect();
        assert_eq!(hide(&h, &mid), "<secret:x> ");
    }

    /// Ordinary output: the hex of other data (a sha256 sum, `od` of another text, numbers of
    /// two digits) is left as it is, as are fewer than four bytes of the value.
    #[test]
    fn spaced_hex_leaves_other_output_alone() {
        let v = "hunter2-long-enough";
        let mut h = SpacedHex::default();
        h.push(&Secret::new(v), "<s>");
        h.push(&Secret::new("abc"), "<short>");
        let other = [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  -".to_string(),
            od(b"hunting for 2 long enough lines of other text\n", 16),
            "10 20 30 40 50 60 | 99 98 97".to_string(),
            format!("{} zz", od(b"hun", 16)),
            od(b"abc", 16),
            format!("ab 63 {}", &od(v.as_bytes(), 16)[..6]),
        ];
        for t in other {
            assert!(h.find(t.as_bytes()).is_empty(), "{t}");
        }
        let f: Vec<String> = forms(v);
        // The contiguous hex forms: not in a sha256 sum (of the empty string), nor in the hex
        // of another text sharing the value's first bytes.
        let other: String = (b"hunter1-long-enough".iter())
            .map(|b| format!("{b:02x}"))
            .collect();
        for t in [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  -",
            &other,
        ] {
            assert!(!f.iter().any(|x| t.contains(x.as_str())), "{t}");
        }
    }
}
