//! HTTP/JSON API of the agent, under `/v1`. Every error is a JSON
//! `{"error":{"code","message"}}` with a status that fits it.

use crate::fence::{self, FenceState, FenceToken};
use crate::host::Host;
use crate::report::Reporter;
use crate::{migrate, AgentError};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use duplex_core::agent_api::{
    HandoverOrder, HandoverStatus, HostInfo, IncomingReady, IncomingRequest, MigrateRequest,
    MigrationInfo, TrafficReport, VmInfo, VmSummary, WaitFor,
};
use duplex_core::guest_proto::Op;
use duplex_core::identity::{agent_access, AgentRoute, Call};
use duplex_core::vm_spec::VmSpec;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;

type Shared = State<Arc<Host>>;

/// Largest request body the agent takes (a VM spec, an order to a guest).
pub const BODY_LIMIT: usize = 256 * 1024;
type ApiResult<T> = Result<Json<T>, AgentError>;

/// `Json` whose rejections are our JSON errors naming the problem.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AgentError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(AgentError::TooLarge(
                format!("the request body is larger than the {BODY_LIMIT} bytes the agent takes"),
            )),
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

/// The API. Every request first passes the caller check ([`access`]);
/// every mutating one then the fencing check ([`fence::enforce`]); reads
/// never do.
pub fn router(host: Arc<Host>) -> Router {
    let orders = Router::new()
        .route("/v1/host", get(host_info))
        .route("/v1/fence", get(fence_state).post(fence_state))
        .route("/v1/vms", get(list).post(create))
        .route("/v1/vms/{name}", get(show).delete(delete))
        .route("/v1/vms/{name}/pause", post(pause))
        .route("/v1/vms/{name}/resume", post(resume))
        .route("/v1/vms/{name}/reset", post(reset))
        .route("/v1/vms/{name}/restart", post(restart))
        .route("/v1/vms/{name}/isolate", post(isolate))
        .route("/v1/vms/{name}/traffic", get(traffic))
        .route(
            "/v1/vms/{name}/handover",
            get(handover).post(handover_order),
        )
        .route("/v1/vms/{name}/guest", post(guest))
        .route("/v1/vms/{name}/migrate", post(migrate_vm))
        .route("/v1/migrations/{name}", get(migration))
        .merge(crate::api_replication::orders())
        .merge(crate::api_site::orders());
    let incoming = Router::new()
        .route("/v1/incoming", post(incoming))
        .route("/v1/incoming/{name}/complete", post(complete))
        .route("/v1/incoming/{name}/abort", post(abort))
        .merge(crate::api_replication::peers());
    guarded(orders, &host, AgentRoute::Order)
        .merge(guarded(incoming, &host, AgentRoute::Incoming))
        .fallback(|req: Request| async move {
            AgentError::NotFound(format!(
                "no such endpoint: {} {}",
                req.method(),
                req.uri().path()
            ))
        })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(host)
}

/// `routes` behind the caller check for `group`, then the fencing check.
fn guarded(routes: Router<Arc<Host>>, host: &Arc<Host>, group: AgentRoute) -> Router<Arc<Host>> {
    routes
        .route_layer(axum::middleware::from_fn_with_state(
            host.fence.clone(),
            fence::enforce,
        ))
        .route_layer(axum::middleware::from_fn_with_state(group, access))
}

/// Middleware: the caller's certificate must name an identity that may
/// make this call (`duplex_core::identity::agent_access`).
async fn access(
    State(group): State<AgentRoute>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let who = match req.extensions().get::<duplex_tls::Peer>() {
        Some(duplex_tls::Peer(Ok(id))) => id.clone(),
        Some(duplex_tls::Peer(Err(why))) => {
            return AgentError::Unauthenticated(why.clone()).into_response()
        }
        None => {
            return AgentError::Unauthenticated("the request did not come over mutual TLS".into())
                .into_response()
        }
    };
    let call = Call::of_method(req.method().as_str());
    match agent_access(&who, group, call) {
        Ok(()) => next.run(req).await,
        Err(d) => AgentError::Forbidden(d.to_string()).into_response(),
    }
}

