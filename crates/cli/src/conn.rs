//! How operator commands find the controller: `--controller`/`--token-file`
//! (or `DUPLEX_CONTROLLER`/`DUPLEX_TOKEN_FILE`), or `--lab NAME` for the
//! controller a lab started, or the defaults of a local controller.

use crate::output::Format;
use anyhow::Context;
use clap::Args;
use duplex_controller::client::ControllerClient;
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/duplex/controller";

#[derive(Args, Clone)]
pub struct Conn {
    /// Controller base URL (default: the lab's, else http://127.0.0.1:7080).
    #[arg(long, env = "DUPLEX_CONTROLLER", global = true)]
    pub controller: Option<String>,
    /// File with the API token (default: the lab's, else /var/lib/duplex/controller/token).
    #[arg(long, env = "DUPLEX_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Use the controller of this lab.
    #[arg(long, env = "DUPLEX_LAB", global = true)]
    pub lab: Option<String>,
    /// Output: readable table, or JSON for scripts.
    #[arg(short, long, value_enum, default_value_t, global = true)]
    pub output: Format,
}

impl Conn {
    pub fn client(&self) -> anyhow::Result<ControllerClient> {
        let lab = match &self.lab {
            Some(l) => Some(
                duplex_lab::LabState::read(l)
                    .with_context(|| format!("reading lab `{l}`"))?
                    .with_context(|| {
                        format!("lab `{l}` is not up (run `duplex lab up --lab {l}`)")
                    })?,
            ),
            None if self.controller.is_none() => {
                duplex_lab::LabState::read(duplex_lab::DEFAULT_LAB)
                    .ok()
                    .flatten()
            }
            None => None,
        };
        let lab_ctl = lab.as_ref().and_then(|s| s.controller.clone());
        let url = self
            .controller
            .clone()
            .or_else(|| lab_ctl.as_ref().map(|c| c.url.clone()))
            .unwrap_or_else(|| {
                format!(
                    "http://127.0.0.1:{}",
                    duplex_controller::config::DEFAULT_PORT
                )
            });
        let token = self
            .token_file
            .clone()
            .or_else(|| lab_ctl.as_ref().map(|c| c.token_file.clone()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR).join(duplex_controller::TOKEN_FILE));
        let client = ControllerClient::with_token_file(&url, &token)?;
        // A lab's standby controllers, for when its first one is gone.
        let standbys: Vec<String> = match (&self.controller, &lab) {
            (None, Some(s)) => s
                .standby_controllers
                .iter()
                .map(|c| c.url.clone())
                .collect(),
            _ => Vec::new(),
        };
        Ok(client.with_standbys(&standbys))
    }
}
