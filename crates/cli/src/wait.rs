//! Waiting for a controller operation, printing its progress.

use duplex_controller::client::ControllerClient;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Polls `/v1/operations/{id}` until it ends; prints each new progress
/// line to stderr. Err if it failed or did not end within `timeout`.
pub async fn operation(
    client: &ControllerClient,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let op: Value = client.get(&format!("/v1/operations/{id}")).await?;
        let progress = op["progress"].as_str().unwrap_or("").to_string();
        if progress != last {
            eprintln!("  {progress}");
            last = progress;
        }
        match op["state"].as_str() {
            Some("succeeded") => return Ok(op),
            Some("failed") => anyhow::bail!(
                "operation {id} failed: {}",
                op["error"].as_str().unwrap_or("no reason given")
            ),
            _ => {}
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "operation {id} still running after {} s; follow it with `duplex events --follow`",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
