//! Text that came from a host (diffs, stdout, stderr, error messages, banners) is shown on the
//! operator's terminal only through [`safe`]: a terminal acts on control characters (clear the
//! screen, move the cursor, set the window title, write the clipboard with OSC 52, ...) and
//! bidirectional-text controls make a line read other than it is. They are shown escaped.
//!
//! **Invariant:** every text printer of `report/` (and `run`'s output in `adhoc/`) passes
//! host-supplied text through [`safe`] before adding its own colours. JSON lines go through
//! [`json_safe`]: serde escapes C0 controls in strings, but not DEL, C1 or bidi controls, which a
//! terminal showing the JSON (`cat`, a CI log) would act on just the same.

use std::borrow::Cow;

/// Whether `c` must be shown escaped: C0 controls but newline and tab (layout), DEL, C1
/// controls (U+0080–U+009F, U+009B CSI included), bidi embeddings and overrides
/// (U+202A–U+202E), isolates (U+2066–U+2069) and marks (U+200E, U+200F, U+061C).
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\0'..='\x08' | '\x0b'..='\x1f' | '\x7f'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// `s` with every [`is_unsafe`] character written as an escape: `\x1b` for C0 and DEL,
/// `\u{9b}`, `\u{202e}` for the others; `\r` as `\r`. Borrowed when nothing needs escaping.
pub fn safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A serialized JSON text with every [`is_unsafe`] character that serde left as it is written
/// as a `\uXXXX` escape: the same JSON value, safe on a terminal. Such characters can only
/// stand inside strings (JSON's own syntax is ASCII), where the escape means the same.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_unsafe) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Bytes from a host as safe text (invalid UTF-8 replaced, then [`safe`]).
pub fn safe_bytes(b: &[u8]) -> String {
    safe(&String::from_utf8_lossy(b)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_layout_kept() {
        assert!(matches!(safe("plain text\n\tok"), Cow::Borrowed(_)));
        assert_eq!(safe("a\x1b[2Jb"), "a\\x1b[2Jb");
        // OSC 52: write the clipboard
        assert_eq!(
            safe("\x1b]52;c;ZWNobyBwd25lZA==\x07"),
            "\\x1b]52;c;ZWNobyBwd25lZA==\\x07"
        );
        assert_eq!(safe("x\u{9b}31mred"), "x\\u{9b}31mred");
        assert_eq!(safe("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(safe("\u{2066}i\u{2069}"), "\\u{2066}i\\u{2069}");
        assert_eq!(safe("del\x7f nul\0 cr\r"), "del\\x7f nul\\x00 cr\\r");
        assert_eq!(safe("line\nnext\ttab"), "line\nnext\ttab");
        // Printable non-ASCII text is left alone.
        assert_eq!(safe("héllo → 日本 \u{a0}"), "héllo → 日本 \u{a0}");
        assert_eq!(safe_bytes(b"\xff\x1b"), "\u{fffd}\\x1b");
    }

    #[test]
    fn json_stays_the_same_value_and_safe() {
        let v = serde_json::json!({"stderr": "a\x1b[2J\u{9b}31m\u{202e}z\x7f\n"});
        let text = v.to_string();
        let shown = json_safe(&text);
        assert!(!shown.chars().any(is_unsafe), "{shown}");
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, v);
        assert!(matches!(json_safe("{\"a\":\"b\"}"), Cow::Borrowed(_)));
    }

    #[test]
    fn nothing_unsafe_survives() {
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let s = safe(&c.to_string()).into_owned();
            assert!(!s.chars().any(is_unsafe), "U+{:04X} -> {s:?}", c as u32);
            if is_unsafe(c) {
                assert!(s.starts_with('\\'), "U+{:04X}", c as u32);
            }
        }
    }
}
