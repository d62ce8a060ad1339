//! S5 in the controller: a replicated VM kept in two sites, running in one
//! (its home host) and paused in the other (its backup, whose element
//! buffers what that site sends the VM). `replicate` puts its replica in
//! another site; `switch` carries out the pure machine of
//! `duplex_core::site_switch` order by order.

use crate::ctl::Ctl;
use crate::epochs::record;
use crate::error::ApiError;
use crate::ops::OpHandle;
use axum::http::StatusCode;
use duplex_agent_client::ClientError;
use duplex_core::agent_api::ProtectRequest;
use duplex_core::model::{Desired, Host, OpKind, Operation, Severity, Vm};
use duplex_core::site::{HandoffInfo, SiteSide};
use duplex_core::site_switch::{Order, State, Switch};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The site a host is in (`None`: no such host).
pub async fn site_of(ctl: &Ctl, host: &str) -> Option<String> {
    let hosts = ctl.hosts().await.ok()?;
    hosts.into_iter().find(|h| h.name == host).map(|h| h.site)
}

/// A VM that can be kept in two sites: running, replicated, in no pair.
pub async fn site_vm(ctl: &Ctl, name: &str) -> Result<Vm, ApiError> {
    let vm = ctl
        .vm(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no VM `{name}` (see `duplex vm list`)")))?;
    if vm.desired != Desired::Running {
        return Err(ApiError::conflict(format!("VM `{name}` is being deleted")));
    }
    if !vm.spec.replicated {
        return Err(ApiError::conflict(format!(
            "VM `{name}` is not replicated: create it with `--replicated` (and `--hold-at none` across sites)"
        )));
    }
    if vm.pair.is_some() {
        return Err(ApiError::conflict(format!(
            "VM `{name}` is a pair member: a pair keeps its own SBY"
        )));
    }
    Ok(vm)
}

/// Keeps `vm`'s replica in site `to` from now on (a new one is made there
/// at once; the old one is dropped once epochs run towards the new).
pub async fn replicate(ctl: &Arc<Ctl>, name: &str, to: &str) -> Result<Vm, ApiError> {
    let vm = site_vm(ctl, name).await?;
    let hosts = ctl.hosts().await?;
    let here = hosts
        .iter()
        .find(|h| h.name == vm.host)
        .map(|h| h.site.clone())
        .unwrap_or_default();
    if here == to {
        return Err(ApiError::bad_request(format!(
            "field `to`: `{name}` runs in site `{to}`; its replica must be in another"
        )));
    }
    if !hosts.iter().any(|h| h.site == to) {
        let mut sites: Vec<&str> = hosts.iter().map(|h| h.site.as_str()).collect();
        sites.sort_unstable();
        sites.dedup();
        return Err(ApiError::bad_request(format!(
            "field `to`: no host is in site `{to}` (sites: {})",
            sites.join(", ")
        )));
    }
    let site = to.to_string();
    record(ctl, name, |r| r.replica_site = Some(site.clone()))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", e))?;
    let rec = ctl
        .vm(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("VM `{name}` is gone")))?;
    tokio::spawn(protect_in_site(ctl.clone(), name.to_string(), site));
    Ok(rec)
}

/// Longest a new replica site waits for an order already working on the
/// VM (e.g. a protect being retried, which then picks the new site).
const REPLICATE_WAIT: Duration = Duration::from_secs(30);
const REPLICATE_POLL: Duration = Duration::from_millis(200);

/// Protects `vm` towards a host of `site` once nothing else works on it,
/// unless its replica is in that site by then.
async fn protect_in_site(ctl: Arc<Ctl>, vm: String, site: String) {
    let t0 = Instant::now();
    while ctl.lock_busy().contains(&vm) && t0.elapsed() < REPLICATE_WAIT {
        tokio::time::sleep(REPLICATE_POLL).await;
    }
    let (Ok(Some(rec)), Ok(hosts)) = (ctl.vm(&vm).await, ctl.hosts().await) else {
        return;
    };
    let in_site = rec
        .backup
        .as_ref()
        .and_then(|b| hosts.iter().find(|h| &h.name == b))
        .is_some_and(|h| h.site == site);
    if in_site || ctl.lock_busy().contains(&vm) {
        return;
    }
    let host = rec.host.clone();
    crate::epochs::protect(&ctl, &hosts, rec, host);
}

