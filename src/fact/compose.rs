//! Fact: a Docker Compose project — whether docker and the compose plugin are there, the sha256
//! of its compose file and env file, the image ID each service uses, the state of its containers,
//! and what the last successful `up` recorded.
//!
//! The env file holds secrets: only its sha256 ever leaves the host. The compose configuration is
//! read (`docker compose config`) but only service names and image references are printed; when
//! it does not load, no message is printed either (it may quote the env file).

use super::FactError;
use crate::quote::quote;

/// Where the state of the last successful `up` of each project is recorded.
pub(crate) const STATE_DIR: &str = "/var/lib/claw-provision/compose";

/// What a compose step asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub project: String,
    pub file: String,
    pub env_file: Option<String>,
}

impl Query {
    pub fn state_file(&self) -> String {
        format!("{STATE_DIR}/{}", self.project)
    }
}

/// The inputs of an `up`: what decides whether containers must be recreated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inputs {
    pub compose_sha256: String,
    /// None: no env file.
    pub env_sha256: Option<String>,
    /// (service, image ID or `missing` / `none`), sorted by service.
    pub images: Vec<(String, String)>,
}

/// One container of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub service: String,
    /// `running`, `exited`, `created`, `restarting`, `paused`, `dead`...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or empty (no healthcheck).
    pub health: String,
}

/// What was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeState {
    NoDocker,
    NoCompose,
    NoDaemon,
    /// The compose file is not there.
    NoFile,
    /// The env file is not there.
    NoEnv,
    /// `docker compose config` failed.
    BadConfig,
    Found {
        current: Inputs,
        /// What the last successful `up` recorded (None: never, or unreadable).
        last: Option<Inputs>,
        containers: Vec<Container>,
    },
}

