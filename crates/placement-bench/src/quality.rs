//! Part (b)(i): from a random placement, rebalance with the engine and with
//! the network-blind baseline; compare the network cost after.

use crate::rebalance::{self, Rebalance};
use crate::synth::{self, Kind};
use duplex_core::placement::rebalance::incoming_order;
use duplex_core::placement::{Cluster, Engine, NetworkCost, Params};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Arm {
    pub cost: NetworkCost,
    pub rebalance: Rebalance,
}

#[derive(Debug, Clone, Serialize)]
pub struct QualityRow {
    pub fabric: &'static str,
    pub hosts: usize,
    pub vms: usize,
    pub groups: usize,
    pub initial: NetworkCost,
    /// Engine, default parameters.
    pub engine: Arm,
    /// Nova-style RAM weigher, same filters.
    pub blind: Arm,
    /// 1 - engine / blind, cross-rack bytes/s.
    pub cross_rack_reduction_vs_blind: f64,
    /// 1 - engine / blind, traffic x distance.
    pub traffic_hops_reduction_vs_blind: f64,
    pub cross_rack_reduction_vs_initial: f64,
}

fn reduction(ours: f64, theirs: f64) -> f64 {
    if theirs > 0.0 {
        1.0 - ours / theirs
    } else {
        0.0
    }
}

pub fn run(kind: Kind, target: usize, seed: u64, passes: usize) -> anyhow::Result<QualityRow> {
    let s = synth::cluster(kind, target, seed)?;
    let cluster = Cluster::new(&s.state, &s.topo)?;
    let mut ours = Engine::from_cluster(&s.topo, cluster.clone(), &s.traffic, Params::default())?;
    let mut blind = Engine::from_cluster(&s.topo, cluster, &s.traffic, Params::default())?;
    let initial = ours.network_cost();
    // Most incoming traffic first (claims 3-4), the same order for both arms.
    let order = incoming_order(&ours);
    let re = rebalance::engine(&mut ours, &order, passes, true);
    let rb = rebalance::blind(&mut blind, &order, passes);
    let (ce, cb) = (ours.network_cost(), blind.network_cost());
    Ok(QualityRow {
        fabric: kind.as_str(),
        hosts: ours.cluster().host_count(),
        vms: ours.cluster().vm_count(),
        groups: s.groups,
        initial,
        cross_rack_reduction_vs_blind: reduction(ce.cross_rack_bps, cb.cross_rack_bps),
        traffic_hops_reduction_vs_blind: reduction(ce.traffic_hops, cb.traffic_hops),
        cross_rack_reduction_vs_initial: reduction(ce.cross_rack_bps, initial.cross_rack_bps),
        engine: Arm {
            cost: ce,
            rebalance: re,
        },
        blind: Arm {
            cost: cb,
            rebalance: rb,
        },
    })
}
