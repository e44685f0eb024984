//! `file` (from a local file or inline content) and `template` (rendered with Tera): a regular
//! file with content, mode, owner and group, or its absence.
//!
//! Uploads are atomic: a file in a private directory made in the same directory (`mktemp -d`:
//! 0700, root's, so no other account can touch the file), given its final mode and owner before
//! the first byte is written, checked by sha256, then renamed over the target (`mv -T`: a link
//! there is replaced, never followed). An interrupted upload leaves the old file, never a mix.
//! A run killed mid-upload (no trap runs on SIGKILL) leaves its private directory, before the
//! rename or after it (then next to the new file): the probe of a file step reports those of
//! its directory, and the step removes them (with an upload, an attribute change, or on their
//! own: see [`with_leftovers`]); under the apply lock no other upload uses one. Only where no
//! other account can rename entries of the directory ([`crate::fact::path::sweepable`]): in one
//! it can, such a name may be any of root's directories renamed so, and is left alone.
//!
//! The directory may belong to another account, which can swap anything in it for a link at
//! any moment: every script works from inside the directory (`enter_dir`, never through a
//! link another account can change: only root's links in root-only directories), attribute
//! changes act on the opened file (`file_attr_script`: one name, the expected content),
//! removals on the name.
//!
//! Something else at the path (a directory, a symbolic link) is an error unless `force = true`,
//! which replaces it (a directory with everything in it) by the uploaded file, or removes it.

use super::StepError;
use super::{
    AttrDiff, Attrs, State, accounts_exist, check_account, check_path, dir::kind_name, enter_dir,
    file_attr_script, fmt_mode, parse_mode,
};
use crate::fact::PathState;
use crate::plan::{Action, Change, ContentChange, Op};
use crate::quote::quote;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

mod upload;

pub(crate) use upload::with_leftovers;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileArgs {
    pub path: String,
    /// Local file, relative to the playbook's directory.
    pub src: Option<String>,
    /// Inline content.
    pub content: Option<String>,
    pub mode: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    #[serde(default)]
    pub state: State,
    /// Never show the content in plans or diffs.
    #[serde(default)]
    pub sensitive: bool,
    /// Replace (or, with `state = "absent"`, remove) a directory or link found at the path.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateArgs {
    pub path: String,
    /// Template file, relative to the templates directory.
    pub src: String,
    pub mode: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Extra variables for this template only.
    #[serde(default)]
    pub vars: toml::Table,
    #[serde(default)]
    pub sensitive: bool,
    /// Replace a directory or link found at the path.
    #[serde(default)]
    pub force: bool,
}

#[derive(Clone)]
pub struct Desired {
    pub path: String,
    pub content: Arc<Vec<u8>>,
    pub sha256: String,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub state: State,
    pub sensitive: bool,
    /// Replace (or remove) a directory or link found at the path.
    pub force: bool,
}

impl std::fmt::Debug for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("file::Desired")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// Default mode of a file created without `mode`.
const DEFAULT_MODE: u32 = 0o644;

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn attrs(
    path: &str,
    mode: Option<&str>,
    owner: Option<&str>,
    group: Option<&str>,
    force: bool,
) -> Result<Option<u32>, StepError> {
    check_path(path)?;
    if force && super::dir::PROTECTED.contains(&path) {
        return Err(StepError::arg(format!(
            "`force = true` on the system directory `{path}`: refusing to replace it"
        )));
    }
    if let Some(o) = owner {
        check_account("owner", o)?;
    }
    if let Some(g) = group {
        check_account("group", g)?;
    }
    mode.map(parse_mode).transpose()
}

impl Desired {
    pub fn from_file_args(a: FileArgs, files_dir: &Path) -> Result<Self, StepError> {
        let mode = attrs(
            &a.path,
            a.mode.as_deref(),
            a.owner.as_deref(),
            a.group.as_deref(),
            a.force,
        )?;
        let content = match (a.state, a.src, a.content) {
            (State::Absent, None, None) => vec![],
            (State::Absent, _, _) => {
                return Err(StepError::arg(
                    "`state = \"absent\"` takes neither `src` nor `content`",
                ));
            }
            (State::Present, Some(_), Some(_)) => {
                return Err(StepError::arg("give either `src` or `content`, not both"));
            }
            (State::Present, None, None) => {
                return Err(StepError::arg(
                    "missing `src` (a local file) or `content` (inline text)",
                ));
            }
            (State::Present, Some(src), None) => {
                let p = files_dir.join(&src);
                std::fs::read(&p).map_err(|e| StepError::ReadArgFile {
                    arg: "src",
                    path: p.clone(),
                    source: e.into(),
                })?
            }
            (State::Present, None, Some(c)) => c.into_bytes(),
        };
        let mut d = Self::new(
            a.path,
            content,
            mode,
            a.owner,
            a.group,
            a.state,
            a.sensitive,
        );
        d.force = a.force;
        Ok(d)
    }

