//! How a running VM may be moved off its host (S1's rule). A pair's ACT
//! moves only by pair migration: its SBY takes over first, so the service
//! never pauses; a plain live migration of an ACT pauses the service for
//! its final copy, which an operator may still choose (`--plain`). An
//! SBY or a lone VM is live-migrated.

use super::{Pair, Vm};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveWay {
    /// Live migration of the VM itself.
    Live,
    /// The VM is `pair`'s ACT: move it by pair migration.
    PairMigration { pair: String },
}

/// How `vm` may move; `pair` is its pair's record if it has one.
pub fn way_to_move(vm: &Vm, pair: Option<&Pair>) -> MoveWay {
    match pair {
        Some(p) if vm.pair.as_deref() == Some(&p.name) && p.act() == vm.spec.name => {
            MoveWay::PairMigration {
                pair: p.name.clone(),
            }
        }
        _ => MoveWay::Live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Desired, PairPhase};
    use crate::pair_lifecycle::Slot;
    use crate::vm_spec::VmSpec;
    use std::net::Ipv4Addr;

    fn vm(name: &str, pair: Option<&str>) -> Vm {
        Vm {
            v: 1,
            spec: VmSpec::new(name, Ipv4Addr::new(10, 0, 0, 2)),
            host: "h1".into(),
            desired: Desired::Running,
            pair: pair.map(str::to_string),
            created_ms: 0,
            restore: None,
            backup: None,
            replica_site: None,
            site_policy: None,
        }
    }

    fn pair(name: &str, [a, b]: [&str; 2]) -> Pair {
        Pair {
            v: 1,
            name: name.into(),
            members: [a.into(), b.into()],
            vip: Ipv4Addr::new(10, 0, 0, 50),
            prefix_len: 24,
            active: Slot::A,
            token: 1,
            phase: PairPhase::Ready,
            created_ms: 0,
            journal: None,
            replica_key: None,
        }
    }

    #[test]
    fn only_the_act_of_its_own_pair_moves_the_pair_way() {
        let mut p = pair("sig", ["a", "b"]);
        p.active = Slot::A;
        let (a, b, lone) = (vm("a", Some("sig")), vm("b", Some("sig")), vm("c", None));
        assert_eq!(
            way_to_move(&a, Some(&p)),
            MoveWay::PairMigration { pair: "sig".into() }
        );
        assert_eq!(way_to_move(&b, Some(&p)), MoveWay::Live, "the SBY");
        assert_eq!(way_to_move(&lone, None), MoveWay::Live);
        // After a switchover the other member is the ACT.
        p.active = Slot::B;
        assert_eq!(way_to_move(&a, Some(&p)), MoveWay::Live);
        assert_ne!(way_to_move(&b, Some(&p)), MoveWay::Live);
        // A record of another pair says nothing about this VM.
        let other = pair("x", ["a", "z"]);
        assert_eq!(way_to_move(&vm("a", None), Some(&other)), MoveWay::Live);
    }
}
