//! [`AgentClient`]: the agent's `/v1` API over HTTP, for the controller,
//! the CLI, the lab, tests and benchmarks. Errors carry the agent's own
//! message.

use crate::limits;
use duplex_core::agent_api::{
    ErrorBody, FenceState, HandoverOrder, HandoverStatus, HostInfo, MigrateRequest, MigrationInfo,
    TrafficReport, VmInfo, VmSummary, WaitFor, FENCE_HEADER, STALE_FENCE,
};
use duplex_core::guest_proto::Op;
use duplex_core::site::{HandoffInfo, SiteBufferStatus, SiteSide};
use duplex_core::vm_spec::VmSpec;
use serde::de::DeserializeOwned;
use std::net::Ipv4Addr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("agent at {url} is unreachable: {msg}")]
    Unreachable { url: String, msg: String },
    #[error("agent at {url} answered {status}: {message}")]
    Api {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The agent obeyed a newer controller than the one whose fencing
    /// token this client carries (`409 stale_fence`): the order was not
    /// executed.
    #[error("agent at {url} refused a stale order: {message}")]
    StaleFence { url: String, message: String },
    #[error("unexpected answer from {url}: {msg}")]
    Decode { url: String, msg: String },
    #[error("migration of `{vm}` failed: {msg}")]
    MigrationFailed { vm: String, msg: String },
    #[error("migration of `{vm}` did not finish within {secs} s")]
    MigrationTimeout { vm: String, secs: u64 },
}

impl ClientError {
    /// The agent's error code, for an error answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// An error with its causes, `a: b: c` (reqwest hides the cause otherwise).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[derive(Clone)]
pub struct AgentClient {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    /// Fencing token sent with every request (`duplex-fence`).
    fence: Option<u64>,
}

impl AgentClient {
    /// A client of the agent at `base` (`https://...`) over `http`, a
    /// client presenting the caller's certificate
    /// ([`duplex_tls::client::Clients`] shaped by [`limits::shape`]).
    pub fn new(base: &str, http: reqwest::Client) -> Self {
        AgentClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            fence: None,
        }
    }

    /// Sends `token` as the fencing token (header `duplex-fence`) with every
    /// request: a controller's orders. The agent refuses them with
    /// [`ClientError::StaleFence`] once it has obeyed a higher token.
    pub fn with_fence(mut self, token: u64) -> Self {
        self.fence = Some(token);
        self
    }

