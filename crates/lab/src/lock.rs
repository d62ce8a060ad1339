//! One `up`/`down` at a time: an exclusive `flock` on `/run/duplex`.
//!
//! Without it, a second `up` of the same lab could fail half-way and tear
//! down the first one's namespaces. The lock is released when the guard
//! (the open directory) is dropped, also when the process dies.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::LabError;
use crate::plan::RUN_DIR;

pub(crate) struct LabLock {
    _dir: File,
}

/// Takes the lock, waiting for another lab command if needed.
pub(crate) fn lock() -> Result<LabLock, LabError> {
    let path = Path::new(RUN_DIR);
    std::fs::create_dir_all(path).map_err(|e| LabError::io("cannot create", path, e))?;
    let dir = File::open(path).map_err(|e| LabError::io("cannot open", path, e))?;
    let fd = dir.as_raw_fd();
    // SAFETY: fd is an open descriptor owned by `dir` for the whole call.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        tracing::info!("another `duplex lab` command holds {RUN_DIR}; waiting for it");
        loop {
            // SAFETY: as above.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(LabError::io("cannot lock", path, e));
            }
        }
    }
    Ok(LabLock { _dir: dir })
}
