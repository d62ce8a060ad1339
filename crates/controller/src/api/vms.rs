//! `/v1/vms`: lone VMs (pair members show here too).

use super::{ApiJson, ApiResult, Shared};
use crate::ctl::{Ctl, VmView};
use crate::error::ApiError;
use crate::events::now_ms;
use crate::listing::Listing;
use crate::repo::VMS;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use duplex_core::escalation::record::{History, Record};
use duplex_core::model::{Desired, Severity, Vm};
use duplex_core::vm_spec::VmSpec;
use duplex_store::Expect;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    pub spec: VmSpec,
    /// Pin to this host instead of letting the controller place it.
    #[serde(default)]
    pub host: Option<String>,
}

pub async fn list(ctl: Shared) -> ApiResult<Vec<VmView>> {
    let hosts = ctl.hosts().await?;
    let vms = ctl.vms().await?;
    let listing = Listing::new(&vms, &hosts);
    Ok(Json(
        vms.iter()
            .map(|v| ctl.vm_view(v.clone(), &listing, false))
            .collect(),
    ))
}

pub async fn show(ctl: Shared, Path(name): Path<String>) -> ApiResult<VmView> {
    let hosts = ctl.hosts().await?;
    match ctl.vm(&name).await? {
        Some(v) => Ok(Json(ctl.vm_view(v, &Listing::new(&[], &hosts), true))),
        None => Err(ApiError::not_found(format!(
            "no VM `{name}` (see `duplex vm list`)"
        ))),
    }
}

/// `GET /v1/vms/{name}/history`: the VM's restart counters and the
/// failures acted on, from the external disk (kept after the VM is gone).
pub async fn history(ctl: Shared, Path(name): Path<String>) -> ApiResult<History> {
    let record = crate::restart_unit::load(&ctl, &name)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "external_disk", e))?;
    if record == Record::default() && ctl.vm(&name).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no VM `{name}` and no restart record for it (see `duplex vm list`)"
        )));
    }
    Ok(Json(record.history(&name)))
}

/// Checks a spec for the cluster: valid; name, address and MAC not taken.
/// Call it holding [`Ctl::creating`] until the VM is written.
pub async fn check_new(ctl: &Ctl, spec: &VmSpec, field: &str) -> Result<(), ApiError> {
    spec.validate()
        .map_err(|e| ApiError::bad_request(format!("{field}{e}")))?;
    let vms = ctl.vms().await?;
    if vms.iter().any(|v| v.spec.name == spec.name) {
        return Err(ApiError::conflict(format!(
            "{field}field `name`: a VM `{}` already exists",
            spec.name
        )));
    }
    if let Some(o) = vms.iter().find(|v| v.spec.ip == spec.ip) {
        return Err(ApiError::conflict(format!(
            "{field}field `ip`: {} is already used by VM `{}`",
            spec.ip, o.spec.name
        )));
    }
    if let Some(p) = ctl.pairs().await?.iter().find(|p| p.vip == spec.ip) {
        return Err(ApiError::conflict(format!(
            "{field}field `ip`: {} is pair `{}`'s service address",
            spec.ip, p.name
        )));
    }
    if let Some(o) = vms.iter().find(|v| v.spec.mac() == spec.mac()) {
        let how = if spec.mac.is_none() {
            " (derived from the name; give a `mac`)"
        } else {
            ""
        };
        return Err(ApiError::conflict(format!(
            "{field}field `mac`: {} is already used by VM `{}`{how}",
            spec.mac(),
            o.spec.name
        )));
    }
    Ok(())
}

pub async fn create(
    ctl: Shared,
    ApiJson(req): ApiJson<CreateVm>,
) -> Result<(StatusCode, Json<VmView>), ApiError> {
    let _one_at_a_time = ctl.creating.lock().await;
    check_new(&ctl, &req.spec, "spec: ").await?;
    let host = crate::placement::choose(&ctl, &req.spec, req.host.as_deref(), None).await?;
    let vm = Vm {
        v: duplex_core::model::SCHEMA_VERSION,
        spec: req.spec,
        host: host.clone(),
        desired: Desired::Running,
        pair: None,
        restore: None,
        backup: None,
        replica_site: None,
        site_policy: None,
        created_ms: now_ms(),
    };
    let name = vm.spec.name.clone();
    ctl.repo
        .put(&format!("{VMS}{name}"), &vm, Expect::Absent)
        .await
        .map_err(|e| match e {
            crate::repo::RepoError::Store(duplex_store::StoreError::Conflict { .. }) => {
                ApiError::conflict(format!("field `name`: a VM `{name}` already exists"))
            }
            e => e.into(),
        })?;
    crate::service_data::note_init_info(&ctl, &vm).await;
    ctl.events
        .emit(
            Severity::Info,
            "vm.created",
            &format!("vm/{name}"),
            format!("{name} placed on {host}"),
        )
        .await;
    ctl.kick.notify_one();
    let hosts = ctl.hosts().await?;
    Ok((
        StatusCode::CREATED,
        Json(ctl.vm_view(vm, &Listing::new(&[], &hosts), false)),
    ))
}

pub async fn delete(
    ctl: Shared,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<VmView>), ApiError> {
    let key = format!("{VMS}{name}");
    let r = ctl
        .repo
        .update::<Vm, ApiError, _>(&key, |v| {
            if let Some(p) = &v.pair {
                return Err(ApiError::conflict(format!(
                    "VM `{name}` is a member of pair `{p}`: delete the pair (`duplex pair delete {p}`)"
                )));
            }
            v.desired = Desired::Deleted;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            crate::repo::RepoError::Missing(_) => ApiError::not_found(format!("no VM `{name}`")),
            e => e.into(),
        })?;
    let vm = r?;
    ctl.events
        .emit(
            Severity::Info,
            "vm.deleting",
            &format!("vm/{name}"),
            format!("deleting {name} from {}", vm.host),
        )
        .await;
    ctl.kick.notify_one();
    let hosts = ctl.hosts().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ctl.vm_view(vm, &Listing::new(&[], &hosts), false)),
    ))
}
