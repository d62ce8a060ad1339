//! ACT/SBY pairs driven through the agents: set a pair up, and carry out a
//! graceful switchover by following the pure plan in `duplex_core::switchover`.
//! The controller's pair workflows use it; so do the lab benchmarks.

use duplex_agent_client::{AgentApi, ClientError};
use duplex_core::agent_api::{HandoverOrder, WaitFor};
use duplex_core::agent_api::{GUEST_NOT_CONNECTED, GUEST_UNCHANGED};
use duplex_core::guest_proto::{Op, TargetRole};
use duplex_core::mac::Mac;
use duplex_core::replica_key::ReplicaKey;
use duplex_core::switchover::{Member, Order, Outcome, Phase, START};
use duplex_core::vm_spec::VmSpec;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio::time::Instant;

/// One VM of a pair: which agent runs it, and its name.
#[derive(Clone)]
pub struct PairMember {
    pub agent: Arc<dyn AgentApi>,
    pub vm: String,
    /// Its own (non-service) address: the peer replicates to it.
    pub ip: Ipv4Addr,
    /// Its MAC: frames for the service address are forwarded to it.
    pub mac: Mac,
}

/// What a pair's guests are configured with: the service address and
/// prefix, and the witness each guest pings to tell whether it can reach
/// the service network (`None`: no witness).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    pub vip: Ipv4Addr,
    pub prefix: u8,
    pub witness: Option<Ipv4Addr>,
    /// The members' replication key.
    pub key: Option<ReplicaKey>,
}

impl Service {
    pub fn of(pair: &duplex_core::model::Pair, witness: Option<Ipv4Addr>) -> Service {
        Service {
            vip: pair.vip,
            prefix: pair.prefix_len,
            witness,
            key: pair.replica_key,
        }
    }
}

/// Boots the two members in parallel (`act` on `act_agent`, `sby` on
/// `sby_agent`, each with its own address), then [`set_up`] the pair.
pub async fn boot(
    (act_agent, act): (Arc<dyn AgentApi>, (&str, Ipv4Addr)),
    (sby_agent, sby): (Arc<dyn AgentApi>, (&str, Ipv4Addr)),
    service: Service,
    token: u64,
) -> Result<(PairMember, PairMember), ClientError> {
    let (sa, sb) = (VmSpec::new(act.0, act.1), VmSpec::new(sby.0, sby.1));
    let (ra, rb) = tokio::join!(
        act_agent.create(&sa, WaitFor::Ready),
        sby_agent.create(&sb, WaitFor::Ready)
    );
    ra?;
    rb?;
    let a = PairMember {
        agent: act_agent,
        vm: act.0.into(),
        ip: act.1,
        mac: sa.mac(),
    };
    let b = PairMember {
        agent: sby_agent,
        vm: sby.0.into(),
        ip: sby.1,
        mac: sb.mac(),
    };
    set_up(&a, &b, service, token).await?;
    Ok((a, b))
}

/// Configures both members for the service address and gives them their
/// roles (ACT first claims the address after the SBY is ready).
pub async fn set_up(
    act: &PairMember,
    sby: &PairMember,
    service: Service,
    token: u64,
) -> Result<(), ClientError> {
    configure(sby, act, service).await?;
    configure(act, sby, service).await?;
    set_role(sby, TargetRole::Sby, token).await?;
    set_role(act, TargetRole::Act, token).await
}

/// Gives `m`'s guest the service address, its peer (`peer`'s address)
/// and the witness.
pub async fn configure(
    m: &PairMember,
    peer: &PairMember,
    service: Service,
) -> Result<(), ClientError> {
    let op = Op::Configure {
        vip: service.vip,
        vip_prefix_len: service.prefix,
        peer: Some(peer.ip),
        witness: service.witness,
        key: service.key,
    };
    guest(m, op).await
}

/// Orders `m`'s guest into `role` with fencing token `token`.
pub async fn set_role(m: &PairMember, role: TargetRole, token: u64) -> Result<(), ClientError> {
    guest(m, Op::SetRole { role, token }).await
}

/// Gives `m` its role with `token`; first its configuration (service
/// address `vip`/`prefix`, its peer) when `configure`: a guest that
/// restarted has none. The error names the member and the order.
pub async fn give_role(
    m: &PairMember,
    peer: &PairMember,
    service: Service,
    (role, token): (TargetRole, u64),
    configure_first: bool,
) -> Result<(), String> {
    if configure_first {
        configure(m, peer, service)
            .await
            .map_err(|e| format!("configure {}: {e}", m.vm))?;
    }
    set_role(m, role, token)
        .await
        .map_err(|e| format!("{role:?} on {}: {e}", m.vm))
}

