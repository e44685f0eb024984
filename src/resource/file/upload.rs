//! The scripts that put a file step's file in place: the atomic upload, and the removal of
//! what uploads cut short left behind (see the module above for why they work so).

use super::Desired;
use crate::plan::{Action, Change};
use crate::quote::quote;
use crate::resource::{accounts_exist, chmod_mode, chown_cmd, enter_dir};

impl Desired {
    /// The atomic upload script (content on stdin). `replace`: what is at the path (a directory,
    /// a link) is removed just before the new file is renamed into place.
    ///
    /// The directory may be writable by another account, which may rename, remove or replace by
    /// a link anything in it at any moment. So the script works from inside the directory
    /// (`enter_dir`: never through a link another account can change) and writes the new file
    /// in a private directory it creates there (`mktemp -d`: 0700, root's): nobody else can
    /// touch the file while it gets its owner, mode and content, so `chown`/`chmod`/`cat` act on that file and nothing else.
    /// The rename (`mv -T`) replaces whatever is at the name, a link included, without following it.
    pub(super) fn upload(
        &self,
        mode: u32,
        owner: Option<&str>,
        group: Option<&str>,
        replace: bool,
    ) -> String {
        let mut s = String::new();
        s.push_str("set -e\n");
        s.push_str(&accounts_exist(owner, group));
        s.push_str(&format!(
            "f={}\nd={}\nn={}\n",
            quote(&self.path),
            quote(&self.parent()),
            quote(self.name())
        ));
        s.push_str("[ -d \"$d\" ] || { printf 'directory %s does not exist (add a dir step before this one)\\n' \"$d\" >&2; exit 1; }\n");
        s.push_str(&enter_dir("\"$d\""));
        // The physical directory (`cd -P` set `PWD`; not `$d` when a root-only link led there).
        s.push_str("here=$PWD\n");
        // A run cut short (its connection or the host's sshd killed, SIGKILL: no trap ran)
        // leaves its private directory; those of the directory are removed first.
        s.push_str(&sweep());
        s.push_str("tmp=$(mktemp -d -- ./.claw-provision.XXXXXXXX)\n");
        s.push_str("trap 'cd -P -- \"$here\" 2>/dev/null && [ \"$(pwd -P)\" = \"$here\" ] && rm -rf --one-file-system -- \"$tmp\"' EXIT\ntrap 'exit 1' HUP INT TERM PIPE\n");
        // Inside the private directory: it must be the one just made (ours, 0700; setgid when
        // the directory is), not a link or a directory someone renamed to its name.
        // (No pattern expansion of `$here`: dash mangles backslashes of a value there.)
        s.push_str("case $here in /) want=/${tmp#./};; *) want=$here/${tmp#./};; esac\n");
        s.push_str("cd -P -- \"$tmp\"\n");
        s.push_str("[ \"$(pwd -P)\" = \"$want\" ] && [ -O . ] && case $(stat -c %a .) in 700|2700) ;; *) false;; esac || { printf 'the private directory %s of the upload was replaced (another account writes in %s); the old file is unchanged\\n' \"$tmp\" \"$d\" >&2; exit 1; }\n");
        // 0600 from its creation (the private directory already keeps others out; the file
        // must not depend on it): umask is a builtin, no process.
        s.push_str("umask 077; : > ./new; umask 022\n");
        // Owner before mode: chown clears setuid/setgid bits.
        if let Some(c) = chown_cmd(owner, group, "./new") {
            s.push_str(&c);
            s.push('\n');
        }
        s.push_str(&format!("chmod {} ./new\n", chmod_mode(mode)));
        s.push_str("cat > ./new\n");
        s.push_str(&format!(
            "sum=$(sha256sum < ./new); sum=${{sum%% *}}\n[ \"$sum\" = {} ] || {{ echo \"upload of $f arrived damaged (sha256 mismatch); the old file is unchanged\" >&2; exit 1; }}\n",
            self.sha256
        ));
        // Durable before it becomes visible: a crash leaves the old file or the new one.
        s.push_str("sync -- ./new 2>/dev/null || true\n");
        // The private directory must still be in the managed one (`..` is where it is now).
        s.push_str("[ \"$(cd .. && pwd -P)\" = \"$here\" ] || { printf 'the private directory of the upload was moved out of %s; the old file is unchanged\\n' \"$d\" >&2; exit 1; }\n");
        if replace {
            s.push_str("rm -rf --one-file-system -- \"../$n\"\n");
        }
        // -T: never moved INTO a directory that appeared at the path since the probe; a link
        // at the path is replaced, never followed.
        s.push_str("mv -fT -- ./new \"../$n\"\n");
        s
    }
}

/// The lines that remove, from inside a directory (entered with `enter_dir`), the private
/// directories uploads cut short left there (no trap runs on SIGKILL; a cut after the rename
/// leaves an empty one next to the new file): names of the exact pattern, directories (not
/// links) owned by the account the uploads run as; anything else, another account's
/// included, is left alone. Only where no other account can rename entries of the directory
/// ([`crate::fact::path::sweepable`]): elsewhere one could rename any of root's directories
/// there to such a name and have it removed, so nothing is. Under the apply lock no other
/// upload is using one. Shell builtins, `stat` and `rm` only for each one found; `rm -r` never
/// follows a link.
pub(crate) fn sweep() -> String {
    format!(
        "for t in ./{}; do if [ -d \"$t\" ] && [ ! -L \"$t\" ] && [ -O \"$t\" ] && {}; then rm -rf --one-file-system -- \"$t\"; fi; done\n",
        crate::fact::path::PRIVATE_DIR_GLOB,
        crate::fact::path::sweepable(".")
    )
}

/// Adds to `c` (a change of a file in `dir`) the removal of the private directories
/// `leftovers` (names, as the probe found them in `dir`) that uploads cut short left there:
/// an upload into `dir` removes them first anyway; any other change (attributes, a removal)
/// does so first; when nothing else changes, their removal is the change, a housekeeping one
/// (no handler is notified: the file is as wanted). A cut after an upload's rename leaves the
/// file new and its private directory behind, and no later upload may ever come to that
/// directory: without this, the leftover would stay forever.
pub(crate) fn with_leftovers(mut c: Change, dir: &str, leftovers: &[String]) -> Change {
    if leftovers.is_empty() {
        return c;
    }
    let detail = format!(
        "remove an interrupted upload's leftovers in {dir}: {}",
        leftovers.join(", ")
    );
    let sweep = format!("{}{}", enter_dir(&quote(dir)), sweep());
    match c.action {
        Action::NoOp => {
            let mut n = Change::new(
                Action::Update,
                c.target,
                "an interrupted upload left its private directory",
                format!("set -e\n{sweep}"),
            );
            n.details.push(detail);
            n.warnings = c.warnings;
            n.housekeeping = true;
            n.tidies.push(dir.to_string());
            n
        }
        Action::Create | Action::Update | Action::Delete => {
            if let Some(op) = c.op.as_mut()
                && c.upload_dir.as_deref() != Some(dir)
            {
                op.script = format!("(\n{sweep}) || exit 1\n{}", op.script);
            }
            c.details.push(detail);
            c.tidies.push(dir.to_string());
            c
        }
        _ => c,
    }
}
