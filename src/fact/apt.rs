//! Fact: what dpkg knows about some packages (`dpkg-query -W`), one record per request.
//!
//! Record: `@ID<TAB>nodpkg` when `dpkg-query` is missing (not a Debian-based host), else
//! `@ID<TAB>dpkg` followed by, per requested name, two fields: the name and its instances, each
//! `STATUS|VERSION|ARCH,` (`STATUS` = dpkg's three-letter `db:Status-Abbrev`, e.g. `ii `); an
//! empty instances field means dpkg does not know the package.

use super::FactError;
use crate::quote::quote;

/// The state of one requested package, summarised over its instances (architectures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PkgState {
    /// Unknown to dpkg, or known but not installed.
    NotInstalled,
    /// Removed, its configuration files kept (`rc`).
    ConfigFiles,
    /// Installed (also with triggers pending).
    Installed { version: String },
    /// Half-installed, unpacked, half-configured or needing reinstallation: an earlier dpkg run
    /// was interrupted. `what` names the state.
    Broken { what: String },
}

/// What the probe saw for a list of packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpkgState {
    /// `dpkg-query` is not on the host.
    NoDpkg,
    /// Per requested name, in request order.
    Packages(Vec<(String, PkgState)>),
}

/// The probe snippet for `packages` (names already validated by the resource).
pub fn command(id: usize, packages: &[String]) -> String {
    let names: Vec<String> = packages.iter().map(|p| quote(p)).collect();
    format!(
        "if command -v dpkg-query >/dev/null 2>&1; then r=''; for p in {}; do s=$(dpkg-query -W -f '${{db:Status-Abbrev}}|${{Version}}|${{Architecture}},' -- \"$p\" 2>/dev/null); r=\"$r\t$p\t$s\"; done; printf '@%s\\tdpkg%s\\n' {id} \"$r\"; else printf '@%s\\tnodpkg\\n' {id}; fi\n",
        names.join(" ")
    )
}

/// Summarises the instances field of one package.
fn summarise(name: &str, instances: &str) -> Result<PkgState, FactError> {
    let bad = || FactError(format!("bad dpkg-query output for `{name}`: `{instances}`"));
    let mut installed: Option<String> = None;
    let mut broken: Option<String> = None;
    let mut config = false;
    for inst in instances.split(',').filter(|i| !i.is_empty()) {
        let mut f = inst.split('|');
        let (Some(status), Some(version), Some(_arch), None) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(bad());
        };
        let s: Vec<char> = status.chars().collect();
        if s.len() != 3 || !"uirph".contains(s[0]) || !" R".contains(s[2]) {
            return Err(bad());
        }
        let word = match s[1] {
            'i' | 'W' | 't' if s[2] == ' ' => {
                installed.get_or_insert_with(|| version.to_string());
                continue;
            }
            'n' => continue,
            'c' => {
                config = true;
                continue;
            }
            'i' | 'W' | 't' => "installed but needing reinstallation",
            'H' => "half-installed",
            'U' => "unpacked but not configured",
            'F' => "half-configured",
            _ => return Err(bad()),
        };
        broken.get_or_insert_with(|| word.to_string());
    }
    Ok(match (broken, installed) {
        (Some(what), _) => PkgState::Broken { what },
        (None, Some(version)) => PkgState::Installed { version },
        (None, None) if config => PkgState::ConfigFiles,
        (None, None) => PkgState::NotInstalled,
    })
}

