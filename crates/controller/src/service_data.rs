//! S3's service data, the shell over `duplex_core::service_data`: LAF
//! backups of a pair's ACT (or a lone VM), on demand and on the policy's
//! schedule; the REF data set an operator gives a VM; and, after PH3.0 /
//! PH3.5 re-created a VM, giving its guest the chosen set before it gets a
//! role (the pair repair waits for that). All of it on the external disk,
//! versioned and checksummed: a damaged version is passed over, named.

use crate::ctl::Ctl;
use duplex_core::guest_proto::Op;
use duplex_core::model::{Pair, Severity, Vm};
use duplex_core::role::Role;
use duplex_core::service_data::{
    self as sd, BackupPage, DataKind, InitInfo, RestoreRef, ServiceData, MAX_PAGES,
};
use duplex_extdisk::Kind;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How often VMs waiting for their data are looked at (when some are).
const RESTORE_PERIOD: Duration = Duration::from_millis(500);
/// How often the LAF schedule is looked at.
const SCHEDULE_PERIOD: Duration = Duration::from_secs(30);
/// How long a re-created VM's guest may take to come up for its data;
/// after that it goes on without it (its pair repair waits till then).
const RESTORE_WAIT_MS: u64 = 180_000;

fn disk_kind(k: DataKind) -> Kind {
    match k {
        DataKind::Laf => Kind::Laf,
        DataKind::Ref => Kind::Ref,
    }
}

/// One stored data set, as `duplex vm data` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    pub kind: DataKind,
    pub vm: String,
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
    pub taken_ms: u64,
    pub keys: usize,
    /// Why the stored version cannot be used (it is passed over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

impl Stored {
    fn of(kind: DataKind, version: u64, d: &ServiceData) -> Stored {
        Stored {
            kind,
            vm: d.vm.clone(),
            version,
            pair: d.pair.clone(),
            taken_ms: d.taken_ms,
            keys: d.entries.len(),
            damaged: None,
        }
    }
}

/// The VM whose store holds `vm`'s service data: its pair's ACT, or itself.
async fn holder(ctl: &Ctl, vm: &Vm) -> Result<Vm, String> {
    let Some(pair) = &vm.pair else {
        return Ok(vm.clone());
    };
    let p = ctl
        .pair(pair)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("pair {pair} has no record"))?;
    let act = p.member(p.active).to_string();
    ctl.vm(&act)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the ACT of pair {pair}, {act}, has no record"))
}

/// Takes a LAF backup of `vm`'s service data (from its pair's ACT) and
/// stores it on the external disk under the VM it was read from.
pub async fn backup(ctl: &Ctl, vm: &Vm) -> Result<Stored, String> {
    let src = holder(ctl, vm).await?;
    let name = &src.spec.name;
    let agent = ctl.vm_agent(&src).await?;
    let mut entries = Map::new();
    let mut after = None;
    let mut done = false;
    for _ in 0..MAX_PAGES {
        let answer = agent
            .guest(
                name,
                &Op::Backup {
                    after: after.take(),
                },
            )
            .await
            .map_err(|e| format!("reading {name}'s service data: {e}"))?;
        let page: BackupPage = serde_json::from_value(answer).map_err(|e| {
            format!("{name}'s guest answered a backup page that does not parse: {e}")
        })?;
        entries.extend(page.entries);
        match page.next {
            Some(n) => after = Some(n),
            None => {
                done = true;
                break;
            }
        }
    }
    if !done {
        return Err(format!(
            "{name}'s service data is more than {MAX_PAGES} pages"
        ));
    }
    let data = ServiceData {
        vm: name.clone(),
        pair: src.pair.clone(),
        taken_ms: crate::events::now_ms(),
        entries,
    };
    let bytes = serde_json::to_vec(&data).map_err(|e| e.to_string())?;
    let version = ctl
        .extdisk
        .put(name, Kind::Laf, &bytes)
        .await
        .map_err(|e| e.to_string())?;
    let of = match &src.pair {
        Some(p) => format!("{name}, ACT of pair {p}"),
        None => name.clone(),
    };
    let msg = format!(
        "LAF backup v{version} of {of}: {} keys, {} bytes",
        data.entries.len(),
        bytes.len()
    );
    ctl.events
        .emit(Severity::Info, "vm.backup", &format!("vm/{name}"), msg)
        .await;
    Ok(Stored::of(DataKind::Laf, version, &data))
}

