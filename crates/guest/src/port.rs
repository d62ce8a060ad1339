//! Finding the control channel's virtio-serial device by port name.

use crate::GuestError;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Waits up to `timeout` for `/sys/class/virtio-ports/<dev>/name == name` and
/// returns `/dev/<dev>`.
pub fn find(name: &str, timeout: Duration) -> Result<PathBuf, GuestError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if n.trim() == name {
                    return Ok(PathBuf::from("/dev").join(e.file_name()));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(GuestError::NoPort(name.into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
