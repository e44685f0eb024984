//! A TCP port as a `firewall` step writes it (in `ports` and in a peer's `port`): an integer, or
//! a string that renders to one (`port = "{{ backend_port }}"`). Arguments are rendered before
//! they are deserialised and only strings are templates, so an integer stays an integer; the
//! string is checked once rendered, in [`PortArg::resolve`].

use super::StepError;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortArg {
    /// An integer from 0 to 65535 (0 is refused by [`PortArg::resolve`], with its argument).
    Num(u16),
    /// A string: a template until the step is rendered for a host.
    Text(String),
}

impl<'de> Deserialize<'de> for PortArg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a TCP port: an integer, or a string that renders to one such as \"{{ backend_port }}\"",
            )
        })? {
            Raw::Int(n) => u16::try_from(n).map(PortArg::Num).map_err(|_| {
                serde::de::Error::custom(format!("port {n} is not a TCP port (1 to 65535)"))
            }),
            Raw::Str(s) => Ok(PortArg::Text(s)),
        }
    }
}

impl PortArg {
    /// The port number, or why not; `arg` names the argument (`ports`, `peers`) in the error,
    /// which quotes the rendered string.
    pub fn resolve(&self, arg: &str) -> Result<u16, StepError> {
        let n = match self {
            PortArg::Num(n) => *n,
            PortArg::Text(s) => {
                let t = s.trim();
                t.parse::<u16>()
                    .ok()
                    .filter(|_| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        StepError::arg(format!(
                            "`{arg}`: port \"{s}\" (as rendered) is not a TCP port: an integer from 1 to 65535"
                        ))
                    })?
            }
        };
        if n == 0 {
            return Err(StepError::arg(format!("`{arg}`: port 0 is not a TCP port")));
        }
        Ok(n)
    }
}
