//! Hiding a host's secrets in everything a run shows: the [`Mask`] of a host, built from its
//! secrets and the texts a secret flowed into when rendering.

use crate::plan::Change;
use crate::remote::RemoteError;
use crate::secret::Secret;

/// Hides a host's secrets in everything shown: error messages, details, reasons, targets,
/// warnings, command output, the current content of a file shown in a diff. Two nets:
/// - each text a secret flowed into when rendering (`template::Tainted`) is replaced by its
///   display rendering (each secret a marker `<secret:NAME>`): whole, shell-quoted, and line
///   by line (a display may show one line of it, e.g. a command's first line);
/// - each secret value in any of its common forms (`secret::forms`: quoted, escaped, base64,
///   URL-encoded, hex, upper/lowercase, ...; ASCII case-insensitive) is replaced by its marker
///   (the sudo password by `********`), and so is each value as the spaced hex bytes `od`
///   prints (`secret::SpacedHex`, wrapped over lines).
///
/// A file content holding either is sensitive (never diffed). Values shorter than
/// `secret::MIN_SEARCHED` are not searched for (taint still makes their steps private).
#[derive(Clone)]
pub(super) struct Mask {
    /// The tainted texts (matched exactly: the texts of two steps may differ only in case) and
    /// the secrets' forms (ASCII case-insensitively): each an automaton over its needles and
    /// what replaces each. Of overlapping matches the leftmost, then longest, is replaced.
    passes: Vec<(std::sync::Arc<aho_corasick::AhoCorasick>, Vec<String>)>,
    /// Every needle (for `Remote::hide`).
    all: Vec<String>,
    /// The secret values as spaced hex bytes (matches: automaton index `passes.len()`).
    od: crate::secret::SpacedHex,
}

impl Mask {
    pub(super) fn new(secrets: &[(String, Secret)], tainted: &[crate::template::Tainted]) -> Self {
        use crate::quote::quote;
        let mut exact: Vec<(String, String)> = Vec::new();
        for t in tainted {
            exact.push((t.real.clone(), t.display.clone()));
            exact.push((quote(&t.real), quote(&t.display)));
            let r: Vec<&str> = t.real.lines().collect();
            let d: Vec<&str> = t.display.lines().collect();
            for op in similar::capture_diff_slices(similar::Algorithm::Myers, &r, &d) {
                let (tag, old, new) = op.as_tag_tuple();
                if tag == similar::DiffTag::Equal {
                    continue;
                }
                let (rl, dl) = (&r[old], &d[new]);
                for (k, line) in rl.iter().enumerate() {
                    let shown = if rl.len() == dl.len() {
                        dl[k].to_string()
                    } else if dl.is_empty() {
                        crate::template::HIDDEN.to_string()
                    } else {
                        dl.join(" ")
                    };
                    exact.push((line.trim().to_string(), shown.trim().to_string()));
                    exact.push((line.to_string(), shown));
                }
            }
        }
        let mut forms: Vec<(String, String)> = Vec::new();
        let mut od = crate::secret::SpacedHex::default();
        for (name, v) in secrets {
            let shown = if name.is_empty() {
                "********".to_string()
            } else {
                crate::template::marker(name)
            };
            od.push(v, &shown);
            for f in crate::secret::forms(v.expose()) {
                forms.push((f, shown.clone()));
            }
        }
        let mut all = Vec::new();
        let mut passes = Vec::new();
        for (mut subs, ci) in [(exact, false), (forms, true)] {
            subs.retain(|(n, r)| n.len() >= crate::secret::MIN_SEARCHED && n != r);
            // Of equal needles, the first is kept.
            let mut seen = std::collections::HashSet::new();
            subs.retain(|s| seen.insert(s.0.clone()));
            if subs.is_empty() {
                continue;
            }
            let ac = aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(ci)
                .build(subs.iter().map(|s| s.0.as_bytes()))
                .expect("an automaton of a host's secret texts");
            all.extend(subs.iter().map(|s| s.0.clone()));
            passes.push((
                std::sync::Arc::new(ac),
                subs.into_iter().map(|s| s.1).collect(),
            ));
        }
        Self { passes, all, od }
    }

