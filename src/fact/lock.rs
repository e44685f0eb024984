//! The apply lock of a host, taken in the same script (and round trip) as the first probe.
//!
//! A process started by the probe (`setsid`, detached from the command) holds an exclusive
//! `flock` on `/var/lib/claw-provision/lock/apply.lock` for as long as this run's SSH connection
//! lives: it watches the connection's `sshd` process (the nearest `sshd`/`sshd-session` above the
//! probe) and exits when it is gone. So a run that ends, dies or loses its connection releases
//! the lock by itself (within 1 s of sshd noticing); nothing stale is left to clean up. A run
//! that finds the lock taken waits up to 2 s for it (the previous run's holder may be exiting),
//! then reports the holder.
//!
//! **Without `flock`** (BusyBox has none), the lock is a symbolic link, `apply.lockd`, naming
//! the holder as `PID:START` (its start time: a reused pid is another process), made atomically
//! by `ln -s` and removed when the holder exits (only while it still names it). A link whose
//! holder is gone (killed), or that names a process that is not a lock holder of this account,
//! is stale: it is removed under a guard (`apply.lockd.break`, made the same way) and read again
//! there, so two runs never both remove it, then taken as usual.
//!
//! **Root-only.** `flock` needs only an open file, so a lock file another account can read is a
//! lock any local user can hold forever. The lock directory is `0700` and its files `0600`, all
//! root's; the probe checks them with `stat` (which does not follow links), fixes their modes,
//! and refuses anything else there (a link, another owner, another type: only root can have put
//! it there, and replacing it could race with another run), as it refuses a
//! `/var/lib/claw-provision` that is a link or that another account can write.
//!
//! **Older versions** kept a `0644` lock at `/var/lib/claw-provision/apply.lock`. It is made
//! `0600` (as is its `apply.holder`), and taken too while this run holds the host when it is
//! free, so an older version's apply waits for this one. When it is held, the holder is looked
//! up in `/proc/locks`: a root process is an older version applying (refused like any held lock,
//! or broken with force); another account's process (which opened it while it was readable) is
//! ignored.
//!
//! The holder's description (operator, machine, pid, playbook, start time) is kept beside the
//! lock for the refusal message of a second apply. `force` ends the other run first: its
//! connection's sshd is stopped (so it starts nothing more), then it and every process below it
//! (the running step) are ended and waited for (`KILL` after 10 s); only then is the lock taken,
//! so two applies never overlap. The answer names the run that was ended. Without root, the lock
//! is the login's own (`~/.claw-provision`).
//!
//! The only side effects of the probe are these (taken for `apply` only, never for `plan`).

use super::FactError;
use crate::quote::quote;

/// The state directory on the target; the lock of older versions is `apply.lock` there.
pub(crate) const BASE: &str = "/var/lib/claw-provision";

/// What the probe reported about the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// This run holds it now.
    Taken,
    /// This run holds it now, after ending the run that held it (`force`): that run's
    /// description.
    TakenFrom(String),
    /// Another run holds it: its description, and the client id it recorded
    /// ([`local_client`]: instance, pid and start time of the `claw-provision` process).
    Held { who: String, client: Option<String> },
    /// It could not be taken: why.
    Error(String),
}

/// The probe section that takes the lock. `holder`: who asks (one line); `client`: this
/// process ([`local_client`]), recorded so that a later run from the same machine can tell that
/// the holder's run is gone. The script's parts share its shell variables (`$b`, `$d`, `$old`,
/// `$conn`, `$f`), set in this order.
pub(crate) fn command(holder: &str, client: &str, force: bool) -> String {
    let client: String = client
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ':' || *c == '-')
        .collect();
    let holder: String = holder
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // The holder process's arguments: $1 the lock directory, $2 the fifo, $3 our sshd, $4 who
    // holds, $5 force or not, $6 our client id, $7 the older version's lock file (if any).
    format!(
        "{START}  b={base} old=\n{ROOT_ONLY}{CONNECTION}{HOLDER_START}{HOLDER_FUNCTIONS}{HOLDER_TAKE}  \
         ' claw-lock \"$d\" \"$f\" \"$conn\" {holder} {force} {client} \"$old\" </dev/null >/dev/null 2>&1 &\n{ANSWER}",
        base = quote(BASE),
        holder = quote(&holder),
        force = if force { "force" } else { "no" },
        client = quote(&client),
    )
}

