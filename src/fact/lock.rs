//! The apply lock of a host, taken in the same script (and round trip) as the first probe.
//!
//! A process started by the probe (`setsid`, detached from the command) holds an exclusive
//! `flock` on `/var/lib/claw-provision/apply.lock` for as long as this run's SSH connection lives:
//! it watches the connection's `sshd` process (the nearest `sshd`/`sshd-session` above the
//! probe) and exits when it is gone. So a run that ends, dies or loses its connection releases
//! the lock by itself (within 1 s of sshd noticing); nothing stale is left to clean up. A run
//! that finds the lock taken waits up to 2 s for it (the previous run's holder may be exiting),
//! then reports the holder.
//! The holder's description (operator, machine, pid, playbook, start time) is kept beside the
//! lock for the refusal message of a second apply. `force` ends the other run's connection
//! (hence its holder, and that run) first. Without root, the lock is the login's own
//! (`~/.claw-provision`).
//!
//! The only side effects of the probe are these (taken for `apply` only, never for `plan`).

use super::FactError;
use crate::quote::quote;

/// The lock directory on the target.
pub const DIR: &str = "/var/lib/claw-provision";

/// What the probe reported about the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// This run holds it now.
    Taken,
    /// Another run holds it: its description.
    Held(String),
    /// It could not be taken: why.
    Error(String),
}

/// The probe section that takes the lock. `holder`: who asks (one line).
pub fn command(holder: &str, force: bool) -> String {
    let holder: String = holder
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        r#"claw_lock() {{
  d={dir}
  # Not root (no become): a lock of this login's own.
  # (`mkdir` only when missing: every process costs the host a fork.)
  if [ -d "$d" ] && [ -w "$d" ]; then :
  elif mkdir -p -m 0755 "$d" 2>/dev/null && [ -w "$d" ]; then :
  else d="${{HOME:-/tmp}}/.claw-provision"; [ -d "$d" ] || mkdir -p -m 0700 "$d" 2>/dev/null; fi
  for t in flock setsid mkfifo timeout; do
    command -v "$t" >/dev/null 2>&1 || {{ printf '@lock\terror\tno %s command on the host (util-linux, coreutils)\n' "$t"; return; }}
  done
  # The nearest sshd above this shell (shell builtins only: no process per level).
  conn=; p=$$
  while [ -n "$p" ] && [ "$p" -gt 1 ]; do
    c=; IFS= read -r c <"/proc/$p/comm" 2>/dev/null
    case $c in sshd|sshd-session) conn=$p; break ;; esac
    q=
    while IFS=' 	' read -r k v; do [ "$k" = PPid: ] && {{ q=$v; break; }}; done <"/proc/$p/status" 2>/dev/null
    p=$q
  done
  [ -n "$conn" ] || {{ printf '@lock\terror\tno sshd process above this command: cannot tie the lock to the connection\n'; return; }}
  f="$d/.answer.$$"
  [ ! -e "$f" ] || rm -f "$f"
  mkfifo -m 0600 "$f" || {{ printf '@lock\terror\tcannot make a fifo in %s\n' "$d"; return; }}
  setsid sh -c '
    said=
    say() {{ said=1; echo "$1" >"$2"; }}
    trap "[ -n \"\$said\" ] || echo \"the lock holder failed\" >\"$2\"" EXIT
    command exec 9>>"$1/apply.lock" 2>/dev/null || {{ say "cannot open $1/apply.lock" "$2"; exit 0; }}
    if ! flock -w 2 9; then
      if [ "$5" = force ]; then
        # End the other run: its connection (checked to be an sshd process), hence its holder.
        old=$(sed -n "s/^conn=//p" "$1/apply.holder" 2>/dev/null)
        case $(cat "/proc/$old/comm" 2>/dev/null) in sshd|sshd-session) kill "$old" 2>/dev/null ;; esac
        flock -w 15 9 || {{ say "the other run did not let go within 15 s" "$2"; exit 0; }}
      else
        say held "$2"; exit 0
      fi
    fi
    printf "%s since %s\nconn=%s\n" "$4" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$3" >"$1/apply.holder.tmp" &&
      mv -f "$1/apply.holder.tmp" "$1/apply.holder"
    say ok "$2"
    exec </dev/null >/dev/null 2>&1
    # Alive = it exists and is not a zombie (an exited sshd nobody reaped yet counts as gone).
    # Shell builtins and one `sleep` a second: a fleet of holders must not load its hosts.
    alive() {{
      s=
      while read -r k v; do [ "$k" = State: ] && {{ s=$v; break; }}; done <"/proc/$1/status" 2>/dev/null
      case $s in ""|Z*) return 1 ;; esac
    }}
    while alive "$3"; do sleep 1; done
    rm -f "$1/apply.holder"
  ' claw-lock "$d" "$f" "$conn" {holder} {force} </dev/null >/dev/null 2>&1 &
  r=$(timeout 30 sh -c 'IFS= read -r r <"$1" && printf %s "$r"' claw-lock-wait "$f") || r="no answer from the lock holder"
  rm -f "$f"
  case $r in
    ok) printf '@lock\ttaken\n' ;;
    held) printf '@lock\theld\t%s\n' "$(head -n 1 "$d/apply.holder" 2>/dev/null | tr '\t' ' ' | cut -c 1-300)" ;;
    *) printf '@lock\terror\t%s\n' "$r" ;;
  esac
}}
claw_lock
"#,
        dir = quote(DIR),
        holder = quote(&holder),
        force = if force { "force" } else { "no" },
    )
}

/// Parses the fields of the `@lock` record.
pub fn parse(fields: &[&str]) -> Result<LockState, FactError> {
    match fields {
        ["taken"] => Ok(LockState::Taken),
        ["held", who] => Ok(LockState::Held(if who.trim().is_empty() {
            "another run (its description is missing)".into()
        } else {
            who.trim().to_string()
        })),
        ["held"] => Ok(LockState::Held("another run".into())),
        ["error", why] => Ok(LockState::Error(why.to_string())),
        _ => Err(FactError("bad lock record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records() {
        assert_eq!(parse(&["taken"]).unwrap(), LockState::Taken);
        assert_eq!(
            parse(&["held", "ann@laptop pid 7 since 2026-11-28T10:00:00Z"]).unwrap(),
            LockState::Held("ann@laptop pid 7 since 2026-11-28T10:00:00Z".into())
        );
        assert_eq!(
            parse(&["error", "no flock command"]).unwrap(),
            LockState::Error("no flock command".into())
        );
        assert!(parse(&["what"]).is_err());
    }

    #[test]
    fn the_holder_is_quoted_and_on_one_line() {
        let c = command("ann's\nlaptop $(reboot)", false);
        assert!(c.contains("'ann'\\''s laptop $(reboot)'"), "{c}");
        assert!(c.contains(" no </dev/null"));
        assert!(command("x", true).contains(" force </dev/null"));
    }
}
