//! What a host that takes values kept on other hosts knows of them after phase 2 ([`Taken`]),
//! and what its apply needs to render again once the pending ones exist ([`Late`]).

use crate::fact::HostFacts;
use crate::resource::secret::Given;
use crate::secret::Secret;

/// The values a host takes from others, as phase 2 found them.
#[derive(Debug, Clone, Default)]
pub(in crate::run) struct Taken {
    /// The values the host kept itself for them (replaced; masked all the same).
    pub(in crate::run) own: Vec<(String, Secret)>,
    /// Per step that takes a value that exists: that value and its source.
    pub(in crate::run) given: Vec<(usize, Given)>,
    /// The steps whose value its source generates in this run: (step, secret, source).
    pub(in crate::run) pending: Vec<(usize, String, String)>,
}

/// What the apply needs to render again once the values generated on other hosts exist.
pub(in crate::run) struct Late {
    pub(in crate::run) facts: HostFacts,
    /// The host's secrets, with stand-ins for the pending values.
    pub(in crate::run) secrets: Vec<(String, Secret)>,
    /// What the mask hides beside `secrets`: the sudo password, the values replaced.
    pub(in crate::run) extra: Vec<(String, Secret)>,
    pub(in crate::run) generated: Vec<(String, Secret)>,
    pub(in crate::run) taken: Taken,
}

impl Taken {
    /// What a late render needs (None: no value is pending): the host's facts, its secrets
    /// (with stand-ins for the pending values), the sudo password, the secrets generated here.
    pub(in crate::run) fn late(
        &self,
        facts: &HostFacts,
        secrets: &[(String, Secret)],
        become_pw: &[(String, Secret)],
        generated: &[(String, Secret)],
    ) -> Option<Box<Late>> {
        if self.pending.is_empty() {
            return None;
        }
        Some(Box::new(Late {
            facts: facts.clone(),
            secrets: secrets.to_vec(),
            extra: [become_pw, &self.own].concat(),
            generated: generated.to_vec(),
            taken: self.clone(),
        }))
    }

    /// Per step of `n`: what a saved plan binds of the value it takes (its source host and
    /// value, or that its source generates it; not how it was read, which differs between a
    /// plan and an apply in batches), None for the others.
    pub(in crate::run) fn received(&self, n: usize, links: &super::Links) -> Vec<Option<Vec<u8>>> {
        let mut out = vec![None; n];
        for (i, g) in &self.given {
            let source = (links.shared.iter().find(|s| s.step == *i)).map_or("", |s| &s.source);
            let mut b = format!("from {source}\0").into_bytes();
            b.extend_from_slice(g.value.expose().as_bytes());
            out[*i] = Some(b);
        }
        for (i, _, source) in &self.pending {
            out[*i] = Some(format!("generated on {source}").into_bytes());
        }
        out
    }
}
