//! The leader's office: the lease's fencing token, the workflows running
//! under it, and the agent clients that stop obeying the moment it is lost.
//!
//! A flow is registered before it claims anything ([`Office::reserve`]) and
//! leaves the register when its guard drops, however it ends; a pair whose
//! journaled operation is not in the register runs nowhere in this process,
//! which is how the recovery pass finds orphans. Losing the lease aborts
//! every registered flow, and every order an agent client made under the
//! lost lease is refused before it is sent.

use duplex_agent_client::{AgentApi, ClientError, Connector};
use duplex_core::agent_api::{
    HandoverOrder, HandoverStatus, MigrateRequest, MigrationInfo, VmInfo, WaitFor,
};
use duplex_core::guest_proto::Op;
use duplex_core::site::{HandoffInfo, SiteBufferStatus, SiteSide};
use duplex_core::vm_spec::VmSpec;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::task::AbortHandle;

#[derive(Default)]
pub struct Office {
    /// The lease's fencing token; 0 while not leading.
    token: AtomicU64,
    /// The lease's own signal: true once the store says it is lost, which
    /// may come before this office is left.
    lost: Mutex<Option<tokio::sync::watch::Receiver<bool>>>,
    /// Operation id -> the task running it (`None`: reserved, not spawned yet).
    flows: Mutex<BTreeMap<String, Option<AbortHandle>>>,
}

/// An operation's place in the register; dropping it frees the place.
pub struct FlowGuard {
    office: Arc<Office>,
    pub op: String,
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.office.lock_flows().remove(&self.op);
    }
}

impl Office {
    fn lock_flows(&self) -> MutexGuard<'_, BTreeMap<String, Option<AbortHandle>>> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn token(&self) -> u64 {
        self.token.load(Ordering::SeqCst)
    }
    pub fn leading(&self) -> bool {
        self.token() != 0 && !self.lease_lost()
    }

    fn lease_lost(&self) -> bool {
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.as_ref().is_some_and(|l| *l.borrow())
    }

    /// Takes office with the lease's `token`; `lost` turns true when the
    /// store says the lease is lost.
    pub fn take(&self, token: u64, lost: tokio::sync::watch::Receiver<bool>) {
        *self.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(lost);
        self.token.store(token, Ordering::SeqCst);
    }

    /// Leaves office: no order is sent under the old token from now on,
    /// and every running flow is aborted where it waits.
    pub fn leave(&self) -> usize {
        self.token.store(0, Ordering::SeqCst);
        let flows = std::mem::take(&mut *self.lock_flows());
        for h in flows.values().flatten() {
            h.abort();
        }
        flows.len()
    }

    /// Registers operation `op` before its flow claims anything.
    pub fn reserve(self: &Arc<Self>, op: &str) -> FlowGuard {
        self.lock_flows().insert(op.to_string(), None);
        FlowGuard {
            office: self.clone(),
            op: op.to_string(),
        }
    }

    /// Stops operation `op`'s flow where it waits; whether it ran here.
    pub fn abort(&self, op: &str) -> bool {
        match self.lock_flows().remove(op) {
            Some(h) => {
                if let Some(h) = h {
                    h.abort();
                }
                true
            }
            None => false,
        }
    }

    /// Whether operation `op` runs (or is about to) in this process.
    pub fn runs(&self, op: &str) -> bool {
        self.lock_flows().contains_key(op)
    }

    /// Runs `flow` as the task of the reserved operation; it is aborted if
    /// office is lost, and its place is freed when it ends either way.
    pub fn spawn<F>(self: &Arc<Self>, guard: FlowGuard, flow: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let op = guard.op.clone();
        let task = tokio::spawn(async move {
            flow.await;
            drop(guard);
        });
        let mut flows = self.lock_flows();
        match flows.get_mut(&op) {
            Some(slot) => *slot = Some(task.abort_handle()),
            // Office was left meanwhile.
            None => task.abort(),
        }
    }

    /// A client of the agent at `url` whose orders carry our token and are
    /// refused, unsent, once that token is no longer ours.
    pub fn agent(self: &Arc<Self>, connector: &dyn Connector, url: &str) -> Arc<dyn AgentApi> {
        let token = self.token();
        Arc::new(Guarded {
            inner: connector.connect(url, token),
            office: self.clone(),
            token,
        })
    }
}

