//! claw-provision: an agentless provisioner. See ARCHITECTURE.md for the code map.

pub mod adhoc;
pub mod cli;
pub mod connect;
pub mod duration;
pub mod error;
pub mod fact;
pub mod facts;
pub mod fleet_keys;
#[doc(hidden)]
pub mod fuzzing;
pub mod inventory;
pub mod plan;
pub mod playbook;
pub mod quote;
pub mod remote;
pub mod report;
pub mod resource;
pub mod rollout;
pub mod run;
pub mod saved_plan;
pub mod secret;
pub mod select;
pub mod ssh;
pub mod template;
pub mod vars;
pub mod version;
