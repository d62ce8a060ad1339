//! `/v1/pairs`: ACT/SBY pairs and their switchover.

use super::vms::check_new;
use super::{ApiJson, ApiResult, Shared};
use crate::ctl::PairView;
use crate::error::ApiError;
use crate::events::now_ms;
use crate::lifecycle::LifecycleError;
use crate::listing::Listing;
use crate::repo::{PAIRS, VMS};
use crate::{ops, pairs};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use duplex_core::model::{valid_name, Desired, OpKind, Operation, Pair, PairPhase, Severity, Vm};
use duplex_core::pair_lifecycle::{Journal, Slot, Workflow};
use duplex_core::replica_key::ReplicaKey;
use duplex_core::vm_spec::VmSpec;
use duplex_store::Expect;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePair {
    pub name: String,
    /// The service address the ACT holds.
    pub vip: Ipv4Addr,
    #[serde(default = "default_prefix")]
    pub prefix_len: u8,
    /// The two members; the first starts as ACT.
    pub members: [VmSpec; 2],
    /// Pin the members to these hosts (must differ).
    #[serde(default)]
    pub hosts: Option<[String; 2]>,
}

fn default_prefix() -> u8 {
    24
}

#[derive(Serialize)]
pub struct Accepted {
    pub pair: PairView,
    pub operation: Operation,
}

async fn view(ctl: &crate::ctl::Ctl, pair: Pair) -> Result<PairView, ApiError> {
    let (vms, hosts) = (ctl.vms().await?, ctl.hosts().await?);
    Ok(ctl.pair_view(pair, &Listing::new(&vms, &hosts)))
}

fn no_pair(name: &str) -> ApiError {
    ApiError::not_found(format!("no pair `{name}` (see `duplex pair list`)"))
}

pub async fn list(ctl: Shared) -> ApiResult<Vec<PairView>> {
    let (pairs, vms, hosts) = (ctl.pairs().await?, ctl.vms().await?, ctl.hosts().await?);
    let listing = Listing::new(&vms, &hosts);
    Ok(Json(
        pairs
            .into_iter()
            .map(|p| ctl.pair_view(p, &listing))
            .collect(),
    ))
}

pub async fn show(ctl: Shared, Path(name): Path<String>) -> ApiResult<PairView> {
    let pair = ctl.pair(&name).await?.ok_or_else(|| no_pair(&name))?;
    Ok(Json(view(&ctl, pair).await?))
}

