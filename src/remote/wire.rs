//! What a script becomes on the wire: the command line around it (`LC_ALL=C`, a remote
//! `timeout`, `sudo` for become) and, for a script holding secret material, the fixed loader
//! that reads it from stdin. Pure, unit-tested.

use super::Become;
use crate::quote::quote;
use crate::secret::Secret;
use std::time::Duration;

/// Prologue of every script: predictable output, a sane PATH, a known umask, and, where `rm`
/// is not GNU's, an `rm` that takes `-rf --one-file-system` even when it does not know that
/// option (it is then dropped). Told apart without starting a process: BusyBox installs its
/// applets as symbolic links, or as hard links to /bin/busybox; GNU's `rm` is a regular file of
/// its own. On a GNU host nothing is defined and scripts run as they always did.
const PROLOGUE: &str = concat!(
    "export LC_ALL=C PATH=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH\"; umask 022; cd / || exit 1\n",
    "if [ -h /bin/rm ] || [ -h /usr/bin/rm ] || [ /bin/rm -ef /bin/busybox ]; then rm() { if [ \"${1-} ${2-}\" = \"-rf --one-file-system\" ] && ! command rm --one-file-system -f 2>/dev/null; then shift 2; set -- -rf \"$@\"; fi; command rm \"$@\"; }; fi\n"
);

/// The command line that runs `script`: quoted as one `sh -c` argument, under `timeout`, and
/// under `sudo` when becoming another user. `send_password`: the become password is the first
/// line of stdin (`sudo -S`, or read away by the shell when a cached sudo timestamp makes sudo
/// skip it); else sudo may not ask (`-n`). Pure, unit-tested.
pub(crate) fn command_line(
    script: &str,
    become_: Option<&Become>,
    send_password: bool,
    timeout: Duration,
) -> String {
    let secs = timeout.as_secs().max(1);
    let inner = format!(
        "timeout -k 5 {secs} sh -c {}",
        quote(&format!("{PROLOGUE}{script}"))
    );
    match become_ {
        None => format!("exec {inner}"),
        Some(b) if send_password && b.password.is_some() => format!(
            "if sudo -n -u {u} -- true 2>/dev/null; then IFS= read -r _; fi; exec sudo -S -p '' -u {u} -- {inner}",
            u = quote(&b.user)
        ),
        Some(b) => format!("exec sudo -n -u {} -- {inner}", quote(&b.user)),
    }
}

/// The command that asks sudo whether it needs a password, sending none.
pub(super) fn sudo_asks_line(b: &Become) -> String {
    format!("exec sudo -n -u {} -- true", quote(&b.user))
}

/// Marks a script as private: it travels on stdin, never on the command line (see [`private`]).
const PRIVATE: &str = "# claw-provision: private\n";

/// The script marked private: `Remote` sends it on stdin, not as an argument, whatever it holds.
/// For scripts that carry secret material other than a value `Remote::hide` knows (the sha256
/// of a secret file's content, say).
pub(crate) fn private(script: &str) -> String {
    format!("{PRIVATE}{script}")
}

/// The command-line script that reads `lines` lines of script from stdin (shell builtins only:
/// `read` takes a pipe byte by byte, so the stdin that follows, an upload's content, is left
/// whole) and runs them in the same shell.
fn stdin_loader(lines: usize) -> String {
    format!(
        "claw_n={lines}; claw_s=; while [ \"$claw_n\" -gt 0 ] && IFS= read -r claw_l; do claw_s=\"$claw_s$claw_l\n\"; claw_n=$((claw_n - 1)); done\n\
         [ \"$claw_n\" -eq 0 ] || {{ echo 'claw-provision: the script did not arrive whole on stdin' >&2; exit 125; }}\n\
         unset claw_n claw_l; eval \"$claw_s\""
    )
}

