//! Traffic between simulated VMs: each flow's rate may change at any time
//! and its byte counter is the integral of its rate (what a network
//! element counts), so a reader sees a rate change as the element would.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq)]
struct Flow {
    /// Bytes/s now.
    rate: f64,
    /// Bytes carried up to `since` (seconds on the cluster's clock).
    bytes: f64,
    since: f64,
}

impl Flow {
    fn bytes_at(&self, t: f64) -> f64 {
        self.bytes + self.rate * (t - self.since).max(0.0)
    }
}

/// Every flow, by sender; who sends to each VM.
#[derive(Debug, Clone, Default)]
pub struct Flows {
    out: BTreeMap<usize, BTreeMap<usize, Flow>>,
    into: BTreeMap<usize, BTreeSet<usize>>,
}

impl Flows {
    /// `from` sends `rate` bytes/s to `to` from time `t` on (0 stops it;
    /// its counter keeps what it carried).
    pub fn set(&mut self, from: usize, to: usize, rate: f64, t: f64) {
        let rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
        let f = self.out.entry(from).or_default().entry(to).or_insert(Flow {
            rate: 0.0,
            bytes: 0.0,
            since: t,
        });
        *f = Flow {
            rate,
            bytes: f.bytes_at(t),
            since: t,
        };
        self.into.entry(to).or_default().insert(from);
    }

    /// `vm`'s counters at `t`: bytes sent and received, by peer.
    pub fn counters(&self, vm: usize, t: f64) -> BTreeMap<usize, (u64, u64)> {
        let mut peers: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
        for (&to, f) in self.out.get(&vm).into_iter().flatten() {
            peers.entry(to).or_default().0 += f.bytes_at(t) as u64;
        }
        for &from in self.into.get(&vm).into_iter().flatten() {
            if let Some(f) = self.out.get(&from).and_then(|o| o.get(&vm)) {
                peers.entry(from).or_default().1 += f.bytes_at(t) as u64;
            }
        }
        peers
    }

    /// Every flow with its rate now: (from, to, bytes/s).
    pub fn rates(&self) -> Vec<(usize, usize, f64)> {
        self.out
            .iter()
            .flat_map(|(&a, o)| o.iter().map(move |(&b, f)| (a, b, f.rate)))
            .collect()
    }

    /// The rate `from` sends to `to` now.
    pub fn rate(&self, from: usize, to: usize) -> f64 {
        self.out
            .get(&from)
            .and_then(|o| o.get(&to))
            .map_or(0.0, |f| f.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_integrate_the_rate_across_changes() {
        let mut f = Flows::default();
        f.set(1, 2, 100.0, 0.0);
        assert_eq!(f.counters(1, 10.0)[&2], (1000, 0));
        assert_eq!(f.counters(2, 10.0)[&1], (0, 1000));
        f.set(1, 2, 10.0, 10.0);
        assert_eq!(f.counters(1, 20.0)[&2], (1100, 0));
        f.set(1, 2, 0.0, 20.0);
        assert_eq!(f.counters(2, 99.0)[&1], (0, 1100), "stopped, kept");
        f.set(2, 1, f64::NAN, 0.0);
        assert_eq!(f.rate(2, 1), 0.0);
        assert_eq!(f.rates().len(), 2);
    }
}