/// Waits until the member's service passes its health hook (checked by the
/// middleware on the ACT every heartbeat); false if not within `within`.
pub async fn wait_healthy(m: &PairMember, within: std::time::Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(s) = m.agent.guest(&m.vm, &Op::Status).await {
            if s["service"]["healthy"] == serde_json::json!(true) {
                return true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    false
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub order: Order,
    pub ok: bool,
    pub ms: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwitchoverReport {
    pub outcome: Phase,
    pub steps: Vec<StepReport>,
    pub total_ms: f64,
}

impl SwitchoverReport {
    /// How it ended (`swapped`, `rolled_back`, `failed`), counted in
    /// `/metrics` with its time.
    pub fn observe(&self, metrics: &crate::metrics::Metrics) {
        let outcome = match self.outcome {
            Phase::Done { .. } => "swapped",
            Phase::RolledBack => "rolled_back",
            _ => "failed",
        };
        crate::metrics::observe(&metrics.switchovers, outcome, self.total_ms / 1e3);
    }

    /// Each step with its outcome and time, on one line.
    pub fn steps_line(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| {
                let error = s.error.as_ref().map(|e| format!(" ({e})"));
                let ok = if s.ok { "ok" } else { "FAILED" };
                format!(
                    "{:?} {ok} in {:.0} ms{}",
                    s.order,
                    s.ms,
                    error.unwrap_or_default()
                )
            })
            .collect();
        steps.join("; ")
    }
}

/// Switches `old` (ACT) and `new` (SBY) over with fencing token `token`;
/// the members' network elements hold and forward frames for `vip`.
pub async fn switchover(
    old: &PairMember,
    new: &PairMember,
    token: u64,
    vip: Ipv4Addr,
) -> SwitchoverReport {
    let t0 = Instant::now();
    let mut phase = START;
    let mut steps = Vec::new();
    while let Some(order) = phase.order() {
        let target = |m: Member| match m {
            Member::Old => old,
            Member::New => new,
        };
        let t = Instant::now();
        let res = match order {
            Order::Hold(m) => element(target(m), HandoverOrder::Hold { vip }).await,
            Order::Forward(m) => {
                let to = match m {
                    Member::Old => new.mac,
                    Member::New => old.mac,
                };
                element(target(m), HandoverOrder::Forward { vip, to }).await
            }
            Order::Release(m) => element(target(m), HandoverOrder::Release).await,
            Order::Prepare(m) => guest(target(m), Op::SwitchoverPrepare { token }).await,
            Order::Activate(m) => {
                let role = TargetRole::Act;
                guest(target(m), Op::SetRole { role, token }).await
            }
            Order::Commit(m) => guest(target(m), Op::SwitchoverCommit { token }).await,
            Order::Demote(m) => {
                let role = TargetRole::Sby;
                guest(target(m), Op::SetRole { role, token }).await
            }
        };
        let ok = res.is_ok();
        let outcome = match &res {
            Ok(()) => Outcome::Done,
            // Nothing reached the guest, or it changed nothing: no undo.
            Err(e) if matches!(e.code(), Some(GUEST_UNCHANGED | GUEST_NOT_CONNECTED)) => {
                Outcome::Refused
            }
            Err(_) => Outcome::Failed,
        };
        if let (Err(e), true) = (&res, order.is_element_order()) {
            tracing::warn!(vm = %target(order.member()).vm, ?order, error = %e,
                "network element order failed; the switchover goes on without it");
        }
        steps.push(StepReport {
            order,
            ok,
            ms: t.elapsed().as_secs_f64() * 1000.0,
            error: res.err().map(|e| e.to_string()),
        });
        phase = phase.after(outcome);
    }
    SwitchoverReport {
        outcome: phase,
        steps,
        total_ms: t0.elapsed().as_secs_f64() * 1000.0,
    }
}

async fn guest(m: &PairMember, op: Op) -> Result<(), ClientError> {
    m.agent.guest(&m.vm, &op).await.map(|_| ())
}

async fn element(m: &PairMember, order: HandoverOrder) -> Result<(), ClientError> {
    m.agent.handover(&m.vm, &order).await.map(|_| ())
}
