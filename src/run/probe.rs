//! Phases 1–3 of a host: the first probe (and the apply lock), the host's secrets, and the
//! render with its real facts and secrets (probing again the steps whose questions changed),
//! where a step that will run is refused if the host lacks what its kind needs
//! (`resource::kind::Need`); [`run_probe`] runs one probe script.

use super::Mode;
use super::cross::Role;
use super::cross::exchange::Answer;
use super::failure::{HostFailure, StepFailure};
use super::host::{HostRun, HostSecrets, Known, Probed};
use super::mask::Mask;
use super::prepare::{NotRun, full_context};
use crate::fact::lock::LockState;
use crate::fact::{Observed, ProbeError, ProbeScript, Request, SecretState};
use crate::remote::Remote;
use crate::resource::Desired;
use crate::resource::kind::unmet_need;
use crate::secret::Secret;
use std::time::{Duration, Instant};

impl HostRun<'_> {
    /// 1. Probe: the host's facts, the handler journal, the secrets and every step's facts
    ///    (as rendered with stand-ins) in one round trip.
    pub(super) async fn probe(&self) -> Result<Probed, HostFailure> {
        let (ctx, p) = (self.ctx, self.p);
        ctx.observer.phase(self.name, "probing");
        let started = Instant::now();
        let mut probe = ProbeScript::for_host(&p.playbook.name);
        if let (Mode::Apply, Some(holder)) = (ctx.opts.mode, &ctx.opts.lock_holder) {
            probe.take_lock(holder, &ctx.opts.lock_client, ctx.opts.force_unlock);
        }
        let ids: Vec<Vec<usize>> = p
            .steps
            .iter()
            .map(|s| {
                // Rescue steps are probed only when they are needed (after a failure).
                s.probe_desired
                    .as_ref()
                    .filter(|_| !s.step.rescue)
                    .map(|d| d.probe(&mut probe))
                    .unwrap_or_default()
            })
            .collect();
        // The sudo password and the operator secrets are known before the probe (the host's
        // secrets come with its answer): its errors are masked with them.
        let become_pw: Vec<(String, Secret)> = (ctx.opts.become_password.iter())
            .map(|pw| (String::new(), pw.clone()))
            .collect();
        let early = Mask::new(
            &[p.playbook.operator_secrets.as_slice(), &become_pw].concat(),
            &[],
        );
        let first = self.lock(&mut probe, &ids, &early).await?;
        let facts = first.facts.clone().unwrap_or_default();
        Ok(Probed {
            started,
            probe,
            ids,
            first,
            facts,
            become_pw,
        })
    }

    /// Runs the first probe (which takes the apply lock, if asked to): the lock of a lost run
    /// of this machine is taken over, another run's refuses the host.
    async fn lock(
        &self,
        probe: &mut ProbeScript,
        ids: &[Vec<usize>],
        early: &Mask,
    ) -> Result<crate::fact::ProbeResult, HostFailure> {
        let (ctx, remote, names) = (self.ctx, self.remote, &self.names);
        let timeout = self.default_timeout;
        let mut first = run_probe(remote, probe, ids, names, timeout, false, early).await?;
        // A run of this machine whose process is gone still holds the lock when the host's sshd
        // has not noticed its connection is lost (a cut link: until the running command ends, or
        // sshd's ClientAliveInterval). Its run cannot continue: break its lock (ending that dead
        // connection, as --force-unlock does) in one more round trip.
        if let (
            Some(LockState::Held {
                client: Some(c), ..
            }),
            Some(holder),
        ) = (&first.lock, &ctx.opts.lock_holder)
            && !probe.lock_forced()
            && crate::fact::lock::local_client_gone(c)
        {
            ctx.observer.phase(
                self.name,
                "taking over the lock of a lost run of this machine (its process is gone)",
            );
            probe.take_lock(holder, &ctx.opts.lock_client, true);
            first = run_probe(remote, probe, ids, names, timeout, false, early).await?;
        }
        match &first.lock {
            None | Some(LockState::Taken) => {}
            Some(LockState::TakenFrom(who)) => ctx.observer.lock_broken(self.name, who),
            Some(LockState::Held { who, .. }) => {
                let who = who.clone();
                return Err(HostFailure::new("lock", StepFailure::LockHeld { who }));
            }
            Some(LockState::Error(why)) => {
                let why = why.clone();
                return Err(HostFailure::new("lock", StepFailure::Lock { why }));
            }
        }
        Ok(first)
    }

    /// 2. Secrets: read back, or generated now for the ones that do not exist yet; a value
    ///    kept on another host is taken from it (`cross`: waits for its source's probe), and a
    ///    value kept here is published to the hosts that take it.
    pub(super) async fn secrets(&mut self, probed: &Probed) -> Result<HostSecrets, HostFailure> {
        let mut hs = HostSecrets {
            secrets: self.p.playbook.operator_secrets.clone(),
            generated: Vec::new(),
            taken: super::cross::taken::Taken::default(),
            all: Vec::new(),
            mask: Mask::new(&[], &[]),
        };
        for (i, (s, id)) in self.p.steps.iter().zip(&probed.ids).enumerate() {
            let (Some(Desired::Secret(d)), [k, ..]) = (&s.probe_desired, id.as_slice()) else {
                continue;
            };
            let observed = &probed.first.observed[*k];
            match self.p.playbook.links.role(i, self.name) {
                Some(Role::Taker(source)) => {
                    self.take_secret(i, d, source, observed, &mut hs).await?;
                }
                role => self.own_secret(i, d, observed, role.is_some(), &mut hs)?,
            }
        }
        // The sudo password is masked too (a command's error text could echo it), and the
        // values a host that takes its value from another keeps (they are replaced).
        hs.all = [hs.secrets.as_slice(), &probed.become_pw, &hs.taken.own].concat();
        hs.mask = Mask::new(&hs.all, &[]);
        // From here on, a script that holds a secret value goes to the host on stdin.
        self.set_mask(&hs.mask);
        Ok(hs)
    }

    /// A secret kept on this host (step `i`, desired `d`, as the probe saw it): read back, or
    /// generated now; `gives`: it is published to the hosts that take it.
    // The phases share `HostFailure` (large: a `RemoteError`, a `StepError` inside); only a
    // failure builds one.
    #[allow(clippy::result_large_err)]
    fn own_secret(
        &self,
        i: usize,
        d: &crate::resource::secret::Desired,
        observed: &Observed,
        gives: bool,
        hs: &mut HostSecrets,
    ) -> Result<(), HostFailure> {
        let s = &self.p.steps[i];
        match observed {
            Observed::Secret(SecretState::Present { value, .. }) => {
                hs.secrets.push((d.name.clone(), value.clone()));
                if gives {
                    let (value, from) = (value.clone(), self.name.to_string());
                    self.ctx.exchange.publish(i, Answer::Stored { value, from });
                }
            }
            Observed::Secret(SecretState::Missing { guarded: false }) => {
                let v = d
                    .generate()
                    .map_err(|e| HostFailure::new(&s.step.name, e))?;
                hs.secrets.push((d.name.clone(), v.clone()));
                hs.generated.push((d.name.clone(), v));
                if gives {
                    self.ctx.exchange.publish(i, Answer::Generating);
                }
            }
            // Guarded or blocked: the step's own error says why (before templates that
            // use the secret fail for want of it).
            Observed::Secret(obs) => {
                if let Err(e) = d.diff(obs) {
                    return Err(HostFailure::new(&s.step.name, e));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// 3. Render with the real facts and secrets; re-probe the steps whose questions changed.
    pub(super) async fn render(
        &mut self,
        probed: &Probed,
        secrets: &HostSecrets,
    ) -> Result<Known, HostFailure> {
        let p = self.p;
        // (The full context lives only for the render: a fleet's contexts are not all kept.)
        let full = full_context(
            &p.base,
            &p.playbook.inventory,
            &probed.facts,
            &secrets.secrets,
        );
        let rendered = super::prepare::render(&p.steps, &p.playbook, &full, true);
        drop(full);
        let mut rendered = rendered.map_err(|es| self.render_failure(&es, &secrets.mask))?;
        // Every text a secret flowed into is shown as its marker rendering from now on, and a
        // script holding one goes to the host on stdin (the steps it belongs to are private too).
        let mask = Mask::new(&secrets.all, &rendered.found);
        self.set_mask(&mask);
        // The steps a value still to be generated on another host flows into: known after
        // its apply.
        let awaits = self.awaits(probed, secrets, &rendered);
        let tainted: Vec<bool> = rendered.tainted.iter().map(|t| !t.is_empty()).collect();
        let (desired, skip) = desired_states(
            std::mem::take(&mut rendered.steps),
            &secrets.generated,
            &secrets.taken.given,
        );
        // What the steps that run here need from the host (apt, systemd, ...), before any change.
        for (s, d) in p.steps.iter().zip(&desired) {
            if let (Some(_), Some(why)) = (d, unmet_need(s.step.kind, &probed.facts)) {
                return Err(HostFailure::new(&s.step.name, StepFailure::Unmet { why }));
            }
        }
        let observed = self.probe_again(probed, &desired, &tainted, &mask).await?;
        Ok(Known {
            mask,
            rendered,
            tainted,
            desired,
            skip,
            observed,
            awaits,
            received: (secrets.taken).received(p.steps.len(), &p.playbook.links),
            late: (secrets.taken).late(
                &probed.facts,
                &secrets.secrets,
                &probed.become_pw,
                &secrets.generated,
            ),
        })
    }

    /// The failure of a render that did not go through: its first error (`es`: per step or
    /// handler, numbered after the steps), at that step, masked with `mask`.
    pub(super) fn render_failure(&self, es: &[(usize, String)], mask: &Mask) -> HostFailure {
        let (i, e) = &es[0];
        let at = (self.names.get(*i))
            .map_or_else(|| "handlers".to_string(), std::string::ToString::to_string);
        let why = mask.text(e);
        HostFailure::new(at, StepFailure::Render { why })
    }

    /// The host's answers for each step rendered (`desired`): the first probe's where the
    /// step asks the same questions as it did with stand-ins, else those of a second probe.
    async fn probe_again(
        &self,
        probed: &Probed,
        desired: &[Option<Desired>],
        tainted: &[bool],
        mask: &Mask,
    ) -> Result<Vec<Option<Vec<Observed>>>, HostFailure> {
        let (p, ids, first) = (self.p, &probed.ids, &probed.first);
        let mut observed: Vec<Option<Vec<Observed>>> = vec![None; p.steps.len()];
        let mut again = ProbeScript::default();
        let mut again_ids: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, d) in desired.iter().enumerate() {
            let Some(d) = d else { continue };
            if p.steps[i].step.rescue {
                continue;
            }
            let mut mine = ProbeScript::default();
            let want = d.probe(&mut mine);
            let asked: Vec<&Request> = ids[i]
                .iter()
                .map(|x| &probed.probe.requests()[*x])
                .collect();
            let same = p.steps[i].probe_desired.is_some()
                && asked.len() == want.len()
                && want
                    .iter()
                    .zip(&asked)
                    .all(|(w, a)| &mine.requests()[*w] == *a);
            if same {
                observed[i] = Some(ids[i].iter().map(|x| first.observed[*x].clone()).collect());
            } else {
                again_ids.push((i, d.probe(&mut again)));
            }
        }
        if !again_ids.is_empty() {
            let flat: Vec<Vec<usize>> = (0..p.steps.len())
                .map(|i| {
                    again_ids
                        .iter()
                        .find(|(j, _)| *j == i)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                })
                .collect();
            let private = again_ids.iter().any(|(i, _)| tainted[*i]);
            let (remote, names, timeout) = (self.remote, &self.names, self.default_timeout);
            let second = run_probe(remote, &again, &flat, names, timeout, private, mask).await?;
            for (i, v) in &again_ids {
                observed[*i] = Some(v.iter().map(|x| second.observed[*x].clone()).collect());
            }
        }
        Ok(observed)
    }
}

/// Per step of the render: its desired state (a generated secret given to its `secret` step,
/// a value taken from another host to the step that writes it), or None and the reason it is
/// skipped.
pub(super) fn desired_states(
    steps: Vec<Result<Desired, NotRun>>,
    generated: &[(String, Secret)],
    given: &[(usize, crate::resource::secret::Given)],
) -> (Vec<Option<Desired>>, Vec<String>) {
    let mut desired: Vec<Option<Desired>> = Vec::new();
    let mut skip: Vec<String> = Vec::new();
    for (i, r) in steps.into_iter().enumerate() {
        match r {
            Ok(mut d) => {
                if let Desired::Secret(sd) = &mut d {
                    sd.generated = generated
                        .iter()
                        .find(|(n, _)| *n == sd.name)
                        .map(|(_, v)| v.clone());
                    sd.given = (given.iter())
                        .find(|(j, _)| *j == i)
                        .map(|(_, g)| g.clone());
                }
                desired.push(Some(d));
                skip.push(String::new());
            }
            Err(reason) => {
                desired.push(None);
                skip.push(reason.to_string());
            }
        }
    }
    (desired, skip)
}

/// Runs a probe script and parses its answer; errors name the step whose record was bad.
/// `private`: it asks about a text a secret flowed into (it goes on stdin). A failure is
/// described by its stderr only (its stdout holds the host's secret files), masked with `mask`;
/// a bad answer is kept as a `ProbeError`, masked where the host's failure is shown.
pub(super) async fn run_probe(
    remote: &Remote,
    probe: &ProbeScript,
    ids: &[Vec<usize>],
    names: &[&str],
    timeout: Duration,
    private: bool,
    mask: &Mask,
) -> Result<crate::fact::ProbeResult, HostFailure> {
    let mut script = probe.script();
    if private {
        script = crate::remote::private(&script);
    }
    let out = remote
        .run(&script, &[], timeout)
        .await
        .map_err(|e| HostFailure::new("probe", mask.error(e)))?;
    if !out.success() {
        let why = probe_failure(probe, &out, mask);
        return Err(HostFailure::new("probe", StepFailure::ProbeFailed { why }));
    }
    probe
        .parse(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| {
            let at = match &e {
                ProbeError::Preflight(_) => "preflight".to_string(),
                ProbeError::Output {
                    request: Some(r), ..
                } => ids
                    .iter()
                    .position(|id| id.contains(r))
                    .map_or_else(|| "probe".to_string(), |i| names[i].to_string()),
                ProbeError::Output { request: None, .. } => "probe".to_string(),
            };
            HostFailure::new(at, e)
        })
}

/// A failed probe described by its stderr (its stdout holds the host's secret files), masked
/// with `mask`, then with the secret values it has already printed, shown as `********`
/// (`ProbeScript::secrets_read`: the host's secrets are otherwise learnt from a parsed answer,
/// which a failed probe does not give).
fn probe_failure(probe: &ProbeScript, out: &crate::ssh::ExecOutput, mask: &Mask) -> String {
    let read: Vec<(String, Secret)> = (probe.secrets_read(&out.stdout).into_iter())
        .map(|v| (String::new(), v))
        .collect();
    let text = mask.text(&crate::remote::describe_failure_stderr(out));
    Mask::new(&read, &[]).text(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secret values a probe printed before it failed are masked in its description
    /// (its stderr), in any form, beside the secrets known before (`mask`); its stdout is
    /// never shown. The output is cut inside a second value: the start it holds is masked.
    #[test]
    fn a_failed_probe_is_described_without_the_secrets_it_read() {
        use base64::Engine as _;
        let mut probe = ProbeScript::default();
        for p in ["/srv/a", "/srv/b"] {
            probe.add(crate::fact::Request::Secret {
                path: p.into(),
                guard: None,
            });
        }
        let host = "host-secret-\u{e9}-1234";
        let cut = "second-secret-cut-off-here";
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{host}\n"));
        let od: String = cut.bytes().map(|b| format!(" {b:02x}")).collect();
        let stdout = format!(
            "@fact-os\tlinux\n@0\tpresent\t600 root root\t{b64}\n@secrets\t1\n\
             @secrets-st\t600 root root 26\n@secrets-od\t{}",
            &od[..od.len() - 20]
        );
        let hex: String = host.bytes().map(|b| format!("{b:02x}")).collect();
        let od_host: String = host.bytes().map(|b| format!(" {b:02x}")).collect();
        let stderr = format!(
            "raw {host}\nhex {hex} {}\n{}\nop op-secret-value\ncut {cut}\n",
            hex.to_uppercase(),
            od_host.trim()
        );
        let out = crate::ssh::ExecOutput {
            exit_status: Some(1),
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
            ..Default::default()
        };
        let mask = Mask::new(&[("OP".into(), Secret::new("op-secret-value"))], &[]);
        let why = probe_failure(&probe, &out, &mask);
        assert_eq!(
            why,
            "exit status 1: raw ******** | hex ******** ******** | ******** | \
             op <secret:OP> | cut ********ff-here"
        );
        // Without the records, the same stderr shows the host's secret.
        let bare = crate::ssh::ExecOutput {
            stdout: vec![],
            ..out
        };
        assert!(probe_failure(&probe, &bare, &mask).contains(host));
    }
}