/// Stores `entries` as `vm`'s REF data set (a new version; the API
/// checked it pages).
pub async fn set_ref(ctl: &Ctl, vm: &Vm, entries: Map<String, Value>) -> Result<Stored, String> {
    let name = &vm.spec.name;
    let data = ServiceData {
        vm: name.clone(),
        pair: vm.pair.clone(),
        taken_ms: crate::events::now_ms(),
        entries,
    };
    let bytes = serde_json::to_vec(&data).map_err(|e| e.to_string())?;
    let version = ctl
        .extdisk
        .put(name, Kind::Ref, &bytes)
        .await
        .map_err(|e| e.to_string())?;
    let msg = format!(
        "REF data set v{version} of {name}: {} keys",
        data.entries.len()
    );
    ctl.events
        .emit(Severity::Info, "vm.ref_set", &format!("vm/{name}"), msg)
        .await;
    Ok(Stored::of(DataKind::Ref, version, &data))
}

/// The newest intact init info of `vm`; damaged versions passed over are
/// named in the second part.
pub async fn init_info(
    ctl: &Ctl,
    vm: &str,
) -> Result<(Option<(u64, InitInfo)>, Vec<String>), String> {
    let versions = ctl
        .extdisk
        .versions(vm, Kind::InitInfo)
        .await
        .map_err(|e| e.to_string())?;
    let mut passed_over = Vec::new();
    for version in versions.into_iter().rev() {
        let read = ctl
            .extdisk
            .get(vm, Kind::InitInfo, version)
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| {
                serde_json::from_slice::<InitInfo>(&b)
                    .map_err(|e| format!("init info v{version} of {vm} does not parse: {e}"))
            });
        match read {
            Ok(info) => return Ok((Some((version, info)), passed_over)),
            Err(e) => passed_over.push(e),
        }
    }
    Ok((None, passed_over))
}

/// Stores `vm`'s init info (its spec) on the external disk unless the
/// newest intact version already holds it; the version holding it.
pub async fn save_init_info(ctl: &Ctl, vm: &Vm) -> Result<u64, String> {
    let name = &vm.spec.name;
    if let (Some((v, info)), _) = init_info(ctl, name).await? {
        if info.spec == vm.spec {
            return Ok(v);
        }
    }
    let info = InitInfo {
        spec: vm.spec.clone(),
        stored_ms: crate::events::now_ms(),
    };
    let bytes = serde_json::to_vec(&info).map_err(|e| e.to_string())?;
    ctl.extdisk
        .put(name, Kind::InitInfo, &bytes)
        .await
        .map_err(|e| e.to_string())
}

/// [`save_init_info`] at a VM's creation: a failure is an event, not a
/// failed creation (the controller's store holds the spec too).
pub async fn note_init_info(ctl: &Ctl, vm: &Vm) {
    if let Err(e) = save_init_info(ctl, vm).await {
        let name = &vm.spec.name;
        let msg = format!("{name}'s init info is not on the external disk: {e}");
        ctl.events
            .emit(
                Severity::Warning,
                "vm.init_info_failed",
                &format!("vm/{name}"),
                msg,
            )
            .await;
    }
}

/// One version, read and checked.
async fn read(ctl: &Ctl, r: &RestoreRef) -> Result<ServiceData, String> {
    let bytes = ctl
        .extdisk
        .get(&r.vm, disk_kind(r.kind), r.version)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{r} does not parse: {e}"))
}

/// Every stored version of `name`'s LAF backups and REF sets, newest
/// first; damaged ones say why.
pub async fn catalog(ctl: &Ctl, name: &str) -> Result<Vec<Stored>, String> {
    let mut out = Vec::new();
    for kind in [DataKind::Laf, DataKind::Ref] {
        let versions = ctl
            .extdisk
            .versions(name, disk_kind(kind))
            .await
            .map_err(|e| e.to_string())?;
        for version in versions.into_iter().rev() {
            let r = RestoreRef {
                kind,
                vm: name.to_string(),
                version,
                noted_ms: 0,
            };
            out.push(match read(ctl, &r).await {
                Ok(d) => Stored::of(kind, version, &d),
                Err(e) => Stored {
                    kind,
                    vm: name.to_string(),
                    version,
                    pair: None,
                    taken_ms: 0,
                    keys: 0,
                    damaged: Some(e),
                },
            });
        }
    }
    Ok(out)
}

