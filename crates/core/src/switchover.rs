//! Graceful switchover of an ACT/SBY pair, as a pure state machine: which
//! order to give next, given how the last one went. Break before make: the
//! old ACT releases the service address before the new one claims it, so
//! two VMs never answer for it. The old ACT's network element holds the
//! frames that arrive for the address in that gap and forwards them to the
//! new ACT once it has claimed it (`duplex_net::handover`), so clients lose
//! nothing and need not retransmit.
//!
//! ```text
//! ClearingNew (new's element: release — it may still forward from an
//!              earlier switchover, which would bounce frames back to old)
//!   -> Holding (old's element: hold the address)
//! Holding
//!   -> Preparing (old: switchover_prepare)
//! Preparing
//!   ok   -> Activating (new: set_role act)
//!   fail -> RestoringOld (old: set_role act)
//! Activating
//!   ok   -> Redirecting (old's element: forward to new) -> Committing
//!   fail -> DemotingNew (new: set_role sby)   never two ACTs: the new one
//!                                             is demoted before the old
//!                                             one is restored
//! DemotingNew
//!   ok   -> RestoringOld (old: set_role act)
//!   fail -> Unholding -> Failed (no ACT; needs the operator or failover)
//! RestoringOld
//!   ok   -> Unholding (old's element: release, held frames to old)
//!             -> RolledBack
//!   fail -> Unholding -> Failed
//! Committing
//!   ok   -> Done              fail -> Done { commit_failed }  (old stays
//!                                     quiesced without the address: safe)
//! ```
//!
//! The element orders are best effort: whatever their outcome, the plan
//! goes on as above (without them the switchover still works; clients
//! retransmit what the gap lost). A hold nobody ends expires on its own.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Member {
    /// The current ACT.
    Old,
    /// The current SBY, to become ACT.
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "order", content = "to")]
pub enum Order {
    Prepare(Member),
    Activate(Member),
    Commit(Member),
    Demote(Member),
    /// The member's network element holds the frames for the address.
    Hold(Member),
    /// The member's network element forwards them to the other member.
    Forward(Member),
    /// The member's network element delivers them plainly again.
    Release(Member),
}

impl Order {
    /// The member the order goes to (to its guest or its element).
    pub fn member(&self) -> Member {
        match *self {
            Order::Prepare(m)
            | Order::Activate(m)
            | Order::Commit(m)
            | Order::Demote(m)
            | Order::Hold(m)
            | Order::Forward(m)
            | Order::Release(m) => m,
        }
    }

