//! `run`: one ad-hoc command on the selected hosts.

use super::load::limited_hosts;
use super::*;
use crate::report::prompt::{Passphrases, become_password};

pub(super) fn adhoc(
    a: &AdhocArgs,
    v: Verbosity,
    ssh: &crate::inventory::SshConfigChoice,
) -> Result<Outcome, Error> {
    let command = crate::adhoc::command_line(&a.command).map_err(Error::Usage)?;
    let inv = load_inventory(&a.inventory, ssh).map_err(Error::Config)?;
    let mut hosts = limited_hosts(&inv, a.limit.as_deref(), &a.inventory)?;
    if let Some(b) = a.become_override() {
        hosts.iter_mut().for_each(|h| h.become_ = b);
    }
    if let Some(d) = &a.output_dir {
        std::fs::create_dir_all(d)
            .map_err(|e| Error::Usage(format!("--output-dir {}: {e}", d.display())))?;
    }
    let opts = crate::adhoc::Options {
        forks: usize::from(a.forks),
        become_password: become_password(a.ask_become_pass && hosts.iter().any(|h| h.become_))?,
        ssh: crate::ssh::Client::new(Arc::new(Passphrases::default())),
        timeout: a.timeout,
        output_limit: a.output_limit.unwrap_or(crate::adhoc::DEFAULT_OUTPUT_LIMIT),
        output_dir: a.output_dir.clone(),
        live: a.output == Format::Text && v > Verbosity::Quiet,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    let start = Instant::now();
    let events = json::Events::default();
    let format = a.output;
    // Whether the live text shown last ended a line.
    let mut at_line_start = true;
    let client = opts.ssh.clone();
    let results = rt.block_on(crate::adhoc::run(hosts, command, opts, |shown| {
        use crate::adhoc::Shown;
        let text = match (format, shown) {
            (Format::Json, Shown::Done { result, .. }) => {
                events.emit(crate::adhoc::host_event(result));
                return;
            }
            (Format::Json, _) => return,
            (Format::Text, Shown::LiveHeader(name, address)) => {
                crate::adhoc::live_header(name, address)
            }
            (Format::Text, Shown::Live(t)) => t.to_string(),
            // -q: only the hosts where the command failed
            (Format::Text, Shown::Done { result, .. }) if v == Verbosity::Quiet && result.ok() => {
                return;
            }
            (Format::Text, Shown::Done { result, live: true }) => {
                crate::adhoc::live_end(result, at_line_start)
            }
            (Format::Text, Shown::Done { result, .. }) => crate::adhoc::text_block(result),
        };
        if !text.is_empty() {
            at_line_start = text.ends_with('\n');
        }
        report::out_now(&text);
    }));
    let mut learned = client.take_learned_host_keys();
    match format {
        Format::Text => report::out(&format!(
            "{}{}",
            text::learned_keys(&mut learned, &[]),
            crate::adhoc::text_summary(&results, v > Verbosity::Quiet)
        )),
        Format::Json => {
            for (who, key) in learned {
                events.emit(
                    serde_json::json!({"event": "host_key_learned", "host": who, "key": key}),
                );
            }
            events.emit(crate::adhoc::summary_event(&results, start.elapsed()));
        }
    }
    if results.iter().all(crate::adhoc::HostResult::ok) {
        Ok(Outcome::Done)
    } else {
        Err(Error::Reported)
    }
}