/// The two sides of a VM replicated across sites, as their hosts see them.
#[derive(Debug, Clone, Serialize)]
pub struct SiteView {
    pub vm: String,
    pub active: Side,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<Side>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub host: String,
    pub site: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<SiteSide>,
    /// Why its host could not tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn view(ctl: &Ctl, vm: &Vm) -> Result<SiteView, ApiError> {
    let hosts = ctl.hosts().await?;
    let active = side(ctl, &hosts, &vm.spec.name, &vm.host).await;
    let paused = match &vm.backup {
        Some(b) => Some(side(ctl, &hosts, &vm.spec.name, b).await),
        None => None,
    };
    Ok(SiteView {
        vm: vm.spec.name.clone(),
        active,
        paused,
    })
}

async fn side(ctl: &Ctl, hosts: &[Host], vm: &str, host: &str) -> Side {
    let h = hosts.iter().find(|h| h.name == host);
    let (seen, error) = match h {
        Some(h) => match ctl.agent(&h.url).site_side(vm).await {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        },
        None => (None, Some(format!("no host `{host}` is registered"))),
    };
    Side {
        host: host.to_string(),
        site: h.map(|h| h.site.clone()).unwrap_or_default(),
        seen,
        error,
    }
}

/// The hosts a switch works with.
pub struct Ends {
    pub vm: String,
    /// Where it runs now, and its agent's URL.
    pub from: (String, String),
    /// Where its replica is.
    pub to: (String, String),
    pub from_site: Option<String>,
}

/// The hosts of `name`'s two sides, as recorded.
pub async fn ends_of(ctl: &Ctl, name: &str) -> Result<Ends, ApiError> {
    let vm = site_vm(ctl, name).await?;
    let Some(backup) = vm.backup.clone() else {
        return Err(ApiError::conflict(format!(
            "VM `{name}` has no replica yet (see `duplex site replicate`)"
        )));
    };
    let hosts = ctl.hosts().await?;
    let url = |n: &str| hosts.iter().find(|h| h.name == n).map(|h| h.url.clone());
    let (Some(from_url), Some(to_url)) = (url(&vm.host), url(&backup)) else {
        return Err(ApiError::conflict(format!(
            "VM `{name}`: its host or its replica's host is not registered"
        )));
    };
    Ok(Ends {
        vm: name.to_string(),
        from_site: site_of(ctl, &vm.host).await,
        from: (vm.host, from_url),
        to: (backup, to_url),
    })
}

/// Checks a switch can start: the VM runs, its replica is ready.
pub async fn ends(ctl: &Ctl, name: &str) -> Result<Ends, ApiError> {
    let e = ends_of(ctl, name).await?;
    let seen = ctl
        .agent(&e.to.1)
        .site_side(name)
        .await
        .map_err(|x| ApiError::conflict(format!("VM `{name}`'s replica on {}: {x}", e.to.0)))?;
    if seen.active || seen.applied.is_none() {
        return Err(ApiError::conflict(format!(
            "VM `{name}`'s replica on {} holds no consistent state yet (its first epochs are on their way): try again in a moment",
            e.to.0
        )));
    }
    Ok(e)
}

/// Carries a switch out to its end; the result says where the VM runs.
async fn run_switch(
    ctl: &Arc<Ctl>,
    e: &Ends,
    op: &OpHandle,
    mut sw: Switch,
    mut memo: Memo,
) -> Result<String, String> {
    let started = Instant::now();
    let (from, to) = (&e.from.0, &e.to.0);
    let mut running_ms = 0;
    let mut last_error = String::new();
    while let Some(order) = sw.order() {
        op.progress(describe(order, e)).await;
        let outcome = carry_out(ctl, e, order, &mut memo).await;
        if order == Order::Activate && outcome.is_ok() {
            running_ms = started.elapsed().as_millis();
        }
        if let Err(err) = &outcome {
            tracing::warn!(vm = %e.vm, ?order, "site switch: {err}");
            last_error = format!("{order:?}: {err}");
        }
        sw = sw.next(outcome.is_ok());
    }
    let ms = started.elapsed().as_millis();
    let (pause, buffered) = memo
        .handed
        .map(|h| (h.pause_ms, h.buffer.map_or(0, |b| b.buffered)))
        .unwrap_or_default();
    let first_round = match memo.shared_epoch {
        Some(e) => format!("epochs go on from epoch {e}, which both sides hold"),
        None => "the new replica gets a full first round".to_string(),
    };
    match sw.state {
        State::Done => {
            let a = sw.afterwards;
            let mut msg = format!(
                "{} runs on {to} (was {from}): running there {running_ms} ms after the switch began (handoff {pause} ms), done in {ms} ms; {buffered} frame(s) buffered on {from} meanwhile; {first_round}",
                e.vm
            );
            if a.record_failed || a.standby_failed || a.protect_failed {
                msg.push_str(&format!("; then: {last_error} (the controller catches up)"));
            }
            ctl.events
                .emit(Severity::Info, "vm.site_switched", &format!("vm/{}", e.vm), msg.clone())
                .await;
            Ok(msg)
        }
        State::Aborted => Err(format!(
            "{} runs on on {from}: the switch was called off ({last_error})",
            e.vm
        )),
        _ => Err(format!(
            "{} is paused on both {from} and {to} ({last_error}): resume it with `duplex vm resume`",
            e.vm
        )),
    }
}

