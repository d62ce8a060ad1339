//! S3's restart control unit, pure: given a VM's restart counters, the
//! policy and a failure just detected, which phase to run, whether the
//! pair's SBY takes over first, and whether the fast path applies. Time is
//! an argument; the counters are plain data the shell keeps on the external
//! disk.
//!
//! ```text
//!  failure (cause) ──> lowest phase the cause needs (process exit: PH0.5,
//!                      hang: PH1.0, middleware silent: PH2.0, guest
//!                      silent / panic / QEMU crash: PH2.5, data damaged:
//!                      PH3.0)
//!                 ──> counters older than their probation window are
//!                      forgotten (AMF's probation)
//!                 ──> climb while a phase has used up its threshold:
//!                      PH0.5 → PH1.0 → PH2.0 → PH2.5 → PH3.0 → PH3.5 → autoheal
//!  fast path (the seed's point): the ACT's first failure (nothing counted
//!  within probation) that needs PH2.5 or more skips the climb: the ACT is
//!  re-created on a spare host and, at the same time, the SBY rebooted;
//!  whichever is up first becomes ACT.
//! ```

pub mod record;

use serde::{Deserialize, Serialize};

/// The phases, in escalation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    /// One process reset.
    #[serde(rename = "PH0.5")]
    Ph0_5,
    /// The application re-initialized (volatile state reset).
    #[serde(rename = "PH1.0")]
    Ph1_0,
    /// Application and middleware re-initialized.
    #[serde(rename = "PH2.0")]
    Ph2_0,
    /// The guest OS rebooted, the current files reloaded from the external
    /// disk.
    #[serde(rename = "PH2.5")]
    Ph2_5,
    /// As PH2.5, from the last LAF backup.
    #[serde(rename = "PH3.0")]
    Ph3_0,
    /// As PH2.5, from the REF data set.
    #[serde(rename = "PH3.5")]
    Ph3_5,
    /// The VM deleted and re-created on other hardware (a spare host
    /// first) from its init info.
    #[serde(rename = "autoheal")]
    Autoheal,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Ph0_5,
        Phase::Ph1_0,
        Phase::Ph2_0,
        Phase::Ph2_5,
        Phase::Ph3_0,
        Phase::Ph3_5,
        Phase::Autoheal,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The next wider phase (autoheal is the last).
    pub fn next(self) -> Phase {
        Phase::ALL[(self.index() + 1).min(Phase::ALL.len() - 1)]
    }

    /// The phase's name as the seed and the API write it (`PH0.5`).
    pub fn label(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Whether the phase restarts the guest OS or more.
    pub fn restarts_os(self) -> bool {
        self >= Phase::Ph2_5
    }

    /// The phases the guest performs itself, as its protocol names them.
    pub fn in_guest(self) -> Option<crate::guest_proto::RestartPhase> {
        use crate::guest_proto::RestartPhase as R;
        match self {
            Phase::Ph0_5 => Some(R::Ph0_5),
            Phase::Ph1_0 => Some(R::Ph1_0),
            Phase::Ph2_0 => Some(R::Ph2_0),
            _ => None,
        }
    }
}

/// What was detected, and by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The middleware saw the service process exit.
    ProcessExited,
    /// The service's health hook failed.
    HealthFailed,
    /// The service stopped answering (its health hook timed out).
    ServiceHung,
    /// The agent heard no heartbeat from the middleware, but QEMU runs
    /// and the guest kernel answers.
    MiddlewareSilent,
    /// Nothing answers in the guest (watchdog NG, kernel panic).
    GuestSilent,
    /// The VM's QEMU process died.
    QemuCrashed,
    /// The service's data is damaged (it says so at start).
    DataDamaged,
}

impl Cause {
    /// The narrowest phase that can clear this cause.
    pub fn minimum_phase(self) -> Phase {
        match self {
            Cause::ProcessExited => Phase::Ph0_5,
            Cause::HealthFailed | Cause::ServiceHung => Phase::Ph1_0,
            Cause::MiddlewareSilent => Phase::Ph2_0,
            Cause::GuestSilent | Cause::QemuCrashed => Phase::Ph2_5,
            Cause::DataDamaged => Phase::Ph3_0,
        }
    }
}

/// How far each phase may be repeated before the next is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhasePolicy {
    /// Runs of this phase within the probation window before escalating.
    pub threshold: u32,
    /// A phase's count is forgotten once it last ran this long ago.
    pub probation_ms: u64,
}

