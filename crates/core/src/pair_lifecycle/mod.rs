//! The life of an ACT/SBY pair as one pure set of rules: which workflow may
//! begin in which phase, which phase each leaves behind, what a workflow
//! journals on the pair before each step, and what a controller does with
//! a pair it finds mid-workflow with nobody running it (its controller
//! died, lost office, or could not record the end).
//!
//! ```text
//!            create                     switchover / move / repair
//!  (none) ──────────> Creating ─> Configuring ─> Ready ───────────────> SwitchingOver
//!                         │            │          ▲  ▲                   Moving
//!                         └── fail ────┴> Failed  │  └── end (any outcome) Repairing
//!                                          │      │
//!           delete (Ready, Failed, Creating, Configuring, Deleting) ──> Deleting ─> (gone)
//!
//!  a transient phase whose journaled operation runs nowhere:
//!    Creating, Configuring, Deleting            -> the workflow is run again (its steps repeat safely)
//!    SwitchingOver, Moving, Repairing           -> [`recover`]: settled from what the guests report
//! ```
//!
//! Every order of a settlement carries a raised role token, so a guest
//! refuses whatever the gone controller may still have had in flight.

mod recover;
#[cfg(test)]
mod tests;

pub use recover::{recover, Fix, Recovery};

use crate::model::pair::PairPhase;
use serde::{Deserialize, Serialize};

/// One of the two members of a pair, by its place in `Pair::members`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const BOTH: [Slot; 2] = [Slot::A, Slot::B];

    /// The index into the pair's two-element arrays.
    pub fn i(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    /// The slot of index `i` (0 or 1); `None` for anything else.
    pub fn of(i: usize) -> Option<Slot> {
        match i {
            0 => Some(Slot::A),
            1 => Some(Slot::B),
            _ => None,
        }
    }
}

impl From<Slot> for u8 {
    fn from(s: Slot) -> u8 {
        s.i() as u8
    }
}

impl TryFrom<u8> for Slot {
    type Error = String;
    fn try_from(v: u8) -> Result<Slot, String> {
        Slot::of(v as usize).ok_or_else(|| format!("member slot {v}: a pair has members 0 and 1"))
    }
}

/// The workflows that own a pair while they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workflow {
    Create,
    Switchover,
    /// S1 pair migration (also each pair of a host drain).
    Move,
    /// Repair of a guest that lost its role (`model::repair`).
    Repair,
    Delete,
    /// Settlement of a pair left mid-workflow ([`recover`]).
    Recover,
    /// Promotion of the SBY once the ACT's host is fenced
    /// (`model::failover`).
    Failover,
    /// Re-creation of a member lost with its fenced host, as the new SBY.
    Heal,
}

impl Workflow {
    pub const ALL: [Workflow; 8] = [
        Workflow::Create,
        Workflow::Switchover,
        Workflow::Move,
        Workflow::Repair,
        Workflow::Delete,
        Workflow::Recover,
        Workflow::Failover,
        Workflow::Heal,
    ];

    /// The phase the pair is in while this workflow runs.
    pub fn phase(self) -> PairPhase {
        match self {
            Workflow::Create => PairPhase::Creating,
            Workflow::Switchover => PairPhase::SwitchingOver,
            Workflow::Move => PairPhase::Moving,
            Workflow::Repair | Workflow::Recover | Workflow::Failover | Workflow::Heal => {
                PairPhase::Repairing
            }
            Workflow::Delete => PairPhase::Deleting,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Workflow::Create => "create",
            Workflow::Switchover => "switchover",
            Workflow::Move => "move",
            Workflow::Repair => "repair",
            Workflow::Delete => "delete",
            Workflow::Recover => "recover",
            Workflow::Failover => "failover",
            Workflow::Heal => "heal",
        }
    }
}

/// Why a workflow may not begin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("pair is {}, not ready: wait for the running operation to finish", .0.as_str())]
    Busy(PairPhase),
    #[error("pair is {}: delete it and create it again", .0.as_str())]
    Failed(PairPhase),
    #[error("pair is being deleted")]
    Deleting,
    #[error("a pair is created only once: its record exists")]
    Exists,
}

