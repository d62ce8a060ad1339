//! What a ready pair needs when a member's host is gone: the SBY promoted
//! once the ACT's host is fenced, and a member on a fenced host replaced by
//! a new SBY on a live host (autoheal). Pure: the controller's failover
//! pass executes the decision.
//!
//! Rules:
//! 1. Nothing is decided for a host that is not fenced ([`super::liveness`]):
//!    a host merely silent may still serve, so promoting then could make a
//!    second ACT.
//! 2. The ACT's host fenced, the SBY's host live and its guest standing by
//!    (or already ACT): promote the SBY, with a raised token.
//! 3. A member that is not the ACT, on a fenced host, while the ACT serves
//!    from a live host: replace it (a new VM of the same name and address
//!    on a live host, configured and made SBY; the ACT syncs it).
//! 4. Otherwise wait, and say why (both hosts fenced: the pair's state is
//!    gone with them; the SBY not standing by: promoting it would serve
//!    without the replicated state).

use super::pair::{Pair, PairPhase};
use crate::pair_lifecycle::{Slot, Workflow};
use crate::role::Role;

/// One member as the failover pass sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberSight {
    /// Its recorded host is fenced (`liveness::Fate::Fenced`).
    pub host_fenced: bool,
    /// Its recorded host reports (not failed).
    pub host_live: bool,
    /// The role its guest reports freshly (`None`: no fresh report).
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failover {
    /// Make member `to` ACT (token raised) and record it as the ACT.
    Promote { to: Slot },
    /// Re-create member `slot` on a live host and make it SBY.
    Replace { slot: Slot },
    /// Something must happen, but cannot yet.
    Wait { reason: &'static str },
}

/// Whether a workflow running on the pair yields to failover: a role
/// workflow (switchover, move, repair) with a member on a fenced host would
/// wait out its orders' limits against a host that is gone. Create, delete,
/// failover and heal finish on their own; a recovery hands the pair over.
pub fn preempts(w: Workflow, m: &[MemberSight; 2]) -> bool {
    let role_flow = matches!(w, Workflow::Switchover | Workflow::Move | Workflow::Repair);
    role_flow && m.iter().any(|s| s.host_fenced)
}

pub fn decide(pair: &Pair, m: [MemberSight; 2]) -> Option<Failover> {
    if pair.phase != PairPhase::Ready {
        return None;
    }
    let (a, s) = (pair.active, pair.active.other());
    let (act, sby) = (m[a.i()], m[s.i()]);
    match (act.host_fenced, sby.host_fenced) {
        (false, false) => None,
        (true, true) => Some(Failover::Wait {
            reason: "both members' hosts are fenced: the pair must be created again",
        }),
        (true, false) if !sby.host_live => Some(Failover::Wait {
            reason: "the ACT's host is fenced and the SBY's host does not report",
        }),
        (true, false) => match sby.role {
            Some(Role::Sby | Role::Act) => Some(Failover::Promote { to: s }),
            _ => Some(Failover::Wait {
                reason: "the ACT's host is fenced and the SBY is not standing by",
            }),
        },
        (false, true) if act.host_live && act.role == Some(Role::Act) => {
            Some(Failover::Replace { slot: s })
        }
        (false, true) => Some(Failover::Wait {
            reason: "the SBY's host is fenced and the ACT does not report serving",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pair::example;

    fn sights() -> Vec<MemberSight> {
        let mut out = Vec::new();
        for host_fenced in [false, true] {
            for host_live in [false, true] {
                for role in crate::role::REPORTS {
                    out.push(MemberSight {
                        host_fenced,
                        host_live: host_live && !host_fenced,
                        role,
                    });
                }
            }
        }
        out
    }

    /// Every phase, recorded ACT and pair of sights: only a ready pair is
    /// touched; promotion needs the ACT's host fenced and the SBY live and
    /// standing by; a replaced member is never the serving ACT; nothing at
    /// all while no host is fenced.
    #[test]
    fn every_combination() {
        let mut seen = [0usize; 3];
        for phase in PairPhase::ALL {
            for active in 0..2 {
                let p = example(phase, active);
                let (a, s) = (p.active, p.active.other());
                for x in sights() {
                    for y in sights() {
                        let m = [x, y];
                        let got = decide(&p, m);
                        if phase != PairPhase::Ready || !(x.host_fenced || y.host_fenced) {
                            assert_eq!(got, None);
                            continue;
                        }
                        match got {
                            Some(Failover::Promote { to }) => {
                                seen[0] += 1;
                                assert_eq!(to, s);
                                assert!(m[a.i()].host_fenced && m[s.i()].host_live);
                                assert!(matches!(m[s.i()].role, Some(Role::Sby | Role::Act)));
                            }
                            Some(Failover::Replace { slot }) => {
                                seen[1] += 1;
                                assert_eq!(slot, s);
                                assert!(m[s.i()].host_fenced && !m[a.i()].host_fenced);
                                assert_eq!(m[a.i()].role, Some(Role::Act));
                            }
                            Some(Failover::Wait { .. }) => seen[2] += 1,
                            None => panic!("a fenced member of a ready pair is decided: {m:?}"),
                        }
                    }
                }
            }
        }
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
    }

    #[test]
    fn only_role_workflows_yield_and_only_to_a_fenced_host() {
        for w in Workflow::ALL {
            for x in sights() {
                for y in sights() {
                    let m = [x, y];
                    let role =
                        matches!(w, Workflow::Switchover | Workflow::Move | Workflow::Repair);
                    assert_eq!(preempts(w, &m), role && (x.host_fenced || y.host_fenced));
                }
            }
        }
    }

    #[test]
    fn after_a_promotion_the_old_act_is_replaced() {
        let mut p = example(PairPhase::Ready, 0);
        let gone = MemberSight {
            host_fenced: true,
            host_live: false,
            role: None,
        };
        let sby = MemberSight {
            host_fenced: false,
            host_live: true,
            role: Some(Role::Sby),
        };
        assert_eq!(
            decide(&p, [gone, sby]),
            Some(Failover::Promote { to: Slot::B })
        );
        p.active = Slot::B;
        let act = MemberSight {
            role: Some(Role::Act),
            ..sby
        };
        assert_eq!(
            decide(&p, [gone, act]),
            Some(Failover::Replace { slot: Slot::A })
        );
    }
}
