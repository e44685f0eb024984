//! Key passphrases and the become (sudo) password, from the environment or the terminal.

use super::*;

/// Passphrases from CLAW_SSH_PASSPHRASE or a terminal prompt, asked once per key file.
pub(super) struct Passphrases {
    pub(super) cache: Mutex<HashMap<PathBuf, Option<Secret>>>,
}

impl PassphraseSource for Passphrases {
    fn passphrase(&self, key: &Path) -> Option<Secret> {
        // Called from async tasks: let the runtime move other hosts' work elsewhere while the
        // operator types (their keepalives and timeouts keep running).
        tokio::task::block_in_place(|| self.ask(key))
    }
}

impl Passphrases {
    fn ask(&self, key: &Path) -> Option<Secret> {
        // One prompt at a time; answers are reused for every host.
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = cache.get(key) {
            return p.clone();
        }
        let p = match std::env::var("CLAW_SSH_PASSPHRASE") {
            Ok(v) => Some(Secret::new(v)),
            Err(_) if std::io::stdin().is_terminal() => {
                rpassword::prompt_password(format!("Passphrase for {}: ", key.display()))
                    .ok()
                    .map(Secret::new)
            }
            Err(_) => None,
        };
        cache.insert(key.to_path_buf(), p.clone());
        p
    }
}

pub(super) fn become_password(ask: bool) -> Result<Option<Secret>, Error> {
    let pw = if ask {
        rpassword::prompt_password("Become (sudo) password: ").map_err(|e| {
            Error::Usage(format!(
                "--ask-become-pass: cannot read the password from the terminal: {e}"
            ))
        })?
    } else if let Ok(v) = std::env::var("CLAW_BECOME_PASSWORD") {
        v
    } else {
        return Ok(None);
    };
    // The password travels as one line on stdin: a line break would leak the rest into the script.
    if pw.contains(['\n', '\r']) {
        return Err(Error::Usage(
            "the become password must not contain a line break".into(),
        ));
    }
    Ok(Some(Secret::new(pw)))
}
