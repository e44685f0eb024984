//! `apt`: Debian packages installed or removed.
//!
//! The probe asks dpkg (`dpkg-query -W`) about every listed package; nothing else. Apply
//! refreshes the index (`apt-get update`) only when something must be installed, once per step,
//! then installs the missing packages (`--no-remove`: a step never removes packages to resolve a
//! conflict). Both wait, up to `lock_timeout`, for the locks another apt or dpkg run (typically
//! unattended-upgrades on a fresh server) holds: apt waits for the dpkg frontend lock itself
//! (`DPkg::Lock::Timeout`), and the script retries while apt reports any other lock busy (the
//! index lock `/var/lib/apt/lists/lock`, which `apt-get update` does not wait for).
//!
//! Removal (`state = "absent"`) refuses to take other packages with it: apt would remove every
//! package that depends on a removed one, so the script first simulates the removal and fails,
//! naming them, when it would remove anything not listed. Dependencies installed with a package
//! stay installed after its removal (no autoremove).

use super::State;
use super::StepError;
use crate::duration::Secs;
use crate::fact::{DpkgState, PkgState};
use crate::plan::{Action, Change};
use crate::quote::quote;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Package names, optionally with an architecture (`libc6:amd64`).
    pub packages: Vec<String>,
    #[serde(default)]
    pub state: State,
    /// With `state = "absent"`: also delete the packages' configuration files.
    #[serde(default)]
    pub purge: bool,
    /// Install recommended packages too; unset: the host's apt configuration decides (Debian's
    /// default installs them).
    pub install_recommends: Option<bool>,
    /// How long to wait for apt's and dpkg's locks held by another process (default 2m).
    pub lock_timeout: Option<Secs>,
}

/// Default wait for apt/dpkg locks: well under the default `command_timeout` (5 min), so the
/// step reports the busy lock instead of timing out.
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Desired {
    pub packages: Vec<String>,
    pub state: State,
    pub purge: bool,
    pub install_recommends: Option<bool>,
    pub lock_timeout: Duration,
}

