//! A VM's RAM file, mapped into the agent.

use memmap2::{Mmap, MmapMut, MmapOptions};
use std::fs::OpenOptions;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RamError {
    #[error("RAM file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("RAM file {path} is {actual} bytes, expected {expected}")]
    Size {
        path: String,
        actual: u64,
        expected: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RamError + '_ {
    move |source| RamError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The primary's view: QEMU writes, the agent reads.
pub struct RamView {
    map: Mmap,
}

impl RamView {
    /// Maps `path`, which must be `len` bytes (QEMU created it).
    pub fn open(path: &Path, len: u64) -> Result<RamView, RamError> {
        let file = OpenOptions::new().read(true).open(path).map_err(io(path))?;
        let actual = file.metadata().map_err(io(path))?.len();
        if actual != len {
            return Err(RamError::Size {
                path: path.display().to_string(),
                actual,
                expected: len,
            });
        }
        // SAFETY: the file is shared with QEMU, which writes it while the
        // guest runs; we only read it, and only as plain bytes (the scan
        // copies a page and hashes the copy when the guest runs).
        let map = unsafe { MmapOptions::new().map(&file) }.map_err(io(path))?;
        Ok(RamView { map })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// The backup's copy: created zero-filled, written by the agent only.
pub struct RamImage {
    map: MmapMut,
}

impl RamImage {
    /// Creates (or empties) `path` as `len` zero bytes and maps it.
    pub fn create(path: &Path, len: u64) -> Result<RamImage, RamError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io(path))?;
        file.set_len(len).map_err(io(path))?;
        // SAFETY: the file is ours until a QEMU is started on it (failover),
        // after which the image is dropped and never written again.
        let map = unsafe { MmapOptions::new().map_mut(&file) }.map_err(io(path))?;
        Ok(RamImage { map })
    }

    /// Maps `path` as it is: a VM's RAM file whose content the replica
    /// takes over (it must be `len` bytes long).
    pub fn open_existing(path: &Path, len: u64) -> Result<RamImage, RamError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let actual = file.metadata().map_err(io(path))?.len();
        if actual != len {
            return Err(RamError::Size {
                path: path.display().to_string(),
                actual,
                expected: len,
            });
        }
        // SAFETY: as in `create`: the file is the replica's alone now (the
        // QEMU that used it has exited).
        let map = unsafe { MmapOptions::new().map_mut(&file) }.map_err(io(path))?;
        Ok(RamImage { map })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }
}