/// Whether workflow `w` may begin on a pair in `phase`; if so, the phase it
/// puts the pair in.
pub fn begin(phase: PairPhase, w: Workflow) -> Result<PairPhase, Refusal> {
    use PairPhase as P;
    match (w, phase) {
        (Workflow::Create, _) => Err(Refusal::Exists),
        (Workflow::Delete, P::SwitchingOver | P::Moving | P::Repairing) => {
            Err(Refusal::Busy(phase))
        }
        (Workflow::Delete, _) => Ok(P::Deleting),
        (_, P::Ready) => Ok(w.phase()),
        (_, P::Deleting) => Err(Refusal::Deleting),
        (_, P::Failed) => Err(Refusal::Failed(phase)),
        (_, _) => Err(Refusal::Busy(phase)),
    }
}

/// The phase a pair is left in when workflow `w` ends (`ok`: it did what
/// it was asked), given the phase it is in now. A workflow never takes the
/// pair from another that began meanwhile (a delete during a create).
pub fn end(phase: PairPhase, w: Workflow, ok: bool) -> PairPhase {
    use PairPhase as P;
    let owns = match w {
        Workflow::Create => matches!(phase, P::Creating | P::Configuring),
        _ => phase == w.phase(),
    };
    if !owns {
        return phase;
    }
    match w {
        Workflow::Create if ok => P::Ready,
        Workflow::Create => P::Failed,
        // A delete that could not finish stays deleting; it is run again.
        Workflow::Delete => P::Deleting,
        // Role workflows always end ready: the record follows the guests
        // (switched or rolled back), and the repair loop judges the rest.
        Workflow::Switchover
        | Workflow::Move
        | Workflow::Repair
        | Workflow::Recover
        | Workflow::Failover
        | Workflow::Heal => P::Ready,
    }
}

/// What a controller does with a pair whose journaled operation runs in no
/// controller (see the module's diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphan {
    /// Nothing to do: the pair is at rest.
    AtRest,
    /// Run this workflow again from its beginning.
    Rerun(Workflow),
    /// Settle its roles from the guests' reports ([`recover`]).
    Settle,
}

pub fn orphan(phase: PairPhase) -> Orphan {
    use PairPhase as P;
    match phase {
        P::Ready | P::Failed => Orphan::AtRest,
        P::Creating | P::Configuring => Orphan::Rerun(Workflow::Create),
        P::Deleting => Orphan::Rerun(Workflow::Delete),
        P::SwitchingOver | P::Moving | P::Repairing => Orphan::Settle,
    }
}

/// The step a workflow is about to take, written on the pair (with the
/// operation's id) before the shell carries it out, so whoever finds the
/// pair later knows what may have half-happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Intent {
    /// Waiting for the members to boot.
    Boot,
    /// Giving the members the service address, their peer, their roles.
    Configure,
    /// Switching the ACT over from `from` (token as raised).
    Switchover { from: Slot, token: u64 },
    /// Live-migrating member `slot` to host `to`.
    Migrate { slot: Slot, to: String },
    /// Giving roles to repair or settle the pair (token as raised).
    Roles { token: u64 },
    /// Asking the guests for their roles.
    Confirm,
    /// Removing the members.
    Remove,
    /// Re-creating member `slot` (its host fenced) on host `on`.
    Replace { slot: Slot, on: String },
}

impl Intent {
    pub fn describe(&self, members: &[String; 2]) -> String {
        match self {
            Intent::Boot => "waiting for the members to boot".into(),
            Intent::Configure => "configuring the members and giving roles".into(),
            Intent::Switchover { from, token } => format!(
                "switching over {} → {} (token {token})",
                members[from.i()],
                members[from.other().i()]
            ),
            Intent::Migrate { slot, to } => format!("migrating {} to {to}", members[slot.i()]),
            Intent::Roles { token } => format!("giving roles (token {token})"),
            Intent::Confirm => "confirming roles with the guests".into(),
            Intent::Remove => "removing the members".into(),
            Intent::Replace { slot, on } => {
                format!("re-creating {} on {on}", members[slot.i()])
            }
        }
    }
}

/// The operation that owns a pair, kept on the pair's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// The operation's id (`ops/<id>`).
    pub op: String,
    pub workflow: Workflow,
    /// The step under way, if one was begun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
}
