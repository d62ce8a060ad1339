//! What one relief pass does for the hosts [`super::relief`] found due
//! (the seed's rule, claims 3-4): each gives up the VM with the most
//! incoming traffic that can go somewhere and is not resting after a move,
//! to the host with the least impact factor. The engine books each move,
//! so the next host's choice sees it, and a host that receives a VM takes
//! no other in the same pass (its measured load has not caught up yet).
//!
//! Pure: the engine (built with hosts above the low mark `Loaded`), the
//! hosts due and the resting VMs in; the steps out. How each VM moves (an
//! ACT the S1 way) is [`crate::model::move_way`]'s to say, in the shell.

use super::cluster::HostState;
use super::engine::{Engine, PlacementError};
use super::explain::Decision;
use super::relief::Due;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One move a pass books.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Move {
    /// The host relieved, and its load.
    pub host: String,
    pub load: f64,
    /// Bytes/s the VM receives: why it was chosen.
    pub incoming_bps: f64,
    /// VMs of the host that receive more but were passed over.
    pub passed_over: usize,
    /// The engine's decision: the VM, its target and both factors.
    pub decision: Decision,
}

impl Move {
    /// One line for the event: why this VM, why there.
    pub fn why(&self) -> String {
        let d = &self.decision;
        let stay = d
            .stay
            .map(|s| format!(" against {} staying", short(s.total)))
            .unwrap_or_default();
        let first = match self.passed_over {
            0 => "the most incoming traffic of its VMs".to_string(),
            n => format!("the most incoming traffic of its VMs that can move ({n} before it cannot)"),
        };
        format!(
            "{} is at {:.0} % of its capacity: moving {} ({}: {}/s) to {}, the host with the least impact factor ({}{stay})",
            self.host,
            self.load * 100.0,
            d.vm,
            first,
            bytes(self.incoming_bps),
            d.to,
            short(d.factor.total),
        )
    }
}

/// A due host none of whose VMs can move now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stuck {
    pub host: String,
    pub load: f64,
    /// VMs resting after a recent move.
    pub resting: usize,
    /// VMs no other host can take now.
    pub fit_nowhere: usize,
}

impl Stuck {
    pub fn why(&self) -> String {
        format!(
            "{} is at {:.0} % of its capacity but none of its VMs can move now: {} resting after a move, {} fit on no other host",
            self.host,
            self.load * 100.0,
            self.resting,
            self.fit_nowhere
        )
    }
}

/// What a pass does for one due host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Move(Move),
    Stuck(Stuck),
}

/// The steps for `due` (most loaded first), VMs in `resting` left where
/// they are.
pub fn plan(
    engine: &mut Engine,
    due: &[Due],
    resting: &BTreeSet<String>,
) -> Result<Vec<Step>, PlacementError> {
    let mut steps = Vec::with_capacity(due.len());
    for d in due {
        steps.push(relieve(engine, d, resting)?);
    }
    Ok(steps)
}

