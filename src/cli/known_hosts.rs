//! `known-hosts`: scan and pin the hosts' keys.

use super::load::limited_hosts;
use super::*;
use crate::report::prompt::Passphrases;

pub(super) fn fleet_keys(
    a: &KnownHostsArgs,
    ssh: &crate::inventory::SshConfigChoice,
) -> Result<Outcome, Error> {
    let inv = load_inventory(&a.inventory, ssh).map_err(Error::Config)?;
    let hosts = limited_hosts(&inv, a.limit.as_deref(), &a.inventory)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    let client = crate::ssh::Client::new(Arc::new(Passphrases::default()));
    let reports = rt.block_on(crate::fleet_keys::scan(
        hosts,
        usize::from(a.forks),
        a.pin,
        &client,
    ));
    // Jump hosts' keys recorded on the way (accept-new).
    let mut learned = client.take_learned_host_keys();
    match a.output {
        Format::Text => {
            report::out(&crate::fleet_keys::text(&reports, a.pin));
            report::err(&text::learned_keys(&mut learned, &[]));
        }
        Format::Json => {
            let ev = json::Events::default();
            for r in &reports {
                ev.emit(crate::fleet_keys::json(r));
            }
            for (who, key) in learned {
                ev.emit(serde_json::json!({"event": "host_key_learned", "host": who, "key": key}));
            }
        }
    }
    if reports.iter().any(|r| r.state.is_problem()) {
        Err(Error::Reported)
    } else {
        Ok(Outcome::Done)
    }
}
