//! `/v1/vms/{name}/backup`, `/v1/vms/{name}/data`, `/v1/vms/{name}/ref`:
//! S3's service data on the external disk — take a LAF backup now, list
//! what is stored, give a VM its REF data set.

use super::{ApiResult, Shared};
use crate::ctl::Ctl;
use crate::error::ApiError;
use crate::service_data::{self, Stored};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use duplex_core::model::Vm;
use duplex_core::service_data::RestoreRef;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest REF data set one request may carry.
pub const REF_BODY_LIMIT: usize = 16 * 1024 * 1024;

async fn vm_named(ctl: &Ctl, name: &str) -> Result<Vm, ApiError> {
    ctl.vm(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no VM `{name}` (see `duplex vm list`)")))
}

fn unavailable(e: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service_data", e)
}

/// `POST /v1/vms/{name}/backup`: a LAF backup of the VM's service data
/// (of its pair's ACT), now.
pub async fn backup(ctl: Shared, Path(name): Path<String>) -> ApiResult<Stored> {
    let vm = vm_named(&ctl, &name).await?;
    service_data::backup(&ctl, &vm)
        .await
        .map(Json)
        .map_err(unavailable)
}

#[derive(Serialize)]
pub struct DataAnswer {
    vm: String,
    /// The set its re-created guest waits for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    restore: Option<RestoreRef>,
    /// Newest first, LAF then REF.
    stored: Vec<Stored>,
    /// Its newest intact init info on the external disk (version, when
    /// stored, image), and the damaged versions passed over.
    #[serde(skip_serializing_if = "Option::is_none")]
    init_info: Option<InitSeen>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    init_damaged: Vec<String>,
}

#[derive(Serialize)]
pub struct InitSeen {
    version: u64,
    stored_ms: u64,
    image: String,
}

/// `GET /v1/vms/{name}/data`: the LAF backups and REF sets stored for the
/// VM (kept after it is gone).
pub async fn list(ctl: Shared, Path(name): Path<String>) -> ApiResult<DataAnswer> {
    let vm = ctl.vm(&name).await?;
    let stored = service_data::catalog(&ctl, &name)
        .await
        .map_err(unavailable)?;
    let (init, init_damaged) = service_data::init_info(&ctl, &name)
        .await
        .map_err(unavailable)?;
    let init_info = init.map(|(version, i)| InitSeen {
        version,
        stored_ms: i.stored_ms,
        image: i.spec.image,
    });
    if vm.is_none() && stored.is_empty() && init_info.is_none() {
        return Err(ApiError::not_found(format!(
            "no VM `{name}` and no service data stored for it (see `duplex vm list`)"
        )));
    }
    Ok(Json(DataAnswer {
        vm: name,
        restore: vm.and_then(|v| v.restore),
        stored,
        init_info,
        init_damaged,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefBody {
    entries: Map<String, Value>,
}

/// `PUT /v1/vms/{name}/ref`: the VM's REF data set (a new version).
pub async fn set_ref(
    ctl: Shared,
    Path(name): Path<String>,
    Json(body): Json<RefBody>,
) -> ApiResult<Stored> {
    let vm = vm_named(&ctl, &name).await?;
    // It goes to a guest page by page later: refused now if it could not.
    duplex_core::service_data::pages(&body.entries)
        .map_err(|e| ApiError::bad_request(format!("REF data set: {e}")))?;
    service_data::set_ref(&ctl, &vm, body.entries)
        .await
        .map(Json)
        .map_err(unavailable)
}
