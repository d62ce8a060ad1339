//! The S1 lab's moves, through the `duplex` CLI as an operator would type
//! them: where the pair's members are, one timed move, and putting the
//! pair back where every arm starts (ACT `sa` on h1, SBY `sb` on h3).

use super::report::{migration_of, switchover_of, Move};
use crate::Lab;
use anyhow::Context;
use serde_json::Value;
use std::time::{Duration, Instant};

pub const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
/// A move still running after this is reported failed and the arm ends.
pub const MOVE_LIMIT: Duration = Duration::from_secs(120);

/// Runs the CLI against the bench lab; JSON output.
pub async fn cli(args: &[&str]) -> anyhow::Result<Value> {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["-o".into(), "json".into()]);
    let out = tokio::process::Command::new(crate::duplex_bin())
        .args(&all)
        .env("DUPLEX_LAB", Lab::NAME)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "duplex {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).with_context(|| format!("duplex {}", args.join(" ")))
}

/// Where the pair's members run and which is ACT.
#[derive(Debug, Clone)]
pub struct Placement {
    pub act: String,
    pub act_host: String,
    pub sby_host: String,
    pub sa_host: String,
    pub sb_host: String,
}

impl Placement {
    /// The lab host holding no member.
    pub fn free_host(&self) -> &'static str {
        HOSTS
            .iter()
            .find(|h| **h != self.act_host && **h != self.sby_host)
            .copied()
            .unwrap_or("h2")
    }
}

pub async fn placement() -> anyhow::Result<Placement> {
    let p = cli(&["pair", "show", "sip"]).await?;
    let members = p["members_status"]
        .as_array()
        .context("pair show: no members_status")?;
    let field = |pred: &dyn Fn(&Value) -> bool, key: &str| -> anyhow::Result<String> {
        members
            .iter()
            .find(|m| pred(m))
            .and_then(|m| m[key].as_str())
            .map(str::to_string)
            .with_context(|| format!("pair show: no member with {key} in {p}"))
    };
    Ok(Placement {
        act: field(&|m| m["role"] == "act", "vm")?,
        act_host: field(&|m| m["role"] == "act", "host")?,
        sby_host: field(&|m| m["role"] != "act", "host")?,
        sa_host: field(&|m| m["vm"] == "sa", "host")?,
        sb_host: field(&|m| m["vm"] == "sb", "host")?,
    })
}

pub async fn host_of(vm: &str) -> anyhow::Result<String> {
    let v = cli(&["vm", "show", vm]).await?;
    v["host"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("vm show {vm}: no host in {v}"))
}

pub async fn all_hosts_ready() -> anyhow::Result<()> {
    for h in HOSTS {
        cli(&["host", "state", h, "ready"]).await?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn events_since(at_ms: u64) -> Vec<Value> {
    match cli(&["events"]).await {
        Ok(Value::Array(v)) => v
            .into_iter()
            .filter(|e| e["at_ms"].as_u64().unwrap_or(0) >= at_ms)
            .collect(),
        _ => Vec::new(),
    }
}

/// Runs one move (`args` of the CLI) and what the controller reported
/// meanwhile; times are from `t0`, sipp's start.
pub async fn timed(args: &[String], t0: Instant) -> Move {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let wall = now_ms();
    let start_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let res = match tokio::time::timeout(MOVE_LIMIT, cli(&args)).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "not done within {} s (a live migration that does not converge)",
            MOVE_LIMIT.as_secs()
        )),
    };
    let end_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if let Err(e) = &res {
        eprintln!("    move failed: {e:#}");
    }
    let events = events_since(wall).await;
    Move {
        command: format!("duplex {}", args.join(" ")),
        start_ms,
        end_ms,
        ok: res.is_ok(),
        migrations: events.iter().filter_map(migration_of).collect(),
        switchovers_ms: events.iter().filter_map(switchover_of).collect(),
    }
}

/// Back to the start (untimed, between arms): every host ready, `sa` ACT
/// on h1, `sb` SBY on h3.
pub async fn restore() -> anyhow::Result<()> {
    all_hosts_ready().await?;
    for _ in 0..4 {
        let p = placement().await?;
        if p.act != "sa" {
            cli(&["pair", "switchover", "sip"]).await?;
        } else if p.sa_host == "h3" {
            let to = p.free_host();
            cli(&[
                "pair",
                "migrate",
                "sip",
                "--from",
                "h3",
                "--to",
                to,
                "--switch-back",
            ])
            .await?;
        } else if p.sb_host != "h3" {
            cli(&["pair", "migrate", "sip", "--from", &p.sb_host, "--to", "h3"]).await?;
        } else if p.sa_host != "h1" {
            cli(&[
                "pair",
                "migrate",
                "sip",
                "--from",
                &p.sa_host,
                "--to",
                "h1",
                "--switch-back",
            ])
            .await?;
        } else {
            return Ok(());
        }
    }
    let p = placement().await?;
    anyhow::ensure!(
        p.act == "sa" && p.sa_host == "h1" && p.sb_host == "h3",
        "could not put the pair back (ACT sa on h1, sb on h3): {p:?}"
    );
    Ok(())
}