    /// The fencing token this client sends, if any.
    pub fn fence(&self) -> Option<u64> {
        self.fence
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: String,
    ) -> Result<T, ClientError> {
        let req = match self.fence {
            Some(token) => req.header(FENCE_HEADER, token.to_string()),
            None => req,
        };
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            msg: error_chain(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ClientError::Decode {
            url: url.clone(),
            msg: e.to_string(),
        })?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
                Ok(b) => (b.error.code, b.error.message),
                Err(_) => ("unknown".into(), text),
            };
            if status == reqwest::StatusCode::CONFLICT && code == STALE_FENCE {
                return Err(ClientError::StaleFence { url, message });
            }
            return Err(ClientError::Api {
                url,
                status: status.as_u16(),
                code,
                message,
            });
        }
        let text = if text.is_empty() {
            "null".to_string()
        } else {
            text
        };
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            url,
            msg: e.to_string(),
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn host(&self) -> Result<HostInfo, ClientError> {
        let u = self.url("/v1/host");
        self.call(self.http.get(&u).timeout(limits::QUICK), u).await
    }

    /// An order that does nothing but pass the agent's fence: with
    /// [`with_fence`](Self::with_fence), the agent persists the token (if
    /// higher) and refuses every older controller from then on. Returns the
    /// agent's highest token afterwards (`POST /v1/fence`).
    pub async fn raise_fence(&self) -> Result<u64, ClientError> {
        let u = self.url("/v1/fence");
        self.call::<FenceState>(self.http.post(&u).timeout(limits::QUICK), u)
            .await
            .map(|s| s.fence)
    }

    /// `GET /v1/fence` within `within`: does the agent answer?
    pub async fn probe(&self, within: std::time::Duration) -> Result<(), ClientError> {
        let u = self.url("/v1/fence");
        let req = self.http.get(&u).timeout(within);
        self.call::<FenceState>(req, u).await.map(|_| ())
    }

    pub async fn list(&self) -> Result<Vec<VmSummary>, ClientError> {
        let u = self.url("/v1/vms");
        self.call(self.http.get(&u).timeout(limits::READ), u).await
    }

    pub async fn create(&self, spec: &VmSpec, wait: WaitFor) -> Result<VmInfo, ClientError> {
        let w = serde_json::to_value(wait)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let u = self.url(&format!("/v1/vms?wait={w}"));
        self.call(
            self.http.post(&u).json(spec).timeout(limits::create(wait)),
            u,
        )
        .await
    }

    pub async fn show(&self, vm: &str) -> Result<VmInfo, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}"));
        self.call(self.http.get(&u).timeout(limits::READ), u).await
    }

    pub async fn delete(&self, vm: &str) -> Result<(), ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}"));
        self.call::<serde_json::Value>(self.http.delete(&u).timeout(limits::DELETE), u)
            .await
            .map(|_| ())
    }

    pub async fn pause(&self, vm: &str) -> Result<VmInfo, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/pause"));
        self.call(self.http.post(&u).timeout(limits::CONTROL), u)
            .await
    }

    pub async fn resume(&self, vm: &str) -> Result<VmInfo, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/resume"));
        self.call(self.http.post(&u).timeout(limits::CONTROL), u)
            .await
    }

    /// Isolates the VM: cut off the network and paused until deleted.
    pub async fn isolate(&self, vm: &str) -> Result<VmInfo, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/isolate"));
        self.call(self.http.post(&u).timeout(limits::CONTROL), u)
            .await
    }

    /// Starts QEMU again for a VM whose QEMU died, keeping its disk.
    pub async fn restart(&self, vm: &str) -> Result<VmInfo, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/restart"));
        self.call(self.http.post(&u).timeout(limits::CONTROL), u)
            .await
    }

    /// Hard reset, as a guest crash would be.
    pub async fn reset(&self, vm: &str) -> Result<VmInfo, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/reset"));
        self.call(self.http.post(&u).timeout(limits::CONTROL), u)
            .await
    }

    pub async fn traffic(&self, vm: &str) -> Result<TrafficReport, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/traffic"));
        self.call(self.http.get(&u).timeout(limits::READ), u).await
    }

    /// An order to the VM's network element about a service address.
    pub async fn handover(
        &self,
        vm: &str,
        order: &HandoverOrder,
    ) -> Result<HandoverStatus, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/handover"));
        self.call(self.http.post(&u).json(order).timeout(limits::ELEMENT), u)
            .await
    }

    pub async fn handover_status(&self, vm: &str) -> Result<HandoverStatus, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/handover"));
        self.call(self.http.get(&u).timeout(limits::READ), u).await
    }

    pub async fn guest(&self, vm: &str, op: &Op) -> Result<serde_json::Value, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/guest"));
        self.call(self.http.post(&u).json(op).timeout(limits::GUEST), u)
            .await
    }

    pub async fn start_migration(
        &self,
        vm: &str,
        req: &MigrateRequest,
    ) -> Result<MigrationInfo, ClientError> {
        let u = self.url(&format!("/v1/vms/{vm}/migrate"));
        self.call(
            self.http
                .post(&u)
                .json(req)
                .timeout(limits::START_MIGRATION),
            u,
        )
        .await
    }

    pub async fn migration(&self, vm: &str) -> Result<MigrationInfo, ClientError> {
        let u = self.url(&format!("/v1/migrations/{vm}"));
        self.call(self.http.get(&u).timeout(limits::READ), u).await
    }

    /// Starts a migration and follows it to the end, calling `progress` on
    /// every poll (see [`crate::migrate`]).
    pub async fn migrate(
        &self,
        vm: &str,
        req: &MigrateRequest,
        timeout: Duration,
        progress: impl FnMut(&MigrationInfo) + Send,
    ) -> Result<MigrationInfo, ClientError> {
        crate::migrate(self, vm, req, timeout, progress).await
    }
}

