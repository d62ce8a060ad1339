//! S2 in the controller: carries out the reconcile plan's `Protect` (give a
//! replicated VM a backup and start its epochs) and `Activate` (its host is
//! fenced: run it on the backup from the last committed epoch; if that
//! cannot be done, restart it elsewhere from its image).

use crate::ctl::Ctl;
use crate::reconciler::{restart_elsewhere, spawn_order};
use crate::repo::VMS;
use duplex_core::agent_api::ProtectRequest;
use duplex_core::model::{Host, Severity, Vm};
use std::sync::Arc;

/// Chooses a backup for `rec` (not its host), makes the replica there,
/// records it, and starts the epochs.
pub fn protect(ctl: &Arc<Ctl>, hosts: &[Host], rec: Vm, host: String) {
    let urls: Vec<(String, String)> = hosts
        .iter()
        .map(|h| (h.name.clone(), h.url.clone()))
        .collect();
    let url = move |h: &str| urls.iter().find(|(n, _)| n == h).map(|(_, u)| u.clone());
    let c = ctl.clone();
    let vm = rec.spec.name.clone();
    spawn_order(ctl, vm.clone(), async move {
        let subject = format!("vm/{vm}");
        let outcome = async {
            let avoid = std::slice::from_ref(&host);
            let decided = match &rec.replica_site {
                Some(site) => crate::placement::decide_in_site(&c, &vm, avoid, site).await,
                None => crate::placement::decide_avoiding(&c, &vm, avoid).await,
            };
            let backup = decided
                .map_err(|e| format!("no host can keep its replica: {}", e.message))?
                .to;
            let (Some(home_url), Some(backup_url)) = (url(&host), url(&backup)) else {
                return Err(format!("no address for {host} or {backup}"));
            };
            c.agent(&backup_url)
                .create_replica(&rec.spec)
                .await
                .map_err(|e| format!("making its replica on {backup}: {e}"))?;
            if rec.replica_site.is_some() {
                // S5: that site's traffic for the VM is kept there.
                c.agent(&backup_url)
                    .replica_buffer(&vm, &[])
                    .await
                    .map_err(|e| format!("buffering for it on {backup}: {e}"))?;
            }
            record(&c, &vm, |r| r.backup = Some(backup.clone())).await?;
            let req = ProtectRequest {
                backup: backup_url,
                epochs: Default::default(),
                shared_epoch: None,
            };
            c.agent(&home_url)
                .protect(&vm, &req)
                .await
                .map_err(|e| format!("starting its epochs on {host}: {e}"))?;
            // The old replica can no longer be activated (the record names
            // the new one): drop it where it still is, in the background
            // (its host may be gone and answer nothing).
            if let Some(u) = rec
                .backup
                .as_ref()
                .filter(|o| **o != backup)
                .and_then(|o| url(o))
            {
                let (agent, vm) = (c.agent(&u), vm.clone());
                tokio::spawn(async move { agent.delete_replica(&vm).await });
            }
            Ok(backup)
        }
        .await;
        match outcome {
            Ok(backup) => {
                let msg = format!("{vm} on {host} is checkpointed to {backup} every epoch");
                c.events
                    .emit(Severity::Info, "vm.protected", &subject, msg)
                    .await;
                true
            }
            Err(e) => {
                let msg = format!("{vm} on {host} runs without a backup (retrying): {e}");
                c.events
                    .emit(Severity::Warning, "vm.protect_failed", &subject, msg)
                    .await;
                false
            }
        }
    });
}

/// Runs `vm` on `on` from its replica; its home `from` is fenced.
pub fn activate(ctl: &Arc<Ctl>, vms: &[Vm], vm: String, from: String, on: String, url: String) {
    let (c, vms) = (ctl.clone(), vms.to_vec());
    spawn_order(ctl, vm.clone(), async move {
        let subject = format!("vm/{vm}");
        let t0 = std::time::Instant::now();
        let activated = c.agent(&url).activate(&vm).await;
        let outcome = if activated.is_ok() {
            "succeeded"
        } else {
            "failed"
        };
        crate::metrics::observe(&c.metrics.failovers, outcome, t0.elapsed().as_secs_f64());
        match activated {
            Ok(_) => {
                // S5: its replica is to be kept in the site it ran in.
                let from_site = crate::site::site_of(&c, &from).await;
                let moved = record(&c, &vm, |r| {
                    if r.host == from {
                        r.host = on.clone();
                        r.backup = None;
                        if r.replica_site.is_some() {
                            r.replica_site = from_site.clone();
                        }
                    }
                })
                .await;
                if let Err(e) = moved {
                    tracing::warn!(vm = %vm, "recording the failover: {e}");
                }
                let msg = format!(
                    "{vm}'s host {from} is fenced: {vm} runs on {on} from the last epoch its replica committed"
                );
                c.events
                    .emit(Severity::Warning, "vm.failover", &subject, msg)
                    .await;
                c.kick.notify_one();
                true
            }
            Err(e) => {
                let msg = format!(
                    "{vm}'s host {from} is fenced and its replica on {on} cannot run it ({e}): restarting it from its image"
                );
                c.events
                    .emit(Severity::Error, "vm.failover_failed", &subject, msg)
                    .await;
                let _ = record(&c, &vm, |r| r.backup = None).await;
                restart_elsewhere(&c, &vms, &vm, &from).await.is_ok()
            }
        }
    });
}

/// Drops a forgotten VM's replica, in the background (best effort: its
/// host may be gone and answer nothing, which must not hold up a pass).
pub fn drop_replica(ctl: &Ctl, hosts: &[Host], rec: &Vm) {
    let Some(backup) = rec.backup.clone() else {
        return;
    };
    let Some(h) = hosts.iter().find(|h| h.name == backup) else {
        return;
    };
    let (agent, vm) = (ctl.agent(&h.url), rec.spec.name.clone());
    tokio::spawn(async move {
        if let Err(e) = agent.delete_replica(&vm).await {
            tracing::info!(vm = %vm, host = %backup, "dropping the replica: {e}");
        }
    });
}

pub async fn record(ctl: &Ctl, vm: &str, f: impl Fn(&mut Vm)) -> Result<(), String> {
    ctl.repo
        .update::<Vm, std::convert::Infallible, _>(&format!("{VMS}{vm}"), |r| {
            f(r);
            Ok(())
        })
        .await
        .map(drop)
        .map_err(|e| format!("recording it: {e}"))
}
