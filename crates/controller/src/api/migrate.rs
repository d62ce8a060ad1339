//! `POST /v1/vms/{name}/migrate` (`{"to": "<host>"|"auto"}`) and
//! `GET /v1/placement/{vm}`: moving a VM where placement says, and why.

use super::{ApiJson, Shared};
use crate::ctl::Ctl;
use crate::error::ApiError;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use duplex_core::agent_api::MigrationTuning;
use duplex_core::model::move_way::{way_to_move, MoveWay};
use duplex_core::model::{Desired, Vm, VmStatus};
use duplex_core::placement::{Decision, Explanation};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateVm {
    /// A host name, or `auto` to let placement choose.
    pub to: String,
    /// How QEMU runs it (absent: Duplex's defaults).
    #[serde(default)]
    pub tuning: MigrationTuning,
    /// Live-migrate a pair's ACT anyway (its service pauses for the final
    /// copy); without it an ACT is refused and pointed to pair migration.
    #[serde(default)]
    pub plain: bool,
}

#[derive(Serialize)]
pub struct MigrateAccepted {
    /// `None` when the VM stays (it is already where placement wants it).
    pub operation: Option<duplex_core::model::Operation>,
    pub from: String,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

async fn running_vm(ctl: &Ctl, name: &str) -> Result<Vm, ApiError> {
    let vm = ctl
        .vm(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no VM `{name}` (see `duplex vm list`)")))?;
    if vm.desired != Desired::Running {
        return Err(ApiError::conflict(format!("VM `{name}` is being deleted")));
    }
    Ok(vm)
}

pub async fn explain(ctl: Shared, Path(vm): Path<String>) -> Result<Json<Explanation>, ApiError> {
    running_vm(&ctl, &vm).await?;
    Ok(Json(crate::placement::explain(&ctl, &vm).await?))
}

pub async fn migrate(
    ctl: Shared,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<MigrateVm>,
) -> Result<(StatusCode, Json<MigrateAccepted>), ApiError> {
    let ctl = ctl.0;
    req.tuning.validate().map_err(ApiError::bad_request)?;
    let vm = running_vm(&ctl, &name).await?;
    let hosts = ctl.hosts().await?;
    let listing = crate::listing::Listing::new(std::slice::from_ref(&vm), &hosts);
    if ctl.vm_view(vm.clone(), &listing, false).status != VmStatus::Running {
        return Err(ApiError::conflict(format!(
            "VM `{name}` is not running (see `duplex vm show {name}`); only a running VM can move"
        )));
    }
    if ctl.lock_busy().contains(&name) {
        return Err(ApiError::conflict(format!(
            "VM `{name}` has an operation in progress: wait for it"
        )));
    }
    let pair = match &vm.pair {
        Some(p) => ctl.pair(p).await?,
        None => None,
    };
    if let MoveWay::PairMigration { pair } = way_to_move(&vm, pair.as_ref()) {
        if !req.plain {
            return Err(ApiError::conflict(format!(
                "`{name}` is the ACT of pair {pair}: a live migration would pause its service; \
                 move it the S1 way (`duplex pair migrate {pair} --to {}`), or pass --plain if you mean it",
                req.to
            )));
        }
    }
    let (to, decision) = if req.to == "auto" {
        let d = crate::placement::decide(&ctl, &name).await?;
        (d.to.clone(), Some(d))
    } else {
        (req.to.clone(), None)
    };
    if to == vm.host || decision.as_ref().is_some_and(|d| !d.improves()) {
        if decision.is_some() {
            return Ok((
                StatusCode::OK,
                Json(MigrateAccepted {
                    operation: None,
                    from: vm.host.clone(),
                    to: vm.host.clone(),
                    decision,
                }),
            ));
        }
        return Err(ApiError::bad_request(format!(
            "field `to`: `{name}` already runs on {to}"
        )));
    }
    if !hosts.iter().any(|h| h.name == to) {
        return Err(ApiError::bad_request(format!(
            "field `to`: no host `{to}` is registered (or use `auto`)"
        )));
    }
    if decision.is_none() {
        // An explicit destination must pass the same filters as `auto`.
        crate::placement::check_destination(&ctl, &name, &to).await?;
    }
    let from = vm.host.clone();
    let op = crate::moves::launch(&ctl, &name, (&from, &to), req.tuning)
        .await
        .map_err(|e| match e {
            crate::moves::LaunchError::Busy(_) => ApiError::conflict(e.to_string()),
            crate::moves::LaunchError::Repo(r) => r.into(),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MigrateAccepted {
            operation: Some(op),
            from,
            to,
            decision,
        }),
    ))
}
