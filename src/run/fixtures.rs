//! Values the tests of the runner's modules share: steps of a playbook and of a plan.

use crate::plan::{Change, ContentChange, StepPlan};
use crate::playbook::Step;
use std::sync::Arc;

/// A step of a plan: `a KIND`, with `change`.
pub(super) fn step(kind: &str, change: Change) -> StepPlan {
    StepPlan {
        name: format!("a {kind}"),
        kind: kind.into(),
        change,
        makes_watchers_stale: kind
            .parse::<crate::resource::Kind>()
            .unwrap()
            .makes_watchers_stale(),
        notify: vec![],
        output: None,
        not_here: false,
    }
}

/// A `command` step of a playbook that is probed again after the steps `recheck_after`.
pub(super) fn pb_step(recheck_after: &[&str]) -> Step {
    Step {
        name: "s".into(),
        kind: "command".parse().unwrap(),
        args: toml::Table::new(),
        when: None,
        notify: vec![],
        tags: vec![],
        timeout: None,
        recheck_after: recheck_after
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        rescue: false,
        not_selected: None,
        line: 1,
    }
}

/// An update of the file at `path` (with a content change).
pub(super) fn file_change(path: &str) -> Change {
    let mut c = Change::new(crate::plan::Action::Update, path, "", "true".into());
    c.content = Some(ContentChange {
        path: path.into(),
        old_sha256: None,
        new: Arc::new(vec![]),
        sensitive: false,
        old: None,
        keys: None,
    });
    c
}
