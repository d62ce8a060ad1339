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

    /// For RAM the backup holds exactly as `ram` is now (S5: a replica
    /// left by the side the VM just moved from): the first scan takes only
    /// pages changed since.
    pub fn of(ram: &[u8]) -> Self {
        PageHashes {
            hashes: ram.chunks_exact(PAGE).map(xxh3_128).collect(),
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
        take_range(&mut self.hashes, ram, paused, 0)
    }

    /// [`PageHashes::take_changed`] on up to `workers` threads, each over
    /// its own part of RAM (the guest is paused: its vCPUs leave the cores
    /// free). `None` if a worker failed: the hashes are then unreliable and
    /// the caller must start them over.
    pub fn take_changed_parallel(
        &mut self,
        ram: &[u8],
        paused: bool,
        workers: usize,
    ) -> Option<Pages> {
        let pages = self.hashes.len();
        let workers = workers
            .clamp(1, MAX_WORKERS)
            .min(pages / MIN_PAGES_PER_WORKER)
            .max(1);
        if workers == 1 {
            return Some(self.take_changed(ram, paused));
        }
        let per = pages.div_ceil(workers);
        let parts: Vec<Option<Pages>> = std::thread::scope(|s| {
            let running: Vec<_> = self
                .hashes
                .chunks_mut(per)
                .enumerate()
                .map(|(k, hashes)| {
                    let first = k * per;
                    let part = &ram[first * PAGE..(first + hashes.len()) * PAGE];
                    s.spawn(move || take_range(hashes, part, paused, first))
                })
                .collect();
            running.into_iter().map(|h| h.join().ok()).collect()
        });
        let mut out = Pages::default();
        for part in parts {
            let part = part?;
            out.index.extend(part.index);
            out.data.extend(part.data);
        }
        Some(out)
    }
}

/// Most threads one scan uses.
pub const MAX_WORKERS: usize = 8;
/// Fewer pages than this per thread are not worth a thread.
const MIN_PAGES_PER_WORKER: usize = 4096;

/// The scan of `ram`, whose first page is page `first` of the VM.
fn take_range(hashes: &mut [u128], ram: &[u8], paused: bool, first: usize) -> Pages {
    let mut out = Pages::default();
    for (i, (page, known)) in ram.chunks_exact(PAGE).zip(hashes.iter_mut()).enumerate() {
        let h = xxh3_128(page);
        if h == *known {
            continue;
        }
        let at = out.data.len();
        out.data.extend_from_slice(page);
        *known = if paused { h } else { xxh3_128(&out.data[at..]) };
        // Page counts fit u32: RAM is at most 16 TiB of 4 KiB pages.
        out.index.push((first + i) as u32);
    }
    out
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

    #[test]
    fn parallel_scans_take_the_same_pages_in_order() {
        let pages = 4 * MIN_PAGES_PER_WORKER + 3;
        let mut ram = vec![0u8; pages * PAGE];
        let mut one = PageHashes::zeroed(ram.len());
        let mut many = PageHashes::zeroed(ram.len());
        for round in 0..3u8 {
            for p in (round as usize..pages).step_by(997) {
                ram[p * PAGE + 7] = round + 1;
            }
            let a = one.take_changed(&ram, true);
            assert!(!a.is_empty());
            for workers in [1, 2, 3, 5] {
                let mut h = PageHashes {
                    hashes: many.hashes.clone(),
                };
                assert_eq!(
                    h.take_changed_parallel(&ram, true, workers),
                    Some(a.clone())
                );
            }
            assert_eq!(many.take_changed_parallel(&ram, false, 2), Some(a));
        }
        assert_eq!(one.hashes, many.hashes);
    }
}
