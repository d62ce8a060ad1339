//! One checkpoint as bytes, primary to backup. Everything is checked on
//! the way in: a checkpoint that does not fit the backup's image is
//! refused with the reason, never applied in part.
//!
//! ```text
//! magic "DXEPOCH1" | epoch u64 | flags u8 (1: consistent) | ram_len u64
//! | device_state_len u32 | pages u32 | page indices u32 × pages (ascending)
//! | device state | page data 4096 × pages          (integers little-endian)
//! ```
//!
//! A consistent checkpoint was taken with the guest paused and carries its
//! device state; the base round (epoch 0) is taken while the guest runs, to
//! fill the backup before the first pause, and carries none.

use crate::PAGE;

const MAGIC: &[u8; 8] = b"DXEPOCH1";
const HEADER: usize = 8 + 8 + 1 + 8 + 4 + 4;
/// Largest device state accepted (QEMU's is tens of KiB).
pub const MAX_DEVICE_STATE: usize = 16 << 20;
/// Largest RAM a checkpoint may describe (1 TiB).
pub const MAX_RAM: u64 = 1 << 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub epoch: u64,
    pub consistent: bool,
    pub ram_len: u64,
    pub device_state: Vec<u8>,
    pub pages: crate::scan::Pages,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("checkpoint: {0} bytes is shorter than its header")]
    Short(usize),
    #[error("checkpoint: bad magic (not a Duplex epoch checkpoint, or another version)")]
    Magic,
    #[error("checkpoint: RAM of {0} bytes is not whole pages or over 1 TiB")]
    RamLen(u64),
    #[error("checkpoint: device state of {0} bytes is over {MAX_DEVICE_STATE}")]
    DeviceState(u64),
    #[error("checkpoint: {pages} pages of a {ram_pages}-page RAM")]
    TooManyPages { pages: u64, ram_pages: u64 },
    #[error("checkpoint: {expected} bytes expected, {actual} received")]
    Length { expected: u64, actual: u64 },
    #[error("checkpoint: page {index} is out of order or beyond the RAM's {ram_pages} pages")]
    PageIndex { index: u32, ram_pages: u64 },
    #[error("checkpoint: a consistent checkpoint needs device state; the base round has none")]
    Consistency,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let n = self.pages.len();
        let mut b = Vec::with_capacity(HEADER + 4 * n + self.device_state.len() + PAGE * n);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.epoch.to_le_bytes());
        b.push(u8::from(self.consistent));
        b.extend_from_slice(&self.ram_len.to_le_bytes());
        b.extend_from_slice(&(self.device_state.len() as u32).to_le_bytes());
        b.extend_from_slice(&(n as u32).to_le_bytes());
        for i in &self.pages.index {
            b.extend_from_slice(&i.to_le_bytes());
        }
        b.extend_from_slice(&self.device_state);
        b.extend_from_slice(&self.pages.data);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Checkpoint, WireError> {
        if b.len() < HEADER {
            return Err(WireError::Short(b.len()));
        }
        if &b[..8] != MAGIC {
            return Err(WireError::Magic);
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
        let epoch = u64_at(8);
        let consistent = b[16] == 1;
        let ram_len = u64_at(17);
        let dev_len = u64::from(u32_at(25));
        let n = u64::from(u32_at(29));
        if ram_len % PAGE as u64 != 0 || ram_len > MAX_RAM {
            return Err(WireError::RamLen(ram_len));
        }
        if dev_len > MAX_DEVICE_STATE as u64 {
            return Err(WireError::DeviceState(dev_len));
        }
        let ram_pages = ram_len / PAGE as u64;
        if n > ram_pages {
            return Err(WireError::TooManyPages {
                pages: n,
                ram_pages,
            });
        }
        if consistent == (dev_len == 0) {
            return Err(WireError::Consistency);
        }
        let expected = HEADER as u64 + 4 * n + dev_len + PAGE as u64 * n;
        if b.len() as u64 != expected {
            return Err(WireError::Length {
                expected,
                actual: b.len() as u64,
            });
        }
        let n = n as usize;
        let mut index = Vec::with_capacity(n);
        for k in 0..n {
            let i = u32_at(HEADER + 4 * k);
            if u64::from(i) >= ram_pages || index.last().is_some_and(|last| i <= *last) {
                return Err(WireError::PageIndex {
                    index: i,
                    ram_pages,
                });
            }
            index.push(i);
        }
        let dev_at = HEADER + 4 * n;
        let data_at = dev_at + dev_len as usize;
        Ok(Checkpoint {
            epoch,
            consistent,
            ram_len,
            device_state: b[dev_at..data_at].to_vec(),
            pages: crate::scan::Pages {
                index,
                data: b[data_at..].to_vec(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Pages;

    fn sample() -> Checkpoint {
        let mut data = vec![7u8; PAGE];
        data.extend(vec![9u8; PAGE]);
        Checkpoint {
            epoch: 42,
            consistent: true,
            ram_len: 16 * PAGE as u64,
            device_state: b"QEVM-state".to_vec(),
            pages: Pages {
                index: vec![2, 15],
                data,
            },
        }
    }

    #[test]
    fn round_trips() {
        let c = sample();
        assert_eq!(Checkpoint::decode(&c.encode()), Ok(c));
        let base = Checkpoint {
            epoch: 0,
            consistent: false,
            device_state: vec![],
            ..sample()
        };
        assert_eq!(Checkpoint::decode(&base.encode()), Ok(base));
    }

    #[test]
    fn every_truncation_and_corruption_is_refused_without_panic() {
        let b = sample().encode();
        for n in 0..b.len() {
            assert!(Checkpoint::decode(&b[..n]).is_err(), "length {n}");
        }
        // Any single corrupted header or index byte either fails to decode
        // or decodes to something that still fits its RAM.
        for at in 0..HEADER + 8 {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut c = b.clone();
                c[at] = v;
                if let Ok(d) = Checkpoint::decode(&c) {
                    assert!(d
                        .pages
                        .index
                        .iter()
                        .all(|i| u64::from(*i) < d.ram_len / PAGE as u64));
                }
            }
        }
        let mut swapped = sample();
        swapped.pages.index = vec![15, 2];
        assert!(matches!(
            Checkpoint::decode(&swapped.encode()),
            Err(WireError::PageIndex { index: 2, .. })
        ));
        let mut beyond = sample();
        beyond.pages.index = vec![2, 16];
        assert!(Checkpoint::decode(&beyond.encode()).is_err());
        let mut no_dev = sample();
        no_dev.device_state.clear();
        assert_eq!(
            Checkpoint::decode(&no_dev.encode()),
            Err(WireError::Consistency)
        );
        assert_eq!(
            Checkpoint::decode(b"HTTP/1.1 200 OK\r\n\r\n\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
            Err(WireError::Magic)
        );
    }
}
