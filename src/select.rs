//! Selection: which hosts a run works on (`--limit`, with `@FILE`) and which of the playbook's
//! steps run (`--tags`, `--skip-tags`, `--step`). Pure, except for reading the `@FILE`s.
//!
//! Steps left out are not removed: they stay in the step list marked [`Step::not_selected`], so
//! plans show them as `skip (not selected: ...)` and nothing silently disappears. They are
//! checked offline like every step, but never probed, diffed or applied.
//!
//! [`Step::not_selected`]: crate::playbook::Step::not_selected

use crate::inventory::{Host, Inventory, SelectError};
use crate::playbook::Playbook;
use std::path::{Path, PathBuf};

/// `--tags`, `--skip-tags` and `--step` of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepFilter {
    /// A step runs only if it has one of these tags (when any are given).
    pub tags: Vec<String>,
    /// A step with one of these tags does not run (wins over `tags`).
    pub skip_tags: Vec<String>,
    /// The steps before this one do not run.
    pub start_at: Option<String>,
}

impl StepFilter {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.skip_tags.is_empty() && self.start_at.is_none()
    }

    /// The filter as the operator wrote it, for messages: `--tags web,db --step "app config"`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.tags.is_empty() {
            parts.push(format!("--tags {}", self.tags.join(",")));
        }
        if !self.skip_tags.is_empty() {
            parts.push(format!("--skip-tags {}", self.skip_tags.join(",")));
        }
        if let Some(s) = &self.start_at {
            parts.push(format!("--step {s:?}"));
        }
        parts.join(" ")
    }
}

/// What a filter made of the step list (printed before a run, and by `validate -v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The filter, as written (`--tags web`).
    pub filter: String,
    /// Steps that run (rescue steps of a task not counted: they run only after a failure).
    pub selected: Vec<String>,
    /// Steps that do not run.
    pub not_selected: Vec<String>,
    /// Steps the filter leaves out that run anyway, with the reason.
    pub kept: Vec<(String, &'static str)>,
}

/// Why `--tags`/`--skip-tags`/`--step` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StepFilterError {
    /// Tags no step has and an unknown `--step`: all at once, one a line.
    #[error("{}", lines(.problems))]
    Unknown { problems: Vec<FilterProblem> },
    /// The filter (as written) leaves no step of `whose` (the playbook, and its task).
    #[error("{filter}: selects no step of {whose} (steps: {})", quoted(.steps))]
    SelectsNothing {
        filter: String,
        whose: String,
        steps: Vec<String>,
    },
}

/// One name of a step filter that the playbook does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FilterProblem {
    /// `flag` is `--tags` or `--skip-tags`; `known`: every tag of the steps.
    #[error("{flag} {tag}: no step of {whose} has the tag `{tag}`{}", tag_hint(.near, .known))]
    UnknownTag {
        flag: &'static str,
        tag: String,
        whose: String,
        near: Vec<String>,
        known: Vec<String>,
    },
    /// `--step NAME`; `rescue`: it names a rescue step; `steps`: the steps it could name.
    #[error(
        "--step {name:?}: {whose} has no such step{}{}",
        if *.rescue { " to start at (it is a rescue step: it runs only after a failure)" } else { "" },
        step_hint(.near, .steps)
    )]
    UnknownStep {
        name: String,
        whose: String,
        rescue: bool,
        near: Vec<String>,
        steps: Vec<String>,
    },
}

