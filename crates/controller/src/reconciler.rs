//! The reconcile loop: carries out `duplex_core::model::reconcile::plan`
//! against the agents (hosts are judged by the host watch).

use crate::ctl::Ctl;
use crate::repo::{RepoError, VMS};
use duplex_agent_client::ClientError;
use duplex_core::agent_api::WaitFor;
use duplex_core::model::reconcile::{plan, Action, HostSeen};
use duplex_core::model::{Host, HostState, Severity, Vm};
use duplex_store::Expect;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const PERIOD: Duration = Duration::from_millis(1000);
/// After a failed order, leave the VM alone this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// After a successful order, until the host's reports show its effect
/// (a report is at most one heartbeat old, plus its own transit).
const SETTLE: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Wakes the reconciler on every change to the desired VMs and pairs, by
/// whoever wrote it (another controller, an operator's tool on the store).
pub async fn watch_desired(ctl: Arc<Ctl>, prefix: &'static str) {
    loop {
        match ctl.repo.store.watch(prefix).await {
            Ok(mut w) => {
                while w.recv().await.is_some() {
                    ctl.kick.notify_one();
                }
                tracing::debug!("store watch ended; watching again");
            }
            Err(e) => {
                tracing::warn!("cannot watch the store (retrying in {MAX_BACKOFF:?}): {e}");
                tokio::time::sleep(MAX_BACKOFF).await;
            }
        }
    }
}

