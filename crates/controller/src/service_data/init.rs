//! Each VM's init info on the external disk (the spec it is created
//! from), stored at its creation and read by PH3.0 / PH3.5.

use crate::ctl::Ctl;
use duplex_core::model::{Severity, Vm};
use duplex_core::service_data::InitInfo;
use duplex_extdisk::Kind;

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
