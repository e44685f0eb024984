//! Fact: a Docker image on the target — is docker there, does its daemon answer, and which
//! image IDs the step's references (and the wanted ID itself) designate.
//!
//! Read-only: only `command -v`, `docker version` and `docker image inspect`.

use super::FactError;
use crate::quote::quote;

/// What an `image` step asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The image's reference (`claw-lab/backend:b14f1d69c446`).
    pub image: String,
    /// An extra reference to set (`claw-lab/backend:latest`).
    pub tag: Option<String>,
    /// The image ID wanted (`sha256:` + 64 hex digits), read on the operator's machine.
    pub id: String,
}

/// What the target has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    /// No `docker` command.
    NoDocker,
    /// `docker` is there but its daemon does not answer.
    NoDaemon,
    Docker {
        /// The ID `image` designates (None: no such image).
        image: Option<String>,
        /// The ID `tag` designates (None: no such image, or no tag asked).
        tag: Option<String>,
        /// Whether an image with the wanted ID is present.
        has_id: bool,
    },
}

/// The probe snippet (in a subshell: its variables do not leak).
pub(crate) fn command(id: usize, q: &Query) -> String {
    format!(
        r#"(
id={id}; img={img}; tag={tag}; want={want}
ins() {{ [ -n "$1" ] && docker image inspect --format '{{{{.Id}}}}' "$1" 2>/dev/null </dev/null; }}
claw_docker_facts
if [ -z "$claw_docker" ]; then printf '@%s\tnodocker\n' "$id"
elif [ -z "$claw_dv" ]; then printf '@%s\tnodaemon\n' "$id"
else
  i=$(ins "$img") || i=
  t=$(ins "$tag") || t=
  w=$(ins "$want") || w=
  printf '@%s\tdocker\t%s\t%s\t%s\n' "$id" "$i" "$t" "$w"
fi
)
"#,
        img = quote(&q.image),
        tag = quote(q.tag.as_deref().unwrap_or("")),
        want = quote(&q.id),
    )
}

/// `sha256:` followed by 64 lowercase hex digits.
pub(crate) fn is_image_id(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn id_field(s: &str) -> Result<Option<String>, FactError> {
    let s = s.trim();
    if s.is_empty() {
        Ok(None)
    } else if is_image_id(s) {
        Ok(Some(s.to_string()))
    } else {
        let shown: String = s.chars().take(80).collect();
        Err(FactError(format!("bad image ID `{shown}`")))
    }
}

/// Parses the fields of one record.
pub(crate) fn parse(fields: &[&str]) -> Result<ImageState, FactError> {
    match fields {
        ["nodocker"] => Ok(ImageState::NoDocker),
        ["nodaemon"] => Ok(ImageState::NoDaemon),
        ["docker", image, tag, want] => Ok(ImageState::Docker {
            image: id_field(image)?,
            tag: id_field(tag)?,
            has_id: id_field(want)?.is_some(),
        }),
        _ => Err(FactError("bad image record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:9ccaf73dbabc83a5f3c18ad98103bcf6c5376a99c4257c6f2adc65f37400f9b5";

    #[test]
    fn parses_records() {
        assert_eq!(parse(&["nodocker"]).unwrap(), ImageState::NoDocker);
        assert_eq!(parse(&["nodaemon"]).unwrap(), ImageState::NoDaemon);
        assert_eq!(
            parse(&["docker", A, "", A]).unwrap(),
            ImageState::Docker {
                image: Some(A.into()),
                tag: None,
                has_id: true
            }
        );
        assert_eq!(
            parse(&["docker", "", "", ""]).unwrap(),
            ImageState::Docker {
                image: None,
                tag: None,
                has_id: false
            }
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for f in [
            &["docker", "x", "", ""][..],
            &["docker", A, A][..],
            &["docker", "sha256:ABC", "", ""][..],
            &[][..],
            &["what"][..],
        ] {
            assert!(parse(f).is_err(), "{f:?}");
        }
    }

    #[test]
    fn snippet_without_docker_reports_it() {
        let q = Query {
            image: "a/b:c".into(),
            tag: None,
            id: A.into(),
        };
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "PATH=/nonexistent\n{}{}",
                super::super::host::DOCKER_FUNCTION,
                command(3, &q)
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "@3\tnodocker\n");
    }
}