/// The start: a subshell function (its variables and functions stay out of the rest of the
/// probe), `err` to report, the user id, and the tools the lock needs.
const START: &str = r#"# In a subshell: its variables and functions stay out of the rest of the probe.
claw_lock() (
  err() { printf '@lock\terror\t%s\n' "$1"; }
  u=
  while read -r k v w; do [ "$k" = Uid: ] && { u=$v; break; }; done </proc/self/status
  for t in setsid mkfifo timeout stat; do
    command -v "$t" >/dev/null 2>&1 || { err "no $t command on the host (util-linux, coreutils)"; return; }
  done
"#;

/// The lock directory `$d`: as root, `$b/lock`, root-only (each file there looked at
/// without following links, modes fixed, anything else refused; the older version's lock noted in
/// `$old`); else the login's own.
const ROOT_ONLY: &str = r#"  if [ "$u" = 0 ]; then
    # Root-only: the directory 0700, its files 0600, root's; looked at without following links.
    d=$b/lock
    [ ! -L "$b" ] || { err "$b is a symbolic link: refusing to keep the apply lock there"; return; }
    [ -d "$b" ] || mkdir -p -m 0755 "$b" 2>/dev/null || { err "cannot make $b"; return; }
    # Only root can have made what is in $b: anything unexpected there is refused (replacing it
    # could race with another run doing the same), never followed.
    bad= seen= made=
    while read -r n o m t; do
      [ -z "$bad" ] || break
      case $t in "regular file"|"regular empty file") t=file ;; esac
      case $n in
        "$b") seen=1; [ "$t" = directory ] && [ "$o" = 0 ] && [ $((0$m & 022)) = 0 ] ||
          bad="$b is not a directory of root's that only root can write (owner uid $o, mode $m, $t)" ;;
        "$d") made=1
          if [ "$t" != directory ] || [ "$o" != 0 ]; then
            bad="$d is not a directory of root's ($t, owner uid $o): remove it"
          elif [ "$m" != 700 ]; then chmod 0700 "$d" || bad="cannot chmod $d"; fi ;;
        "$d/"*) if [ "$t" != file ] || [ "$o" != 0 ]; then
            bad="$n is not a file of root's ($t, owner uid $o): remove it"
          elif [ "$m" != 600 ]; then chmod 0600 "$n" || bad="cannot chmod $n"; fi ;;
        # Left by older versions (0644): made root-only; the lock is taken too (below).
        "$b/apply.lock"|"$b/apply.holder") if [ "$t" = file ] && [ "$o" = 0 ]; then
            [ "$m" = 600 ] || chmod 0600 "$n"
            [ "$n" != "$b/apply.lock" ] || old=$n
          fi ;;
      esac
    done <<CLAW_LOCK_STAT
$(stat -c '%n %u %a %F' -- "$b" "$d" "$d/apply.lock" "$d/apply.holder" "$b/apply.lock" "$b/apply.holder" 2>/dev/null)
CLAW_LOCK_STAT
    [ -n "$seen" ] || bad="cannot stat $b"
    [ -z "$bad" ] || { err "$bad"; return; }
    # Missing: made now (another run may make it at the same time).
    [ -n "$made" ] || mkdir -m 0700 "$d" 2>/dev/null || { [ -d "$d" ] && [ ! -L "$d" ]; } ||
      { err "cannot make $d"; return; }
  else
    # Not root (no become): a lock of this login's own.
    d="${HOME:-/tmp}/.claw-provision"; [ -d "$d" ] || mkdir -p -m 0700 "$d" 2>/dev/null
  fi
"#;