    pub fn from_template_args(
        a: TemplateArgs,
        templates_dir: &Path,
        ctx: &Map<String, Value>,
        templates: &crate::template::Renderer<'_>,
    ) -> Result<Self, StepError> {
        let mode = attrs(
            &a.path,
            a.mode.as_deref(),
            a.owner.as_deref(),
            a.group.as_deref(),
            a.force,
        )?;
        let file = templates_dir.join(&a.src);
        let source = std::fs::read_to_string(&file).map_err(|e| StepError::ReadTemplate {
            path: file.clone(),
            source: e.into(),
        })?;
        let vars: serde_json::Map<String, serde_json::Value> = (a.vars.iter())
            .map(|(k, v)| (k.clone(), crate::template::to_json(v)))
            .collect();
        let text = templates
            .render_with(&file, &source, ctx, &vars)
            .map_err(StepError::template)?;
        let mut d = Self::new(
            a.path,
            text.into_bytes(),
            mode,
            a.owner,
            a.group,
            State::Present,
            a.sensitive,
        );
        d.force = a.force;
        Ok(d)
    }

    /// A root-owned file with generated content (e.g. a cron entry).
    pub fn generated(path: String, content: Vec<u8>, mode: u32) -> Result<Self, StepError> {
        check_path(&path)?;
        Ok(Self::new(
            path,
            content,
            Some(mode),
            Some("root".into()),
            Some("root".into()),
            State::Present,
            false,
        ))
    }

    /// A file holding a secret: mode 0600 from its first byte, content never shown.
    pub fn secret(
        path: String,
        content: Vec<u8>,
        owner: Option<String>,
        group: Option<String>,
    ) -> Result<Self, StepError> {
        check_path(&path)?;
        Ok(Self::new(
            path,
            content,
            Some(0o600),
            owner,
            group,
            State::Present,
            true,
        ))
    }

    /// The absence of a file.
    pub fn absent(path: String) -> Result<Self, StepError> {
        check_path(&path)?;
        Ok(Self::new(
            path,
            vec![],
            None,
            None,
            None,
            State::Absent,
            false,
        ))
    }

    fn new(
        path: String,
        content: Vec<u8>,
        mode: Option<u32>,
        owner: Option<String>,
        group: Option<String>,
        state: State,
        sensitive: bool,
    ) -> Self {
        Self {
            sha256: sha256_hex(&content),
            content: Arc::new(content),
            path,
            mode,
            owner,
            group,
            state,
            sensitive,
            force: false,
        }
    }

    /// The directory that receives the file.
    pub fn parent(&self) -> String {
        match self.path.rfind('/') {
            Some(0) | None => "/".into(),
            Some(i) => self.path[..i].to_string(),
        }
    }

    /// The last component of the path.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }

    /// Removes what is at the path (`rm FLAGS`) from inside its directory: a link put in place
    /// of a parent directory is never followed, a link at the path is removed, not its target.
    fn remove(&self, flags: &str) -> String {
        format!(
            "{}rm {flags} -- {}\n",
            enter_dir(&quote(&self.parent())),
            quote(&format!("./{}", self.name()))
        )
    }

    /// [`Self::diff`], and the removal of the `leftovers` the probe found in the file's
    /// directory (see [`with_leftovers`]).
    pub fn diff_with(&self, o: &PathState, leftovers: &[String]) -> Result<Change, StepError> {
        Ok(with_leftovers(self.diff(o)?, &self.parent(), leftovers))
    }

    pub fn diff(&self, o: &PathState) -> Result<Change, StepError> {
        match (self.state, o) {
            (State::Present, PathState::Absent) => Ok(self.create(o)),
            (
                State::Present,
                PathState::File {
                    mode,
                    owner,
                    group,
                    uid,
                    gid,
                    sha256,
                    ..
                },
            ) => {
                let observed = Attrs {
                    mode: *mode,
                    owner,
                    group,
                    uid: *uid,
                    gid: *gid,
                };
                Ok(self.update(o, &observed, sha256))
            }
            (State::Present, other) if self.force => Ok(self.replace(other)),
            (State::Present, other) => Err(StepError::host(format!(
                "`{}` exists but is {}, not a regular file; refusing to replace it (set `force = true` to replace it)",
                self.path,
                kind_name(other)
            ))),
            (State::Absent, PathState::Absent) => Ok(Change::noop(&self.path, "file is absent")),
            (State::Absent, PathState::File { .. }) => Ok(Change::new(
                Action::Delete,
                &self.path,
                "file exists",
                self.remove("-f"),
            )),
            (State::Absent, other) if self.force => Ok(Change {
                clears: Some(self.path.clone()),
                ..Change::new(
                    Action::Delete,
                    &self.path,
                    format!("{} is there (`force`: removed)", kind_name(other)),
                    self.remove("-rf --one-file-system"),
                )
            }),
            (State::Absent, other) => Err(StepError::host(format!(
                "`{}` is {}, not a regular file; refusing to remove it (set `force = true` to remove it)",
                self.path,
                kind_name(other)
            ))),
        }
    }

