//! Resource kinds. Each kind has the same shape: arguments (checked at load) → desired state
//! (rendered per host) → the facts it needs → a pure diff into a [`Change`], whose [`Op`]s are
//! what apply runs.
//!
//! A step kind is a [`StepKind`] (see `kind.rs` for why a list of trait objects), registered
//! once in [`KINDS`]; a playbook's `kind = "..."` is parsed into a [`Kind`] when it is loaded.
//! Validation ([`StepKind::check_args`]), the desired state ([`StepKind::desired`]) and what
//! the runner must know about a kind come from its `impl StepKind`; probe and diff come from
//! the [`DesiredState`] it builds (a [`Desired`] variant). The runner never compares kind names.
//!
//! **Adding a step kind** touches:
//! - `resource/NAME.rs` (new): its arguments, desired state with its `impl DesiredState`
//!   (probe, diff into a [`Change`] whose [`Op`]s apply runs and plans display) and its
//!   `impl StepKind`;
//! - this file: `pub mod NAME;` and one entry in [`KINDS`]; when its desired state is a new
//!   type (not a file, say), also a [`Desired`] variant and its line in `Desired::state`
//!   (the compiler points at it);
//! - `fact/` only when it needs a fact no kind asks for yet (a [`Request`] and its
//!   [`Observed`] answer).
//!
//! **Invariant:** nothing here touches SSH; diff functions are pure and unit-tested.
//!
//! [`Op`]: crate::plan::Op
//! [`Request`]: crate::fact::Request

pub(crate) mod account;
pub(crate) mod apt;
pub(crate) mod apt_repo;
pub(crate) mod cert;
pub(crate) mod command;
pub(crate) mod compose;
pub(crate) mod cron;
pub(crate) mod dir;
pub(crate) mod error;
pub(crate) mod fetch;
pub(crate) mod file;
pub(crate) mod firewall;
pub(crate) mod git;
pub(crate) mod http_check;
pub(crate) mod image;
pub(crate) mod kind;
pub(crate) mod secret;
pub(crate) mod service;

use crate::fact::{Observed, ProbeScript};
use crate::plan::Change;
use crate::quote::check_remote_path;
pub(crate) use error::StepError;
pub(crate) use kind::{Kind, StepKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::path::Path;

/// Every step kind: the one registry (a kind's `impl StepKind` lives in its own file). The order
/// is the one error messages list the kinds in.
pub(crate) const KINDS: &[Kind] = &[
    Kind::new(&dir::DirKind),
    Kind::new(&file::FileKind),
    Kind::new(&file::TemplateKind),
    Kind::new(&command::CommandKind),
    Kind::new(&account::UserKind),
    Kind::new(&account::GroupKind),
    Kind::new(&cron::CronKind),
    Kind::new(&http_check::HttpCheckKind),
    Kind::new(&secret::SecretKind),
    Kind::new(&apt::AptKind),
    Kind::new(&apt_repo::AptRepoKind),
    Kind::new(&firewall::FirewallKind),
    Kind::new(&cert::CertKind),
    Kind::new(&git::GitKind),
    Kind::new(&compose::ComposeKind),
    Kind::new(&service::ServiceKind),
    Kind::new(&image::ImageKind),
    Kind::new(&fetch::FetchKind),
];

/// `state = "present" | "absent"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
}

/// A step's arguments, deserialized for its kind: the error is the message alone.
fn args<A: DeserializeOwned>(v: toml::Value) -> Result<A, StepError> {
    A::deserialize(v).map_err(|e| StepError::Args {
        message: e.message().to_string(),
    })
}

/// Checks a step's arguments against `A` (for [`StepKind::check_args`]).
fn check<A: DeserializeOwned>(v: toml::Value) -> Result<(), toml::de::Error> {
    A::deserialize(v).map(drop)
}

/// The desired state of one step on one host.
#[derive(Debug, Clone)]
pub enum Desired {
    Dir(dir::Desired),
    File(file::Desired),
    Command(command::Desired),
    User(account::User),
    Group(account::Group),
    HttpCheck(http_check::Desired),
    Secret(secret::Desired),
    Apt(apt::Desired),
    AptRepo(apt_repo::Desired),
    Firewall(firewall::Desired),
    Cert(cert::Desired),
    Git(git::Desired),
    Compose(compose::Desired),
    Service(service::Desired),
    Image(image::Desired),
    Fetch(fetch::Desired),
}