    /// An order to a network element (best effort), not to a guest.
    pub fn is_element_order(&self) -> bool {
        matches!(self, Order::Hold(_) | Order::Forward(_) | Order::Release(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    ClearingNew,
    Holding,
    Preparing,
    Activating,
    Redirecting,
    Committing,
    DemotingNew,
    RestoringOld,
    /// Ends the hold, then ends `Failed` or `RolledBack`.
    Unholding {
        failed: bool,
    },
    Done {
        commit_failed: bool,
    },
    RolledBack,
    Failed,
}

impl Phase {
    pub fn is_final(&self) -> bool {
        matches!(self, Phase::Done { .. } | Phase::RolledBack | Phase::Failed)
    }

    /// The order this phase waits on.
    pub fn order(&self) -> Option<Order> {
        match self {
            Phase::ClearingNew => Some(Order::Release(Member::New)),
            Phase::Holding => Some(Order::Hold(Member::Old)),
            Phase::Preparing => Some(Order::Prepare(Member::Old)),
            Phase::Activating => Some(Order::Activate(Member::New)),
            Phase::Redirecting => Some(Order::Forward(Member::Old)),
            Phase::Committing => Some(Order::Commit(Member::Old)),
            Phase::DemotingNew => Some(Order::Demote(Member::New)),
            Phase::RestoringOld => Some(Order::Activate(Member::Old)),
            Phase::Unholding { .. } => Some(Order::Release(Member::Old)),
            _ => None,
        }
    }

    /// The phase after this phase's order succeeded (`ok`) or not.
    pub fn next(self, ok: bool) -> Phase {
        match (self, ok) {
            (Phase::ClearingNew, _) => Phase::Holding,
            (Phase::Holding, _) => Phase::Preparing,
            (Phase::Preparing, true) => Phase::Activating,
            (Phase::Preparing, false) => Phase::RestoringOld,
            (Phase::Activating, true) => Phase::Redirecting,
            (Phase::Activating, false) => Phase::DemotingNew,
            (Phase::Redirecting, _) => Phase::Committing,
            (Phase::DemotingNew, true) => Phase::RestoringOld,
            (Phase::DemotingNew, false) => Phase::Unholding { failed: true },
            (Phase::RestoringOld, ok) => Phase::Unholding { failed: !ok },
            (Phase::Unholding { failed: true }, _) => Phase::Failed,
            (Phase::Unholding { failed: false }, _) => Phase::RolledBack,
            (Phase::Committing, ok) => Phase::Done { commit_failed: !ok },
            (done, _) => done,
        }
    }
}

pub const START: Phase = Phase::ClearingNew;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sequence of outcomes (element orders included): the plan
    /// ends; never two ACTs; frames for the address are forwarded only
    /// to a member that has claimed it, and a hold never outlives the
    /// plan except where the new member took over (then it forwards).
    #[test]
    fn every_outcome_sequence_ends_and_never_has_two_acts() {
        for bits in 0u32..(1 << 10) {
            let (mut old_act, mut new_act) = (true, false);
            // What old's element does: None (plain), Some(false) holding,
            // Some(true) forwarding to new.
            let mut old_elem: Option<bool> = None;
            let mut forward_failed = false;
            let mut phase = START;
            let mut steps = 0;
            while !phase.is_final() {
                let ok = bits & (1 << steps) != 0;
                let order = phase.order().unwrap();
                match (order, ok) {
                    (Order::Prepare(Member::Old), true) => old_act = false,
                    (Order::Activate(Member::New), true) => new_act = true,
                    // A failed activation may have half-happened: assume
                    // the worst until the demotion is confirmed.
                    (Order::Activate(Member::New), false) => new_act = true,
                    (Order::Activate(Member::Old), true) => old_act = true,
                    (Order::Demote(Member::New), true) => new_act = false,
                    (Order::Commit(Member::Old), true) => old_act = false,
                    (Order::Hold(Member::Old), true) => old_elem = Some(false),
                    (Order::Forward(Member::Old), true) => {
                        assert!(new_act && !old_act, "forwarding to a non-ACT");
                        old_elem = Some(true);
                    }
                    (Order::Release(Member::Old), true) => old_elem = None,
                    (Order::Release(Member::New), _) => {}
                    (Order::Forward(Member::Old), false) => forward_failed = true,
                    // Any other order may fail; it changed nothing then.
                    (_, false) => {}
                    (o, true) => panic!("unexpected order {o:?}"),
                }
                assert!(
                    !(old_act && new_act),
                    "two ACTs after {order:?} ok={ok} (bits {bits:b})"
                );
                phase = phase.next(ok);
                steps += 1;
                assert!(steps <= 7, "too many steps");
            }
            match phase {
                Phase::Done { .. } => {
                    assert!(new_act && !old_act);
                    // Left holding only if the forward order failed (the
                    // hold then expires on its own).
                    assert!(old_elem != Some(false) || forward_failed);
                }
                Phase::RolledBack => {
                    assert!(old_act && !new_act);
                    assert_ne!(old_elem, Some(true), "forwarding away from the ACT");
                }
                Phase::Failed => assert_ne!(old_elem, Some(true)),
                _ => unreachable!(),
            }
            // A forwarding element only ever points at an ACT.
            if old_elem == Some(true) {
                assert!(new_act);
            }
        }
    }

    #[test]
    fn the_happy_path() {
        let mut p = START;
        let mut orders = vec![];
        while let Some(o) = p.order() {
            orders.push(o);
            p = p.next(true);
        }
        assert_eq!(
            orders,
            [
                Order::Release(Member::New),
                Order::Hold(Member::Old),
                Order::Prepare(Member::Old),
                Order::Activate(Member::New),
                Order::Forward(Member::Old),
                Order::Commit(Member::Old)
            ]
        );
        assert_eq!(
            p,
            Phase::Done {
                commit_failed: false
            }
        );
    }

    #[test]
    fn a_rollback_ends_the_hold_before_it_ends() {
        let mut p = START;
        let mut orders = vec![];
        // The preparation fails; everything else succeeds.
        while let Some(o) = p.order() {
            orders.push(o);
            p = p.next(o != Order::Prepare(Member::Old));
        }
        assert_eq!(p, Phase::RolledBack);
        assert_eq!(
            &orders[2..],
            [
                Order::Prepare(Member::Old),
                Order::Activate(Member::Old),
                Order::Release(Member::Old)
            ]
        );
    }
}
