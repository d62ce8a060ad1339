//! QEMU engine: launch a VM from a typed description, talk QMP to it, probe
//! the accelerator, drive live migration.

pub mod accel;
pub mod checkpoint;
pub mod error;
pub mod launch;
pub mod migration;
pub mod process;
pub mod qmp;
pub mod runas;

pub use error::QemuError;
pub use launch::Launch;
pub use process::QemuProcess;
pub use qmp::Qmp;

/// The QEMU binary Duplex runs (override with `DUPLEX_QEMU`).
pub fn qemu_binary() -> std::path::PathBuf {
    std::env::var_os("DUPLEX_QEMU")
        .map(Into::into)
        .unwrap_or_else(|| "qemu-system-x86_64".into())
}

/// `qemu-system-x86_64 --version`, first line; errors if QEMU is missing.
pub async fn version(bin: &std::path::Path) -> Result<String, QemuError> {
    let out = tokio::process::Command::new(bin)
        .arg("--version")
        .output()
        .await
        .map_err(|e| QemuError::not_found_or_spawn(bin, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("unknown").trim().to_string())
}