/// Messages one a line.
fn lines(problems: &[FilterProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// After an unknown tag: the close ones, and every tag (or that there are none).
fn tag_hint(near: &[String], known: &[String]) -> String {
    let mut e = String::new();
    if !near.is_empty() {
        e.push_str(&format!(" (did you mean {}?)", quoted(near)));
    }
    if known.is_empty() {
        e.push_str("; its steps have no tags (`tags = [\"...\"]` in a step)");
    } else {
        e.push_str(&format!("; tags: {}", known.join(", ")));
    }
    e
}

/// After an unknown `--step`: the close names, else every step.
fn step_hint(near: &[String], steps: &[String]) -> String {
    if near.is_empty() {
        format!("; steps: {}", quoted(steps))
    } else {
        format!("; did you mean {}?", quoted(near))
    }
}

/// Why a step runs whatever the filter says (None: the filter decides).
fn always_runs(pb: &Playbook, step: &crate::playbook::Step) -> Option<&'static str> {
    if step.kind.provides_secret() {
        // Read back so that their values mask every output, and templates can use them.
        Some("a secret step: read back to mask output and for templates")
    } else if pb.rollout.health.as_deref() == Some(step.name.as_str()) {
        Some("the [rollout] health step: batches wait for it")
    } else {
        None
    }
}

/// Marks the steps of `pb` that `f` leaves out (`Step::not_selected`). Errors, all at once:
/// a tag no step has, an unknown `--step`, a filter that selects nothing. `None` when the
/// filter is empty (every step runs).
pub(crate) fn select_steps(
    pb: &mut Playbook,
    f: &StepFilter,
) -> Result<Option<Selection>, StepFilterError> {
    if f.is_empty() {
        return Ok(None);
    }
    let whose = match &pb.task {
        Some(t) => format!("{} (task `{t}`)", pb.path.display()),
        None => pb.path.display().to_string(),
    };
    let mut problems = unknown_tags(pb, f, &whose);
    let start = match start_index(pb, f, &whose) {
        Ok(i) => i,
        Err(e) => {
            problems.push(e);
            0
        }
    };
    if !problems.is_empty() {
        return Err(StepFilterError::Unknown { problems });
    }
    let mut sel = Selection {
        filter: f.describe(),
        selected: vec![],
        not_selected: vec![],
        kept: vec![],
    };
    let mut chosen = 0;
    for i in 0..pb.steps.len() {
        let s = &pb.steps[i];
        if s.rescue {
            // A task's rescue steps run only after one of its (selected) steps failed.
            continue;
        }
        let why = if i < start {
            Some(format!("before --step {:?}", pb.steps[start].name))
        } else if !f.tags.is_empty() && !s.tags.iter().any(|t| f.tags.contains(t)) {
            Some(format!("no tag of --tags {}", f.tags.join(",")))
        } else {
            s.tags
                .iter()
                .find(|t| f.skip_tags.contains(t))
                .map(|t| format!("tag `{t}` is in --skip-tags"))
        };
        match (why, always_runs(pb, s)) {
            (None, _) => {
                chosen += 1;
                sel.selected.push(s.name.clone());
            }
            (Some(_), Some(keep)) => {
                sel.selected.push(s.name.clone());
                sel.kept.push((s.name.clone(), keep));
            }
            (Some(why), None) => {
                sel.not_selected.push(s.name.clone());
                pb.steps[i].not_selected = Some(format!("not selected: {why}"));
            }
        }
    }
    if chosen == 0 {
        return Err(StepFilterError::SelectsNothing {
            filter: sel.filter,
            whose,
            steps: pb
                .steps
                .iter()
                .filter(|s| !s.rescue)
                .map(|s| s.name.clone())
                .collect(),
        });
    }
    Ok(Some(sel))
}

/// An error for each `--tags`/`--skip-tags` tag no step has.
fn unknown_tags(pb: &Playbook, f: &StepFilter, whose: &str) -> Vec<FilterProblem> {
    let mut errors = Vec::new();
    let mut known: Vec<&str> = pb
        .steps
        .iter()
        .flat_map(|s| s.tags.iter().map(String::as_str))
        .collect();
    known.sort_unstable();
    known.dedup();
    for (flag, list) in [("--tags", &f.tags), ("--skip-tags", &f.skip_tags)] {
        for t in list.iter().filter(|t| !known.contains(&t.as_str())) {
            errors.push(FilterProblem::UnknownTag {
                flag,
                tag: t.clone(),
                whose: whose.to_string(),
                near: owned(&close_names(t, known.iter().copied())),
                known: owned(&known),
            });
        }
    }
    errors
}

/// The index of `--step`'s step (0 without one): an error for a name that is no step.
fn start_index(pb: &Playbook, f: &StepFilter, whose: &str) -> Result<usize, FilterProblem> {
    let Some(name) = &f.start_at else {
        return Ok(0);
    };
    match pb.steps.iter().position(|s| !s.rescue && &s.name == name) {
        Some(i) => Ok(i),
        None => {
            let names = pb
                .steps
                .iter()
                .filter(|s| !s.rescue)
                .map(|s| s.name.as_str());
            let near = close_names(name, names.clone());
            Err(FilterProblem::UnknownStep {
                name: name.clone(),
                whose: whose.to_string(),
                rescue: pb.steps.iter().any(|s| s.rescue && &s.name == name),
                // The steps are listed only when none is close.
                steps: if near.is_empty() {
                    names.map(String::from).collect()
                } else {
                    Vec::new()
                },
                near: owned(&near),
            })
        }
    }
}

/// Owned copies of names.
fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(ToString::to_string).collect()
}