/// Shell prelude shared by the probe and the apply script: variables `p f e st`, the function `dc`
/// (docker compose on the project) and `claw_compose_current` (prints the inputs, one per line:
/// `compose SHA`, `env SHA`, `image SERVICE ID`; fails when the files or the config cannot be read).
pub(crate) fn prelude(q: &Query) -> String {
    format!(
        r#"p={p}; f={f}; e={e}; st={st}
dc() {{ if [ -n "$e" ]; then docker compose -p "$p" -f "$f" --env-file "$e" "$@"; else docker compose -p "$p" -f "$f" "$@"; fi; }}
claw_compose_current() {{
  s=$(sha256sum < "$f") || return 1; printf 'compose %s\n' "${{s%% *}}"
  if [ -n "$e" ]; then s=$(sha256sum < "$e") || return 1; printf 'env %s\n' "${{s%% *}}"; fi
  cfg=$(dc config 2>/dev/null) || return 1
  l=$(printf '%s\n' "$cfg" | awk '
    function flush() {{ if (svc != "") print svc, img; svc = "" }}
    /^[^ ]/ {{ flush(); ins = ($0 == "services:"); next }}
    ins && /^  [^ #]/ {{ flush(); svc = $1; sub(/:$/, "", svc); img = "-"; next }}
    ins && svc != "" && /^    image: / {{ img = $2; gsub(/["'\'']/, "", img) }}
    END {{ flush() }}' | sort)
  # One `docker image inspect` for every image; one per image only when one is missing.
  set --
  while read -r svc img; do [ -z "$svc" ] || [ "$img" = - ] || set -- "$@" "$img"; done <<CLAW_EOF
$l
CLAW_EOF
  ids=; b=; [ $# -eq 0 ] || {{ ids=$(docker image inspect --format '{{{{.Id}}}}' "$@" 2>/dev/null) && b=1; }}
  while read -r svc img; do
    [ -n "$svc" ] || continue
    if [ "$img" = - ]; then iid=none
    elif [ -n "$b" ]; then iid=${{ids%%[!:0-9a-z]*}}; ids=${{ids#"$iid"}}; ids=${{ids#?}}
    else iid=$(docker image inspect --format '{{{{.Id}}}}' "$img" 2>/dev/null) || iid=missing; fi
    printf 'image %s %s\n' "$svc" "$iid"
  done <<CLAW_EOF
$l
CLAW_EOF
}}
"#,
        p = quote(&q.project),
        f = quote(&q.file),
        e = quote(q.env_file.as_deref().unwrap_or("")),
        st = quote(&q.state_file()),
    )
}

/// The probe snippet (in a subshell: its variables and functions do not leak).
pub(crate) fn command(id: usize, q: &Query) -> String {
    format!(
        r#"(
id={id}
{prelude}claw_docker_facts
if [ -z "$claw_docker" ]; then printf '@%s\tnodocker\n' "$id"
elif [ -z "$claw_cv" ]; then printf '@%s\tnocompose\n' "$id"
elif [ -z "$claw_dv" ]; then printf '@%s\tnodaemon\n' "$id"
elif [ ! -f "$f" ]; then printf '@%s\tnofile\n' "$id"
elif [ -n "$e" ] && [ ! -f "$e" ]; then printf '@%s\tnoenv\n' "$id"
elif ! cur=$(claw_compose_current); then printf '@%s\tbadconfig\n' "$id"
else
  last=$(cat "$st" 2>/dev/null) || last=
  ps=$(dc ps --all --format '{{{{.Service}}}}|{{{{.State}}}}|{{{{.Health}}}}' 2>/dev/null) || ps=@error
  printf '@%s\tok\t%s\t%s\t%s\n' "$id" "$(printf '%s' "$cur" | tr '\t\n' '  ')" "$(printf '%s' "$last" | tr '\t\n' '  ')" "$(printf '%s' "$ps" | tr '\t\n' '  ')"
fi
)
"#,
        prelude = prelude(q),
    )
}

fn sha(s: &str) -> Result<String, FactError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(FactError(format!(
            "bad sha256 `{}`",
            s.chars().take(70).collect::<String>()
        )))
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn image_id_ok(s: &str) -> bool {
    s == "missing"
        || s == "none"
        || s.strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses the space-separated inputs (`compose SHA env SHA image SVC ID ...`).
pub(crate) fn parse_inputs(s: &str) -> Result<Inputs, FactError> {
    let bad = |what: &str| FactError(format!("bad compose inputs: {what}"));
    let mut t = s.split_whitespace();
    let mut i = Inputs::default();
    let mut compose = false;
    while let Some(k) = t.next() {
        match k {
            "compose" => {
                i.compose_sha256 = sha(t.next().ok_or_else(|| bad("compose without sha"))?)?;
                compose = true;
            }
            "env" => i.env_sha256 = Some(sha(t.next().ok_or_else(|| bad("env without sha"))?)?),
            "image" => {
                let (svc, id) = (t.next(), t.next());
                match (svc, id) {
                    (Some(svc), Some(id)) if name_ok(svc) && image_id_ok(id) => {
                        i.images.push((svc.to_string(), id.to_string()));
                    }
                    _ => return Err(bad("bad image entry")),
                }
            }
            _ => return Err(bad("unknown entry")),
        }
    }
    if !compose {
        return Err(bad("no compose file hash"));
    }
    i.images.sort();
    Ok(i)
}

/// Parses `SERVICE|STATE|HEALTH ...`.
pub(crate) fn parse_containers(s: &str) -> Result<Vec<Container>, FactError> {
    if s.trim() == "@error" {
        return Err(FactError(
            "`docker compose ps` failed on the project".into(),
        ));
    }
    s.split_whitespace()
        .map(|c| match c.split('|').collect::<Vec<_>>()[..] {
            [svc, state, health] if name_ok(svc) && name_ok(state) => Ok(Container {
                service: svc.into(),
                state: state.into(),
                health: health.into(),
            }),
            _ => Err(FactError(format!(
                "bad container record `{}`",
                c.chars().take(80).collect::<String>()
            ))),
        })
        .collect()
}

/// Parses the fields after `@ID`.
pub(crate) fn parse(fields: &[&str]) -> Result<ComposeState, FactError> {
    match fields {
        ["nodocker"] => Ok(ComposeState::NoDocker),
        ["nocompose"] => Ok(ComposeState::NoCompose),
        ["nodaemon"] => Ok(ComposeState::NoDaemon),
        ["nofile"] => Ok(ComposeState::NoFile),
        ["noenv"] => Ok(ComposeState::NoEnv),
        ["badconfig"] => Ok(ComposeState::BadConfig),
        ["ok", cur, last, ps] => Ok(ComposeState::Found {
            current: parse_inputs(cur)?,
            // A damaged state file only means "up again".
            last: if last.trim().is_empty() {
                None
            } else {
                parse_inputs(last).ok()
            },
            containers: parse_containers(ps)?,
        }),
        _ => Err(FactError(format!(
            "bad compose record `{}`",
            fields
                .first()
                .map(|f| f.chars().take(40).collect::<String>())
                .unwrap_or_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn parses() {
        for (rec, want) in [
            ("nodocker", ComposeState::NoDocker),
            ("nocompose", ComposeState::NoCompose),
            ("nodaemon", ComposeState::NoDaemon),
            ("nofile", ComposeState::NoFile),
            ("noenv", ComposeState::NoEnv),
            ("badconfig", ComposeState::BadConfig),
        ] {
            assert_eq!(parse(&[rec]).unwrap(), want);
        }
        let cur = format!(
            "compose {} env {} image web sha256:{} image db missing image app none ",
            h('a'),
            h('b'),
            h('c')
        );
        let ps = "db|running|healthy web|exited| ";
        let got = parse(&["ok", &cur, "", ps]).unwrap();
        let ComposeState::Found {
            current,
            last,
            containers,
        } = got
        else {
            panic!()
        };
        assert_eq!(current.compose_sha256, h('a'));
        assert_eq!(current.env_sha256, Some(h('b')));
        assert_eq!(
            current.images,
            vec![
                ("app".into(), "none".into()),
                ("db".into(), "missing".into()),
                ("web".into(), format!("sha256:{}", h('c')))
            ]
        );
        assert_eq!(last, None);
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[1].state, "exited");
        assert_eq!(containers[1].health, "");
        // The same text as the state file: parsed the same.
        let ComposeState::Found { last, .. } = parse(&["ok", &cur, &cur, ""]).unwrap() else {
            panic!()
        };
        assert_eq!(last, Some(current));
        // A damaged state file: as if there were none.
        let ComposeState::Found { last, .. } = parse(&["ok", &cur, "garbage", ""]).unwrap() else {
            panic!()
        };
        assert_eq!(last, None);
    }

    #[test]
    fn garbage_is_an_error() {
        let good = format!("compose {}", h('a'));
        for f in [
            vec!["weird"],
            vec![],
            vec!["ok", "compose xyz", "", ""],
            vec!["ok", "", "", ""],
            vec!["ok", &good, "", "@error"],
            vec!["ok", &good, "", "a|b"],
            vec!["ok", &good, "", "a b|c|"],
            vec!["ok", &good],
        ] {
            assert!(parse(&f).is_err(), "{f:?}");
        }
        let img = format!("{good} image web sha256:zz");
        assert!(parse(&["ok", &img, "", ""]).is_err());
        let img = format!("{good} image we$b none");
        assert!(parse(&["ok", &img, "", ""]).is_err());
    }
}
