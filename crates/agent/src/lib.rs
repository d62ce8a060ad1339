//! The host agent: one per host. Runs VMs under QEMU, owns their taps and
//! network elements, relays the guest control channel, and carries out live
//! migrations with its peer agents. HTTP/JSON API under `/v1`.

pub mod api;
pub mod api_replication;
pub mod api_site;
/// The agent API's client lives in its own crate; kept here under its old path.
pub use duplex_agent_client as client;
pub mod config;
pub mod console_watch;
pub mod control;
pub mod error;
pub mod fence;
pub mod host;
pub mod migrate;
pub mod protect;
pub mod protect_capture;
pub mod qemu_user;
pub mod replica;
pub mod report;
pub mod self_fence;
pub mod serial;
pub mod site;
pub mod stream_addr;
pub mod stream_tls;
pub mod switch_link;
pub mod usage;
pub mod vm;
pub mod vm_disk;

pub use config::AgentConfig;
pub use error::AgentError;

/// Runs the agent until SIGINT/SIGTERM; then stops every VM it started.
/// With a controller configured, reports to it meanwhile.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    // Check the controller settings before anything slow (KVM probe).
    let reporter = report::Reporter::from_config(&cfg)?;
    let host = host::Host::start(cfg).await?;
    tokio::spawn(self_fence::watch(host.clone()));
    api::serve(host, reporter).await
}
