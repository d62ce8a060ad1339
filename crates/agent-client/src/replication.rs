//! S2 orders to agents: make a replica, start epochs towards it, activate
//! it when the primary's host is lost, drop it.

use crate::{limits, AgentClient, ClientError};
use duplex_core::agent_api::{ProtectRequest, ProtectionInfo, ReplicaInfo, ReplicaRequest, VmInfo};
use duplex_core::vm_spec::VmSpec;

impl AgentClient {
    /// A new, empty replica of `spec` on this (the backup's) agent.
    pub async fn create_replica(&self, spec: &VmSpec) -> Result<ReplicaInfo, ClientError> {
        let u = self.url("/v1/replicas");
        let req = ReplicaRequest { spec: spec.clone() };
        self.call(self.http.post(&u).json(&req).timeout(limits::CONTROL), u)
            .await
    }

    pub async fn delete_replica(&self, vm: &str) -> Result<(), ClientError> {
        let u = self.url(&format!("/v1/replicas/{vm}"));
        self.call::<serde_json::Value>(self.http.delete(&u).timeout(limits::DELETE), u)
            .await
            .map(|_| ())
    }

    /// Starts epochs of `vm` (on this, the primary's agent) towards the
    /// replica on the agent at `req.backup`.
    pub async fn protect(
        &self,
        vm: &str,
        req: &ProtectRequest,
    ) -> Result<ProtectionInfo, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/protect"));
        self.call(self.http.post(&u).json(req).timeout(limits::CONTROL), u)
            .await
    }

    /// The ruleset this host classifies with (a newer version replaces
    /// it; the answer is the one in force).
    pub async fn set_rules(
        &self,
        set: &duplex_core::classify::Ruleset,
    ) -> Result<duplex_core::classify::Ruleset, ClientError> {
        let u = self.url("/v1/rules");
        self.call(self.http.put(&u).json(set).timeout(limits::CONTROL), u)
            .await
    }

    /// A replicated VM's epochs: phase, committed epoch, recent timings.
    pub async fn protection(&self, vm: &str) -> Result<ProtectionInfo, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/protect"));
        self.call(self.http.get(&u).timeout(limits::READ), u).await
    }

    /// The transmit buffer's counters of a replicated VM.
    pub async fn classes(
        &self,
        vm: &str,
    ) -> Result<duplex_core::agent_api::ClassReport, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/classes"));
        self.call(self.http.get(&u).timeout(limits::READ), u).await
    }

    /// Runs `vm` from its replica here (its primary's host is fenced).
    pub async fn activate(&self, vm: &str) -> Result<VmInfo, ClientError> {
        let u = self.url(&format!("/v1/replicas/{vm}/activate"));
        self.call(self.http.post(&u).timeout(limits::START_MIGRATION), u)
            .await
    }
}
