//! `duplex vm create|list|show|delete` through the controller.

use crate::conn::Conn;
use crate::output::{self, s, Format};
use duplex_core::agent_api::MigrationTuning;
use duplex_core::escalation::record::History;
use duplex_core::escalation::Phase;
use duplex_core::vm_spec::VmSpec;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BOOT_WAIT: Duration = Duration::from_secs(180);
const DELETE_WAIT: Duration = Duration::from_secs(120);

pub async fn create(
    c: &Conn,
    spec: VmSpec,
    host: Option<String>,
    no_wait: bool,
) -> anyhow::Result<()> {
    let client = c.client()?;
    let name = spec.name.clone();
    let mut body = json!({"spec": spec});
    if let Some(h) = host {
        body["host"] = json!(h);
    }
    let v: Value = client.post("/v1/vms", &body).await?;
    if no_wait {
        return print_one(c, &v);
    }
    eprintln!(
        "VM {name} placed on {}; waiting for its guest...",
        s(&v["host"])
    );
    let deadline = Instant::now() + BOOT_WAIT;
    let mut last = String::new();
    loop {
        let v: Value = client.get(&format!("/v1/vms/{name}")).await?;
        let st = s(&v["status"]);
        if st != last {
            eprintln!("  {st}");
            last = st.clone();
        }
        match st.as_str() {
            "running" => return print_one(c, &v),
            "crashed" => {
                anyhow::bail!("VM {name} crashed while booting; see `duplex vm show {name}`")
            }
            _ => {}
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "VM {name} not running after {} s (status {st}); see `duplex events`",
                BOOT_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn print_one(c: &Conn, v: &Value) -> anyhow::Result<()> {
    match c.output {
        Format::Json => output::json(v)?,
        Format::Table => {
            let busy = v["cpu_busy"]
                .as_f64()
                .map(|c| format!(", {c:.2} vCPUs busy"))
                .unwrap_or_default();
            println!(
                "VM {} on {}: {} (ip {}, {} MiB{busy})",
                s(&v["spec"]["name"]),
                s(&v["host"]),
                s(&v["status"]),
                s(&v["spec"]["ip"]),
                s(&v["spec"]["memory_mib"])
            )
        }
    }
    Ok(())
}

pub async fn list(c: &Conn) -> anyhow::Result<()> {
    let vms: Vec<Value> = c.client()?.get("/v1/vms").await?;
    match c.output {
        Format::Json => output::json(&vms)?,
        Format::Table => {
            let rows: Vec<Vec<String>> = vms
                .iter()
                .map(|v| {
                    vec![
                        s(&v["spec"]["name"]),
                        s(&v["host"]),
                        s(&v["status"]),
                        s(&v["role"]),
                        s(&v["pair"]),
                        s(&v["spec"]["ip"]),
                        s(&v["spec"]["memory_mib"]),
                    ]
                })
                .collect();
            output::table(
                &["VM", "HOST", "STATUS", "ROLE", "PAIR", "IP", "MIB"],
                &rows,
            )
        }
    }
    Ok(())
}

pub async fn show(c: &Conn, name: &str) -> anyhow::Result<()> {
    let v: Value = c.client()?.get(&format!("/v1/vms/{name}")).await?;
    output::json(&v)
}

/// `duplex vm history`: the VM's restart counters and the failures acted
/// on, oldest first.
pub async fn history(c: &Conn, name: &str) -> anyhow::Result<()> {
    let h: History = c.client()?.get(&format!("/v1/vms/{name}/history")).await?;
    if let Format::Json = c.output {
        return output::json(&h);
    }
    let phase = |p: Phase| serde_json::to_value(p).map(|v| s(&v)).unwrap_or_default();
    if h.counters.is_empty() {
        println!("VM {name}: no restart counted");
    } else {
        let counts: Vec<String> = h
            .counters
            .iter()
            .map(|c| {
                format!(
                    "{} x{} (last {})",
                    phase(c.phase),
                    c.runs,
                    output::clock(c.last_ms)
                )
            })
            .collect();
        println!("VM {name}: {}", counts.join(", "));
    }
    let rows: Vec<Vec<String>> = h
        .history
        .iter()
        .map(|e| {
            let how = match (e.fast_path, e.failover_first) {
                (true, _) => "fast path",
                (false, true) => "SBY first",
                _ => "",
            };
            let outcome = match &e.outcome {
                None => "under way".to_string(),
                Some(o) if o.ok => "done".to_string(),
                Some(o) => format!("failed: {}", o.message),
            };
            vec![
                output::clock(e.at_ms),
                e.host.clone(),
                serde_json::to_value(e.cause)
                    .map(|v| s(&v))
                    .unwrap_or_default(),
                phase(e.phase),
                how.to_string(),
                outcome,
                e.detail.clone(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        output::table(
            &[
                "TIME (UTC)",
                "HOST",
                "CAUSE",
                "PHASE",
                "HOW",
                "OUTCOME",
                "DETAIL",
            ],
            &rows,
        );
    }
    Ok(())
}

pub async fn delete(c: &Conn, name: &str, no_wait: bool) -> anyhow::Result<()> {
    let client = c.client()?;
    let accepted: Value = client.delete(&format!("/v1/vms/{name}")).await?;
    if !no_wait {
        eprintln!("deleting VM {name}...");
        let deadline = Instant::now() + DELETE_WAIT;
        loop {
            match client.get::<Value>(&format!("/v1/vms/{name}")).await {
                Err(e) if e.code() == Some("not_found") => break,
                Err(e) => return Err(e.into()),
                Ok(_) if Instant::now() > deadline => {
                    anyhow::bail!("VM {name} still not gone after {} s; its host may be down (see `duplex host list`)", DELETE_WAIT.as_secs())
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }
    match (c.output, no_wait) {
        (Format::Json, true) => output::json(&accepted),
        (Format::Json, false) => output::json(&json!({"vm": name, "deleted": true})),
        (_, true) => {
            println!("VM {name} is being deleted");
            Ok(())
        }
        (_, false) => {
            println!("VM {name} deleted");
            Ok(())
        }
    }
}

/// How `vm migrate` goes through the controller.
pub struct How {
    pub tuning: MigrationTuning,
    pub no_wait: bool,
    /// Live-migrate a pair's ACT anyway.
    pub plain: bool,
}

pub async fn migrate(c: &Conn, name: &str, to: &str, how: &How) -> anyhow::Result<()> {
    let (tuning, no_wait) = (&how.tuning, how.no_wait);
    let client = c.client()?;
    let acc: Value = client
        .post(
            &format!("/v1/vms/{name}/migrate"),
            &json!({"to": to, "tuning": tuning, "plain": how.plain}),
        )
        .await?;
    if acc["operation"].is_null() {
        match c.output {
            Format::Json => output::json(&acc)?,
            Format::Table => println!(
                "VM {name} stays on {}: placement finds no better host (`duplex placement explain {name}`)",
                s(&acc["from"])
            ),
        }
        return Ok(());
    }
    let id = s(&acc["operation"]["id"]);
    if no_wait {
        match c.output {
            Format::Json => output::json(&acc)?,
            Format::Table => println!(
                "moving {name} {} -> {}: operation {id}",
                s(&acc["from"]),
                s(&acc["to"])
            ),
        }
        return Ok(());
    }
    eprintln!(
        "moving {name} {} -> {} (operation {id}):",
        s(&acc["from"]),
        s(&acc["to"])
    );
    let op = crate::wait::operation(&client, &id, Duration::from_secs(660)).await?;
    match c.output {
        Format::Json => output::json(&json!({"request": acc, "operation": op}))?,
        Format::Table => println!("{}", s(&op["progress"])),
    }
    Ok(())
}
