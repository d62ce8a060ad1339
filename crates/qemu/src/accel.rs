//! Accelerator choice: KVM where a probe boot of our own image succeeds,
//! TCG otherwise. `/dev/kvm` existing is not enough (ENVIRONMENT.md: the
//! `kvm_pvm` module accepts `-enable-kvm` but a stock kernel hangs).

use crate::QemuError;
use duplex_core::agent_api::{AccelInfo, AccelKind};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Probe results are cached per (QEMU version, kernel, KVM modules).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct CacheEntry {
    key: String,
    info: AccelInfo,
}

fn kvm_modules() -> Vec<String> {
    ["kvm_intel", "kvm_amd", "kvm_pvm", "kvm"]
        .iter()
        .filter(|m| Path::new("/sys/module").join(m).exists())
        .map(|m| m.to_string())
        .collect()
}

/// Returns the cached decision if its key still matches, else probes and
/// caches.
pub async fn detect(
    bin: &Path,
    kernel: &Path,
    initrd: &Path,
    cache_file: &Path,
    timeout: Duration,
) -> Result<AccelInfo, QemuError> {
    let qemu = crate::version(bin).await?;
    let kernel_len = std::fs::metadata(kernel).map(|m| m.len()).unwrap_or(0);
    let key = format!(
        "{qemu}|{}:{kernel_len}|{}",
        kernel.display(),
        kvm_modules().join(",")
    );
    if let Ok(text) = std::fs::read_to_string(cache_file) {
        if let Ok(entry) = serde_json::from_str::<CacheEntry>(&text) {
            if entry.key == key {
                return Ok(entry.info);
            }
        }
    }
    let info = probe(bin, kernel, initrd, timeout).await;
    tracing::info!(accel = ?info.kind, reason = %info.reason, "accelerator probed");
    let entry = CacheEntry {
        key,
        info: info.clone(),
    };
    if let Some(dir) = cache_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(text) = serde_json::to_string_pretty(&entry) {
        let tmp = cache_file.with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, cache_file);
        }
    }
    Ok(info)
}

/// Boots the image under KVM and waits for the guest's `DUPLEX-INIT` line.
pub async fn probe(bin: &Path, kernel: &Path, initrd: &Path, timeout: Duration) -> AccelInfo {
    let tcg = |reason: String| AccelInfo {
        kind: AccelKind::Tcg,
        reason,
    };
    if !Path::new("/dev/kvm").exists() {
        return tcg("no /dev/kvm on this host".into());
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return tcg(format!("/dev/kvm cannot be opened: {e}"));
    }
    let modules = kvm_modules().join(", ");
    let started = Instant::now();
    let child = tokio::process::Command::new(bin)
        .args([
            "-M",
            "microvm,acpi=on,pit=on,rtc=on",
            "-accel",
            "kvm",
            "-cpu",
            "host",
        ])
        .args([
            "-m",
            "128",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 tsc_early_khz=2000000 panic=-1",
            "-serial",
            "stdio",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return tcg(format!("KVM probe could not start QEMU: {e}")),
    };
    let Some(stdout) = child.stdout.take() else {
        return tcg("KVM probe has no stdout".into());
    };
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(timeout, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("DUPLEX-INIT") {
                return true;
            }
        }
        false
    })
    .await;
    let _ = child.kill().await;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut stderr)).await;
    }
    let why = stderr
        .lines()
        .find(|l| l.contains("error"))
        .or_else(|| stderr.lines().last())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    match found {
        Ok(true) => AccelInfo {
            kind: AccelKind::Kvm,
            reason: format!(
                "probe boot under KVM reached /init in {} ms (modules: {modules})",
                started.elapsed().as_millis()
            ),
        },
        Ok(false) => tcg(format!(
            "KVM probe QEMU exited before /init{why} (modules: {modules})"
        )),
        Err(_) => tcg(format!(
            "KVM probe boot did not reach /init within {} s (modules: {modules}); \
             e.g. kvm_pvm cannot run stock kernels",
            timeout.as_secs()
        )),
    }
}
