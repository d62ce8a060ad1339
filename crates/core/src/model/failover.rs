//! What a ready pair needs when a member is out of service: the SBY
//! promoted once the ACT is out, and a member that is out while the ACT
//! serves replaced by a new SBY on a live host (autoheal). Pure: the
//! controller's failover pass executes the decision.
//!
//! A member is out of service ([`Out`]) when
//! - its host is fenced ([`super::liveness`]): powered off, or it fenced
//!   itself (and a host merely silent is *not* out: it may still serve,
//!   so promoting then could make a second ACT);
//! - its VM was isolated by the controller's order (cut off the network
//!   and paused, through its host's agent);
//! - it is cut off the service network while its host still talks to the
//!   controller: it and its peer lost each other, it no longer hears the
//!   service network's witness, and its peer, on a live host, still does.
//!
//! Rules:
//! 1. Neither member out: nothing.
//! 2. The ACT out, the SBY's host live and its guest answering (standing
//!    by, already ACT, quiesced, or restarted without its role): promote the SBY,
//!    with a raised token; an ACT whose host is not fenced is isolated
//!    first, so it cannot serve beside it. A SBY that lost its role lost
//!    the replicated state with it, but the ACT that holds the state is
//!    out for good (fenced, or isolated until deleted): serving without
//!    it beats not serving.
//! 3. The SBY out while the ACT serves from a live host: replace it (a new
//!    VM of the same name and address on a live host, configured and made
//!    SBY; the ACT syncs it). The SBY out while the ACT answers without
//!    serving (a switchover cut short left it quiesced or SBY, or its guest
//!    restarted and lost its role): make the ACT ACT again, isolating the
//!    SBY first unless its host is fenced.
//! 4. Otherwise wait, and say why (both out: the pair's state is gone
//!    with them; the SBY silent: nothing answers to be promoted).

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
    /// Its guest says, freshly, that it lost its peer.
    pub peer_lost: bool,
    /// Its guest says, freshly, that it lost the service network's witness.
    pub cut_off: bool,
    /// Its VM is isolated by the controller's order (its agent says so).
    pub isolated: bool,
}

/// Why a member is out of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    HostFenced,
    Isolated,
    CutOff,
}

