//! HTTP/JSON API of the agent, under `/v1`. Every error is a JSON
//! `{"error":{"code","message"}}` with a status that fits it.

use crate::host::Host;
use crate::{migrate, AgentError};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use duplex_core::agent_api::{
    HostInfo, IncomingReady, IncomingRequest, MigrateRequest, MigrationInfo, TrafficReport, VmInfo,
    VmSummary, WaitFor,
};
use duplex_core::guest_proto::Op;
use duplex_core::vm_spec::VmSpec;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;

type Shared = State<Arc<Host>>;
type ApiResult<T> = Result<Json<T>, AgentError>;

/// `Json` whose rejections are our JSON errors naming the problem.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AgentError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(AgentError::BadRequest(rej.body_text())),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateQuery {
    #[serde(default)]
    wait: WaitFor,
}

pub fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/v1/host", get(host_info))
        .route("/v1/vms", get(list).post(create))
        .route("/v1/vms/{name}", get(show).delete(delete))
        .route("/v1/vms/{name}/pause", post(pause))
        .route("/v1/vms/{name}/resume", post(resume))
        .route("/v1/vms/{name}/traffic", get(traffic))
        .route("/v1/vms/{name}/guest", post(guest))
        .route("/v1/vms/{name}/migrate", post(migrate_vm))
        .route("/v1/migrations/{name}", get(migration))
        .route("/v1/incoming", post(incoming))
        .route("/v1/incoming/{name}/complete", post(complete))
        .route("/v1/incoming/{name}/abort", post(abort))
        .fallback(|req: Request| async move {
            AgentError::NotFound(format!(
                "no such endpoint: {} {}",
                req.method(),
                req.uri().path()
            ))
        })
        .with_state(host)
}

pub async fn serve(host: Arc<Host>) -> Result<(), AgentError> {
    let addr = host.cfg.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Listen {
            addr: addr.to_string(),
            source,
        })?;
    tracing::info!(%addr, host = %host.cfg.name, "agent listening");
    let app = router(host.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(AgentError::io("serving HTTP"));
    tracing::info!("agent stopping: stopping its VMs");
    host.shutdown().await;
    served
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn host_info(State(h): Shared) -> Json<HostInfo> {
    Json(h.info())
}

async fn list(State(h): Shared) -> Json<Vec<VmSummary>> {
    Json(h.all().iter().map(|v| v.summary()).collect())
}

async fn create(
    State(h): Shared,
    query: Result<Query<CreateQuery>, axum::extract::rejection::QueryRejection>,
    ApiJson(spec): ApiJson<VmSpec>,
) -> Result<(StatusCode, Json<VmInfo>), AgentError> {
    let Query(q) = query.map_err(|e| AgentError::BadRequest(e.body_text()))?;
    let vm = h.create_vm(spec, q.wait).await?;
    Ok((StatusCode::CREATED, Json(vm.info())))
}

async fn show(State(h): Shared, Path(name): Path<String>) -> ApiResult<VmInfo> {
    Ok(Json(h.get(&name)?.info()))
}

async fn delete(State(h): Shared, Path(name): Path<String>) -> Result<StatusCode, AgentError> {
    h.delete_vm(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(State(h): Shared, Path(name): Path<String>) -> ApiResult<VmInfo> {
    Ok(Json(h.set_paused(&name, true).await?.info()))
}

async fn resume(State(h): Shared, Path(name): Path<String>) -> ApiResult<VmInfo> {
    Ok(Json(h.set_paused(&name, false).await?.info()))
}

async fn traffic(State(h): Shared, Path(name): Path<String>) -> ApiResult<TrafficReport> {
    let vm = h.get(&name)?;
    let rt = vm.rt.lock().await;
    let r = rt.as_ref().ok_or_else(|| {
        AgentError::Conflict(format!("VM `{name}` has no running network element"))
    })?;
    Ok(Json(r.element.report()))
}

async fn guest(
    State(h): Shared,
    Path(name): Path<String>,
    ApiJson(op): ApiJson<Op>,
) -> ApiResult<serde_json::Value> {
    Ok(Json(h.guest_request(&name, op).await?))
}

async fn migrate_vm(
    State(h): Shared,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<MigrateRequest>,
) -> Result<(StatusCode, Json<MigrationInfo>), AgentError> {
    let info = migrate::start_outgoing(h, &name, req).await?;
    Ok((StatusCode::ACCEPTED, Json(info)))
}

async fn migration(State(h): Shared, Path(name): Path<String>) -> ApiResult<MigrationInfo> {
    let found = h.migrations.lock().ok().and_then(|m| m.get(&name).cloned());
    found.map(Json).ok_or_else(|| {
        AgentError::NotFound(format!("no migration of `{name}` from host {}", h.cfg.name))
    })
}

async fn incoming(
    State(h): Shared,
    ApiJson(req): ApiJson<IncomingRequest>,
) -> ApiResult<IncomingReady> {
    Ok(Json(migrate::prepare_incoming(h, req).await?))
}

async fn complete(State(h): Shared, Path(name): Path<String>) -> ApiResult<VmInfo> {
    Ok(Json(migrate::complete_incoming(&h, &name).await?))
}

async fn abort(State(h): Shared, Path(name): Path<String>) -> Result<StatusCode, AgentError> {
    migrate::abort_incoming(&h, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
