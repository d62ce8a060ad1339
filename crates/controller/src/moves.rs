//! Moving one VM to another host by live migration, through its agent
//! (with our fencing token), and recording where it went.

use crate::ctl::{Ctl, VmClaim};
use crate::ops::{self, OpHandle};
use crate::repo::{RepoError, VMS};
use duplex_core::agent_api::{MigrateRequest, MigrationStats, MigrationTuning};
use duplex_core::model::{OpKind, Operation, Severity, Vm};
use std::sync::Arc;
use std::time::Duration;

/// Why a migration could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("VM `{0}` has an operation in progress: wait for it")]
    Busy(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Starts live-migrating `vm` from `from` to `to` as its own operation;
/// the VM is claimed (the reconciler leaves it alone) until it ends.
pub async fn launch(
    ctl: &Arc<Ctl>,
    vm: &str,
    (from, to): (&str, &str),
    tuning: MigrationTuning,
) -> Result<Operation, LaunchError> {
    let claim = ctl
        .claim_vms_owned(&[vm.to_string()])
        .map_err(|_| LaunchError::Busy(vm.to_string()))?;
    let id = ops::new_id(ctl);
    let guard = ctl.office.reserve(&id);
    let (op, handle) = ops::record(ctl, id, OpKind::VmMigrate, &format!("vm/{vm}")).await?;
    let ends = (from.to_string(), to.to_string());
    let f = flow(ctl.clone(), claim, vm.to_string(), ends, tuning, handle);
    ctl.office.spawn(guard, f);
    Ok(op)
}

async fn flow(
    ctl: Arc<Ctl>,
    claim: VmClaim<Arc<Ctl>>,
    vm: String,
    (from, to): (String, String),
    tuning: MigrationTuning,
    op: OpHandle,
) {
    op.progress(format!("live-migrating {vm} from {from} to {to}"))
        .await;
    let subject = format!("vm/{vm}");
    let result = match migrate_vm(&ctl, &vm, &to, &tuning).await {
        Ok(stats) => {
            let msg = summary(&vm, &from, &to, &stats);
            ctl.events
                .emit(Severity::Info, "vm.migrated", &subject, msg.clone())
                .await;
            Ok(msg)
        }
        Err(e) => {
            let msg = format!("migration failed: {e}");
            ctl.events
                .emit(
                    Severity::Error,
                    "vm.migration_failed",
                    &subject,
                    msg.clone(),
                )
                .await;
            Err(msg)
        }
    };
    drop(claim);
    op.finish(result).await;
}

/// Longest a single live migration may take before it is given up.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);

/// Live-migrates `vm` to host `to`; on success records the new host and
/// returns QEMU's statistics. On failure the VM keeps running where it was.
pub async fn migrate_vm(
    ctl: &Ctl,
    vm: &str,
    to: &str,
    tuning: &MigrationTuning,
) -> Result<Option<MigrationStats>, String> {
    let rec = ctl
        .vm(vm)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("VM {vm} has no record"))?;
    let src = ctl
        .host(&rec.host)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("host {} of {vm} has no record", rec.host))?;
    let dst = ctl
        .host(to)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("destination host {to} has no record"))?;
    let req = MigrateRequest {
        to: dst.url.clone(),
        tuning: tuning.clone(),
    };
    let agent = ctl.agent(&src.url);
    let _counted = ctl.migrations.begin(&rec.host, to);
    let t0 = std::time::Instant::now();
    let moved = duplex_agent_client::migrate(&*agent, vm, &req, MIGRATION_TIMEOUT, |_| {}).await;
    let m = &ctl.metrics;
    match moved.as_ref().map(|i| i.stats.as_ref()) {
        Ok(Some(s)) => {
            crate::metrics::observe(&m.migrations, "succeeded", s.total_ms as f64 / 1e3);
            m.migration_downtime.observe(s.downtime_ms as f64 / 1e3);
        }
        Ok(None) => crate::metrics::observe(&m.migrations, "succeeded", t0.elapsed().as_secs_f64()),
        Err(_) => crate::metrics::observe(&m.migrations, "failed", t0.elapsed().as_secs_f64()),
    }
    let info = moved.map_err(|e| {
        format!(
            "{vm} {} → {to}: {e} (it keeps running on {})",
            rec.host, rec.host
        )
    })?;
    ctl.note_moved(vm);
    // The view follows at once, with what the destination says of the VM
    // (running, its guest answering there); else the next reports tell.
    match ctl.agent(&dst.url).show(vm).await {
        Ok(there) => ctl.lock_observed().moved(&rec.host, to, there),
        Err(e) => tracing::debug!(%vm, "asking {to} about the VM it received: {e}"),
    }
    let to2 = to.to_string();
    ctl.repo
        .update::<Vm, std::convert::Infallible, _>(&format!("{VMS}{vm}"), |v| {
            v.host = to2.clone();
            Ok(())
        })
        .await
        .map_err(|e| format!("{vm} moved to {to} but the record could not be updated: {e}"))?
        .ok();
    Ok(info.stats)
}

/// One line for events: "moved h1 → h2: total 700 ms, downtime 2 ms, 96.1 MiB"
/// (and ", vCPUs throttled up to 40 %" when auto-converge had to act).
pub fn summary(vm: &str, from: &str, to: &str, stats: &Option<MigrationStats>) -> String {
    match stats {
        Some(s) => format!(
            "{vm} moved {from} → {to}: total {} ms, downtime {} ms, {:.1} MiB{}",
            s.total_ms,
            s.downtime_ms,
            s.transferred_bytes as f64 / 1048576.0,
            if s.max_cpu_throttle_pct > 0 {
                format!(", vCPUs throttled up to {} %", s.max_cpu_throttle_pct)
            } else {
                String::new()
            }
        ),
        None => format!("{vm} moved {from} → {to}"),
    }
}
