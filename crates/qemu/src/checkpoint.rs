//! S2 checkpoints with QEMU 7.2 (measured, ENVIRONMENT.md):
//!
//! - the guest's RAM is a shared file the agent reads itself, so QEMU only
//!   saves device state: `xen-save-devices-state` writes it to a file in
//!   about 1 ms (14 KB for a Duplex guest), where a `migrate` with
//!   `x-ignore-shared` takes 7-21 ms for the same;
//! - QEMU's own `xen-load-devices-state` crashes 7.2, but an incoming
//!   migration reads the same bytes: a QEMU started on the replica's RAM
//!   file with `-incoming defer`, `x-ignore-shared` and
//!   `migration.send-configuration=off` (the saved state has no
//!   configuration section) takes it over a unix socket and runs the guest
//!   from exactly that state.

use crate::{QemuError, Qmp};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Longest a device-state load may take before the start is given up.
pub const LOAD_LIMIT: Duration = Duration::from_secs(10);
/// How often the load's progress is polled.
const LOAD_POLL: Duration = Duration::from_millis(2);

/// Pauses the guest (the checkpoint's start).
pub async fn pause(qmp: &Qmp) -> Result<(), QemuError> {
    qmp.execute("stop", None).await.map(drop)
}

/// Resumes the guest.
pub async fn resume(qmp: &Qmp) -> Result<(), QemuError> {
    qmp.execute("cont", None).await.map(drop)
}

/// Writes the paused guest's device state to `file` (QEMU opens it).
pub async fn save_device_state(qmp: &Qmp, file: &Path) -> Result<(), QemuError> {
    qmp.execute(
        "xen-save-devices-state",
        Some(json!({"filename": file.display().to_string(), "live": false})),
    )
    .await
    .map(drop)
}

/// Loads `state` into a QEMU started with `-incoming defer` on the
/// replica's RAM; `socket`: a path in the VM's directory QEMU listens on
/// for it. The guest runs once the load completes (QEMU starts it).
pub async fn load_device_state(qmp: &Qmp, socket: &Path, state: &[u8]) -> Result<(), QemuError> {
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})),
    )
    .await?;
    let _ = std::fs::remove_file(socket);
    qmp.execute(
        "migrate-incoming",
        Some(json!({"uri": format!("unix:{}", socket.display())})),
    )
    .await?;
    let file_err = |source| QemuError::File {
        path: socket.to_path_buf(),
        source,
    };
    let mut conn = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(file_err)?;
    conn.write_all(state).await.map_err(file_err)?;
    conn.shutdown().await.map_err(file_err)?;
    let started = Instant::now();
    loop {
        let q = qmp.execute("query-migrate", None).await?;
        match q["status"].as_str() {
            Some("completed") => return Ok(()),
            Some("failed") => {
                let why = q["error-desc"].as_str().unwrap_or("no reason given");
                return Err(QemuError::Migration(format!("device state load: {why}")));
            }
            _ if started.elapsed() > LOAD_LIMIT => {
                return Err(QemuError::Migration(format!(
                    "device state load did not complete within {} s",
                    LOAD_LIMIT.as_secs()
                )))
            }
            _ => tokio::time::sleep(LOAD_POLL).await,
        }
    }
}
