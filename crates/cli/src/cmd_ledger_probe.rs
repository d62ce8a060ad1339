//! The hidden `duplex ledger-probe`: a client of a guest's request ledger
//! (see `duplex_lab::ledger_probe`), run by tests and benchmarks inside a
//! lab's client namespaces; prints its JSON report.

use crate::output;
use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Args)]
pub struct LedgerProbeArgs {
    /// The ledger, e.g. 10.77.0.100:7100.
    #[arg(long)]
    target: SocketAddr,
    /// This client's id (one per probe, so each is judged on its own).
    #[arg(long)]
    client: u32,
    #[arg(long, default_value_t = 10_000)]
    interval_us: u64,
    /// Send for this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long)]
    duration_s: Option<f64>,
    /// Then listen this long for late answers.
    #[arg(long, default_value_t = 2.0)]
    grace_s: f64,
    /// Send nothing: print what the ledger remembers of --client.
    #[arg(long)]
    query: bool,
}

pub async fn run(a: LedgerProbeArgs) -> anyhow::Result<()> {
    if a.query {
        let v = duplex_lab::ledger_probe::query(a.target, a.client).await?;
        return output::json(&serde_json::json!({
            "client": v.client, "last": v.last, "count": v.count,
        }));
    }
    let secs = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s)
            .map_err(|_| anyhow::anyhow!("--{what}: {s} is not a duration in seconds"))
    };
    let grace = secs(a.grace_s, "grace-s")?;
    let limit = a.duration_s.map(|s| secs(s, "duration-s")).transpose()?;
    let stop = crate::stop::signalled_or(limit);
    let interval = Duration::from_micros(a.interval_us.max(100));
    let report = duplex_lab::ledger_probe::run(a.target, a.client, interval, grace, stop).await?;
    output::json(&report)
}
