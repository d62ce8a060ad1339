//! `/v1/vms/{name}/policy` and `/v1/pairs/{name}/policy`: S3 restart
//! policies (thresholds, probation windows, the fast path). GET shows the
//! policy in force and where it comes from; POST changes what it gives.

use super::{ApiResult, Shared};
use crate::ctl::Ctl;
use crate::error::ApiError;
use crate::restart_policy::{self, PolicyAnswer, Scope, Source};
use axum::extract::Path;
use axum::Json;
use duplex_core::escalation::{Policy, PolicyChange};
use duplex_core::model::{Severity, Vm};

async fn vm_named(ctl: &Ctl, name: &str) -> Result<Vm, ApiError> {
    ctl.vm(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no VM `{name}` (see `duplex vm list`)")))
}

async fn pair_policy(ctl: &Ctl, name: &str) -> Result<(Policy, Source), ApiError> {
    if ctl.pair(name).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no pair `{name}` (see `duplex pair list`)"
        )));
    }
    Ok(
        match restart_policy::stored(ctl, Scope::Pair, name).await? {
            Some(p) => (p, Source::Pair),
            None => (Policy::default(), Source::Default),
        },
    )
}

fn answer(scope: Scope, name: &str, (policy, source): (Policy, Source)) -> Json<PolicyAnswer> {
    Json(PolicyAnswer {
        scope,
        name: name.to_string(),
        source,
        policy: policy.view(),
    })
}

pub async fn show_vm(ctl: Shared, Path(name): Path<String>) -> ApiResult<PolicyAnswer> {
    let vm = vm_named(&ctl, &name).await?;
    Ok(answer(
        Scope::Vm,
        &name,
        restart_policy::effective(&ctl, &vm).await?,
    ))
}

pub async fn show_pair(ctl: Shared, Path(name): Path<String>) -> ApiResult<PolicyAnswer> {
    Ok(answer(Scope::Pair, &name, pair_policy(&ctl, &name).await?))
}

pub async fn set_vm(
    ctl: Shared,
    Path(name): Path<String>,
    Json(change): Json<PolicyChange>,
) -> ApiResult<PolicyAnswer> {
    let vm = vm_named(&ctl, &name).await?;
    let (base, _) = restart_policy::effective(&ctl, &vm).await?;
    set(&ctl, Scope::Vm, &name, base, &change).await
}

pub async fn set_pair(
    ctl: Shared,
    Path(name): Path<String>,
    Json(change): Json<PolicyChange>,
) -> ApiResult<PolicyAnswer> {
    let (base, _) = pair_policy(&ctl, &name).await?;
    set(&ctl, Scope::Pair, &name, base, &change).await
}

async fn set(
    ctl: &Ctl,
    scope: Scope,
    name: &str,
    base: Policy,
    change: &PolicyChange,
) -> ApiResult<PolicyAnswer> {
    let next = restart_policy::change(ctl, scope, name, base, change)
        .await?
        .map_err(ApiError::bad_request)?;
    let what = match scope {
        Scope::Vm => format!("vm/{name}"),
        Scope::Pair => format!("pair/{name}"),
    };
    let text = serde_json::to_string(change).unwrap_or_default();
    ctl.events
        .emit(
            Severity::Info,
            "policy.changed",
            &what,
            format!("restart policy of {what} changed: {text}"),
        )
        .await;
    let source = match scope {
        Scope::Vm => Source::Vm,
        Scope::Pair => Source::Pair,
    };
    Ok(answer(scope, name, (next, source)))
}
