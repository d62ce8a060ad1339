//! The agent API of S5 (a VM replicated into another site): the active
//! side's handoff, resume and standby, the paused side's buffer, and what
//! either side holds (see [`crate::site`]).

use crate::host::Host;
use crate::{protect, replica, site, AgentError};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use duplex_core::agent_api::ReplicaInfo;
use duplex_core::site::{BufferRequest, HandoffInfo, SiteBufferStatus, SiteSide, MAX_ADDRESSES};
use std::sync::Arc;

type Shared = State<Arc<Host>>;
type ApiResult<T> = Result<Json<T>, AgentError>;

/// The controller's orders.
pub fn orders() -> Router<Arc<Host>> {
    Router::new()
        .route("/v1/vms/{name}/site", get(side))
        .route("/v1/vms/{name}/site/handoff", post(handoff))
        .route("/v1/vms/{name}/site/resume", post(resume))
        .route("/v1/vms/{name}/site/standby", post(standby))
        .route("/v1/replicas/{name}/buffer", get(buffered).post(buffer))
}

/// Carries an order out to its end even if whoever gave it goes away
/// mid-way (a controller that dies): a handoff dropped half-way would
/// leave the element buffering for a VM that runs.
pub async fn whole<T, F>(order: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, AgentError>> + Send + 'static,
{
    match tokio::spawn(order).await {
        Ok(r) => r.map(Json),
        Err(e) => Err(AgentError::Unavailable(format!(
            "the order's task ended: {e}"
        ))),
    }
}

async fn handoff(State(h): Shared, Path(name): Path<String>) -> ApiResult<HandoffInfo> {
    whole(async move { site::handoff(&h, &name).await }).await
}

async fn resume(State(h): Shared, Path(name): Path<String>) -> ApiResult<SiteBufferStatus> {
    whole(async move { site::resume(&h, &name).await }).await
}

async fn standby(State(h): Shared, Path(name): Path<String>) -> ApiResult<ReplicaInfo> {
    whole(async move { site::standby(&h, &name).await }).await
}

async fn buffer(
    State(h): Shared,
    Path(name): Path<String>,
    Json(req): Json<BufferRequest>,
) -> ApiResult<SiteBufferStatus> {
    if req.addresses.len() > MAX_ADDRESSES {
        return Err(AgentError::BadRequest(format!(
            "field `addresses`: {} given, at most {MAX_ADDRESSES}",
            req.addresses.len()
        )));
    }
    Ok(Json(replica::buffer(&h, &name, &req.addresses).await?))
}

async fn buffered(State(h): Shared, Path(name): Path<String>) -> ApiResult<SiteSide> {
    let buffer = h.replicas.buffer_status(&name)?;
    let applied = h.replicas.info(&name)?.applied;
    Ok(Json(SiteSide {
        vm: name,
        active: false,
        buffer,
        lag_ms: None,
        applied,
        handed_off: None,
    }))
}

/// Either side: the VM running here, else its replica.
async fn side(State(h): Shared, Path(name): Path<String>) -> ApiResult<SiteSide> {
    let Ok(vm) = h.get(&name) else {
        return buffered(State(h), Path(name)).await;
    };
    Ok(Json(SiteSide {
        vm: name,
        active: true,
        buffer: site::buffer_status(&vm).await,
        lag_ms: protect::summary(&vm).and_then(|p| p.lag_ms),
        applied: None,
        handed_off: protect::handed_off(&vm),
    }))
}
