//! `apt_repo`: an apt repository (a mirror, a vendor repository) with its signing key, as two
//! root-owned 0644 files managed like `file` steps:
//! `/etc/apt/keyrings/REPO.asc` (the ASCII-armored public key, read from a local file) and
//! `/etc/apt/sources.list.d/REPO.sources` (deb822, `Signed-By:` that key only).
//!
//! Nothing is fetched here: the next `apt` step that installs something refreshes the index
//! first, so it sees the repository. Packages already installed are not re-installed from a new
//! repository.

use super::StepError;
use super::{State, file};
use crate::plan::{Action, Change, Op};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Args {
    /// The files' name (`REPO.sources`, `REPO.asc`): letters, digits, `-`, `_`.
    pub repo: String,
    /// Base URL (`http://` or `https://`).
    pub url: Option<String>,
    /// Suite (`trixie`, `{{ facts.os_codename }}-security`); a path ending in `/` for a flat
    /// repository (then no `components`).
    pub suite: Option<String>,
    /// Default `["main"]` (none for a flat repository).
    pub components: Option<Vec<String>>,
    /// Architectures to fetch (default: apt's, the host's).
    pub architectures: Option<Vec<String>>,
    /// Local ASCII-armored public key file, relative to the playbook's directory.
    pub key: Option<String>,
    #[serde(default)]
    pub state: State,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub repo: String,
    pub key: file::Desired,
    pub sources: file::Desired,
    pub state: State,
}

pub(crate) const KEYRINGS: &str = "/etc/apt/keyrings";
pub(crate) const SOURCES: &str = "/etc/apt/sources.list.d";

fn word(what: &str, v: &str) -> Result<(), StepError> {
    if v.is_empty()
        || v.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return Err(StepError::arg(format!(
            "`{what} = \"{v}\"` must be one non-empty word (no spaces, no `#`)"
        )));
    }
    Ok(())
}

/// Reads and checks the key file.
fn read_key(files_dir: &Path, rel: &str) -> Result<Vec<u8>, StepError> {
    let p = files_dir.join(rel);
    let data = std::fs::read(&p).map_err(|e| StepError::ReadArgFile {
        arg: "key",
        path: p.clone(),
        source: e.into(),
    })?;
    let text = String::from_utf8_lossy(&data);
    if text.contains("PRIVATE KEY") {
        return Err(StepError::input(format!(
            "`key` file {} holds a private key: give the repository's PUBLIC key",
            p.display()
        )));
    }
    let begin = text
        .trim_start()
        .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----");
    if !begin || !text.contains("-----END PGP PUBLIC KEY BLOCK-----") {
        return Err(StepError::input(format!(
            "`key` file {} is not an ASCII-armored OpenPGP public key (`-----BEGIN PGP PUBLIC KEY BLOCK-----`); convert a binary key with `gpg --enarmor` or export it with `gpg --armor --export`",
            p.display()
        )));
    }
    Ok(data)
}

/// Checks the `repo` argument: the name of the repository's files.
fn check_repo(repo: &str) -> Result<(), StepError> {
    if repo.is_empty()
        || repo.len() > 64
        || !repo
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(StepError::arg(format!(
            "`repo = \"{repo}\"`: the repository's file name, letters, digits, `-` and `_`"
        )));
    }
    Ok(())
}

