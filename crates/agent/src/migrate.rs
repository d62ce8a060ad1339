//! Live migration between agents. The source asks the destination to
//! prepare an incoming QEMU (same spec, own tap and network element), drives
//! QEMU's migration with progress, then has the destination confirm the VM
//! runs there before it stops its own copy. Any failure before QEMU
//! completes leaves the VM running on the source, and says so.
//!
//! The order's fencing token is checked again while QEMU migrates: once a
//! newer controller leads (this agent's fence passed the token), the
//! migration is cancelled and the VM keeps running here. Once QEMU has
//! handed the VM over, the destination is told to complete whoever leads
//! (no token): that ends a move that already happened, it orders nothing
//! new, and refusing it would leave the VM running nowhere.

use crate::host::{connect_guest, watch_exit, Host, READY_TIMEOUT};
use crate::vm::Vm;
use crate::AgentError;
use duplex_core::agent_api::{
    ErrorBody, IncomingReady, IncomingRequest, MigrateRequest, MigrationInfo, MigrationPhase,
    MigrationProgress, MigrationStats, VmInfo, VmState, FENCE_HEADER,
};
use duplex_core::guest_proto::Op;
use duplex_net::stage::Direction;
use duplex_qemu::migration;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a running migration re-checks that its order's controller
/// still leads.
const FENCE_RECHECK: Duration = Duration::from_millis(200);
/// How long a destination waits for the source's stream before giving up.
const INCOMING_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a destination waits, once the VM runs, for its guest to answer
/// before it reports the move complete anyway.
const ARRIVAL_WAIT: Duration = Duration::from_secs(10);

fn set_migration(host: &Host, vm: &Vm, info: &MigrationInfo) {
    vm.update(|s| s.migration = Some(info.clone()));
    if let Ok(mut m) = host.migrations.lock() {
        m.insert(vm.spec.name.clone(), info.clone());
    }
}

/// Validates and starts an outgoing migration; it runs in the background and
/// is followed with `GET /v1/migrations/{name}`.
///
/// `fence` is the fencing token the order carried, if any; every call to
/// the destination agent carries it too, so the destination refuses a
/// migration ordered by a stale controller.
pub async fn start_outgoing(
    host: Arc<Host>,
    name: &str,
    req: MigrateRequest,
    fence: Option<u64>,
) -> Result<MigrationInfo, AgentError> {
    let vm = host.get(name)?;
    let to = req.to.trim_end_matches('/').to_string();
    crate::stream_addr::agent_ip(&to)
        .map_err(|e| AgentError::BadRequest(format!("field `to`: {e}")))?;
    if to == format!("https://{}", host.cfg.listen) {
        return Err(AgentError::BadRequest(format!(
            "field `to`: {to} is this host; pick another one"
        )));
    }
    req.tuning.validate().map_err(AgentError::BadRequest)?;
    let before = vm.status().state;
    if !matches!(before, VmState::Running | VmState::Paused) {
        return Err(AgentError::Conflict(format!(
            "VM `{name}` is {before:?}; only a running or paused VM can migrate"
        )));
    }
    let info = MigrationInfo {
        to: to.clone(),
        phase: MigrationPhase::Preparing,
        progress: MigrationProgress::default(),
        stats: None,
        error: None,
    };
    vm.update(|s| s.state = VmState::MigratingOut);
    set_migration(&host, &vm, &info);
    tracing::info!(vm = %name, %to, "migration starting");
    let req = MigrateRequest { to, ..req };
    tokio::spawn(run_outgoing(host, vm, req, before, fence));
    Ok(info)
}

