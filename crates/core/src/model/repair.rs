//! What to do about a ready pair whose guest lost its role. A guest that
//! restarted (kernel panic, reset, its VM recreated) comes back with no
//! configuration and role `none`; nothing else ever puts it there. Left so,
//! the pair stays degraded (lost SBY) or without an ACT (lost ACT) until
//! someone acts. Pure: the controller's repair loop executes the decision.
//!
//! Only fresh reports count: a member that reports nothing (host silent,
//! guest not up yet) is not judged lost here, because a silent ACT may
//! still hold the service address; failing over from it needs fencing.

use super::pair::{MemberView, Pair, PairPhase};
use crate::role::Role;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "repair", rename_all = "snake_case")]
pub enum Repair {
    /// The SBY lost its role: configure it and make it SBY again (the ACT
    /// sends it a full snapshot of the replicated state on reconnecting).
    Standby { member: usize },
    /// The ACT lost its role while the SBY stands by: the SBY takes over
    /// with a raised token (failover; it holds the replicated state), and
    /// becomes the recorded ACT; the other is then made SBY.
    FailOver { to: usize },
    /// The member recorded as SBY is ACT and the other lost its role (the
    /// record trails the guests): record it as ACT, make the other SBY.
    Adopt { act: usize },
    /// Both lost their roles: set the pair up as at creation, the recorded
    /// ACT first. The replicated state is gone with both guests.
    SetUp,
}

impl Repair {
    /// The member index that ends up ACT, given the recorded one.
    pub fn new_active(self, active: usize) -> usize {
        match self {
            Repair::Standby { .. } | Repair::SetUp => active % 2,
            Repair::FailOver { to } => to % 2,
            Repair::Adopt { act } => act % 2,
        }
    }

    /// Whether the role token must be raised first: a member is made ACT
    /// (orders from before must not undo that).
    pub fn raises_token(self) -> bool {
        matches!(self, Repair::FailOver { .. } | Repair::SetUp)
    }

    /// The member(s) to configure and make SBY, in `members` order.
    pub fn restore(self, active: usize) -> usize {
        (self.new_active(active) + 1) % 2
    }
}

/// The repair a pair needs now, if any. Only a `Ready` pair is repaired: in
/// every other phase a workflow owns the roles.
pub fn decide(pair: &Pair, views: [MemberView; 2]) -> Option<Repair> {
    if pair.phase != PairPhase::Ready {
        return None;
    }
    let a = pair.active.i();
    let s = (a + 1) % 2;
    let lost = |i: usize| views[i].role == Some(Role::None);
    match (views[a].role, views[s].role) {
        (Some(Role::Act), Some(Role::None)) => Some(Repair::Standby { member: s }),
        (Some(Role::None), Some(Role::Sby)) => Some(Repair::FailOver { to: s }),
        (Some(Role::None), Some(Role::Act)) => Some(Repair::Adopt { act: s }),
        // A switchover whose last step did not land: the old ACT stays
        // quiesced (without the address) until it is made SBY or ACT.
        (Some(Role::Act), Some(Role::Quiesced)) => Some(Repair::Standby { member: s }),
        (Some(Role::Quiesced), Some(Role::Act)) => Some(Repair::Adopt { act: s }),
        (Some(Role::Quiesced), Some(Role::Sby | Role::None)) => Some(Repair::SetUp),
        (Some(Role::Sby | Role::None), Some(Role::Quiesced)) => Some(Repair::FailOver { to: s }),
        _ if lost(a) && lost(s) => Some(Repair::SetUp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pair::example as pair;

    fn view(role: Option<Role>) -> MemberView {
        MemberView {
            role,
            ..MemberView::default()
        }
    }

    use crate::role::REPORTS as ROLES;

    /// Every phase, recorded ACT and pair of reports: the decision never
    /// makes a second ACT, never touches a member that still holds a role
    /// it should keep, and acts only on a member that reports `none`.
    #[test]
    fn every_report_combination() {
        let phases = PairPhase::ALL;
        let mut acted = 0;
        for phase in phases {
            for active in 0..2 {
                let p = pair(phase, active);
                for ra in ROLES {
                    for rb in ROLES {
                        let views = [view(ra), view(rb)];
                        let Some(r) = decide(&p, views) else {
                            continue;
                        };
                        acted += 1;
                        assert_eq!(phase, PairPhase::Ready, "{r:?} outside Ready");
                        // Some member lost its role or was left quiesced;
                        // nobody silent is judged.
                        assert!(views
                            .iter()
                            .any(|v| matches!(v.role, Some(Role::None | Role::Quiesced))));
                        assert!(views.iter().all(|v| v.role.is_some()), "{views:?}");
                        let new = r.new_active(active);
                        let sby = r.restore(active);
                        assert_ne!(new, sby);
                        // The member made SBY is never one that serves now.
                        assert_ne!(views[sby].role, Some(Role::Act), "{r:?} {views:?}");
                        // The new ACT is one that serves, stands by, or (SetUp) the recorded one.
                        match views[new].role {
                            Some(Role::Act) => assert!(!r.raises_token()),
                            Some(Role::Sby | Role::Quiesced) => assert!(r.raises_token()),
                            Some(Role::None) => {
                                assert_eq!(r, Repair::SetUp);
                                assert_eq!(new, active);
                            }
                            other => panic!("{r:?} makes {other:?} ACT"),
                        }
                    }
                }
            }
        }
        // Ready × 2 recorded ACTs × ({Standby, FailOver, Adopt, SetUp} and
        // the 6 combinations with a quiesced member).
        assert_eq!(acted, 20);
    }

    #[test]
    fn the_cases_by_name() {
        let act = view(Some(Role::Act));
        let sby = view(Some(Role::Sby));
        let none = view(Some(Role::None));
        let silent = view(None);
        let p = pair(PairPhase::Ready, 1);
        assert_eq!(decide(&p, [none, act]), Some(Repair::Standby { member: 0 }));
        assert_eq!(decide(&p, [sby, none]), Some(Repair::FailOver { to: 0 }));
        assert_eq!(decide(&p, [act, none]), Some(Repair::Adopt { act: 0 }));
        assert_eq!(decide(&p, [none, none]), Some(Repair::SetUp));
        // Healthy, or a member silent: nothing.
        assert_eq!(decide(&p, [sby, act]), None);
        assert_eq!(decide(&p, [sby, silent]), None);
        assert_eq!(decide(&p, [none, silent]), None);
        assert_eq!(decide(&p, [silent, none]), None);
        // A pair being moved is the move's business.
        assert_eq!(decide(&pair(PairPhase::Moving, 1), [none, act]), None);
    }
}
