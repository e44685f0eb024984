//! Fact: what dpkg knows about some packages (`dpkg-query -W`): one `dpkg-query` per script for
//! every request ([`batch_command`]), its lines sorted into each request's record.
//!
//! Record: `nodpkg` when `dpkg-query` is missing (not a Debian-based host), else `dpkg`
//! followed by, per requested name, two fields: the name and its instances, each
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

/// The probe snippet for every package request of a script at once: ONE `dpkg-query` for the
/// union of the names (instead of one per package). Prints `@dpkg-none` without `dpkg-query`,
/// else `@dpkg-ok` and one `@dpkg<TAB>NAME<TAB>STATUS|VERSION|ARCH` line per instance dpkg knows
/// (an unknown name prints nothing). [`Batch`] turns them into each request's record.
pub(crate) fn batch_command(packages: &[&str]) -> String {
    let mut names: Vec<&str> = packages
        .iter()
        .map(|p| p.split_once(':').map_or(*p, |(n, _)| n))
        .collect();
    names.sort_unstable();
    names.dedup();
    let names: Vec<String> = names.iter().map(|p| quote(p)).collect();
    format!(
        "if command -v dpkg-query >/dev/null 2>&1; then echo '@dpkg-ok'; dpkg-query -W -f '@dpkg\\t${{Package}}\\t${{db:Status-Abbrev}}|${{Version}}|${{Architecture}}\\n' -- {} 2>/dev/null; printf '@dpkg-rc\\t%s\\n' $?; else echo '@dpkg-none'; fi\n",
        names.join(" ")
    )
}

/// The batched dpkg answer being collected from the output.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// None: no answer yet; Some(None): no dpkg-query; Some(Some(..)): (name, instance) pairs.
    seen: Option<Option<Vec<(String, String)>>>,
    /// dpkg-query's exit status (1 = some name unknown, which is normal).
    rc: Option<String>,
}

