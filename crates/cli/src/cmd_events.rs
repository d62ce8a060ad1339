//! `duplex events [--follow]`.

use crate::conn::Conn;
use crate::output::{self, s, Format};
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct EventsArgs {
    #[command(flatten)]
    c: Conn,
    /// Keep printing new events as they happen.
    #[arg(short, long)]
    follow: bool,
    /// How many recent events to show first.
    #[arg(long, default_value_t = 50)]
    last: usize,
}

pub async fn run(a: EventsArgs) -> anyhow::Result<()> {
    let client = a.c.client()?;
    let mut after: Option<String> = None;
    let mut first = true;
    loop {
        let path = match &after {
            None => format!("/v1/events?limit={}", a.last.clamp(1, 1000)),
            Some(id) => format!("/v1/events?after={id}&limit=1000&wait=30"),
        };
        let evs: Vec<Value> = client.get(&path).await?;
        if let Some(last) = evs.last() {
            after = Some(s(&last["id"]));
        }
        match a.c.output {
            Format::Json if !a.follow => output::json(&evs)?,
            Format::Json => {
                for e in &evs {
                    println!("{e}");
                }
            }
            Format::Table => {
                for e in &evs {
                    println!("{}", line(e));
                }
            }
        }
        if !a.follow {
            return Ok(());
        }
        if first && after.is_none() {
            after = Some(String::new());
        }
        first = false;
    }
}

fn line(e: &Value) -> String {
    format!(
        "{} {:<7} {:<24} {:<14} {}",
        crate::output::clock(e["at_ms"].as_u64().unwrap_or(0)),
        s(&e["severity"]),
        s(&e["kind"]),
        s(&e["subject"]),
        s(&e["message"])
    )
}
