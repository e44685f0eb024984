//! `run`: one ad-hoc command on the selected hosts.

use super::load::limited_hosts;
use super::*;
use crate::adhoc::{HostResult, Shown};
use crate::report::prompt::{Passphrases, become_password};

pub(super) fn adhoc(
    a: &AdhocArgs,
    v: Verbosity,
    ssh: &crate::inventory::SshConfigChoice,
) -> Result<Outcome, Error> {
    let command =
        crate::adhoc::command_line(&a.command).map_err(|e| Error::Usage(e.to_string()))?;
    let inv = load_inventory(&a.inventory, ssh).map_err(Error::Config)?;
    let mut hosts = limited_hosts(&inv, a.limit.as_deref(), &a.inventory)?;
    if let Some(b) = a.become_override() {
        hosts.iter_mut().for_each(|h| h.become_ = b);
    }
    let opts = options(a, v, &hosts)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    let start = Instant::now();
    let events = json::Events::default();
    // Whether the live text shown last ended a line.
    let mut at_line_start = true;
    let client = opts.ssh.clone();
    let results = rt.block_on(crate::adhoc::run(hosts, command, opts, |shown| {
        show(a.output, v, &events, &mut at_line_start, shown);
    }));
    let learned = client.take_learned_host_keys();
    summarise(a.output, v, &events, learned, &results, start);
    if results.iter().all(HostResult::ok) {
        Ok(Outcome::Done)
    } else {
        Err(Error::Reported)
    }
}

/// The run's options from the arguments: makes the `--output-dir`, asks for the become
/// password when asked to and some host becomes.
fn options(
    a: &AdhocArgs,
    v: Verbosity,
    hosts: &[crate::inventory::Host],
) -> Result<crate::adhoc::Options, Error> {
    if let Some(d) = &a.output_dir {
        std::fs::create_dir_all(d)
            .map_err(|e| Error::Usage(format!("--output-dir {}: {e}", d.display())))?;
    }
    Ok(crate::adhoc::Options {
        forks: usize::from(a.forks),
        become_password: become_password(a.ask_become_pass && hosts.iter().any(|h| h.become_))?,
        ssh: crate::ssh::Client::new(Arc::new(Passphrases::default())),
        timeout: a.timeout,
        output_limit: a.output_limit.unwrap_or(crate::adhoc::DEFAULT_OUTPUT_LIMIT),
        output_dir: a.output_dir.clone(),
        live: a.output == Format::Text && v > Verbosity::Quiet,
    })
}

/// Shows what the run delivers: each host's block (text; `-q`: failed hosts only) or `host`
/// event (JSON), and the live host's output as it arrives (text). `at_line_start`: whether
/// the text shown last ended a line.
fn show(
    format: Format,
    v: Verbosity,
    events: &json::Events,
    at_line_start: &mut bool,
    shown: Shown<'_>,
) {
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
            crate::adhoc::live_end(result, *at_line_start)
        }
        (Format::Text, Shown::Done { result, .. }) => crate::adhoc::text_block(result),
    };
    if !text.is_empty() {
        *at_line_start = text.ends_with('\n');
    }
    report::out_now(&text);
}

/// The end of the run: the host keys learned on the way and the summary (text table, or
/// `host_key_learned` and `summary` events).
fn summarise(
    format: Format,
    v: Verbosity,
    events: &json::Events,
    mut learned: Vec<(String, String)>,
    results: &[HostResult],
    start: Instant,
) {
    match format {
        Format::Text => report::out(&format!(
            "{}{}",
            text::learned_keys(&mut learned, &[]),
            crate::adhoc::text_summary(results, v > Verbosity::Quiet)
        )),
        Format::Json => {
            for (who, key) in learned {
                events.emit(
                    serde_json::json!({"event": "host_key_learned", "host": who, "key": key}),
                );
            }
            events.emit(crate::adhoc::summary_event(results, start.elapsed()));
        }
    }
}
