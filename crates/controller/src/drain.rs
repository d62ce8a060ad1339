//! `host drain`: every pair with a member on the host moved the S1 way,
//! every lone VM live-migrated, destinations from placement, a limited
//! number at once; the host is left in maintenance.

use crate::ctl::Ctl;
use crate::ops::OpHandle;
use crate::repo::HOSTS;
use duplex_core::model::{Desired, Host, HostState, Severity};
use duplex_core::pair_migration::Setup;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

enum Item {
    Pair(String),
    Vm(String),
}

impl Item {
    fn label(&self) -> String {
        match self {
            Item::Pair(p) => format!("pair {p}"),
            Item::Vm(v) => format!("vm {v}"),
        }
    }
}

async fn move_item(
    ctl: &Arc<Ctl>,
    host: &str,
    item: &Item,
    op: &OpHandle,
) -> Result<String, String> {
    match item {
        Item::Vm(vm) => {
            let _claim = ctl.claim_vms(std::slice::from_ref(vm))?;
            async {
                let d = crate::placement::decide(ctl, vm)
                    .await
                    .map_err(|e| e.message)?;
                let stats = crate::moves::migrate_vm(ctl, vm, &d.to, &Default::default()).await?;
                let msg = crate::moves::summary(vm, host, &d.to, &stats);
                ctl.events
                    .emit(
                        Severity::Info,
                        "vm.migrated",
                        &format!("vm/{vm}"),
                        msg.clone(),
                    )
                    .await;
                Ok(msg)
            }
            .await
        }
        Item::Pair(name) => {
            let pair = ctl
                .pair(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("pair vanished")?;
            let hosts = crate::pairs::member_hosts(ctl, &pair).await?;
            let targets = crate::placement::targets(ctl, &pair, &hosts, host, "auto")
                .await
                .map_err(|e| e.message)?;
            let setup = Setup {
                members: pair.members.clone(),
                hosts,
                active: pair.active.i(),
                targets,
                switch_back: false,
            };
            let out = crate::pair_move::run_within(ctl, name, setup, op)
                .await
                .map_err(|e| e.to_string())?;
            crate::pair_move::outcome_result(&out)
        }
    }
}

pub async fn run(ctl: Arc<Ctl>, host: String, concurrency: usize, op: OpHandle) {
    let subject = format!("host/{host}");
    // No new VMs on it from now on.
    let _ = ctl
        .repo
        .update::<Host, std::convert::Infallible, _>(&format!("{HOSTS}{host}"), |h| {
            if h.state == HostState::Ready || h.state == HostState::Spare {
                h.state = HostState::Maintenance;
            }
            Ok(())
        })
        .await;
    let (vms, pairs) = match (ctl.vms().await, ctl.pairs().await) {
        (Ok(v), Ok(p)) => (v, p),
        (Err(e), _) | (_, Err(e)) => return op.finish(Err(e.to_string())).await,
    };
    let mut items = Vec::new();
    for p in &pairs {
        if vms
            .iter()
            .any(|v| v.host == host && p.members.contains(&v.spec.name))
        {
            items.push(Item::Pair(p.name.clone()));
        }
    }
    for v in &vms {
        if v.host == host && v.pair.is_none() && v.desired == Desired::Running {
            items.push(Item::Vm(v.spec.name.clone()));
        }
    }
    let total = items.len();
    ctl.events
        .emit(
            Severity::Info,
            "host.drain",
            &subject,
            format!("draining {host}: {total} item(s), {concurrency} at a time; host set to maintenance"),
        )
        .await;
    let op = Arc::new(op);
    let results: Arc<Mutex<BTreeMap<String, Result<String, String>>>> = Default::default();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    // Pairs first: their switchovers are the moves clients could feel, so
    // they run while no lone VM's migration loads the hosts; the lone VMs
    // follow once every pair is done.
    let (pair_items, vm_items): (Vec<Item>, Vec<Item>) =
        items.into_iter().partition(|i| matches!(i, Item::Pair(_)));
    for group in [pair_items, vm_items] {
        let mut tasks = tokio::task::JoinSet::new();
        for item in group {
            let (ctl, host, op, results, sem) = (
                ctl.clone(),
                host.clone(),
                op.clone(),
                results.clone(),
                sem.clone(),
            );
            tasks.spawn(async move {
                let Ok(_permit) = sem.acquire_owned().await else {
                    return;
                };
                op.progress(format!("moving {}", item.label())).await;
                let r = move_item(&ctl, &host, &item, &op).await;
                let done = {
                    let mut res = results.lock().unwrap_or_else(|p| p.into_inner());
                    res.insert(item.label(), r.clone());
                    res.len()
                };
                op.progress(format!(
                    "{done}/{total} done; {}: {}",
                    item.label(),
                    match &r {
                        Ok(m) => m.clone(),
                        Err(e) => format!("FAILED: {e}"),
                    }
                ))
                .await;
            });
        }
        while tasks.join_next().await.is_some() {}
    }
    let res = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    let failed: Vec<String> = res
        .iter()
        .filter_map(|(k, r)| r.as_ref().err().map(|e| format!("{k}: {e}")))
        .collect();
    let line = if failed.is_empty() {
        format!("{host} drained: {total} item(s) moved; the host stays in maintenance")
    } else {
        format!(
            "{host} not fully drained: {} of {total} failed: {}",
            failed.len(),
            failed.join("; ")
        )
    };
    ctl.events
        .emit(
            if failed.is_empty() {
                Severity::Info
            } else {
                Severity::Error
            },
            "host.drained",
            &subject,
            line.clone(),
        )
        .await;
    let Ok(op) = Arc::try_unwrap(op) else {
        tracing::warn!("drain operation handle still shared; not finishing it");
        return;
    };
    op.finish(if failed.is_empty() {
        Ok(line)
    } else {
        Err(line)
    })
    .await;
}