/// An agent client bound to one term of office.
struct Guarded {
    inner: Arc<dyn AgentApi>,
    office: Arc<Office>,
    token: u64,
}

impl Guarded {
    fn check(&self) -> Result<&dyn AgentApi, ClientError> {
        if self.office.leading() && self.office.token() == self.token {
            return Ok(&*self.inner);
        }
        Err(ClientError::StaleFence {
            url: self.inner.base().to_string(),
            message: format!(
                "not sent: this controller no longer leads with fencing token {}",
                self.token
            ),
        })
    }
}

#[async_trait::async_trait]
impl AgentApi for Guarded {
    fn base(&self) -> &str {
        self.inner.base()
    }
    async fn raise_fence(&self) -> Result<u64, ClientError> {
        self.check()?.raise_fence().await
    }
    async fn probe(&self, within: std::time::Duration) -> Result<(), ClientError> {
        self.check()?.probe(within).await
    }
    async fn create(&self, spec: &VmSpec, wait: WaitFor) -> Result<VmInfo, ClientError> {
        self.check()?.create(spec, wait).await
    }
    async fn show(&self, vm: &str) -> Result<VmInfo, ClientError> {
        self.check()?.show(vm).await
    }
    async fn delete(&self, vm: &str) -> Result<(), ClientError> {
        self.check()?.delete(vm).await
    }
    async fn isolate(&self, vm: &str) -> Result<VmInfo, ClientError> {
        self.check()?.isolate(vm).await
    }
    async fn reset(&self, vm: &str) -> Result<VmInfo, ClientError> {
        self.check()?.reset(vm).await
    }
    async fn restart(&self, vm: &str) -> Result<VmInfo, ClientError> {
        self.check()?.restart(vm).await
    }
    async fn guest(&self, vm: &str, op: &Op) -> Result<serde_json::Value, ClientError> {
        self.check()?.guest(vm, op).await
    }
    async fn handover(
        &self,
        vm: &str,
        order: &HandoverOrder,
    ) -> Result<HandoverStatus, ClientError> {
        self.check()?.handover(vm, order).await
    }
    async fn start_migration(
        &self,
        vm: &str,
        req: &MigrateRequest,
    ) -> Result<MigrationInfo, ClientError> {
        self.check()?.start_migration(vm, req).await
    }
    async fn migration(&self, vm: &str) -> Result<MigrationInfo, ClientError> {
        self.check()?.migration(vm).await
    }
    async fn create_replica(
        &self,
        spec: &VmSpec,
    ) -> Result<duplex_core::agent_api::ReplicaInfo, ClientError> {
        self.check()?.create_replica(spec).await
    }
    async fn delete_replica(&self, vm: &str) -> Result<(), ClientError> {
        self.check()?.delete_replica(vm).await
    }
    async fn protect(
        &self,
        vm: &str,
        req: &duplex_core::agent_api::ProtectRequest,
    ) -> Result<duplex_core::agent_api::ProtectionInfo, ClientError> {
        self.check()?.protect(vm, req).await
    }
    async fn activate(&self, vm: &str) -> Result<VmInfo, ClientError> {
        self.check()?.activate(vm).await
    }
    async fn set_rules(
        &self,
        set: &duplex_core::classify::Ruleset,
    ) -> Result<duplex_core::classify::Ruleset, ClientError> {
        self.check()?.set_rules(set).await
    }
    async fn handoff(&self, vm: &str) -> Result<HandoffInfo, ClientError> {
        self.check()?.handoff(vm).await
    }
    async fn site_resume(&self, vm: &str) -> Result<SiteBufferStatus, ClientError> {
        self.check()?.site_resume(vm).await
    }
    async fn standby(&self, vm: &str) -> Result<duplex_core::agent_api::ReplicaInfo, ClientError> {
        self.check()?.standby(vm).await
    }
    async fn replica_buffer(
        &self,
        vm: &str,
        addresses: &[std::net::Ipv4Addr],
    ) -> Result<SiteBufferStatus, ClientError> {
        self.check()?.replica_buffer(vm, addresses).await
    }
    async fn site_side(&self, vm: &str) -> Result<SiteSide, ClientError> {
        self.check()?.site_side(vm).await
    }
}
