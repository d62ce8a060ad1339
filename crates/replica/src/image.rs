//! The backup's copy of a replicated VM: its RAM file and the device state
//! of the last consistent checkpoint applied. A checkpoint is applied whole
//! and in order (it arrives complete before a byte of it is written), so
//! the copy always holds one epoch's state: the last one acknowledged.

use crate::ram::{RamError, RamImage};
use crate::wire::Checkpoint;
use crate::PAGE;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Ram(#[from] RamError),
    #[error("checkpoint describes {got} bytes of RAM; this replica has {expected}")]
    RamLen { expected: u64, got: u64 },
    #[error("checkpoint {got} out of order: the replica expects {expected}")]
    Order { expected: u64, got: u64 },
    #[error("a base round after epoch {0} was applied: start a new replica")]
    LateBase(u64),
    #[error("device state {path}: {source}")]
    DeviceState {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the replica was left half-written by a failed apply: start a new replica")]
    Torn,
}

pub struct Replica {
    image: RamImage,
    ram_len: u64,
    state_path: PathBuf,
    applied: Option<u64>,
    torn: bool,
}

impl Replica {
    /// A new, zero-filled replica: RAM at `ram_path`, the device state of
    /// the newest checkpoint at `state_path`.
    pub fn create(ram_path: &Path, state_path: &Path, ram_len: u64) -> Result<Replica, ApplyError> {
        let _ = std::fs::remove_file(state_path);
        Ok(Replica {
            image: RamImage::create(ram_path, ram_len)?,
            ram_len,
            state_path: state_path.to_path_buf(),
            applied: None,
            torn: false,
        })
    }

    /// A replica that already holds a VM's consistent state as of `epoch`:
    /// its RAM file (taken over as it is) and `device_state` (S5: the side
    /// a VM just left holds exactly the state it runs on from elsewhere).
    /// It takes checkpoints from `epoch + 1` on, never a base round.
    pub fn adopt(
        ram_path: &Path,
        state_path: &Path,
        ram_len: u64,
        device_state: &[u8],
        epoch: u64,
    ) -> Result<Replica, ApplyError> {
        let r = Replica {
            image: RamImage::open_existing(ram_path, ram_len)?,
            ram_len,
            state_path: state_path.to_path_buf(),
            applied: Some(epoch),
            torn: false,
        };
        r.write_state(device_state)?;
        Ok(r)
    }

    /// The newest consistent epoch the replica holds (`None`: it cannot be
    /// started yet).
    pub fn applied(&self) -> Option<u64> {
        self.applied
    }

    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// Applies `cp` and returns the newest consistent epoch held. A
    /// checkpoint already applied (sent again after a lost acknowledgement)
    /// changes nothing and is acknowledged again.
    pub fn apply(&mut self, cp: &Checkpoint) -> Result<Option<u64>, ApplyError> {
        if self.torn {
            return Err(ApplyError::Torn);
        }
        if cp.ram_len != self.ram_len {
            return Err(ApplyError::RamLen {
                expected: self.ram_len,
                got: cp.ram_len,
            });
        }
        let expected = self.applied.map_or(1, |a| a + 1);
        match (cp.consistent, self.applied) {
            (false, Some(a)) => return Err(ApplyError::LateBase(a)),
            (true, Some(a)) if cp.epoch <= a => return Ok(self.applied),
            (true, _) if cp.epoch != expected => {
                return Err(ApplyError::Order {
                    expected,
                    got: cp.epoch,
                })
            }
            _ => {}
        }
        self.torn = true;
        let ram = self.image.bytes_mut();
        for (k, i) in cp.pages.index.iter().enumerate() {
            let at = *i as usize * PAGE;
            ram[at..at + PAGE].copy_from_slice(cp.pages.page(k));
        }
        if cp.consistent {
            self.write_state(&cp.device_state)?;
            self.applied = Some(cp.epoch);
        }
        self.torn = false;
        Ok(self.applied)
    }

    fn write_state(&self, state: &[u8]) -> Result<(), ApplyError> {
        let err = |source| ApplyError::DeviceState {
            path: self.state_path.display().to_string(),
            source,
        };
        let tmp = self.state_path.with_extension("new");
        std::fs::write(&tmp, state).map_err(err)?;
        std::fs::rename(&tmp, &self.state_path).map_err(err)
    }

    /// The RAM as the replica holds it (tests, checks).
    pub fn ram(&self) -> &[u8] {
        self.image.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::PageHashes;

    const LEN: usize = 16 * PAGE;

    fn cp(epoch: u64, consistent: bool, ram: &[u8], h: &mut PageHashes) -> Checkpoint {
        Checkpoint {
            epoch,
            consistent,
            ram_len: LEN as u64,
            device_state: if consistent {
                format!("dev{epoch}").into_bytes()
            } else {
                vec![]
            },
            pages: h.take_changed(ram, consistent),
        }
    }

    #[test]
    fn applies_in_order_and_ends_equal_to_the_primary() {
        let dir = tempfile::tempdir().unwrap();
        let mut r =
            Replica::create(&dir.path().join("ram"), &dir.path().join("dev"), LEN as u64).unwrap();
        let mut ram = vec![0u8; LEN];
        let mut h = PageHashes::zeroed(LEN);
        ram[5 * PAGE] = 1;
        assert_eq!(
            r.apply(&cp(0, false, &ram, &mut h)).unwrap(),
            None,
            "a base is not usable alone"
        );
        ram[6 * PAGE + 1] = 2;
        let one = cp(1, true, &ram, &mut h);
        assert_eq!(one.pages.index, vec![6]);
        assert_eq!(r.apply(&one).unwrap(), Some(1));
        assert_eq!(r.ram(), &ram[..]);
        assert_eq!(std::fs::read(r.state_path()).unwrap(), b"dev1");
        // Sent again after a lost ack: acknowledged, not applied again.
        assert_eq!(r.apply(&one).unwrap(), Some(1));
        ram[0] = 3;
        let two = cp(2, true, &ram, &mut h);
        ram[1] = 4;
        let three = cp(3, true, &ram, &mut h);
        assert!(matches!(
            r.apply(&three),
            Err(ApplyError::Order {
                expected: 2,
                got: 3
            })
        ));
        assert_eq!(r.ram()[0], 0, "nothing of a refused checkpoint is written");
        r.apply(&two).unwrap();
        r.apply(&three).unwrap();
        assert_eq!(r.ram(), &ram[..]);
        assert!(matches!(
            r.apply(&cp(0, false, &ram, &mut h)),
            Err(ApplyError::LateBase(3))
        ));
        let mut wrong = cp(4, true, &ram, &mut h);
        wrong.ram_len = 2 * LEN as u64;
        assert!(matches!(r.apply(&wrong), Err(ApplyError::RamLen { .. })));
    }

    #[test]
    fn an_adopted_replica_goes_on_from_the_state_it_shares() {
        let dir = tempfile::tempdir().unwrap();
        let mut ram = vec![0u8; LEN];
        ram[3 * PAGE] = 7;
        let file = dir.path().join("ram");
        std::fs::write(&file, &ram).unwrap();
        let mut r = Replica::adopt(&file, &dir.path().join("dev"), LEN as u64, b"dev9", 9).unwrap();
        assert_eq!(r.applied(), Some(9));
        assert_eq!(std::fs::read(r.state_path()).unwrap(), b"dev9");
        // The new primary hashes what both hold, then sends what changed.
        let mut h = PageHashes::of(&ram);
        ram[4 * PAGE] = 8;
        let ten = cp(10, true, &ram, &mut h);
        assert_eq!(ten.pages.index, vec![4], "only the page changed since");
        assert!(matches!(
            r.apply(&cp(0, false, &ram, &mut h)),
            Err(ApplyError::LateBase(9))
        ));
        assert_eq!(r.apply(&ten).unwrap(), Some(10));
        assert_eq!(r.ram(), &ram[..]);
        // A fresh replica refuses to go on from a state it does not hold.
        let mut fresh = Replica::create(
            &dir.path().join("ram2"),
            &dir.path().join("dev2"),
            LEN as u64,
        )
        .unwrap();
        assert!(matches!(
            fresh.apply(&ten),
            Err(ApplyError::Order {
                expected: 1,
                got: 10
            })
        ));
        let short = dir.path().join("short");
        std::fs::write(&short, [0u8; PAGE]).unwrap();
        assert!(Replica::adopt(&short, &dir.path().join("dev3"), LEN as u64, b"", 1).is_err());
    }

    #[test]
    fn the_first_consistent_checkpoint_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut r =
            Replica::create(&dir.path().join("ram"), &dir.path().join("dev"), LEN as u64).unwrap();
        let ram = vec![0u8; LEN];
        let mut h = PageHashes::zeroed(LEN);
        assert!(matches!(
            r.apply(&cp(2, true, &ram, &mut h)),
            Err(ApplyError::Order {
                expected: 1,
                got: 2
            })
        ));
    }
}