/// Where a step's local inputs are found.
pub struct Sources<'a> {
    /// `src` of `file` steps is relative to this (the playbook's directory).
    pub files_dir: &'a Path,
    pub templates_dir: &'a Path,
    /// The local images the run has read (`image` steps; owned by the run).
    pub images: &'a image::LocalImages,
    /// Renders the templated arguments and template files, through the run's template cache.
    pub templates: &'a crate::template::Renderer<'a>,
}

/// Builds the desired state of a step for one host: renders its templated arguments (and its
/// template file) with the host's context.
pub fn desired(
    kind: &Kind,
    args: &toml::Table,
    ctx: &Map<String, Value>,
    src: &Sources<'_>,
) -> Result<Desired, StepError> {
    let rendered = (src.templates)
        .render_value(&toml::Value::Table(args.clone()), ctx)
        .map_err(StepError::template)?;
    check_no_nul(kind, &rendered)?;
    kind.desired(rendered, ctx, src)
}

/// What a desired state does against the host: the facts it asks the probe for, and the diff
/// against the answers. Implemented by each kind's desired state, in the kind's file.
pub(crate) trait DesiredState {
    /// Registers the facts this step needs; returns their request ids, in the order
    /// `diff_answers` expects the answers (empty: it needs none).
    fn probe(&self, p: &mut ProbeScript) -> Vec<usize>;

    /// Compares with what was observed (the answers to `probe`'s requests, in order). An error
    /// means the step cannot proceed (e.g. a file where a directory is wanted); None, answers
    /// of the wrong type (a bug).
    fn diff_answers(&self, observed: &[&Observed]) -> Option<Result<Change, StepError>>;

    /// The paths on the target this step manages (its probe reads them).
    fn paths(&self) -> Vec<&str> {
        vec![]
    }

    /// Paths on the target whose change by an earlier step makes this step's probe answer stale.
    fn watches(&self) -> Vec<String> {
        vec![]
    }
}

impl Desired {
    /// The desired state behind the variant.
    fn state(&self) -> &dyn DesiredState {
        match self {
            Desired::Dir(d) => d,
            Desired::File(d) => d,
            Desired::Command(d) => d,
            Desired::User(d) => d,
            Desired::Group(d) => d,
            Desired::HttpCheck(d) => d,
            Desired::Secret(d) => d,
            Desired::Apt(d) => d,
            Desired::AptRepo(d) => d,
            Desired::Firewall(d) => d,
            Desired::Cert(d) => d,
            Desired::Git(d) => d,
            Desired::Compose(d) => d,
            Desired::Service(d) => d,
            Desired::Image(d) => d,
            Desired::Fetch(d) => d,
        }
    }

    /// Registers the facts this step needs; returns their request ids, in the order `diff`
    /// expects the answers (empty: it needs none).
    pub fn probe(&self, p: &mut ProbeScript) -> Vec<usize> {
        self.state().probe(p)
    }

    /// Paths on the target whose change by an earlier step of the same run makes this step's
    /// probe answer stale: `apply` probes it again once they changed (`compose` watches its
    /// compose file and env file).
    pub fn watches(&self) -> Vec<String> {
        self.state().watches()
    }

    /// The paths on the target this step manages (its probe reads them), for telling whether
    /// an earlier step's change removes what was probed below a path.
    pub fn paths(&self) -> Vec<&str> {
        self.state().paths()
    }

    /// Compares with what was observed (the answers to `probe`'s requests, in order). An error
    /// means the step cannot proceed (e.g. a file where a directory is wanted).
    pub fn diff(&self, observed: &[&Observed]) -> Result<Change, StepError> {
        self.state()
            .diff_answers(observed)
            .unwrap_or(Err(StepError::Internal {
                what: "probe answers of the wrong type (bug, please report)",
            }))
    }
}

/// Parses an octal mode string such as `"0644"` or `"755"`.
pub(crate) fn parse_mode(s: &str) -> Result<u32, StepError> {
    let t = s.trim();
    if t.is_empty() || t.len() > 4 || !t.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(StepError::arg(format!(
            "`mode = \"{s}\"`: expected an octal mode such as \"0644\" or \"0755\""
        )));
    }
    u32::from_str_radix(t, 8).map_err(|e| StepError::arg(e.to_string()))
}