/// What a script becomes on the wire: the command line's script and the bytes that precede
/// the command's own stdin. Pure, unit-tested.
pub(super) fn wire(script: &str, hidden: &[Secret]) -> (String, Vec<u8>) {
    let private = script.starts_with(PRIVATE)
        || hidden
            .iter()
            .any(|v| !v.is_empty() && script.contains(v.expose()));
    if !private {
        return (script.to_string(), Vec::new());
    }
    let mut body = script.strip_prefix(PRIVATE).unwrap_or(script).to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let lines = body.matches('\n').count();
    (stdin_loader(lines), body.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prologue's text, pinned: on a GNU host (an `rm` that is a regular file) it defines
    /// nothing beyond the environment, so users' scripts (`set -u`, `set -x`) run as they did.
    #[test]
    fn the_prologue_is_pinned() {
        assert_eq!(
            PROLOGUE,
            "export LC_ALL=C PATH=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH\"; \
             umask 022; cd / || exit 1\n\
             if [ -h /bin/rm ] || [ -h /usr/bin/rm ] || [ /bin/rm -ef /bin/busybox ]; then \
             rm() { if [ \"${1-} ${2-}\" = \"-rf --one-file-system\" ] && \
             ! command rm --one-file-system -f 2>/dev/null; then shift 2; set -- -rf \"$@\"; fi; \
             command rm \"$@\"; }; fi\n"
        );
    }

    /// On this (GNU) host `rm` stays the command: no function, nothing in `set -x`'s trace,
    /// and a `set -u` script calling `rm` with one operand runs.
    #[test]
    fn on_a_gnu_host_rm_is_left_alone() {
        let rm = std::fs::symlink_metadata("/bin/rm").unwrap();
        assert!(
            !rm.is_symlink(),
            "this test needs a build machine whose /bin/rm is GNU's (a regular file), as Debian's"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, "").unwrap();
        let script = format!(
            "{PROLOGUE}set -eux; case $(command -V rm) in *function*) exit 3 ;; esac; rm {}",
            f.display()
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(!f.exists());
        let trace = String::from_utf8_lossy(&out.stderr);
        assert_eq!(trace.matches("rm ").count(), 1, "{trace}");
    }

    #[test]
    fn plain() {
        let c = command_line("echo hi", None, false, Duration::from_secs(30));
        assert_eq!(
            c,
            format!(
                "exec timeout -k 5 30 sh -c {}",
                quote(&format!("{PROLOGUE}echo hi"))
            )
        );
    }

    #[test]
    fn become_without_password_never_reads_stdin() {
        let b = Become {
            user: "root".into(),
            password: None,
        };
        let c = command_line("id", Some(&b), true, Duration::from_secs(5));
        assert!(
            c.starts_with("exec sudo -n -u 'root' -- timeout -k 5 5 sh -c "),
            "{c}"
        );
    }

    #[test]
    fn become_password_is_not_on_the_command_line() {
        let b = Become {
            user: "root".into(),
            password: Some(Secret::new("s3cret-pw")),
        };
        let c = command_line("id", Some(&b), true, Duration::from_secs(5));
        assert!(!c.contains("s3cret-pw"));
        assert!(c.contains("sudo -S -p '' -u 'root'"), "{c}");
        // Where sudo does not ask (NOPASSWD), it may not read stdin: nothing is sent.
        let c = command_line("id", Some(&b), false, Duration::from_secs(5));
        assert!(
            c.starts_with("exec sudo -n -u 'root' -- timeout -k 5 5 sh -c "),
            "{c}"
        );
        assert_eq!(sudo_asks_line(&b), "exec sudo -n -u 'root' -- true");
    }
    #[test]
    fn the_command_line_runs_the_script_literally() {
        // The same layering as on a host, without sudo: the login shell runs the command line.
        let script = "printf '%s' \"$LC_ALL\"; printf ' %s' '$(x)'";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command_line(script, None, false, Duration::from_secs(5)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "C $(x)");
    }

    /// Runs `script` as a host would (the login shell runs the command line), through `wire`.
    fn run_wire(script: &str, hidden: &[Secret], stdin: &[u8]) -> (String, std::process::Output) {
        use std::io::Write;
        let (s, body) = wire(script, hidden);
        let cmd = command_line(&s, None, false, Duration::from_secs(5));
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = body;
        input.extend_from_slice(stdin);
        child.stdin.take().unwrap().write_all(&input).unwrap();
        (cmd, child.wait_with_output().unwrap())
    }

    #[test]
    fn a_script_holding_a_secret_travels_on_stdin() {
        let hidden = [Secret::new("tok-9f8e7d")];
        let script = "set -e\nv='tok-9f8e7d'\nprintf '%s|' \"$v\" 'a\\b' \"$(echo x)\"\ncat <<'EOF'\nheredoc $v\nEOF\nhead -c 5\n";
        let (cmd, out) = run_wire(script, &hidden, b"12345rest");
        assert!(!cmd.contains("tok-9f8e7d"), "{cmd}");
        assert!(cmd.contains("eval"), "{cmd}");
        assert!(out.status.success(), "{out:?}");
        // The script ran whole, and the stdin after it (an upload's content) arrived intact.
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "tok-9f8e7d|a\\b|x|heredoc $v\n12345"
        );
        // Its exit status is the script's.
        let (_, out) = run_wire("echo tok-9f8e7d >&2; exit 3", &hidden, b"");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8(out.stderr).unwrap(), "tok-9f8e7d\n");
    }

    #[test]
    fn private_scripts_travel_on_stdin_and_others_as_arguments() {
        let (cmd, out) = run_wire(&private("echo 0123abcd"), &[], b"");
        assert!(!cmd.contains("0123abcd"), "{cmd}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "0123abcd\n");
        let (cmd, _) = run_wire("echo public", &[Secret::new("other")], b"");
        assert!(cmd.contains("echo public"), "{cmd}");
        // A cut stdin is an error, never half a script run.
        let (s, _) = wire(&private("echo a\necho b\n"), &[]);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command_line(&s, None, false, Duration::from_secs(5)))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125));
        assert!(out.stdout.is_empty());
    }
}
