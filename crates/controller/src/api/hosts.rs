//! `/v1/hosts`: what registered, its state, its VMs.

use super::{ApiJson, ApiResult, Shared};
use crate::ctl::HostView;
use crate::error::ApiError;
use crate::repo::HOSTS;
use axum::extract::Path;
use axum::Json;
use duplex_core::model::{Host, HostState, Severity};
use serde::Deserialize;

pub async fn list(ctl: Shared) -> ApiResult<Vec<HostView>> {
    let hosts = ctl.hosts().await?;
    Ok(Json(hosts.into_iter().map(|h| ctl.host_view(h)).collect()))
}

pub async fn show(ctl: Shared, Path(name): Path<String>) -> ApiResult<HostView> {
    match ctl.host(&name).await? {
        Some(h) => Ok(Json(ctl.host_view(h))),
        None => Err(ApiError::not_found(format!(
            "no host `{name}` is registered (see `duplex host list`)"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetState {
    pub state: HostState,
}

/// Operator's state change: ready, maintenance or spare (failed is the
/// controller's verdict, not an order).
pub async fn set_state(
    ctl: Shared,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SetState>,
) -> ApiResult<HostView> {
    if req.state == HostState::Failed {
        return Err(ApiError::bad_request(
            "field `state`: `failed` is set by the controller when heartbeats stop; choose ready, maintenance or spare",
        ));
    }
    let key = format!("{HOSTS}{name}");
    let r = ctl
        .repo
        .update::<Host, String, _>(&key, |h| {
            if h.state == HostState::Failed {
                h.before_failure = Some(req.state);
            } else {
                h.state = req.state;
            }
            Ok(())
        })
        .await
        .map_err(|e| match e {
            crate::repo::RepoError::Missing(_) => {
                ApiError::not_found(format!("no host `{name}` is registered"))
            }
            e => e.into(),
        })?;
    let host = r.map_err(ApiError::conflict)?;
    ctl.events
        .emit(
            Severity::Info,
            "host.state",
            &format!("host/{name}"),
            format!("{name} set to {} by the operator", req.state.as_str()),
        )
        .await;
    Ok(Json(ctl.host_view(host)))
}
