//! S5: `GET /v1/vms/{name}/site` (both sides as their hosts see them),
//! `POST /v1/vms/{name}/site/replicate` (`{"to": "<site>"}`) and
//! `POST /v1/vms/{name}/site/switch` (an operation).

use super::{ApiJson, Shared};
use crate::error::ApiError;
use crate::site::{self, SiteView};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use duplex_core::model::{Operation, Vm};
use duplex_core::site_policy::SitePolicy;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replicate {
    /// The site to keep the replica in.
    pub to: String,
}

pub async fn show(ctl: Shared, Path(name): Path<String>) -> Result<Json<SiteView>, ApiError> {
    let vm = ctl
        .vm(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no VM `{name}` (see `duplex vm list`)")))?;
    if vm.replica_site.is_none() {
        return Err(ApiError::conflict(format!(
            "VM `{name}` is not replicated into another site (see `duplex site replicate`)"
        )));
    }
    Ok(Json(site::view(&ctl, &vm).await?))
}

pub async fn replicate(
    ctl: Shared,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Replicate>,
) -> Result<(StatusCode, Json<Vm>), ApiError> {
    let vm = site::replicate(&ctl.0, &name, &req.to).await?;
    Ok((StatusCode::ACCEPTED, Json(vm)))
}

pub async fn switch(
    ctl: Shared,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Operation>), ApiError> {
    let ctl = ctl.0;
    let ends = site::ends(&ctl, &name).await?;
    let op = site::start_switch(&ctl, ends, None).await?;
    Ok((StatusCode::ACCEPTED, Json(op)))
}

/// `PUT /v1/vms/{name}/site/policy`: when it switches on its own (`null`:
/// only on order).
pub async fn set_policy(
    ctl: Shared,
    Path(name): Path<String>,
    ApiJson(policy): ApiJson<Option<SitePolicy>>,
) -> Result<Json<Vm>, ApiError> {
    if let Some(p) = &policy {
        p.validate().map_err(ApiError::bad_request)?;
    }
    let vm = site::site_vm(&ctl, &name).await?;
    if vm.replica_site.is_none() {
        return Err(ApiError::conflict(format!(
            "VM `{name}` is not replicated into another site (see `duplex site replicate`)"
        )));
    }
    crate::epochs::record(&ctl, &name, |r| r.site_policy = policy)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", e))?;
    let vm = ctl
        .vm(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("VM `{name}` is gone")))?;
    Ok(Json(vm))
}
