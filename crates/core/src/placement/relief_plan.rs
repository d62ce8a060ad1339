//! What one relief pass does for the hosts [`super::relief`] found due
//! (the seed's rule, claims 3-4): each gives up the VM with the most
//! incoming traffic that can go somewhere and is not resting after a move,
//! to the host with the least impact factor among those that stay below
//! the low mark with the VM's measured use added ([`super::headroom`]; a
//! target pushed over it would give the VM back). Each move is booked in
//! the engine and in the headroom, so the next host's choice sees it.
//!
//! Pure: the engine (built with hosts above the low mark `Loaded`), the
//! measured headroom, the hosts due and the resting VMs in; the steps out.
//! How each VM moves (an ACT the S1 way) is [`crate::model::move_way`]'s
//! to say, in the shell.

use super::cluster::HostState;
use super::engine::{Engine, PlacementError};
use super::explain::Decision;
use super::headroom::Headroom;
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
            n => format!(
                "the most incoming traffic of its VMs that can move now; {n} receiving more cannot"
            ),
        };
        format!(
            "{} is at {:.0} % of its capacity: moving {} ({}: {}/s) to {}, the host with the least impact factor of those it leaves below the low mark ({}{stay})",
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
    /// VMs no other host can take now (filters, or its measured load
    /// would reach the low mark).
    pub fit_nowhere: usize,
}

