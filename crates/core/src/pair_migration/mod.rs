//! S1, the pair-migration plan: move the members of an ACT/SBY pair to
//! other hosts so that only a VM doing no signal processing (the SBY) is
//! ever live-migrated (and so paused). Pure: the controller feeds events in
//! and executes the commands that come out.
//!
//! Sequence (as in JP6247648B2, generalised): confirm roles -> migrate the
//! SBY (if it has a target) -> switchover (if the ACT has a target) ->
//! migrate the new SBY (the old ACT) -> optionally switch back.

use serde::{Deserialize, Serialize};

/// What to do with a pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    /// The pair's members, in the pair record's order.
    pub members: [String; 2],
    /// Where each member runs now.
    pub hosts: [String; 2],
    /// Index of the member recorded as ACT.
    pub active: usize,
    /// Where each member must end up (`None`: stays where it is).
    pub targets: [Option<String>; 2],
    /// After the move, switch back so the original ACT is ACT again.
    pub switch_back: bool,
}

/// What the controller must do next. One command is outstanding at a time;
/// the controller answers each with the matching [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Ask both guests for their role; answer [`Event::Roles`].
    ConfirmRoles,
    /// Live-migrate member `member` to host `to`; answer [`Event::Migrated`].
    Migrate { member: usize, to: String },
    /// Graceful switchover: member `from` (ACT) hands over to the other;
    /// answer [`Event::Switched`].
    Switchover { from: usize },
    /// The plan is over; nothing more to do.
    Finish(Outcome),
}

/// How the plan's [`Command::Migrate`] runs: only ever an SBY moves, and
/// it serves no client, so QEMU may slow its vCPUs until the copy
/// converges (the ACT's updates wait for it a little longer, but none is
/// refused); a guest that dirties memory faster than the link carries it
/// would otherwise never finish moving.
pub fn standby_tuning() -> crate::agent_api::MigrationTuning {
    crate::agent_api::MigrationTuning {
        auto_converge: true,
        ..Default::default()
    }
}

/// The result of a switchover order (see `crate::switchover::Phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchResult {
    /// Roles swapped.
    Swapped,
    /// A step failed and the old ACT was restored: roles as before.
    RolledBack,
    /// A step failed and could not be undone: roles unknown.
    Failed,
}

/// The answer to [`Command::ConfirmRoles`] from what the two guests report
/// (in member order): member `i` is ACT only if it says ACT and the other SBY.
pub fn roles_event(reported: [Option<crate::role::Role>; 2]) -> Event {
    use crate::role::Role::{Act, Sby};
    let active = match reported {
        [Some(Act), Some(Sby)] => Some(0),
        [Some(Sby), Some(Act)] => Some(1),
        _ => None,
    };
    Event::Roles { active }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The guests' roles: `Some(i)` if member `i` is ACT and the other SBY;
    /// `None` if they are anything else (or did not answer).
    Roles { active: Option<usize> },
    /// The migration ordered by the last command ended.
    Migrated { ok: bool, error: Option<String> },
    /// The switchover ordered by the last command ended.
    Switched { result: SwitchResult },
    /// The outstanding command took too long; the controller gave up on it
    /// (a migration it aborted leaves the VM on its source).
    TimedOut,
}

/// How the plan ended, and where it left the pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub ok: bool,
    /// Why it stopped early (`None` when `ok`).
    pub reason: Option<String>,
    /// Where each member runs at the end.
    pub hosts: [String; 2],
    /// Which member is ACT at the end (`None`: unknown after a failed
    /// switchover; the controller must check the guests).
    pub active: Option<usize>,
    /// Migrations and switchovers carried out.
    pub migrations: u32,
    pub switchovers: u32,
}

impl Command {
    /// The outcome, if this is [`Command::Finish`].
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            Command::Finish(outcome) => Some(outcome),
            _ => None,
        }
    }

    pub fn is_finish(&self) -> bool {
        matches!(self, Command::Finish(_))
    }
}

/// Why a [`Setup`] cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("active member index {0} is not 0 or 1")]
    BadActive(usize),
    #[error("member {0} has an empty name")]
    EmptyMember(usize),
    #[error("both members are named `{0}`")]
    SameMembers(String),
    #[error("member {0} has an empty current host name")]
    EmptyHost(usize),
    #[error("member {0} has an empty target host name")]
    EmptyTarget(usize),
    #[error("nothing to move: no member has a target other than its current host")]
    NothingToMove,
}

