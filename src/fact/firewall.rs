//! Fact: the live state of one nftables table owned by a `firewall` step.
//!
//! Reports whether `nft` exists, the sha256 of `nft list table inet NAME` (the LIVE table, not a
//! file), the sha256 of that listing recorded right after the last apply, the sha256 of the
//! ruleset file the last apply loaded, and (under systemd) the boot unit's file and state.

use super::FactError;
use crate::quote::quote;

/// Where a `firewall` step keeps its applied ruleset and its state, per table name.
pub(crate) fn ruleset_path(table: &str) -> String {
    format!("/etc/claw-provision/firewall/{table}.nft")
}

/// sha256 of the live listing right after the last apply.
pub(crate) fn state_path(table: &str) -> String {
    format!("/var/lib/claw-provision/firewall/{table}.sha256")
}

/// The systemd template unit that loads the ruleset at boot (instance = table name).
pub(crate) const UNIT_PATH: &str = "/etc/systemd/system/claw-provision-firewall@.service";

/// The unit instance of a table.
pub(crate) fn unit_instance(table: &str) -> String {
    format!("claw-provision-firewall@{table}.service")
}

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallState {
    /// `nft` is not installed (yet).
    NoNft,
    Seen {
        /// sha256 of `nft list table inet NAME`; None when the table does not exist.
        live: Option<String>,
        /// sha256 recorded by the last apply; None when there is no state file.
        recorded: Option<String>,
        /// sha256 of the ruleset file of the last apply; None when absent.
        ruleset: Option<String>,
        /// None: no systemd on the host; else the unit file's sha256 (None = absent) and
        /// whether the table's instance is enabled.
        boot: Option<(Option<String>, bool)>,
    },
}

/// Shell function shared by every firewall probe (defined once per script, read-only).
pub(crate) const FUNCTION: &str = r#"claw_fw() {
  if ! command -v nft >/dev/null 2>&1; then printf '@%s\tno-nft\n' "$1"; return; fi
  # One `nft` (a process costs the host a fork): a missing table is its ENOENT error.
  if l=$(nft list table inet "$2" 2>&1); then
    l=$(printf '%s\n' "$l" | sha256sum); l=${l%% *}
  else
    case $l in
    "Error: "*"No such file or directory"*) l=absent ;;
    *) printf '@%s\terror\t%s\n' "$1" "$(printf '%s' "$l" | tr '\t\n' '  ' | cut -c1-300)"; return ;;
    esac
  fi
  r=absent; [ -f "$3" ] && { r=; IFS= read -r r <"$3"; [ -n "$r" ] || r=empty; }
  f=absent; [ -f "$4" ] && { f=$(sha256sum < "$4"); f=${f%% *}; }
  if [ -d /run/systemd/system ]; then
    u=absent; [ -f "$5" ] && { u=$(sha256sum < "$5"); u=${u%% *}; }
    e=$(systemctl is-enabled "$6" 2>/dev/null) || true; [ -n "$e" ] || e=unknown
  else u=no-systemd; e=-; fi
  printf '@%s\tnft\t%s\t%s\t%s\t%s\t%s\n' "$1" "$l" "$r" "$f" "$u" "$e"
}
"#;

/// The probe line for one table.
pub(crate) fn command(id: usize, table: &str) -> String {
    format!(
        "claw_fw {id} {} {} {} {} {}\n",
        quote(table),
        quote(&state_path(table)),
        quote(&ruleset_path(table)),
        quote(UNIT_PATH),
        quote(&unit_instance(table)),
    )
}

fn sha(what: &str, s: &str) -> Result<Option<String>, FactError> {
    if s == "absent" {
        return Ok(None);
    }
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(Some(s.to_ascii_lowercase()))
    } else {
        let s: String = s.chars().take(70).collect();
        Err(FactError(format!("bad sha256 of the {what}: `{s}`")))
    }
}

/// Parses the fields after `@ID`.
pub(crate) fn parse(fields: &[&str]) -> Result<FirewallState, FactError> {
    match fields {
        ["no-nft"] => Ok(FirewallState::NoNft),
        ["error", msg] => Err(FactError(format!(
            "cannot read the nftables ruleset (does the step need `become`?): {}",
            msg.trim()
        ))),
        ["nft", live, recorded, ruleset, unit, enabled] => {
            let live = sha("live table", live)?;
            // A damaged state file counts as no record: the next apply rewrites it.
            let recorded = sha("state file", recorded).ok().flatten();
            let ruleset = sha("ruleset file", ruleset)?;
            let boot = match *unit {
                "no-systemd" => None,
                u => Some((sha("boot unit", u)?, *enabled == "enabled")),
            };
            Ok(FirewallState::Seen {
                live,
                recorded,
                ruleset,
                boot,
            })
        }
        _ => Err(FactError(format!(
            "bad firewall record `{}`",
            fields.join("\t")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let cases: Vec<(Vec<&str>, Result<FirewallState, &str>)> = vec![
            (vec!["no-nft"], Ok(FirewallState::NoNft)),
            (
                vec!["nft", "absent", "absent", "absent", "no-systemd", "-"],
                Ok(FirewallState::Seen {
                    live: None,
                    recorded: None,
                    ruleset: None,
                    boot: None,
                }),
            ),
            (
                vec!["nft", &a, &a, &b, &a, "enabled"],
                Ok(FirewallState::Seen {
                    live: Some(a.clone()),
                    recorded: Some(a.clone()),
                    ruleset: Some(b.to_ascii_lowercase()),
                    boot: Some((Some(a.clone()), true)),
                }),
            ),
            (
                vec!["nft", &a, "empty", "absent", "absent", "disabled"],
                Ok(FirewallState::Seen {
                    live: Some(a.clone()),
                    recorded: None,
                    ruleset: None,
                    boot: Some((None, false)),
                }),
            ),
            (
                vec!["error", "Operation not permitted"],
                Err("does the step need `become`?"),
            ),
            (
                vec!["nft", "xyz", "absent", "absent", "no-systemd", "-"],
                Err("bad sha256 of the live table"),
            ),
            (vec!["nft", &a], Err("bad firewall record")),
            (vec![], Err("bad firewall record")),
            (vec!["weird", "stuff"], Err("bad firewall record")),
        ];
        for (fields, want) in cases {
            let got = parse(&fields);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{fields:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{fields:?}: {e}"),
                (g, w) => panic!("{fields:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn command_quotes_its_arguments() {
        assert_eq!(
            command(2, "claw_provision"),
            "claw_fw 2 'claw_provision' '/var/lib/claw-provision/firewall/claw_provision.sha256' '/etc/claw-provision/firewall/claw_provision.nft' '/etc/systemd/system/claw-provision-firewall@.service' 'claw-provision-firewall@claw_provision.service'\n"
        );
    }

    #[test]
    fn probe_runs_without_nft_or_table() {
        // Runs the snippet locally with a PATH lacking nft: a record, not a failure.
        let script = format!("PATH=/nonexistent\n{FUNCTION}{}", command(0, "t"));
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "@0\tno-nft\n");
    }
}
