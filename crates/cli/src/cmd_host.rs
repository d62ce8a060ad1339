//! `duplex host list|show|state`: hosts as the controller sees them.

use crate::conn::Conn;
use crate::output::{self, s, Format};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum HostCmd {
    /// Every registered host: state, engine, capacity, VMs.
    List {
        #[command(flatten)]
        c: Conn,
    },
    Show {
        #[command(flatten)]
        c: Conn,
        name: String,
    },
    /// Move everything off a host (pairs the S1 way, lone VMs by live
    /// migration, destinations from placement) and leave it in maintenance.
    Drain {
        #[command(flatten)]
        c: Conn,
        name: String,
        /// How many pairs or VMs move at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 3600)]
        timeout_s: u64,
    },
    /// Set a host ready, in maintenance (keeps its VMs, takes no new ones) or spare.
    State {
        #[command(flatten)]
        c: Conn,
        name: String,
        #[arg(value_parser = ["ready", "maintenance", "spare"])]
        state: String,
    },
}

pub async fn run(cmd: HostCmd) -> anyhow::Result<()> {
    match cmd {
        HostCmd::List { c } => {
            let hosts: Vec<Value> = c.client()?.get("/v1/hosts").await?;
            match c.output {
                Format::Json => output::json(&hosts)?,
                Format::Table => output::table(
                    &[
                        "HOST",
                        "STATE",
                        "ENGINE",
                        "VCPUS",
                        "MEMORY",
                        "VMS",
                        "LAST SEEN",
                        "URL",
                    ],
                    &hosts.iter().map(row).collect::<Vec<_>>(),
                ),
            }
        }
        HostCmd::Show { c, name } => {
            let h: Value = c.client()?.get(&format!("/v1/hosts/{name}")).await?;
            output::json(&h)?
        }
        HostCmd::Drain {
            c,
            name,
            concurrency,
            no_wait,
            timeout_s,
        } => {
            let client = c.client()?;
            let op: Value = client
                .post(
                    &format!("/v1/hosts/{name}/drain"),
                    &json!({"concurrency": concurrency}),
                )
                .await?;
            let id = s(&op["id"]);
            if no_wait {
                match c.output {
                    Format::Json => output::json(&op)?,
                    Format::Table => println!(
                        "draining {name}: operation {id} (follow with `duplex events --follow`)"
                    ),
                }
                return Ok(());
            }
            eprintln!("draining {name} (operation {id}):");
            let done =
                crate::wait::operation(&client, &id, std::time::Duration::from_secs(timeout_s))
                    .await?;
            match c.output {
                Format::Json => output::json(&done)?,
                Format::Table => println!("{}", s(&done["progress"])),
            }
        }
        HostCmd::State { c, name, state } => {
            let h: Value = c
                .client()?
                .post(&format!("/v1/hosts/{name}/state"), &json!({"state": state}))
                .await?;
            match c.output {
                Format::Json => output::json(&h)?,
                Format::Table => println!("{name}: {}", s(&h["state"])),
            }
        }
    }
    Ok(())
}

fn row(h: &Value) -> Vec<String> {
    let vms: Vec<String> = h["vms"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    vec![
        s(&h["name"]),
        s(&h["state"]),
        s(&h["accel"]["kind"]),
        s(&h["capacity"]["vcpus"]),
        format!("{} MiB", s(&h["capacity"]["memory_mib"])),
        if vms.is_empty() {
            "-".into()
        } else {
            vms.join(",")
        },
        format!(
            "{:.1} s ago",
            h["silent_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
        ),
        s(&h["url"]),
    ]
}