impl Batch {
    /// Takes one record of the batch; false if `tag` is not one.
    pub(crate) fn take(&mut self, tag: &str, fields: &[&str]) -> Result<bool, FactError> {
        match (tag, fields) {
            ("dpkg-none", []) => self.seen = Some(None),
            ("dpkg-ok", []) => self.seen = Some(Some(vec![])),
            ("dpkg", [name, inst]) => match &mut self.seen {
                Some(Some(v)) => v.push((name.to_string(), inst.to_string())),
                _ => return Err(FactError("dpkg record before `@dpkg-ok`".into())),
            },
            ("dpkg-rc", [rc]) => self.rc = Some(rc.to_string()),
            ("dpkg" | "dpkg-ok" | "dpkg-none" | "dpkg-rc", _) => {
                return Err(FactError(format!("bad dpkg record `@{tag}`")));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The state of `packages` (one request), or None when the batch did not answer.
    pub(crate) fn state(&self, packages: &[String]) -> Result<Option<DpkgState>, FactError> {
        let Some(seen) = &self.seen else {
            return Ok(None);
        };
        let Some(instances) = seen else {
            return parse(&["nodpkg"], packages).map(Some);
        };
        // 0: all known, 1: some name unknown; anything else (a broken database) must not read
        // as "nothing installed".
        match self.rc.as_deref() {
            Some("0" | "1") => {}
            Some(rc) => return Err(FactError(format!("dpkg-query failed (exit status {rc})"))),
            None => return Err(FactError("dpkg-query did not finish".into())),
        }
        let mut out = Vec::with_capacity(packages.len());
        for want in packages {
            // `NAME:ARCH` takes the instances of that architecture, and an `all` one (which
            // serves every architecture; `dpkg-query -W NAME:ARCH` would not list it).
            let (name, arch) = match want.split_once(':') {
                Some((n, a)) => (n, Some(a)),
                None => (want.as_str(), None),
            };
            let mut field = String::new();
            for (n, inst) in instances {
                let inst_arch = inst.rsplit('|').next().unwrap_or("");
                if n == name && arch.is_none_or(|a| a == inst_arch || inst_arch == "all") {
                    field.push_str(inst);
                    field.push(',');
                }
            }
            out.push((want.clone(), summarise(want, &field)?));
        }
        Ok(Some(DpkgState::Packages(out)))
    }
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
pub(crate) fn parse(fields: &[&str], packages: &[String]) -> Result<DpkgState, FactError> {
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
        n.iter().map(ToString::to_string).collect()
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

    fn batch_of(out: &str) -> Batch {
        let mut b = Batch::default();
        for line in out.lines() {
            let mut f = line.strip_prefix('@').unwrap().split('\t');
            let tag = f.next().unwrap();
            assert!(b.take(tag, &f.collect::<Vec<_>>()).unwrap(), "{line}");
        }
        b
    }

    #[test]
    fn probe_runs_locally() {
        // The machine running the tests is Debian (the lab needs it); `dpkg` itself is installed.
        // Two requests share the one dpkg-query, each gets its own answer.
        let p = names(&["dpkg", "no-such-package-claw"]);
        let q = names(&["dpkg:all", "coreutils"]);
        let names: Vec<&str> = p.iter().chain(&q).map(String::as_str).collect();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(batch_command(&names))
            .output()
            .unwrap();
        let b = batch_of(&String::from_utf8(out.stdout).unwrap());
        match b.state(&p).unwrap().unwrap() {
            DpkgState::Packages(v) => {
                assert!(matches!(v[0].1, PkgState::Installed { .. }), "{v:?}");
                assert_eq!(v[1].1, PkgState::NotInstalled);
            }
            DpkgState::NoDpkg => panic!("dpkg-query is on this machine"),
        }
        match b.state(&q).unwrap().unwrap() {
            DpkgState::Packages(v) => {
                // dpkg is arch-specific (amd64), so `dpkg:all` names no instance
                assert_eq!(v[0].1, PkgState::NotInstalled, "{v:?}");
                assert!(matches!(v[1].1, PkgState::Installed { .. }), "{v:?}");
            }
            DpkgState::NoDpkg => panic!("dpkg-query is on this machine"),
        }
    }

    #[test]
    fn batch_without_dpkg_or_answer() {
        assert_eq!(
            batch_of("@dpkg-none").state(&names(&["curl"])).unwrap(),
            Some(DpkgState::NoDpkg)
        );
        assert_eq!(Batch::default().state(&names(&["curl"])).unwrap(), None);
        let b = batch_of(
            "@dpkg-ok\n@dpkg\tcurl\tii |8.0|amd64\n@dpkg\tcurl\trc |7.0|i386\n@dpkg-rc\t1",
        );
        assert_eq!(
            b.state(&names(&["curl", "curl:i386"])).unwrap(),
            Some(DpkgState::Packages(vec![
                (
                    "curl".into(),
                    PkgState::Installed {
                        version: "8.0".into()
                    }
                ),
                ("curl:i386".into(), PkgState::ConfigFiles),
            ]))
        );
        assert!(Batch::default().take("dpkg", &["x", "y"]).is_err());
        let broken = batch_of("@dpkg-ok\n@dpkg-rc\t2").state(&names(&["curl"]));
        assert!(broken.unwrap_err().to_string().contains("exit status 2"));
        let cut = batch_of("@dpkg-ok\n@dpkg\tcurl\tii |8.0|amd64").state(&names(&["curl"]));
        assert!(cut.unwrap_err().to_string().contains("did not finish"));
        assert!(Batch::default().take("dpkg-ok", &["x"]).is_err());
    }

    #[test]
    fn quoting_keeps_names_literal() {
        let c = batch_command(&["a$(x)", "b:amd64", "a$(x)"]);
        assert!(c.contains("-- 'a$(x)' 'b' 2>"), "{c}");
    }
}