impl Stuck {
    pub fn why(&self) -> String {
        format!(
            "{} is at {:.0} % of its capacity but none of its VMs can move now: {} resting after a move, {} fit on no other host below the low mark",
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

/// Targets a VM may be refused for their measured load before it counts
/// as fitting nowhere (each costs one decision).
pub const MAX_TARGET_TRIES: usize = 16;

/// What a pass weighs moves against.
pub struct Pass<'a> {
    pub headroom: &'a mut Headroom,
    /// The policy's low mark: no target is loaded to it or above.
    pub low: f64,
    /// VMs left where they are.
    pub resting: &'a BTreeSet<String>,
}

/// The steps for `due` (most loaded first).
pub fn plan(engine: &mut Engine, due: &[Due], pass: Pass) -> Result<Vec<Step>, PlacementError> {
    let mut pass = pass;
    let mut steps = Vec::with_capacity(due.len());
    for d in due {
        steps.push(relieve(engine, d, &mut pass)?);
    }
    Ok(steps)
}

fn relieve(engine: &mut Engine, due: &Due, pass: &mut Pass) -> Result<Step, PlacementError> {
    let (mut rest, mut nowhere) = (0, 0);
    for (vm, incoming_bps) in engine.vms_by_incoming(&due.host)? {
        if pass.resting.contains(&vm) {
            rest += 1;
            continue;
        }
        let Some(decision) = target(engine, &vm, pass)? else {
            nowhere += 1;
            continue;
        };
        engine.apply(&vm, &decision.to)?;
        pass.headroom.book(&vm, &decision.to);
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

/// The engine's choice for `vm` among hosts that stay below the low mark
/// with it; `None` when there is none (within [`MAX_TARGET_TRIES`]).
fn target(engine: &mut Engine, vm: &str, pass: &Pass) -> Result<Option<Decision>, PlacementError> {
    let mut refused: Vec<String> = Vec::new();
    let found = loop {
        match engine.decide(vm) {
            Ok(d)
                if pass
                    .headroom
                    .peak_after(vm, &d.to)
                    .is_none_or(|p| p < pass.low) =>
            {
                break Some(d)
            }
            Ok(d) if refused.len() < MAX_TARGET_TRIES => {
                // Out of the choice for this VM only: restored below.
                engine.set_host_state(&d.to, HostState::Loaded)?;
                refused.push(d.to);
            }
            Ok(_) | Err(PlacementError::NoHostFits { .. }) => break None,
            Err(e) => return Err(e),
        }
    };
    for h in refused {
        // Only ready hosts are chosen.
        engine.set_host_state(&h, HostState::Ready)?;
    }
    Ok(found)
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
    use crate::placement::headroom::VmUse;
    use crate::placement::params::Params;
    use crate::placement::topology::Topology;
    use crate::placement::traffic::TrafficMatrix;

    fn topo() -> Topology {
        Topology::two_by_two()
    }

    /// r0-h0 holds a, b, c; a's peer is on r1-h0. Hosts have room for
    /// `room` more vCPUs each.
    fn state(topo: &Topology, room: u32) -> ClusterState {
        let vms = [
            ("a", "r0-h0"),
            ("b", "r0-h0"),
            ("c", "r0-h0"),
            ("p", "r1-h0"),
        ];
        let hosts = topo
            .host_names()
            .iter()
            .map(|name| {
                let name = name.clone();
                let on = vms.iter().filter(|(_, h)| *h == name).count() as u32;
                HostInfo::ready(&name, (on + room, 1 << 20), (on, u64::from(on)))
            })
            .collect();
        let vms = vms
            .iter()
            .map(|(n, h)| VmInfo::placed(n, Some(h), 1, 1))
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

    /// No measurement: every target fits.
    fn plan_unmeasured(
        e: &mut Engine,
        due: &[Due],
        resting: &BTreeSet<String>,
    ) -> Result<Vec<Step>, PlacementError> {
        let mut headroom = Headroom::default();
        let pass = Pass {
            headroom: &mut headroom,
            low: 0.7,
            resting,
        };
        plan(e, due, pass)
    }

    fn measured(t: &Topology, vms: &[(&str, &str, f64)]) -> Headroom {
        let cap = crate::agent_api::HostCapacity {
            vcpus: 10,
            memory_mib: 1 << 20,
        };
        let hosts: Vec<(String, _)> = t.host_names().iter().map(|h| (h.clone(), cap)).collect();
        let vms = vms.iter().map(|(vm, host, cpu)| VmUse {
            vm: vm.to_string(),
            host: host.to_string(),
            cpu: *cpu,
            mem_mib: 0,
        });
        Headroom::new(&hosts, vms)
    }

    #[test]
    fn the_vm_receiving_most_goes_next_to_its_peer() {
        let t = topo();
        let mut e = Engine::new(&t, &state(&t, 4), &traffic(), Params::default()).unwrap();
        let steps = plan_unmeasured(&mut e, &[due("r0-h0")], &BTreeSet::new()).unwrap();
        assert_eq!(moved(&steps[0]), ("a", "r1-h0"));
        let Step::Move(m) = &steps[0] else {
            unreachable!()
        };
        assert_eq!((m.incoming_bps, m.passed_over), (9e6, 0));
        assert!(m.why().contains("moving a"), "{}", m.why());
        assert!(m.why().contains("9.0 MB/s"), "{}", m.why());
    }

    #[test]
    fn resting_vms_are_passed_over() {
        let t = topo();
        let mut e = Engine::new(&t, &state(&t, 4), &traffic(), Params::default()).unwrap();
        let resting = BTreeSet::from(["a".to_string()]);
        let steps = plan_unmeasured(&mut e, &[due("r0-h0")], &resting).unwrap();
        assert_eq!(moved(&steps[0]), ("b", "r1-h0"));
        let Step::Move(m) = &steps[0] else {
            unreachable!()
        };
        assert_eq!(m.passed_over, 1);
    }

    #[test]
    fn no_target_is_loaded_to_the_low_mark() {
        let t = topo();
        let mut e = Engine::new(&t, &state(&t, 4), &traffic(), Params::default()).unwrap();
        // a (3 vCPUs) would put its peer's host r1-h0 (4 of 10) at 70 %:
        // it goes to the next best host instead, which keeps its state.
        let mut hr = measured(&t, &[("a", "r0-h0", 3.0), ("p", "r1-h0", 4.0)]);
        let resting = BTreeSet::new();
        let pass = Pass {
            headroom: &mut hr,
            low: 0.7,
            resting: &resting,
        };
        let steps = plan(&mut e, &[due("r0-h0")], pass).unwrap();
        let (vm, to) = moved(&steps[0]);
        assert_eq!(vm, "a");
        assert_ne!(to, "r1-h0");
        assert_eq!(hr.peak(to), Some(0.3));
        let r1h0 = e.cluster().host_ix("r1-h0").unwrap();
        assert_eq!(e.cluster().host_state(r1h0), Some(HostState::Ready));
    }

    #[test]
    fn a_target_takes_no_more_than_keeps_it_below_the_low_mark_in_a_pass() {
        let t = topo();
        let mut s = state(&t, 4);
        // r1-h0 (the peer's host) is the only other ready host.
        for h in &mut s.hosts {
            if h.name != "r0-h0" && h.name != "r1-h0" {
                h.state = HostState::Loaded;
            }
        }
        let mut e = Engine::new(&t, &s, &traffic(), Params::default()).unwrap();
        // After a (1.5 vCPUs), r1-h0 is at 65 %; b or c would take it to 75 %.
        let vms = [
            ("a", "r0-h0", 1.5),
            ("b", "r0-h0", 1.0),
            ("c", "r0-h0", 1.0),
            ("p", "r1-h0", 5.0),
        ];
        let mut hr = measured(&t, &vms);
        let resting = BTreeSet::new();
        let pass = Pass {
            headroom: &mut hr,
            low: 0.7,
            resting: &resting,
        };
        let steps = plan(&mut e, &[due("r0-h0"), due("r0-h0")], pass).unwrap();
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
        let steps = plan_unmeasured(&mut e, &[due("r0-h0")], &resting).unwrap();
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
        assert!(plan_unmeasured(&mut e, &[due("zz")], &BTreeSet::new()).is_err());
    }
}