/// `a`, `b` and `c` for messages.
fn quoted<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names close to `want` (a typo away, or containing it, case aside), closest first, at most 5.
pub(crate) fn close_names<'a>(want: &str, names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let w = want.to_lowercase();
    let limit = (w.chars().count() / 3).max(1);
    let mut near: Vec<(usize, &str)> = names
        .filter_map(|n| {
            let l = n.to_lowercase();
            let d = distance(&w, &l);
            let contains = w.len() >= 3 && (l.contains(&w) || w.contains(&l));
            (d <= limit || contains).then_some((d, n))
        })
        .collect();
    near.sort();
    near.dedup_by(|a, b| a.1 == b.1);
    near.into_iter().take(5).map(|(_, n)| n).collect()
}

/// Edit distance in characters: insertions, deletions, substitutions and swaps of two
/// neighbours (`wbe` is one edit from `web`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// One item of `--limit`: a host, group or glob, `!` to exclude; from the command line or from
/// a line of an `@FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LimitItem {
    pub pattern: String,
    /// The file and 1-based line it was read from.
    pub from: Option<(PathBuf, usize)>,
}

/// Why `--limit` is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimitError {
    #[error("--limit @{file}: cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("--limit {arg:?}: names no host, group or pattern")]
    Empty { arg: String },
    #[error("{}:{line}: `{item}`: a --limit file cannot name another file", .path.display())]
    NestedFile {
        path: PathBuf,
        line: usize,
        item: String,
    },
    #[error(
        "{}:{line}: `{item}`: one host, group or pattern per item (separate them with commas or lines)",
        .path.display()
    )]
    Spaces {
        path: PathBuf,
        line: usize,
        item: String,
    },
    #[error(
        "--limit @{}: the file names no host, group or pattern (only blank lines or comments)",
        .path.display()
    )]
    EmptyFile { path: PathBuf },
    /// An item read from line `line` of `file` selects nothing.
    #[error("{}:{line}: --limit: {source}", .file.display())]
    FileItem {
        file: PathBuf,
        line: usize,
        source: SelectError,
    },
    /// `arg`: `--limit` as given.
    #[error("--limit {arg}: {source}")]
    Item { arg: String, source: SelectError },
}

/// Splits `--limit` into its items, reading each `@FILE` item (relative to the current
/// directory): one or more selectors a line, comma-separated, `#` starts a comment.
pub(crate) fn limit_items(arg: &str) -> Result<Vec<LimitItem>, LimitError> {
    let mut out = Vec::new();
    for item in arg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.strip_prefix('@') {
            Some(file) => {
                let path = Path::new(file);
                let text = std::fs::read_to_string(path).map_err(|source| LimitError::Read {
                    file: file.to_string(),
                    source,
                })?;
                out.extend(parse_limit_file(path, &text)?);
            }
            None => out.push(LimitItem {
                pattern: item.to_string(),
                from: None,
            }),
        }
    }
    if out.is_empty() {
        return Err(LimitError::Empty { arg: arg.into() });
    }
    Ok(out)
}

