//! The agent API of S2 (epoch replication): a replicated VM's epochs and
//! output classes, the replicas this host keeps, the host's ruleset, and
//! the route a primary's agent sends checkpoints to.

use crate::api::ApiJson;
use crate::fence::FenceToken;
use crate::host::Host;
use crate::replica::{self, MAX_CHECKPOINT_BYTES};
use crate::{protect, AgentError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use duplex_core::agent_api::{
    ClassReport, EpochAck, ProtectRequest, ProtectionInfo, ReplicaInfo, ReplicaRequest, VmInfo,
};
use duplex_core::classify::Ruleset;
use std::sync::Arc;

type Shared = State<Arc<Host>>;
type ApiResult<T> = Result<Json<T>, AgentError>;

/// The controller's orders.
pub fn orders() -> Router<Arc<Host>> {
    Router::new()
        .route("/v1/vms/{name}/protect", get(protection).post(protect_vm))
        .route("/v1/vms/{name}/unprotect", post(unprotect))
        .route("/v1/vms/{name}/classes", get(classes))
        .route("/v1/replicas", get(list).post(create))
        .route("/v1/replicas/{name}", get(show).delete(delete))
        .route("/v1/replicas/{name}/activate", post(activate))
        .route("/v1/rules", get(rules).put(set_rules))
}

/// A peer agent's checkpoints.
pub fn peers() -> Router<Arc<Host>> {
    Router::new().route(
        "/v1/replicas/{name}/epochs",
        put(epoch).layer(DefaultBodyLimit::max(MAX_CHECKPOINT_BYTES)),
    )
}

async fn protect_vm(
    State(h): Shared,
    Path(name): Path<String>,
    token: Option<Extension<FenceToken>>,
    ApiJson(req): ApiJson<ProtectRequest>,
) -> ApiResult<ProtectionInfo> {
    let fence = token.map(|Extension(FenceToken(t))| t);
    Ok(Json(protect::start(&h, &name, req, fence).await?))
}

async fn protection(State(h): Shared, Path(name): Path<String>) -> ApiResult<ProtectionInfo> {
    let vm = h.get(&name)?;
    protect::info(&vm)
        .map(Json)
        .ok_or_else(|| AgentError::NotFound(format!("VM `{name}` has no epochs running")))
}

async fn unprotect(State(h): Shared, Path(name): Path<String>) -> Result<StatusCode, AgentError> {
    let vm = h.get(&name)?;
    protect::unprotect(&vm).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn classes(State(h): Shared, Path(name): Path<String>) -> ApiResult<ClassReport> {
    let vm = h.get(&name)?;
    let buf = vm.txbuf().ok_or_else(|| {
        AgentError::Conflict(format!(
            "VM `{name}` is not replicated: its output is not classified"
        ))
    })?;
    let report = buf
        .lock()
        .map(|b| b.report())
        .map_err(|_| AgentError::Unavailable("transmit buffer poisoned".into()))?;
    Ok(Json(report))
}

async fn list(State(h): Shared) -> Json<Vec<ReplicaInfo>> {
    Json(h.replicas.list())
}

async fn create(
    State(h): Shared,
    ApiJson(req): ApiJson<ReplicaRequest>,
) -> Result<(StatusCode, Json<ReplicaInfo>), AgentError> {
    Ok((StatusCode::CREATED, Json(replica::create(&h, req)?)))
}

async fn show(State(h): Shared, Path(name): Path<String>) -> ApiResult<ReplicaInfo> {
    Ok(Json(h.replicas.info(&name)?))
}

async fn delete(State(h): Shared, Path(name): Path<String>) -> Result<StatusCode, AgentError> {
    h.replicas.delete(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn activate(State(h): Shared, Path(name): Path<String>) -> ApiResult<VmInfo> {
    crate::api_site::whole(async move { replica::activate(&h, &name).await }).await
}

async fn epoch(State(h): Shared, Path(name): Path<String>, body: Bytes) -> ApiResult<EpochAck> {
    Ok(Json(replica::apply(&h, &name, body).await?))
}

async fn rules(State(h): Shared) -> ApiResult<Ruleset> {
    h.rules
        .lock()
        .map(|r| Json(r.clone()))
        .map_err(|_| AgentError::Unavailable("ruleset poisoned".into()))
}

/// Applies a newer ruleset to this host and every replicated VM's buffer
/// (the next frame uses it); an older or equal version changes nothing.
async fn set_rules(State(h): Shared, ApiJson(set): ApiJson<Ruleset>) -> ApiResult<Ruleset> {
    set.validate()
        .map_err(|e| AgentError::BadRequest(format!("ruleset: {e}")))?;
    {
        let mut current = h
            .rules
            .lock()
            .map_err(|_| AgentError::Unavailable("ruleset poisoned".into()))?;
        if set.version > current.version {
            *current = set.clone();
        }
    }
    for vm in h.all() {
        if let Some(buf) = vm.txbuf() {
            if let Ok(mut b) = buf.lock() {
                b.set_rules(set.clone());
            }
        }
    }
    rules(State(h)).await
}
