//! Network-aware placement (design S4, US8423646B2): choose where a VM goes
//! so that its traffic crosses as little network as possible and moving it
//! costs little, among the hosts that can take it.
//!
//! - [`topology`]: hosts in a network (leaf-spine, fat-tree, explicit graph),
//!   O(1) distance and path queries;
//! - [`traffic`]: the measured traffic matrix, EWMA-smoothed from the
//!   agents' per-peer counters;
//! - [`cluster`]: hosts and VMs as placement sees them, validated;
//! - [`precopy`]: bytes a pre-copy live migration moves;
//! - [`params`]: weights and limits;
//! - [`engine`]: filters, impact factor, decision, VM selection;
//! - [`explain`]: the answers, including the per-host explanation;
//! - [`rebalance`]: a cluster rebalanced as a sequence of single-VM moves;
//! - [`exact`]: a small talking group placed exactly (branch and bound);
//! - [`load`]: hosts' CPU and memory shares and racks' uplink bytes, measured;
//! - [`relief`]: when an overloaded host gives up a VM (trigger, hysteresis);
//! - [`relief_plan`]: which VM it gives up and where it goes;
//! - [`headroom`]: what a move does to the measured loads;
//! - [`rng`]: a deterministic PRNG for tests and synthetic clusters.
//!
//! Pure: no I/O, no clock, no OS randomness. Same inputs, same decisions.

pub mod cluster;
pub mod engine;
pub mod exact;
pub mod explain;
pub mod headroom;
pub mod load;
pub mod params;
pub mod precopy;
pub mod rebalance;
pub mod relief;
pub mod relief_plan;
pub mod rng;
pub mod topology;
pub mod traffic;

#[cfg(test)]
mod tests;

pub use cluster::{Cluster, ClusterError, ClusterState, HostInfo, HostIx, HostState, VmInfo, VmIx};
pub use engine::{Engine, PlacementError};
pub use explain::{Choice, Decision, Explanation, Factor, Filter, Mode, NetworkCost, Verdict};
pub use params::Params;
pub use rebalance::{rebalance, Plan, RebalanceOptions};
pub use topology::{FatTree, LeafSpine, Topology, TopologyConfig, TopologyError};
pub use traffic::{TrafficMatrix, TrafficSampler};
