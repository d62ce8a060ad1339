//! What the external disk keeps of a VM's restarts: its counters, the
//! last failure acted on (a report repeats a failure until the next one,
//! and a controller that restarts must not act on it twice), and a bounded
//! history for the operator. Pure: `on_failure` is `decide` plus that
//! bookkeeping.

use super::{decide, escalate, Cause, Counters, Phase, Plan, Policy, Standing};
use serde::{Deserialize, Serialize};

/// History entries kept per VM (the oldest go first).
pub const HISTORY_KEEP: usize = 64;

/// One failure and what was decided about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub at_ms: u64,
    /// The failure's id, as its agent gave it.
    pub failure: String,
    pub cause: Cause,
    pub detail: String,
    /// The host the VM ran on.
    pub host: String,
    pub standing: Standing,
    pub phase: Phase,
    pub failover_first: bool,
    pub fast_path: bool,
    /// How it ended, once it has (`None`: under way, or the controller
    /// stopped before it could say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub ok: bool,
    pub message: String,
    pub at_ms: u64,
}

/// A VM's restart record, one object of kind `counters` on the external
/// disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub counters: Counters,
    /// The id of the last failure acted on.
    #[serde(default)]
    pub handled: Option<String>,
    #[serde(default)]
    pub history: Vec<Entry>,
}

/// A failure as the restart unit sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub id: String,
    pub cause: Cause,
    pub detail: String,
    pub host: String,
}

/// A VM's restart record as the operator reads it (`duplex vm history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub vm: String,
    /// Each phase that ran, with its count within probation as of the
    /// last failure and when it last ran.
    pub counters: Vec<PhaseCount>,
    /// Oldest first, at most [`HISTORY_KEEP`].
    pub history: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseCount {
    pub phase: Phase,
    pub runs: u32,
    pub last_ms: u64,
}

impl Record {
    /// The operator's view of this record.
    pub fn history(&self, vm: &str) -> History {
        let counters = Phase::ALL
            .iter()
            .zip(self.counters.phases.iter())
            .filter(|(_, c)| c.runs > 0)
            .map(|(&phase, c)| PhaseCount {
                phase,
                runs: c.runs,
                last_ms: c.last_ms,
            })
            .collect();
        History {
            vm: vm.to_string(),
            counters,
            history: self.history.clone(),
        }
    }

    /// The plan for `failure` and the record to store before acting on
    /// it; `None` if this failure was acted on already.
    pub fn on_failure(
        &self,
        policy: &Policy,
        failure: &Failure,
        standing: Standing,
        now_ms: u64,
    ) -> Option<(Plan, Record)> {
        if self.handled.as_deref() == Some(failure.id.as_str()) {
            return None;
        }
        let (plan, counters) = decide(&self.counters, policy, failure.cause, standing, now_ms);
        let mut next = Record {
            counters,
            handled: Some(failure.id.clone()),
            history: self.history.clone(),
        };
        next.push(Entry {
            at_ms: now_ms,
            failure: failure.id.clone(),
            cause: failure.cause,
            detail: failure.detail.clone(),
            host: failure.host.clone(),
            standing,
            phase: plan.phase,
            failover_first: plan.failover_first,
            fast_path: plan.fast_path,
            outcome: None,
        });
        Some((plan, next))
    }

    /// The plan and the record to store when the phase run for failure
    /// `id` failed (`why`): the next wider phase, noted as a new history
    /// entry of the same failure. `None` if that phase was autoheal, or a
    /// newer failure was acted on since (it escalates by itself).
    pub fn on_phase_failed(
        &self,
        policy: &Policy,
        id: &str,
        why: &str,
        now_ms: u64,
    ) -> Option<(Plan, Record)> {
        if self.handled.as_deref() != Some(id) {
            return None;
        }
        let last = self.history.iter().rev().find(|e| e.failure == id)?;
        let (plan, counters) = escalate(&self.counters, policy, last.phase, now_ms)?;
        let entry = Entry {
            at_ms: now_ms,
            detail: format!("{} failed: {why}", last.phase.label()),
            phase: plan.phase,
            failover_first: false,
            fast_path: false,
            outcome: None,
            ..last.clone()
        };
        let mut next = Record {
            counters,
            ..self.clone()
        };
        next.push(entry);
        Some((plan, next))
    }

    fn push(&mut self, entry: Entry) {
        self.history.push(entry);
        let excess = self.history.len().saturating_sub(HISTORY_KEEP);
        self.history.drain(..excess);
    }

