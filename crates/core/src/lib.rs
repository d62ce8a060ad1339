//! Pure domain model and decisions of Duplex. Nothing here does I/O: the
//! shell (agent, controller, CLI) executes what these types describe.

pub mod agent_api;
pub mod classify;
pub mod console_session;
pub mod epoch;
pub mod escalation;
pub mod file_rule;
pub mod guest_proto;
pub mod guest_watch;
pub mod identity;
pub mod ledger;
pub mod mac;
pub mod model;
pub mod pair_lifecycle;
pub mod pair_migration;
pub mod placement;
pub mod replica_key;
pub mod role;
pub mod service_data;
pub mod site;
pub mod site_policy;
pub mod site_switch;
pub mod switchover;
pub mod user_data;
pub mod vm_spec;