/// Formats a mode as four octal digits.
pub(crate) fn fmt_mode(m: u32) -> String {
    format!("{m:04o}")
}

/// The mode argument of `chmod`: five octal digits, so that GNU chmod also clears setuid/setgid
/// bits a directory inherited (with four digits it keeps them, and the next plan shows drift).
pub(crate) fn chmod_mode(m: u32) -> String {
    format!("{m:05o}")
}

/// Whether `want` (a name or a numeric id) designates the observed owner.
pub(crate) fn same_owner(want: &str, name: &str, id: u32) -> bool {
    want == name || want.parse::<u32>().is_ok_and(|w| w == id)
}

/// Checks a path a step manages.
pub(crate) fn check_path(path: &str) -> Result<(), StepError> {
    check_remote_path(path)?;
    // One spelling per path: `//etc` or `/./etc` must not slip past checks on `/etc`.
    if path != "/" && path[1..].split('/').any(|c| c.is_empty() || c == ".") {
        return Err(StepError::arg(format!(
            "path `{path}` must be normalised (no empty or `.` components, no trailing `/`)"
        )));
    }
    Ok(())
}

/// Owner/group checks: names of users and groups, or numeric ids. Letters, digits, `-`, `_`
/// and `.`, not starting with `-` (it would be read as an option by `getent`, `id`, ...).
pub(crate) fn check_account(what: &str, v: &str) -> Result<(), StepError> {
    if v.is_empty()
        || v.len() > 64
        || v.starts_with('-')
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(StepError::arg(format!(
            "`{what} = {v:?}` is not a valid user or group name (letters, digits, `-`, `_` and `.`, not starting with `-`)"
        )));
    }
    Ok(())
}

/// Refuses a NUL byte in any rendered argument that may reach a remote shell: it cannot pass
/// through one (the command line is cut at the first NUL), so it is an input error, offline.
/// The arguments that never reach a shell may hold any text ([`StepKind::nul_allowed`]).
fn check_no_nul(kind: &Kind, args: &toml::Value) -> Result<(), StepError> {
    fn find(v: &toml::Value, at: &mut Vec<String>) -> Option<String> {
        match v {
            toml::Value::String(s) if s.contains('\0') => Some(at.join(".")),
            toml::Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| {
                at.push(i.to_string());
                let r = find(x, at);
                at.pop();
                r
            }),
            toml::Value::Table(t) => t.iter().find_map(|(k, x)| {
                at.push(k.clone());
                let r = find(x, at);
                at.pop();
                r
            }),
            _ => None,
        }
    }
    let toml::Value::Table(t) = args else {
        return Ok(());
    };
    for (k, v) in t {
        if kind.nul_allowed().contains(&k.as_str()) {
            continue;
        }
        let mut at = vec![k.clone()];
        if let Some(key) = find(v, &mut at) {
            return Err(StepError::Nul { key });
        }
    }
    Ok(())
}

/// Lines that stop a script, before it changes anything, when the owner or group it is about
/// to set does not exist on the host (numeric ids are taken as they are, like `chown` does):
/// `getent`, or on a host without it (BusyBox) `/etc/passwd` and `/etc/group`.
pub(crate) fn accounts_exist(owner: Option<&str>, group: Option<&str>) -> String {
    use crate::quote::quote;
    let numeric = |v: &str| v.bytes().all(|b| b.is_ascii_digit());
    let mut s = String::new();
    for (what, db, v) in [("owner", "passwd", owner), ("group", "group", group)] {
        let Some(v) = v.filter(|v| !numeric(v)) else {
            continue;
        };
        let msg = format!(
            "{what} `{v}` does not exist on the host (create it in an earlier step); nothing was changed"
        );
        // Without `getent` (BusyBox), the local database is read instead (looked for first:
        // no "getent: not found" on such a host).
        s.push_str(&format!(
            "if command -v getent >/dev/null 2>&1; then getent {db} {v} >/dev/null; \
             else awk -F: -v n={v} '$1 == n {{ f = 1 }} END {{ exit !f }}' /etc/{db}; fi || \
             {{ printf '%s\\n' {} >&2; exit 1; }}\n",
            quote(&msg),
            v = quote(v),
        ));
    }
    s
}

