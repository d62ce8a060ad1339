//! S1 through the API: `POST /v1/pairs/{name}/migrate` and
//! `POST /v1/hosts/{name}/drain`, both long operations.

use super::{ApiJson, Shared};
use crate::ctl::Ctl;
use crate::error::ApiError;
use crate::ops;
use crate::pair_move;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use duplex_core::model::{HostState, OpKind, Operation};
use duplex_core::pair_migration::Setup;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigratePair {
    /// Destination host, or `auto` (placement chooses, per member).
    pub to: String,
    /// Move the member(s) on this host (default: the ACT's host).
    #[serde(default)]
    pub from: Option<String>,
    /// Switch back afterwards so the original ACT is ACT again.
    #[serde(default)]
    pub switch_back: bool,
}

#[derive(Serialize)]
pub struct Accepted {
    pub operation: Operation,
    pub setup: Setup,
}

async fn check_host(ctl: &Ctl, h: &str) -> Result<(), ApiError> {
    match ctl.host(h).await? {
        None => Err(ApiError::bad_request(format!(
            "field `to`: no host `{h}` is registered"
        ))),
        Some(x) if x.state != HostState::Ready => Err(ApiError::conflict(format!(
            "field `to`: host {h} is {}, it takes no VMs",
            x.state.as_str()
        ))),
        Some(_) => Ok(()),
    }
}

pub async fn migrate_pair(
    ctl: Shared,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<MigratePair>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let ctl = ctl.0;
    let pair = ctl
        .pair(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no pair `{name}` (see `duplex pair list`)")))?;
    let hosts = crate::pairs::member_hosts(&ctl, &pair)
        .await
        .map_err(ApiError::conflict)?;
    let from = req
        .from
        .clone()
        .unwrap_or_else(|| hosts[pair.active.i()].clone());
    if !hosts.contains(&from) {
        return Err(ApiError::bad_request(format!(
            "field `from`: no member of {name} runs on {from} (they run on {} and {})",
            hosts[0], hosts[1]
        )));
    }
    if req.to != "auto" {
        check_host(&ctl, &req.to).await?;
        if hosts[0] != hosts[1] && hosts.contains(&req.to) {
            return Err(ApiError::conflict(format!(
                "field `to`: the other member of {name} runs on {}; a pair's members never share a host",
                req.to
            )));
        }
    }
    let targets = crate::placement::targets(&ctl, &pair, &hosts, &from, &req.to).await?;
    let setup = Setup {
        members: pair.members.clone(),
        hosts,
        active: pair.active.i(),
        targets,
        switch_back: req.switch_back,
    };
    duplex_core::pair_migration::Plan::start(setup.clone())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (op, _) = pair_move::start(&ctl, &name, setup.clone())
        .await
        .map_err(|e| super::pairs::lifecycle_error(&name, e))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            operation: op,
            setup,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drain {
    /// How many VMs or pairs move at once.
    #[serde(default = "one")]
    pub concurrency: usize,
}

fn one() -> usize {
    1
}

pub async fn drain(
    ctl: Shared,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Drain>,
) -> Result<(StatusCode, Json<Operation>), ApiError> {
    let ctl = ctl.0;
    if !(1..=8).contains(&req.concurrency) {
        return Err(ApiError::bad_request(format!(
            "field `concurrency`: {} is outside 1..=8",
            req.concurrency
        )));
    }
    let host = ctl
        .host(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no host `{name}` is registered")))?;
    if host.state == HostState::Failed {
        return Err(ApiError::conflict(format!(
            "host {name} is failed: its VMs cannot be live-migrated (they need a restart elsewhere)"
        )));
    }
    let id = ops::new_id(&ctl);
    let guard = ctl.office.reserve(&id);
    let (op, handle) = ops::record(&ctl, id, OpKind::HostDrain, &format!("host/{name}")).await?;
    let f = crate::drain::run(ctl.clone(), name, req.concurrency, handle);
    ctl.office.spawn(guard, f);
    Ok((StatusCode::ACCEPTED, Json(op)))
}
