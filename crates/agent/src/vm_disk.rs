//! A VM's own files besides QEMU's sockets: the qcow2 overlay its root disk
//! writes to (on the image's read-only base) and its user data, both in the
//! VM's directory and given to the QEMU user.
//!
//! The overlay lives as long as the VM stays on this host: a live migration
//! carries its blocks to the destination's new overlay (QEMU's incremental
//! block migration), a VM started afresh starts from the image again.

use crate::AgentError;
use duplex_core::vm_spec::VmSpec;
use duplex_qemu::runas::RunAs;
use std::path::{Path, PathBuf};

/// File names in the VM's directory.
pub const OVERLAY: &str = "disk.qcow2";
pub const USER_DATA: &str = "user-data.json";

/// Make `<dir>/disk.qcow2` on top of `base` (an absolute path; QEMU opens
/// it read-only as the overlay's backing file).
pub async fn make_overlay(
    base: &Path,
    dir: &Path,
    user: Option<&RunAs>,
) -> Result<PathBuf, AgentError> {
    let overlay = dir.join(OVERLAY);
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .arg(&overlay)
        .output()
        .await
        .map_err(AgentError::io("run qemu-img (Debian's qemu-utils)"))?;
    if !out.status.success() {
        return Err(AgentError::Config(format!(
            "qemu-img create of {} on {}: {}",
            overlay.display(),
            base.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    crate::qemu_user::give(user, &overlay, 0o600)?;
    Ok(overlay)
}

/// Write the spec's user data for QEMU to hand to the guest (none without).
pub fn write_user_data(
    spec: &VmSpec,
    dir: &Path,
    user: Option<&RunAs>,
) -> Result<Option<PathBuf>, AgentError> {
    let Some(data) = spec.user_data.as_ref().filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    let path = dir.join(USER_DATA);
    let json =
        serde_json::to_vec(data).map_err(|e| AgentError::Config(format!("user data: {e}")))?;
    std::fs::write(&path, json).map_err(AgentError::io(format!("write {}", path.display())))?;
    crate::qemu_user::give(user, &path, 0o400)?;
    Ok(Some(path))
}