/// Serves the API until SIGINT/SIGTERM, reporting to the controller (if
/// any) meanwhile; then stops reporting and stops every VM.
pub async fn serve(host: Arc<Host>, reporter: Option<Reporter>) -> Result<(), AgentError> {
    let addr = host.cfg.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Listen {
            addr: addr.to_string(),
            source,
        })?;
    tracing::info!(%addr, host = %host.cfg.name, "agent listening");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reporting =
        reporter.map(|r| tokio::spawn(crate::report::run(host.clone(), r, stopped.clone())));
    let app = router(host.clone());
    let tls = std::sync::Arc::new(
        duplex_tls::serve::acceptor(host.cfg.tls.clone())
            .map_err(|e| AgentError::Config(format!("TLS: {e}")))?,
    );
    let served = duplex_tls::serve::serve(listener, tls, app, async move {
        shutdown_signal().await;
        // Stop reporting at once: the controller should see this agent
        // go silent, not its VMs vanish one by one.
        let _ = stop.send(true);
    })
    .await
    .map_err(AgentError::io("serving HTTPS"));
    if let Some(task) = reporting {
        task.abort();
        if let Err(e) = task.await {
            if e.is_panic() {
                tracing::error!("the report task panicked");
            }
        }
    }
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

/// The host; the highest fencing token obeyed rides in the `duplex-fence`
/// response header (`HostInfo` has no field for it).
async fn host_info(State(h): Shared) -> ([(&'static str, String); 1], Json<HostInfo>) {
    (
        [(
            duplex_core::agent_api::FENCE_HEADER,
            h.fence.current().to_string(),
        )],
        Json(h.info()),
    )
}

/// `GET`: the highest fencing token obeyed. `POST`: an order that does
/// nothing but pass the fence, so a new leader can raise it on every agent
/// at once (older controllers are refused from then on).
async fn fence_state(State(h): Shared) -> Json<FenceState> {
    Json(FenceState {
        fence: h.fence.current(),
    })
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

async fn isolate(State(h): Shared, Path(name): Path<String>) -> ApiResult<VmInfo> {
    Ok(Json(h.isolate(&name).await?.info()))
}

async fn restart(State(h): Shared, Path(name): Path<String>) -> ApiResult<VmInfo> {
    Ok(Json(h.restart_vm(&name).await?.info()))
}

async fn reset(State(h): Shared, Path(name): Path<String>) -> ApiResult<VmInfo> {
    Ok(Json(h.reset(&name).await?.info()))
}

async fn traffic(State(h): Shared, Path(name): Path<String>) -> ApiResult<TrafficReport> {
    with_element(&h, &name, |e| e.report()).await.map(Json)
}

/// Runs `f` on the VM's network element; 409 if none runs.
async fn with_element<T>(
    h: &Host,
    name: &str,
    f: impl FnOnce(&duplex_net::element::ElementHandle) -> T,
) -> Result<T, AgentError> {
    let vm = h.get(name)?;
    let rt = vm.rt.lock().await;
    rt.as_ref()
        .map(|r| f(&r.element))
        .ok_or_else(|| AgentError::Conflict(format!("VM `{name}` has no running network element")))
}

/// What the VM's network element does with a service address now.
async fn handover(State(h): Shared, Path(name): Path<String>) -> ApiResult<HandoverStatus> {
    with_element(&h, &name, |e| e.handover_status())
        .await
        .map(Json)
}

/// Hold, forward or release the frames for a service address (switchover).
async fn handover_order(
    State(h): Shared,
    Path(name): Path<String>,
    ApiJson(order): ApiJson<HandoverOrder>,
) -> ApiResult<HandoverStatus> {
    let status = with_element(&h, &name, |e| e.handover(order)).await?;
    tracing::info!(vm = %name, ?order, mode = %status.mode, "handover order");
    Ok(Json(status))
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
    token: Option<Extension<FenceToken>>,
    ApiJson(req): ApiJson<MigrateRequest>,
) -> Result<(StatusCode, Json<MigrationInfo>), AgentError> {
    // The destination checks the same fencing token as this order.
    let fence = token.map(|Extension(FenceToken(t))| t);
    let info = migrate::start_outgoing(h, &name, req, fence).await?;
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
    Extension(peer): Extension<duplex_tls::Peer>,
    ApiJson(req): ApiJson<IncomingRequest>,
) -> ApiResult<IncomingReady> {
    let caller = peer.0.as_ref().ok();
    Ok(Json(migrate::prepare_incoming(h, req, caller).await?))
}

async fn complete(State(h): Shared, Path(name): Path<String>) -> ApiResult<VmInfo> {
    Ok(Json(migrate::complete_incoming(&h, &name).await?))
}

async fn abort(State(h): Shared, Path(name): Path<String>) -> Result<StatusCode, AgentError> {
    migrate::abort_incoming(&h, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::client::{AgentClient, ClientError};
    use crate::fence::tests::temp_dir;
    use axum::http::HeaderMap;
    use duplex_core::agent_api::{ErrorBody, ErrorDetail, MigrationPhase, VmState, FENCE_HEADER};
    use std::net::Ipv4Addr;
    use std::sync::Mutex;
    use std::time::Duration;

    use duplex_core::identity::{Identity, Scope};
    use duplex_tls::test_pki::TestPki;

    /// Serves `app` over mutual TLS with `bundle`; its `https://` URL.
    pub(crate) async fn spawn(app: Router, bundle: duplex_tls::Bundle) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let tls = Arc::new(duplex_tls::serve::acceptor(bundle).unwrap());
        tokio::spawn(duplex_tls::serve::serve(
            listener,
            tls,
            app,
            std::future::pending(),
        ));
        url
    }

    /// The PKI `Host::for_test` made in `d`.
    fn pki(d: &std::path::Path) -> TestPki {
        TestPki { dir: d.join("pki") }
    }

    /// The agent of `host` served over TLS; its URL.
    async fn serve_host(host: &Arc<Host>) -> String {
        spawn(router(host.clone()), host.cfg.tls.clone()).await
    }

    fn http_as(pki: &TestPki, who: &Identity) -> reqwest::Client {
        duplex_tls::client::Clients::new(pki.bundle(who).unwrap(), |b| b)
            .unwrap()
            .get()
    }

    fn as_(url: &str, pki: &TestPki, who: &Identity) -> AgentClient {
        AgentClient::new(url, http_as(pki, who))
    }

    fn admin() -> Identity {
        Identity::operator("ops", Scope::Admin).unwrap()
    }

    #[tokio::test]
    async fn every_order_is_fenced() {
        let d = temp_dir("api-fence");
        let host = Host::for_test(crate::config::test_config(&d));
        let url = serve_host(&host).await;
        let pki = pki(&d);
        let http = http_as(&pki, &Identity::Controller);
        let ctl = || as_(&url, &pki, &Identity::Controller);

        // An admin (no token): the order runs (and finds no VM).
        match as_(&url, &pki, &admin()).delete("nope").await {
            Err(ClientError::Api { status: 404, .. }) => {}
            other => panic!("{other:?}"),
        }
        // A controller with token 5: runs, and 5 is persisted.
        match ctl().with_fence(5).delete("nope").await {
            Err(ClientError::Api { status: 404, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(host.fence.current(), 5);
        assert_eq!(
            std::fs::read_to_string(d.join(crate::fence::FENCE_FILE)).unwrap(),
            "5\n"
        );
        // A stale controller: refused before the handler looks at anything.
        match ctl().with_fence(3).delete("nope").await {
            Err(ClientError::StaleFence { url: u, message }) => {
                assert!(u.ends_with("/v1/vms/nope"), "{u}");
                assert!(message.contains("token 3") && message.contains("token 5"));
            }
            other => panic!("{other:?}"),
        }
        // ...but may still read, and sees the token in GET /v1/host.
        let stale = ctl().with_fence(3);
        assert_eq!(stale.host().await.unwrap().name, "host-a");
        let r = http.get(format!("{url}/v1/host")).send().await.unwrap();
        assert_eq!(r.headers()[FENCE_HEADER], "5");
        // A new leader raises the fence without ordering anything else.
        assert_eq!(ctl().with_fence(9).raise_fence().await.unwrap(), 9);
        assert_eq!(ctl().with_fence(9).raise_fence().await.unwrap(), 9);
        assert_eq!(ctl().raise_fence().await.unwrap(), 9);
        assert!(matches!(
            ctl().with_fence(5).raise_fence().await,
            Err(ClientError::StaleFence { .. })
        ));
        // Nobody but the controller raises it: a forged token from an
        // admin or a peer agent is refused, and the fence stays.
        for who in [admin(), Identity::agent("h9").unwrap()] {
            match as_(&url, &pki, &who)
                .with_fence(u64::MAX)
                .raise_fence()
                .await
            {
                Err(ClientError::Api { status: 403, .. }) => {}
                other => panic!("{who:?}: {other:?}"),
            }
        }
        let r = http.get(format!("{url}/v1/fence")).send().await.unwrap();
        assert_eq!(
            r.json::<FenceState>().await.unwrap(),
            FenceState { fence: 9 }
        );
        assert_eq!(host.fence.current(), 9);
        // Garbage.
        let r = http
            .post(format!("{url}/v1/vms/nope/pause"))
            .header(FENCE_HEADER, "0x5")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<ErrorBody>().await.unwrap().error.code, "bad_fence");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The migrate order's token reaches the destination agent on every
    /// call; a destination that obeyed a newer controller refuses it and
    /// the VM stays where it is.
    #[tokio::test]
    async fn migration_forwards_the_token() {
        type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;
        let seen: Seen = Arc::default();
        let record = |seen: &Seen, path: &str, h: &HeaderMap| {
            let token = h
                .get(FENCE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            seen.lock().unwrap().push((path.to_string(), token));
        };
        let (s1, s2) = (seen.clone(), seen.clone());
        let dest = Router::new()
            .route(
                "/v1/incoming",
                post(move |h: HeaderMap| async move {
                    record(&s1, "incoming", &h);
                    let body = ErrorBody {
                        error: ErrorDetail {
                            code: "stale_fence".into(),
                            message: "order carries fencing token 7 but this agent has \
                                      already obeyed token 8"
                                .into(),
                        },
                    };
                    (StatusCode::CONFLICT, Json(body))
                }),
            )
            .route(
                "/v1/incoming/{name}/abort",
                post(move |h: HeaderMap| async move {
                    record(&s2, "abort", &h);
                    StatusCode::NO_CONTENT
                }),
            );
        let d = temp_dir("api-migrate");
        let host = Host::for_test(crate::config::test_config(&d));
        let dest_url = spawn(dest, pki(&d).agent("dest").unwrap()).await;
        let spec = VmSpec::new("vm-1", Ipv4Addr::new(10, 0, 0, 5));
        let vm = host.reserve(&spec, VmState::Running).unwrap();
        let url = serve_host(&host).await;
        let client = as_(&url, &pki(&d), &Identity::Controller).with_fence(7);
        let req = MigrateRequest {
            to: dest_url,
            tuning: Default::default(),
        };
        let error = failed_migration(&client, &req).await;
        assert!(error.contains("already obeyed token 8"), "{error}");
        assert!(error.contains("keeps running"), "{error}");
        assert_eq!(vm.status().state, VmState::Running);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                ("incoming".to_string(), Some("7".to_string())),
                ("abort".to_string(), Some("7".to_string())),
            ]
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Starts migrating `vm-1` and waits for it to fail; its error.
    async fn failed_migration(client: &AgentClient, req: &MigrateRequest) -> String {
        client.start_migration("vm-1", req).await.unwrap();
        loop {
            let info = client.migration("vm-1").await.unwrap();
            if info.phase == MigrationPhase::Failed {
                return info.error.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A destination that answers an `exec:` stream address (QEMU would run
    /// it as a shell command) is refused before QEMU hears of it; the
    /// destination is told to abort and the VM keeps running here.
    #[tokio::test]
    async fn a_destinations_exec_address_is_never_run() {
        let aborted = Arc::new(Mutex::new(false));
        let a = aborted.clone();
        let pwned = std::env::temp_dir().join(format!("duplex-pwned-{}", std::process::id()));
        let evil = format!("exec:touch {}", pwned.display());
        let dest =
            Router::new()
                .route(
                    "/v1/incoming",
                    post(move || async move {
                        Json(duplex_core::agent_api::IncomingReady { uri: evil })
                    }),
                )
                .route(
                    "/v1/incoming/{name}/abort",
                    post(move || async move {
                        *a.lock().unwrap() = true;
                        StatusCode::NO_CONTENT
                    }),
                );
        let d = temp_dir("api-exec");
        let host = Host::for_test(crate::config::test_config(&d));
        let dest_url = spawn(dest, pki(&d).agent("dest").unwrap()).await;
        let spec = VmSpec::new("vm-1", Ipv4Addr::new(10, 0, 0, 5));
        let vm = host.reserve(&spec, VmState::Running).unwrap();
        let client = as_(&serve_host(&host).await, &pki(&d), &Identity::Controller);
        let req = MigrateRequest {
            to: dest_url,
            tuning: Default::default(),
        };
        let error = failed_migration(&client, &req).await;
        assert!(error.contains("only tcp:127.0.0.1:PORT"), "{error}");
        assert!(
            *aborted.lock().unwrap(),
            "the destination was not told to abort"
        );
        assert_eq!(vm.status().state, VmState::Running);
        assert!(!pwned.exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_destination_must_be_an_agent_address() {
        let d = temp_dir("api-dest");
        let host = Host::for_test(crate::config::test_config(&d));
        let spec = VmSpec::new("vm-1", Ipv4Addr::new(10, 0, 0, 5));
        let vm = host.reserve(&spec, VmState::Running).unwrap();
        let client = as_(&serve_host(&host).await, &pki(&d), &Identity::Controller);
        for to in [
            "exec:sh",
            "https://evil.example:7070",
            "https://10.0.0.9",
            "http://10.0.0.9:7070",
        ] {
            let req = MigrateRequest {
                to: to.into(),
                tuning: Default::default(),
            };
            let e = client.start_migration("vm-1", &req).await.unwrap_err();
            assert!(e.to_string().contains("not an agent URL"), "{to}: {e}");
        }
        assert_eq!(vm.status().state, VmState::Running);
        let _ = std::fs::remove_dir_all(&d);
    }
}