/// The items of an `@FILE` of `--limit` (see [`limit_items`]); errors name the file and line.
pub(crate) fn parse_limit_file(path: &Path, text: &str) -> Result<Vec<LimitItem>, LimitError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for item in line.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item.starts_with('@') {
                return Err(LimitError::NestedFile {
                    path: path.to_path_buf(),
                    line: n + 1,
                    item: item.into(),
                });
            }
            if item.chars().any(char::is_whitespace) {
                return Err(LimitError::Spaces {
                    path: path.to_path_buf(),
                    line: n + 1,
                    item: item.into(),
                });
            }
            out.push(LimitItem {
                pattern: item.to_string(),
                from: Some((path.to_path_buf(), n + 1)),
            });
        }
    }
    if out.is_empty() {
        return Err(LimitError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// The hosts of `inv` that `--limit ARG` selects, in inventory order. Each item is checked on
/// its own first, so an error names the item (and the file and line it came from).
pub(crate) fn limit<'a>(inv: &'a Inventory, arg: &str) -> Result<Vec<&'a Host>, LimitError> {
    let items = limit_items(arg)?;
    let in_arg = |source| LimitError::Item {
        arg: arg.into(),
        source,
    };
    for it in &items {
        if let Err(source) = inv.select(&it.pattern) {
            return Err(match &it.from {
                Some((f, line)) => LimitError::FileItem {
                    file: f.clone(),
                    line: *line,
                    source,
                },
                None => in_arg(source),
            });
        }
    }
    let joined: Vec<&str> = items.iter().map(|i| i.pattern.as_str()).collect();
    inv.select(&joined.join(",")).map_err(in_arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PB: &str = r#"name = "sel"

[rollout]
health = "health"

[[steps]]
name = "db password"
kind = "secret"
secret = "db"
path = "/etc/app/db"
tags = ["secrets"]

[[steps]]
name = "app dir"
kind = "dir"
path = "/opt/app"
tags = ["base"]

[[steps]]
name = "app config"
kind = "file"
path = "/opt/app/app.conf"
content = "x"
tags = ["web", "config"]
notify = "reload"

[[steps]]
name = "nginx config"
kind = "file"
path = "/etc/nginx/app.conf"
content = "y"
tags = ["web", "nginx"]

[[steps]]
name = "slow thing"
kind = "command"
run = "true"
tags = ["slow"]

[[steps]]
name = "health"
kind = "command"
run = "true"
tags = ["check"]

[[handlers]]
name = "reload"
kind = "command"
run = "true"

[[tasks]]
name = "update"
[[tasks.steps]]
use = "app config"
[[tasks.steps]]
name = "restart"
kind = "command"
run = "true"
tags = ["restart"]
[[tasks.rescue]]
name = "roll back"
kind = "command"
run = "true"
"#;

    fn pb() -> Playbook {
        Playbook::parse(Path::new("pb.toml"), PB).unwrap()
    }

    fn filter(tags: &[&str], skip: &[&str], step: Option<&str>) -> StepFilter {
        StepFilter {
            tags: tags.iter().map(ToString::to_string).collect(),
            skip_tags: skip.iter().map(ToString::to_string).collect(),
            start_at: step.map(String::from),
        }
    }

    /// Selects, then returns (name, not_selected reason) per step.
    fn run(pb: &mut Playbook, f: &StepFilter) -> Vec<(String, Option<String>)> {
        select_steps(pb, f).unwrap();
        pb.steps
            .iter()
            .map(|s| (s.name.clone(), s.not_selected.clone()))
            .collect()
    }

    fn selected(pb: &Playbook) -> Vec<&str> {
        pb.steps
            .iter()
            .filter(|s| s.not_selected.is_none())
            .map(|s| s.name.as_str())
            .collect()
    }

    #[test]
    fn no_filter_selects_everything() {
        let mut p = pb();
        assert_eq!(select_steps(&mut p, &StepFilter::default()), Ok(None));
        assert!(p.steps.iter().all(|s| s.not_selected.is_none()));
    }

    #[test]
    fn tags_select_steps_with_one_of_them() {
        let mut p = pb();
        let r = run(&mut p, &filter(&["web"], &[], None));
        // secret and health steps run whatever the filter says
        assert_eq!(
            selected(&p),
            ["db password", "app config", "nginx config", "health"]
        );
        assert_eq!(
            r[1].1.as_deref(),
            Some("not selected: no tag of --tags web")
        );
        let mut p = pb();
        let s = select_steps(&mut p, &filter(&["base", "nginx"], &[], None))
            .unwrap()
            .unwrap();
        assert_eq!(
            selected(&p),
            ["db password", "app dir", "nginx config", "health"]
        );
        assert_eq!(s.not_selected, ["app config", "slow thing"]);
        assert_eq!(
            s.kept,
            [
                (
                    "db password".to_string(),
                    "a secret step: read back to mask output and for templates"
                ),
                (
                    "health".to_string(),
                    "the [rollout] health step: batches wait for it"
                )
            ]
        );
        assert_eq!(s.filter, "--tags base,nginx");
    }

    #[test]
    fn skip_tags_win_over_tags() {
        let mut p = pb();
        let r = run(&mut p, &filter(&["web"], &["nginx"], None));
        assert_eq!(selected(&p), ["db password", "app config", "health"]);
        assert_eq!(
            r[3].1.as_deref(),
            Some("not selected: tag `nginx` is in --skip-tags")
        );
        let mut p = pb();
        run(&mut p, &filter(&[], &["slow", "secrets"], None));
        // a secret step is read back even when its tag is skipped
        assert_eq!(
            selected(&p),
            [
                "db password",
                "app dir",
                "app config",
                "nginx config",
                "health"
            ]
        );
    }

    #[test]
    fn step_starts_at_a_step_and_tags_filter_after_it() {
        let mut p = pb();
        let r = run(&mut p, &filter(&[], &[], Some("app config")));
        assert_eq!(
            selected(&p),
            [
                "db password",
                "app config",
                "nginx config",
                "slow thing",
                "health"
            ]
        );
        assert_eq!(
            r[1].1.as_deref(),
            Some("not selected: before --step \"app config\"")
        );
        // --step then --tags: from the step on, only the tagged ones (the start step itself
        // included only if it has the tag)
        let mut p = pb();
        run(&mut p, &filter(&["nginx"], &[], Some("app config")));
        assert_eq!(selected(&p), ["db password", "nginx config", "health"]);
        let mut p = pb();
        run(&mut p, &filter(&["base", "nginx"], &[], Some("app config")));
        assert_eq!(selected(&p), ["db password", "nginx config", "health"]);
    }

    #[test]
    fn unknown_tags_are_errors_with_suggestions() {
        let mut p = pb();
        let e = select_steps(&mut p, &filter(&["wbe"], &["slwo"], None))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--tags wbe: no step of pb.toml has the tag `wbe` (did you mean `web`?); tags: base, check, config, nginx, secrets, slow, web\n\
             --skip-tags slwo: no step of pb.toml has the tag `slwo` (did you mean `slow`?); tags: base, check, config, nginx, secrets, slow, web"
        );
        assert!(
            p.steps.iter().all(|s| s.not_selected.is_none()),
            "nothing marked"
        );
        let mut p = Playbook::parse(
            Path::new("t.toml"),
            "name = \"x\"\n[[steps]]\nname = \"a\"\nkind = \"dir\"\npath = \"/a\"\n",
        )
        .unwrap();
        let e = select_steps(&mut p, &filter(&["web"], &[], None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("its steps have no tags"), "{e}");
    }

    #[test]
    fn unknown_step_lists_close_names() {
        let mut p = pb();
        let e = select_steps(&mut p, &filter(&[], &[], Some("app confg")))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--step \"app confg\": pb.toml has no such step; did you mean `app config`?"
        );
        let e = select_steps(&mut p, &filter(&[], &[], Some("config")))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("did you mean `app config`, `nginx config`?"),
            "{e}"
        );
        let e = select_steps(&mut p, &filter(&[], &[], Some("zzz")))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("steps: `db password`, `app dir`, `app config`, `nginx config`, `slow thing`, `health`"),
            "{e}"
        );
    }

    #[test]
    fn a_filter_that_selects_nothing_is_an_error() {
        let mut p = pb();
        let e = select_steps(&mut p, &filter(&["nginx"], &["web"], None))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--tags nginx --skip-tags web: selects no step of pb.toml"),
            "{e}"
        );
        // a secret step alone is not a selection: it is read back in every run
        let mut p = pb();
        assert!(select_steps(&mut p, &filter(&[], &[], Some("health"))).is_ok());
        let mut p = pb();
        assert!(select_steps(&mut p, &filter(&["check"], &["check"], None)).is_err());
    }

    #[test]
    fn tasks_select_among_their_own_steps() {
        let mut p = pb().with_task("update").unwrap();
        // `use`d steps keep their playbook tags; rescue steps are not subject to selection
        run(&mut p, &filter(&["config"], &[], None));
        assert_eq!(selected(&p), ["db password", "app config", "roll back"]);
        let mut p = pb().with_task("update").unwrap();
        let e = select_steps(&mut p, &filter(&["nginx"], &[], None))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--tags nginx: no step of pb.toml (task `update`) has the tag `nginx`"),
            "{e}"
        );
        let mut p = pb().with_task("update").unwrap();
        let e = select_steps(&mut p, &filter(&[], &[], Some("roll back")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("it is a rescue step"), "{e}");
        let mut p = pb().with_task("update").unwrap();
        run(&mut p, &filter(&[], &[], Some("restart")));
        assert_eq!(selected(&p), ["db password", "restart", "roll back"]);
    }

    #[test]
    fn close_names_by_distance_or_containment() {
        let names = ["app dir", "app config", "nginx config", "motd"];
        assert_eq!(close_names("motd", names.into_iter()), ["motd"]);
        assert_eq!(close_names("mtod", names.into_iter()), ["motd"]);
        assert_eq!(close_names("NGINX", names.into_iter()), ["nginx config"]);
        assert!(close_names("zzzz", names.into_iter()).is_empty());
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "ab"), 2);
        assert_eq!(distance("wbe", "web"), 1);
    }

    #[test]
    fn limit_file_syntax() {
        let text = "# web servers\nweb-1, web-2\n\n  db-*   # all databases\n!web-3,\n";
        let items = parse_limit_file(Path::new("hosts.txt"), text).unwrap();
        let got: Vec<(&str, usize)> = items
            .iter()
            .map(|i| (i.pattern.as_str(), i.from.as_ref().unwrap().1))
            .collect();
        assert_eq!(
            got,
            [("web-1", 2), ("web-2", 2), ("db-*", 4), ("!web-3", 5)]
        );
        assert_eq!(
            parse_limit_file(Path::new("h.txt"), "web-1\n@other.txt\n")
                .unwrap_err()
                .to_string(),
            "h.txt:2: `@other.txt`: a --limit file cannot name another file"
        );
        assert_eq!(
            parse_limit_file(Path::new("h.txt"), "a\n\nweb 1\n")
                .unwrap_err()
                .to_string(),
            "h.txt:3: `web 1`: one host, group or pattern per item (separate them with commas or lines)"
        );
        assert!(
            parse_limit_file(Path::new("h.txt"), "# nothing\n\n")
                .unwrap_err()
                .to_string()
                .contains("names no host")
        );
    }

    const INV: &str = r#"
