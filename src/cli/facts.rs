//! `facts`: what the probe sees on each host, as one JSON document.

use super::load::limited_hosts;
use super::*;
use crate::report::prompt::{Passphrases, become_password};

pub(super) fn facts(
    a: &FactsArgs,
    ssh: &crate::inventory::SshConfigChoice,
) -> Result<Outcome, Error> {
    let inv = load_inventory(&a.inventory, ssh).map_err(Error::Config)?;
    let hosts = limited_hosts(&inv, a.limit.as_deref(), &a.inventory)?;
    let opts = crate::facts::Options {
        forks: usize::from(a.forks),
        become_password: become_password(a.ask_become_pass && hosts.iter().any(|h| h.become_))?,
        ssh: crate::ssh::Client::new(Arc::new(Passphrases::default())),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    let client = opts.ssh.clone();
    let reports = rt.block_on(crate::facts::gather(hosts, opts));
    write_stdout(crate::facts::document(&reports).as_bytes())?;
    // stdout is the JSON document: new host keys (accept-new) are told on stderr.
    report::err(&text::learned_keys(
        &mut client.take_learned_host_keys(),
        &[],
    ));
    // A host that did not answer has its entry in the document.
    if reports.iter().all(|r| r.outcome.is_ok()) {
        Ok(Outcome::Done)
    } else {
        Err(Error::Reported)
    }
}