/// The mode/owner/group changes between desired (None = not managed) and observed attributes.
#[derive(Debug, Default)]
pub(crate) struct AttrDiff<'a> {
    pub mode: Option<u32>,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    /// `mode 0644 -> 0600`, `owner root -> claw`, for display.
    pub details: Vec<String>,
    /// The mode to set again after `chown`, which clears setuid/setgid bits of a file: the
    /// desired mode, else the observed one, when it has such bits.
    pub restore_mode: Option<u32>,
}

/// Observed attributes of a path.
pub(crate) struct Attrs<'a> {
    pub mode: u32,
    pub owner: &'a str,
    pub group: &'a str,
    pub uid: u32,
    pub gid: u32,
}

impl<'a> AttrDiff<'a> {
    pub(crate) fn new(
        mode: Option<u32>,
        owner: Option<&'a str>,
        group: Option<&'a str>,
        o: &Attrs<'_>,
    ) -> Self {
        let mut d = AttrDiff {
            mode: mode.filter(|m| *m != o.mode),
            owner: owner.filter(|w| !same_owner(w, o.owner, o.uid)),
            group: group.filter(|w| !same_owner(w, o.group, o.gid)),
            details: vec![],
            restore_mode: None,
        };
        let after = mode.unwrap_or(o.mode);
        if (d.owner.is_some() || d.group.is_some()) && after & 0o6000 != 0 {
            d.restore_mode = Some(after);
        }
        if let Some(m) = d.mode {
            d.details
                .push(format!("mode {} -> {}", fmt_mode(o.mode), fmt_mode(m)));
        }
        if let Some(w) = d.owner {
            d.details.push(format!("owner {} -> {w}", o.owner));
        }
        if let Some(w) = d.group {
            d.details.push(format!("group {} -> {w}", o.group));
        }
        d
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.details.is_empty()
    }

    /// `chmod`/`chown` lines that make the change on `quoted_path`.
    pub(crate) fn script(&self, quoted_path: &str) -> String {
        let mut s = String::new();
        // Owner before mode: chown clears setuid/setgid bits.
        if let Some(c) = chown_cmd(self.owner, self.group, quoted_path) {
            s.push_str(&c);
            s.push('\n');
        }
        if let Some(m) = self.mode.or(self.restore_mode) {
            s.push_str(&format!("chmod {} {quoted_path}\n", chmod_mode(m)));
        }
        s
    }
}

/// The shell function that resolves a path through links only root can change (it lives with the
/// probe snippets, which use it too).
pub(crate) use crate::fact::PHYSDIR_FN;

/// Shell lines that make the directory `word` (a quoted path or `"$var"`) the current directory,
/// or stop the script. Root acts on what it found there through the current directory (relative
/// names, `.`), so another account that can write in a directory of the path cannot redirect a
/// later command elsewhere by swapping a component for a link: the working directory is an
/// inode, not a path.
///
/// `cd -P` then `pwd -P`: when the physical directory is `word` itself (no link on the path,
/// the common case) nothing more is done. Otherwise the path is resolved by
/// [`PHYSDIR_FN`], which accepts only links nobody but root can change, and the directory
/// entered must be the physical one that resolution computed: a link another account can
/// change (or one swapped in between) is refused.
pub(crate) fn enter_dir(word: &str) -> String {
    format!(
        "{PHYSDIR_FN}cd -P -- {word} 2>/dev/null && {{ [ \"$(pwd -P)\" = {word} ] || [ \"$(pwd -P)\" = \"$(claw_physdir {word})\" ]; }} || {{ printf '%s is not a directory, or is reached through a symbolic link another account than root can change (not followed); nothing was changed\\n' {word} >&2; exit 1; }}\n"
    )
}