/// A pair's or VM's escalation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Indexed by [`Phase`] order.
    pub phases: [PhasePolicy; 7],
    /// The fast path (on by default).
    pub fast_path: bool,
    /// How often a LAF backup of the service data is taken.
    #[serde(default = "default_laf_every")]
    pub laf_every_ms: u64,
}

fn default_laf_every() -> u64 {
    crate::service_data::DEFAULT_LAF_EVERY_MS
}

impl Default for Policy {
    /// Three tries of each in-guest phase and two of each reboot within
    /// ten minutes, autoheal always allowed.
    fn default() -> Policy {
        let p = |threshold, minutes: u64| PhasePolicy {
            threshold,
            probation_ms: minutes * 60_000,
        };
        Policy {
            phases: [
                p(3, 10),
                p(3, 10),
                p(2, 10),
                p(2, 10),
                p(1, 30),
                p(1, 30),
                p(u32::MAX, 60),
            ],
            fast_path: true,
            laf_every_ms: default_laf_every(),
        }
    }
}

impl Policy {
    pub fn of(&self, phase: Phase) -> PhasePolicy {
        self.phases[phase.index()]
    }

    /// This policy with `change` applied; refused, naming the field, if a
    /// value is out of range (nothing is changed then).
    pub fn changed(&self, change: &PolicyChange) -> Result<Policy, String> {
        let mut next = *self;
        for (phase, c) in &change.phases {
            let name = phase.label();
            let p = &mut next.phases[phase.index()];
            if let Some(t) = c.threshold {
                if t == 0 {
                    return Err(format!("phases.{name}.threshold: must be at least 1"));
                }
                p.threshold = t;
            }
            if let Some(ms) = c.probation_ms {
                if !(MIN_PROBATION_MS..=MAX_PROBATION_MS).contains(&ms) {
                    return Err(format!(
                        "phases.{name}.probation_ms: {ms} is outside {MIN_PROBATION_MS}..={MAX_PROBATION_MS}"
                    ));
                }
                p.probation_ms = ms;
            }
        }
        if let Some(f) = change.fast_path {
            next.fast_path = f;
        }
        if let Some(ms) = change.laf_every_ms {
            use crate::service_data::{MAX_LAF_EVERY_MS as MAX, MIN_LAF_EVERY_MS as MIN};
            if !(MIN..=MAX).contains(&ms) {
                return Err(format!("laf_every_ms: {ms} is outside {MIN}..={MAX}"));
            }
            next.laf_every_ms = ms;
        }
        Ok(next)
    }

    /// The policy as the operator reads it: phases by name.
    pub fn view(&self) -> PolicyView {
        PolicyView {
            phases: Phase::ALL.iter().map(|&p| (p, self.of(p))).collect(),
            fast_path: self.fast_path,
            laf_every_ms: self.laf_every_ms,
        }
    }
}

/// Shortest probation window a policy may set (one second).
pub const MIN_PROBATION_MS: u64 = 1_000;
/// Longest probation window a policy may set (30 days).
pub const MAX_PROBATION_MS: u64 = 30 * 24 * 3_600_000;

/// A change to a policy: only what is given changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    #[serde(default)]
    pub phases: std::collections::BTreeMap<Phase, PhaseChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub laf_every_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation_ms: Option<u64>,
}

/// A policy by phase name (`GET /v1/vms/{name}/policy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    pub phases: std::collections::BTreeMap<Phase, PhasePolicy>,
    pub fast_path: bool,
    pub laf_every_ms: u64,
}

/// One phase's count within its probation window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub runs: u32,
    pub last_ms: u64,
}

/// A VM's restart counters, as kept on the external disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Indexed by [`Phase`] order.
    pub phases: [Count; 7],
}

/// The failing VM's place in its pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// ACT, with an SBY that can take over.
    ActWithSby,
    /// ACT with no usable SBY (or a lone VM).
    Alone,
    /// The SBY.
    Sby,
}

/// What to do about one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub phase: Phase,
    /// The SBY takes over before the failed ACT is restarted.
    pub failover_first: bool,
    /// The fast path: the ACT is re-created on a spare host (autoheal) while
    /// the SBY is rebooted; whichever is up first becomes ACT.
    pub fast_path: bool,
}

