//! `/v1/events` (with long-poll for `--follow`), `/v1/operations`.

use super::{ApiResult, Shared};
use crate::error::ApiError;
use crate::repo::OPS;
use axum::extract::{Path, Query};
use axum::Json;
use duplex_core::model::{Event, Operation};
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