/// `$conn`: the connection's sshd process, the nearest above this shell.
const CONNECTION: &str = r#"  # The nearest sshd above this shell (shell builtins only: no process per level).
  conn=; p=$$
  while [ -n "$p" ] && [ "$p" -gt 1 ]; do
    c=; IFS= read -r c <"/proc/$p/comm" 2>/dev/null
    case $c in sshd|sshd-session) conn=$p; break ;; esac
    q=
    while IFS=' 	' read -r k v; do [ "$k" = PPid: ] && { q=$v; break; }; done <"/proc/$p/status" 2>/dev/null
    p=$q
  done
  [ -n "$conn" ] || { err "no sshd process above this command: cannot tie the lock to the connection"; return; }
"#;

/// The fifo the holder answers through, and the start of the holder process: detached
/// (`setsid`), its arguments named, `say` to answer (once; "failed" if it exits silent).
const HOLDER_START: &str = r#"  f="$d/.answer.$$"
  [ ! -e "$f" ] || rm -f "$f"
  mkfifo -m 0600 "$f" || { err "cannot make a fifo in $d"; return; }
  setsid sh -c '
    umask 077
    d=$1 f=$2 me=$3 old=$7
    said=
    say() { said=1; echo "$1" >"$f"; }
    trap "[ -n \"\$said\" ] || echo \"the lock holder failed\" >\"\$f\"" EXIT
"#;

