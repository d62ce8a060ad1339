//! Graceful switchover of an ACT/SBY pair, as a pure state machine: which
//! order to give next, given how the last one went. Break before make: the
//! old ACT releases the service address before the new one claims it, so
//! two VMs never answer for it; the gap is one order round trip.
//!
//! ```text
//! Preparing (old: switchover_prepare)
//!   ok   -> Activating (new: set_role act)
//!   fail -> RestoringOld (old: set_role act)
//! Activating
//!   ok   -> Committing (old: switchover_commit)
//!   fail -> DemotingNew (new: set_role sby)   never two ACTs: the new one
//!                                             is demoted before the old
//!                                             one is restored
//! DemotingNew
//!   ok   -> RestoringOld (old: set_role act)
//!   fail -> Failed (no ACT; needs the operator or failover)
//! RestoringOld
//!   ok   -> RolledBack        fail -> Failed
//! Committing
//!   ok   -> Done              fail -> Done { commit_failed }  (old stays
//!                                     quiesced without the address: safe)
//! ```

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Preparing,
    Activating,
    Committing,
    DemotingNew,
    RestoringOld,
    Done { commit_failed: bool },
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
            Phase::Preparing => Some(Order::Prepare(Member::Old)),
            Phase::Activating => Some(Order::Activate(Member::New)),
            Phase::Committing => Some(Order::Commit(Member::Old)),
            Phase::DemotingNew => Some(Order::Demote(Member::New)),
            Phase::RestoringOld => Some(Order::Activate(Member::Old)),
            _ => None,
        }
    }

    /// The phase after this phase's order succeeded (`ok`) or not.
    pub fn next(self, ok: bool) -> Phase {
        match (self, ok) {
            (Phase::Preparing, true) => Phase::Activating,
            (Phase::Preparing, false) => Phase::RestoringOld,
            (Phase::Activating, true) => Phase::Committing,
            (Phase::Activating, false) => Phase::DemotingNew,
            (Phase::DemotingNew, true) => Phase::RestoringOld,
            (Phase::DemotingNew, false) => Phase::Failed,
            (Phase::RestoringOld, true) => Phase::RolledBack,
            (Phase::RestoringOld, false) => Phase::Failed,
            (Phase::Committing, ok) => Phase::Done { commit_failed: !ok },
            (done, _) => done,
        }
    }
}

pub const START: Phase = Phase::Preparing;

#[cfg(test)]
mod tests {
    use super::*;

    /// Who may hold the service address after each order succeeded, for
    /// every sequence of outcomes: never both.
    #[test]
    fn every_outcome_sequence_ends_and_never_has_two_acts() {
        for bits in 0u32..(1 << 6) {
            let (mut old_act, mut new_act) = (true, false);
            let mut phase = START;
            let mut steps = 0;
            while !phase.is_final() {
                let ok = bits & (1 << steps) != 0;
                let order = phase.order().unwrap();
                if ok {
                    match order {
                        Order::Prepare(Member::Old) => old_act = false,
                        Order::Activate(Member::New) => new_act = true,
                        Order::Activate(Member::Old) => old_act = true,
                        Order::Demote(Member::New) => new_act = false,
                        Order::Commit(Member::Old) => old_act = false,
                        other => panic!("unexpected order {other:?}"),
                    }
                } else if order == Order::Activate(Member::New) {
                    // A failed activation may have half-happened: assume
                    // the worst until the demotion is confirmed.
                    new_act = true;
                }
                assert!(
                    !(old_act && new_act),
                    "two ACTs after {order:?} ok={ok} (bits {bits:b})"
                );
                phase = phase.next(ok);
                steps += 1;
                assert!(steps <= 4, "too many steps");
            }
            match phase {
                Phase::Done { .. } => assert!(new_act && !old_act),
                Phase::RolledBack => assert!(old_act && !new_act),
                Phase::Failed => {}
                _ => unreachable!(),
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
                Order::Prepare(Member::Old),
                Order::Activate(Member::New),
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
}
