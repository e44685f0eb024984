//! Rollout policy (`[rollout]` of a playbook): hosts in batches (`serial`), a failure budget over
//! the whole run (`max_fail`), a health gate between batches, the order of the hosts, and an
//! order of groups (`groups`: each group's hosts in batches of their own, one group after the
//! other). Pure: the runner asks it how to cut the hosts and whether to go on.

use serde::Deserialize;

/// A number of hosts, or a percentage of the run's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Count(usize),
    Percent(u32),
}

/// A `serial`/`max_fail` value that is no [`Amount`]: `what` names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{what}` must be a number of hosts{} or a percentage such as \"25%\"", at_least(.allow_zero))]
pub struct AmountError {
    pub what: String,
    /// Whether 0 is allowed (else the message says "at least 1").
    pub allow_zero: bool,
}

/// The bound an [`AmountError`] states.
fn at_least(allow_zero: &bool) -> &'static str {
    if *allow_zero { "" } else { " (at least 1)" }
}

impl Amount {
    /// `4`, `"4"` or `"25%"`.
    pub fn parse(v: &toml::Value, what: &str, allow_zero: bool) -> Result<Amount, AmountError> {
        let bad = || AmountError {
            what: what.into(),
            allow_zero,
        };
        let a = match v {
            toml::Value::Integer(n) => Amount::Count(usize::try_from(*n).map_err(|_| bad())?),
            toml::Value::String(s) => match s.trim().strip_suffix('%') {
                Some(p) => {
                    let p: u32 = p.trim().parse().map_err(|_| bad())?;
                    if p > 100 {
                        return Err(bad());
                    }
                    Amount::Percent(p)
                }
                None => Amount::Count(s.trim().parse().map_err(|_| bad())?),
            },
            _ => return Err(bad()),
        };
        if !allow_zero && matches!(a, Amount::Count(0) | Amount::Percent(0)) {
            return Err(bad());
        }
        Ok(a)
    }

    /// The number of hosts out of `total`: a percentage rounds down (`max_fail`: "at most").
    pub fn of(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => total * p as usize / 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// As the inventory lists them (default).
    #[default]
    Inventory,
    /// By host name.
    Sorted,
    /// In a random order (a new one every run).
    Shuffled,
}

/// The rollout settings of a playbook. Without `[rollout]`: every host in one batch, no failure
/// budget (every host runs whatever the others do), inventory order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Hosts per batch; None: all at once.
    pub serial: Option<Amount>,
    /// Failed or unreachable hosts tolerated over the whole run; None: no limit. When more
    /// fail, no new batch starts and running hosts stop after their current step.
    pub max_fail: Option<Amount>,
    /// A step of the playbook (e.g. an `http_check`) that must have passed on every host of a
    /// batch that was applied before the next batch starts.
    pub health: Option<String>,
    pub order: Order,
    /// Inventory groups, in the order their hosts go: each group's hosts (those not in an
    /// earlier group) are cut into batches of their own, then the hosts of no listed group.
    /// Empty: every host as one group.
    pub groups: Vec<String>,
    /// The line of `groups` in the playbook (for errors found with the inventory).
    pub groups_line: usize,
}

impl Rollout {
    /// The batches: ranges of indexes into the (ordered) hosts. A percentage of `serial` rounds
    /// up, and a batch has at least one host.
    pub fn batches(&self, total: usize) -> Vec<std::ops::Range<usize>> {
        let size = match self.serial {
            None => total,
            Some(Amount::Count(n)) => n,
            Some(Amount::Percent(p)) => (total * p as usize).div_ceil(100),
        }
        .max(1);
        (0..total)
            .step_by(size)
            .map(|s| s..(s + size).min(total))
            .collect()
    }

    /// The batches of this run: host indexes into `names`, in rollout order. `groups_of` gives
    /// each host's groups. With `groups`, each group's hosts (in the host order) form batches of
    /// `serial` of their own (a percentage of that group), one group after the other; hosts of
    /// no listed group come last, the same way.
    pub fn plan(&self, names: &[String], groups_of: &[Vec<String>]) -> Vec<Vec<usize>> {
        let order = self.order(names);
        let rank = |i: usize| {
            (self.groups.iter())
                .position(|g| groups_of[i].contains(g))
                .unwrap_or(self.groups.len())
        };
        let mut out = Vec::new();
        for r in 0..=self.groups.len() {
            let part: Vec<usize> = order.iter().copied().filter(|&i| rank(i) == r).collect();
            for b in self.batches(part.len()) {
                out.push(part[b].to_vec());
            }
        }
        out
    }

    /// Whether `failed` failures out of `total` hosts exceed the budget.
    pub fn over_budget(&self, failed: usize, total: usize) -> bool {
        self.max_fail.is_some_and(|m| failed > m.of(total))
    }