fn describe(order: Order, e: &Ends) -> String {
    let (vm, from, to) = (&e.vm, &e.from.0, &e.to.0);
    match order {
        Order::Handoff => format!("{from}: buffering, last checkpoint of {vm} to {to}"),
        Order::Activate => format!("{to}: running {vm} from that state, its buffer first"),
        Order::Resume => format!("{from}: {vm} runs on there"),
        Order::Record => format!("recording {vm} on {to}"),
        Order::Standby => format!("{from}: stopping {vm}, buffering for its replica"),
        Order::Protect => format!("{to}: epochs of {vm} towards {from}"),
    }
}

/// What a switch learns on its way.
#[derive(Default)]
pub struct Memo {
    pub handed: Option<HandoffInfo>,
    /// The epoch the old side's new replica holds (it kept the state the
    /// VM left with): the new side's epochs go on from it.
    pub shared_epoch: Option<u64>,
}

async fn carry_out(ctl: &Arc<Ctl>, e: &Ends, order: Order, memo: &mut Memo) -> Result<(), String> {
    let vm = &e.vm;
    let (from, to) = (&e.from, &e.to);
    let err = |x: ClientError| x.to_string();
    match order {
        Order::Handoff => {
            memo.handed = Some(ctl.agent(&from.1).handoff(vm).await.map_err(err)?);
            Ok(())
        }
        Order::Activate => {
            let info = ctl.agent(&to.1).activate(vm).await.map_err(err)?;
            // The view follows at once: reports sent before the switch
            // (the old side still running it) must not undo it.
            ctl.note_moved(vm);
            ctl.lock_observed().moved(&from.0, &to.0, info);
            Ok(())
        }
        Order::Resume => ctl
            .agent(&from.1)
            .site_resume(vm)
            .await
            .map(drop)
            .map_err(err),
        Order::Record => {
            let site = e.from_site.clone();
            record(ctl, vm, |r| {
                r.host = to.0.clone();
                r.backup = Some(from.0.clone());
                r.replica_site = site.clone();
            })
            .await
        }
        Order::Standby => {
            let replica = ctl.agent(&from.1).standby(vm).await.map_err(err)?;
            let handed = memo.handed.as_ref().map(|h| h.epoch);
            memo.shared_epoch = replica.applied.filter(|a| Some(*a) == handed);
            Ok(())
        }
        Order::Protect => {
            let req = ProtectRequest {
                backup: from.1.clone(),
                epochs: Default::default(),
                shared_epoch: memo.shared_epoch,
            };
            ctl.agent(&to.1)
                .protect(vm, &req)
                .await
                .map(drop)
                .map_err(err)
        }
    }
}

/// Starts a switch as an operation (refused while another works on the
/// VM); its progress and result are the operation's.
pub async fn start_switch(
    ctl: &Arc<Ctl>,
    ends: Ends,
    why: Option<String>,
) -> Result<Operation, ApiError> {
    continue_switch(ctl, ends, why, Switch::start(), Memo::default()).await
}

/// Starts (or takes over) a switch at `sw`, knowing `memo`.
pub async fn continue_switch(
    ctl: &Arc<Ctl>,
    ends: Ends,
    why: Option<String>,
    sw: Switch,
    memo: Memo,
) -> Result<Operation, ApiError> {
    if ctl.lock_busy().contains(&ends.vm) {
        return Err(ApiError::conflict(format!(
            "VM `{}` has an operation in progress: wait for it",
            ends.vm
        )));
    }
    let id = crate::ops::new_id(ctl);
    let guard = ctl.office.reserve(&id);
    let subject = format!("vm/{}", ends.vm);
    let (op, handle) = crate::ops::record(ctl, id, OpKind::SiteSwitch, &subject).await?;
    let c = ctl.clone();
    ctl.office.spawn(guard, async move {
        if let Some(why) = why {
            handle.progress(why).await;
        }
        let result = match c.claim_vms(std::slice::from_ref(&ends.vm)) {
            Ok(_claim) => run_switch(&c, &ends, &handle, sw, memo).await,
            Err(e) => Err(e),
        };
        handle.finish(result).await;
    });
    Ok(op)
}
