//! Questions to the operator on the terminal: key passphrases and the become (sudo) password
//! (from the environment, else a prompt), and the y/N confirmations of `apply`.

use crate::error::Error;
use crate::secret::Secret;
use crate::ssh::PassphraseSource;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Passphrases from CLAW_SSH_PASSPHRASE or a terminal prompt, asked once per key file.
#[derive(Default)]
pub struct Passphrases {
    cache: Mutex<HashMap<PathBuf, Option<Secret>>>,
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

pub fn become_password(ask: bool) -> Result<Option<Secret>, Error> {
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

/// Whether stdin, stdout and stderr are all a terminal: the plan can be shown and confirmed.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal()
}

/// Writes `question` (after what it is about) to `out` and reads one line of stdin: whether
/// the operator answered yes.
fn yes_no(out: &mut dyn Write, question: &str) -> bool {
    let _ = write!(out, "{question}");
    let _ = out.flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
}

/// --force-unlock without --yes: the operator confirms on a terminal.
pub fn confirm_force_unlock() -> Result<(), Error> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "apply --force-unlock: no terminal to confirm on; add --yes to break the locks without asking"
                .into(),
        ));
    }
    let question = "--force-unlock ends the connection of any other apply running on the selected hosts (its running step is cut short, and that run fails). Break the locks? [y/N] ";
    if yes_no(&mut std::io::stderr().lock(), question) {
        Ok(())
    } else {
        Err(Error::Usage(
            "cancelled: no lock was broken, nothing was changed".into(),
        ))
    }
}

/// Shows `shown` (the plans, new host keys, hosts not planned) and asks whether to apply
/// `changes` changes on `hosts` hosts; with no change, says so (when something was planned)
/// and goes on without asking. Whether to apply.
pub fn confirm_apply(shown: &str, changes: usize, hosts: usize, planned: bool) -> bool {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{shown}");
    if changes == 0 {
        if planned {
            let _ = writeln!(out, "\nNothing to change.");
        }
        return true;
    }
    let question = format!(
        "\nApply {changes} change{} on {hosts} host{}? [y/N] ",
        if changes == 1 { "" } else { "s" },
        if hosts == 1 { "" } else { "s" }
    );
    let yes = yes_no(&mut out, &question);
    if !yes {
        let _ = writeln!(out, "Cancelled: nothing was changed.");
    }
    yes
}
