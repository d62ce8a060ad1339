//! `/v1/rules`: the S2 ruleset (which packets a replicated VM sends at once
//! and which wait for their epoch's commit), edited at run time; every
//! change is a new version, pushed to the hosts within a second.

use super::{ApiJson, ApiResult, Shared};
use crate::error::ApiError;
use crate::rules;
use axum::extract::Path;
use axum::Json;
use duplex_core::classify::{Class, PacketSample, Rule, RuleError, Ruleset, TestAnswer};
use duplex_core::model::Severity;
use serde::Deserialize;

pub async fn show(ctl: Shared) -> ApiResult<Ruleset> {
    Ok(Json(rules::current(&ctl).await?))
}

async fn edit(
    ctl: &std::sync::Arc<crate::ctl::Ctl>,
    what: String,
    f: impl Fn(&Ruleset) -> Result<Ruleset, RuleError>,
) -> ApiResult<Ruleset> {
    let next = rules::change(ctl, f).await?.map_err(|e| match e {
        RuleError::NotFound(_) => ApiError::not_found(e.to_string()),
        e => ApiError::bad_request(e.to_string()),
    })?;
    let msg = format!("ruleset v{}: {what}", next.version);
    ctl.events
        .emit(Severity::Info, "rules.changed", "rules", msg)
        .await;
    tokio::spawn(rules::push_now(ctl.clone()));
    Ok(Json(next))
}

/// Adds a rule, or replaces the one of its name.
pub async fn add(ctl: Shared, ApiJson(rule): ApiJson<Rule>) -> ApiResult<Ruleset> {
    let what = format!("rule `{}` set ({})", rule.name, rule.class);
    edit(&ctl, what, |set| set.with_rule(rule.clone())).await
}

pub async fn delete(ctl: Shared, Path(name): Path<String>) -> ApiResult<Ruleset> {
    edit(&ctl, format!("rule `{name}` deleted"), |set| {
        set.without_rule(&name)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultClass {
    class: Class,
}

pub async fn set_default(ctl: Shared, ApiJson(d): ApiJson<DefaultClass>) -> ApiResult<Ruleset> {
    let what = format!("packets no rule matches: {}", d.class);
    edit(&ctl, what, |set| Ok(set.with_default(d.class))).await
}

/// Which rule a described packet hits, and its class.
pub async fn test(ctl: Shared, ApiJson(sample): ApiJson<PacketSample>) -> ApiResult<TestAnswer> {
    if sample.dscp.is_some_and(|d| d > 63) {
        return Err(ApiError::bad_request("field `dscp`: at most 63"));
    }
    Ok(Json(rules::current(&ctl).await?.test(&sample)))
}