/// Whether member `m` is out of service, `peer` being the other member.
pub fn out(m: MemberSight, peer: MemberSight) -> Option<Out> {
    let cut_off = m.peer_lost && m.cut_off && peer.peer_lost && !peer.cut_off;
    if m.host_fenced {
        Some(Out::HostFenced)
    } else if m.host_live && m.isolated {
        Some(Out::Isolated)
    } else if m.host_live && peer.host_live && !peer.host_fenced && cut_off {
        Some(Out::CutOff)
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failover {
    /// Make member `to` ACT (token raised) and record it as the ACT (the
    /// SBY in its place, or the recorded ACT again); `isolate`: first
    /// isolate the other member's VM through its agent.
    Promote { to: Slot, isolate: bool },
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
    match (out(act, sby), out(sby, act)) {
        (None, None) => None,
        (Some(Out::HostFenced), Some(Out::HostFenced)) => Some(Failover::Wait {
            reason: "both members' hosts are fenced: the pair must be created again",
        }),
        (Some(_), Some(_)) => Some(Failover::Wait {
            reason: "both members are out of service: the pair must be created again",
        }),
        (Some(_), None) if !sby.host_live => Some(Failover::Wait {
            reason: "the ACT is out of service and the SBY's host does not report",
        }),
        (Some(why), None) => match sby.role {
            Some(_) => Some(Failover::Promote {
                to: s,
                isolate: why != Out::HostFenced,
            }),
            None => Some(Failover::Wait {
                reason: "the ACT is out of service and the SBY's guest does not answer",
            }),
        },
        (None, Some(_)) if act.host_live && act.role == Some(Role::Act) => {
            Some(Failover::Replace { slot: s })
        }
        (None, Some(why)) if act.host_live && act.role.is_some_and(|r| r != Role::Act) => {
            Some(Failover::Promote {
                to: a,
                isolate: why != Out::HostFenced,
            })
        }
        (None, Some(_)) => Some(Failover::Wait {
            reason: "the SBY is out of service and the ACT does not report serving",
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
                    for peer_lost in [false, true] {
                        for cut_off in [false, true] {
                            for isolated in [false, true] {
                                out.push(MemberSight {
                                    host_fenced,
                                    host_live: host_live && !host_fenced,
                                    role,
                                    peer_lost,
                                    cut_off,
                                    isolated,
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The member's own report alone says it may be out of service.
    fn maybe_out(m: MemberSight) -> bool {
        m.host_fenced || m.isolated || (m.peer_lost && m.cut_off)
    }

    /// Cut off the service network, by both members' fresh reports.
    fn cut_off(m: MemberSight, peer: MemberSight) -> bool {
        m.host_live && peer.host_live && m.peer_lost && m.cut_off && peer.peer_lost && !peer.cut_off
    }

    /// `to` made ACT, `other` the member that is out.
    fn check_promote(m: [MemberSight; 2], a: Slot, to: Slot, isolate: bool) {
        let (new, other) = (m[to.i()], m[to.other().i()]);
        assert!(new.host_live && !new.host_fenced && !new.isolated);
        // The recorded ACT again only if it answers without serving.
        let serving = to == a && new.role == Some(Role::Act);
        assert!(new.role.is_some() && !serving, "{m:?}");
        assert!(!cut_off(new, other), "a cut-off member is promoted: {m:?}");
        // Never two ACTs: the other's host is fenced, or it is isolated
        // first; and only if it is out of service.
        assert_eq!(isolate, !other.host_fenced, "{m:?}");
        assert!(
            other.host_fenced || (other.host_live && other.isolated) || cut_off(other, new),
            "{m:?}"
        );
    }

    fn check_replace(m: [MemberSight; 2], a: Slot, slot: Slot) {
        let (act, sby) = (m[a.i()], m[slot.i()]);
        assert_eq!(slot, a.other());
        assert!(act.host_live && !act.host_fenced && !act.isolated);
        assert_eq!(act.role, Some(Role::Act));
        assert!(!cut_off(act, sby), "{m:?}");
        assert!(
            sby.host_fenced || sby.isolated || cut_off(sby, act),
            "{m:?}"
        );
    }

    /// Every phase, recorded ACT and pair of sights: only a ready pair is
    /// touched; promotion needs the ACT out of service (fenced host,
    /// isolated VM, or cut off by both members' word) and isolated first
    /// unless its host is fenced, and the SBY live, standing by and not
    /// cut off itself; a replaced member is never the serving ACT; nothing
    /// at all while no member's own report says it may be out.
    #[test]
    fn every_combination() {
        let mut seen = [0usize; 5];
        let all = sights();
        for phase in PairPhase::ALL {
            for active in 0..2 {
                let p = example(phase, active);
                let a = p.active;
                for &x in &all {
                    for &y in &all {
                        let m = [x, y];
                        let got = decide(&p, m);
                        if phase != PairPhase::Ready || !(maybe_out(x) || maybe_out(y)) {
                            assert_eq!(got, None);
                            continue;
                        }
                        match got {
                            Some(Failover::Promote { to, isolate }) => {
                                seen[usize::from(isolate)] += 1;
                                seen[4] += usize::from(to == a);
                                check_promote(m, a, to, isolate);
                            }
                            Some(Failover::Replace { slot }) => {
                                seen[2] += 1;
                                check_replace(m, a, slot);
                            }
                            Some(Failover::Wait { .. }) => seen[3] += 1,
                            None => assert!(
                                !x.host_fenced && !y.host_fenced,
                                "a fenced member of a ready pair is decided: {m:?}"
                            ),
                        }
                    }
                }
            }
        }
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
    }

    #[test]
    fn only_role_workflows_yield_and_only_to_a_fenced_host() {
        let all = sights();
        for w in Workflow::ALL {
            for &x in &all {
                for &y in &all {
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
            ..MemberSight::default()
        };
        let sby = MemberSight {
            host_live: true,
            role: Some(Role::Sby),
            ..MemberSight::default()
        };
        assert_eq!(
            decide(&p, [gone, sby]),
            Some(Failover::Promote {
                to: Slot::B,
                isolate: false
            })
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

    /// The ACT's host loses its service link: both guests lose each other,
    /// only the ACT loses the witness. The ACT is isolated and the SBY
    /// promoted; then the isolated (paused, silent) old ACT is replaced.
    #[test]
    fn a_cut_off_act_is_isolated_then_replaced() {
        let mut p = example(PairPhase::Ready, 0);
        let live = MemberSight {
            host_live: true,
            peer_lost: true,
            ..MemberSight::default()
        };
        let act = MemberSight {
            role: Some(Role::Act),
            cut_off: true,
            ..live
        };
        let sby = MemberSight {
            role: Some(Role::Sby),
            ..live
        };
        assert_eq!(
            decide(&p, [act, sby]),
            Some(Failover::Promote {
                to: Slot::B,
                isolate: true
            })
        );
        let witness_down = MemberSight {
            cut_off: true,
            ..sby
        };
        assert_eq!(decide(&p, [act, witness_down]), None, "who is cut off?");
        p.active = Slot::B;
        let paused = MemberSight {
            host_live: true,
            isolated: true,
            ..MemberSight::default()
        };
        let new_act = MemberSight {
            role: Some(Role::Act),
            ..sby
        };
        assert_eq!(
            decide(&p, [paused, new_act]),
            Some(Failover::Replace { slot: Slot::A })
        );
    }
}