    /// The hosts' order for this run (indexes into `names`).
    pub fn order(&self, names: &[String]) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..names.len()).collect();
        match self.order {
            Order::Inventory => {}
            Order::Sorted => idx.sort_by(|a, b| names[*a].cmp(&names[*b])),
            Order::Shuffled => {
                use rand::seq::SliceRandom;
                idx.shuffle(&mut rand::rng());
            }
        }
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_go_one_after_the_other_each_in_batches_of_its_own() {
        let names: Vec<String> = ["e1", "a1", "d", "a2", "x", "a3", "ae"]
            .map(String::from)
            .into();
        let groups_of: Vec<Vec<String>> = [
            &["edge"][..],
            &["app"],
            &["data"],
            &["app"],
            &[],
            &["app"],
            &["app", "edge"],
        ]
        .iter()
        .map(|g| g.iter().map(|s| (*s).to_string()).collect())
        .collect();
        let r = Rollout {
            serial: Some(Amount::Count(2)),
            groups: vec!["data".into(), "app".into(), "edge".into()],
            ..Rollout::default()
        };
        let shown = |b: Vec<Vec<usize>>| -> Vec<Vec<&str>> {
            b.iter()
                .map(|x| x.iter().map(|i| names[*i].as_str()).collect())
                .collect()
        };
        assert_eq!(
            shown(r.plan(&names, &groups_of)),
            [
                vec!["d"],
                vec!["a1", "a2"],
                vec!["a3", "ae"],
                vec!["e1"],
                vec!["x"]
            ]
        );
        // Without groups: the batches of the whole run, as before.
        let plain = Rollout {
            serial: Some(Amount::Count(3)),
            ..Rollout::default()
        };
        assert_eq!(
            shown(plain.plan(&names, &groups_of)),
            [vec!["e1", "a1", "d"], vec!["a2", "x", "a3"], vec!["ae"]]
        );
        // A percentage is of each group.
        let half = Rollout {
            serial: Some(Amount::Percent(50)),
            groups: vec!["app".into()],
            ..Rollout::default()
        };
        assert_eq!(
            shown(half.plan(&names, &groups_of)),
            [
                vec!["a1", "a2"],
                vec!["a3", "ae"],
                vec!["e1", "d"],
                vec!["x"]
            ]
        );
    }

    fn v(s: &str) -> toml::Value {
        toml::from_str::<toml::Table>(&format!("x = {s}")).unwrap()["x"].clone()
    }

    #[test]
    fn amounts() {
        assert_eq!(
            Amount::parse(&v("4"), "serial", false),
            Ok(Amount::Count(4))
        );
        assert_eq!(
            Amount::parse(&v("\"25%\""), "serial", false),
            Ok(Amount::Percent(25))
        );
        assert_eq!(
            Amount::parse(&v("\"3\""), "serial", false),
            Ok(Amount::Count(3))
        );
        assert_eq!(
            Amount::parse(&v("0"), "max_fail", true),
            Ok(Amount::Count(0))
        );
        for bad in ["0", "-1", "\"101%\"", "\"x\"", "1.5", "\"0%\""] {
            let e = Amount::parse(&v(bad), "serial", false).unwrap_err();
            assert!(
                e.to_string().contains("`serial` must be a number of hosts"),
                "{bad}: {e}"
            );
        }
        assert_eq!(Amount::Percent(10).of(12), 1);
        assert_eq!(Amount::Percent(5).of(12), 0);
    }

    #[test]
    fn batches_and_budget() {
        let r = |serial, max_fail| Rollout {
            serial,
            max_fail,
            ..Rollout::default()
        };
        assert_eq!(r(None, None).batches(5), vec![0..5]);
        assert_eq!(
            r(Some(Amount::Count(4)), None).batches(12),
            [0..4, 4..8, 8..12]
        );
        assert_eq!(
            r(Some(Amount::Count(5)), None).batches(12),
            [0..5, 5..10, 10..12]
        );
        // 25% of 10 = 2.5: batches of 3.
        assert_eq!(
            r(Some(Amount::Percent(25)), None).batches(10),
            [0..3, 3..6, 6..9, 9..10]
        );
        assert_eq!(
            r(Some(Amount::Percent(1)), None).batches(3),
            [0..1, 1..2, 2..3]
        );
        assert!(r(None, None).batches(0).is_empty());
        let b = r(None, Some(Amount::Count(1)));
        assert!(!b.over_budget(1, 12) && b.over_budget(2, 12));
        let p = r(None, Some(Amount::Percent(10)));
        assert!(!p.over_budget(1, 12) && p.over_budget(2, 12));
        assert!(r(None, Some(Amount::Count(0))).over_budget(1, 3));
        assert!(!r(None, None).over_budget(100, 3));
    }

    #[test]
    fn orders() {
        let names: Vec<String> = ["web-3", "web-1", "web-2"].map(String::from).to_vec();
        let mut r = Rollout::default();
        assert_eq!(r.order(&names), [0, 1, 2]);
        r.order = Order::Sorted;
        assert_eq!(r.order(&names), [1, 2, 0]);
        r.order = Order::Shuffled;
        let mut s = r.order(&names);
        s.sort();
        assert_eq!(s, [0, 1, 2]);
    }
}