#[async_trait::async_trait]
impl crate::AgentApi for AgentClient {
    fn base(&self) -> &str {
        &self.base
    }
    async fn raise_fence(&self) -> Result<u64, ClientError> {
        AgentClient::raise_fence(self).await
    }
    async fn probe(&self, within: std::time::Duration) -> Result<(), ClientError> {
        AgentClient::probe(self, within).await
    }
    async fn create(&self, spec: &VmSpec, wait: WaitFor) -> Result<VmInfo, ClientError> {
        AgentClient::create(self, spec, wait).await
    }
    async fn show(&self, vm: &str) -> Result<VmInfo, ClientError> {
        AgentClient::show(self, vm).await
    }
    async fn delete(&self, vm: &str) -> Result<(), ClientError> {
        AgentClient::delete(self, vm).await
    }
    async fn isolate(&self, vm: &str) -> Result<VmInfo, ClientError> {
        AgentClient::isolate(self, vm).await
    }
    async fn reset(&self, vm: &str) -> Result<VmInfo, ClientError> {
        AgentClient::reset(self, vm).await
    }
    async fn restart(&self, vm: &str) -> Result<VmInfo, ClientError> {
        AgentClient::restart(self, vm).await
    }
    async fn guest(&self, vm: &str, op: &Op) -> Result<serde_json::Value, ClientError> {
        AgentClient::guest(self, vm, op).await
    }
    async fn handover(
        &self,
        vm: &str,
        order: &HandoverOrder,
    ) -> Result<HandoverStatus, ClientError> {
        AgentClient::handover(self, vm, order).await
    }
    async fn start_migration(
        &self,
        vm: &str,
        req: &MigrateRequest,
    ) -> Result<MigrationInfo, ClientError> {
        AgentClient::start_migration(self, vm, req).await
    }
    async fn migration(&self, vm: &str) -> Result<MigrationInfo, ClientError> {
        AgentClient::migration(self, vm).await
    }
    async fn create_replica(
        &self,
        spec: &VmSpec,
    ) -> Result<duplex_core::agent_api::ReplicaInfo, ClientError> {
        AgentClient::create_replica(self, spec).await
    }
    async fn delete_replica(&self, vm: &str) -> Result<(), ClientError> {
        AgentClient::delete_replica(self, vm).await
    }
    async fn protect(
        &self,
        vm: &str,
        req: &duplex_core::agent_api::ProtectRequest,
    ) -> Result<duplex_core::agent_api::ProtectionInfo, ClientError> {
        AgentClient::protect(self, vm, req).await
    }
    async fn activate(&self, vm: &str) -> Result<VmInfo, ClientError> {
        AgentClient::activate(self, vm).await
    }
    async fn set_rules(
        &self,
        set: &duplex_core::classify::Ruleset,
    ) -> Result<duplex_core::classify::Ruleset, ClientError> {
        AgentClient::set_rules(self, set).await
    }
    async fn handoff(&self, vm: &str) -> Result<HandoffInfo, ClientError> {
        AgentClient::handoff(self, vm).await
    }
    async fn site_resume(&self, vm: &str) -> Result<SiteBufferStatus, ClientError> {
        AgentClient::site_resume(self, vm).await
    }
    async fn standby(&self, vm: &str) -> Result<duplex_core::agent_api::ReplicaInfo, ClientError> {
        AgentClient::standby(self, vm).await
    }
    async fn replica_buffer(
        &self,
        vm: &str,
        addresses: &[Ipv4Addr],
    ) -> Result<SiteBufferStatus, ClientError> {
        AgentClient::replica_buffer(self, vm, addresses).await
    }
    async fn site_side(&self, vm: &str) -> Result<SiteSide, ClientError> {
        AgentClient::site_side(self, vm).await
    }
}