/// The set a re-created `vm` is to start from: the newest intact version
/// of `kind` stored for it or for its pair's other member (LAF: whichever
/// is newer; REF: its own first). Damaged versions passed over are named
/// in the second part.
pub async fn choose(
    ctl: &Ctl,
    vm: &Vm,
    pair: Option<&Pair>,
    kind: DataKind,
) -> Result<(Option<(RestoreRef, u64)>, Vec<String>), String> {
    let mut owners = vec![vm.spec.name.clone()];
    if let Some(p) = pair {
        owners.extend(p.members.iter().filter(|m| **m != vm.spec.name).cloned());
    }
    let mut best: Option<(RestoreRef, u64)> = None;
    let mut passed_over = Vec::new();
    for owner in owners {
        let versions = ctl
            .extdisk
            .versions(&owner, disk_kind(kind))
            .await
            .map_err(|e| e.to_string())?;
        for version in versions.into_iter().rev() {
            let r = RestoreRef {
                kind,
                vm: owner.clone(),
                version,
                noted_ms: crate::events::now_ms(),
            };
            match read(ctl, &r).await {
                Ok(d) => {
                    let newer = match kind {
                        DataKind::Laf => best.as_ref().is_none_or(|(_, t)| d.taken_ms > *t),
                        DataKind::Ref => best.is_none(),
                    };
                    if newer {
                        best = Some((r, d.taken_ms));
                    }
                    break;
                }
                Err(e) => passed_over.push(e),
            }
        }
    }
    Ok((best, passed_over))
}

