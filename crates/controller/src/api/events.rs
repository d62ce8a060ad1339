//! `/v1/events` (with long-poll for `--follow`), `/v1/operations`, token rotation.

use super::{ApiResult, Shared};
use crate::error::ApiError;
use crate::events::now_ms;
use crate::repo::OPS;
use axum::extract::{Path, Query};
use axum::Json;
use duplex_core::model::{Event, Operation, Severity};
use serde::Deserialize;
use std::time::Duration;

const MAX_LIMIT: usize = 1000;
const MAX_WAIT_S: u64 = 60;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only events after this id.
    pub after: Option<String>,
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// If nothing is newer, wait up to this many seconds for something.
    #[serde(default)]
    pub wait: u64,
}

fn default_limit() -> usize {
    100
}

pub async fn list(ctl: Shared, Query(q): Query<EventQuery>) -> ApiResult<Vec<Event>> {
    if q.limit == 0 || q.limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "query `limit`: {} is outside 1..={MAX_LIMIT}",
            q.limit
        )));
    }
    if q.wait > MAX_WAIT_S {
        return Err(ApiError::bad_request(format!(
            "query `wait`: {} s is more than {MAX_WAIT_S}",
            q.wait
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait);
    loop {
        let notified = ctl.events.notify.notified();
        let evs = ctl.events.list(q.after.as_deref(), q.limit).await?;
        if !evs.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(evs));
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

pub async fn ops(ctl: Shared) -> ApiResult<Vec<Operation>> {
    Ok(Json(
        ctl.repo
            .list::<Operation>(OPS)
            .await?
            .into_iter()
            .map(|r| r.value)
            .collect(),
    ))
}

pub async fn op(ctl: Shared, Path(id): Path<String>) -> ApiResult<Operation> {
    match ctl.repo.get::<Operation>(&format!("{OPS}{id}")).await? {
        Some(r) => Ok(Json(r.value)),
        None => Err(ApiError::not_found(format!("no operation `{id}`"))),
    }
}

pub async fn rotate_token(ctl: Shared) -> ApiResult<serde_json::Value> {
    let rec = crate::auth::rotate(&ctl.repo, &ctl.token_path, now_ms())
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "token_error",
                e.to_string(),
            )
        })?;
    *ctl.token.lock().unwrap_or_else(|p| p.into_inner()) = rec;
    ctl.events
        .emit(
            Severity::Warning,
            "controller.token_rotated",
            "controller",
            format!(
                "API token replaced; the new one is in {}",
                ctl.token_path.display()
            ),
        )
        .await;
    Ok(Json(serde_json::json!({"token_file": ctl.token_path})))
}
