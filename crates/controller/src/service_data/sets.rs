//! LAF backups and REF sets on the external disk: taking, storing,
//! listing, and the LAF schedule.

use super::init::note_init_info;
use crate::ctl::Ctl;
use duplex_core::guest_proto::Op;
use duplex_core::model::{Pair, Severity, Vm};
use duplex_core::service_data::{
    self as sd, BackupPage, DataKind, RestoreRef, ServiceData, MAX_PAGES,
};
use duplex_extdisk::Kind;
use serde::Serialize;
use serde_json::{Map, Value};

pub(super) fn disk_kind(k: DataKind) -> Kind {
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

/// One version, read and checked.
pub(super) async fn read(ctl: &Ctl, r: &RestoreRef) -> Result<ServiceData, String> {
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
                not_boot: None,
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
pub(super) async fn schedule_pass(ctl: &Ctl) -> Result<(), String> {
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
