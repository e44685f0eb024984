//! `image`: a Docker image (by ID) present on the target, for servers that cannot pull.
//!
//! The image is read on the operator's machine at prepare time (`docker image inspect`: its ID
//! and size; once per reference per run, however many hosts). The probe asks the target which
//! IDs `image` and `tag` designate there and whether the ID is present. Absent: the image is
//! shipped over the host's SSH connection — `docker save REF | gzip -1` runs locally and its
//! output is streamed (never held whole in memory) into `gzip -dc | docker load` on the target;
//! then the loaded ID must equal the local one, else the step fails. `docker load` registers an
//! image only after all its layers arrived and were verified against the image's config, so a
//! stream cut short or damaged leaves no image under the reference (or the one it had before).
//! Present under its ID but a reference missing or pointing elsewhere: `docker tag`.
//! No docker (or its daemon is not running) on the target: known after apply.

use super::StepError;
use crate::fact::image::{ImageState, Query, is_image_id};
use crate::plan::{Action, Change, LocalSource};
use crate::quote::quote;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// A reference on the operator's machine (`claw-lab/backend:b14f1d69c446`) or an image ID.
    pub image: String,
    /// An extra reference set on the target (`claw-lab/backend:latest`).
    pub tag: Option<String>,
}

/// The image as the operator's machine has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    pub id: String,
    /// Uncompressed size in bytes (checked against the target's free space).
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub query: Query,
    pub size: u64,
}

/// Where Docker keeps images on the target (for the free-space check).
pub(crate) const DOCKER_ROOT: &str = "/var/lib/docker";

/// A reference docker accepts as a name or `name:tag` (or an image ID), and nothing an option
/// parser or a shell could misread.
fn check_ref(what: &str, r: &str) -> Result<(), StepError> {
    let ok = !r.is_empty()
        && r.len() <= 255
        && !r.starts_with(['-', ':', '/', '.'])
        && !r.ends_with([':', '/'])
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/:-".contains(c));
    if !ok {
        let hint = if r.contains('@') {
            " (digest references are not supported: use `name:tag` or the image ID)"
        } else {
            ""
        };
        return Err(StepError::arg(format!(
            "`{what} = \"{r}\"` is not a Docker image reference such as \"name:tag\"{hint}"
        )));
    }
    Ok(())
}

/// Reads an image's ID and size with `docker image inspect` on this machine.
fn inspect_local(reference: &str) -> Result<LocalImage, StepError> {
    let out = std::process::Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{.Size}}",
            "--",
            reference,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            StepError::local(format!(
                "cannot run `docker` on this machine to read image `{reference}`: {e}"
            ))
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        return Err(StepError::input(format!(
            "image `{reference}` is not present on this machine (docker image inspect: {err}); build or pull it first"
        )));
    }
    parse_local(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        StepError::local(format!(
            "unexpected output of `docker image inspect {reference}`"
        ))
    })
}

fn parse_local(s: &str) -> Option<LocalImage> {
    let (id, size) = s.trim().split_once(' ')?;
    if !is_image_id(id) {
        return None;
    }
    Some(LocalImage {
        id: id.to_string(),
        size: size.trim().parse().ok()?,
    })
}

/// The first 12 hex digits of an image ID, as `docker images` shows them.
fn short(id: &str) -> &str {
    let h = id.strip_prefix("sha256:").unwrap_or(id);
    &h[..h.len().min(12)]
}

/// The local images one run has read (held by the run's preparation and reached through
/// [`Sources`](super::Sources), living as long as the run): [`inspect_local`] once per
/// reference per run (20 hosts: one `docker` call), its answer or error kept.
#[derive(Debug, Default)]
pub struct LocalImages {
    read: Mutex<HashMap<String, Result<LocalImage, StepError>>>,
}

/// [`inspect_local`] through the run's `cache`.
pub(crate) fn local_image(reference: &str, cache: &LocalImages) -> Result<LocalImage, StepError> {
    let cache = &cache.read;
    if let Some(r) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(reference)
    {
        return r.clone();
    }
    let r = inspect_local(reference);
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(reference.to_string(), r.clone());
    r
}

