//! The controller's HTTP/JSON API under `/v1` (described by
//! `/v1/openapi.json`), `/metrics` and `/healthz`, over mutual TLS. Who
//! may call what is `duplex_core::identity::controller_access`: operators'
//! certificates for the operators' routes and `/metrics` (scope read for
//! reads), a host's agent for that host's heartbeat; `/healthz` and the
//! OpenAPI document are open. While this controller is not the leader,
//! every `/v1` route but the document answers `503 not_leader`.

mod agents;
mod events;
mod hosts;
mod migrate;
pub(crate) mod moves;
mod pairs;
mod policy;
mod rebalancer;
mod rules;
mod service_data;
mod site;
mod vms;

use crate::ctl::Ctl;
use crate::error::ApiError;
use crate::metrics::{RouteLabels, Snapshot};
use axum::extract::{DefaultBodyLimit, Path};
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use duplex_core::identity::{controller_access, Call, ControllerRoute, Identity};
use duplex_core::model::{HostState, OpState, Operation, PairHealth, VmStatus};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use tokio::time::Instant;

pub type Shared = State<Arc<Ctl>>;
pub type ApiResult<T> = Result<Json<T>, ApiError>;

pub const OPENAPI: &str = include_str!("openapi.json");

/// Largest request body an operator route takes (a VM or pair spec is a
/// few hundred bytes).
pub const OPERATOR_BODY_LIMIT: usize = 64 * 1024;
/// Largest heartbeat: a host's VMs, each with its 64 busiest peers.
pub const HEARTBEAT_BODY_LIMIT: usize = 1024 * 1024;

/// `Json` whose rejections name the problem (unknown field, bad type, syntax).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(
                    rej.status(),
                    "too_large",
                    "the request body is larger than this route takes",
                ))
            }
            Err(rej) => Err(ApiError::bad_request(rej.body_text())),
        }
    }
}

pub fn router(ctl: Arc<Ctl>) -> Router {
    let heartbeat = Router::new()
        .route("/v1/agents/{host}/heartbeat", post(agents::heartbeat))
        .route_layer(middleware::from_fn(own_host_only))
        .layer(DefaultBodyLimit::max(HEARTBEAT_BODY_LIMIT));
    let operators = Router::new()
        .route("/v1/hosts", get(hosts::list))
        .route("/v1/hosts/{name}", get(hosts::show))
        .route("/v1/hosts/{name}/state", post(hosts::set_state))
        .route("/v1/vms", get(vms::list).post(vms::create))
        .route("/v1/vms/{name}", get(vms::show).delete(vms::delete))
        .route("/v1/vms/{name}/migrate", post(migrate::migrate))
        .route("/v1/vms/{name}/history", get(vms::history))
        .route("/v1/vms/{name}/backup", post(service_data::backup))
        .route("/v1/vms/{name}/data", get(service_data::list))
        .route(
            "/v1/vms/{name}/policy",
            get(policy::show_vm).post(policy::set_vm),
        )
        .route(
            "/v1/pairs/{name}/policy",
            get(policy::show_pair).post(policy::set_pair),
        )
        .route("/v1/placement/{vm}", get(migrate::explain))
        .route(
            "/v1/rebalancer/policy",
            get(rebalancer::show_policy).post(rebalancer::set_policy),
        )
        .route("/v1/rebalancer/plan", get(rebalancer::plan))
        .route("/v1/vms/{name}/site", get(site::show))
        .route("/v1/vms/{name}/site/replicate", post(site::replicate))
        .route("/v1/vms/{name}/site/switch", post(site::switch))
        .route("/v1/vms/{name}/site/policy", put(site::set_policy))
        .route("/v1/pairs", get(pairs::list).post(pairs::create))
        .route("/v1/pairs/{name}", get(pairs::show).delete(pairs::delete))
        .route("/v1/pairs/{name}/switchover", post(pairs::switchover))
        .route("/v1/pairs/{name}/migrate", post(moves::migrate_pair))
        .route("/v1/hosts/{name}/drain", post(moves::drain))
        .route("/v1/operations", get(events::ops))
        .route("/v1/operations/{id}", get(events::op))
        .route("/v1/events", get(events::list))
        .route("/v1/controller", get(controller_info))
        .route("/v1/rules", get(rules::show).post(rules::add))
        .route("/v1/rules/default", put(rules::set_default))
        .route("/v1/rules/test", post(rules::test))
        .route("/v1/rules/{name}", axum::routing::delete(rules::delete))
        .route("/v1/sessions", post(crate::console::session::open))
        .route("/v1/stream", get(crate::console::stream::stream))
        .route_layer(middleware::from_fn_with_state(ctl.clone(), operators_only))
        .layer(DefaultBodyLimit::max(OPERATOR_BODY_LIMIT));
    let data = Router::new()
        .route("/v1/vms/{name}/ref", put(service_data::set_ref))
        .route_layer(middleware::from_fn_with_state(ctl.clone(), operators_only))
        .layer(DefaultBodyLimit::max(service_data::REF_BODY_LIMIT));
    let v1 = heartbeat
        .merge(operators)
        .merge(data)
        .layer(middleware::from_fn_with_state(ctl.clone(), leader_only));
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(ctl.clone(), operators_only));
    Router::new()
        .merge(v1)
        .merge(metrics)
        .merge(crate::console::routes())
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .fallback(|req: Request| async move {
            ApiError::not_found(format!(
                "no such endpoint: {} {}",
                req.method(),
                req.uri().path()
            ))
        })
        .layer(middleware::from_fn_with_state(ctl.clone(), timed))
        .with_state(ctl)
}