pub async fn run(ctl: Arc<Ctl>) {
    tokio::spawn(watch_desired(ctl.clone(), VMS));
    tokio::spawn(watch_desired(ctl.clone(), crate::repo::PAIRS));
    let mut backoff = PERIOD;
    loop {
        if ctl.is_leader() {
            match tick(&ctl).await {
                Ok(()) => backoff = PERIOD,
                Err(e) => {
                    tracing::warn!("reconcile pass failed, retrying in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        tokio::select! {
            biased;
            _ = tokio::time::sleep(PERIOD) => {}
            _ = ctl.kick.notified() => {}
        }
    }
}

/// One pass. Public so tests can drive it.
pub async fn tick(ctl: &Arc<Ctl>) -> Result<(), RepoError> {
    let hosts = ctl.hosts().await?;
    let vms = ctl.vms().await?;
    let seen: BTreeMap<String, HostSeen> = {
        let obs = ctl.lock_observed();
        hosts
            .iter()
            .map(|h| {
                let fenced = h.fence.is_some_and(|f| f.proof.is_some());
                let alive = obs.live(h, &ctl.cfg.liveness);
                (
                    h.name.clone(),
                    HostSeen {
                        alive,
                        accepts: alive && h.state == HostState::Ready,
                        fenced,
                        vms: obs.vm_names(&h.name),
                        unknown: obs.get(&h.name).is_none(),
                        unprotected: obs.unprotected(&h.name),
                    },
                )
            })
            .collect()
    };
    let mut busy = ctl.lock_busy().clone();
    {
        let mut moved = ctl.moved.lock().unwrap_or_else(|p| p.into_inner());
        moved.retain(|_, at| at.elapsed() < SETTLE);
        busy.extend(moved.keys().cloned());
    }
    for action in plan(&vms, &seen, &busy) {
        execute(ctl, &hosts, &vms, action).await?;
    }
    Ok(())
}

/// Gives a lone VM whose home host is fenced a new home (placement's
/// choice); the next pass creates it there.
pub(crate) async fn restart_elsewhere(
    ctl: &Arc<Ctl>,
    vms: &[Vm],
    vm: &str,
    from: &str,
) -> Result<(), RepoError> {
    if !vms.iter().any(|v| v.spec.name == vm) {
        return Ok(());
    }
    let subject = format!("vm/{vm}");
    let avoid = [from.to_string()];
    let to = match crate::placement::decide_avoiding(ctl, vm, &avoid).await {
        Ok(d) => d.to,
        Err(e) => {
            let msg = format!(
                "{vm}'s host {from} is fenced, and no other host can take it: {}",
                e.message
            );
            ctl.events
                .emit(Severity::Error, "vm.restart_blocked", &subject, msg)
                .await;
            return Ok(());
        }
    };
    let key = format!("{VMS}{vm}");
    let res = ctl
        .repo
        .update::<Vm, std::convert::Infallible, _>(&key, |r| {
            if r.host == from {
                r.host = to.clone();
            }
            Ok(())
        })
        .await;
    match res {
        Ok(_) => {
            let msg = format!("{vm}'s host {from} is fenced: restarting it on {to}");
            ctl.events
                .emit(Severity::Warning, "vm.restarted_elsewhere", &subject, msg)
                .await;
            ctl.kick.notify_one();
            Ok(())
        }
        Err(RepoError::Missing(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Marks `vm` busy for the duration of `work`, then for `SETTLE` (so the
/// next pass does not act on a report from before the order), or
/// `RETRY_AFTER` if it failed.
pub(crate) fn spawn_order<F>(ctl: &Arc<Ctl>, vm: String, work: F)
where
    F: std::future::Future<Output = bool> + Send + 'static,
{
    ctl.lock_busy().insert(vm.clone());
    let ctl = ctl.clone();
    tokio::spawn(async move {
        let ok = work.await;
        tokio::time::sleep(if ok { SETTLE } else { RETRY_AFTER }).await;
        ctl.lock_busy().remove(&vm);
        ctl.kick.notify_one();
    });
}

async fn execute(
    ctl: &Arc<Ctl>,
    hosts: &[Host],
    vms: &[Vm],
    action: Action,
) -> Result<(), RepoError> {
    let url = |h: &str| hosts.iter().find(|x| x.name == h).map(|x| x.url.clone());
    match action {
        Action::Create { vm, host } => {
            let (Some(url), Some(rec)) = (url(&host), vms.iter().find(|v| v.spec.name == vm))
            else {
                return Ok(());
            };
            let (agent, spec, c) = (ctl.agent(&url), rec.spec.clone(), ctl.clone());
            spawn_order(ctl, vm.clone(), async move {
                let subject = format!("vm/{vm}");
                match agent.create(&spec, WaitFor::Started).await {
                    Ok(_) => {
                        c.events
                            .emit(
                                Severity::Info,
                                "vm.started",
                                &subject,
                                format!("started {vm} on {host}"),
                            )
                            .await;
                        true
                    }
                    Err(e) => {
                        c.events
                            .emit(
                                Severity::Warning,
                                "vm.start_failed",
                                &subject,
                                format!(
                                    "cannot start {vm} on {host} (retrying in {} s): {e}",
                                    RETRY_AFTER.as_secs()
                                ),
                            )
                            .await;
                        false
                    }
                }
            });
        }
        Action::Delete { vm, host } => {
            let Some(url) = url(&host) else { return Ok(()) };
            let (agent, c) = (ctl.agent(&url), ctl.clone());
            spawn_order(ctl, vm.clone(), async move {
                match agent.delete(&vm).await {
                    Ok(()) => true,
                    // Already gone (e.g. a second pass before the report caught up).
                    Err(ClientError::Api { status: 404, .. }) => true,
                    Err(e) => {
                        c.events
                            .emit(
                                Severity::Warning,
                                "vm.delete_failed",
                                &format!("vm/{vm}"),
                                format!("cannot remove {vm} from {host} (retrying): {e}"),
                            )
                            .await;
                        false
                    }
                }
            });
        }
        Action::Forget { vm } => {
            if let Some(rec) = vms.iter().find(|v| v.spec.name == vm) {
                crate::epochs::drop_replica(ctl, hosts, rec);
            }
            if ctl.repo.delete(&format!("{VMS}{vm}"), Expect::Any).await? {
                forget_restarts(ctl, &vm).await;
                ctl.events
                    .emit(
                        Severity::Info,
                        "vm.deleted",
                        &format!("vm/{vm}"),
                        format!("{vm} is gone"),
                    )
                    .await;
            }
        }
        Action::Adopt { vm, host } => {
            let to = host.clone();
            let r = ctl
                .repo
                .update::<Vm, std::convert::Infallible, _>(&format!("{VMS}{vm}"), |rec| {
                    rec.host = to.clone();
                    Ok(())
                })
                .await;
            match r {
                Ok(_) => {
                    ctl.events
                        .emit(
                            Severity::Info,
                            "vm.moved",
                            &format!("vm/{vm}"),
                            format!("{vm} now runs on {host}"),
                        )
                        .await
                }
                Err(RepoError::Missing(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Action::Restart { vm, from } => restart_elsewhere(ctl, vms, &vm, &from).await?,
        Action::Activate { vm, from, on } => {
            let Some(url) = url(&on) else { return Ok(()) };
            crate::epochs::activate(ctl, vms, vm, from, on, url);
        }
        Action::Protect { vm, host } => {
            let Some(rec) = vms.iter().find(|v| v.spec.name == vm) else {
                return Ok(());
            };
            crate::epochs::protect(ctl, hosts, rec.clone(), host);
        }
        Action::Unmanaged { vm, host } => {
            let fresh = ctl
                .reported_unmanaged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((host.clone(), vm.clone()));
            if fresh {
                ctl.events
                    .emit(
                        Severity::Warning,
                        "vm.unmanaged",
                        &format!("host/{host}"),
                        format!("{host} runs VM {vm}, which the controller has no record of; left alone"),
                    )
                    .await;
            }
        }
    }
    Ok(())
}

/// A deleted VM's restart policy and counts go with it; its data sets
/// stay on the external disk.
async fn forget_restarts(ctl: &Ctl, vm: &str) {
    let scope = crate::restart_policy::Scope::Vm;
    if let Err(e) = crate::restart_policy::forget(ctl, scope, vm).await {
        tracing::warn!(vm = %vm, "cannot drop the deleted VM's restart policy: {e}");
    }
    if let Err(e) = crate::restart_unit::retire(ctl, vm).await {
        tracing::warn!(vm = %vm, "cannot reset the deleted VM's restart counts: {e}");
    }
}