async fn run_outgoing(
    host: Arc<Host>,
    vm: Arc<Vm>,
    req: MigrateRequest,
    before: VmState,
    fence: Option<u64>,
) {
    let name = vm.spec.name.clone();
    let result = outgoing(&host, &vm, &req, fence).await;
    // The latest progress, as the migration left it.
    let mut info = vm.status().migration.unwrap_or(MigrationInfo {
        to: req.to.clone(),
        phase: MigrationPhase::Preparing,
        progress: MigrationProgress::default(),
        stats: None,
        error: None,
    });
    match result {
        Ok(stats) => {
            tracing::info!(vm = %name, to = %req.to, total_ms = stats.total_ms, downtime_ms = stats.downtime_ms,
                bytes = stats.transferred_bytes, "migration completed");
            info.phase = MigrationPhase::Completed;
            info.stats = Some(stats);
            set_migration(&host, &vm, &info);
            host.retire(&vm, |old| keep_console(old, &vm.paths)).await;
        }
        Err(Failure { error, source_runs }) => {
            let msg = if source_runs {
                format!("{error}; VM `{name}` keeps running on {}", host.cfg.name)
            } else {
                format!("{error}; the source copy of `{name}` stays paused on {} (the destination may run it)", host.cfg.name)
            };
            tracing::error!(vm = %name, error = %msg, "migration failed");
            info.phase = MigrationPhase::Failed;
            info.error = Some(msg);
            if source_runs {
                // With the order's token: a destination that obeys a newer
                // controller refuses it, and its prepared QEMU waits out
                // its incoming wait (INCOMING_TIMEOUT).
                let _ = post_json::<_, serde_json::Value>(
                    &host,
                    &format!("{}/v1/incoming/{name}/abort", req.to),
                    &serde_json::json!({}),
                    fence,
                )
                .await;
                vm.update(|s| s.state = before);
            }
            set_migration(&host, &vm, &info);
        }
    }
}

struct Failure {
    error: AgentError,
    /// True if the VM still runs here (nothing was handed over).
    source_runs: bool,
}

impl From<AgentError> for Failure {
    fn from(error: AgentError) -> Self {
        Failure {
            error,
            source_runs: true,
        }
    }
}

async fn outgoing(
    host: &Arc<Host>,
    vm: &Arc<Vm>,
    req: &MigrateRequest,
    fence: Option<u64>,
) -> Result<MigrationStats, Failure> {
    let started = Instant::now();
    let name = &vm.spec.name;
    let ready: IncomingReady = post_json(
        host,
        &format!("{}/v1/incoming", req.to),
        &IncomingRequest {
            spec: vm.spec.clone(),
            disk_base: vm.disk_base(),
            cleartext: req.tuning.cleartext,
        },
        fence,
    )
    .await?;
    // Never the answer itself: QEMU would run an `exec:` address.
    let dest = crate::stream_addr::agent_ip(&req.to).map_err(AgentError::Migration)?;
    let uri = crate::stream_addr::stream_uri(dest, &ready.uri).map_err(AgentError::Migration)?;
    let tls = crate::stream_tls::client(host, vm, dest, req.tuning.cleartext)?;
    tracing::info!(vm = %name, %uri, "destination ready");
    let qmp = vm
        .qmp()
        .ok_or_else(|| AgentError::Conflict(format!("VM `{name}` has no running QEMU")))?;
    let mut info = vm.status().migration.unwrap_or_else(|| MigrationInfo {
        to: req.to.clone(),
        phase: MigrationPhase::Active,
        progress: MigrationProgress::default(),
        stats: None,
        error: None,
    });
    info.phase = MigrationPhase::Active;
    let mut last_log = Instant::now();
    let migrating = migration::migrate(
        &qmp,
        &uri,
        &req.tuning,
        &tls,
        vm.disk_base().is_some(),
        Duration::from_millis(200),
        |p| {
            info.progress = p.clone();
            set_migration(host, vm, &info);
            if last_log.elapsed() > Duration::from_secs(1) {
                last_log = Instant::now();
                tracing::info!(vm = %name, transferred = p.transferred_bytes, remaining = p.remaining_bytes,
                passes = p.passes, "migration progress");
            }
        },
    );
    tokio::pin!(migrating);
    let outcome = tokio::select! {
        biased;
        r = &mut migrating => r,
        newer = superseded(host, fence) => {
            tracing::warn!(vm = %name, order = ?fence, newer, "a newer controller leads: cancelling the migration it did not order");
            migration::cancel(&qmp).await;
            // QEMU may have finished first: then the move stands.
            migrating.await.map_err(|e| {
                duplex_qemu::QemuError::Migration(format!(
                    "cancelled: a newer controller leads (fencing token {newer} > {}): {e}",
                    fence.unwrap_or_default()
                ))
            })
        }
    };
    let mut stats = outcome.map_err(AgentError::from)?;
    // QEMU finished: the destination now owns the VM. From here on the
    // source must not resume its copy.
    // No fencing token: this ends a hand-over, whoever leads now.
    let _: VmInfo = post_json(
        host,
        &format!("{}/v1/incoming/{name}/complete", req.to),
        &serde_json::json!({}),
        None,
    )
    .await
    .map_err(|error| Failure {
        error,
        source_runs: false,
    })?;
    stats.orchestrated_ms = started.elapsed().as_millis() as u64;
    Ok(stats)
}

