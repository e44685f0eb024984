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
    /// Another run holds it: its description, and the client id it recorded
    /// ([`local_client`]: machine, pid and start time of the `claw-provision` process).
    Held { who: String, client: Option<String> },
    /// It could not be taken: why.
    Error(String),
}

/// The probe section that takes the lock. `holder`: who asks (one line); `client`: this
/// process ([`local_client`]), recorded so that a later run from the same machine can tell that
/// the holder's run is gone.
pub fn command(holder: &str, client: &str, force: bool) -> String {
    let client: String = client
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ':' || *c == '-')
        .collect();
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
    printf "%s since %s\nconn=%s\nclient=%s\n" "$4" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$3" "$6" >"$1/apply.holder.tmp" &&
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
  ' claw-lock "$d" "$f" "$conn" {holder} {force} {client} </dev/null >/dev/null 2>&1 &
  r=$(timeout 30 sh -c 'IFS= read -r r <"$1" && printf %s "$r"' claw-lock-wait "$f") || r="no answer from the lock holder"
  rm -f "$f"
  case $r in
    ok) printf '@lock\ttaken\n' ;;
    held) printf '@lock\theld\t%s\t%s\n' "$(head -n 1 "$d/apply.holder" 2>/dev/null | tr '\t' ' ' | cut -c 1-300)" \
      "$(sed -n 's/^client=//p' "$d/apply.holder" 2>/dev/null | tr -cd '0-9a-zA-Z:-' | cut -c 1-100)" ;;
    *) printf '@lock\terror\t%s\n' "$r" ;;
  esac
}}
claw_lock
"#,
        dir = quote(DIR),
        holder = quote(&holder),
        force = if force { "force" } else { "no" },
        client = quote(&client),
    )
}

/// This process as a lock client: `MACHINE:PID:START`, the machine's `/etc/machine-id` (else
/// its host name), our pid and our start time (in clock ticks since boot, from
/// `/proc/self/stat`; a pid reused later has another).
pub fn local_client() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let pid = std::process::id();
        format!("{}:{pid}:{}", machine_id(), start_time(pid).unwrap_or(0))
    })
    .clone()
}

/// Whether `client` (as recorded by [`command`]) is a process of this machine that is no longer
/// running: its run is gone (killed, or it lost its connection and ended), and only the host's
/// sshd has not noticed yet (a cut link: until its running command ends, or
/// `ClientAliveInterval`). `false` for another machine's client, ours alive, or anything unclear.
pub fn local_client_gone(client: &str) -> bool {
    let mut parts = client.rsplitn(3, ':');
    let (Some(start), Some(pid), Some(machine)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(start), Ok(pid)) = (start.parse::<u64>(), pid.parse::<u32>()) else {
        return false;
    };
    if machine != machine_id() || start == 0 || pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    match start_time(pid) {
        Some(t) => t != start,
        // Not in /proc: gone only if the kernel says there is no such process (with /proc
        // mounted `hidepid`, another user's live process is invisible there: EPERM, alive).
        // SAFETY: signal 0 only checks for existence and permission; it sends nothing.
        None => {
            let r = unsafe { libc::kill(pid as i32, 0) };
            r != 0 && io_errno() == Some(libc::ESRCH)
        }
    }
}

fn io_errno() -> Option<i32> {
    std::io::Error::last_os_error().raw_os_error()
}

fn machine_id() -> String {
    let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let id: String = id
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    if !id.is_empty() {
        return id;
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        let name: String = String::from_utf8_lossy(&buf[..end])
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !name.is_empty() {
            return name;
        }
    }
    "unknown".into()
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), `None` if it is not running.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Parses the fields of the `@lock` record.
pub fn parse(fields: &[&str]) -> Result<LockState, FactError> {
    match fields {
        ["taken"] => Ok(LockState::Taken),
        ["held", who, rest @ ..] if rest.len() <= 1 => Ok(LockState::Held {
            who: if who.trim().is_empty() {
                "another run (its description is missing)".into()
            } else {
                who.trim().to_string()
            },
            client: rest
                .first()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
        }),
        ["held"] => Ok(LockState::Held {
            who: "another run".into(),
            client: None,
        }),
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
            LockState::Held {
                who: "ann@laptop pid 7 since 2026-11-28T10:00:00Z".into(),
                client: None
            }
        );
        assert_eq!(
            parse(&["held", "ann@laptop pid 7", "abc:7:99"]).unwrap(),
            LockState::Held {
                who: "ann@laptop pid 7".into(),
                client: Some("abc:7:99".into())
            }
        );
        assert_eq!(
            parse(&["held", "x", ""]).unwrap(),
            LockState::Held {
                who: "x".into(),
                client: None
            }
        );
        assert_eq!(
            parse(&["error", "no flock command"]).unwrap(),
            LockState::Error("no flock command".into())
        );
        assert!(parse(&["what"]).is_err());
    }

    #[test]
    fn the_holder_is_quoted_and_on_one_line() {
        let c = command("ann's\nlaptop $(reboot)", "m1:7:99", false);
        assert!(c.contains("'ann'\\''s laptop $(reboot)'"), "{c}");
        assert!(c.contains(" no 'm1:7:99' </dev/null"), "{c}");
        assert!(command("x", "a:1:2'$(x)", true).contains(" force 'a:1:2x' </dev/null"));
    }

    #[test]
    fn a_client_of_this_machine_is_gone_when_its_process_is() {
        let me = local_client();
        assert!(!local_client_gone(&me), "{me}");
        let (machine, rest) = me.split_once(':').unwrap();
        let (pid, start) = rest.split_once(':').unwrap();
        let start: u64 = start.parse().unwrap();
        assert!(start > 0);
        // Our pid with another start time: a reused pid, the recorded run is gone.
        assert!(local_client_gone(&format!("{machine}:{pid}:{}", start + 1)));
        // A pid no process has.
        assert!(local_client_gone(&format!("{machine}:4194304:{start}")));
        // Another machine's client, or a record we cannot read: never judged gone.
        assert!(!local_client_gone(&format!(
            "other{machine}:4194304:{start}"
        )));
        assert!(!local_client_gone("garbage"));
        assert!(!local_client_gone(&format!("{machine}:x:{start}")));
    }
}
