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
use duplex_core::model::{HostState, OpKind, Operation, Pair};
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

/// Targets for the members of `pair` that run on `from`: `to`, or
/// placement's choice (never the other member's host or target).
pub async fn targets(
    ctl: &Ctl,
    pair: &Pair,
    hosts: &[String; 2],
    from: &str,
    to: &str,
) -> Result<[Option<String>; 2], ApiError> {
    let mut t: [Option<String>; 2] = [None, None];
    for i in 0..2 {
        if hosts[i] != from {
            continue;
        }
        let other = 1 - i;
        let dest = if to == "auto" {
            let mut avoid = vec![hosts[other].clone()];
            if let Some(o) = &t[other] {
                avoid.push(o.clone());
            }
            crate::placement::decide_avoiding(ctl, &pair.members[i], &avoid)
                .await?
                .to
        } else {
            to.to_string()
        };
        t[i] = Some(dest);
    }
    Ok(t)
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
        .unwrap_or_else(|| hosts[pair.active % 2].clone());
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
    let targets = targets(&ctl, &pair, &hosts, &from, &req.to).await?;
    let setup = Setup {
        members: pair.members.clone(),
        hosts,
        active: pair.active % 2,
        targets,
        switch_back: req.switch_back,
    };
    duplex_core::pair_migration::Plan::start(setup.clone())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let pair = pair_move::begin(&ctl, &name)
        .await?
        .map_err(ApiError::conflict)?;
    let (op, handle) = match ops::start(&ctl, OpKind::PairMigrate, &format!("pair/{name}")).await {
        Ok(x) => x,
        Err(e) => {
            pair_move::finish_pair(&ctl, &pair, None).await;
            return Err(e.into());
        }
    };
    let (c, s) = (ctl.clone(), setup.clone());
    tokio::spawn(async move {
        let out = pair_move::run(&c, pair, s, &handle).await;
        handle.finish(outcome_result(&out)).await;
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            operation: op,
            setup,
        }),
    ))
}

pub fn outcome_result(o: &duplex_core::pair_migration::Outcome) -> Result<String, String> {
    let line = format!(
        "{} migration(s), {} switchover(s); members on {} / {}",
        o.migrations, o.switchovers, o.hosts[0], o.hosts[1]
    );
    if o.ok {
        Ok(format!("moved: {line}"))
    } else {
        Err(format!(
            "{}; {line}",
            o.reason.as_deref().unwrap_or("failed")
        ))
    }
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
    let (op, handle) = ops::start(&ctl, OpKind::HostDrain, &format!("host/{name}")).await?;
    tokio::spawn(crate::drain::run(
        ctl.clone(),
        name,
        req.concurrency,
        handle,
    ));
    Ok((StatusCode::ACCEPTED, Json(op)))
}