pub(crate) fn desired(a: Args, files_dir: &Path) -> Result<Desired, StepError> {
    check_repo(&a.repo)?;
    let key_path = format!("{KEYRINGS}/{}.asc", a.repo);
    let sources_path = format!("{SOURCES}/{}.sources", a.repo);
    if a.state == State::Absent {
        if a.url.is_some()
            || a.suite.is_some()
            || a.components.is_some()
            || a.architectures.is_some()
            || a.key.is_some()
        {
            return Err(StepError::arg("`state = \"absent\"` takes only `repo`"));
        }
        return Ok(Desired {
            repo: a.repo,
            key: file::Desired::absent(key_path)?,
            sources: file::Desired::absent(sources_path)?,
            state: State::Absent,
        });
    }
    let (Some(url), Some(suite), Some(key)) = (a.url, a.suite, a.key) else {
        return Err(StepError::arg(
            "an apt repository needs `url`, `suite` and `key`",
        ));
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(StepError::arg(format!(
            "`url = \"{url}\"` must start with http:// or https://"
        )));
    }
    word("url", &url)?;
    word("suite", &suite)?;
    let flat = suite.ends_with('/');
    let components = match (a.components, flat) {
        (Some(c), true) if !c.is_empty() => {
            return Err(StepError::arg(
                "a flat repository (`suite` ending in `/`) takes no `components`",
            ));
        }
        (_, true) => vec![],
        (None, false) => vec!["main".to_string()],
        (Some(c), false) if c.is_empty() => {
            return Err(StepError::arg(
                "`components` is empty: list at least one (e.g. [\"main\"])",
            ));
        }
        (Some(c), false) => c,
    };
    for c in &components {
        word("components", c)?;
    }
    let arches = a.architectures.unwrap_or_default();
    for c in &arches {
        word("architectures", c)?;
    }
    let key_bytes = read_key(files_dir, &key)?;
    let mut text = String::from("# managed by claw-provision; changes made here are overwritten\n");
    text.push_str(&format!("Types: deb\nURIs: {url}\nSuites: {suite}\n"));
    if !components.is_empty() {
        text.push_str(&format!("Components: {}\n", components.join(" ")));
    }
    if !arches.is_empty() {
        text.push_str(&format!("Architectures: {}\n", arches.join(" ")));
    }
    text.push_str(&format!("Signed-By: {key_path}\n"));
    Ok(Desired {
        repo: a.repo,
        key: file::Desired::generated(key_path, key_bytes, 0o644)?,
        sources: file::Desired::generated(sources_path, text.into_bytes(), 0o644)?,
        state: State::Present,
    })
}

impl Desired {
    /// The files in the order they are written (key first: the sources file never names a
    /// missing key); removal goes the other way.
    pub fn files(&self) -> [&file::Desired; 2] {
        match self.state {
            State::Present => [&self.key, &self.sources],
            State::Absent => [&self.sources, &self.key],
        }
    }

    /// One change for both files: observed states in the order of [`Self::files`].
    pub fn diff(&self, observed: [&crate::fact::PathState; 2]) -> Result<Change, StepError> {
        self.diff_with(observed, [&[], &[]])
    }

    /// [`Self::diff`], and the removal of the leftovers of interrupted uploads the probe found
    /// in the files' directories (see [`file::with_leftovers`]), in the order of [`Self::files`].
    pub fn diff_with(
        &self,
        observed: [&crate::fact::PathState; 2],
        leftovers: [&[String]; 2],
    ) -> Result<Change, StepError> {
        let target = self.repo.clone();
        let files = self.files();
        let mut parts = vec![];
        for (i, (f, o)) in files.iter().zip(observed).enumerate() {
            // Both in one directory: the first file's change removes them.
            let same = i == 1 && files[0].parent() == f.parent();
            parts.push(f.diff_with(o, if same { &[] } else { leftovers[i] })?);
        }
        let changed: Vec<&Change> = parts.iter().filter(|c| c.action.changes()).collect();
        if changed.is_empty() {
            let why = match self.state {
                State::Present => "sources and key are up to date (sha256 match)",
                State::Absent => "sources and key are absent",
            };
            return Ok(Change::noop(target, why));
        }
        let housekeeping = changed.iter().all(|c| c.housekeeping);
        let action = match self.state {
            _ if housekeeping => Action::Update,
            State::Absent => Action::Delete,
            State::Present if changed.iter().all(|c| c.action == Action::Create) => Action::Create,
            State::Present => Action::Update,
        };
        let mut script = String::from("set -e\n");
        if self.state == State::Present {
            // Debian before 12 has no /etc/apt/keyrings.
            script.push_str(&format!(
                "[ -d {KEYRINGS} ] || mkdir -p -m 0755 {KEYRINGS}\n"
            ));
        }
        let (stdin, details, reasons) = join_changes(&changed, &mut script);
        let mut c = Change::new(action, target, reasons.join("; "), script);
        let script = c.op.take().map(|o| o.script).unwrap_or_default();
        c.op = Some(Op::new(script, Arc::new(stdin)));
        c.details = details;
        c.upload_bytes = changed.iter().map(|c| c.upload_bytes).sum();
        c.upload_dir = changed.iter().find_map(|c| c.upload_dir.clone());
        // Show the sources file's diff (the key's armored text says little).
        c.content = parts.iter().rev().find_map(|c| {
            c.content
                .as_ref()
                .filter(|cc| cc.path == self.sources.path)
                .cloned()
        });
        c.housekeeping = housekeeping;
        c.tidies = changed.iter().flat_map(|x| x.tidies.clone()).collect();
        Ok(c)
    }
}

