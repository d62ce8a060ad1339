//! Bytes written as lowercase hex (`"80"`, `"5349502f"`) in JSON, and read
//! back from hex, so a rule's payload prefix reads as an operator types it.

use serde::{Deserialize, Deserializer, Serializer};

/// Hex digits (an even number of them) into bytes, or why not.
pub fn decode(s: &str) -> Result<Vec<u8>, String> {
    hex::decode(s).map_err(|e| format!("`{s}` is not hex: {e}"))
}

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    decode(&s).map_err(serde::de::Error::custom)
}