/// Resolves (with the newer token) once this agent has obeyed a controller
/// newer than the one whose token `fence` the order carried; never for an
/// order without a token.
async fn superseded(host: &Host, fence: Option<u64>) -> u64 {
    let Some(token) = fence else {
        return std::future::pending().await;
    };
    loop {
        let now = host.fence.current();
        if now > token {
            return now;
        }
        tokio::time::sleep(FENCE_RECHECK).await;
    }
}

/// POSTs JSON to a peer agent, with the order's fencing token if it had
/// one; errors say whether it was unreachable or refused, with its message.
async fn post_json<B: Serialize, T: DeserializeOwned>(
    host: &Host,
    url: &str,
    body: &B,
    fence: Option<u64>,
) -> Result<T, AgentError> {
    let mut req = host
        .http
        .get()
        .post(url)
        .timeout(Duration::from_secs(60))
        .json(body);
    if let Some(token) = fence {
        req = req.header(FENCE_HEADER, token.to_string());
    }
    let resp = req.send().await.map_err(|e| {
        AgentError::Migration(format!("destination agent unreachable at {url}: {e}"))
    })?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| AgentError::Migration(format!("reading answer of {url}: {e}")))?;
    if !status.is_success() {
        let msg = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error.message)
            .unwrap_or(text);
        return Err(AgentError::Migration(format!(
            "destination agent refused ({status}): {msg}"
        )));
    }
    serde_json::from_str(&text)
        .map_err(|e| AgentError::Migration(format!("bad answer from {url}: {e}")))
}

/// Destination: start QEMU waiting for the stream, return where to send it.
pub async fn prepare_incoming(
    host: Arc<Host>,
    req: IncomingRequest,
    caller: Option<&duplex_core::identity::Identity>,
) -> Result<IncomingReady, AgentError> {
    let ip = host.cfg.listen.ip();
    if ip.is_unspecified() {
        return Err(AgentError::Unavailable("this agent listens on an unspecified address; start it with --listen <its own IP>:PORT to receive migrations".into()));
    }
    let vm = host.reserve(&req.spec, VmState::Incoming)?;
    let prepared = async {
        let start = crate::host::Start::Incoming {
            disk_base: req.disk_base.clone(),
        };
        host.launch(&vm, start).await?;
        let qmp = vm
            .qmp()
            .ok_or_else(|| AgentError::Unavailable("QEMU vanished".into()))?;
        let events = qmp.events();
        let tls = crate::stream_tls::server(&host, &vm, caller, req.cleartext)?;
        let uri = migration::listen_incoming(&qmp, &ip.to_string(), &tls).await?;
        Ok::<_, AgentError>((uri, events))
    }
    .await;
    match prepared {
        Ok((uri, events)) => {
            tokio::spawn(watch_incoming(host.clone(), vm, events));
            tracing::info!(vm = %req.spec.name, %uri, "waiting for incoming migration");
            Ok(IncomingReady { uri })
        }
        Err(e) => {
            host.teardown(&vm).await;
            host.forget(&req.spec.name);
            Err(e)
        }
    }
}

