//! An ACT/SBY pair: two VMs on two hosts sharing one service address.

use crate::pair_lifecycle::{Journal, Slot};
use crate::role::Role;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairPhase {
    /// Members being created / booted.
    Creating,
    /// Members being configured and given their roles.
    Configuring,
    /// Set up; roles as in `active`.
    Ready,
    /// A switchover is under way.
    SwitchingOver,
    /// Being moved to other hosts (S1 pair migration).
    Moving,
    /// A member whose guest lost its role is being given it back, or the
    /// SBY is taking over from an ACT that lost it (`model::repair`).
    Repairing,
    /// Set-up failed; see the pair's events.
    Failed,
    /// Deletion requested.
    Deleting,
}

impl PairPhase {
    pub const ALL: [PairPhase; 8] = [
        PairPhase::Creating,
        PairPhase::Configuring,
        PairPhase::Ready,
        PairPhase::SwitchingOver,
        PairPhase::Moving,
        PairPhase::Repairing,
        PairPhase::Failed,
        PairPhase::Deleting,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            PairPhase::Creating => "creating",
            PairPhase::Configuring => "configuring",
            PairPhase::Ready => "ready",
            PairPhase::SwitchingOver => "switching_over",
            PairPhase::Moving => "moving",
            PairPhase::Repairing => "repairing",
            PairPhase::Failed => "failed",
            PairPhase::Deleting => "deleting",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    #[serde(default = "super::schema_version")]
    pub v: u32,
    pub name: String,
    /// The two member VMs (records under `vms/`).
    pub members: [String; 2],
    /// The service address the ACT holds.
    pub vip: Ipv4Addr,
    pub prefix_len: u8,
    /// The member that should be ACT.
    pub active: Slot,
    /// The pair's role fencing token: raised by every role change, so a
    /// guest refuses orders from before it.
    pub token: u64,
    pub phase: PairPhase,
    pub created_ms: u64,
    /// The operation that owns the pair and its current step, written
    /// before the step is carried out (`pair_lifecycle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<Journal>,
    /// The members' replication key (made with the pair; `None` for a
    /// pair made before keys). Never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_key: Option<crate::replica_key::ReplicaKey>,
}

impl Pair {
    pub fn act(&self) -> &str {
        &self.members[self.active.i()]
    }
    pub fn sby(&self) -> &str {
        &self.members[self.active.other().i()]
    }
    /// The member in `slot`.
    pub fn member(&self, slot: Slot) -> &str {
        &self.members[slot.i()]
    }
}

/// What the guests say about the pair, judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairHealth {
    /// ACT where wanted, serving; SBY where wanted.
    Healthy,
    /// Not set up yet, or a switchover is under way.
    Transition,
    /// One ACT, but the SBY is missing / not standing by / not yet holding
    /// the service's state, or the ACT's service fails its health check.
    Degraded,
    /// No member is reported ACT, and some member sent no fresh report.
    Unknown,
    /// Both members report, and neither is ACT.
    NoActive,
    /// Both members claim ACT. Must never happen; reported loudly.
    SplitBrain,
}

impl PairHealth {
    pub const ALL: [PairHealth; 6] = [
        PairHealth::Healthy,
        PairHealth::Transition,
        PairHealth::Degraded,
        PairHealth::Unknown,
        PairHealth::NoActive,
        PairHealth::SplitBrain,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            PairHealth::Healthy => "healthy",
            PairHealth::Transition => "transition",
            PairHealth::Degraded => "degraded",
            PairHealth::Unknown => "unknown",
            PairHealth::NoActive => "no_active",
            PairHealth::SplitBrain => "split_brain",
        }
    }
}

/// What one member's guest last reported (from its heartbeat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberView {
    /// `None`: no fresh report (VM absent, guest silent, host dead).
    pub role: Option<Role>,
    /// The service's health check (`None`: not checked, e.g. on a SBY).
    pub healthy: Option<bool>,
    /// Its guest stopped hearing the other member (guest-to-guest
    /// heartbeat): they cannot replicate, and one side may be cut off its
    /// service network.
    pub peer_lost: bool,
    /// Its guest stopped hearing the service network's witness: it is
    /// the one cut off (when its peer still hears the witness).
    pub cut_off: bool,
    /// Said by an ACT: its peer holds every write (`None`: not said).
    pub peer_synced: Option<bool>,
}

/// Judges the pair from the two members' reports (`views` in `members` order).
pub fn health(pair: &Pair, views: [MemberView; 2]) -> PairHealth {
    let acts = views.iter().filter(|v| v.role == Some(Role::Act)).count();
    if acts == 2 {
        return PairHealth::SplitBrain;
    }
    if matches!(
        pair.phase,
        PairPhase::Creating
            | PairPhase::Configuring
            | PairPhase::SwitchingOver
            | PairPhase::Moving
            | PairPhase::Repairing
    ) {
        return PairHealth::Transition;
    }
    if acts == 0 && views.iter().any(|v| v.role.is_none()) {
        return PairHealth::Unknown;
    }
    if acts == 0 {
        return PairHealth::NoActive;
    }
    let act = views[pair.active.i()];
    let sby = views[pair.active.other().i()];
    let apart = act.peer_lost || sby.peer_lost;
    if act.role == Some(Role::Act)
        && act.healthy != Some(false)
        && act.peer_synced != Some(false)
        && sby.role == Some(Role::Sby)
        && !apart
    {
        PairHealth::Healthy
    } else {
        PairHealth::Degraded
    }
}

