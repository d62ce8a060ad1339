//! S5: switches a VM between its sites when its site policy says so
//! (`duplex_core::site_policy`), while this controller leads. The paused
//! side's buffer is read from its agent at every tick.

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
        for vm in &vms {
            let (Some(policy), Some(backup)) = (vm.site_policy, vm.backup.as_ref()) else {
                continue;
            };
            let name = &vm.spec.name;
            let now = Instant::now();
            if ctl.lock_busy().contains(name) {
                settled.insert(name.clone(), now);
                continue;
            }
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
                Ok(ends) => crate::site::start_switch(&ctl, ends, Some(why.to_string())).await,
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
