//! When to relieve an overloaded host in the running cluster (the seed's
//! trigger, claims 3-4). A host whose measured load stays above the
//! policy's high mark for `sustain_ms` is due: it gives up a VM (the
//! engine selects the one with the most incoming traffic and chooses its
//! target by the impact factor), then rests for `cooldown_ms` while the
//! move runs and the measurements catch up. Hysteresis keeps anything from
//! oscillating: a host stays overloaded until it falls below the low mark,
//! a host above the low mark takes nothing, a VM moved rests for the
//! cooldown, and at most `max_in_flight` moves run at once.
//!
//! Pure: loads and the time in, the hosts due out.
//!
//! ```text
//!            load > high                 sustained for sustain_ms
//!   calm ──────────────────▶ over ─────────────────────────────▶ due
//!    ▲                        │  ▲                                 │ moved()
//!    │      load < low        │  │ load > high, cooldown over      ▼
//!    └────────────────────────┴──┴─────────────────────────── resting
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReliefPolicy {
    /// Off by default: nothing moves by itself.
    pub enabled: bool,
    /// Overloaded above this share of the host's vCPUs (or memory) in use.
    pub high: f64,
    /// Relieved below this share; a host above it takes no VM.
    pub low: f64,
    /// Over the high mark this long before anything moves.
    pub sustain_ms: u64,
    /// A host relieved, and a VM moved, rest this long.
    pub cooldown_ms: u64,
    /// Moves running at once, cluster-wide.
    pub max_in_flight: usize,
}

impl Default for ReliefPolicy {
    fn default() -> Self {
        ReliefPolicy {
            enabled: false,
            high: 0.85,
            low: 0.70,
            sustain_ms: 30_000,
            cooldown_ms: 120_000,
            max_in_flight: 1,
        }
    }
}

/// Largest `max_in_flight` a policy may ask for.
pub const MAX_IN_FLIGHT: usize = 16;

impl ReliefPolicy {
    /// The reason a policy cannot be used, naming the field.
    pub fn check(&self) -> Result<(), String> {
        let share = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(format!("field `{name}`: {v} is not a share in (0, 1]"))
            }
        };
        share("high", self.high)?;
        share("low", self.low)?;
        if self.low >= self.high {
            return Err(format!(
                "field `low`: {} must be below `high` ({}) so that a relieved host is not overloaded again at once",
                self.low, self.high
            ));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            return Err(format!(
                "field `max_in_flight`: {} is outside 1..={MAX_IN_FLIGHT}",
                self.max_in_flight
            ));
        }
        Ok(())
    }
}

/// An operator's change to the policy: the fields given, the rest kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReliefChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sustain_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
}

impl ReliefPolicy {
    /// This policy with `c` applied, if the result is a usable policy.
    pub fn changed(&self, c: &ReliefChange) -> Result<ReliefPolicy, String> {
        let next = ReliefPolicy {
            enabled: c.enabled.unwrap_or(self.enabled),
            high: c.high.unwrap_or(self.high),
            low: c.low.unwrap_or(self.low),
            sustain_ms: c.sustain_ms.unwrap_or(self.sustain_ms),
            cooldown_ms: c.cooldown_ms.unwrap_or(self.cooldown_ms),
            max_in_flight: c.max_in_flight.unwrap_or(self.max_in_flight),
        };
        next.check()?;
        Ok(next)
    }
}

/// One host's measured load: shares of its capacity in use (can exceed 1
/// when overcommitted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostLoad {
    pub host: String,
    pub cpu: f64,
    pub mem: f64,
}

impl HostLoad {
    /// The larger of its shares: what the marks are compared with.
    pub fn peak(&self) -> f64 {
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        finite(self.cpu).max(finite(self.mem))
    }
}

/// A host due for relief now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Due {
    pub host: String,
    pub load: f64,
    /// Since when it is over the high mark (ms).
    pub over_since_ms: u64,
}

/// What relief remembers between passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Relief {
    over_since: BTreeMap<String, u64>,
    host_rests_until: BTreeMap<String, u64>,
    vm_rests_until: BTreeMap<String, u64>,
}

