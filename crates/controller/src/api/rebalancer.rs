//! `/v1/rebalancer/policy` (GET shows, POST changes the fields given) and
//! `/v1/rebalancer/plan` (what a pass would do now): the rebalancer that
//! relieves overloaded hosts (see `crate::relief`).

use super::{ApiJson, ApiResult, Shared};
use crate::error::ApiError;
use crate::relief::{self, PlanView};
use axum::Json;
use duplex_core::model::Severity;
use duplex_core::placement::relief::{ReliefChange, ReliefPolicy};

pub async fn show_policy(ctl: Shared) -> ApiResult<ReliefPolicy> {
    Ok(Json(relief::policy(&ctl).await?))
}

pub async fn set_policy(
    ctl: Shared,
    ApiJson(change): ApiJson<ReliefChange>,
) -> ApiResult<ReliefPolicy> {
    let next = relief::set_policy(&ctl, &change)
        .await?
        .map_err(ApiError::bad_request)?;
    let text = serde_json::to_string(&change).unwrap_or_default();
    let state = if next.enabled { "on" } else { "off" };
    ctl.events
        .emit(
            Severity::Info,
            "policy.changed",
            "rebalancer",
            format!("rebalancer policy changed: {text}; the rebalancer is {state}"),
        )
        .await;
    Ok(Json(next))
}

pub async fn plan(ctl: Shared) -> ApiResult<PlanView> {
    Ok(Json(relief::dry_run(&ctl).await?))
}
