//! A pair's replication key: 32 secret bytes both members' guests hold
//! (the controller makes it with the pair and hands it to each guest in
//! its configuration), with which every replication message between them
//! is authenticated. Written as 64 hex digits; never printed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub const KEY_LEN: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReplicaKey(pub [u8; KEY_LEN]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a replication key is 64 hex digits")]
pub struct BadKey;

impl fmt::Debug for ReplicaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplicaKey(secret)")
    }
}

impl FromStr for ReplicaKey {
    type Err = BadKey;
    fn from_str(s: &str) -> Result<Self, BadKey> {
        if s.len() != 2 * KEY_LEN || !s.is_ascii() {
            return Err(BadKey);
        }
        let mut k = [0u8; KEY_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| BadKey)?;
        }
        Ok(ReplicaKey(k))
    }
}

impl TryFrom<String> for ReplicaKey {
    type Error = BadKey;
    fn try_from(s: String) -> Result<Self, BadKey> {
        s.parse()
    }
}

impl From<ReplicaKey> for String {
    fn from(k: ReplicaKey) -> String {
        k.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_never_prints() {
        let k = ReplicaKey([0xab; KEY_LEN]);
        let s: String = k.into();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<ReplicaKey>(), Ok(k));
        assert_eq!(format!("{k:?}"), "ReplicaKey(secret)");
        let j = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<ReplicaKey>(&j).unwrap(), k);
        for bad in ["", "ab", &"g".repeat(64), &"é".repeat(32)] {
            assert_eq!(bad.parse::<ReplicaKey>(), Err(BadKey), "{bad}");
        }
    }
}