/// Checks a package name: Debian's `[a-z0-9][a-z0-9+.-]+`, optionally `:ARCH`.
pub(crate) fn check_package(p: &str) -> Result<(), StepError> {
    let (name, arch) = match p.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (p, None),
    };
    let name_ok = name.len() >= 2
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let arch_ok = arch.is_none_or(|a| {
        !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if name_ok && arch_ok {
        return Ok(());
    }
    let hint = if p.contains('=') || p.contains(['*', '?', '[']) {
        " (versions and patterns are not supported: name the package)"
    } else {
        ""
    };
    Err(StepError::arg(format!(
        "`packages`: `{p}` is not a Debian package name (lowercase letters, digits, `+`, `-`, `.`, optionally `:ARCH`){hint}"
    )))
}

/// `300s` -> `5m`, for messages.
fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

impl Desired {
    pub fn from_args(a: Args) -> Result<Self, StepError> {
        if a.packages.is_empty() {
            return Err(StepError::arg(
                "`packages` is empty: list at least one package",
            ));
        }
        let mut packages: Vec<String> = vec![];
        // An entry may name several packages separated by spaces: a list from a variable comes
        // in as `"{{ names | join(sep=' ') }}"` (arguments render to strings).
        for p in a.packages.iter().flat_map(|p| p.split_whitespace()) {
            check_package(p)?;
            if !packages.iter().any(|x| x == p) {
                packages.push(p.to_string());
            }
        }
        if packages.is_empty() {
            return Err(StepError::arg(
                "`packages` is empty: list at least one package",
            ));
        }
        if a.purge && a.state == State::Present {
            return Err(StepError::arg("`purge` goes with `state = \"absent\"`"));
        }
        if a.install_recommends.is_some() && a.state == State::Absent {
            return Err(StepError::arg(
                "`install_recommends` goes with `state = \"present\"`",
            ));
        }
        Ok(Self {
            packages,
            state: a.state,
            purge: a.purge,
            install_recommends: a.install_recommends,
            lock_timeout: a.lock_timeout.map_or(DEFAULT_LOCK_TIMEOUT, |s| s.0),
        })
    }

    fn target(&self) -> String {
        self.packages.join(" ")
    }

    /// Shell functions shared by the install and removal scripts: `claw_state` (which of the
    /// given packages are installed / known to dpkg) and `claw_apt` (apt-get with the bounded
    /// lock wait; `$claw_what` says what it does, for messages).
    fn prologue(&self) -> String {
        let secs = self.lock_timeout.as_secs().max(1);
        let limit = fmt_duration(self.lock_timeout);
        format!(
            r#"export DEBIAN_FRONTEND=noninteractive
command -v apt-get >/dev/null 2>&1 || {{ echo 'apt-get not found: the `apt` kind needs a Debian-based host' >&2; exit 1; }}
claw_out=$(mktemp) || exit 1
trap 'rm -f -- "$claw_out"' EXIT
trap 'exit 1' HUP INT TERM PIPE
claw_deadline=$(( $(date +%s) + {secs} ))
# claw_state installed|known NAME...: the names dpkg lists as installed (known: also removed
# with configuration files kept, or half-installed).
claw_state() {{
  w=$1; shift
  for p in "$@"; do
    s=$(dpkg-query -W -f '${{db:Status-Abbrev}},' -- "$p" 2>/dev/null)
    case $w,$s in
      installed,*?[iWt]" ",*|known,*?[!n]?,*) printf '%s\n' "$p" ;;
    esac
  done
}}
# claw_apt ARGS...: apt-get ARGS, output in $claw_out. While apt reports a lock held by another
# process, waits and retries until the deadline ({limit}), then names the lock.
claw_apt() {{
  while :; do
    claw_left=$(( claw_deadline - $(date +%s) ))
    [ "$claw_left" -gt 0 ] || claw_left=0
    if apt-get -q -o DPkg::Lock::Timeout="$claw_left" "$@" >"$claw_out" 2>&1; then return 0; else claw_rc=$?; fi
    if grep -qE '^E: (Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock)' "$claw_out"; then
      if [ "$(date +%s)" -lt "$claw_deadline" ]; then sleep 1; continue; fi
      claw_lock=$(grep -E '^E: ' "$claw_out" | grep -oE '/[^ ()]*lock[a-z-]*' | head -n 1)
      claw_by=$(grep -oE 'held by process [0-9]+( \([^)]*\))?' "$claw_out" | tail -n 1)
      echo "$claw_what: the lock ${{claw_lock:-of apt/dpkg}} is still held${{claw_by:+ (}}$claw_by${{claw_by:+)}} after waiting {limit} (lock_timeout); another apt or dpkg run (unattended-upgrades?) is using it" >&2
      return 1
    fi
    # apt's errors and warnings, else its last lines
    if grep -qE '^(E|W): ' "$claw_out"; then grep -E '^(E|W): ' "$claw_out" | tail -n 4 >&2; else tail -n 4 "$claw_out" >&2; fi
    echo "$claw_what failed (apt-get exit status $claw_rc)" >&2
    return 1
  done
}}
"#
        )
    }

    /// Installs what is still missing when the script runs (the plan may be older than the
    /// host): refreshes the index, installs, then checks dpkg lists every package.
    fn install_script(&self) -> String {
        let names: Vec<String> = self.packages.iter().map(|p| quote(p)).collect();
        let names = names.join(" ");
        let recommends = match self.install_recommends {
            None => "",
            Some(true) => " -o APT::Install-Recommends=true",
            Some(false) => " --no-install-recommends",
        };
        let mut s = self.prologue();
        s.push_str(&format!(
            r#"claw_have=" $(claw_state installed {names} | tr '\n' ' ') "
set --
for p in {names}; do case $claw_have in *" $p "*) ;; *) set -- "$@" "$p" ;; esac; done
[ $# -gt 0 ] || {{ echo 'already installed'; exit 0; }}
claw_what='refreshing the package index (apt-get update)'
claw_apt update || exit 1
claw_what="installing $*"
claw_apt install -y --no-remove{recommends} -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -- "$@" || exit 1
claw_have=" $(claw_state installed "$@" | tr '\n' ' ') "
claw_not=''
for p in "$@"; do case $claw_have in *" $p "*) ;; *) claw_not="$claw_not $p" ;; esac; done
[ -z "$claw_not" ] || {{ echo "apt-get installed$claw_not, yet dpkg does not list it as installed (a virtual package? name a package that provides it)" >&2; exit 1; }}
"#
        ));
        s
    }

    /// Removes (or purges) what is still there, refusing to take unlisted packages with it.
    fn remove_script(&self) -> String {
        let names: Vec<String> = self.packages.iter().map(|p| quote(p)).collect();
        let names = names.join(" ");
        let (want, verb, flag) = if self.purge {
            ("known", "purging", " --purge")
        } else {
            ("installed", "removing", "")
        };
        let mut s = self.prologue();
        s.push_str(&format!(
            r#"set -- $(claw_state {want} {names})
[ $# -gt 0 ] || {{ echo 'already absent'; exit 0; }}
claw_what="simulating the removal of $*"
claw_apt -s -o Debug::NoLocking=1 remove{flag} -- "$@" || exit 1
claw_listed=" $(for p in "$@"; do printf '%s %s ' "$p" "${{p%%:*}}"; done)"
claw_extra=''
for r in $(sed -n -e 's/^Remv \([^ ]*\).*/\1/p' -e 's/^Purg \([^ ]*\).*/\1/p' "$claw_out"); do
  case $claw_listed in *" $r "*|*" ${{r%%:*}} "*) ;; *) claw_extra="$claw_extra $r" ;; esac
done
[ -z "$claw_extra" ] || {{ echo "{verb} $* would also remove$claw_extra (they depend on it): add them to \`packages\` to remove them too" >&2; exit 1; }}
claw_what="{verb} $*"
claw_apt remove -y{flag} -- "$@" || exit 1
set -- $(claw_state {want} "$@")
[ $# -eq 0 ] || {{ echo "apt-get finished, yet dpkg still lists $*" >&2; exit 1; }}
"#
        ));
        s
    }

    pub fn diff(&self, o: &DpkgState) -> Result<Change, StepError> {
        let DpkgState::Packages(pkgs) = o else {
            return Err(StepError::host(
                "dpkg-query not found: the `apt` kind needs a Debian-based host (Debian, Ubuntu, ...)",
            ));
        };
        let broken: Vec<String> = pkgs
            .iter()
            .filter_map(|(n, s)| match s {
                PkgState::Broken { what } => Some(format!("{n} is {what}")),
                _ => None,
            })
            .collect();
        if !broken.is_empty() {
            return Err(StepError::host(format!(
                "{}: an earlier dpkg run was interrupted; repair it on the host first (`dpkg --configure -a`, or `apt-get install --reinstall` the package)",
                broken.join(", ")
            )));
        }
        let target = self.target();
        match self.state {
            State::Present => {
                let mut details = vec![];
                let mut have = vec![];
                for (n, s) in pkgs {
                    match s {
                        PkgState::Installed { version } => have.push(format!("{n} {version}")),
                        PkgState::ConfigFiles => details.push(format!(
                            "install {n} (only its configuration files are left)"
                        )),
                        _ => details.push(format!("install {n}")),
                    }
                }
                if details.is_empty() {
                    return Ok(Change::noop(
                        target,
                        format!("installed: {}", have.join(", ")),
                    ));
                }
                let reason = format!(
                    "{} of {} not installed (the index is refreshed first)",
                    details.len(),
                    pkgs.len()
                );
                let mut c = Change::new(Action::Create, target, reason, self.install_script());
                c.details = details;
                Ok(c)
            }
            State::Absent => {
                let details: Vec<String> = pkgs
                    .iter()
                    .filter_map(|(n, s)| match (s, self.purge) {
                        (PkgState::Installed { version }, false) => {
                            Some(format!("remove {n} {version}"))
                        }
                        (PkgState::Installed { version }, true) => {
                            Some(format!("purge {n} {version}"))
                        }
                        (PkgState::ConfigFiles, true) => {
                            Some(format!("purge {n} (configuration files)"))
                        }
                        _ => None,
                    })
                    .collect();
                if details.is_empty() {
                    let why = if self.purge {
                        "not installed, no configuration files left"
                    } else {
                        "not installed"
                    };
                    return Ok(Change::noop(target, why));
                }
                let reason = format!("{} of {} still installed", details.len(), pkgs.len());
                let mut c = Change::new(Action::Delete, target, reason, self.remove_script());
                c.details = details;
                Ok(c)
            }
        }
    }
}

