//! S5: switches a VM between its sites when its site policy says so
//! (`duplex_core::site_policy`), and settles switches a controller left
//! half-done (`crate::site_settle`), while this controller leads. Both
//! sides are asked at every tick.

use crate::ctl::Ctl;
use duplex_core::model::{Host, Severity};
use duplex_core::site::SiteSide;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often policies are looked at.
const TICK: Duration = Duration::from_millis(200);

pub async fn run(ctl: Arc<Ctl>) {
    // When each VM's last switch ended (or this controller first saw it).
    let mut settled: HashMap<String, Instant> = HashMap::new();
    let mut stranded = crate::site_settle::Stranded::default();
    loop {
        tokio::time::sleep(TICK).await;
        if !ctl.is_leader() {
            settled.clear();
            continue;
        }
        let (Ok(vms), Ok(hosts)) = (ctl.vms().await, ctl.hosts().await) else {
            continue;
        };
        settled.retain(|name, _| vms.iter().any(|v| &v.spec.name == name));
        stranded.forget_others(&vms);
        for vm in vms.iter().filter(|v| v.replica_site.is_some()) {
            let name = &vm.spec.name;
            let now = Instant::now();
            if ctl.lock_busy().contains(name) {
                settled.insert(name.clone(), now);
                continue;
            }
            let home = side_of(&ctl, &hosts, &vm.host, name).await;
            let backup = match vm.backup.as_deref() {
                Some(b) => side_of(&ctl, &hosts, b, name).await,
                None => None,
            };
            // A switch left half-done by a controller that is gone.
            if stranded
                .check(&ctl, vm, home.as_ref(), backup.as_ref())
                .await
            {
                continue;
            }
            if let (Some(h), Some(b), Some(backup_host)) = (&home, &backup, &vm.backup) {
                share_addresses(&ctl, &hosts, backup_host, h, b).await;
            }
            let Some(policy) = vm.site_policy else {
                continue;
            };
            let stayed = now.duration_since(*settled.entry(name.clone()).or_insert(now));
            // A replica still being filled cannot take over: not due yet.
            let Some(paused) = backup.filter(|s| !s.active && s.applied.is_some()) else {
                continue;
            };
            let Some(why) = policy.due(stayed.as_millis() as u64, paused.buffer.as_ref()) else {
                continue;
            };
            let started = match crate::site::ends(&ctl, name).await {
                Ok(ends) => {
                    let why = format!("switching sites by its policy: {why}");
                    crate::site::start_switch(&ctl, ends, Some(why)).await
                }
                Err(e) => Err(e),
            };
            settled.insert(name.clone(), Instant::now());
            if let Err(e) = started {
                let msg = format!(
                    "{name} is due to switch sites ({why}) but cannot: {}",
                    e.message
                );
                ctl.events
                    .emit(
                        Severity::Warning,
                        "vm.site_switch_refused",
                        &format!("vm/{name}"),
                        msg,
                    )
                    .await;
            }
        }
    }
}

/// What `host` reports of `vm`'s side there (`None`: unknown host, or no
/// answer).
async fn side_of(ctl: &Ctl, hosts: &[Host], host: &str, vm: &str) -> Option<SiteSide> {
    let url = &hosts.iter().find(|h| h.name == host)?.url;
    ctl.agent(url).site_side(vm).await.ok()
}

/// The paused side answers in its site for every address the VM announced
/// on its active side (a service address its guest claimed), not only the
/// VM's own: given what it lacks.
async fn share_addresses(
    ctl: &Ctl,
    hosts: &[Host],
    backup: &str,
    active: &SiteSide,
    paused: &SiteSide,
) {
    let missing = duplex_core::site::addresses_to_share(active, paused);
    if missing.is_empty() {
        return;
    }
    let Some(url) = hosts.iter().find(|h| h.name == backup).map(|h| &h.url) else {
        return;
    };
    match ctl.agent(url).replica_buffer(&active.vm, &missing).await {
        Ok(_) => {
            tracing::info!(vm = %active.vm, ?missing, "S5: the paused side answers for these addresses too")
        }
        Err(e) => {
            tracing::warn!(vm = %active.vm, "S5: giving {backup} the addresses {missing:?}: {e}")
        }
    }
}
