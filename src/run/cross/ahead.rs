//! Reading a source ahead, read only: a source that is not a host of the run (`--limit`), or
//! that connects only in a later batch than a host that takes its value, is contacted on a
//! connection of its own that only reads the files of the values it keeps (no lock, no change,
//! no facts), and its answer is published as its own would be.

use super::exchange::Answer;
use crate::fact::{Observed, ProbeScript, Request, SecretState};
use crate::inventory::Host;
use crate::run::mask::Mask;
use crate::run::probe::run_probe;
use crate::run::{Ctx, Prepared};
use crate::secret::Secret;
use std::sync::Arc;

/// Starts a task for each source to read ahead (`ahead`: `exchange::read_ahead`'s list).
pub(in crate::run) fn spawn(
    ctx: &Arc<Ctx>,
    prepared: &[Prepared],
    ahead: Vec<(String, String)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let links = ctx.exchange.links();
    ahead
        .into_iter()
        .filter_map(|(name, why)| {
            let host = (links.outside.iter())
                .chain(prepared.iter().map(|p| &p.host))
                .find(|h| h.name == name)?
                .clone();
            let ctx = ctx.clone();
            Some(tokio::spawn(async move {
                // Whatever becomes of the read (even a panic), its takers get an answer.
                let _answers = Answers(&ctx.exchange, &host.name);
                read(&ctx, &host, &why).await;
            }))
        })
        .collect()
}

/// The read-ahead of a source: when it ends, its values still unanswered are failed.
struct Answers<'a>(&'a super::exchange::Exchange, &'a str);

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        self.0.ahead_ended(self.1);
    }
}

/// Reads the values `host` keeps and publishes them; `why` it is read ahead, as plans show it.
async fn read(ctx: &Ctx, host: &Host, why: &str) {
    let shared: Vec<&super::Shared> = (ctx.exchange.links().shared.iter())
        .filter(|s| s.source == host.name)
        .collect();
    let fail = |what: &str| {
        for s in &shared {
            let msg = format!(
                "the value of secret `{}` is kept on {} ({why}), {what}",
                s.name, host.name
            );
            ctx.exchange.publish_ahead(s.step, Answer::Failed(msg));
        }
    };
    let remote = match crate::connect::connect(
        host,
        ctx.opts.become_password.clone(),
        &ctx.opts.ssh,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("which is unreachable: {e}")),
    };
    let mut probe = ProbeScript::default();
    let ids: Vec<Vec<usize>> = (shared.iter())
        .map(|s| {
            vec![probe.add(Request::Secret {
                path: s.path.clone(),
                guard: None,
            })]
        })
        .collect();
    let names: Vec<String> = shared
        .iter()
        .map(|s| format!("secret `{}`", s.name))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let pw: Vec<(String, Secret)> = (ctx.opts.become_password.iter())
        .map(|p| (String::new(), p.clone()))
        .collect();
    let mask = Mask::new(&pw, &[]);
    let timeout = host.command_timeout;
    match run_probe(&remote, &probe, &ids, &names, timeout, false, &mask).await {
        Ok(r) => {
            for (s, id) in shared.iter().zip(&ids) {
                let slot = match &r.observed[id[0]] {
                    Observed::Secret(SecretState::Present { value, .. }) => Answer::Stored {
                        value: value.clone(),
                        from: format!("{} ({why})", host.name),
                    },
                    Observed::Secret(SecretState::Missing { .. }) => Answer::Failed(format!(
                        "secret `{}` does not exist yet on {} ({why}), which keeps it: apply to \
                         {} first",
                        s.name, host.name, host.name
                    )),
                    _ => Answer::Failed(format!(
                        "the file of secret `{}` on {} ({why}) is not a regular file that can be \
                         read safely: {}",
                        s.name, host.name, s.path
                    )),
                };
                ctx.exchange.publish_ahead(s.step, slot);
            }
        }
        Err(e) => fail(&format!(
            "and reading it failed ({}): {}",
            e.at,
            mask.text(&e.error.to_string())
        )),
    }
    remote.session.close().await;
}
