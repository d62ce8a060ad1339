//! What the middleware keeps across its own restarts (PH2.0): role and
//! fencing token, pair configuration, restart counters. Stored in
//! `/run/duplex/state.json` (tmpfs: gone with the VM, as it should be).

use duplex_core::guest_proto::RestartPhase;
use duplex_core::role::RoleState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

pub const RUN_DIR: &str = "/run/duplex";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairConfig {
    pub vip: Ipv4Addr,
    pub vip_prefix_len: u8,
    pub peer: Option<Ipv4Addr>,
    /// The service network's witness (`crate::witness`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<Ipv4Addr>,
    /// The pair's replication key (`crate::replica::seal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<duplex_core::replica_key::ReplicaKey>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub role: RoleState,
    pub config: Option<PairConfig>,
    /// How often each restart phase was performed.
    pub phases: BTreeMap<RestartPhase, u64>,
    /// How often the middleware started in this boot.
    pub middleware_starts: u64,
    /// The middleware is restarting on order (PH2.0), not after a crash.
    #[serde(default)]
    pub restart_ordered: bool,
}

impl Persisted {
    pub fn load(dir: &Path) -> Persisted {
        std::fs::read(dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, dir: &Path) {
        let _ = std::fs::create_dir_all(dir);
        if let Ok(text) = serde_json::to_vec(self) {
            let tmp = dir.join("state.json.tmp");
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, dir.join("state.json"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_round_trip_and_garbage() {
        let dir = std::env::temp_dir().join(format!("duplex-guest-state-{}", std::process::id()));
        let mut p = Persisted::default();
        p.phases.insert(RestartPhase::Ph1_0, 2);
        p.middleware_starts = 3;
        p.save(&dir);
        assert_eq!(Persisted::load(&dir), p);
        std::fs::write(dir.join("state.json"), "garbage").unwrap();
        assert_eq!(Persisted::load(&dir), Persisted::default());
        let _ = std::fs::remove_dir_all(dir);
    }
}
