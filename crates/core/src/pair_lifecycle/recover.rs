//! Settling a pair left mid-switchover, mid-move or mid-repair by a
//! controller that is gone: from the roles the two guests report now,
//! which member is ACT, and which orders make the pair whole.
//!
//! Rules, in order:
//! 1. A guest that does not answer may be ACT (its host may be cut off,
//!    not dead): nobody else is made ACT while one is silent. If the other
//!    answers ACT, it stays ACT.
//! 2. A guest that answers ACT stays ACT (two ACTs: the recorded one stays,
//!    the other is demoted first).
//! 3. With no ACT: a quiesced guest (an ACT that gave up the address for a
//!    switchover that never finished) is made ACT again; else a SBY (it
//!    holds the replicated state); else the recorded ACT.
//! 4. The other member is made SBY unless it is SBY already.
//!
//! Every order carries a raised token, and the member that stays ACT is
//! told so too (it changes nothing there, but it learns the token, so an
//! order still in flight from the gone controller is refused).

use super::Slot;
use crate::role::Role;

/// An order of a settlement, to one member's guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Make it ACT (it takes the service address if it has not).
    Activate(Slot),
    /// Configure it if it lost its configuration, and make it SBY.
    Standby(Slot),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Record `active` as ACT, and give these orders in this order (with a
    /// raised token); then the pair is ready.
    Settle { active: Slot, fixes: Vec<Fix> },
    /// Nothing may be decided yet; ask again later.
    Wait { reason: String },
}

/// The settlement of a pair whose recorded ACT is `active`, from the roles
/// its guests report (`None`: no answer), in `members` order.
pub fn recover(active: Slot, roles: [Option<Role>; 2]) -> Recovery {
    let role = |s: Slot| roles[s.i()];
    let acts: Vec<Slot> = Slot::BOTH
        .into_iter()
        .filter(|s| role(*s) == Some(Role::Act))
        .collect();
    let silent: Vec<Slot> = Slot::BOTH
        .into_iter()
        .filter(|s| role(*s).is_none())
        .collect();
    let act = match (acts.as_slice(), silent.as_slice()) {
        ([_, _, ..], _) => {
            // Both claim ACT: the recorded one stays, the other is demoted first.
            return Recovery::Settle {
                active,
                fixes: vec![Fix::Standby(active.other()), Fix::Activate(active)],
            };
        }
        ([a], _) => *a,
        ([], [_, _]) => {
            return Recovery::Wait {
                reason: "neither member's guest answers".into(),
            }
        }
        ([], [s]) => {
            return Recovery::Wait {
                reason: format!(
                    "member {} does not answer and no member is ACT: it may still hold the service address",
                    s.i()
                ),
            }
        }
        ([], _) => Slot::BOTH
            .into_iter()
            .find(|s| role(*s) == Some(Role::Quiesced))
            .or_else(|| {
                [active, active.other()]
                    .into_iter()
                    .find(|s| role(*s) == Some(Role::Sby))
            })
            .unwrap_or(active),
    };
    let other = act.other();
    let mut fixes = Vec::new();
    if role(other) == Some(Role::Quiesced) || role(other) == Some(Role::None) {
        // Demote before the other claims the address: never two ACTs.
        fixes.push(Fix::Standby(other));
    }
    fixes.push(Fix::Activate(act));
    Recovery::Settle { active: act, fixes }
}