impl Desired {
    /// From rendered arguments; reads the image on this machine (once per run: `images`).
    pub fn from_args(a: Args, images: &LocalImages) -> Result<Self, StepError> {
        check_ref("image", &a.image)?;
        if let Some(t) = &a.tag {
            check_ref("tag", t)?;
            if is_image_id(t) {
                return Err(StepError::arg(format!(
                    "`tag = \"{t}\"` must be a name, not an image ID"
                )));
            }
        }
        let local = local_image(&a.image, images)?;
        Ok(Self::new(a, local))
    }

    /// From checked arguments and the local image (pure).
    pub fn new(a: Args, local: LocalImage) -> Self {
        Self {
            query: Query {
                image: a.image,
                tag: a.tag,
                id: local.id,
            },
            size: local.size,
        }
    }

    /// The command pipeline that produces the compressed image on this machine.
    pub fn source(&self) -> LocalSource {
        LocalSource {
            pipeline: vec![
                vec![
                    "docker".into(),
                    "save".into(),
                    "--".into(),
                    self.query.image.clone(),
                ],
                vec!["gzip".into(), "-1".into(), "-c".into()],
            ],
        }
    }

    fn short_id(&self) -> &str {
        short(&self.query.id)
    }

    /// `docker tag` lines for the references that do not designate the wanted ID.
    fn tag_lines(&self, image: Option<&str>, tag: Option<&str>) -> (String, Vec<String>) {
        let q = &self.query;
        let want = q.id.as_str();
        let mut script = String::new();
        let mut details = Vec::new();
        let mut wanted = vec![];
        // An image given by ID is its own reference.
        if !is_image_id(&q.image) {
            wanted.push((q.image.as_str(), image));
        }
        if let Some(t) = &q.tag {
            wanted.push((t.as_str(), tag));
        }
        for (r, now) in wanted {
            if now != Some(want) {
                script.push_str(&format!("docker tag {} {}\n", quote(want), quote(r)));
                details.push(match now {
                    None => format!("tag {r}"),
                    Some(o) => format!("tag {r} (now {})", short(o)),
                });
            }
        }
        (script, details)
    }

    /// The script that loads the streamed image and checks it.
    fn load_script(&self) -> String {
        let q = &self.query;
        let (tags, _) = self.tag_lines(Some(&q.id), None);
        format!(
            r#"img={img}; want={want}
exec 4>&1
gz=$( {{ {{ gzip -dc; echo "$?" >&3; }} | docker load >&4; }} 3>&1 ); ld=$?
[ "$ld" = 0 ] || {{ echo "docker load failed (exit status $ld)" >&2; exit 1; }}
[ "$gz" = 0 ] || {{ echo "the image stream arrived damaged (gzip exit status $gz)" >&2; exit 1; }}
got=$(docker image inspect --format '{{{{.Id}}}}' "$img" 2>/dev/null) || got=
[ "$got" = "$want" ] || {{ echo "after docker load, $img is ${{got:-absent}}, not $want" >&2; exit 1; }}
{tags}"#,
            img = quote(&q.image),
            want = quote(&q.id),
        )
    }

    /// Compares with the target (pure).
    pub fn diff(&self, o: &ImageState) -> Result<Change, StepError> {
        let q = &self.query;
        let target = match &q.tag {
            Some(t) => format!("{} as {t}", q.image),
            None => q.image.clone(),
        };
        let (image, tag, has_id) = match o {
            ImageState::NoDocker => {
                return Ok(Change::deferred(target, "docker is not installed yet"));
            }
            ImageState::NoDaemon => {
                return Ok(Change::deferred(
                    target,
                    "the Docker daemon is not running yet",
                ));
            }
            ImageState::Docker { image, tag, has_id } => (image, tag, *has_id),
        };
        if !has_id {
            let mut c = Change::new(
                Action::Create,
                target,
                format!(
                    "ship sha256:{} ({}) from this machine",
                    self.short_id(),
                    human_size(self.size)
                ),
                self.load_script(),
            );
            if let Some(op) = c.op.as_mut() {
                op.stdin_from = Some(self.source());
            }
            if let Some(t) = &q.tag {
                c.details.push(format!("tag {t}"));
            }
            c.upload_bytes = self.size;
            c.upload_dir = Some(DOCKER_ROOT.to_string());
            return Ok(c);
        }
        let (script, details) = self.tag_lines(image.as_deref(), tag.as_deref());
        if script.is_empty() {
            return Ok(Change::noop(
                target,
                format!("present (sha256:{})", self.short_id()),
            ));
        }
        let mut c = Change::new(
            Action::Update,
            target,
            format!("sha256:{} present; set its tags", self.short_id()),
            script,
        );
        c.details = details;
        Ok(c)
    }
}

