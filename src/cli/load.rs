//! Loading the inventory and playbook a command names, and selecting its hosts.

use super::*;

pub(super) struct Loaded {
    pub(super) inv: Inventory,
    pub(super) pb: Playbook,
    /// What --tags/--skip-tags/--step selected (None: every step).
    pub(super) selection: Option<Selection>,
}

pub(super) fn load(
    a: &SelectArgs,
    filter: &StepFilter,
    ssh: &crate::inventory::SshConfigChoice,
) -> Result<Loaded, Error> {
    let inv = load_inventory(&a.inventory, ssh);
    let pb_path = match (&a.playbook, &inv) {
        (Some(p), _) => Some(p.clone()),
        (None, Ok(i)) => i.playbook.clone(),
        (None, Err(_)) => Inventory::playbook_hint(&a.inventory),
    };
    let pb = pb_path.as_deref().map(Playbook::load);
    let mut errors = vec![];
    if let Err(e) = &inv {
        errors.extend(e.0.clone());
    }
    if let Some(Err(e)) = &pb {
        errors.extend(e.0.clone());
    }
    if !errors.is_empty() {
        return Err(Error::Config(crate::error::ConfigErrors(errors)));
    }
    let inv = inv.expect("checked above");
    let Some(pb) = pb else {
        return Err(Error::Usage(format!(
            "{}: the inventory names no playbook; add `playbook = \"../playbooks/site.toml\"` to it or pass --playbook FILE",
            a.inventory.display()
        )));
    };
    let mut pb = pb.expect("checked above");
    if let Some(t) = &a.task {
        pb = pb.with_task(t).map_err(|e| Error::Usage(e.to_string()))?;
    }
    let selection =
        crate::select::select_steps(&mut pb, filter).map_err(|e| Error::Usage(e.to_string()))?;
    Ok(Loaded { inv, pb, selection })
}

pub(super) fn select<'a>(
    l: &'a Loaded,
    a: &SelectArgs,
) -> Result<Vec<&'a crate::inventory::Host>, Error> {
    let sel = l.inv.select(&l.pb.hosts).map_err(|e| {
        Error::Usage(format!(
            "{}: `hosts = \"{}\"`: {e}",
            l.pb.path.display(),
            l.pb.hosts
        ))
    })?;
    let Some(limit) = &a.limit else {
        return Ok(sel);
    };
    let lim = crate::select::limit(&l.inv, limit).map_err(|e| Error::Usage(e.to_string()))?;
    let out: Vec<_> = sel
        .into_iter()
        .filter(|h| lim.iter().any(|x| x.name == h.name))
        .collect();
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "--limit {limit}: selects none of the playbook's hosts (`{}`)",
            l.pb.hosts
        )));
    }
    Ok(out)
}

/// The hosts `--limit` selects (globs, `!`, `@FILE`), or all of them.
pub(super) fn limited_hosts(
    inv: &Inventory,
    limit: Option<&str>,
    inventory: &Path,
) -> Result<Vec<crate::inventory::Host>, Error> {
    let selected = match limit {
        Some(l) => crate::select::limit(inv, l).map_err(|e| Error::Usage(e.to_string()))?,
        None => inv
            .select("all")
            .map_err(|e| Error::Usage(format!("{}: {e}", inventory.display())))?,
    };
    Ok(selected.into_iter().cloned().collect())
}
