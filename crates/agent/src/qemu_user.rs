//! What the unprivileged QEMU user may reach: its VM directories (given
//! to it, 0700) through the agent's data directory (traversable, not
//! listable), and nothing else of the agent's.

use crate::AgentError;
use duplex_qemu::runas::RunAs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// `<data_dir>/vms` is made traversable only (0711); every directory
/// above it must let the user through, or QEMU could not open its own
/// files: refused at start with what to change.
pub fn check_reachable(vms: &Path, user: &RunAs) -> Result<(), AgentError> {
    std::fs::set_permissions(vms, std::fs::Permissions::from_mode(0o711))
        .map_err(AgentError::io(format!("chmod {}", vms.display())))?;
    for dir in vms.ancestors() {
        let m =
            std::fs::metadata(dir).map_err(AgentError::io(format!("stat {}", dir.display())))?;
        let mode = m.mode();
        let through = m.uid() == user.uid && mode & 0o100 != 0
            || (m.gid() == user.gid || user.groups.contains(&m.gid())) && mode & 0o010 != 0
            || mode & 0o001 != 0;
        if !through {
            return Err(AgentError::Config(format!(
                "QEMU user `{}` cannot pass through {} (mode {:o}): allow it (chmod o+x {}) or pick another --data-dir",
                user.name,
                dir.display(),
                mode & 0o7777,
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Gives `path` to the QEMU user with `mode` (nothing without one).
pub fn give(user: Option<&RunAs>, path: &Path, mode: u32) -> Result<(), AgentError> {
    match user {
        Some(u) => u
            .own(path, mode)
            .map_err(|e| AgentError::Config(e.to_string())),
        None => Ok(()),
    }
}
