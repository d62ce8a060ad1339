//! Which pages of a VM's RAM changed since they were last taken.
//!
//! TCG keeps its dirty log inside QEMU, and this kernel has no soft-dirty
//! bits (ENVIRONMENT.md), so the agent compares every page with what it
//! last sent: a 128-bit XXH3 hash per page (16 bytes per 4 KiB page, read
//! once per scan, against a shadow copy's 1:1 memory and two reads per
//! byte). A changed page that keeps its hash would be missed with
//! probability 2^-128 per page. Only changed pages are copied.

use crate::PAGE;
use xxhash_rust::xxh3::xxh3_128;

/// The hash of every page as last taken (as the backup holds it).
pub struct PageHashes {
    hashes: Vec<u128>,
}

/// Pages taken in one scan: their indices (ascending) and contents.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pages {
    pub index: Vec<u32>,
    pub data: Vec<u8>,
}

impl Pages {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn page(&self, i: usize) -> &[u8] {
        &self.data[i * PAGE..(i + 1) * PAGE]
    }
}

impl PageHashes {
    /// For RAM of `len` bytes that the backup holds as zeros (a new image):
    /// the first scan takes every page that is not zero.
    pub fn zeroed(len: usize) -> Self {
        let zero = xxh3_128(&[0u8; PAGE]);
        PageHashes {
            hashes: vec![zero; len / PAGE],
        }
    }

    pub fn pages(&self) -> usize {
        self.hashes.len()
    }

    /// Takes every page of `ram` that differs from what was last taken.
    /// `paused`: the guest does not run, so the page hashed is the page
    /// copied; otherwise the copy is hashed again (the guest may have
    /// written between the hash and the copy) and the copy's hash is kept,
    /// so the next scan compares against exactly what was sent.
    pub fn take_changed(&mut self, ram: &[u8], paused: bool) -> Pages {
        let mut out = Pages::default();
        let pages = ram.chunks_exact(PAGE).zip(self.hashes.iter_mut());
        for (i, (page, known)) in pages.enumerate() {
            let h = xxh3_128(page);
            if h == *known {
                continue;
            }
            let at = out.data.len();
            out.data.extend_from_slice(page);
            *known = if paused { h } else { xxh3_128(&out.data[at..]) };
            // Page counts fit u32: RAM is at most 16 TiB of 4 KiB pages.
            out.index.push(i as u32);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_changed_and_nothing_else() {
        let mut ram = vec![0u8; 8 * PAGE];
        let mut h = PageHashes::zeroed(ram.len());
        assert!(
            h.take_changed(&ram, true).is_empty(),
            "zeros are on the backup"
        );
        ram[3 * PAGE + 17] = 1;
        ram[7 * PAGE] = 2;
        let p = h.take_changed(&ram, true);
        assert_eq!(p.index, vec![3, 7]);
        assert_eq!(p.page(0), &ram[3 * PAGE..4 * PAGE]);
        assert!(h.take_changed(&ram, false).is_empty());
        ram[3 * PAGE + 17] = 0;
        assert_eq!(
            h.take_changed(&ram, false).index,
            vec![3],
            "back to zero is a change"
        );
        // A tail shorter than a page is not RAM QEMU gives; it is ignored.
        let odd = vec![1u8; PAGE + 5];
        assert_eq!(
            PageHashes::zeroed(odd.len()).take_changed(&odd, true).index,
            vec![0]
        );
    }
}