async fn leader_only(State(ctl): Shared, req: Request, next: Next) -> Response {
    if !ctl.is_leader() {
        return ApiError::not_leader(format!(
            "controller {} is not the leader (standing by for the lease on {}); use the leader",
            ctl.cfg.id,
            ctl.repo.store.describe()
        ))
        .into_response();
    }
    next.run(req).await
}

/// The caller's identity, from its certificate, or (`sessions` given, a
/// browser without one) from its console session.
fn caller(req: &Request, sessions: Option<&Ctl>) -> Result<Identity, ApiError> {
    // A session only for a request that carries one: else the
    // certificate's problem is the one to tell.
    let console = sessions.filter(|_| crate::console::session::carries_session(req));
    match (req.extensions().get::<duplex_tls::Peer>(), console) {
        (Some(duplex_tls::Peer(Ok(id))), _) => Ok(id.clone()),
        (_, Some(ctl)) => crate::console::session::who(ctl, req),
        (Some(duplex_tls::Peer(Err(why))), None) => Err(ApiError::unauthorized("no_identity", why)),
        (None, None) => Err(ApiError::unauthorized(
            "no_identity",
            "the request did not come over mutual TLS",
        )),
    }
}

fn allowed(req: &Request, route: &ControllerRoute, sessions: Option<&Ctl>) -> Result<(), ApiError> {
    let who = caller(req, sessions)?;
    let call = Call::of_method(req.method().as_str());
    controller_access(&who, route, call).map_err(|d| ApiError::forbidden(d.to_string()))
}

/// Operators, by certificate or through the console.
async fn operators_only(State(ctl): Shared, req: Request, next: Next) -> Response {
    match allowed(&req, &ControllerRoute::Operator, Some(&ctl)) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn own_host_only(Path(host): Path<String>, req: Request, next: Next) -> Response {
    match allowed(&req, &ControllerRoute::Heartbeat { host }, None) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn timed(State(ctl): Shared, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let t = Instant::now();
    let resp = next.run(req).await;
    ctl.metrics
        .api
        .get_or_create(&RouteLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .observe(t.elapsed().as_secs_f64());
    resp
}

async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn healthz(State(ctl): Shared) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "ok": true,
        "id": ctl.cfg.id,
        "leader": ctl.is_leader(),
        "fence": ctl.fence(),
        "store": ctl.repo.store.describe(),
    }))
}

async fn controller_info(State(ctl): Shared) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "id": ctl.cfg.id,
        "version": env!("CARGO_PKG_VERSION"),
        "leader": ctl.is_leader(),
        "fence": ctl.fence(),
        "store": ctl.repo.store.describe(),
        "tls_bundle": ctl.cfg.tls.dir,
        "host_failure_timeout_ms": ctl.cfg.liveness.suspect_after_ms,
        "probe_timeout_ms": ctl.cfg.probe_timeout.as_millis() as u64,
        "fence_device": ctl.cfg.fence_command,
        "service_witness": ctl.cfg.service_witness,
        "lease_ttl_ms": ctl.cfg.lease_ttl.as_millis() as u64,
    }))
}

async fn metrics(State(ctl): Shared) -> Response {
    let mut snap = Snapshot {
        hosts: HostState::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
        vms: VmStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
        pairs: PairHealth::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
        ops_running: 0,
        leader: ctl.is_leader(),
        fence: ctl.fence(),
        heartbeat_age: Vec::new(),
        traffic: Vec::new(),
    };
    if ctl.is_leader() {
        let (Ok(hosts), Ok(vms), Ok(pairs)) =
            (ctl.hosts().await, ctl.vms().await, ctl.pairs().await)
        else {
            return ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "cannot read the store for metrics",
            )
            .into_response();
        };
        let bump = |rows: &mut Vec<(&'static str, i64)>, k: &str| {
            if let Some(r) = rows.iter_mut().find(|r| r.0 == k) {
                r.1 += 1;
            }
        };
        for h in &hosts {
            bump(&mut snap.hosts, h.state.as_str());
        }
        let listing = crate::listing::Listing::new(&vms, &hosts);
        for v in &vms {
            let s = ctl.vm_view(v.clone(), &listing, false).status;
            bump(&mut snap.vms, s.as_str());
        }
        for p in pairs {
            let h = ctl.pair_view(p, &listing).health;
            bump(&mut snap.pairs, h.as_str());
        }
        {
            let obs = ctl.lock_observed();
            for (host, seen) in obs.all() {
                let age = seen.at.elapsed().as_secs_f64();
                snap.heartbeat_age.push((host.clone(), age));
                let t = seen.report.traffic.iter().cloned();
                snap.traffic.extend(t.map(|t| (host.clone(), t)));
            }
        }
        if let Ok(ops) = ctl.repo.list::<Operation>(crate::repo::OPS).await {
            snap.ops_running = ops
                .iter()
                .filter(|o| o.value.state == OpState::Running)
                .count() as i64;
        }
    }
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctl.metrics.render(&snap, &ctl.repo.latency),
    )
        .into_response()
}
