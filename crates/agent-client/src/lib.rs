//! The typed client of an agent's `/v1` API. [`AgentApi`] is what the
//! controller orders agents through: [`AgentClient`] speaks it over HTTP,
//! and the controller's simulation speaks it to simulated hosts. Every
//! call has a time limit chosen for its operation ([`limits`]), so an
//! agent that vanishes mid-request cannot stall a workflow.

mod http;
pub mod limits;
mod replication;
mod site;

pub use http::{error_chain, AgentClient, ClientError};

use duplex_core::agent_api::{
    HandoverOrder, HandoverStatus, MigrateRequest, MigrationInfo, MigrationPhase, ProtectRequest,
    ProtectionInfo, ReplicaInfo, VmInfo, WaitFor,
};
use duplex_core::guest_proto::Op;
use duplex_core::site::{HandoffInfo, SiteBufferStatus, SiteSide};
use duplex_core::vm_spec::VmSpec;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// The orders a controller gives an agent. Every implementation carries
/// the fencing token it was made with and sends it with each order.
#[async_trait::async_trait]
pub trait AgentApi: Send + Sync {
    /// The agent's base URL (for messages).
    fn base(&self) -> &str;
    /// Passes the agent's fence with our token; returns its highest token.
    async fn raise_fence(&self) -> Result<u64, ClientError>;
    /// Whether the agent answers at all within `within` (it reads its
    /// fence from memory): the controller's own check of a host whose VM a
    /// peer stopped hearing.
    async fn probe(&self, within: Duration) -> Result<(), ClientError>;
    async fn create(&self, spec: &VmSpec, wait: WaitFor) -> Result<VmInfo, ClientError>;
    async fn show(&self, vm: &str) -> Result<VmInfo, ClientError>;
    async fn delete(&self, vm: &str) -> Result<(), ClientError>;
    /// The fence of one VM whose host still answers: its element drops
    /// every frame and it is paused, until it is deleted.
    async fn isolate(&self, vm: &str) -> Result<VmInfo, ClientError>;
    /// Hard reset of the VM, on order (its agent reports no failure for it).
    async fn reset(&self, vm: &str) -> Result<VmInfo, ClientError>;
    /// Starts QEMU again for a VM whose QEMU died, on the same disk.
    async fn restart(&self, vm: &str) -> Result<VmInfo, ClientError>;
    /// An order to the VM's guest, relayed by the agent; the guest's answer.
    async fn guest(&self, vm: &str, op: &Op) -> Result<serde_json::Value, ClientError>;
    /// An order to the VM's network element about a service address.
    async fn handover(
        &self,
        vm: &str,
        order: &HandoverOrder,
    ) -> Result<HandoverStatus, ClientError>;
    async fn start_migration(
        &self,
        vm: &str,
        req: &MigrateRequest,
    ) -> Result<MigrationInfo, ClientError>;
    async fn migration(&self, vm: &str) -> Result<MigrationInfo, ClientError>;
    /// S2: a new, empty replica of `spec` on this (the backup's) agent.
    async fn create_replica(&self, spec: &VmSpec) -> Result<ReplicaInfo, ClientError>;
    async fn delete_replica(&self, vm: &str) -> Result<(), ClientError>;
    /// S2: epochs of `vm` towards the replica at `req.backup`.
    async fn protect(&self, vm: &str, req: &ProtectRequest) -> Result<ProtectionInfo, ClientError>;
    /// S2: run `vm` from its replica here.
    async fn activate(&self, vm: &str) -> Result<VmInfo, ClientError>;
    /// S2: the ruleset the host's transmit buffers classify with.
    async fn set_rules(
        &self,
        set: &duplex_core::classify::Ruleset,
    ) -> Result<duplex_core::classify::Ruleset, ClientError>;
    /// S5: the active side hands `vm` off (last checkpoint, VM paused).
    async fn handoff(&self, vm: &str) -> Result<HandoffInfo, ClientError>;
    /// S5: the VM runs on where it was (a handoff undone).
    async fn site_resume(&self, vm: &str) -> Result<SiteBufferStatus, ClientError>;
    /// S5: the old active side becomes the replica, still buffering.
    async fn standby(&self, vm: &str) -> Result<ReplicaInfo, ClientError>;
    /// S5: the replica here buffers what its site sends the VM (at its
    /// own address and at `addresses`).
    async fn replica_buffer(
        &self,
        vm: &str,
        addresses: &[Ipv4Addr],
    ) -> Result<SiteBufferStatus, ClientError>;
    /// S5: this host's side of `vm`.
    async fn site_side(&self, vm: &str) -> Result<SiteSide, ClientError>;
}

/// Makes the client for one agent, carrying a fencing token.
pub trait Connector: Send + Sync {
    fn connect(&self, url: &str, fence: u64) -> Arc<dyn AgentApi>;
}

/// [`Connector`] over HTTPS, presenting the controller's certificate.
#[derive(Debug, Clone)]
pub struct HttpConnector {
    clients: Arc<duplex_tls::client::Clients>,
}

impl HttpConnector {
    pub fn new(clients: Arc<duplex_tls::client::Clients>) -> HttpConnector {
        HttpConnector { clients }
    }
}

impl Connector for HttpConnector {
    fn connect(&self, url: &str, fence: u64) -> Arc<dyn AgentApi> {
        Arc::new(AgentClient::new(url, self.clients.get()).with_fence(fence))
    }
}

/// How often a running migration is polled.
const MIGRATION_POLL: Duration = Duration::from_millis(100);

/// Starts a migration and follows it to the end (or `timeout`), calling
/// `progress` on every poll.
pub async fn migrate(
    agent: &dyn AgentApi,
    vm: &str,
    req: &MigrateRequest,
    timeout: Duration,
    mut progress: impl FnMut(&MigrationInfo) + Send,
) -> Result<MigrationInfo, ClientError> {
    agent.start_migration(vm, req).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let info = agent.migration(vm).await?;
        progress(&info);
        match info.phase {
            MigrationPhase::Completed => return Ok(info),
            MigrationPhase::Failed => {
                return Err(ClientError::MigrationFailed {
                    vm: vm.into(),
                    msg: info.error.unwrap_or_default(),
                })
            }
            _ if tokio::time::Instant::now() > deadline => {
                return Err(ClientError::MigrationTimeout {
                    vm: vm.into(),
                    secs: timeout.as_secs(),
                })
            }
            _ => tokio::time::sleep(MIGRATION_POLL).await,
        }
    }
}
