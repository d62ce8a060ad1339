//! Live migrations running now, per host: a migration loads both its
//! source and its destination, and placement's concurrent-migration limit
//! (`Params::max_concurrent_migrations`) counts them. Taken with a guard,
//! so a migration that fails, times out or is dropped is never left
//! counted.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct InFlight {
    per_host: Mutex<BTreeMap<String, u32>>,
}

/// One migration counted at both ends until it drops.
#[must_use = "the migration is counted only while the guard lives"]
pub struct Counted<'a> {
    of: &'a InFlight,
    hosts: [String; 2],
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
        self.per_host.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a migration from `from` to `to` until the guard drops.
    pub fn begin(&self, from: &str, to: &str) -> Counted<'_> {
        let mut m = self.lock();
        for h in [from, to] {
            *m.entry(h.to_string()).or_default() += 1;
        }
        Counted {
            of: self,
            hosts: [from.to_string(), to.to_string()],
        }
    }

    /// Migrations `host` is an end of now.
    pub fn on(&self, host: &str) -> u32 {
        self.lock().get(host).copied().unwrap_or(0)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let mut m = self.of.lock();
        for h in &self.hosts {
            if let Some(n) = m.get_mut(h) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(h);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_at_both_ends_while_the_guard_lives() {
        let f = InFlight::default();
        let a = f.begin("h1", "h2");
        let b = f.begin("h1", "h3");
        assert_eq!((f.on("h1"), f.on("h2"), f.on("h3")), (2, 1, 1));
        drop(a);
        assert_eq!((f.on("h1"), f.on("h2"), f.on("h3")), (1, 0, 1));
        drop(b);
        assert_eq!(f.on("h1"), 0);
        assert!(f.lock().is_empty(), "nothing left counted");
    }
}
