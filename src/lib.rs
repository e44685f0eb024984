//! claw-provision: an agentless provisioner. See ARCHITECTURE.md for the code map.

pub(crate) mod adhoc;
pub mod cli;
pub(crate) mod connect;
pub(crate) mod duration;
pub mod error;
pub(crate) mod fact;
pub(crate) mod facts;
pub(crate) mod fleet_keys;
#[doc(hidden)]
pub mod fuzzing;
pub mod inventory;
pub(crate) mod plan;
pub mod playbook;
pub mod quote;
pub(crate) mod remote;
pub mod report;
pub(crate) mod resource;
pub(crate) mod rollout;
pub(crate) mod run;
pub(crate) mod saved_plan;
pub(crate) mod secret;
pub(crate) mod select;
pub(crate) mod ssh;
pub mod template;
pub mod vars;
pub(crate) mod version;

/// The inner items that the integration tests (`tests/`) and the benchmarks (`benches/`) reach
/// past the command line: not an API. Listed one by one, so that everything else of `fact`,
/// `resource`, `run` and `ssh` stays inside the crate (`unreachable_pub` holds it there).
#[doc(hidden)]
pub mod testing {
    pub use crate::fact::ProbeScript;
    pub use crate::resource::file::sha256_hex;
    pub use crate::resource::{Desired, Sources, desired};
    pub use crate::run::prepare;
    pub use crate::ssh::KnownHosts;
}