fn relieve(engine: &mut Engine, due: &Due, resting: &BTreeSet<String>) -> Result<Step, PlacementError> {
    let (mut rest, mut nowhere) = (0, 0);
    for (vm, incoming_bps) in engine.vms_by_incoming(&due.host)? {
        if resting.contains(&vm) {
            rest += 1;
            continue;
        }
        let decision = match engine.decide(&vm) {
            Ok(d) => d,
            Err(PlacementError::NoHostFits { .. }) => {
                nowhere += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        engine.apply(&vm, &decision.to)?;
        engine.set_host_state(&decision.to, HostState::Loaded)?;
        return Ok(Step::Move(Move {
            host: due.host.clone(),
            load: due.load,
            incoming_bps,
            passed_over: rest + nowhere,
            decision,
        }));
    }
    Ok(Step::Stuck(Stuck {
        host: due.host.clone(),
        load: due.load,
        resting: rest,
        fit_nowhere: nowhere,
    }))
}

/// A factor in three significant digits.
fn short(v: f64) -> String {
    format!("{v:.3e}")
}

/// Bytes in kB/MB/GB, for people.
fn bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::cluster::{ClusterState, HostInfo, VmInfo};
    use crate::placement::params::Params;
    use crate::placement::topology::{LeafSpine, Topology};
    use crate::placement::traffic::TrafficMatrix;

    fn topo() -> Topology {
        Topology::leaf_spine(&LeafSpine {
            racks: 2,
            hosts_per_rack: 2,
            spines: 2,
            link_gbps: 100.0,
        })
        .unwrap()
    }

    /// r0-h0 holds a, b, c; a's peer is on r1-h0. Hosts have room for
    /// `room` more vCPUs each.
    fn state(topo: &Topology, room: u32) -> ClusterState {
        let vms = [("a", "r0-h0"), ("b", "r0-h0"), ("c", "r0-h0"), ("p", "r1-h0")];
        let hosts = topo
            .host_names()
            .iter()
            .map(|name| {
                let name = name.clone();
                let on = vms.iter().filter(|(_, h)| *h == name).count() as u32;
                HostInfo {
                    name,
                    cpu: on + room,
                    mem_mib: 1 << 20,
                    used_cpu: on,
                    used_mem_mib: u64::from(on),
                    state: HostState::Ready,
                    site: "default".into(),
                    migrations_in_flight: 0,
                }
            })
            .collect();
        let vms = vms
            .iter()
            .map(|(n, h)| VmInfo {
                name: (*n).into(),
                host: Some((*h).into()),
                cpu: 1,
                mem_mib: 1,
                dirty_bytes_per_s: 0.0,
                pair_peer: None,
                include: vec![],
                exclude: vec![],
                site: None,
            })
            .collect();
        ClusterState { hosts, vms }
    }

    fn traffic() -> TrafficMatrix {
        let mut m = TrafficMatrix::new();
        m.set_rate("p", "a", 9e6).unwrap();
        m.set_rate("p", "b", 1e6).unwrap();
        m
    }

    fn due(host: &str) -> Due {
        Due {
            host: host.into(),
            load: 0.93,
            over_since_ms: 0,
        }
    }

    fn moved(s: &Step) -> (&str, &str) {
        match s {
            Step::Move(m) => (m.decision.vm.as_str(), m.decision.to.as_str()),
            Step::Stuck(s) => panic!("stuck: {}", s.why()),
        }
    }

    #[test]
    fn the_vm_receiving_most_goes_next_to_its_peer() {
        let t = topo();
        let mut e = Engine::new(&t, &state(&t, 4), &traffic(), Params::default()).unwrap();
        let steps = plan(&mut e, &[due("r0-h0")], &BTreeSet::new()).unwrap();
        assert_eq!(moved(&steps[0]), ("a", "r1-h0"));
        let Step::Move(m) = &steps[0] else { unreachable!() };
        assert_eq!((m.incoming_bps, m.passed_over), (9e6, 0));
        assert!(m.why().contains("moving a"), "{}", m.why());
        assert!(m.why().contains("9.0 MB/s"), "{}", m.why());
    }

    #[test]
    fn resting_vms_are_passed_over() {
        let t = topo();
        let mut e = Engine::new(&t, &state(&t, 4), &traffic(), Params::default()).unwrap();
        let resting = BTreeSet::from(["a".to_string()]);
        let steps = plan(&mut e, &[due("r0-h0")], &resting).unwrap();
        assert_eq!(moved(&steps[0]), ("b", "r1-h0"));
        let Step::Move(m) = &steps[0] else { unreachable!() };
        assert_eq!(m.passed_over, 1);
    }

    #[test]
    fn a_host_that_received_a_vm_takes_no_other_in_the_pass() {
        let t = topo();
        let mut s = state(&t, 4);
        // r1-h0 (the peer's host) is the only other ready host.
        for h in &mut s.hosts {
            if h.name != "r0-h0" && h.name != "r1-h0" {
                h.state = HostState::Loaded;
            }
        }
        let mut e = Engine::new(&t, &s, &traffic(), Params::default()).unwrap();
        let steps = plan(&mut e, &[due("r0-h0"), due("r0-h0")], &BTreeSet::new()).unwrap();
        assert_eq!(moved(&steps[0]), ("a", "r1-h0"));
        match &steps[1] {
            Step::Stuck(st) => assert_eq!((st.resting, st.fit_nowhere), (0, 2)),
            other => panic!("expected stuck, got {other:?}"),
        }
    }

    #[test]
    fn loaded_hosts_take_nothing_and_full_ones_leave_the_host_stuck() {
        let t = topo();
        let mut s = state(&t, 0);
        s.hosts[3].state = HostState::Loaded;
        let mut e = Engine::new(&t, &s, &traffic(), Params::default()).unwrap();
        let resting = BTreeSet::from(["c".to_string()]);
        let steps = plan(&mut e, &[due("r0-h0")], &resting).unwrap();
        let Step::Stuck(st) = &steps[0] else {
            panic!("{steps:?}")
        };
        assert_eq!((st.resting, st.fit_nowhere), (1, 2));
        assert!(st.why().contains("1 resting"), "{}", st.why());
    }

    #[test]
    fn an_unknown_host_is_an_error() {
        let t = topo();
        let mut e = Engine::new(&t, &state(&t, 4), &traffic(), Params::default()).unwrap();
        assert!(plan(&mut e, &[due("zz")], &BTreeSet::new()).is_err());
    }
}
