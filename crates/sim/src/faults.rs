//! The fault injector: a seeded random source that decides each order's
//! fate (delivered, delayed, lost, answered after the caller gave up,
//! duplicated) while faults are on.

use duplex_core::placement::rng::SplitMix64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happens to one order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fate {
    pub delay: Duration,
    /// Never reaches the agent.
    pub lost: bool,
    /// Carried out, but the caller never hears back.
    pub answer_lost: bool,
    /// Carried out twice (a retransmission the agent did not recognise).
    pub duplicated: bool,
    /// How long the caller waits before it gives up on a lost one.
    pub timeout: Duration,
}

/// Chances of each fault per order while faults are on.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub lost: f64,
    pub answer_lost: f64,
    pub duplicated: f64,
    pub delayed: f64,
    pub max_delay_ms: u64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            lost: 0.01,
            answer_lost: 0.01,
            duplicated: 0.02,
            delayed: 0.2,
            max_delay_ms: 400,
        }
    }
}

struct State {
    rng: SplitMix64,
    on: bool,
    rates: Rates,
}

#[derive(Clone)]
pub struct Faults(Arc<Mutex<State>>);

/// How long a caller waits for an answer that never comes (the client's
/// request time limit, shortened: the simulation only needs it finite).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Faults {
    pub fn new(seed: u64, rates: Rates) -> Self {
        Faults(Arc::new(Mutex::new(State {
            rng: SplitMix64::new(seed),
            on: true,
            rates,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Faults stop (the settling phase).
    pub fn stop(&self) {
        self.lock().on = false;
    }

    pub fn fate(&self) -> Fate {
        let mut s = self.lock();
        let mut f = Fate {
            timeout: CALL_TIMEOUT,
            ..Fate::default()
        };
        if !s.on {
            return f;
        }
        let r = s.rates;
        if s.rng.chance(r.delayed) {
            f.delay = Duration::from_millis(s.rng.below(r.max_delay_ms.max(1)));
        }
        f.lost = s.rng.chance(r.lost);
        f.answer_lost = !f.lost && s.rng.chance(r.answer_lost);
        f.duplicated = !f.lost && s.rng.chance(r.duplicated);
        f
    }

    /// A draw from the schedule's own random source.
    pub fn below(&self, n: u64) -> u64 {
        self.lock().rng.below(n.max(1))
    }
    pub fn chance(&self, p: f64) -> bool {
        self.lock().rng.chance(p)
    }
}
