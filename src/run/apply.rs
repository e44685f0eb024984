//! Which scripts may carry secret material ([`secret_material`]), and the journal of notified
//! handlers on the host.

use crate::plan::Change;
use crate::playbook::Step;

/// Whether the script of a step may carry secret material, so that `-vv` must not show it:
/// its text uses secrets (see [`uses_secrets`]), or it uploads secret content, whose sha256
/// the upload script checks (a hash of a weak password is as good as the password): `secret`
/// and `cert` steps, and files whose content is sensitive or holds a secret.
pub(super) fn secret_material(step: &Step, change: &Change) -> bool {
    uses_secrets(step)
        || matches!(step.kind.as_str(), "secret" | "cert")
        || change.content.as_ref().is_some_and(|c| c.sensitive)
}

/// Whether a step's text can bring a secret value into its script: it names `secrets` (or
/// Tera's whole-context variable). Such scripts are never shown (`-vv`), masked or not: a
/// filter (`shell_quote`, `upper`, ...) can change a value past recognition.
pub(super) fn uses_secrets(step: &Step) -> bool {
    fn mentions(s: &str) -> bool {
        s.contains("secrets") || s.contains("__tera_context")
    }
    fn any(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => mentions(s),
            toml::Value::Array(a) => a.iter().any(any),
            toml::Value::Table(t) => t.iter().any(|(k, v)| mentions(k) || any(v)),
            _ => false,
        }
    }
    step.when.as_deref().is_some_and(mentions) || step.args.values().any(any)
}

/// The lines that record notified handlers in the journal before a step changes anything.
pub(super) fn journal_record(dir: &str, handlers: &[String]) -> String {
    let mut s = format!("mkdir -p -m 0700 -- {} && ", crate::quote::quote(dir));
    let files: Vec<String> = handlers
        .iter()
        .map(|h| crate::quote::quote(&format!("{dir}/{}", crate::fact::host::encode_name(h))))
        .collect();
    s.push_str(&format!("touch -- {} || exit 1\n", files.join(" ")));
    s
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::pb_step;
    use super::*;
    use crate::plan::ContentChange;
    use std::sync::Arc;

    #[test]
    fn scripts_with_secret_material_are_never_shown() {
        let mut s = pb_step(&[]);
        s.args.insert("run".into(), "systemctl restart app".into());
        let plain = Change::noop("x", "y");
        assert!(!secret_material(&s, &plain));
        for run in [
            "echo {{ secrets.db | shell_quote }}",
            "echo {{ __tera_context }}",
        ] {
            s.args.insert("run".into(), run.into());
            assert!(secret_material(&s, &plain), "{run}");
        }
        s.args.insert("run".into(), "true".into());
        s.when = Some("secrets.db != ''".into());
        assert!(uses_secrets(&s));
        s.when = None;
        // nested: a template's `vars`
        s.args.insert(
            "vars".into(),
            toml::Value::Table(toml::toml! { dsn = "{{ secrets.db }}" }),
        );
        assert!(uses_secrets(&s));
        s.args.remove("vars");
        for kind in ["secret", "cert"] {
            s.kind = kind.into();
            assert!(secret_material(&s, &plain), "{kind}");
        }
        // a file whose content is sensitive (or holds a secret: the mask marks it so)
        s.kind = "file".into();
        let mut c = Change::noop("x", "y");
        c.content = Some(ContentChange {
            path: "/etc/app.env".into(),
            old_sha256: None,
            new: Arc::new(b"KEY=...".to_vec()),
            sensitive: true,
            old: None,
            keys: None,
        });
        assert!(secret_material(&s, &c));
        c.content.as_mut().unwrap().sensitive = false;
        assert!(!secret_material(&s, &c));
    }
}
