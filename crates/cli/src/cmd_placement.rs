//! `duplex placement explain VM`: why placement would put a VM where it does.

use crate::conn::Conn;
use crate::output::{self, Format};
use clap::Subcommand;
use duplex_core::placement::Explanation;

#[derive(Subcommand)]
pub enum PlacementCmd {
    /// Every host's filter result and impact-factor terms for the VM.
    Explain {
        #[command(flatten)]
        c: Conn,
        vm: String,
    },
}

pub async fn run(cmd: PlacementCmd) -> anyhow::Result<()> {
    match cmd {
        PlacementCmd::Explain { c, vm } => {
            let ex: Explanation = c.client()?.get(&format!("/v1/placement/{vm}")).await?;
            match c.output {
                Format::Json => output::json(&ex)?,
                Format::Table => print!("{}", ex.render()),
            }
        }
    }
    Ok(())
}