pub async fn create(
    ctl: Shared,
    ApiJson(req): ApiJson<CreatePair>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let ctl = ctl.0;
    if !valid_name(&req.name) {
        return Err(ApiError::bad_request(format!(
            "field `name`: `{}` is not a valid pair name (1-32 chars of a-z, 0-9, '-', starting with a letter)",
            req.name
        )));
    }
    if !(8..=30).contains(&req.prefix_len) {
        return Err(ApiError::bad_request(format!(
            "field `prefix_len`: {} is outside 8..=30",
            req.prefix_len
        )));
    }
    if req.vip.is_unspecified()
        || req.vip.is_broadcast()
        || req.vip.is_multicast()
        || req.vip.is_loopback()
    {
        return Err(ApiError::bad_request(format!(
            "field `vip`: {} is not a unicast host address",
            req.vip
        )));
    }
    let [a, b] = &req.members;
    if a.name == b.name {
        return Err(ApiError::bad_request(
            "field `members`: the two members need different names",
        ));
    }
    if a.ip == b.ip || a.ip == req.vip || b.ip == req.vip {
        return Err(ApiError::bad_request(
            "field `members`: the members' addresses and the service address `vip` must all differ",
        ));
    }
    if a.mac() == b.mac() {
        return Err(ApiError::bad_request(format!(
            "field `members`: both members would have MAC {}; give one a `mac`",
            a.mac()
        )));
    }
    let _one_at_a_time = ctl.creating.lock().await;
    if let Some(p) = ctl.pairs().await?.iter().find(|p| p.vip == req.vip) {
        return Err(ApiError::conflict(format!(
            "field `vip`: {} is already pair `{}`'s service address",
            req.vip, p.name
        )));
    }
    if ctl.pair(&req.name).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "field `name`: a pair `{}` already exists",
            req.name
        )));
    }
    for (i, m) in req.members.iter().enumerate() {
        check_new(&ctl, m, &format!("members[{i}]: ")).await?;
    }
    if ctl.vms().await?.iter().any(|v| v.spec.ip == req.vip) {
        return Err(ApiError::conflict(format!(
            "field `vip`: {} is a VM's own address",
            req.vip
        )));
    }
    let pins = req.hosts.clone();
    if let Some([h0, h1]) = &pins {
        if h0 == h1 {
            return Err(ApiError::bad_request(
                "field `hosts`: a pair's members must be on different hosts",
            ));
        }
    }
    let h0 = crate::placement::choose(&ctl, a, pins.as_ref().map(|p| p[0].as_str()), None).await?;
    let h1 = crate::placement::choose(
        &ctl,
        b,
        pins.as_ref().map(|p| p[1].as_str()),
        Some((h0.as_str(), a)),
    )
    .await?;
    let op_id = ops::new_id(&ctl);
    let guard = ctl.office.reserve(&op_id);
    let pair = Pair {
        v: duplex_core::model::SCHEMA_VERSION,
        name: req.name.clone(),
        members: [a.name.clone(), b.name.clone()],
        vip: req.vip,
        prefix_len: req.prefix_len,
        active: Slot::A,
        token: 1,
        phase: PairPhase::Creating,
        created_ms: now_ms(),
        journal: Some(Journal {
            op: op_id.clone(),
            workflow: Workflow::Create,
            intent: None,
        }),
        replica_key: Some(new_replica_key()?),
    };
    let pkey = format!("{PAIRS}{}", pair.name);
    ctl.repo
        .put(&pkey, &pair, Expect::Absent)
        .await
        .map_err(|_| {
            ApiError::conflict(format!(
                "field `name`: a pair `{}` already exists",
                pair.name
            ))
        })?;
    for (spec, host) in [(a, &h0), (b, &h1)] {
        let vm = Vm {
            v: duplex_core::model::SCHEMA_VERSION,
            spec: spec.clone(),
            host: host.clone(),
            desired: Desired::Running,
            pair: Some(pair.name.clone()),
            restore: None,
            backup: None,
            replica_site: None,
            site_policy: None,
            created_ms: now_ms(),
        };
        if let Err(e) = ctl
            .repo
            .put(&format!("{VMS}{}", spec.name), &vm, Expect::Absent)
            .await
        {
            // Undo what this request wrote.
            let _ = ctl
                .repo
                .delete(&format!("{VMS}{}", a.name), Expect::Any)
                .await;
            let _ = ctl.repo.delete(&pkey, Expect::Any).await;
            return Err(e.into());
        }
        crate::service_data::note_init_info(&ctl, &vm).await;
    }
    // Once recorded, the pair is created even if this request fails from
    // here on: the recovery pass runs the create again.
    let subject = format!("pair/{}", pair.name);
    let (op, handle) = ops::record(&ctl, op_id, OpKind::PairCreate, &subject).await?;
    ctl.events
        .emit(
            Severity::Info,
            "pair.created",
            &format!("pair/{}", pair.name),
            format!(
                "pair {}: ACT {} on {h0}, SBY {} on {h1}, service address {}",
                pair.name, a.name, b.name, pair.vip
            ),
        )
        .await;
    ctl.kick.notify_one();
    ctl.office
        .spawn(guard, pairs::create_flow(ctl.clone(), pair.clone(), handle));
    let pair = view(&ctl, pair).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            pair,
            operation: op,
        }),
    ))
}

/// A fresh replication key for a new pair's guests, from the kernel.
fn new_replica_key() -> Result<ReplicaKey, ApiError> {
    use std::io::Read;
    let mut k = [0u8; duplex_core::replica_key::KEY_LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot read /dev/urandom: {e}"),
            )
        })?;
    Ok(ReplicaKey(k))
}

pub async fn switchover(
    ctl: Shared,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let ctl = ctl.0;
    let (operation, pair) = pairs::start_switchover(&ctl, &name)
        .await
        .map_err(|e| lifecycle_error(&name, e))?;
    let pair = view(&ctl, pair).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { pair, operation })))
}

pub async fn delete(
    ctl: Shared,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let ctl = ctl.0;
    let (operation, pair) = pairs::start_delete(&ctl, &name)
        .await
        .map_err(|e| lifecycle_error(&name, e))?;
    let pair = view(&ctl, pair).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { pair, operation })))
}

/// A workflow that could not start, as the API says it.
pub fn lifecycle_error(name: &str, e: LifecycleError) -> ApiError {
    match e {
        LifecycleError::Repo(crate::repo::RepoError::Missing(_)) => no_pair(name),
        LifecycleError::Repo(e) => e.into(),
        LifecycleError::Refused { .. } | LifecycleError::Lost { .. } => {
            ApiError::conflict(e.to_string())
        }
    }
}