    /// The file where there is none (`o`: absent): uploaded with its attributes, which the
    /// change lists.
    fn create(&self, o: &PathState) -> Change {
        let mode = self.mode.unwrap_or(DEFAULT_MODE);
        let mut c = Change::new(
            Action::Create,
            &self.path,
            "file does not exist",
            String::new(),
        );
        c.details.extend(self.new_attr_details(mode));
        let script = self.upload(mode, self.owner.as_deref(), self.group.as_deref(), false);
        self.with_upload(c, o, script)
    }

    /// Over the regular file `o` (its attributes `observed`, its content's `sha256`): its
    /// content uploaded again when it differs (keeping the attributes not managed), else the
    /// attributes that differ changed, else nothing to do.
    fn update(&self, o: &PathState, observed: &Attrs<'_>, sha256: &str) -> Change {
        let d = AttrDiff::new(
            self.mode,
            self.owner.as_deref(),
            self.group.as_deref(),
            observed,
        );
        let mut details = d.details.clone();
        if sha256 != self.sha256 {
            // Replace the content, keeping (or setting) the attributes.
            // Keep the observed owner by id: a name may be `UNKNOWN` to stat.
            let owner = (self.owner.clone()).unwrap_or_else(|| observed.uid.to_string());
            let group = (self.group.clone()).unwrap_or_else(|| observed.gid.to_string());
            details.insert(0, "content".into());
            let mut c = Change::new(
                Action::Update,
                &self.path,
                "content differs (sha256)",
                String::new(),
            );
            c.details = details;
            let mode = self.mode.unwrap_or(observed.mode);
            let script = self.upload(mode, Some(&owner), Some(&group), false);
            return self.with_upload(c, o, script);
        }
        if details.is_empty() {
            return Change::noop(&self.path, "file is up to date (sha256 match)");
        }
        let mut script = accounts_exist(d.owner, d.group);
        script.push_str(&file_attr_script(&self.path, &d, &[&self.sha256]));
        let mut c = Change::new(Action::Update, &self.path, "attributes differ", script);
        c.details = details;
        c
    }

    /// The file in place of `other` (`force`): what is there removed just before the upload's
    /// rename.
    fn replace(&self, other: &PathState) -> Change {
        let mode = self.mode.unwrap_or(DEFAULT_MODE);
        let mut c = Change::new(
            Action::Update,
            &self.path,
            format!("{} is in the way (`force`: replaced)", kind_name(other)),
            String::new(),
        );
        c.details.push(format!("replace {}", kind_name(other)));
        c.details.extend(self.new_attr_details(mode));
        c.clears = Some(self.path.clone());
        let script = self.upload(mode, self.owner.as_deref(), self.group.as_deref(), true);
        self.with_upload(c, other, script)
    }

    /// The attributes a new file gets, for a change's details: `mode 0644`, `owner x`, ...
    fn new_attr_details(&self, mode: u32) -> Vec<String> {
        let mut v = vec![format!("mode {}", fmt_mode(mode))];
        v.extend(self.owner.iter().map(|o| format!("owner {o}")));
        v.extend(self.group.iter().map(|g| format!("group {g}")));
        v
    }

    /// `c` with the upload `script` as its operation: the content travels on stdin, and the
    /// change shows it against what the probe found (`o`).
    fn with_upload(&self, mut c: Change, o: &PathState, script: String) -> Change {
        c.op = Some(Op::new(script, self.content.clone()));
        c.upload_bytes = self.content.len() as u64;
        c.upload_dir = Some(self.parent());
        c.content = Some(ContentChange {
            path: self.path.clone(),
            old_sha256: match o {
                PathState::File { sha256, .. } => Some(sha256.clone()),
                _ => None,
            },
            new: self.content.clone(),
            sensitive: self.sensitive,
            old: None,
            keys: None,
        });
        c
    }
}

/// The `file` step kind.
pub(crate) struct FileKind;

impl super::StepKind for FileKind {
    fn name(&self) -> &'static str {
        "file"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<FileArgs>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        _: &serde_json::Map<String, serde_json::Value>,
        src: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        Ok(super::Desired::File(Desired::from_file_args(
            super::args(args)?,
            src.files_dir,
        )?))
    }

    fn nul_allowed(&self) -> &'static [&'static str] {
        &["content"]
    }
}

/// The `template` step kind: a file rendered from a template.
pub(crate) struct TemplateKind;