    /// The record with the outcome of failure `id` noted (unchanged if
    /// that entry is gone).
    pub fn concluded(&self, id: &str, outcome: Outcome) -> Record {
        let mut next = self.clone();
        if let Some(e) = next.history.iter_mut().rev().find(|e| e.failure == id) {
            e.outcome = Some(outcome);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(id: &str, cause: Cause) -> Failure {
        Failure {
            id: id.into(),
            cause,
            detail: "d".into(),
            host: "h1".into(),
        }
    }

    #[test]
    fn a_failure_is_acted_on_once_and_counted() {
        let p = Policy::default();
        let r = Record::default();
        let f = failure("a@1.1", Cause::ProcessExited);
        let (plan, r) = r.on_failure(&p, &f, Standing::Sby, 1000).unwrap();
        assert_eq!(plan.phase, Phase::Ph0_5);
        assert_eq!(r.handled.as_deref(), Some("a@1.1"));
        assert_eq!(r.counters.phases[0].runs, 1);
        assert!(r.on_failure(&p, &f, Standing::Sby, 2000).is_none());
        let (plan, r) = r
            .on_failure(
                &p,
                &failure("a@1.2", Cause::ProcessExited),
                Standing::Sby,
                3000,
            )
            .unwrap();
        assert_eq!(plan.phase, Phase::Ph0_5);
        assert_eq!(r.history.len(), 2);
        let r = r.concluded(
            "a@1.1",
            Outcome {
                ok: true,
                message: "m".into(),
                at_ms: 4000,
            },
        );
        assert!(r.history[0].outcome.as_ref().is_some_and(|o| o.ok));
        assert!(r.history[1].outcome.is_none());
    }

    #[test]
    fn history_is_bounded_and_keeps_the_newest() {
        let p = Policy::default();
        let mut r = Record::default();
        for i in 0..(HISTORY_KEEP as u64 + 10) {
            let f = failure(&format!("a@1.{i}"), Cause::ProcessExited);
            r = r.on_failure(&p, &f, Standing::Sby, i * 1000).unwrap().1;
        }
        assert_eq!(r.history.len(), HISTORY_KEEP);
        assert_eq!(
            r.history.last().unwrap().failure,
            format!("a@1.{}", HISTORY_KEEP + 9)
        );
    }

    #[test]
    fn a_record_survives_its_json() {
        let p = Policy::default();
        let f = failure("a@1.1", Cause::GuestSilent);
        let (_, r) = Record::default()
            .on_failure(&p, &f, Standing::ActWithSby, 5)
            .unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
        assert!(text.contains("\"autoheal\"") && text.contains("guest_silent"));
    }

    #[test]
    fn a_failed_phase_escalates_by_itself_up_to_autoheal() {
        let p = Policy::default();
        let f = failure("a@1.1", Cause::ProcessExited);
        let (plan, mut r) = Record::default()
            .on_failure(&p, &f, Standing::Alone, 1000)
            .unwrap();
        let mut phases = vec![plan.phase];
        let mut now = 2000;
        while let Some((plan, next)) = r.on_phase_failed(&p, "a@1.1", "no answer", now) {
            assert!(!plan.failover_first && !plan.fast_path);
            let last = next.history.last().unwrap();
            assert_eq!((last.failure.as_str(), last.phase), ("a@1.1", plan.phase));
            assert!(last.detail.contains("failed: no answer"), "{}", last.detail);
            assert_eq!(next.counters.phases[plan.phase as usize].runs, 1);
            phases.push(plan.phase);
            r = next;
            now += 1000;
        }
        assert_eq!(phases, Phase::ALL.to_vec());
        assert_eq!(r.history.len(), Phase::ALL.len());
        // A newer failure was acted on: the old one's phase is not escalated.
        let g = failure("a@1.2", Cause::ProcessExited);
        let (_, r) = r.on_failure(&p, &g, Standing::Alone, now).unwrap();
        assert!(r.on_phase_failed(&p, "a@1.1", "late", now).is_none());
        assert!(r.on_phase_failed(&p, "a@1.9", "unknown", now).is_none());
    }

    #[test]
    fn an_escalation_climbs_past_used_up_phases() {
        let p = Policy::default();
        let mut r = Record::default();
        for (i, t) in [1000, 2000, 3000].into_iter().enumerate() {
            let f = failure(&format!("a@1.{i}"), Cause::HealthFailed);
            r = r.on_failure(&p, &f, Standing::Sby, t).unwrap().1;
        }
        let f = failure("a@1.9", Cause::ProcessExited);
        let (plan, r) = r.on_failure(&p, &f, Standing::Sby, 4000).unwrap();
        assert_eq!(plan.phase, Phase::Ph0_5);
        // PH1.0 used its three runs: PH0.5's failure goes to PH2.0.
        let (plan, _) = r.on_phase_failed(&p, "a@1.9", "x", 5000).unwrap();
        assert_eq!(plan.phase, Phase::Ph2_0);
    }
}