/// Notes on `vm`'s record the set its re-created guest is to be given.
pub async fn note_restore(ctl: &Ctl, vm: &str, r: Option<RestoreRef>) -> Result<(), String> {
    ctl.repo
        .update::<Vm, std::convert::Infallible, _>(&format!("{}{vm}", crate::repo::VMS), |v| {
            v.restore = r.clone();
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
        .ok();
    ctl.restore_due.store(true, Ordering::SeqCst);
    Ok(())
}

/// Pages the set into the guest, which must have no role yet.
async fn give(ctl: &Ctl, vm: &Vm, r: &RestoreRef) -> Result<usize, String> {
    let data = read(ctl, r).await?;
    let agent = ctl.vm_agent(vm).await?;
    let pages = sd::pages(&data.entries).map_err(|e| format!("{r}: {e}"))?;
    for (i, entries) in pages.into_iter().enumerate() {
        let op = Op::Restore {
            entries,
            first: i == 0,
            source: r.to_string(),
        };
        agent
            .guest(&vm.spec.name, &op)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(data.entries.len())
}

/// Gives every VM waiting for its data, whose guest is up with no role,
/// its set; true if some VM still waits.
async fn restore_pass(ctl: &Ctl) -> Result<bool, String> {
    let vms = ctl.vms().await.map_err(|e| e.to_string())?;
    let mut waiting = false;
    for vm in vms.iter().filter(|v| v.restore.is_some()) {
        let Some(r) = vm.restore.clone() else {
            continue;
        };
        let name = &vm.spec.name;
        let role = ctl.lock_observed().member_view(&vm.host, name).role;
        let overdue = crate::events::now_ms().saturating_sub(r.noted_ms) > RESTORE_WAIT_MS;
        let (severity, kind, msg) = match role {
            Some(Role::None) => match give(ctl, vm, &r).await {
                Ok(keys) => (
                    Severity::Info,
                    "vm.restored",
                    format!("{name} starts from {r}: {keys} keys given to its guest"),
                ),
                Err(e) if !overdue => {
                    tracing::debug!(vm = %name, "restoring {r}: {e}; again");
                    waiting = true;
                    continue;
                }
                Err(e) => (
                    Severity::Error,
                    "vm.restore_failed",
                    format!("{name} could not be given {r}: {e}; it goes on without it"),
                ),
            },
            // The deleted guest's last report may still speak for it;
            // the re-created one has no role until it took its data.
            _ if !overdue => {
                waiting = true;
                continue;
            }
            Some(other) => (
                Severity::Error,
                "vm.restore_failed",
                format!("{name} is {other:?}: {r} is not given (its pair's state is newer)"),
            ),
            None => (
                Severity::Error,
                "vm.restore_failed",
                format!("{name}'s guest did not come up for {r}; it goes on without it"),
            ),
        };
        ctl.events
            .emit(severity, kind, &format!("vm/{name}"), msg)
            .await;
        note_restore(ctl, name, None).await?;
    }
    Ok(waiting)
}

/// The newest LAF backup of `vm`'s service data: of the VM, or of either
/// member of its pair (whichever was ACT then). When it was stored.
async fn last_backup_ms(ctl: &Ctl, vm: &Vm, pair: Option<&Pair>) -> Result<Option<u64>, String> {
    let names = match pair {
        Some(p) => p.members.to_vec(),
        None => vec![vm.spec.name.clone()],
    };
    let mut last = None;
    for n in names {
        let at = ctl
            .extdisk
            .newest_at(&n, Kind::Laf)
            .await
            .map_err(|e| e.to_string())?;
        last = last.max(at);
    }
    Ok(last)
}

/// Takes the LAF backups the policies say are due: one per pair (of its
/// ACT) and per lone VM.
async fn schedule_pass(ctl: &Ctl) -> Result<(), String> {
    let vms = ctl.vms().await.map_err(|e| e.to_string())?;
    let pairs = ctl.pairs().await.map_err(|e| e.to_string())?;
    let now = crate::events::now_ms();
    for vm in &vms {
        // VMs made before init info was kept get it here.
        let kept = ctl.extdisk.newest_at(&vm.spec.name, Kind::InitInfo).await;
        if kept.is_ok_and(|at| at.is_none()) {
            note_init_info(ctl, vm).await;
        }
        let pair = vm
            .pair
            .as_ref()
            .and_then(|p| pairs.iter().find(|x| &x.name == p));
        // A pair is backed up once, through its first member's turn.
        if pair.is_some_and(|p| p.members[0] != vm.spec.name) {
            continue;
        }
        let (policy, _) = crate::restart_policy::effective(ctl, vm)
            .await
            .map_err(|e| e.to_string())?;
        let last = last_backup_ms(ctl, vm, pair).await?;
        if !sd::laf_due(last, now, policy.laf_every_ms) {
            continue;
        }
        if let Err(e) = backup(ctl, vm).await {
            let msg = format!("scheduled LAF backup of {}: {e}", vm.spec.name);
            let subject = format!("vm/{}", vm.spec.name);
            ctl.events
                .emit(Severity::Warning, "vm.backup_failed", &subject, msg)
                .await;
        }
    }
    Ok(())
}

/// The leader's loop: restores as soon as re-created guests are up, LAF
/// backups when due.
pub async fn run(ctl: Arc<Ctl>) {
    let mut led = false;
    let mut next_schedule = tokio::time::Instant::now() + SCHEDULE_PERIOD;
    loop {
        tokio::time::sleep(RESTORE_PERIOD).await;
        let leads = ctl.is_leader();
        if leads && !led {
            // Another controller may have noted a restore before it went.
            ctl.restore_due.store(true, Ordering::SeqCst);
        }
        led = leads;
        if !leads {
            continue;
        }
        if ctl.restore_due.swap(false, Ordering::SeqCst) {
            match restore_pass(&ctl).await {
                Ok(waiting) => {
                    if waiting {
                        ctl.restore_due.store(true, Ordering::SeqCst);
                    }
                }
                Err(e) => {
                    tracing::warn!("restore pass: {e}");
                    ctl.restore_due.store(true, Ordering::SeqCst);
                }
            }
        }
        if tokio::time::Instant::now() >= next_schedule {
            next_schedule = tokio::time::Instant::now() + SCHEDULE_PERIOD;
            if let Err(e) = schedule_pass(&ctl).await {
                tracing::warn!("LAF schedule pass: {e}");
            }
        }
    }
}