/// Parses the fields after `@ID`; `packages` are the requested names, in order.
pub fn parse(fields: &[&str], packages: &[String]) -> Result<DpkgState, FactError> {
    match fields {
        ["nodpkg"] => Ok(DpkgState::NoDpkg),
        ["dpkg", rest @ ..] => {
            if rest.len() != 2 * packages.len() {
                return Err(FactError(format!(
                    "bad dpkg record `{}` (expected {} packages)",
                    fields.join("\t"),
                    packages.len()
                )));
            }
            let mut out = Vec::with_capacity(packages.len());
            for (pair, want) in rest.chunks(2).zip(packages) {
                if pair[0] != want {
                    return Err(FactError(format!(
                        "dpkg record names `{}` where `{want}` was asked",
                        pair[0]
                    )));
                }
                out.push((want.clone(), summarise(want, pair[1])?));
            }
            Ok(DpkgState::Packages(out))
        }
        _ => Err(FactError(format!(
            "bad dpkg record `{}`",
            fields.join("\t")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn summarises_dpkg_states() {
        let cases: &[(&str, PkgState)] = &[
            ("", PkgState::NotInstalled),
            ("un |<none>|,", PkgState::NotInstalled),
            (
                "ii |1:2.47.2-0.1|amd64,",
                PkgState::Installed {
                    version: "1:2.47.2-0.1".into(),
                },
            ),
            (
                "hi |2.41-12|amd64,",
                PkgState::Installed {
                    version: "2.41-12".into(),
                },
            ),
            (
                "it |1.0|all,",
                PkgState::Installed {
                    version: "1.0".into(),
                },
            ),
            ("rc |1.0|amd64,", PkgState::ConfigFiles),
            // one architecture installed, another only with config files: installed
            (
                "rc |1.0|i386,ii |1.0|amd64,",
                PkgState::Installed {
                    version: "1.0".into(),
                },
            ),
            (
                "iF |1.0|amd64,",
                PkgState::Broken {
                    what: "half-configured".into(),
                },
            ),
            (
                "iU |1.0|amd64,",
                PkgState::Broken {
                    what: "unpacked but not configured".into(),
                },
            ),
            (
                "iiR|1.0|amd64,",
                PkgState::Broken {
                    what: "installed but needing reinstallation".into(),
                },
            ),
        ];
        for (field, want) in cases {
            assert_eq!(&summarise("x", field).unwrap(), want, "{field:?}");
        }
    }

    #[test]
    fn parses_records() {
        let p = names(&["git", "libc6:amd64"]);
        assert_eq!(parse(&["nodpkg"], &p).unwrap(), DpkgState::NoDpkg);
        assert_eq!(
            parse(
                &["dpkg", "git", "", "libc6:amd64", "ii |2.41-12|amd64,"],
                &p
            )
            .unwrap(),
            DpkgState::Packages(vec![
                ("git".into(), PkgState::NotInstalled),
                (
                    "libc6:amd64".into(),
                    PkgState::Installed {
                        version: "2.41-12".into()
                    }
                ),
            ])
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let p = names(&["git"]);
        for (fields, says) in [
            (vec!["dpkg"], "expected 1 packages"),
            (vec!["dpkg", "git", "", "x", ""], "expected 1 packages"),
            (vec!["dpkg", "curl", ""], "where `git` was asked"),
            (
                vec!["dpkg", "git", "ii 1.0"],
                "bad dpkg-query output for `git`",
            ),
            (vec!["dpkg", "git", "xx |1|amd64,"], "bad dpkg-query output"),
            (vec!["dpkg", "git", "iZ |1|amd64,"], "bad dpkg-query output"),
            (
                vec!["dpkg", "git", "ii |1|amd64|x,"],
                "bad dpkg-query output",
            ),
            (vec!["weird"], "bad dpkg record"),
            (vec![], "bad dpkg record"),
        ] {
            let e = parse(&fields, &p).unwrap_err().to_string();
            assert!(e.contains(says), "{fields:?}: {e}");
        }
    }

    #[test]
    fn probe_runs_locally() {
        // The machine running the tests is Debian (the lab needs it); `dpkg` itself is installed.
        let p = names(&["dpkg", "no-such-package-claw"]);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command(4, &p))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let line = text.lines().next().unwrap();
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields[0], "@4");
        match parse(&fields[1..], &p).unwrap() {
            DpkgState::Packages(v) => {
                assert!(matches!(v[0].1, PkgState::Installed { .. }), "{v:?}");
                assert_eq!(v[1].1, PkgState::NotInstalled);
            }
            DpkgState::NoDpkg => panic!("dpkg-query is on this machine"),
        }
    }

    #[test]
    fn quoting_keeps_names_literal() {
        assert!(command(0, &names(&["a$(x)"])).contains("for p in 'a$(x)';"));
    }
}