impl Relief {
    /// Takes this pass's `loads` at `now_ms`; returns the hosts due for
    /// relief, most loaded first, no more than the moves `in_flight`
    /// leave room for. Hosts not in `loads` (not measured) are forgotten.
    pub fn due(
        &mut self,
        p: &ReliefPolicy,
        loads: &[HostLoad],
        in_flight: usize,
        now_ms: u64,
    ) -> Vec<Due> {
        let measured: BTreeSet<&str> = loads.iter().map(|l| l.host.as_str()).collect();
        self.over_since.retain(|h, _| measured.contains(h.as_str()));
        self.host_rests_until.retain(|_, t| *t > now_ms);
        self.vm_rests_until.retain(|_, t| *t > now_ms);
        for l in loads {
            let load = l.peak();
            if load > p.high {
                self.over_since.entry(l.host.clone()).or_insert(now_ms);
            } else if load < p.low {
                self.over_since.remove(&l.host);
            }
        }
        if !p.enabled {
            return Vec::new();
        }
        let mut due: Vec<Due> = loads
            .iter()
            .filter(|l| l.peak() > p.high && !self.host_rests_until.contains_key(&l.host))
            .filter_map(|l| {
                let since = *self.over_since.get(&l.host)?;
                (now_ms.saturating_sub(since) >= p.sustain_ms).then(|| Due {
                    host: l.host.clone(),
                    load: l.peak(),
                    over_since_ms: since,
                })
            })
            .collect();
        due.sort_by(|a, b| b.load.total_cmp(&a.load).then_with(|| a.host.cmp(&b.host)));
        due.truncate(p.max_in_flight.saturating_sub(in_flight));
        due
    }

    /// Hosts that take no VM now: above the low mark.
    pub fn full(p: &ReliefPolicy, loads: &[HostLoad]) -> BTreeSet<String> {
        loads
            .iter()
            .filter(|l| l.peak() >= p.low)
            .map(|l| l.host.clone())
            .collect()
    }

    /// Since when `host` is over the high mark, if it is.
    pub fn over_since(&self, host: &str) -> Option<u64> {
        self.over_since.get(host).copied()
    }

    /// Until when `host` rests after being relieved, if it does.
    pub fn host_rests_until(&self, host: &str) -> Option<u64> {
        self.host_rests_until.get(host).copied()
    }

    /// VMs that may not move now (moved within the cooldown).
    pub fn resting_vms(&self) -> BTreeSet<String> {
        self.vm_rests_until.keys().cloned().collect()
    }

    /// A move of `vm` off `host` started at `now_ms`: both rest.
    pub fn moved(&mut self, p: &ReliefPolicy, vm: &str, host: &str, now_ms: u64) {
        let until = now_ms.saturating_add(p.cooldown_ms);
        self.vm_rests_until.insert(vm.to_string(), until);
        self.host_rests_until.insert(host.to_string(), until);
    }