/// The holder's functions: `alive` (a process, not a zombie), `stop_run` (ends another
/// run: its sshd stopped, it and everything below ended and waited for), `old_by_root` (an
/// older version applying holds the old lock), `take` (the lock: `flock`, or a symbolic link
/// naming the holder as `PID:START` where the host has no flock), `unstale` (removes a stale
/// link under a guard link), `ident` (a process's `PID:START`) and `holder` (whether a link's
/// `PID:START` is a live lock holder of this account).
const HOLDER_FUNCTIONS: &str = r#"    # Alive = it exists and is not a zombie (an exited sshd nobody reaped yet counts as gone).
    alive() {
      s=
      while read -r k v; do [ "$k" = State: ] && { s=$v; break; }; done <"/proc/$1/status" 2>/dev/null
      case $s in ""|Z*) return 1 ;; esac
    }
    # Ends the run whose connection is the sshd process $1 (never ours): stopped first (it
    # starts nothing more), then it and every process below it are ended, and waited for.
    stop_run() {
      c=$1
      [ -n "$c" ] && [ "$c" != "$me" ] || return 0
      n=; IFS= read -r n <"/proc/$c/comm" 2>/dev/null
      case $n in sshd|sshd-session) ;; *) return 0 ;; esac
      kill -STOP "$c" 2>/dev/null
      map=
      for s in /proc/[0-9]*/status; do
        p=${s#/proc/}; p=${p%/status}; q=
        while read -r k v; do [ "$k" = PPid: ] && { q=$v; break; }; done <"$s" 2>/dev/null
        map="$map $p:$q"
      done
      all=" $c "; more=1
      while [ -n "$more" ]; do
        more=
        for e in $map; do
          case $all in *" ${e%%:*} "*) continue ;; esac
          case $all in *" ${e#*:} "*) all="$all${e%%:*} "; more=1 ;; esac
        done
      done
      kill -TERM $all 2>/dev/null; kill -CONT "$c" 2>/dev/null
      i=0
      while :; do
        left=; for p in $all; do ! alive "$p" || left="$left $p"; done
        [ -n "$left" ] || return 0
        [ $i -lt 50 ] || break
        sleep 0.2; i=$((i + 1))
      done
      kill -KILL $left 2>/dev/null; sleep 0.5
    }
    # Whether a root process (other than this one) has the old lock file open: an older
    # version of claw-provision applying. (Not /proc/locks: it names the process that took the
    # lock, the `flock` command, long gone.) A process of another account is ignored.
    old_by_root() {
      for x in /proc/[0-9]*/fd/*; do
        [ "$x" -ef "$old" ] || continue
        p=${x#/proc/}; p=${p%%/*}
        [ "$p" != $$ ] || continue
        u=; while read -r k v w; do [ "$k" = Uid: ] && { u=$v; break; }; done <"/proc/$p/status" 2>/dev/null
        [ "$u" != 0 ] || return 0
      done
      return 1
    }
    # The lock, waited for at most $1 s: `flock` on $d/apply.lock where the host has it
    # (util-linux), else (BusyBox has no flock) the symbolic link $d/apply.lockd naming this
    # holder (`PID:START`, see `ident`), made atomically by `ln -s`; a link whose holder is gone
    # (killed; its pid maybe reused) is stale and removed (`unstale`), then taken as usual.
    mine= myid= lu=
    take() {
      if command -v flock >/dev/null 2>&1; then flock -w "$1" 9; return; fi
      myid=$(ident $$) || return 1
      while read -r k v w; do [ "$k" = Uid: ] && { lu=$v; break; }; done <"/proc/$$/status"
      i=0
      while ! ln -s "$myid" "$d/apply.lockd" 2>/dev/null; do
        h=$(readlink "$d/apply.lockd" 2>/dev/null) || h=
        [ $i -lt $(($1 * 5)) ] || return 1
        i=$((i + 1))
        [ -n "$h" ] && ! holder "$h" && unstale "$d/apply.lockd" "$h" || sleep 0.2
      done
      mine=1
    }
    # Removes the link $1 if it still names $2 (a holder that is gone). Under a guard, the link
    # "$1.break" naming this holder, made atomically, and the link read again under it: two runs
    # never both remove it (one could remove the link the other has just made). A guard whose
    # holder is gone is removed the same way (three levels at most). False when another holder
    # is at it.
    unstale() {
      if ln -s "$myid" "$1.break" 2>/dev/null; then
        [ "$(readlink "$1" 2>/dev/null)" != "$2" ] || rm -f "$1"
        rm -f "$1.break"
        return 0
      fi
      g=$(readlink "$1.break" 2>/dev/null) || return 0
      case $1 in *.break.break) return 1 ;; esac
      ! holder "$g" && unstale "$1.break" "$g"
    }
    # The identity of process $1: `PID:START`, START its start time (field 22 of
    # /proc/PID/stat, after the command name in parentheses): a pid reused later has another.
    ident() {
      st=; IFS= read -r st 2>/dev/null <"/proc/$1/stat" || [ -n "$st" ] || return 1
      set -- "$1" ${st##*)}
      [ $# -ge 21 ] || return 1
      echo "$1:${21}"
    }
    # Whether $1 (`PID:START`) names a lock holder: that very process (its start time), alive, of
    # this account (root when root holds the lock), its command line that of a holder.
    holder() {
      hp=${1%%:*}
      case $hp in ""|*[!0-9]*) return 1 ;; esac
      [ "$(ident "$hp")" = "$1" ] && alive "$hp" || return 1
      hu=; while read -r k v w; do [ "$k" = Uid: ] && { hu=$v; break; }; done 2>/dev/null <"/proc/$hp/status"
      [ "$hu" = "$lu" ] || return 1
      case $(tr "\0" " " <"/proc/$hp/cmdline" 2>/dev/null) in *claw-lock*) ;; *) return 1 ;; esac
    }
"#;

/// The holder takes the lock (and the old one; with `force`, ending their holders first),
/// writes its description, answers, and holds the lock while the connection's sshd lives.
const HOLDER_TAKE: &str = r#"    command exec 9>>"$d/apply.lock" 2>/dev/null || { say "cannot open $d/apply.lock"; exit 0; }
    broke= forced=
    if ! take 2; then
      [ "$5" = force ] || { say held; exit 0; }
      forced=1
      broke=$(head -n 1 "$d/apply.holder" 2>/dev/null)
      stop_run "$(sed -n "s/^conn=//p" "$d/apply.holder" 2>/dev/null)"
      take 15 || { say "the other run did not let go within 15 s"; exit 0; }
    fi
    # The lock file of older versions: taken too while this run holds the host, so that an
    # older version waits for it; held by root: an older version is applying.
    # (Not waited for when another account holds it: that must not slow every apply.)
    if [ -n "$old" ] && command -v flock >/dev/null 2>&1 && command exec 8<"$old" 2>/dev/null && ! flock -n 8; then
      if ! old_by_root; then
        exec 8<&-
      elif ! flock -w 2 8; then
        [ "$5" = force ] || { say held-old; exit 0; }
        forced=1
        broke=$(head -n 1 "${old%/*}/apply.holder" 2>/dev/null)
        stop_run "$(sed -n "s/^conn=//p" "${old%/*}/apply.holder" 2>/dev/null)"
        flock -w 15 8 || { say "the run of an older version did not let go within 15 s"; exit 0; }
      fi
    fi
    printf "%s since %s\nconn=%s\nclient=%s\n" "$4" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$3" "$6" >"$d/apply.holder.tmp" &&
      mv -f "$d/apply.holder.tmp" "$d/apply.holder"
    if [ -n "$forced" ]; then say "ok ${broke:-another run (its description is missing)}"; else say ok; fi
    exec </dev/null >/dev/null 2>&1
    # Shell builtins and one `sleep` a second: a fleet of holders must not load its hosts.
    while alive "$3"; do sleep 1; done
    rm -f "$d/apply.holder"
    # The link only while it still names this holder.
    [ -z "$mine" ] || [ "$(readlink "$d/apply.lockd" 2>/dev/null)" != "$myid" ] || rm -f "$d/apply.lockd"
"#;

/// Waits for the holder's answer (30 s) and prints the `@lock` record; then runs the function.
const ANSWER: &str = r#"  r=$(timeout 30 sh -c 'IFS= read -r r <"$1" && printf %s "$r"' claw-lock-wait "$f") || r="no answer from the lock holder"
  rm -f "$f"
  case $r in
    ok|"ok ") printf '@lock\ttaken\n' ;;
    ok\ *) printf '@lock\ttaken\t%s\n' "$(printf %s "${r#ok }" | tr '\t' ' ' | cut -c 1-300)" ;;
    held|held-old)
      [ "$r" = held ] || d=$b
      printf '@lock\theld\t%s\t%s\n' "$(head -n 1 "$d/apply.holder" 2>/dev/null | tr '\t' ' ' | cut -c 1-300)" \
      "$(sed -n 's/^client=//p' "$d/apply.holder" 2>/dev/null | tr -cd '0-9a-zA-Z:-' | cut -c 1-100)" ;;
    *) err "$r" ;;
  esac
)
claw_lock
"#;

/// This process as a lock client: `INSTANCE:PID:START`. INSTANCE is a digest of what tells this
/// running system from any other: `/etc/machine-id` (else the host name), the boot id
/// (`/proc/sys/kernel/random/boot_id`: machines cloned from one image share a machine id, not a
/// boot) and our pid namespace (containers of one image on one kernel share both); then our pid
/// and our start time (in clock ticks since boot, from `/proc/self/stat`; a pid reused later has
/// another). Without a boot id or a pid namespace to read, INSTANCE is `unknown`, which
/// [`local_client_gone`] never matches. Reads files: the command computes it once and passes it
/// in `run::RunOptions::lock_client`.
pub(crate) fn local_client() -> String {
    let pid = std::process::id();
    let instance = instance().unwrap_or_else(|| "unknown".into());
    format!("{instance}:{pid}:{}", start_time(pid).unwrap_or(0))
}

/// Whether `client` (as recorded by [`command`]) is a process of this very system (same
/// machine, boot and pid namespace) that is no longer running: its run is gone (killed, or it
/// lost its connection and ended), and only the host's sshd has not noticed yet (a cut link:
/// until its running command ends, or `ClientAliveInterval`). `false` for another system's
/// client (a clone of this machine included), ours alive, or anything unclear.
pub(crate) fn local_client_gone(client: &str) -> bool {
    let mut parts = client.rsplitn(3, ':');
    let (Some(start), Some(pid), Some(recorded)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(start), Ok(pid)) = (start.parse::<u64>(), pid.parse::<u32>()) else {
        return false;
    };
    if instance().as_deref() != Some(recorded) || start == 0 || pid == 0 || pid > i32::MAX as u32 {
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

/// This running system: a digest of machine id, boot id and pid namespace (see
/// [`local_client`]); `None` when the boot id or the pid namespace cannot be read.
fn instance() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let boot = boot.trim();
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    if boot.is_empty() {
        return None;
    }
    Some(instance_of(
        &machine_id(),
        boot,
        ns.as_os_str().as_encoded_bytes(),
    ))
}

fn instance_of(machine: &str, boot: &str, pid_ns: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [machine.as_bytes(), boot.as_bytes(), pid_ns] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(&h.finalize()[..16])
}

fn io_errno() -> Option<i32> {
    std::io::Error::last_os_error().raw_os_error()
}

fn machine_id() -> String {
    let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let id: String = id
        .trim()
        .chars()
        .filter(char::is_ascii_alphanumeric)
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
pub(crate) fn parse(fields: &[&str]) -> Result<LockState, FactError> {
    match fields {
        ["taken"] => Ok(LockState::Taken),
        ["taken", who] => Ok(LockState::TakenFrom(if who.trim().is_empty() {
            "another run".into()
        } else {
            who.trim().to_string()
        })),
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
        assert_eq!(
            parse(&["taken", "ann@laptop pid 7"]).unwrap(),
            LockState::TakenFrom("ann@laptop pid 7".into())
        );
        assert!(parse(&["what"]).is_err());
    }

    #[test]
    fn the_holder_is_quoted_and_on_one_line() {
        let c = command("ann's\nlaptop $(reboot)", "m1:7:99", false);
        assert!(c.contains("'ann'\\''s laptop $(reboot)'"), "{c}");
        assert!(c.contains(" no 'm1:7:99' \"$old\""), "{c}");
        assert!(command("x", "a:1:2'$(x)", true).contains(" force 'a:1:2x' \"$old\""));
    }

    /// The section is valid shell (it runs only on hosts, as root, under an sshd).
    #[test]
    fn the_script_parses() {
        for force in [false, true] {
            let out = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(command("ann", "m:1:2", force))
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    }

    #[test]
    fn clones_and_containers_are_other_instances() {
        let a = instance_of("m1", "b1", b"pid:[1]");
        assert_eq!(a, instance_of("m1", "b1", b"pid:[1]"));
        assert_eq!(a.len(), 32);
        // One image cloned: same machine id, another boot; or containers on one kernel.
        assert_ne!(a, instance_of("m1", "b2", b"pid:[1]"));
        assert_ne!(a, instance_of("m1", "b1", b"pid:[2]"));
        assert_ne!(a, instance_of("m2", "b1", b"pid:[1]"));
        assert_ne!(instance_of("m1b", "1", b""), instance_of("m1", "b1", b""));
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
        // Another system's client (another machine, a clone of this one booted on its own, an
        // older version's record without a boot id), or a record we cannot read: never gone.
        assert!(!local_client_gone(&format!(
            "other{machine}:4194304:{start}"
        )));
        assert!(!local_client_gone("garbage"));
        assert!(!local_client_gone(&format!("{machine}:x:{start}")));
    }

    /// The script is pinned (its sha256 for two inputs): cutting it into named parts left it
    /// byte for byte what it was. A deliberate change to the script updates these.
    #[test]
    fn the_script_is_pinned() {
        use sha2::Digest;
        let sha = |force| {
            hex::encode(sha2::Sha256::digest(command(
                "op@ws (pid 42)",
                "inst:42:7",
                force,
            )))
        };
        assert_eq!(
            sha(false),
            "467a55c31e01f4950aaf3be4cc5e45082d86eebdfa987f33da8256be0be88e1c"
        );
        assert_eq!(
            sha(true),
            "6cda2768c8e0a6bc3cf122f42aa1fa9198be4dec1602960ccfa91ba36dba0dd6"
        );
    }
}