[defaults]
user = "u"
[groups.web]
[groups.db]
[hosts.web-1]
groups = ["web"]
[hosts.web-2]
groups = ["web"]
[hosts.web-3]
groups = ["web"]
[hosts.db-1]
groups = ["db"]
"#;

    fn names(hosts: &[&Host]) -> Vec<String> {
        hosts.iter().map(|h| h.name.clone()).collect()
    }

    #[test]
    fn limit_with_globs_negation_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let inv_path = dir.path().join("inv.toml");
        std::fs::write(&inv_path, INV).unwrap();
        let inv = Inventory::load_with(&inv_path, &crate::inventory::SshConfigChoice::Off).unwrap();
        assert_eq!(
            names(&limit(&inv, "web-*,!web-2").unwrap()),
            ["web-1", "web-3"]
        );
        assert_eq!(names(&limit(&inv, "!web").unwrap()), ["db-1"]);
        assert_eq!(
            names(&limit(&inv, "db-1, web-3").unwrap()),
            ["web-3", "db-1"]
        );
        let f = dir.path().join("hosts.txt");
        std::fs::write(&f, "# canary\nweb-[12]\n\ndb-1 # and the db\n").unwrap();
        let arg = format!("@{}", f.display());
        assert_eq!(
            names(&limit(&inv, &arg).unwrap()),
            ["web-1", "web-2", "db-1"]
        );
        // a file and command-line items together: `!` applies after the file's items
        assert_eq!(
            names(&limit(&inv, &format!("{arg},!web-1")).unwrap()),
            ["web-2", "db-1"]
        );
        std::fs::write(&f, "web-1\n\nweb-9\n").unwrap();
        assert_eq!(
            limit(&inv, &arg).unwrap_err().to_string(),
            format!(
                "{}:3: --limit: `web-9` matches no host or group of the inventory",
                f.display()
            )
        );
        std::fs::write(&f, "web-[\n").unwrap();
        let e = limit(&inv, &arg).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:1: --limit: bad pattern `web-[`", f.display())),
            "{e}"
        );
        let e = limit(&inv, "@/nonexistent/hosts.txt")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--limit @/nonexistent/hosts.txt: cannot read /nonexistent/hosts.txt:"),
            "{e}"
        );
        assert_eq!(
            limit(&inv, "web-1,nope").unwrap_err().to_string(),
            "--limit web-1,nope: `nope` matches no host or group of the inventory"
        );
        assert!(
            limit(&inv, " , ")
                .unwrap_err()
                .to_string()
                .contains("names no host")
        );
    }
}