/// The `apt` step kind.
pub(crate) struct AptKind;

impl super::StepKind for AptKind {
    fn name(&self) -> &'static str {
        "apt"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<Args>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        _: &serde_json::Map<String, serde_json::Value>,
        _: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        Ok(super::Desired::Apt(Desired::from_args(super::args(args)?)?))
    }

    /// Needs apt-get and dpkg.
    fn needs(&self) -> &'static [super::kind::Need] {
        &[super::kind::Need::Apt]
    }
}

/// Asks for the packages' states.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        vec![p.add(crate::fact::Request::Packages(self.packages.clone()))]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [crate::fact::Observed::Dpkg(o)] => Some(self.diff(o)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(pkgs: &[&str], state: State) -> Desired {
        Desired::from_args(Args {
            packages: pkgs.iter().map(ToString::to_string).collect(),
            state,
            purge: false,
            install_recommends: None,
            lock_timeout: None,
        })
        .unwrap()
    }

    #[test]
    fn an_entry_may_name_several_packages() {
        let d = want(
            &["docker.io docker-compose", " git ", "git"],
            State::Present,
        );
        assert_eq!(d.packages, ["docker.io", "docker-compose", "git"]);
        let e = |p: &[&str]| {
            Desired::from_args(Args {
                packages: p.iter().map(ToString::to_string).collect(),
                state: State::Present,
                purge: false,
                install_recommends: None,
                lock_timeout: None,
            })
            .unwrap_err()
            .to_string()
        };
        assert!(e(&[" "]).contains("is empty"));
        assert!(e(&["git $(id)"]).contains("`$(id)` is not a Debian package name"));
    }

    fn seen(v: &[(&str, PkgState)]) -> DpkgState {
        DpkgState::Packages(v.iter().map(|(n, s)| (n.to_string(), s.clone())).collect())
    }

    fn inst(v: &str) -> PkgState {
        PkgState::Installed { version: v.into() }
    }

    #[test]
    fn present_cases() {
        use PkgState::*;
        // (observed, expected action, details, reason)
        type Case<'a> = (Vec<(&'a str, PkgState)>, Action, Vec<&'a str>, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![("git", inst("1:2.47")), ("curl", inst("8.14"))],
                Action::NoOp,
                vec![],
                "installed: git 1:2.47, curl 8.14",
            ),
            (
                vec![("git", NotInstalled), ("curl", inst("8.14"))],
                Action::Create,
                vec!["install git"],
                "1 of 2 not installed (the index is refreshed first)",
            ),
            (
                vec![("git", ConfigFiles), ("curl", NotInstalled)],
                Action::Create,
                vec![
                    "install git (only its configuration files are left)",
                    "install curl",
                ],
                "2 of 2 not installed (the index is refreshed first)",
            ),
        ];
        let d = want(&["git", "curl"], State::Present);
        for (obs, action, details, reason) in cases {
            let c = d.diff(&seen(&obs)).unwrap();
            assert_eq!(c.action, action, "{obs:?}");
            assert_eq!(c.details, details, "{obs:?}");
            assert_eq!(c.reason, reason, "{obs:?}");
            assert_eq!(c.target, "git curl");
            assert_eq!(c.op.is_some(), action != Action::NoOp);
        }
    }

    #[test]
    fn absent_cases() {
        use PkgState::*;
        let obs = seen(&[
            ("git", inst("1:2.47")),
            ("curl", ConfigFiles),
            ("jq", NotInstalled),
        ]);
        let d = want(&["git", "curl", "jq"], State::Absent);
        let c = d.diff(&obs).unwrap();
        assert_eq!(c.action, Action::Delete);
        assert_eq!(c.details, ["remove git 1:2.47"]);
        assert_eq!(c.reason, "1 of 3 still installed");
        let s = c.op.unwrap().script;
        assert!(s.contains("claw_apt remove -y -- \"$@\""), "{s}");
        assert!(
            !s.contains("update"),
            "removal never refreshes the index: {s}"
        );

        let mut p = d.clone();
        p.purge = true;
        let c = p.diff(&obs).unwrap();
        assert_eq!(
            c.details,
            ["purge git 1:2.47", "purge curl (configuration files)"]
        );
        assert!(c.op.unwrap().script.contains("remove -y --purge --"));

        let none = seen(&[
            ("git", NotInstalled),
            ("curl", ConfigFiles),
            ("jq", NotInstalled),
        ]);
        let c = d.diff(&none).unwrap();
        assert_eq!(
            (c.action, c.reason.as_str()),
            (Action::NoOp, "not installed")
        );
        assert!(c.op.is_none());
        let c = p
            .diff(&seen(&[
                ("git", NotInstalled),
                ("curl", NotInstalled),
                ("jq", NotInstalled),
            ]))
            .unwrap();
        assert_eq!(
            (c.action, c.reason.as_str()),
            (Action::NoOp, "not installed, no configuration files left")
        );
    }

    #[test]
    fn refuses_broken_packages_and_non_debian_hosts() {
        let d = want(&["git"], State::Present);
        let e = d
            .diff(&seen(&[(
                "git",
                PkgState::Broken {
                    what: "half-configured".into(),
                },
            )]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("git is half-configured") && e.contains("dpkg --configure -a"),
            "{e}"
        );
        let e = d.diff(&DpkgState::NoDpkg).unwrap_err().to_string();
        assert!(e.contains("Debian-based"), "{e}");
    }

    #[test]
    fn install_script_refreshes_then_installs() {
        let mut d = want(&["git", "libc6:amd64"], State::Present);
        let s = d
            .diff(&seen(&[
                ("git", PkgState::NotInstalled),
                ("libc6:amd64", inst("2.41")),
            ]))
            .unwrap()
            .op
            .unwrap()
            .script;
        let update = s.find("claw_apt update").unwrap();
        let install = s
            .find("claw_apt install -y --no-remove -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -- \"$@\"")
            .unwrap();
        assert!(update < install, "{s}");
        assert!(s.contains("for p in 'git' 'libc6:amd64'; do"), "{s}");
        assert!(s.contains("DEBIAN_FRONTEND=noninteractive"));
        assert!(s.contains("claw_deadline=$(( $(date +%s) + 120 ))"), "{s}");
        assert!(s.contains("after waiting 2m (lock_timeout)"), "{s}");
        d.install_recommends = Some(false);
        d.lock_timeout = Duration::from_secs(90);
        let s = d.install_script();
        assert!(
            s.contains("install -y --no-remove --no-install-recommends -o Dpkg"),
            "{s}"
        );
        assert!(
            s.contains("+ 90 ))") && s.contains("after waiting 90s"),
            "{s}"
        );
        d.install_recommends = Some(true);
        assert!(
            d.install_script()
                .contains("--no-remove -o APT::Install-Recommends=true -o Dpkg")
        );
    }

    #[test]
    fn arguments_are_checked() {
        let args = |pkgs: &[&str], state: State, purge: bool, rec: Option<bool>| Args {
            packages: pkgs.iter().map(ToString::to_string).collect(),
            state,
            purge,
            install_recommends: rec,
            lock_timeout: None,
        };
        for (a, says) in [
            (args(&[], State::Present, false, None), "is empty"),
            (
                args(&["Git"], State::Present, false, None),
                "not a Debian package name",
            ),
            (
                args(&["git=1:2.4"], State::Present, false, None),
                "versions and patterns",
            ),
            (
                args(&["lib*"], State::Present, false, None),
                "versions and patterns",
            ),
            (
                args(&["a$(x)"], State::Present, false, None),
                "not a Debian package name",
            ),
            (
                args(&["-o"], State::Present, false, None),
                "not a Debian package name",
            ),
            (
                args(&["x"], State::Present, false, None),
                "not a Debian package name",
            ),
            (
                args(&["git:"], State::Present, false, None),
                "not a Debian package name",
            ),
            (
                args(&["git"], State::Present, true, None),
                "`purge` goes with",
            ),
            (
                args(&["git"], State::Absent, false, Some(true)),
                "`install_recommends` goes with",
            ),
        ] {
            let e = Desired::from_args(a).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let d = Desired::from_args(args(
            &["git", "libstdc++6:i386", "git", "docker.io"],
            State::Present,
            false,
            None,
        ))
        .unwrap();
        assert_eq!(d.packages, ["git", "libstdc++6:i386", "docker.io"]);
        assert_eq!(d.lock_timeout, DEFAULT_LOCK_TIMEOUT);
        let a: Args = toml::from_str("packages = [\"git\"]\nlock_timeout = \"5m\"").unwrap();
        assert_eq!(
            Desired::from_args(a).unwrap().lock_timeout,
            Duration::from_secs(300)
        );
        assert!(toml::from_str::<Args>("packages = [\"git\"]\nversion = \"1\"").is_err());
    }

    /// A fake `apt-get` and `dpkg-query` (state in files) to run the scripts locally.
    struct Fake {
        dir: tempfile::TempDir,
    }

    const FAKE_DPKG_QUERY: &str = r#"#!/bin/sh
# dpkg-query -W -f FORMAT -- NAME
eval "n=\${$#}"
[ -f "$FAKE/pkg/$n" ] || { echo "dpkg-query: no packages found matching $n" >&2; exit 1; }
s=$(cat "$FAKE/pkg/$n")
case $3 in *Version*) printf '%s|1.0|amd64,' "$s" ;; *) printf '%s,' "$s" ;; esac
"#;

    const FAKE_APT_GET: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE/log"