fn human_size(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// The `image` step kind.
pub(crate) struct ImageKind;

impl super::StepKind for ImageKind {
    fn name(&self) -> &'static str {
        "image"
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
        Ok(super::Desired::Image(Desired::from_args(
            super::args(args)?,
            src.images,
        )?))
    }

    fn makes_watchers_stale(&self) -> bool {
        true
    }

    /// Needs `docker` (load, inspect, tag).
    fn needs(&self) -> &'static [super::kind::Need] {
        &[super::kind::Need::Docker]
    }
}

/// Asks for the image and its tag in the docker daemon.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        p.add_upload_dir(DOCKER_ROOT);
        vec![p.add(crate::fact::Request::Image(self.query.clone()))]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [crate::fact::Observed::Image(o)] => Some(self.diff(o)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:9ccaf73dbabc83a5f3c18ad98103bcf6c5376a99c4257c6f2adc65f37400f9b5";
    const B: &str = "sha256:0fe136c4c124c4e54049fca9199aaac3ed033e22dd77856bf87ab010d4fe6d69";

    fn d(image: &str, tag: Option<&str>) -> Desired {
        Desired::new(
            Args {
                image: image.into(),
                tag: tag.map(String::from),
            },
            LocalImage {
                id: A.into(),
                size: 122_000_000,
            },
        )
    }

    fn docker(image: Option<&str>, tag: Option<&str>, has_id: bool) -> ImageState {
        ImageState::Docker {
            image: image.map(String::from),
            tag: tag.map(String::from),
            has_id,
        }
    }

    #[test]
    fn diff_cases() {
        let be = "claw-lab/backend:b14f1d69c446";
        let latest = Some("claw-lab/backend:latest");
        // (desired tag, observed) -> (action, reason contains, script lines)
        type Case<'a> = (Option<&'a str>, ImageState, Action, &'a str, Vec<String>);
        let cases: Vec<Case> = vec![
            (
                None,
                docker(Some(A), None, true),
                Action::NoOp,
                "present (sha256:9ccaf73dbabc)",
                vec![],
            ),
            (
                latest,
                docker(Some(A), Some(A), true),
                Action::NoOp,
                "present",
                vec![],
            ),
            (
                latest,
                docker(Some(A), None, true),
                Action::Update,
                "set its tags",
                vec![format!("docker tag '{A}' 'claw-lab/backend:latest'")],
            ),
            (
                latest,
                docker(Some(A), Some(B), true),
                Action::Update,
                "set its tags",
                vec![format!("docker tag '{A}' 'claw-lab/backend:latest'")],
            ),
            (
                None,
                docker(Some(B), None, true),
                Action::Update,
                "set its tags",
                vec![format!("docker tag '{A}' '{be}'")],
            ),
            (
                None,
                docker(None, None, false),
                Action::Create,
                "ship sha256:9ccaf73dbabc (122.0 MB)",
                vec![],
            ),
            (
                latest,
                docker(Some(B), Some(B), false),
                Action::Create,
                "ship",
                vec![],
            ),
            (
                None,
                ImageState::NoDocker,
                Action::Deferred,
                "docker is not installed yet",
                vec![],
            ),
            (
                None,
                ImageState::NoDaemon,
                Action::Deferred,
                "the Docker daemon is not running yet",
                vec![],
            ),
        ];
        for (tag, o, action, reason, lines) in cases {
            let c = d(be, tag).diff(&o).unwrap();
            assert_eq!(c.action, action, "{o:?}");
            assert!(c.reason.contains(reason), "{o:?}: {}", c.reason);
            match action {
                Action::Update => {
                    let op = c.op.unwrap();
                    assert_eq!(op.script.lines().collect::<Vec<_>>(), lines, "{o:?}");
                    assert!(op.stdin_from.is_none());
                }
                Action::Create => {
                    let op = c.op.unwrap();
                    let src = op.stdin_from.expect("streamed");
                    assert_eq!(src.display(), format!("docker save -- {be} | gzip -1 -c"));
                    assert!(op.script.contains("gzip -dc"), "{}", op.script);
                    assert!(op.script.contains(&format!("want='{A}'")));
                    assert_eq!(
                        op.script.contains("'claw-lab/backend:latest'"),
                        tag.is_some()
                    );
                    assert_eq!(c.upload_bytes, 122_000_000);
                    assert_eq!(c.upload_dir.as_deref(), Some(DOCKER_ROOT));
                }
                _ => assert!(c.op.is_none()),
            }
        }
    }

    #[test]
    fn an_image_given_by_id_is_not_tagged_with_itself() {
        let c = d(A, Some("x/y:z"))
            .diff(&docker(Some(A), None, true))
            .unwrap();
        assert_eq!(
            c.op.unwrap().script.lines().collect::<Vec<_>>(),
            vec![format!("docker tag '{A}' 'x/y:z'")]
        );
    }

    #[test]
    fn references_are_checked() {
        for good in [
            "redis",
            "claw-lab/backend:b14f1d69c446",
            "reg.example:5000/a/b:1.0",
            A,
        ] {
            assert!(check_ref("image", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "a b",
            "a;b",
            "a/b:",
            "x@sha256:abc",
            "$(id)",
            ":x",
        ] {
            assert!(check_ref("image", bad).is_err(), "{bad}");
        }
        assert!(
            check_ref("image", "x@sha256:abc")
                .unwrap_err()
                .to_string()
                .contains("digest")
        );
    }

    #[test]
    fn local_inspect_output() {
        assert_eq!(
            parse_local(&format!("{A} 70213497\n")),
            Some(LocalImage {
                id: A.into(),
                size: 70213497
            })
        );
        assert_eq!(parse_local("garbage"), None);
        assert_eq!(parse_local(&format!("{A} x")), None);
        assert_eq!(parse_local("sha256:12 5"), None);
    }

    /// The load script with stand-ins for docker: the verification and gzip's status count.
    #[test]
    fn load_script_checks_the_stream_and_the_loaded_id() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("docker");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncase \"$1\" in load) cat >/dev/null; echo loaded;; image) echo \"$FAKE_ID\";; tag) echo \"tag $2 $3\" >>\"$TAGS\";; esac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = d("a/b:1", Some("a/b:latest")).load_script();
        let run = |input: &[u8], id: &str| {
            use std::io::Write;
            let tags = dir.path().join("tags");
            let _ = std::fs::remove_file(&tags);
            let mut c = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .env(
                    "PATH",
                    format!(
                        "{}:{}",
                        dir.path().display(),
                        std::env::var("PATH").unwrap()
                    ),
                )
                .env("FAKE_ID", id)
                .env("TAGS", &tags)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(input).unwrap();
            let o = c.wait_with_output().unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
                std::fs::read_to_string(&tags).unwrap_or_default(),
            )
        };
        let gz = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf 'some tar' | gzip -1 -c")
            .output()
            .unwrap()
            .stdout;
        let (ok, err, tags) = run(&gz, A);
        assert!(ok, "{err}");
        assert_eq!(tags, format!("tag {A} a/b:latest\n"));
        let (ok, err, tags) = run(&gz, B);
        assert!(!ok);
        assert!(err.contains(&format!("a/b:1 is {B}, not {A}")), "{err}");
        assert_eq!(tags, "");
        let (ok, err, _) = run(&gz[..gz.len() - 4], A);
        assert!(!ok);
        assert!(err.contains("arrived damaged"), "{err}");
    }
}
