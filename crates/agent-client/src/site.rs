//! S5 orders to agents: a VM replicated into another site is handed off,
//! resumed where it was, put on standby; its replica buffers its site's
//! traffic.

use crate::{limits, AgentClient, ClientError};
use duplex_core::agent_api::ReplicaInfo;
use duplex_core::site::{BufferRequest, HandoffInfo, SiteBufferStatus, SiteSide};

impl AgentClient {
    /// The active side: buffer, one last checkpoint, VM left paused.
    pub async fn handoff(&self, vm: &str) -> Result<HandoffInfo, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/site/handoff"));
        self.call(self.http.post(&u).timeout(limits::CONTROL), u)
            .await
    }

    /// Undoes a handoff: the VM runs on where it was.
    pub async fn site_resume(&self, vm: &str) -> Result<SiteBufferStatus, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/site/resume"));
        self.call(self.http.post(&u).timeout(limits::CONTROL), u)
            .await
    }

    /// The old active side: QEMU stops, its element buffers for a new
    /// replica.
    pub async fn standby(&self, vm: &str) -> Result<ReplicaInfo, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/site/standby"));
        self.call(self.http.post(&u).timeout(limits::CONTROL), u)
            .await
    }

    /// The replica here buffers what its site sends to the VM.
    pub async fn replica_buffer(
        &self,
        vm: &str,
        addresses: &[std::net::Ipv4Addr],
    ) -> Result<SiteBufferStatus, ClientError> {
        let u = self.url(&format!("/v1/replicas/{vm}/buffer"));
        let body = BufferRequest {
            addresses: addresses.to_vec(),
        };
        self.call(self.http.post(&u).json(&body).timeout(limits::CONTROL), u)
            .await
    }

    /// This host's side of `vm`: running here, or its replica.
    pub async fn site_side(&self, vm: &str) -> Result<SiteSide, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/site"));
        self.call(self.http.get(&u).timeout(limits::READ), u).await
    }
}