    /// Every text searched for: `Remote::hide` sends a script holding one on stdin.
    pub(super) fn needles(&self) -> Vec<Secret> {
        self.all.iter().map(|n| Secret::new(n.clone())).collect()
    }

    /// `data` with every needle replaced; None when it holds none. Matches start and end
    /// where the needles' characters do, so UTF-8 text stays UTF-8.
    pub(super) fn apply(&self, data: &[u8]) -> Option<Vec<u8>> {
        // (start, end, automaton, pattern) of every match, overlapping ones included.
        let mut ms: Vec<(usize, usize, usize, usize)> = Vec::new();
        for (a, (ac, _)) in self.passes.iter().enumerate() {
            for m in ac.find_overlapping_iter(data) {
                ms.push((m.start(), m.end(), a, m.pattern().as_usize()));
            }
        }
        let od = self.passes.len();
        ms.extend(
            self.od
                .find(data)
                .into_iter()
                .map(|(s, e, i)| (s, e, od, i)),
        );
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)).then(x.2.cmp(&y.2)));
        let mut out = Vec::with_capacity(data.len());
        let mut at = 0;
        for (start, end, a, i) in ms {
            if start < at {
                continue;
            }
            out.extend_from_slice(&data[at..start]);
            let shown = match self.passes.get(a) {
                Some(p) => &p.1[i],
                None => self.od.shown(i),
            };
            out.extend_from_slice(shown.as_bytes());
            at = end;
        }
        out.extend_from_slice(&data[at..]);
        Some(out)
    }

    pub(super) fn text(&self, s: &str) -> String {
        match self.apply(s.as_bytes()) {
            // Matches start and end on character boundaries: still UTF-8.
            Some(b) => String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            None => s.to_string(),
        }
    }

    pub(super) fn error(&self, e: RemoteError) -> RemoteError {
        match e {
            RemoteError::Failed(m) => RemoteError::Failed(self.text(&m)),
            RemoteError::Become(m) => RemoteError::Become(self.text(&m)),
            other => other,
        }
    }

    /// A step's change as shown. `names_secrets`: the step or its template names `secrets`;
    /// `own`: the texts of its rendering a secret flowed into. Either makes its content
    /// sensitive (even when no value appears in it as such: encoded, hashed, ...). Its own
    /// texts are replaced first: another step may have rendered the same text from other
    /// expressions (`trim` and `striptags` of a secret, say), whose marker rendering differs.
    pub(super) fn content(
        &self,
        c: &mut Change,
        names_secrets: bool,
        own: &[crate::template::Tainted],
    ) {
        let tainted = !own.is_empty();
        let own = Mask::new(&[], own);
        let text = |s: &str| self.text(&own.text(s));
        if let Some(cc) = c.content.as_mut() {
            if names_secrets || tainted || self.apply(&cc.new).is_some() {
                cc.sensitive = true;
            }
            self.old_content(cc);
        }
        for d in &mut c.details {
            *d = text(d);
        }
        for w in &mut c.warnings {
            *w = text(w);
        }
        c.reason = text(&c.reason);
        c.target = text(&c.target);
    }

    /// The current content read back from the host (the old side of a diff): a secret in it
    /// is shown as its marker.
    pub(super) fn old_content(&self, cc: &mut crate::plan::ContentChange) {
        if let Some(old) = &cc.old
            && let Some(masked) = self.apply(old)
        {
            cc.old = Some(masked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::file_change;
    use super::*;
    use std::sync::Arc;

    /// A host's secrets and the texts rendered from them, through the real render.
    fn tainted_mask(pw: &str, templates: &[&str]) -> (Mask, Vec<String>, Vec<String>) {
        let ctx = serde_json::json!({"secrets": {"DB_PW": pw}})
            .as_object()
            .unwrap()
            .clone();
        let cache = crate::template::Cache::default();
        let r = crate::template::Renderer::new(&cache);
        let (real, found) = r.track(|| {
            (templates.iter())
                .map(|t| r.render_str(t, &ctx).unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(found.len(), templates.len());
        let secrets = [
            ("DB_PW".to_string(), Secret::new(pw)),
            (String::new(), Secret::new("sudo-pw-1234")),
        ];
        let shown = found.iter().map(|t| t.display.clone()).collect();
        (Mask::new(&secrets, &found), real, shown)
    }

    #[test]
    fn the_mask_shows_the_marker_rendering_of_tainted_text() {
        let pw = "it's-a-long-secret-value";
        let (mask, real, shown) = tainted_mask(
            pw,
            &[
                "mysql -p{{ secrets.DB_PW | shell_quote }} -e 'select 1'\nsecond {{ secrets.DB_PW | upper }}",
                "{{ secrets.DB_PW | truncate(length=10) }}",
                "/opt/{{ secrets.DB_PW | replace(from='-', to='') | title }}",
            ],
        );
        // The whole text, its first line (a command's summary), shell-quoted.
        assert_eq!(
            mask.text(&format!("run: {}", real[0])),
            "run: mysql -p'<secret:DB_PW>' -e 'select 1'\nsecond <SECRET:DB_PW>"
        );
        let first = real[0].lines().next().unwrap();
        assert_eq!(
            mask.text(&format!("{first} …")),
            "mysql -p'<secret:DB_PW>' -e 'select 1' …"
        );
        assert!(shown[2].starts_with("/opt/<Secret:"), "{}", shown[2]);
        assert_eq!(
            mask.text(&format!("test -e {}", crate::quote::quote(&real[2]))),
            format!("test -e '{}'", shown[2])
        );
        // A truncation is no form of the value the search knows: the taint shows it.
        assert_eq!(mask.text(&format!("[{}]", real[1])), "[<secret:DB…]");
        // The second net: the raw value in any common form, ASCII case-insensitively.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(pw);
        let host_text = format!(
            "err {pw} {} {b64} it%27s-a-long-secret-value {} \"it's-a-long-secret-value\" sudo-pw-1234",
            pw.to_uppercase(),
            crate::quote::quote(pw)
        );
        let shown = mask.text(&host_text);
        assert_eq!(
            shown,
            "err <secret:DB_PW> <secret:DB_PW> <secret:DB_PW> <secret:DB_PW> <secret:DB_PW> \"<secret:DB_PW>\" ********"
        );
        // The needles `Remote::hide` gets include the tainted texts, so a script holding one
        // goes on stdin whatever filter made it.
        let needles: Vec<String> = mask
            .needles()
            .iter()
            .map(|s| s.expose().to_string())
            .collect();
        for r in &real {
            assert!(needles.contains(r), "{r}");
        }
    }

    #[test]
    fn the_old_side_of_a_diff_and_host_errors_are_masked() {
        let pw = "Ünï-\"q\\$x-\nline-two-val";
        let (mask, _, _) = tainted_mask(pw, &["{{ secrets.DB_PW | lower }}"]);
        let mut c = file_change("/etc/app.conf");
        {
            let cc = c.content.as_mut().unwrap();
            cc.new = Arc::new(b"password=none\n".to_vec());
            cc.old = Some(format!("password={pw}\nother=LINE-TWO-VAL\n").into_bytes());
        }
        mask.content(&mut c, false, &[]);
        let cc = c.content.as_ref().unwrap();
        assert!(!cc.sensitive, "the new side holds no secret");
        assert_eq!(
            String::from_utf8(cc.old.clone().unwrap()).unwrap(),
            "password=<secret:DB_PW>\nother=<secret:DB_PW>\n"
        );
        // The text the step rendered (lowercased) is its display rendering.
        let e = mask.error(RemoteError::Failed(format!("bad: {}", pw.to_lowercase())));
        assert_eq!(e.to_string(), "bad: <secret:db_pw>");
        // Nothing to hide: the same text.
        assert_eq!(mask.text("ünïcode ok"), "ünïcode ok");
    }
}
