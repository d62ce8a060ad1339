//! S5: switches a VM between its sites when its site policy says so
//! (`duplex_core::site_policy`), and settles switches a controller left
//! half-done (`crate::site_settle`), while this controller leads. Both
//! sides are asked at every tick.

use crate::ctl::Ctl;
use duplex_core::model::Severity;
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
            // A switch left half-done by a controller that is gone.
            let home = hosts
                .iter()
                .find(|h| h.name == vm.host)
                .map(|h| h.url.clone());
            let handed_off = match home {
                Some(url) => ctl
                    .agent(&url)
                    .site_side(name)
                    .await
                    .ok()
                    .and_then(|s| s.handed_off),
                None => None,
            };
            if stranded.check(&ctl, vm, handed_off).await {
                continue;
            }
            let (Some(policy), Some(backup)) = (vm.site_policy, vm.backup.as_ref()) else {
                continue;
            };
            let stayed = now.duration_since(*settled.entry(name.clone()).or_insert(now));
            let Some(url) = hosts
                .iter()
                .find(|h| &h.name == backup)
                .map(|h| h.url.clone())
            else {
                continue;
            };
            // A replica still being filled cannot take over: not due yet.
            let Some(paused) = ctl
                .agent(&url)
                .site_side(name)
                .await
                .ok()
                .filter(|s| s.applied.is_some())
            else {
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
