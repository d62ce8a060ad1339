//! Events: what happened, for operators (`duplex events`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    #[serde(default = "super::schema_version")]
    pub v: u32,
    /// Ordered id: later events have greater ids.
    pub id: String,
    /// Unix ms.
    pub at_ms: u64,
    pub severity: Severity,
    /// Dotted kind, e.g. `host.failed`, `pair.switchover.done`.
    pub kind: String,
    /// What it is about: `host/h1`, `vm/web1`, `pair/sip`, `controller`.
    pub subject: String,
    pub message: String,
}

/// Event ids sort by time, then by a per-controller counter: `<ms:013>-<n:08>`.
pub fn event_id(at_ms: u64, n: u64) -> String {
    format!("{at_ms:013}-{n:08}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_by_time_then_counter() {
        let a = super::event_id(999, 5);
        let b = super::event_id(1000, 1);
        let c = super::event_id(1000, 2);
        assert!(a < b && b < c);
    }
}