/// The lines that apply `d` to the regular file `path` without following a link: in its
/// directory (`enter_dir`), the file is opened (fd 3) and must be the regular file found at its
/// name (same device and inode as `lstat` of the name, so not a link, nor a file someone swapped
/// in between), with a single name (link count 1: not a hard link to another file, e.g. root's,
/// where `protected_hardlinks` is off) and one of the contents `sha256` (hex) the plan expects:
/// an attribute-only change is planned only when the content already matches, so a file the
/// directory's owner put there since the plan (say their own program, to have root make it
/// root's and setuid) is refused. `chown`/`chmod` then act on the open file
/// (`/proc/self/fd/3`), whatever the name points to by then.
///
/// Left: a FIFO swapped in between the `[ -f ]` test and the open makes the open wait for a
/// writer (POSIX sh cannot open with `O_NONBLOCK` or a timeout); the run then waits until it is
/// interrupted, and nothing is changed.
pub(crate) fn file_attr_script(path: &str, d: &AttrDiff, sha256: &[&str]) -> String {
    use crate::quote::quote;
    let (dir, name) = match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    };
    let p = quote(path);
    let n = quote(&format!("./{name}"));
    let sums = if sha256.is_empty() {
        // No content known: nothing can match.
        "''".to_string()
    } else {
        sha256
            .iter()
            .map(|h| quote(&format!("{h}  -")))
            .collect::<Vec<_>>()
            .join("|")
    };
    let mut s = enter_dir(&quote(dir));
    s.push_str(&format!(
        "{{ [ -f {n} ] && [ ! -L {n} ] && exec 3< {n} && [ -f /proc/self/fd/3 ] && [ \"$(stat -c %d:%i -- {n}):1\" = \"$(stat -L -c %d:%i:%h /proc/self/fd/3)\" ] && case $(sha256sum <&3) in {sums}) ;; *) false;; esac; }} || {{ printf '%s is no longer the file the probe saw (a symbolic link, a hard link or another file was put there); refusing to change it\\n' {p} >&2; exit 1; }}\n"
    ));
    s.push_str(&d.script("/proc/self/fd/3"));
    s.push_str("exec 3<&-\n");
    s
}

/// The lines that apply `d` to the directory `path` without following a link: they act on `.`
/// after `enter_dir`.
pub(crate) fn dir_attr_script(path: &str, d: &AttrDiff) -> String {
    let mut s = enter_dir(&crate::quote::quote(path));
    s.push_str(&d.script("."));
    s
}

