//! `duplex site replicate|switch|show`: S5, one VM kept in two sites.

use crate::conn::Conn;
use crate::output::{self, s, Format};
use crate::wait;
use clap::Subcommand;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Subcommand)]
pub enum SiteCmd {
    /// Keep a replicated VM's replica in another site: paused, kept close
    /// to the VM's state by epochs, its host's element buffering what
    /// that site sends the VM.
    Replicate {
        #[command(flatten)]
        c: Conn,
        vm: String,
        /// The site to keep the replica in.
        #[arg(long)]
        to: String,
    },
    /// Move the VM to the site its replica is in, with its latest state;
    /// that site's buffered traffic is processed first, in order, and the
    /// site it leaves buffers from then on.
    Switch {
        #[command(flatten)]
        c: Conn,
        vm: String,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
    /// When the VM switches sites on its own: when the other site's
    /// buffered traffic is this old or this much, or on a schedule; never
    /// sooner than --min-stay-ms after the last switch.
    Policy {
        #[command(flatten)]
        c: Conn,
        vm: String,
        #[arg(long)]
        max_age_ms: Option<u64>,
        #[arg(long)]
        max_buffered: Option<u64>,
        #[arg(long)]
        every_ms: Option<u64>,
        #[arg(long, default_value_t = 2000)]
        min_stay_ms: u64,
        /// Switch only on order.
        #[arg(long, conflicts_with_all = ["max_age_ms", "max_buffered", "every_ms"])]
        off: bool,
    },
    /// Both sides: where the VM runs, how far its replica trails, what the
    /// paused side buffers.
    Show {
        #[command(flatten)]
        c: Conn,
        vm: String,
    },
}

pub async fn run(cmd: SiteCmd) -> anyhow::Result<()> {
    match cmd {
        SiteCmd::Replicate { c, vm, to } => {
            let rec: Value = c
                .client()?
                .post(&format!("/v1/vms/{vm}/site/replicate"), &json!({"to": to}))
                .await?;
            match c.output {
                Format::Json => output::json(&rec)?,
                Format::Table => println!(
                    "{vm} runs on {}; its replica is being made in site {to} (see `duplex site show {vm}`)",
                    s(&rec["host"])
                ),
            }
        }
        SiteCmd::Switch {
            c,
            vm,
            no_wait,
            timeout_s,
        } => {
            let client = c.client()?;
            let op: Value = client
                .post(&format!("/v1/vms/{vm}/site/switch"), &json!({}))
                .await?;
            let id = s(&op["id"]);
            if no_wait {
                match c.output {
                    Format::Json => output::json(&op)?,
                    Format::Table => println!("site switch of {vm} started: operation {id}"),
                }
                return Ok(());
            }
            eprintln!("site switch of {vm} (operation {id}):");
            let done = wait::operation(&client, &id, Duration::from_secs(timeout_s)).await?;
            match c.output {
                Format::Json => output::json(&done)?,
                Format::Table => println!("{}", s(&done["progress"])),
            }
        }
        SiteCmd::Policy {
            c,
            vm,
            max_age_ms,
            max_buffered,
            every_ms,
            min_stay_ms,
            off,
        } => {
            let body = if off {
                Value::Null
            } else {
                json!({
                    "max_age_ms": max_age_ms,
                    "max_buffered": max_buffered,
                    "every_ms": every_ms,
                    "min_stay_ms": min_stay_ms,
                })
            };
            let rec: Value = c
                .client()?
                .put(&format!("/v1/vms/{vm}/site/policy"), &body)
                .await?;
            match c.output {
                Format::Json => output::json(&rec)?,
                Format::Table if off => println!("{vm} switches sites only on order"),
                Format::Table => println!("{vm} switches sites by policy {}", rec["site_policy"]),
            }
        }
        SiteCmd::Show { c, vm } => {
            let view: Value = c.client()?.get(&format!("/v1/vms/{vm}/site")).await?;
            match c.output {
                Format::Json => output::json(&view)?,
                Format::Table => show(&view),
            }
        }
    }
    Ok(())
}

fn show(v: &Value) {
    let mut rows = vec![side_row("active", &v["active"])];
    if !v["paused"].is_null() {
        rows.push(side_row("paused", &v["paused"]));
    }
    output::table(
        &[
            "SIDE",
            "HOST",
            "SITE",
            "LAG/EPOCH",
            "BUFFER",
            "BUFFERED",
            "OLDEST",
            "DROPPED",
        ],
        &rows,
    );
}

fn side_row(what: &str, side: &Value) -> Vec<String> {
    let seen = &side["seen"];
    let b = &seen["buffer"];
    let lag = if !seen["lag_ms"].is_null() {
        format!("{} ms", seen["lag_ms"])
    } else if !seen["applied"].is_null() {
        format!("epoch {}", seen["applied"])
    } else {
        "-".into()
    };
    let or_dash = |x: &Value| {
        if x.is_null() {
            "-".to_string()
        } else {
            x.to_string()
        }
    };
    let mode = if side["error"].is_null() {
        s(&b["mode"])
    } else {
        format!("? ({})", s(&side["error"]))
    };
    vec![
        what.to_string(),
        s(&side["host"]),
        s(&side["site"]),
        lag,
        mode,
        or_dash(&b["buffered"]),
        b["oldest_ms"]
            .as_u64()
            .map_or("-".into(), |ms| format!("{ms} ms")),
        or_dash(&b["dropped_full"]),
    ]
}
