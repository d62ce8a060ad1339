//! Watches a VM's serial log for the guest's marker lines.

use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `log` until a line starting with `marker` appears; returns when it
/// was first seen. Gives up after `timeout`.
pub async fn wait_marker(log: &Path, marker: &str, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    let mut seen = 0usize;
    let mut partial = String::new();
    while Instant::now() < deadline {
        if let Ok(bytes) = tokio::fs::read(log).await {
            if bytes.len() > seen {
                let now = Instant::now();
                partial.push_str(&String::from_utf8_lossy(&bytes[seen..]));
                seen = bytes.len();
                if partial.lines().any(|l| l.trim_start().starts_with(marker)) {
                    return Some(now);
                }
                if let Some(cut) = partial.rfind('\n') {
                    partial.drain(..=cut);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
