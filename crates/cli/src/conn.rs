//! How operator commands find the controller and who they are:
//! `--controller`/`--tls-dir` (or `DUPLEX_CONTROLLER`/`DUPLEX_TLS_DIR`),
//! or `--lab NAME` for the controller a lab started and its operator's
//! bundle, or the defaults of a local controller.

use crate::output::Format;
use anyhow::Context;
use clap::Args;
use duplex_controller::client::ControllerClient;
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/duplex/controller";
/// Where an operator's bundle is looked for by default.
pub const DEFAULT_OPERATOR_TLS: &str = "/var/lib/duplex/operator";

#[derive(Args, Clone)]
pub struct Conn {
    /// Controller base URL (default: the lab's, else https://127.0.0.1:7080).
    #[arg(long, env = "DUPLEX_CONTROLLER", global = true)]
    pub controller: Option<String>,
    /// Directory with your operator bundle, made by `duplex pki issue
    /// operator <name>` (default: the lab's, else /var/lib/duplex/operator).
    #[arg(long, value_name = "DIR", env = "DUPLEX_TLS_DIR", global = true)]
    pub tls_dir: Option<PathBuf>,
    /// Use the controller of this lab.
    #[arg(long, env = "DUPLEX_LAB", global = true)]
    pub lab: Option<String>,
    /// Output: readable table, or JSON for scripts.
    #[arg(short, long, value_enum, default_value_t, global = true)]
    pub output: Format,
}

impl Conn {
    /// The lab this command works on, if any: `--lab`, or the default
    /// lab when no `--controller` is given and it is up.
    fn lab(&self) -> anyhow::Result<Option<duplex_lab::LabState>> {
        Ok(match &self.lab {
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
        })
    }

    fn bundle(&self, lab: Option<&duplex_lab::LabState>) -> PathBuf {
        self.tls_dir
            .clone()
            .or_else(|| lab.map(|s| s.operator_tls()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_OPERATOR_TLS))
    }

    /// An HTTPS client presenting the operator's certificate.
    pub fn http(&self, shape: duplex_tls::client::Shape) -> anyhow::Result<reqwest::Client> {
        let dir = self.bundle(self.lab()?.as_ref());
        let clients = duplex_tls::client::Clients::new(duplex_tls::Bundle::new(&dir), shape)
            .with_context(|| {
                format!(
                    "your operator bundle in {} (pass --tls-dir, or make one with `duplex pki issue operator <name> --out {}`)",
                    dir.display(),
                    dir.display()
                )
            })?;
        Ok(clients.get())
    }

    pub fn client(&self) -> anyhow::Result<ControllerClient> {
        let lab = self.lab()?;
        let lab_ctl = lab.as_ref().and_then(|s| s.controller.clone());
        let url = self
            .controller
            .clone()
            .or_else(|| lab_ctl.as_ref().map(|c| c.url.clone()))
            .unwrap_or_else(|| {
                format!(
                    "https://127.0.0.1:{}",
                    duplex_controller::config::DEFAULT_PORT
                )
            });
        let dir = self.bundle(lab.as_ref());
        let client = ControllerClient::with_bundle(&url, &dir)?;
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
