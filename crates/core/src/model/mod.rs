//! The controller's desired state as plain, versioned data (hosts, VMs,
//! pairs, operations, events), and the pure decisions over it: where a VM
//! goes ([`place`]), what the agents must be told ([`reconcile`]), when a
//! host counts as failed ([`liveness`]) and how a pair whose guest lost its
//! role is made whole ([`repair`]). The controller stores these records
//! as JSON and only executes what these functions decide.

pub mod event;
pub mod failover;
pub mod host;
pub mod liveness;
pub mod move_way;
pub mod op;
pub mod pair;
pub mod place;
pub mod reconcile;
pub mod repair;
pub mod vm;

pub use event::{Event, Severity};
pub use host::{Host, HostState};
pub use op::{OpKind, OpState, Operation};
pub use pair::{Pair, PairHealth, PairPhase};
pub use vm::{Desired, Vm, VmStatus};

/// Version of the stored records' layout. Every record carries it as `v`;
/// a controller refuses records from a newer layout instead of guessing.
pub const SCHEMA_VERSION: u32 = 1;

pub(crate) fn schema_version() -> u32 {
    SCHEMA_VERSION
}

/// Names of hosts, VMs and pairs: 1-32 chars of a-z, 0-9, '-', starting
/// with a letter (the same rule as VM names).
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names() {
        assert!(valid_name("h1"));
        assert!(valid_name("web-a-1"));
        for bad in ["", "1h", "H1", "a_b", "a b", &"x".repeat(33)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
