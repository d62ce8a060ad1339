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
//!   refused -> RestoringOld                   the guest said no before it
//!                                             changed anything: the new
//!                                             one is not ACT
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

    /// The phase after this phase's order succeeded (`ok`) or failed in a
    /// way that may have changed something.
    pub fn next(self, ok: bool) -> Phase {
        self.after(if ok { Outcome::Done } else { Outcome::Failed })
    }

    /// The phase after this phase's order had `outcome`.
    pub fn after(self, outcome: Outcome) -> Phase {
        if (self, outcome) == (Phase::Activating, Outcome::Refused) {
            return Phase::RestoringOld;
        }
        let ok = outcome == Outcome::Done;
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

/// How an order went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Done,
    /// Refused before anything changed (the guest's role machine said no,
    /// or it has no configuration): nothing to undo.
    Refused,
    /// Failed, or no answer: it may have half-happened.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sequence of outcomes (element orders included): the plan
    /// ends; never two ACTs; frames for the address are forwarded only
    /// to a member that has claimed it, and a hold never outlives the
    /// plan except where the new member took over (then it forwards).
    #[test]
    fn every_outcome_sequence_ends_and_never_has_two_acts() {
        const OUTCOMES: [Outcome; 3] = [Outcome::Failed, Outcome::Done, Outcome::Refused];
        for code in 0u32..3u32.pow(8) {
            let (mut old_act, mut new_act) = (true, false);
            // What old's element does: None (plain), Some(false) holding,
            // Some(true) forwarding to new.
            let mut old_elem: Option<bool> = None;
            let mut forward_failed = false;
            let mut phase = START;
            let mut steps = 0;
            while !phase.is_final() {
                let outcome = OUTCOMES[(code / 3u32.pow(steps)) as usize % 3];
                let ok = outcome == Outcome::Done;
                let order = phase.order().unwrap();
                match (order, ok) {
                    (Order::Prepare(Member::Old), true) => old_act = false,
                    (Order::Activate(Member::New), true) => new_act = true,
                    // A failed activation may have half-happened: assume
                    // the worst until the demotion is confirmed. A refused
                    // one changed nothing.
                    (Order::Activate(Member::New), false) => new_act = outcome == Outcome::Failed,
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
                    "two ACTs after {order:?} {outcome:?} (code {code})"
                );
                phase = phase.after(outcome);
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

    /// A new ACT whose guest refused the activation outright (say it
    /// rebooted and has no configuration) is not demoted first: the old
    /// ACT is restored at once, so the pair is not left without one.
    #[test]
    fn a_refused_activation_restores_the_old_act() {
        let mut p = START;
        let mut orders = vec![];
        while let Some(o) = p.order() {
            orders.push(o);
            p = p.after(match o {
                Order::Activate(Member::New) => Outcome::Refused,
                Order::Demote(_) => Outcome::Refused,
                _ => Outcome::Done,
            });
        }
        assert_eq!(p, Phase::RolledBack);
        assert_eq!(
            &orders[3..],
            [
                Order::Activate(Member::New),
                Order::Activate(Member::Old),
                Order::Release(Member::Old)
            ]
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