/// Where the plan is: which command it waits on. `act` is the member the
/// plan believes is ACT while that command runs (after the guests confirmed
/// it); it only changes on [`SwitchResult::Swapped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "stage")]
enum Stage {
    /// Step 1: [`Command::ConfirmRoles`].
    ConfirmingRoles,
    /// Step 2: migrating the SBY, `1 - act`.
    MigratingSby { act: usize },
    /// Step 3: switchover from `act`.
    SwitchingOver { act: usize },
    /// Step 4: migrating the old ACT, `1 - act` (now SBY; `act` is the new
    /// ACT).
    MigratingOldAct { act: usize },
    /// Step 5: switching back from `act` (the new ACT) to the original one.
    SwitchingBack { act: usize },
    /// [`Command::Finish`] was issued.
    Finished,
}

/// The S1 plan for one pair: a pure, deterministic state machine. Feed it
/// the answer to each command with [`Plan::step`] and execute what comes
/// out, until [`Command::Finish`].
///
/// By construction: a member is only ever migrated while the plan believes
/// it is SBY; a switchover is only ordered from the member it believes is
/// ACT; at most two migrations and two switchovers are ordered; the
/// outcome's hosts only include migrations reported as successful; its
/// `active` is `None` only when a switchover did not end in `Swapped` or
/// `RolledBack` (it `Failed`, timed out, or was answered with an event that
/// does not fit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The setup, with targets equal to the current host removed.
    setup: Setup,
    stage: Stage,
    /// Where each member runs, as far as the plan knows.
    hosts: [String; 2],
    /// The ACT confirmed by the guests in step 1.
    confirmed: Option<usize>,
    /// Successful migrations and switchovers (`Swapped`) so far.
    migrations: u32,
    switchovers: u32,
    /// Commands issued so far, not counting `Finish` (the outstanding one
    /// is number `issued`).
    issued: u32,
    outstanding: Command,
}

impl Plan {
    /// Validates the setup and returns the plan with its first command
    /// (always [`Command::ConfirmRoles`]). A target equal to the member's
    /// current host means "stays".
    pub fn start(mut setup: Setup) -> Result<(Plan, Command), PlanError> {
        if setup.active > 1 {
            return Err(PlanError::BadActive(setup.active));
        }
        for i in 0..2 {
            if setup.members[i].is_empty() {
                return Err(PlanError::EmptyMember(i));
            }
            if setup.hosts[i].is_empty() {
                return Err(PlanError::EmptyHost(i));
            }
            if setup.targets[i].as_deref() == Some("") {
                return Err(PlanError::EmptyTarget(i));
            }
        }
        if setup.members[0] == setup.members[1] {
            return Err(PlanError::SameMembers(setup.members[0].clone()));
        }
        for i in 0..2 {
            if setup.targets[i].as_ref() == Some(&setup.hosts[i]) {
                setup.targets[i] = None;
            }
        }
        if setup.targets.iter().all(Option::is_none) {
            return Err(PlanError::NothingToMove);
        }
        let plan = Plan {
            hosts: setup.hosts.clone(),
            setup,
            stage: Stage::ConfirmingRoles,
            confirmed: None,
            migrations: 0,
            switchovers: 0,
            issued: 1,
            outstanding: Command::ConfirmRoles,
        };
        Ok((plan.clone(), Command::ConfirmRoles))
    }

