//! A request to a controller's API in process, as `who` (what mutual TLS
//! would have told it).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use duplex_core::identity::Identity;
use tower::ServiceExt;

/// Largest answer read (a whole cluster's list at the simulated sizes).
const MAX_ANSWER: usize = 64 << 20;

pub async fn call(
    router: &axum::Router,
    who: Identity,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default());
    let Ok(mut req) = req else {
        return (StatusCode::BAD_REQUEST, serde_json::Value::Null);
    };
    req.extensions_mut().insert(duplex_tls::Peer(Ok(who)));
    match router.clone().oneshot(req).await {
        Ok(resp) => {
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
                .await
                .unwrap_or_default();
            (status, serde_json::from_slice(&bytes).unwrap_or_default())
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, serde_json::Value::Null),
    }
}