/// A pair of members `a` and `b` for the decisions' tests.
#[cfg(test)]
pub(crate) fn example(phase: PairPhase, active: usize) -> Pair {
    let active = Slot::of(active % 2).unwrap_or(Slot::A);
    Pair {
        v: 1,
        name: "p".into(),
        members: ["a".into(), "b".into()],
        vip: Ipv4Addr::new(10, 0, 0, 9),
        prefix_len: 24,
        active,
        token: 1,
        phase,
        created_ms: 0,
        journal: None,
        replica_key: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(phase: PairPhase, active: usize) -> Pair {
        example(phase, active)
    }

    fn v(role: Option<Role>, healthy: Option<bool>) -> MemberView {
        MemberView {
            role,
            healthy,
            ..MemberView::default()
        }
    }

    #[test]
    fn every_combination_is_judged_consistently() {
        let roles = [
            None,
            Some(Role::None),
            Some(Role::Sby),
            Some(Role::Act),
            Some(Role::Quiesced),
        ];
        let healths = [None, Some(true), Some(false)];
        let phases = PairPhase::ALL;
        for phase in phases {
            for active in 0..2 {
                let p = pair(phase, active);
                for r0 in roles {
                    for r1 in roles {
                        for h0 in healths {
                            for h1 in healths {
                                let views = [v(r0, h0), v(r1, h1)];
                                let got = health(&p, views);
                                // Members that cannot hear each other are
                                // never healthy, whatever else they say.
                                for lost in [[true, false], [false, true]] {
                                    let mut apart = views;
                                    apart[0].peer_lost = lost[0];
                                    apart[1].peer_lost = lost[1];
                                    let h = health(&p, apart);
                                    assert_ne!(h, PairHealth::Healthy, "{apart:?}");
                                    if got != PairHealth::Healthy {
                                        assert_eq!(h, got, "{apart:?}");
                                    }
                                }
                                // Nor is a pair whose SBY lacks writes.
                                for synced in [None, Some(true), Some(false)] {
                                    let mut said = views;
                                    said[active].peer_synced = synced;
                                    let h = health(&p, said);
                                    match synced {
                                        Some(false) if got == PairHealth::Healthy => {
                                            assert_eq!(h, PairHealth::Degraded, "{said:?}")
                                        }
                                        _ => assert_eq!(h, got, "{said:?}"),
                                    }
                                }
                                let acts =
                                    [r0, r1].iter().filter(|r| **r == Some(Role::Act)).count();
                                // Two ACTs are always reported as such, in every phase.
                                assert_eq!(got == PairHealth::SplitBrain, acts == 2);
                                // Healthy means exactly the wanted roles and no failing check.
                                if got == PairHealth::Healthy {
                                    assert_eq!(views[active].role, Some(Role::Act));
                                    assert_eq!(views[1 - active].role, Some(Role::Sby));
                                    assert_ne!(views[active].healthy, Some(false));
                                    assert!(matches!(
                                        phase,
                                        PairPhase::Ready | PairPhase::Failed | PairPhase::Deleting
                                    ));
                                }
                                if got == PairHealth::NoActive {
                                    assert!(acts == 0 && r0.is_some() && r1.is_some());
                                }
                                if got == PairHealth::Unknown {
                                    assert!(acts == 0 && (r0.is_none() || r1.is_none()));
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn examples() {
        let p = pair(PairPhase::Ready, 0);
        let act = v(Some(Role::Act), Some(true));
        let sby = v(Some(Role::Sby), None);
        assert_eq!(health(&p, [act, sby]), PairHealth::Healthy);
        assert_eq!(health(&p, [sby, act]), PairHealth::Degraded);
        assert_eq!(health(&p, [act, v(None, None)]), PairHealth::Degraded);
        assert_eq!(
            health(&p, [v(Some(Role::Act), Some(false)), sby]),
            PairHealth::Degraded
        );
        assert_eq!(health(&p, [sby, sby]), PairHealth::NoActive);
        assert_eq!(health(&p, [sby, v(None, None)]), PairHealth::Unknown);
        assert_eq!(health(&p, [act, act]), PairHealth::SplitBrain);
        let apart = MemberView {
            peer_lost: true,
            ..sby
        };
        assert_eq!(health(&p, [act, apart]), PairHealth::Degraded);
        assert_eq!(p.act(), "a");
        assert_eq!(p.sby(), "b");
    }
}