/// Ownership change commands for `path` (already quoted) from desired owner/group.
pub(crate) fn chown_cmd(
    owner: Option<&str>,
    group: Option<&str>,
    quoted_path: &str,
) -> Option<String> {
    use crate::quote::quote;
    match (owner, group) {
        (Some(o), Some(g)) => Some(format!(
            "chown -- {} {quoted_path}",
            quote(&format!("{o}:{g}"))
        )),
        (Some(o), None) => Some(format!("chown -- {} {quoted_path}", quote(o))),
        (None, Some(g)) => Some(format!("chgrp -- {} {quoted_path}", quote(g))),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        assert!(parse_mode("0x1").is_err());
        assert!(parse_mode("99").is_err());
        assert!(parse_mode("").is_err());
        assert_eq!(fmt_mode(0o600), "0600");
    }

    /// `chown` clears setuid/setgid bits: the mode is set again after it, managed or not.
    #[test]
    fn chown_keeps_setuid_and_setgid_bits() {
        let o = Attrs {
            mode: 0o4755,
            owner: "root",
            group: "root",
            uid: 0,
            gid: 0,
        };
        let d = AttrDiff::new(Some(0o4755), Some("claw"), None, &o);
        assert_eq!(d.details, ["owner root -> claw"]);
        assert_eq!(d.script("'/f'"), "chown -- 'claw' '/f'\nchmod 04755 '/f'\n");
        let d = AttrDiff::new(None, None, Some("staff"), &o);
        assert_eq!(
            d.script("'/f'"),
            "chgrp -- 'staff' '/f'\nchmod 04755 '/f'\n"
        );
        let plain = Attrs { mode: 0o755, ..o };
        let d = AttrDiff::new(None, Some("claw"), None, &plain);
        assert_eq!(d.script("'/f'"), "chown -- 'claw' '/f'\n");
        // Run here: the bits survive.
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let d = AttrDiff::new(None, None, Some("0"), &Attrs { gid: 12345, ..o });
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(d.script(&crate::quote::quote(f.to_str().unwrap())))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o4755
        );
    }

    #[test]
    fn owners() {
        assert!(same_owner("root", "root", 0));
        assert!(same_owner("0", "root", 0));
        assert!(!same_owner("claw", "root", 0));
        assert!(check_account("owner", "www-data").is_ok());
        assert!(check_account("owner", "a b").is_err());
        assert!(check_account("owner", "$(id)").is_err());
        // A leading `-` would be an option to getent, id, useradd...
        assert!(check_account("owner", "-rf").is_err());
        assert!(check_account("owner", "--help").is_err());
        assert!(check_account("owner", "a-b").is_ok());
        assert!(check_account("owner", "1000").is_ok());
        assert!(check_account("owner", &"a".repeat(65)).is_err());
    }

    fn args(t: &str) -> toml::Table {
        toml::from_str(t).unwrap()
    }

    #[test]
    fn nul_is_refused_wherever_it_could_reach_a_shell() {
        let ctx = Map::new();
        let cache = crate::template::Cache::default();
        let src = Sources {
            files_dir: Path::new("."),
            templates_dir: Path::new("."),
            images: &Default::default(),
            templates: &crate::template::Renderer::new(&cache),
        };
        let d = |kind: &str, t: &str| desired(&kind.parse().unwrap(), &args(t), &ctx, &src);
        let e = d("command", r#"run = "echo a\u0000; touch /tmp/x""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`run` contains a NUL byte"), "{e}");
        let e = d("dir", r#"path = "/srv/a\u0000b""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`path` contains a NUL byte"), "{e}");
        let e = d(
            "cron",
            "entry = \"x\"\nschedule = \"@daily\"\ncommand = \"true\"\nenv = { A = \"b\\u0000\" }",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`env.A` contains a NUL byte"), "{e}");
        let e = d("apt", r#"packages = ["curl", "x\u0000"]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`packages.1` contains a NUL byte"), "{e}");
        // File content never reaches a shell (it travels on stdin): any byte goes.
        let Desired::File(f) = d(
            "file",
            r#"path = "/srv/f"
content = "a\u0000b""#,
        )
        .unwrap() else {
            panic!("a file")
        };
        assert_eq!(f.content.as_slice(), b"a\0b");
    }

    fn sh(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    }

    /// `claw_physdir` resolves chained, relative, absolute links and `..` as `realpath` does,
    /// but only through links root alone can change; `enter_dir` then lands in that directory.
    #[test]
    fn links_root_alone_can_change_are_followed_others_refused() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().canonicalize().unwrap();
        let t = t.to_str().unwrap();
        std::fs::create_dir_all(format!("{t}/real/sub")).unwrap();
        symlink("real", format!("{t}/link")).unwrap();
        symlink(format!("{t}/link"), format!("{t}/abs")).unwrap();
        symlink("abs/sub", format!("{t}/chain")).unwrap();
        symlink("loop2", format!("{t}/loop1")).unwrap();
        symlink("loop1", format!("{t}/loop2")).unwrap();
        let phys = |p: &str| {
            let o = sh(&format!(
                "{PHYSDIR_FN}claw_physdir {}",
                crate::quote::quote(p)
            ));
            o.status
                .success()
                .then(|| String::from_utf8(o.stdout).unwrap())
        };
        let enter = |p: &str| {
            let o = sh(&format!("{}pwd -P", enter_dir(&crate::quote::quote(p))));
            (
                o.status
                    .success()
                    .then(|| String::from_utf8(o.stdout.clone()).unwrap()),
                String::from_utf8(o.stderr).unwrap(),
            )
        };
        // No link: the path itself, whoever runs the test.
        assert_eq!(
            phys(&format!("{t}/real/sub")),
            Some(format!("{t}/real/sub\n"))
        );
        assert_eq!(phys("/"), Some("/\n".into()));
        assert_eq!(enter(&format!("{t}/real")).0, Some(format!("{t}/real\n")));
        // The common case runs no program (shell builtins only): no PATH needed.
        let o = sh(&format!(
            "PATH=/nonexistent; {}echo in",
            enter_dir(&crate::quote::quote(&format!("{t}/real/sub")))
        ));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "in\n", "{o:?}");
        let root = nix_euid() == 0;
        let linked = [
            ("link", "real"),
            ("abs", "real"),
            ("chain", "real/sub"),
            ("chain/..", "real"),
            ("link/./sub/", "real/sub"),
        ];
        for (p, r) in linked {
            let p = format!("{t}/{p}");
            let want = root.then(|| format!("{t}/{r}\n"));
            assert_eq!(phys(&p), want, "{p}");
        }
        // Entering: the physical directory (root, links root's) or a refusal naming the path.
        let (out, err) = enter(&format!("{t}/chain"));
        if root {
            assert_eq!(out, Some(format!("{t}/real/sub\n")), "{err}");
        } else {
            assert_eq!(out, None);
            assert!(err.contains("reached through a symbolic link"), "{err}");
        }
        // A loop ends.
        assert_eq!(phys(&format!("{t}/loop1")), None);
        // The holding directory writable by its group or by others (even sticky): refused.
        for mode in [0o775, 0o757, 0o1777] {
            std::fs::set_permissions(t, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(phys(&format!("{t}/link")), None, "{mode:o}");
            let (out, err) = enter(&format!("{t}/chain"));
            assert_eq!(out, None, "{mode:o}");
            assert!(err.contains(&format!("{t}/chain is not a directory, or is reached through a symbolic link another account than root can change")), "{err}");
        }
        std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o700)).unwrap();
        // A link inside the target of a trusted link is checked too.
        std::fs::set_permissions(format!("{t}/real"), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        symlink("sub", format!("{t}/real/inner")).unwrap();
        assert_eq!(phys(&format!("{t}/link/inner")), None);
    }

    fn nix_euid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        // The owner of a file this process just made.
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().metadata().unwrap().uid()
    }

    /// The attribute-only change acts only on the file the plan saw: one name, the expected
    /// content; a hard link or another file put at the name is refused and left as it was.
    #[test]
    fn attribute_change_needs_one_name_and_the_expected_content() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        let path = f.to_str().unwrap();
        std::fs::write(&f, "managed\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let me = std::fs::metadata(&f).unwrap();
        let o = Attrs {
            mode: 0o644,
            owner: "x",
            group: "x",
            uid: me.uid(),
            gid: me.gid(),
        };
        let d = AttrDiff::new(Some(0o600), None, None, &o);
        let sum = crate::resource::file::sha256_hex(b"managed\n");
        let script = file_attr_script(path, &d, &[&sum]);
        let mode = || std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
        let refused = |why: &str| {
            let out = sh(&script);
            assert!(!out.status.success(), "{why}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("is no longer the file the probe saw"),
                "{why}: {err}"
            );
            assert_eq!(mode(), 0o644, "{why}: unchanged");
        };
        // Another file (other content) at the name.
        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, "#!/bin/sh\nid\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        refused("other content");
        // The right content, but a second name (a hard link).
        std::fs::write(&f, "managed\n").unwrap();
        std::fs::hard_link(&f, tmp.path().join("other")).unwrap();
        refused("hard link");
        assert_eq!(
            std::fs::metadata(tmp.path().join("other"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o644
        );
        std::fs::remove_file(tmp.path().join("other")).unwrap();
        // No content known: nothing matches.
        let out = sh(&file_attr_script(path, &d, &[]));
        assert!(!out.status.success());
        // The file the plan saw: changed.
        let out = sh(&script);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(mode(), 0o600);
    }

    #[test]
    fn missing_accounts_stop_the_script_first() {
        assert_eq!(accounts_exist(None, None), "");
        assert_eq!(
            accounts_exist(Some("1000"), Some("0")),
            "",
            "ids as they are"
        );
        let s = accounts_exist(Some("root"), Some("claw-no-such-group"));
        let run = |script: &str| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{script}echo reached"))
                .output()
                .unwrap()
        };
        let o = run(&s);
        assert!(!o.status.success());
        assert_eq!(o.stdout, b"", "nothing after the check runs");
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "group `claw-no-such-group` does not exist on the host (create it in an earlier step); nothing was changed\n"
        );
        let o = run(&accounts_exist(Some("root"), Some("root")));
        assert!(o.status.success());
        assert_eq!(o.stdout, b"reached\n");
    }

    /// Without `getent` on PATH (BusyBox), `/etc/passwd` and `/etc/group` are read, and the
    /// shell says nothing of the missing command.
    #[test]
    fn accounts_are_checked_without_getent() {
        let bin = tempfile::tempdir().unwrap();
        let awk = ["/usr/bin/awk", "/bin/awk"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap();
        std::os::unix::fs::symlink(awk, bin.path().join("awk")).unwrap();
        let run = |script: &str| {
            std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("{script}echo reached"))
                .env("PATH", bin.path())
                .output()
                .unwrap()
        };
        let o = run(&accounts_exist(Some("root"), Some("root")));
        assert_eq!(
            (o.stdout.as_slice(), String::from_utf8_lossy(&o.stderr)),
            (&b"reached\n"[..], "".into())
        );
        let o = run(&accounts_exist(Some("claw-no-such-user"), None));
        assert!(!o.status.success());
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "owner `claw-no-such-user` does not exist on the host (create it in an earlier step); nothing was changed\n"
        );
    }
}
