//! S5's site switch as a pure state machine: which order to give next,
//! given how the last one went. The VM runs in one site (the active side)
//! and is paused in the other (its replica, whose element buffers what its
//! site sends the VM). A switch moves the VM to the paused side with its
//! latest state; each side's buffer is processed by the VM, in order, when
//! it runs there.
//!
//! ```text
//! HandingOff (active: buffer, last checkpoint, VM left paused)
//!   ok   -> Activating (paused side: run from that state, drain buffer)
//!   fail -> Aborted            the active agent resumed the VM itself
//! Activating
//!   ok   -> Recording (the store: the VM's host is the new side)
//!   fail -> Resuming (old active: run on, drain its buffer)
//! Resuming
//!   ok   -> Aborted            fail -> Failed (the VM is paused in both
//!                                      sites: the operator resumes it)
//! Recording
//!   ok   -> StandingBy (old active: stop QEMU, buffer for a new replica)
//!   fail -> StandingBy         the VM runs on the new side: the record
//!                              catches up at the next pass (warned)
//! StandingBy
//!   ok   -> Protecting (new active: epochs towards the old side)
//!   fail -> Done { .. }        no replica yet: the controller re-protects
//! Protecting
//!   ok -> Done                 fail -> Done { protect_failed }
//! ```
//!
//! Activation is the point of no return: from it on the VM runs on the
//! new side and the old one only ever becomes its replica.

use crate::site::SiteSide;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    HandingOff,
    Activating,
    Resuming,
    Recording,
    StandingBy,
    Protecting,
}

/// The order the interpreter carries out for a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// To the active side's agent.
    Handoff,
    /// To the paused side's agent.
    Activate,
    /// To the active side's agent: undo the handoff.
    Resume,
    /// To the store.
    Record,
    /// To the old active side's agent.
    Standby,
    /// To the new active side's agent: epochs towards the old side.
    Protect,
}

/// What went wrong after the point of no return (the VM runs on the new
/// side in any case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Afterwards {
    pub record_failed: bool,
    pub standby_failed: bool,
    pub protect_failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum State {
    At {
        step: Step,
    },
    /// The VM runs on the new side.
    Done,
    /// The VM runs on where it was.
    Aborted,
    /// The VM is paused on both sides.
    Failed,
}

/// How to take over a switch left half-done (see
/// [`Switch::left_half_done`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Takeover {
    /// Where it goes on from.
    pub switch: Switch,
    /// The epoch the VM was handed off at.
    pub epoch: u64,
    /// It was recorded already: the record's home is the switch's new
    /// side, its backup the old one.
    pub recorded: bool,
}

/// A switch in progress: where it is, and what failed after activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub state: State,
    pub afterwards: Afterwards,
}

impl Default for Switch {
    fn default() -> Self {
        Switch::start()
    }
}

impl Switch {
    pub fn start() -> Switch {
        Switch {
            state: State::At {
                step: Step::HandingOff,
            },
            afterwards: Afterwards::default(),
        }
    }

    /// A switch taken over at `step` (its controller is gone: a new one
    /// settles it from what the two sides report).
    pub fn at(step: Step) -> Switch {
        Switch {
            state: State::At { step },
            afterwards: Afterwards::default(),
        }
    }

    /// A switch whose controller is gone, as the VM's two sides show it
    /// (`home`: the host its record names, `backup`: its replica's), or
    /// `None` if no switch was left half-done:
    /// - `home` is handed off: finished from its recording on if `backup`
    ///   runs the VM (its activation went through), else called off;
    /// - `home` runs the VM and `backup` is handed off (the switch was
    ///   recorded, its old side not yet put on standby): finished from
    ///   the standby, `backup` being the old side.
    pub fn left_half_done(home: &SiteSide, backup: &SiteSide) -> Option<Takeover> {
        match (home.handed_off, backup.handed_off) {
            (Some(epoch), _) => Some(Takeover {
                switch: Switch::at(if backup.active {
                    Step::Recording
                } else {
                    Step::Resuming
                }),
                epoch,
                recorded: false,
            }),
            (None, Some(epoch)) if home.active => Some(Takeover {
                switch: Switch::at(Step::StandingBy),
                epoch,
                recorded: true,
            }),
            _ => None,
        }
    }

    /// The order to give now, if any.
    pub fn order(&self) -> Option<Order> {
        let State::At { step } = self.state else {
            return None;
        };
        Some(match step {
            Step::HandingOff => Order::Handoff,
            Step::Activating => Order::Activate,
            Step::Resuming => Order::Resume,
            Step::Recording => Order::Record,
            Step::StandingBy => Order::Standby,
            Step::Protecting => Order::Protect,
        })
    }

    pub fn is_over(&self) -> bool {
        !matches!(self.state, State::At { .. })
    }

    /// Whether the VM runs on the new side (activation succeeded).
    pub fn moved(&self) -> bool {
        matches!(
            self.state,
            State::Done
                | State::At {
                    step: Step::Recording | Step::StandingBy | Step::Protecting
                }
        )
    }

    /// The next state after the current order went `ok` (or not).
    pub fn next(mut self, ok: bool) -> Switch {
        let State::At { step } = self.state else {
            return self;
        };
        let at = |step| State::At { step };
        let a = &mut self.afterwards;
        self.state = match (step, ok) {
            (Step::HandingOff, true) => at(Step::Activating),
            (Step::HandingOff, false) => State::Aborted,
            (Step::Activating, true) => at(Step::Recording),
            (Step::Activating, false) => at(Step::Resuming),
            (Step::Resuming, true) => State::Aborted,
            (Step::Resuming, false) => State::Failed,
            (Step::Recording, _) => {
                a.record_failed = !ok;
                at(Step::StandingBy)
            }
            (Step::StandingBy, true) => at(Step::Protecting),
            (Step::StandingBy, false) => {
                a.standby_failed = true;
                State::Done
            }
            (Step::Protecting, _) => {
                a.protect_failed = !ok;
                State::Done
            }
        };
        self
    }
}

#[cfg(test)]
#[path = "site_switch_tests.rs"]
mod tests;