    /// Nothing could move off `host` (no VM fits elsewhere): it rests too,
    /// rather than being asked again every pass.
    pub fn stuck(&mut self, p: &ReliefPolicy, host: &str, now_ms: u64) {
        let until = now_ms.saturating_add(p.cooldown_ms);
        self.host_rests_until.insert(host.to_string(), until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::rng::SplitMix64;

    fn on() -> ReliefPolicy {
        ReliefPolicy {
            enabled: true,
            sustain_ms: 1000,
            cooldown_ms: 5000,
            max_in_flight: 2,
            ..ReliefPolicy::default()
        }
    }

    fn load(host: &str, cpu: f64) -> HostLoad {
        HostLoad {
            host: host.into(),
            cpu,
            mem: 0.1,
        }
    }

    fn hosts(r: &mut Relief, p: &ReliefPolicy, loads: &[HostLoad], now: u64) -> Vec<String> {
        r.due(p, loads, 0, now)
            .into_iter()
            .map(|d| d.host)
            .collect()
    }

    #[test]
    fn a_change_keeps_what_it_does_not_name_and_is_checked() {
        let p = ReliefPolicy::default();
        let c = ReliefChange {
            enabled: Some(true),
            high: Some(0.9),
            ..Default::default()
        };
        let next = p.changed(&c).unwrap();
        assert!(next.enabled);
        assert_eq!((next.high, next.low), (0.9, p.low));
        assert_eq!(next.cooldown_ms, p.cooldown_ms);
        let bad = ReliefChange {
            low: Some(0.95),
            ..Default::default()
        };
        assert!(p.changed(&bad).unwrap_err().contains("field `low`"));
        let bad = ReliefChange {
            max_in_flight: Some(0),
            ..Default::default()
        };
        assert!(p.changed(&bad).unwrap_err().contains("max_in_flight"));
        let json: Result<ReliefChange, _> = serde_json::from_str(r#"{"hihg": 0.9}"#);
        assert!(json.is_err(), "a misspelt field is refused");
    }

    #[test]
    fn a_host_is_due_only_once_over_for_the_sustain_time() {
        let (p, mut r) = (on(), Relief::default());
        assert!(hosts(&mut r, &p, &[load("a", 0.9)], 0).is_empty());
        assert!(hosts(&mut r, &p, &[load("a", 0.9)], 999).is_empty());
        assert_eq!(hosts(&mut r, &p, &[load("a", 0.9)], 1000), ["a"]);
    }

    #[test]
    fn between_the_marks_the_timer_neither_starts_nor_stops() {
        let (p, mut r) = (on(), Relief::default());
        hosts(&mut r, &p, &[load("a", 0.9)], 0);
        // Dips between the marks: still over since 0, but not due now.
        assert!(hosts(&mut r, &p, &[load("a", 0.8)], 1500).is_empty());
        assert_eq!(hosts(&mut r, &p, &[load("a", 0.9)], 1600), ["a"]);
        // Below the low mark: calm again, the timer starts afresh.
        hosts(&mut r, &p, &[load("a", 0.5)], 1700);
        assert!(hosts(&mut r, &p, &[load("a", 0.9)], 1800).is_empty());
        // Starting between the marks does not start it.
        let mut r = Relief::default();
        hosts(&mut r, &p, &[load("b", 0.8)], 0);
        assert!(hosts(&mut r, &p, &[load("b", 0.9)], 1000).is_empty());
    }

    #[test]
    fn a_relieved_host_and_its_vm_rest_for_the_cooldown() {
        let (p, mut r) = (on(), Relief::default());
        hosts(&mut r, &p, &[load("a", 0.9)], 0);
        assert_eq!(hosts(&mut r, &p, &[load("a", 0.9)], 1000), ["a"]);
        r.moved(&p, "vm1", "a", 1000);
        assert!(r.resting_vms().contains("vm1"));
        assert!(hosts(&mut r, &p, &[load("a", 0.9)], 5999).is_empty());
        assert_eq!(hosts(&mut r, &p, &[load("a", 0.9)], 6000), ["a"]);
        assert!(r.resting_vms().is_empty());
        r.stuck(&p, "a", 6000);
        assert!(hosts(&mut r, &p, &[load("a", 0.9)], 7000).is_empty());
    }

    #[test]
    fn most_loaded_first_within_the_moves_allowed() {
        let (p, mut r) = (on(), Relief::default());
        let loads = [
            load("a", 0.9),
            load("b", 1.2),
            load("c", 0.95),
            load("d", 0.2),
        ];
        r.due(&p, &loads, 0, 0);
        let due: Vec<String> = r
            .due(&p, &loads, 0, 1000)
            .into_iter()
            .map(|d| d.host)
            .collect();
        assert_eq!(due, ["b", "c"], "two moves at most");
        assert_eq!(r.due(&p, &loads, 1, 1000).len(), 1, "one already running");
        assert!(r.due(&p, &loads, 2, 1000).is_empty());
        assert!(r.due(&p, &loads, 5, 1000).is_empty(), "more than allowed");
        assert_eq!(
            Relief::full(&p, &loads),
            BTreeSet::from(["a".to_string(), "b".into(), "c".into()])
        );
    }

    #[test]
    fn memory_counts_and_nothing_moves_when_off() {
        let p = on();
        let mut r = Relief::default();
        let mem = HostLoad {
            host: "m".into(),
            cpu: 0.1,
            mem: 0.95,
        };
        r.due(&p, std::slice::from_ref(&mem), 0, 0);
        assert_eq!(r.due(&p, std::slice::from_ref(&mem), 0, 1000).len(), 1);
        let off = ReliefPolicy::default();
        let mut r = Relief::default();
        r.due(&off, &[load("a", 2.0)], 0, 0);
        assert!(r.due(&off, &[load("a", 2.0)], 0, 100_000).is_empty());
        let nan = HostLoad {
            host: "n".into(),
            cpu: f64::NAN,
            mem: f64::INFINITY,
        };
        assert_eq!(nan.peak(), 0.0, "an unreadable measure is no load");
    }

    #[test]
    fn policies_are_checked_by_field() {
        assert!(ReliefPolicy::default().check().is_ok());
        let bad = |f: fn(&mut ReliefPolicy)| {
            let mut p = ReliefPolicy::default();
            f(&mut p);
            p.check().unwrap_err()
        };
        assert!(bad(|p| p.high = 1.5).contains("`high`"));
        assert!(bad(|p| p.low = f64::NAN).contains("`low`"));
        assert!(bad(|p| p.low = 0.9).contains("below `high`"));
        assert!(bad(|p| p.max_in_flight = 0).contains("max_in_flight"));
    }

    /// Seeded: hosts whose load drifts, each relief moving a random share
    /// of the relieved host's load to the least loaded host below the low
    /// mark (as the engine would, never to a full host). No VM moves
    /// within its cooldown, no host takes a VM above the low mark, never
    /// more moves at once than allowed, and no host is relieved in a row
    /// faster than its cooldown.
    #[test]
    fn seeded_drift_never_oscillates() {
        for seed in 0..200u64 {
            let mut rng = SplitMix64::new(seed);
            let p = ReliefPolicy {
                max_in_flight: 1 + rng.index(3),
                ..on()
            };
            let mut cpu: Vec<f64> = (0..6).map(|_| rng.range_f64(0.2, 1.1)).collect();
            let mut r = Relief::default();
            let mut last_moved: BTreeMap<String, u64> = BTreeMap::new();
            let mut n = 0u64;
            for step in 0..400u64 {
                let now = step * 250;
                for c in cpu.iter_mut() {
                    *c = (*c + rng.range_f64(-0.03, 0.03)).clamp(0.0, 1.5);
                }
                let loads: Vec<HostLoad> = cpu
                    .iter()
                    .enumerate()
                    .map(|(i, c)| load(&format!("h{i}"), *c))
                    .collect();
                let due = r.due(&p, &loads, 0, now);
                assert!(due.len() <= p.max_in_flight, "seed {seed}");
                for d in due {
                    assert!(d.load > p.high && now - d.over_since_ms >= p.sustain_ms);
                    let from: usize = d.host[1..].parse().unwrap_or(0);
                    // The shell takes each move's effect into account
                    // before the next target (loads as the pass left them).
                    let now_loads: Vec<HostLoad> = cpu
                        .iter()
                        .enumerate()
                        .map(|(i, c)| load(&format!("h{i}"), *c))
                        .collect();
                    let full = Relief::full(&p, &now_loads);
                    let to = (0..cpu.len())
                        .filter(|i| !full.contains(&format!("h{i}")))
                        .min_by(|a, b| cpu[*a].total_cmp(&cpu[*b]));
                    let Some(to) = to else {
                        r.stuck(&p, &d.host, now);
                        continue;
                    };
                    let vm = format!("vm{n}");
                    n += 1;
                    if let Some(t) = last_moved.insert(d.host.clone(), now) {
                        assert!(
                            now - t >= p.cooldown_ms,
                            "seed {seed}: {} relieved again after {} ms",
                            d.host,
                            now - t
                        );
                    }
                    r.moved(&p, &vm, &d.host, now);
                    let share = rng.range_f64(0.05, 0.3).min(cpu[from]);
                    cpu[from] -= share;
                    cpu[to] += share;
                }
            }
        }
    }
}