now=$(date +%s)
if [ -f "$FAKE/busy" ] && [ "$now" -lt "$(cat "$FAKE/busy")" ]; then
  echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (unattended-upgr)"
  echo "E: Unable to lock directory /var/lib/apt/lists/"
  exit 100
fi
sim=no; op=''
while [ $# -gt 0 ]; do
  case $1 in --) shift; break ;; -s) sim=yes ;; update|install|remove) op=$1 ;; esac
  shift
done
case $op in
  update) echo "Reading package lists..." ;;
  install) for p; do
      [ -f "$FAKE/avail/$p" ] || { echo "E: Unable to locate package $p"; exit 100; }
      [ "$(cat "$FAKE/avail/$p")" = virtual ] || printf 'ii ' > "$FAKE/pkg/$p"
    done ;;
  remove) for p; do
      if [ $sim = yes ]; then echo "Remv $p [1.0]"; [ -f "$FAKE/rdeps/$p" ] && echo "Remv $(cat "$FAKE/rdeps/$p") [2.0]"
      else rm -f "$FAKE/pkg/$p"; fi
    done ;;
esac
exit 0
"#;

    impl Fake {
        fn new() -> Fake {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            for sub in ["bin", "pkg", "avail", "rdeps"] {
                std::fs::create_dir(dir.path().join(sub)).unwrap();
            }
            for (name, text) in [("dpkg-query", FAKE_DPKG_QUERY), ("apt-get", FAKE_APT_GET)] {
                let p = dir.path().join("bin").join(name);
                std::fs::write(&p, text).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            Fake { dir }
        }
        fn put(&self, sub: &str, name: &str, text: &str) {
            std::fs::write(self.dir.path().join(sub).join(name), text).unwrap();
        }
        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        }
        /// Runs a script; returns (success, stderr).
        fn run(&self, script: &str) -> (bool, String) {
            let path = format!(
                "{}:{}",
                self.dir.path().join("bin").display(),
                std::env::var("PATH").unwrap()
            );
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("PATH", path)
                .env("FAKE", self.dir.path())
                .output()
                .unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        }
    }

    #[test]
    fn install_runs_update_once_and_only_for_missing_packages() {
        let f = Fake::new();
        f.put("pkg", "curl", "ii ");
        f.put("avail", "git", "");
        let d = want(&["curl", "git"], State::Present);
        let (ok, err) = f.run(&d.install_script());
        assert!(ok, "{err}");
        let log = f.log();
        assert_eq!(log.matches(" update").count(), 1, "{log}");
        assert!(log.contains("install -y --no-remove -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -- git\n"), "{log}");
        // Now nothing is missing: no apt-get at all.
        std::fs::remove_file(f.dir.path().join("log")).unwrap();
        let (ok, err) = f.run(&d.install_script());
        assert!(ok, "{err}");
        assert_eq!(f.log(), "");
    }

    #[test]
    fn install_failures_name_the_packages() {
        let f = Fake::new();
        let d = want(&["nosuch"], State::Present);
        let (ok, err) = f.run(&d.install_script());
        assert!(!ok);
        assert!(err.contains("E: Unable to locate package nosuch"), "{err}");
        assert!(
            err.trim_end()
                .ends_with("installing nosuch failed (apt-get exit status 100)"),
            "{err}"
        );
        // A virtual package: apt succeeds, dpkg does not list the name.
        f.put("avail", "mail-transport-agent", "virtual");
        let (ok, err) = f.run(&want(&["mail-transport-agent"], State::Present).install_script());
        assert!(!ok);
        assert!(err.contains("a virtual package?"), "{err}");
    }

    #[test]
    fn waits_for_a_busy_lock_then_gives_up_naming_it() {
        let f = Fake::new();
        f.put("avail", "git", "");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Busy for ~2 s, limit 30 s: waits and succeeds.
        std::fs::write(f.dir.path().join("busy"), format!("{}", now + 2)).unwrap();
        let mut d = want(&["git"], State::Present);
        d.lock_timeout = Duration::from_secs(30);
        let (ok, err) = f.run(&d.install_script());
        assert!(ok, "{err}");
        assert!(
            f.log().matches(" update").count() >= 2,
            "retried: {}",
            f.log()
        );
        // Busy beyond the limit: a clear error naming the lock and its holder.
        std::fs::write(f.dir.path().join("busy"), format!("{}", now + 3600)).unwrap();
        std::fs::remove_file(f.dir.path().join("pkg").join("git")).unwrap();
        d.lock_timeout = Duration::from_secs(2);
        let (ok, err) = f.run(&d.install_script());
        assert!(!ok);
        assert!(
            err.contains("refreshing the package index (apt-get update): the lock /var/lib/apt/lists/lock is still held (held by process 4242 (unattended-upgr)) after waiting 2s (lock_timeout)"),
            "{err}"
        );
    }

    #[test]
    fn removal_refuses_to_take_other_packages_along() {
        let f = Fake::new();
        f.put("pkg", "git", "ii ");
        f.put("rdeps", "git", "git-lfs");
        let d = want(&["git"], State::Absent);
        let (ok, err) = f.run(&d.remove_script());
        assert!(!ok);
        assert!(
            err.contains("removing git would also remove git-lfs (they depend on it)"),
            "{err}"
        );
        assert!(f.dir.path().join("pkg/git").exists(), "nothing removed");
        let d = want(&["git", "git-lfs"], State::Absent);
        f.put("pkg", "git-lfs", "ii ");
        let (ok, err) = f.run(&d.remove_script());
        assert!(ok, "{err}");
        assert!(!f.dir.path().join("pkg/git").exists());
        assert!(!f.log().contains("update"), "{}", f.log());
    }
}
