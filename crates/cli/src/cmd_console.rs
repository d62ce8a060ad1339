//! `duplex console`: opens a session of the web console for the operator
//! whose certificate this CLI uses, and prints the address to open.

use crate::conn::Conn;
use crate::output::{self, Format};
use clap::Args;
use duplex_core::console_session::{SessionGrant, SessionRequest, MAX_TTL_MS};

#[derive(Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    c: Conn,
    /// How long the session lasts, in minutes (default 8 hours; at most 24).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_TTL_MS / 60_000))]
    minutes: Option<u64>,
}

pub async fn run(a: ConsoleArgs) -> anyhow::Result<()> {
    let client = a.c.client()?;
    let req = SessionRequest {
        ttl_ms: a.minutes.map(|m| m * 60_000),
    };
    let grant: SessionGrant = client.post("/v1/sessions", &req).await?;
    match a.c.output {
        Format::Json => output::json(&grant)?,
        Format::Table => {
            println!("{}", grant.url);
            eprintln!(
                "Open that address in a browser within 5 minutes (it is good once: it sets the session's cookie). The console acts as {} ({:?}) until the session expires or you log out.",
                grant.operator, grant.scope
            );
            eprintln!("The browser must trust the cluster's CA (its ca.crt), or be told to accept the controller's certificate.");
        }
    }
    Ok(())
}