    /// Feeds the answer to the outstanding command; returns the next
    /// command. After `Finish`, returns the same `Finish` for any event. An
    /// event that does not answer the outstanding command is a protocol
    /// error: the plan finishes (`ok: false`) without further orders.
    pub fn step(&mut self, ev: Event) -> Command {
        match (self.stage, ev) {
            (Stage::Finished, _) => self.outstanding.clone(),

            (Stage::ConfirmingRoles, Event::Roles { active: Some(i) }) if i < 2 => {
                self.confirmed = Some(i);
                self.after_roles(i)
            }
            (Stage::ConfirmingRoles, Event::Roles { active: Some(i) }) => self.fail(
                Some(self.setup.active),
                format!("roles not confirmed: the guests named member {i}, which does not exist"),
            ),
            (Stage::ConfirmingRoles, Event::Roles { active: None }) => self.fail(
                Some(self.setup.active),
                "roles not confirmed: the guests did not report one ACT and one SBY".into(),
            ),
            (Stage::ConfirmingRoles, Event::TimedOut) => self.fail(
                Some(self.setup.active),
                "roles not confirmed: timed out".into(),
            ),

            (Stage::MigratingSby { act }, Event::Migrated { ok: true, .. }) => {
                self.moved(1 - act);
                self.after_sby_moved(act)
            }
            (Stage::MigratingSby { act }, ev @ (Event::Migrated { .. } | Event::TimedOut)) => {
                let why = format!(
                    "migration of {} (SBY) to {} {}; the pair is as it was",
                    self.name(1 - act),
                    self.target(1 - act),
                    failure(&ev)
                );
                self.fail(Some(act), why)
            }

            (Stage::SwitchingOver { act }, Event::Switched { result }) => match result {
                SwitchResult::Swapped => {
                    self.switchovers += 1;
                    self.after_switch(1 - act)
                }
                SwitchResult::RolledBack => self.fail(
                    Some(act),
                    format!("switchover rolled back: {} is still ACT", self.name(act)),
                ),
                SwitchResult::Failed => {
                    let why = format!(
                        "switchover {} failed: roles unknown: check the guests",
                        self.arrow(act)
                    );
                    self.fail(None, why)
                }
            },
            (Stage::SwitchingOver { act }, Event::TimedOut) => {
                let why = format!(
                    "switchover {} timed out: roles unknown: check the guests",
                    self.arrow(act)
                );
                self.fail(None, why)
            }

            (Stage::MigratingOldAct { act }, Event::Migrated { ok: true, .. }) => {
                self.moved(1 - act);
                self.after_old_act_moved(act)
            }
            (Stage::MigratingOldAct { act }, ev @ (Event::Migrated { .. } | Event::TimedOut)) => {
                let why = format!(
                    "migration of {} (now SBY) to {} {}; the pair is healthy with roles swapped",
                    self.name(1 - act),
                    self.target(1 - act),
                    failure(&ev)
                );
                self.fail(Some(act), why)
            }

            (Stage::SwitchingBack { act }, Event::Switched { result }) => match result {
                SwitchResult::Swapped => {
                    self.switchovers += 1;
                    self.finish(Some(1 - act), None)
                }
                SwitchResult::RolledBack => self.fail(
                    Some(act),
                    "switch-back rolled back; the pair is healthy with roles swapped".into(),
                ),
                SwitchResult::Failed => {
                    let why = format!(
                        "switch-back {} failed: roles unknown: check the guests",
                        self.arrow(act)
                    );
                    self.fail(None, why)
                }
            },
            (Stage::SwitchingBack { act }, Event::TimedOut) => {
                let why = format!(
                    "switch-back {} timed out: roles unknown: check the guests",
                    self.arrow(act)
                );
                self.fail(None, why)
            }

            // Anything else does not answer the outstanding command.
            (stage, ev) => {
                // While a switchover runs its result is unknown; otherwise
                // the roles are what they were.
                let active = match stage {
                    Stage::ConfirmingRoles => Some(self.setup.active),
                    Stage::MigratingSby { act } | Stage::MigratingOldAct { act } => Some(act),
                    Stage::SwitchingOver { .. } | Stage::SwitchingBack { .. } => None,
                    Stage::Finished => return self.outstanding.clone(), // handled above
                };
                let mut why = format!(
                    "protocol error: got {} while waiting for {}",
                    event_name(&ev),
                    self.command_name(&self.outstanding)
                );
                if active.is_none() {
                    why.push_str(": roles unknown: check the guests");
                }
                self.fail(active, why)
            }
        }
    }

    /// The last command issued.
    pub fn outstanding(&self) -> &Command {
        &self.outstanding
    }

    pub fn is_finished(&self) -> bool {
        self.stage == Stage::Finished
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outstanding.outcome()
    }

    /// The setup as planned (targets equal to the current host removed).
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// One line of progress for operators, e.g. `step 3/5: switchover sa ->
    /// sb`.
    pub fn describe(&self) -> String {
        let total = self.total_steps();
        match &self.outstanding {
            Command::Finish(o) => {
                let mut s = if o.ok {
                    format!("done after {} steps: ", self.issued)
                } else {
                    format!(
                        "stopped at step {}/{}: {}; ",
                        self.issued,
                        total,
                        o.reason.as_deref().unwrap_or("unknown reason")
                    )
                };
                for i in 0..2 {
                    let role = match o.active {
                        Some(a) if a == i => " (ACT)",
                        Some(_) => " (SBY)",
                        None => " (role unknown)",
                    };
                    s.push_str(&format!("{} on {}{}, ", self.name(i), o.hosts[i], role));
                }
                s.push_str(&format!(
                    "{} migration(s), {} switchover(s)",
                    o.migrations, o.switchovers
                ));
                s
            }
            cmd => {
                let what = match (self.stage, cmd) {
                    (Stage::SwitchingBack { act }, _) => format!("switch back {}", self.arrow(act)),
                    (Stage::MigratingSby { .. }, Command::Migrate { member, to }) => format!(
                        "migrate {} (SBY) {} -> {}",
                        self.name(*member),
                        self.hosts[*member],
                        to
                    ),
                    (Stage::MigratingOldAct { .. }, Command::Migrate { member, to }) => format!(
                        "migrate {} (now SBY) {} -> {}",
                        self.name(*member),
                        self.hosts[*member],
                        to
                    ),
                    (_, cmd) => self.command_name(cmd),
                };
                format!("step {}/{}: {}", self.issued, total, what)
            }
        }
    }