impl super::StepKind for TemplateKind {
    fn name(&self) -> &'static str {
        "template"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<TemplateArgs>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        ctx: &serde_json::Map<String, serde_json::Value>,
        src: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        // The template's own text must not be pre-rendered as an argument: use the raw `vars`.
        Ok(super::Desired::File(Desired::from_template_args(
            super::args(args)?,
            src.templates_dir,
            ctx,
            src.templates,
        )?))
    }

    fn nul_allowed(&self) -> &'static [&'static str] {
        &["vars"]
    }

    fn renders_template_file(&self) -> bool {
        true
    }
}

/// Asks for the path and the leftovers of interrupted uploads beside it.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        if self.state == State::Present {
            p.add_upload_dir(&self.parent());
        }
        vec![
            p.add(crate::fact::Request::Path(self.path.clone())),
            p.add(crate::fact::Request::Leftovers(self.parent())),
        ]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [
                crate::fact::Observed::Path(o),
                crate::fact::Observed::Leftovers(l),
            ] => Some(self.diff_with(o, l)),
            _ => None,
        }
    }

    fn paths(&self) -> Vec<&str> {
        vec![self.path.as_str()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(content: &str, mode: Option<&str>) -> Desired {
        Desired::from_file_args(
            FileArgs {
                path: "/opt/demo/motd".into(),
                src: None,
                content: Some(content.into()),
                mode: mode.map(Into::into),
                owner: None,
                group: None,
                state: State::Present,
                sensitive: false,
                force: false,
            },
            Path::new("."),
        )
        .unwrap()
    }

    fn file(content: &str, mode: u32) -> PathState {
        PathState::File {
            mode,
            owner: "claw".into(),
            group: "claw".into(),
            uid: 1000,
            gid: 1000,
            size: content.len() as u64,
            sha256: sha256_hex(content.as_bytes()),
        }
    }

    /// A numeric owner (a container's uid, say redis' 999) needs no account on the host: no
    /// `getent` check, `chown` to the number, and a file owned by that id (which `stat` may name
    /// `UNKNOWN`) is in place.
    #[test]
    fn numeric_owner_needs_no_account_on_the_host() {
        let mut d = want("requirepass x\n", Some("0600"));
        d.owner = Some("999".into());
        d.group = Some("999".into());
        let s = d.diff(&PathState::Absent).unwrap().op.unwrap().script;
        assert!(!s.contains("getent"), "{s}");
        assert!(s.contains("chown -- '999:999' ./new"), "{s}");
        let seen = |uid: u32| PathState::File {
            mode: 0o600,
            owner: "UNKNOWN".into(),
            group: "UNKNOWN".into(),
            uid,
            gid: uid,
            size: 14,
            sha256: sha256_hex(b"requirepass x\n"),
        };
        assert_eq!(d.diff(&seen(999)).unwrap().action, Action::NoOp);
        let c = d.diff(&seen(1000)).unwrap();
        assert_eq!(c.action, Action::Update);
        assert!(
            c.op.unwrap()
                .script
                .contains("chown -- '999:999' /proc/self/fd/3")
        );
    }

    #[test]
    fn create_uploads_atomically() {
        let c = want("hi\n", Some("0600")).diff(&PathState::Absent).unwrap();
        assert_eq!(c.action, Action::Create);
        let op = c.op.unwrap();
        assert_eq!(op.stdin.as_slice(), b"hi\n");
        let s = op.script;
        // owner, then mode, set before the first byte is written; rename last
        let chmod = s.find("chmod 00600 ./new").unwrap();
        let cat = s.find("cat > ./new").unwrap();
        let mv = s.find("mv -fT -- ./new \"../$n\"").unwrap();
        assert!(chmod < cat && cat < mv, "{s}");
        assert_eq!(c.upload_bytes, 3);
        assert_eq!(c.upload_dir.as_deref(), Some("/opt/demo"));
    }

    #[test]
    fn noop_on_sha_match_even_without_mode() {
        let c = want("hi\n", None).diff(&file("hi\n", 0o640)).unwrap();
        assert_eq!(c.action, Action::NoOp);
        assert_eq!(c.reason, "file is up to date (sha256 match)");
    }

    #[test]
    fn content_change_keeps_observed_attributes() {
        let c = want("new\n", None).diff(&file("old\n", 0o640)).unwrap();
        assert_eq!(c.action, Action::Update);
        let s = c.op.unwrap().script;
        assert!(s.contains("chmod 00640 ./new"), "{s}");
        assert!(s.contains("chown -- '1000:1000' ./new"), "kept by id: {s}");
        assert_eq!(c.content.unwrap().old_sha256.unwrap(), sha256_hex(b"old\n"));
    }

    #[test]
    fn mode_only_change_does_not_upload() {
        let c = want("hi\n", Some("0600"))
            .diff(&file("hi\n", 0o644))
            .unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.details, ["mode 0644 -> 0600"]);
        let s = c.op.unwrap().script;
        assert!(s.starts_with(&enter_dir("'/opt/demo'")), "{s}");
        assert!(s.contains("chmod 00600 /proc/self/fd/3\n"), "{s}");
        assert_eq!(c.upload_bytes, 0);
    }

    #[test]
    fn upload_script_works_locally() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out file");
        let mut d = want("$(touch /tmp/claw-pwned) '; echo\n", Some("0600"));
        d.path = path.to_str().unwrap().to_string();
        let op = d.diff(&PathState::Absent).unwrap().op.unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&op.script)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&op.stdin).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(&path).unwrap(), op.stdin.as_slice());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        // no temp file left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn secret_files_are_0600_from_their_first_byte() {
        // The order: a private temp file (mktemp: 0600 whatever the umask), owner, mode, only
        // then the content, the check, the rename.
        let d = Desired::secret(
            "/opt/app/.env".into(),
            b"K=v\n".to_vec(),
            Some("app".into()),
            None,
        )
        .unwrap();
        let s = d.diff(&PathState::Absent).unwrap().op.unwrap().script;
        let at = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle}: {s}"));
        let order = [
            at("tmp=$(mktemp -d -- ./.claw-provision.XXXXXXXX)"),
            at("chown -- 'app' ./new"),
            at("chmod 00600 ./new"),
            at("cat > ./new"),
            at("sha256sum < ./new"),
            at("mv -fT -- ./new \"../$n\""),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{s}");
        assert_eq!(s.matches("chmod").count(), 1, "{s}");

        // Observed: under umask 000, the temp file holding half the content is 0600.
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = Desired::secret(
            dir.path().join("privkey.pem").to_str().unwrap().into(),
            vec![b'k'; 64 * 1024],
            None,
            None,
        )
        .unwrap();
        let op = d.diff(&PathState::Absent).unwrap().op.unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask 000\n{}", op.script))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&op.stdin[..1000]).unwrap();
        stdin.flush().unwrap();
        let t = std::time::Instant::now();
        let tmp = loop {
            let found = std::fs::read_dir(dir.path()).unwrap().flatten().find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".claw-provision.")
                    && std::fs::metadata(e.path().join("new")).is_ok_and(|m| m.len() > 0)
            });
            if let Some(e) = found {
                let private = std::fs::metadata(e.path()).unwrap().permissions().mode();
                assert_eq!(private & 0o7777, 0o700, "the private directory");
                break e.path().join("new");
            }
            assert!(t.elapsed().as_secs() < 10, "no temp file with content");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let mode = std::fs::metadata(&tmp).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}", tmp.display());
        stdin.write_all(&op.stdin[1000..]).unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success());
        let m = std::fs::metadata(dir.path().join("privkey.pem")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn damaged_upload_leaves_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "old").unwrap();
        let mut d = want("new content\n", None);
        d.path = path.to_str().unwrap().to_string();
        let observed = PathState::File {
            mode: 0o644,
            owner: "0".into(),
            group: "0".into(),
            uid: 0,
            gid: 0,
            size: 3,
            sha256: sha256_hex(b"old"),
        };
        let op = d.diff(&observed).unwrap().op.unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf 'new con' | {{ {}\n}}", op.script))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("damaged"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn absent() {
        let mut d = want("", None);
        d.state = State::Absent;
        assert_eq!(d.diff(&PathState::Absent).unwrap().action, Action::NoOp);
        let c = d.diff(&file("x", 0o644)).unwrap();
        assert_eq!(c.action, Action::Delete);
        assert!(
            d.diff(&PathState::Dir {
                mode: 0o755,
                owner: "r".into(),
                group: "r".into(),
                uid: 0,
                gid: 0
            })
            .is_err()
        );
    }

    fn run(script: &str, stdin: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    }

    fn a_dir() -> PathState {
        PathState::Dir {
            mode: 0o755,
            owner: "root".into(),
            group: "root".into(),
            uid: 0,
            gid: 0,
        }
    }

    /// `force` replaces a directory (with what is in it) or a link by the file; without it the
    /// step refuses, naming the way out.
    #[test]
    fn force_replaces_a_directory_or_link() {
        let e = want("x", None).diff(&a_dir()).unwrap_err().to_string();
        assert!(e.contains("set `force = true`"), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("p");
        std::fs::create_dir_all(path.join("sub")).unwrap();
        std::fs::write(path.join("sub/inner"), "old").unwrap();
        let mut d = want("$(touch pwned)\n", Some("0640"));
        d.path = path.to_str().unwrap().to_string();
        d.force = true;
        let c = d.diff(&a_dir()).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.details[..2], ["replace a directory", "mode 0640"]);
        let op = c.op.unwrap();
        let o = run(&op.script, &op.stdin);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(&path).unwrap(), b"$(touch pwned)\n");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        // A link: replaced itself, its target untouched.
        std::fs::write(tmp.path().join("target"), "keep").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("target", &path).unwrap();
        let op = d.diff(&PathState::Link).unwrap().op.unwrap();
        assert!(run(&op.script, &op.stdin).status.success());
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(std::fs::read(tmp.path().join("target")).unwrap(), b"keep");
        // Absent: a directory is removed only with force.
        d.state = State::Absent;
        let c = d.diff(&a_dir()).unwrap();
        assert_eq!(c.action, Action::Delete);
        d.force = false;
        assert!(
            d.diff(&a_dir())
                .unwrap_err()
                .to_string()
                .contains("refusing to remove")
        );
    }

    #[test]
    fn force_is_refused_on_system_directories() {
        let a = FileArgs {
            path: "/etc".into(),
            src: None,
            content: Some("x".into()),
            mode: None,
            owner: None,
            group: None,
            state: State::Present,
            sensitive: false,
            force: true,
        };
        let e = Desired::from_file_args(a, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("refusing"), "{e}");
    }

    /// A directory that appeared at the path after the probe: the upload fails (it is never moved
    /// INTO the directory), and leaves nothing behind.
    #[test]
    fn upload_never_lands_inside_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("p");
        let mut d = want("new\n", None);
        d.path = path.to_str().unwrap().to_string();
        let op = d.diff(&PathState::Absent).unwrap().op.unwrap();
        std::fs::create_dir(&path).unwrap();
        let o = run(&op.script, &op.stdin);
        assert!(!o.status.success());
        assert_eq!(std::fs::read_dir(&path).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_owner_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("p");
        std::fs::write(&path, "old").unwrap();
        let mut d = want("new\n", None);
        d.path = path.to_str().unwrap().to_string();
        d.group = Some("claw-no-such-group".into());
        for o in [PathState::Absent, file("old", 0o644), file("new\n", 0o644)] {
            let op = d.diff(&o).unwrap().op.unwrap();
            let out = run(&op.script, &op.stdin);
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("group `claw-no-such-group` does not exist on the host"),
                "{err}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), b"old");
            assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        }
    }

    #[test]
    fn src_and_content_conflict() {
        let a = FileArgs {
            path: "/x".into(),
            src: Some("a".into()),
            content: Some("b".into()),
            mode: None,
            owner: None,
            group: None,
            state: State::Present,
            sensitive: false,
            force: false,
        };
        assert!(
            Desired::from_file_args(a, Path::new("."))
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
    }
    /// Another account swaps the managed file for a link after the probe: an attribute change
    /// refuses it and leaves the link's target alone; an upload replaces the link itself.
    #[test]
    fn a_link_swapped_in_is_never_followed() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        std::fs::write(&canary, "keep").unwrap();
        std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o600)).unwrap();
        let app = tmp.path().join("app");
        std::fs::create_dir(&app).unwrap();
        let path = app.join("conf");
        std::fs::write(&path, "hi\n").unwrap();
        let mut d = want("hi\n", Some("0644"));
        d.path = path.to_str().unwrap().to_string();
        // Observed as owned by whoever runs the test (the upload keeps the owner by id).
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata(&path).unwrap();
        let seen = |content: &str| PathState::File {
            mode: 0o600,
            owner: me.uid().to_string(),
            group: me.gid().to_string(),
            uid: me.uid(),
            gid: me.gid(),
            size: content.len() as u64,
            sha256: sha256_hex(content.as_bytes()),
        };
        let attrs = d.diff(&seen("hi\n")).unwrap().op.unwrap();
        let content = d.diff(&seen("old\n")).unwrap().op.unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&canary, &path).unwrap();
        let o = run(&attrs.script, &attrs.stdin);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("is no longer the file the probe saw"), "{err}");
        let m = std::fs::metadata(&canary).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        let o = run(&content.script, &content.stdin);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(std::fs::read(&canary).unwrap(), b"keep");
        assert_eq!(
            std::fs::metadata(&canary).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert_eq!(std::fs::read_dir(&app).unwrap().count(), 1, "no temp left");
        // Removal: the link goes, its target stays.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&canary, &path).unwrap();
        let mut gone = d.clone();
        gone.state = State::Absent;
        let op = gone.diff(&file("hi\n", 0o644)).unwrap().op.unwrap();
        assert!(run(&op.script, &op.stdin).status.success());
        assert!(std::fs::symlink_metadata(&path).is_err());
        assert_eq!(std::fs::read(&canary).unwrap(), b"keep");
    }

    /// A directory of the path replaced by a link (to a directory outside the managed tree):
    /// every script refuses to go through it and writes nothing there.
    #[test]
    fn a_linked_parent_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("conf"), "keep").unwrap();
        std::os::unix::fs::symlink(&outside, tmp.path().join("app")).unwrap();
        // In a directory everyone can write (as /tmp): another account could change the link.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let mut d = want("new\n", Some("0600"));
        d.path = tmp.path().join("app/conf").to_str().unwrap().to_string();
        let mut gone = d.clone();
        gone.state = State::Absent;
        for op in [
            d.diff(&file("keep", 0o644)).unwrap().op.unwrap(),
            d.diff(&file("new\n", 0o644)).unwrap().op.unwrap(),
            gone.diff(&file("keep", 0o644)).unwrap().op.unwrap(),
        ] {
            let o = run(&op.script, &op.stdin);
            assert!(!o.status.success());
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("reached through a symbolic link"), "{err}");
            assert_eq!(std::fs::read(outside.join("conf")).unwrap(), b"keep");
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        }
    }
    /// In a setgid directory the private directory inherits the bit: still accepted as ours.
    #[test]
    fn upload_into_a_setgid_directory() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sg \\ '; x");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2775)).unwrap();
        let mut d = want("new\n", Some("0640"));
        d.path = dir.join("f").to_str().unwrap().to_string();
        let op = d.diff(&PathState::Absent).unwrap().op.unwrap();
        let o = run(&op.script, &op.stdin);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"new\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    /// Where another account can rename root's directories (the directory writable by group or
    /// others, no sticky bit), a directory of a leftover's name may be any of them renamed so:
    /// neither the probe reports it nor a sweep (of the step, of an upload) removes it.
    /// Elsewhere (not writable by others, or sticky) leftovers go.
    #[test]
    fn leftovers_are_removed_only_where_others_cannot_rename_entries() {
        use std::os::unix::fs::PermissionsExt;
        for (mode, removed) in [
            (0o755, true),
            (0o777, false),
            (0o1777, true),
            (0o775, false),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("d '$x");
            std::fs::create_dir(&dir).unwrap();
            let path = dir.join("conf");
            std::fs::write(&path, "hi\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let left = dir.join(".claw-provision.AbCd1234");
            let make = || {
                std::fs::create_dir_all(left.join("tree")).unwrap();
                std::fs::write(left.join("tree/data"), "precious").unwrap();
            };
            make();
            let ctx = format!("mode {mode:o}");

            // The probe.
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "{}claw_leftovers 7 {}/",
                    crate::fact::path::LEFTOVERS_FUNCTION,
                    quote(dir.to_str().unwrap())
                ))
                .output()
                .unwrap();
            assert!(o.status.success(), "{ctx}");
            let expect = if removed {
                "@7\tleftovers\t.claw-provision.AbCd1234\n"
            } else {
                "@7\tleftovers\n"
            };
            assert_eq!(String::from_utf8_lossy(&o.stdout), expect, "{ctx}");

            // The step's housekeeping (planned from a probe of an earlier moment).
            use std::os::unix::fs::MetadataExt;
            let me = std::fs::metadata(&path).unwrap();
            let seen = |sha: &[u8]| PathState::File {
                mode: 0o644,
                owner: me.uid().to_string(),
                group: me.gid().to_string(),
                uid: me.uid(),
                gid: me.gid(),
                size: 3,
                sha256: sha256_hex(sha),
            };
            let mut d = want("hi\n", Some("0644"));
            d.path = path.to_str().unwrap().to_string();
            let c = d
                .diff_with(&seen(b"hi\n"), &[".claw-provision.AbCd1234".into()])
                .unwrap();
            assert!(c.housekeeping, "{ctx}");
            let op = c.op.unwrap();
            let o = run(&op.script, &op.stdin);
            assert!(
                o.status.success(),
                "{ctx}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(!left.exists(), removed, "{ctx}: housekeeping");
            assert_eq!(std::fs::read(&path).unwrap(), b"hi\n");

            // An upload's own sweep.
            make();
            let mut d = want("new\n", Some("0644"));
            d.path = path.to_str().unwrap().to_string();
            let op = d.diff(&seen(b"old")).unwrap().op.unwrap();
            let o = run(&op.script, &op.stdin);
            assert!(
                o.status.success(),
                "{ctx}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
            assert_eq!(!left.exists(), removed, "{ctx}: upload");
            if !removed {
                assert_eq!(std::fs::read(left.join("tree/data")).unwrap(), b"precious");
            }
            // Nothing else is left behind: the upload's own private directory is gone.
            let n = std::fs::read_dir(&dir).unwrap().count();
            assert_eq!(n, if removed { 1 } else { 2 }, "{ctx}");
        }
    }

    /// Private directories of uploads cut short, next to an up-to-date file: the step removes
    /// them (a housekeeping change: no handler), only those (ours, directories, the exact
    /// pattern), never following a link; with an attribute change they go first; an upload
    /// sweeps them itself.
    #[test]
    fn leftovers_of_interrupted_uploads_are_removed() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("app");
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("conf");
        std::fs::write(&path, "hi\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "keep").unwrap();
        let make = || {
            // Two left by cuts (one before its rename: the new file still inside).
            std::fs::create_dir(dir.join(".claw-provision.AbCd1234")).unwrap();
            std::fs::create_dir(dir.join(".claw-provision.zz99ZZ00")).unwrap();
            std::fs::write(dir.join(".claw-provision.zz99ZZ00/new"), "half").unwrap();
        };
        // Not ours to remove: a link to a directory, a file, other names.
        std::os::unix::fs::symlink(&outside, dir.join(".claw-provision.LinkLink")).unwrap();
        std::fs::write(dir.join(".claw-provision.FileFile"), "x").unwrap();
        std::fs::create_dir(dir.join(".claw-provision.TooLong12")).unwrap();
        std::fs::create_dir(dir.join(".claw-provision.a-b_c.d!")).unwrap();
        let names = |d: &std::path::Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let kept = [
            ".claw-provision.FileFile",
            ".claw-provision.LinkLink",
            ".claw-provision.TooLong12",
            ".claw-provision.a-b_c.d!",
            "conf",
        ];
        let leftovers = vec![
            ".claw-provision.AbCd1234".to_string(),
            ".claw-provision.zz99ZZ00".to_string(),
        ];
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata(&path).unwrap();
        let seen = |mode: u32| PathState::File {
            mode,
            owner: me.uid().to_string(),
            group: me.gid().to_string(),
            uid: me.uid(),
            gid: me.gid(),
            size: 3,
            sha256: sha256_hex(b"hi\n"),
        };
        let mut d = want("hi\n", Some("0644"));
        d.path = path.to_str().unwrap().to_string();

        // Up to date: the removal is the change.
        assert_eq!(d.diff(&seen(0o644)).unwrap().action, Action::NoOp);
        assert_eq!(d.diff_with(&seen(0o644), &[]).unwrap().action, Action::NoOp);
        let c = d.diff_with(&seen(0o644), &leftovers).unwrap();
        assert_eq!(c.action, Action::Update);
        assert!(c.housekeeping);
        assert_eq!(c.upload_bytes, 0);
        assert_eq!(
            c.details,
            [format!(
                "remove an interrupted upload's leftovers in {}: .claw-provision.AbCd1234, .claw-provision.zz99ZZ00",
                dir.display()
            )]
        );
        make();
        let op = c.op.unwrap();
        let o = run(&op.script, &op.stdin);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(names(&dir), kept);
        assert_eq!(names(&outside), ["keep"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"hi\n");

        // With an attribute change: removed first, then the mode set.
        let c = d.diff_with(&seen(0o600), &leftovers).unwrap();
        assert!(!c.housekeeping);
        assert_eq!(c.details.len(), 2, "{:?}", c.details);
        make();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let op = c.op.unwrap();
        let o = run(&op.script, &op.stdin);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(names(&dir), kept);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);

        // A content change: the upload sweeps them (its script is the plain upload).
        let old = PathState::File {
            mode: 0o644,
            owner: me.uid().to_string(),
            group: me.gid().to_string(),
            uid: me.uid(),
            gid: me.gid(),
            size: 3,
            sha256: sha256_hex(b"old"),
        };
        let c = d.diff_with(&old, &leftovers).unwrap();
        assert!(!c.housekeeping);
        let plain = d.diff(&old).unwrap();
        assert_eq!(c.op.as_ref().unwrap().script, plain.op.unwrap().script);
        assert!(
            c.details
                .iter()
                .any(|x| x.starts_with("remove an interrupted upload's leftovers"))
        );
        make();
        let op = c.op.unwrap();
        let o = run(&op.script, &op.stdin);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(names(&dir), kept);

        // Removal of the file: leftovers first.
        let mut gone = d.clone();
        gone.state = State::Absent;
        let c = gone.diff_with(&seen(0o644), &leftovers).unwrap();
        assert_eq!(c.action, Action::Delete);
        make();
        let op = c.op.unwrap();
        let o = run(&op.script, &op.stdin);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(names(&dir), &kept[..4]);

        // The directory reached through a link another account could change: nothing removed.
        std::fs::write(&path, "hi\n").unwrap();
        make();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let linked = tmp.path().join("linked");
        std::os::unix::fs::symlink(&dir, &linked).unwrap();
        let mut via = d.clone();
        via.path = linked.join("conf").to_str().unwrap().to_string();
        let op = via.diff_with(&seen(0o644), &leftovers).unwrap().op.unwrap();
        let o = run(&op.script, &op.stdin);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("reached through a symbolic link"), "{err}");
        assert!(dir.join(".claw-provision.AbCd1234").is_dir());
        assert!(dir.join(".claw-provision.zz99ZZ00/new").is_file());
    }
}