/// The files' changes joined into one step: each file's script in a subshell appended to
/// `script` (a file whose content travels on stdin takes exactly its bytes of the shared stdin
/// by `dd`), and the shared stdin, the details and the reasons.
fn join_changes(changed: &[&Change], script: &mut String) -> (Vec<u8>, Vec<String>, Vec<String>) {
    let mut stdin: Vec<u8> = vec![];
    let mut details = vec![];
    let mut reasons = vec![];
    for c in changed {
        let op = c.op.as_ref().expect("a changing file diff has an op");
        details.push(if c.details.is_empty() || c.action == Action::Create {
            format!("{} {}", c.action.word(), c.target)
        } else {
            format!("{} {}: {}", c.action.word(), c.target, c.details.join(", "))
        });
        reasons.push(format!("{}: {}", c.target, c.reason));
        if op.stdin.is_empty() {
            script.push_str(&format!("(\n{})\n", op.script));
        } else {
            // Exactly this file's bytes from the shared stdin (full blocks from a pipe).
            script.push_str(&format!(
                "dd bs={} count=1 iflag=fullblock 2>/dev/null | (\n{})\n",
                op.stdin.len(),
                op.script
            ));
            stdin.extend_from_slice(&op.stdin);
        }
    }
    (stdin, details, reasons)
}

/// The `apt_repo` step kind.
pub(crate) struct AptRepoKind;

impl super::StepKind for AptRepoKind {
    fn name(&self) -> &'static str {
        "apt_repo"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<Args>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        _: &serde_json::Map<String, serde_json::Value>,
        src: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        Ok(super::Desired::AptRepo(desired(
            super::args(args)?,
            src.files_dir,
        )?))
    }

    /// Needs an apt source and keyring, for apt.
    fn needs(&self) -> &'static [super::kind::Need] {
        &[super::kind::Need::Apt]
    }
}

