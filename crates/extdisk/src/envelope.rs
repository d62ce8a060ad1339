//! How an object is stored: a header line naming the format, the payload's
//! sha256 and length, then the payload. Opening checks all three, so a
//! damaged or truncated object is refused with the reason instead of
//! being used.

use sha2::{Digest, Sha256};

/// The header's first word and format version.
pub const MAGIC: &str = "DUPLEX-OBJECT/1";
/// A header is one short line; anything longer is not ours.
const MAX_HEADER: usize = 128;

/// The stored form of `payload`.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let header = format!(
        "{MAGIC} {} {}\n",
        hex::encode(Sha256::digest(payload)),
        payload.len()
    );
    let mut out = Vec::with_capacity(header.len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a stored object, or why it cannot be trusted.
pub fn open(stored: &[u8]) -> Result<&[u8], String> {
    let end = stored
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or("no header line (not a Duplex object, or truncated)")?;
    let header = std::str::from_utf8(&stored[..end]).map_err(|_| "the header is not text")?;
    let mut words = header.split(' ');
    let (magic, sum, len) = (words.next(), words.next(), words.next());
    if magic != Some(MAGIC) || words.next().is_some() {
        return Err(format!("unknown header {header:?} (expected {MAGIC})"));
    }
    let len: usize = len
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| format!("bad length in header {header:?}"))?;
    let payload = &stored[end + 1..];
    if payload.len() != len {
        return Err(format!(
            "{} payload bytes, the header says {len} (truncated or extended)",
            payload.len()
        ));
    }
    let actual = hex::encode(Sha256::digest(payload));
    if Some(actual.as_str()) != sum {
        return Err(format!(
            "sha256 {actual} does not match the header's {}",
            sum.unwrap_or("")
        ));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        let stored = seal(b"counters");
        assert_eq!(open(&stored).unwrap(), b"counters");
        assert_eq!(open(&seal(b"")).unwrap(), b"");
        // One flipped bit anywhere in the payload.
        for i in stored.len() - 8..stored.len() {
            let mut d = stored.clone();
            d[i] ^= 1;
            assert!(open(&d).unwrap_err().contains("sha256"), "byte {i}");
        }
        let e = open(&stored[..stored.len() - 1]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let mut longer = stored.clone();
        longer.push(b'x');
        assert!(open(&longer).unwrap_err().contains("payload bytes"));
        assert!(open(b"{\"json\":1}").unwrap_err().contains("no header"));
        assert!(open(b"OTHER/1 00 1\nx")
            .unwrap_err()
            .contains("unknown header"));
        assert!(open(format!("{MAGIC} 00 x\n").as_bytes())
            .unwrap_err()
            .contains("bad length"));
    }
}