/// Destination: when the VM resumes here, announce it on the network at once
/// (a gratuitous ARP through its element, besides QEMU's own announce),
/// mark it running and reconnect its guest.
async fn watch_incoming(
    host: Arc<Host>,
    vm: Arc<Vm>,
    mut events: tokio::sync::broadcast::Receiver<duplex_qemu::qmp::QmpEvent>,
) {
    let name = vm.spec.name.clone();
    let deadline = Instant::now() + INCOMING_TIMEOUT;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let resumed = loop {
        let still_ours = host
            .get(&name)
            .map(|v| Arc::ptr_eq(&v, &vm))
            .unwrap_or(false);
        if Instant::now() > deadline || !still_ours || vm.status().state != VmState::Incoming {
            break false;
        }
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(e) if e.name == "RESUME" => break true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break false,
            },
            _ = tick.tick() => {
                if let Some(q) = vm.qmp() {
                    if q.run_state().await.map(|s| s == "running").unwrap_or(false) { break true; }
                }
            }
        }
    };
    if !resumed {
        if host
            .get(&name)
            .map(|v| Arc::ptr_eq(&v, &vm))
            .unwrap_or(false)
            && vm.status().state == VmState::Incoming
        {
            tracing::warn!(vm = %name, "incoming migration never completed; cleaning up");
            host.teardown(&vm).await;
            host.forget(&name);
        }
        return;
    }
    if let Some(rt) = vm.rt.lock().await.as_ref() {
        let garp = duplex_net::frame::gratuitous_arp(vm.spec.mac(), vm.spec.ip);
        rt.element.inject(Direction::FromGuest, garp);
    }
    vm.update(|s| s.state = VmState::Running);
    tracing::info!(vm = %name, "VM resumed here after migration; announced");
    tokio::spawn(watch_exit(host.clone(), vm.clone()));
    connect_guest(&vm, READY_TIMEOUT).await;
    // So that a takeover soon after the move is as quick as any other.
    match host.guest_request(&name, Op::Rehearse).await {
        Ok(v) => tracing::info!(vm = %name, result = %v, "takeover path rehearsed after the move"),
        Err(e) => {
            tracing::warn!(vm = %name, error = %e, "rehearsing the takeover path after the move")
        }
    }
    vm.update(|s| s.arrived = true);
}

/// Destination: the source says QEMU completed; confirm the VM runs here,
/// once its guest answers here (up to `ARRIVAL_WAIT`): whoever moved it
/// may give the guest an order next (a switchover right after the move).
pub async fn complete_incoming(host: &Host, name: &str) -> Result<VmInfo, AgentError> {
    let vm = host.get(name)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match vm.status().state {
            VmState::Running => {
                let settle = Instant::now() + ARRIVAL_WAIT;
                while !vm.status().arrived && Instant::now() < settle {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if !vm.status().arrived {
                    tracing::warn!(vm = %name, "the guest did not answer within {ARRIVAL_WAIT:?} of the move; reporting the VM running without it");
                }
                return Ok(vm.info());
            }
            VmState::Incoming if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            other => {
                return Err(AgentError::Conflict(format!(
                    "VM `{name}` is {other:?} here, not running"
                )))
            }
        }
    }
}

/// Destination: the source gave up; drop the waiting QEMU.
pub async fn abort_incoming(host: &Host, name: &str) -> Result<(), AgentError> {
    let vm = host.get(name)?;
    if vm.status().state != VmState::Incoming {
        return Err(AgentError::Conflict(format!(
            "VM `{name}` is not an incoming migration here"
        )));
    }
    host.retire(&vm, |_| {}).await;
    tracing::info!(vm = %name, "incoming migration aborted");
    Ok(())
}

/// The console of a VM that left: kept for the operator (what the guest
/// said while here, a panic included), not removed with its directory.
/// `old`: the departed VM's files, moved aside; `paths`: where they were.
fn keep_console(old: &crate::vm::VmPaths, paths: &crate::vm::VmPaths) {
    let Some(to) = paths.departed_serial() else {
        return;
    };
    let kept = to
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::rename(&old.serial, &to));
    match kept {
        Ok(()) => tracing::info!(log = %to.display(), "console log of the departed VM kept"),
        Err(e) => tracing::warn!(error = %e, "keeping the departed VM's console log"),
    }
}
