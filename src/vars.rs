//! Variable layering and the context that templates and `when` expressions see.
//!
//! Precedence, lowest to highest: playbook `[defaults]` < inventory defaults < groups (in the
//! host's order) < host < playbook `[vars]` < command line (`-e`).

use crate::inventory::{Host, Inventory};
use crate::playbook::Playbook;
use crate::template::table_to_json;
use serde_json::{Map, Value};

/// Why a `-e` argument is refused (`arg` as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtraVarError {
    #[error("`-e {arg}`: expected key=value")]
    NoEquals { arg: String },
    #[error("`-e {arg}`: variable names may only contain letters, digits and `_`")]
    BadName { arg: String },
}

/// Parses `-e key=value`. Values stay strings (no guessing: `1.10` is not `1.1`).
pub fn parse_extra(s: &str) -> Result<(String, String), ExtraVarError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| ExtraVarError::NoEquals { arg: s.into() })?;
    let k = k.trim();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ExtraVarError::BadName { arg: s.into() });
    }
    Ok((k.to_string(), v.to_string()))
}

/// The variables of one host, layered.
pub fn host_vars(
    inv: &Inventory,
    host: &Host,
    pb: &Playbook,
    extra: &[(String, String)],
) -> Map<String, Value> {
    let mut m = table_to_json(&pb.defaults);
    m.extend(inventory_vars(inv, host));
    m.extend(table_to_json(&pb.vars));
    for (k, v) in extra {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    m
}

/// The full template context of a host: its variables at top level, plus `host` and `inventory`.
pub fn context(
    inv: &Inventory,
    host: &Host,
    pb: &Playbook,
    extra: &[(String, String)],
) -> Map<String, Value> {
    let mut m = host_context(inv, host, pb, extra);
    m.insert("inventory".into(), inventory_value(inv));
    m
}

/// A host's own part of its context: its variables at top level, plus `host` (all but
/// `inventory`, which is the same for every host: see [`inventory_value`]).
pub fn host_context(
    inv: &Inventory,
    host: &Host,
    pb: &Playbook,
    extra: &[(String, String)],
) -> Map<String, Value> {
    let mut m = host_vars(inv, host, pb, extra);
    m.insert(
        "host".into(),
        serde_json::json!({
            "name": host.name,
            "address": host.address,
            "port": host.port,
            "user": host.user,
            "groups": host.groups,
        }),
    );
    m
}

/// A host's variables as the inventory layers them: defaults < its groups < the host.
fn inventory_vars(inv: &Inventory, host: &Host) -> Map<String, Value> {
    let mut m = table_to_json(&inv.default_vars);
    for g in &host.groups {
        if let Some(group) = inv.groups.get(g) {
            m.extend(table_to_json(&group.vars));
        }
    }
    m.extend(table_to_json(&host.vars));
    m
}

/// The `inventory` variable: every host (name, address, port, groups, vars) and every group's
/// members. A host's `vars` are as the inventory sets them for it (defaults < its groups < the
/// host; not the playbook's or `-e`): what another host publishes, e.g. the port its group
/// serves on. Built once per run and shared: a copy per host would grow with the square of the
/// fleet.
pub fn inventory_value(inv: &Inventory) -> Value {
    let hosts: Map<String, Value> = inv
        .hosts
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                serde_json::json!({"name": h.name, "address": h.address, "port": h.port, "groups": h.groups, "vars": inventory_vars(inv, h)}),
            )
        })
        .collect();
    let mut groups: Map<String, Value> = inv
        .groups
        .keys()
        .map(|g| (g.clone(), Value::from(inv.group_members(g))))
        .collect();
    groups.insert("all".into(), Value::from(inv.group_members("all")));
    serde_json::json!({"hosts": hosts, "groups": groups})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn precedence() {
        let inv = Inventory::parse(
            Path::new("i.toml"),
            r#"
[defaults]
vars = { a = "defaults", b = "defaults", c = "defaults", d = "defaults", e = "defaults", f = "defaults" }
[groups.g1]
vars = { b = "g1", c = "g1", d = "g1", e = "g1", f = "g1" }
[groups.g2]
vars = { c = "g2", d = "g2", e = "g2", f = "g2" }
[hosts.h]
groups = ["g1", "g2"]
vars = { d = "host", e = "host", f = "host" }
"#,
        )
        .unwrap();
        let pb = Playbook::parse(
            Path::new("p.toml"),
            "name = \"p\"\n[defaults]\na = \"pb-default\"\nz = \"pb-default\"\n[vars]\ne = \"playbook\"\nf = \"playbook\"\n",
        )
        .unwrap();
        let extra = vec![("f".to_string(), "cli".to_string())];
        let v = host_vars(&inv, &inv.hosts[0], &pb, &extra);
        for (k, want) in [
            ("a", "defaults"),
            ("b", "g1"),
            ("c", "g2"),
            ("d", "host"),
            ("e", "playbook"),
            ("f", "cli"),
            ("z", "pb-default"),
        ] {
            assert_eq!(v[k], want, "{k}");
        }
        let ctx = context(&inv, &inv.hosts[0], &pb, &extra);
        assert_eq!(ctx["inventory"]["groups"]["g1"], serde_json::json!(["h"]));
        assert_eq!(ctx["host"]["name"], "h");
        // Another host sees this one's variables as the inventory layers them (what its groups
        // publish, e.g. a port), without the playbook's and `-e`.
        let seen = &ctx["inventory"]["hosts"]["h"]["vars"];
        for (k, want) in [
            ("a", "defaults"),
            ("b", "g1"),
            ("c", "g2"),
            ("d", "host"),
            ("e", "host"),
        ] {
            assert_eq!(seen[k], want, "{k}");
        }
        assert_eq!(seen["f"], "host", "-e is this run's, not the host's");
    }

    #[test]
    fn extra_vars() {
        assert_eq!(parse_extra("v=1.10").unwrap(), ("v".into(), "1.10".into()));
        assert_eq!(parse_extra("v=a=b").unwrap(), ("v".into(), "a=b".into()));
        assert!(parse_extra("novalue").is_err());
        assert!(parse_extra("bad-name=1").is_err());
    }
}
