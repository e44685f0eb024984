//! A secret file on the target: its value (read back to render templates), its attributes, and
//! whether the data it protects exists.
//!
//! **Invariant:** the value never appears in an error message: parse errors name the record,
//! never its fields.

use super::FactError;
use crate::quote::quote;
use crate::secret::Secret;
use base64::Engine;

/// What the probe saw of a secret file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretState {
    /// The file exists: its value (trailing newline removed) and attributes.
    Present {
        value: Secret,
        mode: u32,
        owner: String,
        group: String,
    },
    /// No file. `guarded`: the path named by `guard` exists (the data the secret protects).
    Missing { guarded: bool },
    /// Something that is not a regular file is at the path.
    NotAFile,
}

/// The probe snippet: `@ID<TAB>present<TAB>MODE OWNER GROUP<TAB>BASE64`, `@ID<TAB>missing<TAB>0|1`
/// or `@ID<TAB>other`.
pub fn command(id: usize, path: &str, guard: Option<&str>) -> String {
    let p = quote(path);
    let g = match guard {
        Some(g) => format!("[ -e {} ] && g=1", quote(g)),
        None => "false".into(),
    };
    format!(
        "if [ -f {p} ] && [ ! -L {p} ]; then printf '@{id}\\tpresent\\t%s\\t%s\\n' \"$(stat -c '%a %U %G' -- {p})\" \"$(base64 -w0 < {p})\"; \
         elif [ -e {p} ] || [ -L {p} ]; then printf '@{id}\\tother\\n'; \
         else g=0; {g}; printf '@{id}\\tmissing\\t%s\\n' \"$g\"; fi\n"
    )
}

/// Parses the fields after `@ID`.
pub fn parse(f: &[&str]) -> Result<SecretState, FactError> {
    let bad = || FactError("bad secret record (contents not shown)".into());
    match f {
        ["missing", g] => Ok(SecretState::Missing { guarded: *g == "1" }),
        ["other"] => Ok(SecretState::NotAFile),
        ["present", attrs, b64] => {
            let mut a = attrs.split(' ');
            let (Some(mode), Some(owner), Some(group), None) =
                (a.next(), a.next(), a.next(), a.next())
            else {
                return Err(bad());
            };
            let mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| bad())?;
            let text = String::from_utf8(bytes).map_err(|_| {
                FactError("the secret file is not text (contents not shown)".into())
            })?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            Ok(SecretState::Present {
                value: Secret::new(value),
                mode,
                owner: owner.to_string(),
                group: group.to_string(),
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    fn fields(line: &str) -> Vec<&str> {
        line.trim_end_matches('\n').split('\t').skip(1).collect()
    }

    #[test]
    fn runs_locally_and_parses() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pw");
        std::fs::write(&f, "s3cr3t value\n").unwrap();
        let p = f.to_str().unwrap();
        let out = run(&command(3, p, None));
        assert!(out.starts_with("@3\tpresent\t"));
        match parse(&fields(&out)).unwrap() {
            SecretState::Present { value, .. } => assert_eq!(value.expose(), "s3cr3t value"),
            s => panic!("{s:?}"),
        }
        let missing = d.path().join("nope");
        let out = run(&command(0, missing.to_str().unwrap(), Some(p)));
        assert_eq!(
            parse(&fields(&out)).unwrap(),
            SecretState::Missing { guarded: true }
        );
        let out = run(&command(
            0,
            missing.to_str().unwrap(),
            Some("/no/such/data"),
        ));
        assert_eq!(
            parse(&fields(&out)).unwrap(),
            SecretState::Missing { guarded: false }
        );
        let out = run(&command(0, d.path().to_str().unwrap(), None));
        assert_eq!(parse(&fields(&out)).unwrap(), SecretState::NotAFile);
    }

    #[test]
    fn garbage_never_echoes_the_value() {
        for f in [
            vec!["present", "600 root root", "!!notbase64 hunter2"],
            vec!["present", "6x0 root root", "aHVudGVyMg=="],
            vec!["present", "600 root", "aHVudGVyMg=="],
            vec!["what"],
            vec![],
        ] {
            let e = parse(&f).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && !e.contains("aHVudGVyMg"), "{e}");
        }
    }
}
