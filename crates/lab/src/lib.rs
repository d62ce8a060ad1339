//! The lab: several Duplex hosts on one machine, in network namespaces.
//!
//! One flat L2 segment `10.<i>.0.0/24` (see `docs/conventions.md`):
//! a switch namespace `<lab>-sw` with bridge `br0`; per host a namespace
//! `<lab>-h<n>` with its own `br0` (agent address, VM taps) uplinked to the
//! switch; a client namespace `<lab>-client`; and the veth `<lab>mgmt` in the
//! root namespace (10.i.0.1) through which the CLI reaches the agents.
//!
//! With `--sites 2` the hosts are split over two sites, each with its own
//! switch and client (site b: `<lab>-swb`, `<lab>-clientb`); the switches
//! also route, over a WAN veth with netem delay and loss ([`wan`]), the
//! addresses of the other site. The management link stays on site a.
//!
//! - [`LabPlan`]: names and addresses, pure.
//! - [`up`], [`down`], [`status`]: the lab's life cycle; state lives in
//!   `/run/duplex/lab-<lab>/state.json` ([`LabState`]).
//! - [`netns_command`]: run something inside a lab namespace.
//!
//! Everything that changes the system needs root.

mod agent;
mod controller;
pub mod demo;
mod down;
mod error;
pub mod fault;
mod ip;
pub mod ledger_probe;
mod lock;
mod netns;
pub mod pki;
mod plan;
pub mod probe;
mod procs;
mod state;
mod status;
pub mod switch;
mod topology;
mod up;
pub mod wan;
pub mod wan_relay;

pub use controller::{topology_json, ControllerState, EtcdState, LabStore, CONTROLLER_PORT};
pub use down::{down, DownReport, KilledProcess};
pub use error::LabError;
pub use netns::netns_command;
pub use plan::{
    lab_index, validate_lab_name, HostPlan, LabPlan, Site, WanSettings, AGENT_PORT, BRIDGE,
    DEFAULT_LAB, DEFAULT_LAB_INDEX, DEFAULT_WAN_RTT_MS, MAX_HOSTS, MAX_INDEX, MAX_SITES, MAX_VM,
    MAX_VM_TWO_SITES, MAX_WAN_RTT_MS, MIN_INDEX, RUN_DIR,
};
pub use state::{AgentState, LabPhase, LabState, SiteState};
pub use status::{status, AgentStatus, LabHealth, LabStatus, NsStatus};
pub use up::{up, UpOptions};
