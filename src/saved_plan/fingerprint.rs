//! The fingerprints of a host's plan: of its facts and each step's probe answers (`probed`),
//! and of each step's desired state as rendered offline (`desired`).

use super::Key;
use crate::fact::{HostFacts, Observed, SecretState};
use crate::plan::Probed;
use crate::resource::{Desired, file};
use crate::run::prepare::Prepared;

/// The fingerprints of a host's facts and of each step's probe answers (None: not probed),
/// with what the step takes from another host (`received`: its source and value, or that its
/// source generates it): a value changed on its source is drift of the step that takes it.
pub(crate) fn probed(
    key: &Key,
    facts: &HostFacts,
    observed: &[Option<Vec<Observed>>],
    received: &[Option<Vec<u8>>],
) -> Probed {
    Probed {
        facts: key.digest(&[b"facts", format!("{facts:?}").as_bytes()]),
        steps: observed
            .iter()
            .enumerate()
            .map(|(i, o)| match o {
                None => key.digest(&[b"not probed"]),
                Some(answers) => {
                    let texts: Vec<Vec<u8>> = answers.iter().map(observed_text).collect();
                    let mut parts: Vec<&[u8]> = vec![b"probed"];
                    parts.extend(texts.iter().map(Vec::as_slice));
                    if let Some(Some(r)) = received.get(i) {
                        parts.extend([b"received".as_slice(), r.as_slice()]);
                    }
                    key.digest(&parts)
                }
            })
            .collect(),
    }
}

/// The canonical text of one probe answer: its `Debug` form, and a secret's value (which
/// `Debug` redacts): a secret rewritten on the host is drift of its step.
fn observed_text(o: &Observed) -> Vec<u8> {
    let mut t = format!("{o:?}").into_bytes();
    if let Observed::Secret(SecretState::Present { value, .. }) = o {
        t.push(0);
        t.extend_from_slice(value.expose().as_bytes());
    }
    t
}

/// The canonical text of a step's desired state as rendered offline (stand-in facts and
/// secrets: no secret value), without what depends on the clock (a certificate's warnings).
fn desired_text(d: Option<&Desired>) -> String {
    fn file_text(f: &file::Desired) -> String {
        format!(
            "file {:?} sha256 {} mode {:?} owner {:?} group {:?} {:?} sensitive {}",
            f.path, f.sha256, f.mode, f.owner, f.group, f.state, f.sensitive
        )
    }
    match d {
        None => "not applied (`when` is false)".into(),
        Some(Desired::File(f)) => file_text(f),
        Some(Desired::Cert(c)) => format!(
            "cert {} / {} / {}",
            file_text(&c.cert),
            file_text(&c.key),
            c.summary
        ),
        Some(d) => format!("{d:?}"),
    }
}

/// Per step of a prepared host, the fingerprint of its desired state.
pub(crate) fn desired(key: &Key, p: &Prepared) -> Vec<String> {
    p.steps
        .iter()
        .map(|s| {
            key.digest(&[
                b"desired",
                s.step.name.as_bytes(),
                desired_text(s.probe_desired.as_ref()).as_bytes(),
            ])
        })
        .collect()
}