/// Asks for its two files, then the leftovers beside each.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        let files = self.files();
        let mut ids: Vec<usize> = (files.iter())
            .map(|f| {
                if f.state == State::Present {
                    p.add_upload_dir(&f.parent());
                }
                p.add(crate::fact::Request::Path(f.path.clone()))
            })
            .collect();
        ids.extend(
            files
                .iter()
                .map(|f| p.add(crate::fact::Request::Leftovers(f.parent()))),
        );
        ids
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [
                crate::fact::Observed::Path(a),
                crate::fact::Observed::Path(b),
                crate::fact::Observed::Leftovers(la),
                crate::fact::Observed::Leftovers(lb),
            ] => Some(self.diff_with([a, b], [la, lb])),
            _ => None,
        }
    }

    fn paths(&self) -> Vec<&str> {
        self.files().iter().map(|f| f.path.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::PathState;
    use crate::resource::file::sha256_hex;

    const KEY: &str =
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZabc\n-----END PGP PUBLIC KEY BLOCK-----\n";

    fn args(dir: &Path) -> Args {
        std::fs::write(dir.join("mirror.asc"), KEY).unwrap();
        Args {
            repo: "claw-lab".into(),
            url: Some("http://10.214.1.250/debian".into()),
            suite: Some("trixie".into()),
            components: None,
            architectures: None,
            key: Some("mirror.asc".into()),
            state: State::Present,
        }
    }

    fn file(content: &[u8]) -> PathState {
        PathState::File {
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
            uid: 0,
            gid: 0,
            size: content.len() as u64,
            sha256: sha256_hex(content),
        }
    }

    #[test]
    fn writes_deb822_sources_signed_by_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = desired(args(dir.path()), dir.path()).unwrap();
        assert_eq!(d.key.path, "/etc/apt/keyrings/claw-lab.asc");
        assert_eq!(d.key.content.as_slice(), KEY.as_bytes());
        assert_eq!(d.sources.path, "/etc/apt/sources.list.d/claw-lab.sources");
        assert_eq!(
            String::from_utf8(d.sources.content.to_vec()).unwrap(),
            "# managed by claw-provision; changes made here are overwritten\nTypes: deb\nURIs: http://10.214.1.250/debian\nSuites: trixie\nComponents: main\nSigned-By: /etc/apt/keyrings/claw-lab.asc\n"
        );
        for f in [&d.key, &d.sources] {
            assert_eq!((f.mode, f.owner.as_deref()), (Some(0o644), Some("root")));
        }
        let mut a = args(dir.path());
        a.suite = Some("./".into());
        a.architectures = Some(vec!["amd64".into(), "arm64".into()]);
        let flat = desired(a, dir.path()).unwrap();
        let text = String::from_utf8(flat.sources.content.to_vec()).unwrap();
        assert!(
            text.contains("Suites: ./\nArchitectures: amd64 arm64\nSigned-By:"),
            "{text}"
        );
    }

    #[test]
    fn diff_cases() {
        let dir = tempfile::tempdir().unwrap();
        let d = desired(args(dir.path()), dir.path()).unwrap();
        let (key, src) = (d.key.content.to_vec(), d.sources.content.to_vec());
        // Both missing: one create, key uploaded before the sources, both on one stdin.
        let c = d.diff([&PathState::Absent, &PathState::Absent]).unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(
            c.details,
            [
                "create /etc/apt/keyrings/claw-lab.asc",
                "create /etc/apt/sources.list.d/claw-lab.sources"
            ]
        );
        let op = c.op.clone().unwrap();
        assert_eq!(op.stdin.as_slice(), [key.clone(), src.clone()].concat());
        let k = op
            .script
            .find(&format!("dd bs={} count=1 iflag=fullblock", key.len()))
            .unwrap();
        let s = op
            .script
            .find(&format!("dd bs={} count=1 iflag=fullblock", src.len()))
            .unwrap();
        assert!(k < s, "{}", op.script);
        assert_eq!(c.upload_bytes as usize, key.len() + src.len());
        assert_eq!(
            c.content.unwrap().path,
            "/etc/apt/sources.list.d/claw-lab.sources"
        );
        // Up to date: no-op.
        let c = d.diff([&file(&key), &file(&src)]).unwrap();
        assert_eq!(c.action, Action::NoOp);
        assert_eq!(c.reason, "sources and key are up to date (sha256 match)");
        // Only the sources differ (a new mirror URL): one update, only that file uploaded.
        let c = d.diff([&file(&key), &file(b"old")]).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(
            c.details,
            ["update /etc/apt/sources.list.d/claw-lab.sources: content"]
        );
        assert_eq!(c.op.unwrap().stdin.as_slice(), src.as_slice());
        // A directory where the key goes: an error, nothing done.
        let dir_state = PathState::Dir {
            mode: 0o755,
            owner: "root".into(),
            group: "root".into(),
            uid: 0,
            gid: 0,
        };
        assert!(d.diff([&dir_state, &PathState::Absent]).is_err());
    }

    #[test]
    fn removal() {
        let a = Args {
            repo: "claw-lab".into(),
            url: None,
            suite: None,
            components: None,
            architectures: None,
            key: None,
            state: State::Absent,
        };
        let d = desired(a, Path::new(".")).unwrap();
        assert_eq!(
            d.files()[0].path,
            "/etc/apt/sources.list.d/claw-lab.sources"
        );
        let c = d.diff([&file(b"s"), &file(b"k")]).unwrap();
        assert_eq!(c.action, Action::Delete);
        let s = c.op.unwrap().script;
        assert!(
            s.find("claw-lab.sources").unwrap() < s.find("claw-lab.asc").unwrap(),
            "{s}"
        );
        let c = d.diff([&PathState::Absent, &PathState::Absent]).unwrap();
        assert_eq!(c.action, Action::NoOp);
    }

    #[test]
    fn bad_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let with = |f: &dyn Fn(&mut Args)| {
            let mut a = args(dir.path());
            f(&mut a);
            desired(a, dir.path()).unwrap_err().to_string()
        };
        assert!(with(&|a| a.repo = "../x".into()).contains("file name"));
        assert!(with(&|a| a.url = Some("ftp://x".into())).contains("http://"));
        assert!(with(&|a| a.url = Some("http://x y".into())).contains("one non-empty word"));
        assert!(with(&|a| a.suite = None).contains("needs `url`, `suite` and `key`"));
        assert!(with(&|a| a.components = Some(vec![])).contains("is empty"));
        assert!(
            with(&|a| {
                a.suite = Some("./".into());
                a.components = Some(vec!["main".into()]);
            })
            .contains("flat repository")
        );
        assert!(with(&|a| a.key = Some("missing.asc".into())).contains("cannot read `key`"));
        std::fs::write(dir.path().join("bin.gpg"), [0x99u8, 1, 2]).unwrap();
        assert!(with(&|a| a.key = Some("bin.gpg".into())).contains("ASCII-armored"));
        std::fs::write(
            dir.path().join("priv.asc"),
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nx\n",
        )
        .unwrap();
        let e = with(&|a| a.key = Some("priv.asc".into()));
        assert!(e.contains("private key") && !e.contains("x\n"), "{e}");
        let mut a = args(dir.path());
        a.state = State::Absent;
        assert!(
            desired(a, dir.path())
                .unwrap_err()
                .to_string()
                .contains("takes only `repo`")
        );
    }

    #[test]
    fn combined_upload_runs_locally() {
        // The joined script writes both files from one stdin (paths redirected to a temp dir).
        let dir = tempfile::tempdir().unwrap();
        let d = desired(args(dir.path()), dir.path()).unwrap();
        let c = d.diff([&PathState::Absent, &PathState::Absent]).unwrap();
        let op = c.op.unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc/apt/keyrings")).unwrap();
        std::fs::create_dir_all(root.join("etc/apt/sources.list.d")).unwrap();
        let script = op
            .script
            .replace("'/etc/apt/", &format!("'{}/etc/apt/", root.display()))
            .replace("chown -- 'root:root' ./new\n", "")
            .replace(
                &format!("[ -d {KEYRINGS} ] || mkdir -p -m 0755 {KEYRINGS}\n"),
                "",
            );
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&op.stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(root.join("etc/apt/keyrings/claw-lab.asc")).unwrap(),
            d.key.content.as_slice()
        );
        assert_eq!(
            std::fs::read(root.join("etc/apt/sources.list.d/claw-lab.sources")).unwrap(),
            d.sources.content.as_slice()
        );
    }
}