    // --- transitions ---------------------------------------------------

    fn after_roles(&mut self, act: usize) -> Command {
        match self.setup.targets[1 - act].clone() {
            Some(to) => self.order(
                Stage::MigratingSby { act },
                Command::Migrate {
                    member: 1 - act,
                    to,
                },
            ),
            None => self.after_sby_moved(act),
        }
    }

    fn after_sby_moved(&mut self, act: usize) -> Command {
        if self.setup.targets[act].is_some() {
            self.order(
                Stage::SwitchingOver { act },
                Command::Switchover { from: act },
            )
        } else {
            self.finish(Some(act), None)
        }
    }

    /// `act` is the new ACT; the old one (`1 - act`) has a target, or there
    /// would have been no switchover.
    fn after_switch(&mut self, act: usize) -> Command {
        match self.setup.targets[1 - act].clone() {
            Some(to) => self.order(
                Stage::MigratingOldAct { act },
                Command::Migrate {
                    member: 1 - act,
                    to,
                },
            ),
            None => self.after_old_act_moved(act),
        }
    }

    fn after_old_act_moved(&mut self, act: usize) -> Command {
        if self.setup.switch_back {
            self.order(
                Stage::SwitchingBack { act },
                Command::Switchover { from: act },
            )
        } else {
            self.finish(Some(act), None)
        }
    }

    fn order(&mut self, stage: Stage, cmd: Command) -> Command {
        self.stage = stage;
        self.issued += 1;
        self.outstanding = cmd.clone();
        cmd
    }

    fn moved(&mut self, member: usize) {
        self.hosts[member] = self.target(member).to_string();
        self.migrations += 1;
    }

    fn fail(&mut self, active: Option<usize>, reason: String) -> Command {
        self.finish(active, Some(reason))
    }

    fn finish(&mut self, active: Option<usize>, reason: Option<String>) -> Command {
        self.stage = Stage::Finished;
        self.outstanding = Command::Finish(Outcome {
            ok: reason.is_none(),
            reason,
            hosts: self.hosts.clone(),
            active,
            migrations: self.migrations,
            switchovers: self.switchovers,
        });
        self.outstanding.clone()
    }

    // --- wording -------------------------------------------------------

    /// The number of commands the plan expects to issue in all, given what
    /// it knows (before the roles are confirmed: the recorded ones).
    fn total_steps(&self) -> u32 {
        let act = self.confirmed.unwrap_or(self.setup.active);
        let moves_act = self.setup.targets[act].is_some();
        1 + u32::from(self.setup.targets[1 - act].is_some())
            + 2 * u32::from(moves_act)
            + u32::from(moves_act && self.setup.switch_back)
    }

    fn name(&self, member: usize) -> &str {
        &self.setup.members[member]
    }

    fn target(&self, member: usize) -> &str {
        self.setup.targets[member].as_deref().unwrap_or("?")
    }

    /// `act -> other`, by name.
    fn arrow(&self, act: usize) -> String {
        format!("{} -> {}", self.name(act), self.name(1 - act))
    }

    fn command_name(&self, cmd: &Command) -> String {
        match cmd {
            Command::ConfirmRoles => {
                format!("confirm roles of {} and {}", self.name(0), self.name(1))
            }
            Command::Migrate { member, to } => format!("migrate {} to {}", self.name(*member), to),
            Command::Switchover { from } => format!("switchover {}", self.arrow(*from)),
            Command::Finish(_) => "finish".into(),
        }
    }
}

/// How a migration ended badly, for a reason.
fn failure(ev: &Event) -> String {
    match ev {
        Event::Migrated { error: Some(e), .. } => format!("failed: {e}"),
        Event::Migrated { .. } => "failed (no error given)".into(),
        _ => "timed out".into(),
    }
}

fn event_name(ev: &Event) -> String {
    match ev {
        Event::Roles { active: Some(i) } => format!("roles (member {i} ACT)"),
        Event::Roles { active: None } => "roles (no ACT)".into(),
        Event::Migrated { ok: true, .. } => "migrated (ok)".into(),
        Event::Migrated { ok: false, .. } => "migrated (failed)".into(),
        Event::Switched { result } => format!("switched ({result:?})"),
        Event::TimedOut => "timed out".into(),
    }
}

#[cfg(test)]
mod tests;
