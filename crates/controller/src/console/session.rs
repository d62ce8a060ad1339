//! Console sessions over HTTP: an operator with a certificate asks for
//! one (`POST /v1/sessions`, what `duplex console` does); its URL, opened
//! once in a browser, sets the session cookie (`/ui/login`); the browser
//! then calls the API as that operator (`caller`), changing requests only
//! with the console's header.

use crate::ctl::Ctl;
use crate::error::ApiError;
use axum::extract::{Query, Request, State};
use axum::http::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use duplex_core::console_session::{
    token_in_cookies, SessionGrant, SessionRequest, COOKIE as SESSION_COOKIE, CSRF_HEADER,
};
use duplex_core::identity::Identity;
use serde::Deserialize;
use std::sync::Arc;

fn lock(ctl: &Ctl) -> std::sync::MutexGuard<'_, duplex_core::console_session::Sessions> {
    ctl.sessions.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh session token: 32 bytes from the OS, hex.
fn token() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_randomness",
            format!("the OS gave no random bytes for a session: {e}"),
        )
    })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// `POST /v1/sessions`: a console session for the calling operator (its
/// certificate's identity and scope; a session cannot open another).
pub async fn open(
    State(ctl): State<Arc<Ctl>>,
    req: Request,
) -> Result<(StatusCode, Json<SessionGrant>), ApiError> {
    let who = match req.extensions().get::<duplex_tls::Peer>() {
        Some(duplex_tls::Peer(Ok(id))) => id.clone(),
        _ => {
            return Err(ApiError::unauthorized(
                "no_identity",
                "a console session is opened with an operator's certificate (`duplex console`)",
            ))
        }
    };
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| ctl.cfg.listen.to_string());
    let body: SessionRequest = match axum::body::to_bytes(req.into_body(), 4096).await {
        Ok(b) if b.is_empty() => SessionRequest::default(),
        Ok(b) => serde_json::from_slice(&b).map_err(|e| ApiError::bad_request(e.to_string()))?,
        Err(e) => return Err(ApiError::bad_request(e.to_string())),
    };
    let token = token()?;
    let now = crate::events::now_ms();
    let expires_ms = lock(&ctl)
        .open(&who, token.clone(), body.ttl_ms, now)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Identity::Operator { name, scope } = who else {
        return Err(ApiError::forbidden("only operators open console sessions"));
    };
    tracing::info!(operator = %name, ?scope, "console session opened");
    Ok((
        StatusCode::CREATED,
        Json(SessionGrant {
            url: format!("https://{host}/ui/login?token={token}"),
            operator: name,
            scope,
            expires_ms,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    token: String,
}

/// `GET /ui/login?token=`: exchanges the login token (good once) for the
/// session's own, set as the cookie, and goes to the console.
pub async fn login(State(ctl): State<Arc<Ctl>>, Query(q): Query<Login>) -> Response {
    let session = match token() {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    if !lock(&ctl).redeem(&q.token, session.clone(), crate::events::now_ms()) {
        return ApiError::unauthorized(
            "no_session",
            "this console address was used already, is older than 5 minutes, or was made by another controller: run `duplex console` again",
        )
        .into_response();
    }
    let cookie = format!("{SESSION_COOKIE}={session}; Path=/; Secure; HttpOnly; SameSite=Strict");
    (
        StatusCode::SEE_OTHER,
        [
            (SET_COOKIE, cookie),
            (LOCATION, "/ui".to_string()),
            (CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response()
}

/// `POST /ui/logout`: ends the session.
pub async fn logout(State(ctl): State<Arc<Ctl>>, req: Request) -> Response {
    if let Some(t) = cookie_token(&req) {
        lock(&ctl).close(&t);
    }
    let gone = format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    (StatusCode::NO_CONTENT, [(SET_COOKIE, gone)]).into_response()
}

/// Whether the request carries a console session's cookie.
pub fn carries_session(req: &Request) -> bool {
    cookie_token(req).is_some()
}

fn cookie_token(req: &Request) -> Option<String> {
    let h = req.headers().get(COOKIE)?.to_str().ok()?;
    token_in_cookies(h).map(str::to_string)
}

/// Who a request without a certificate acts as through its session
/// cookie; `Err` names what is missing. A changing request must carry the
/// console's header (a page of another site cannot add it).
pub fn who(ctl: &Ctl, req: &Request) -> Result<Identity, ApiError> {
    let Some(token) = cookie_token(req) else {
        return Err(ApiError::unauthorized(
            "no_identity",
            "neither a client certificate nor a console session (`duplex console`)",
        ));
    };
    let who = lock(ctl)
        .who(&token, crate::events::now_ms())
        .ok_or_else(|| {
            ApiError::unauthorized(
                "no_session",
                "the console session expired or was closed: run `duplex console` again",
            )
        })?;
    let reads = matches!(req.method().as_str(), "GET" | "HEAD");
    if !reads && !req.headers().contains_key(CSRF_HEADER) {
        return Err(ApiError::forbidden(format!(
            "a console request that changes something carries the `{CSRF_HEADER}` header"
        )));
    }
    Ok(who)
}