impl Counters {
    /// Counters with every count older than its probation window dropped.
    pub fn expired(&self, policy: &Policy, now_ms: u64) -> Counters {
        let mut out = self.clone();
        for phase in Phase::ALL {
            let c = &mut out.phases[phase.index()];
            if c.runs > 0 && now_ms.saturating_sub(c.last_ms) > policy.of(phase).probation_ms {
                *c = Count::default();
            }
        }
        out
    }

    /// Nothing counted (within probation, if `expired` first).
    pub fn is_clear(&self) -> bool {
        self.phases.iter().all(|c| c.runs == 0)
    }

    fn record(&mut self, phase: Phase, now_ms: u64) {
        let c = &mut self.phases[phase.index()];
        c.runs = c.runs.saturating_add(1);
        c.last_ms = now_ms;
    }
}

/// Where the failing VM stands: outside a pair, the pair's SBY, or its
/// ACT, with an SBY standing by only if that one's guest reports SBY.
pub fn standing(in_pair: bool, is_sby: bool, sby_role: Option<crate::role::Role>) -> Standing {
    match (in_pair, is_sby, sby_role) {
        (false, _, _) => Standing::Alone,
        (true, true, _) => Standing::Sby,
        (true, false, Some(crate::role::Role::Sby)) => Standing::ActWithSby,
        (true, false, _) => Standing::Alone,
    }
}

/// How PH2.5 reboots a VM's guest OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reboot {
    /// Its QEMU died: start it again on the VM's disk.
    StartQemu,
    /// The guest already rebooted by itself (a panic): let it boot.
    LetItBoot,
    /// A hard reset.
    Reset,
}

pub fn reboot(qemu_dead: bool, rebooted_itself: bool) -> Reboot {
    match (qemu_dead, rebooted_itself) {
        (true, _) => Reboot::StartQemu,
        (false, true) => Reboot::LetItBoot,
        (false, false) => Reboot::Reset,
    }
}

/// Whether PH2.5 notes the current files for the rebooted guest (its
/// phase's sources decide which, if any): not when the guest rebooted by
/// itself and already reports a role again, which its pair gave it along
/// with the state (a set noted now would never be taken).
pub fn reloads(how: Reboot, role: Option<crate::role::Role>) -> bool {
    use crate::role::Role;
    !(how == Reboot::LetItBoot && matches!(role, Some(Role::Act | Role::Sby)))
}

/// The restart control unit's decision for a failure of `cause` at
/// `now_ms`: the plan and the counters to store (before acting on it).
pub fn decide(
    counters: &Counters,
    policy: &Policy,
    cause: Cause,
    standing: Standing,
    now_ms: u64,
) -> (Plan, Counters) {
    let mut next = counters.expired(policy, now_ms);
    let first = next.is_clear();
    let needed = cause.minimum_phase();
    if policy.fast_path && first && needed.restarts_os() && standing == Standing::ActWithSby {
        next.record(Phase::Autoheal, now_ms);
        let plan = Plan {
            phase: Phase::Autoheal,
            failover_first: false,
            fast_path: true,
        };
        return (plan, next);
    }
    let phase = climb(&next, policy, needed);
    next.record(phase, now_ms);
    let plan = Plan {
        phase,
        failover_first: standing == Standing::ActWithSby,
        fast_path: false,
    };
    (plan, next)
}

/// The narrowest phase from `from` up that has not used up its threshold
/// (autoheal never does).
fn climb(counters: &Counters, policy: &Policy, from: Phase) -> Phase {
    let mut phase = from;
    while phase != Phase::Autoheal
        && counters.phases[phase.index()].runs >= policy.of(phase).threshold
    {
        phase = phase.next();
    }
    phase
}

/// When phase `failed` could not be carried out, the next wider phase
/// (climbing past used-up ones) and the counters to store; `None` after
/// autoheal, there is nothing wider. No SBY takes over first: a
/// switchover the failed phase needed was already tried.
pub fn escalate(
    counters: &Counters,
    policy: &Policy,
    failed: Phase,
    now_ms: u64,
) -> Option<(Plan, Counters)> {
    if failed == Phase::Autoheal {
        return None;
    }
    let mut next = counters.expired(policy, now_ms);
    let phase = climb(&next, policy, failed.next());
    next.record(phase, now_ms);
    let plan = Plan {
        phase,
        failover_first: false,
        fast_path: false,
    };
    Some((plan, next))
}

#[cfg(test)]
mod tests;
