//! `duplex switch`: the Duplex switch (S2 embodiment B).

use duplex_net::switch::ports::PortSpec;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SwitchArgs {
    /// A port: an interface of this namespace, `NAME=host` for a host's
    /// uplink (it may mark frames and send epoch messages), `NAME` or
    /// `NAME=edge` for anything else (clients, management). Repeat.
    #[arg(long = "port", value_name = "IFACE[=host|edge]", required = true)]
    ports: Vec<PortSpec>,
    /// Rewrite this JSON file every second with the switch's counters and
    /// held streams.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
}

/// Runs until the process is killed; the async runtime is not needed
/// (one thread in poll(2)).
pub async fn run(a: SwitchArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || duplex_net::switch::ports::run(a.ports, a.stats)).await??;
    Ok(())
}
