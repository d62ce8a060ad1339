//! The one place where the controller decides which host takes a VM: the
//! network-aware engine (`duplex_core::placement`, design S4) over the
//! registered hosts, the recorded VMs, the topology (`--topology FILE`, or
//! one rack holding every host) and the traffic measured by the agents'
//! network elements.

use crate::ctl::Ctl;
use crate::error::ApiError;
use axum::http::StatusCode;
use duplex_core::model::place::VCPU_OVERCOMMIT;
use duplex_core::model::{Desired, Host, HostState, Vm};
use duplex_core::placement::load;
use duplex_core::placement::relief::Due;
use duplex_core::placement::relief_plan::{self, Step};
use duplex_core::placement::topology::HostAttach;
use duplex_core::placement::{
    ClusterState, Decision, Engine, Explanation, HostInfo, HostState as PHostState, Params,
    PlacementError, Topology, TopologyConfig, VmInfo,
};
use duplex_core::vm_spec::VmSpec;
use std::collections::{BTreeMap, BTreeSet};

/// Name of the rack every host is in when no topology file is given.
pub const DEFAULT_RACK: &str = "rack-1";

/// The topology to place over: the configured one, or one rack of all
/// hosts; its racks' uplinks loaded with the traffic measured across them.
pub fn topology(
    cfg: Option<&TopologyConfig>,
    hosts: &[Host],
    vms: &[Vm],
    matrix: &duplex_core::placement::TrafficMatrix,
) -> Result<Topology, ApiError> {
    let configured = match cfg {
        Some(c) => c.clone(),
        None => TopologyConfig {
            switches: vec![DEFAULT_RACK.into()],
            hosts: hosts
                .iter()
                .map(|h| HostAttach {
                    name: h.name.clone(),
                    attach: DEFAULT_RACK.into(),
                })
                .collect(),
            links: Vec::new(),
        },
    };
    let rack_of_host = configured
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.attach.clone()))
        .collect();
    let host_of_vm = vms
        .iter()
        .map(|v| (v.spec.name.clone(), v.host.clone()))
        .collect();
    let bytes = load::uplink_bytes(&rack_of_host, &host_of_vm, matrix);
    Topology::from_config(&load::with_measured_uplinks(&configured, &bytes))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "topology", e.to_string()))
}

/// The rack a host is cabled to, per the configured topology.
pub fn rack_of(cfg: Option<&TopologyConfig>, host: &str) -> Option<String> {
    match cfg {
        Some(c) => c
            .hosts
            .iter()
            .find(|h| h.name == host)
            .map(|h| h.attach.clone()),
        None => Some(DEFAULT_RACK.into()),
    }
}

fn state_of(s: HostState) -> PHostState {
    match s {
        HostState::Ready => PHostState::Ready,
        HostState::Maintenance => PHostState::Maintenance,
        HostState::Failed => PHostState::Failed,
        HostState::Spare => PHostState::Spare,
    }
}

/// A VM to add to the cluster for this decision (not stored yet).
pub struct Extra {
    pub spec: VmSpec,
    pub host: Option<String>,
    pub pair_peer: Option<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

fn vm_info(spec: &VmSpec, host: Option<String>, pair_peer: Option<String>) -> VmInfo {
    VmInfo {
        name: spec.name.clone(),
        host,
        cpu: spec.vcpus,
        mem_mib: u64::from(spec.memory_mib),
        dirty_bytes_per_s: 0.0,
        pair_peer,
        include: Vec::new(),
        exclude: Vec::new(),
        site: None,
    }
}

fn engine_error(vm: &str, e: PlacementError) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "no_capacity",
        format!("cannot place `{vm}`: {e}"),
    )
}

/// Builds the engine's inputs and runs `f` on the engine. Hosts in
/// `loaded` take nothing: the rebalancer's moves avoid hosts above its low
/// mark; other placements (a new VM, a member re-created after a host
/// loss, a drain) are not held back by measured load.
async fn with_engine<T>(
    ctl: &Ctl,
    (extra, loaded): (Vec<Extra>, Option<BTreeSet<String>>),
    exclude_for: Option<(&str, &[String], Option<&str>)>,
    f: impl FnOnce(&mut Engine) -> Result<T, PlacementError>,
    subject: &str,
) -> Result<T, ApiError> {
    let hosts = ctl.hosts().await?;
    let vms: Vec<Vm> = ctl.vms().await?;
    let cfg = ctl.topology.as_ref();
    let matrix = ctl.traffic_matrix(&vms);
    let topo = topology(cfg, &hosts, &vms, &matrix)?;
    // Hosts the topology does not know cannot be placed on.
    let known: Vec<&Host> = hosts
        .iter()
        .filter(|h| topo.host_id(&h.name).is_some())
        .collect();
    let known_names: BTreeSet<&str> = known.iter().map(|h| h.name.as_str()).collect();
    let on_known =
        |h: &Option<String>| h.as_ref().is_some_and(|h| known_names.contains(h.as_str()));
    let loaded = loaded.unwrap_or_default();
    let mut state = ClusterState::default();
    let running: Vec<&Vm> = vms
        .iter()
        .filter(|v| v.desired == Desired::Running)
        .collect();
    // Each host's VMs at once (not a pass over every VM per host).
    let mut by_host: BTreeMap<&str, Vec<&VmSpec>> = BTreeMap::new();
    for v in &running {
        by_host.entry(v.host.as_str()).or_default().push(&v.spec);
    }
    for h in &known {
        let (mut cpu, mut mem) = (0u32, 0u64);
        let placed = by_host
            .get(h.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .chain(
                extra
                    .iter()
                    .filter(|e| e.host.as_deref() == Some(h.name.as_str()))
                    .map(|e| &e.spec),
            );
        for s in placed {
            cpu += s.vcpus;
            mem += u64::from(s.memory_mib);
        }
        state.hosts.push(HostInfo {
            name: h.name.clone(),
            cpu: h.capacity.vcpus * VCPU_OVERCOMMIT,
            mem_mib: h.capacity.memory_mib,
            used_cpu: cpu,
            used_mem_mib: mem,
            state: match state_of(h.state) {
                PHostState::Ready if loaded.contains(&h.name) => PHostState::Loaded,
                s => s,
            },
            site: h.site.clone(),
            migrations_in_flight: ctl.migrations.on(&h.name),
        });
    }
    let pairs = ctl.pairs().await?;
    let pair_of: BTreeMap<&str, &duplex_core::model::Pair> =
        pairs.iter().map(|p| (p.name.as_str(), p)).collect();
    let running_names: BTreeSet<&str> = running.iter().map(|v| v.spec.name.as_str()).collect();
    for v in &running {
        let host = Some(v.host.clone()).filter(|_| on_known(&Some(v.host.clone())));
        let peer = v
            .pair
            .as_ref()
            .and_then(|p| pair_of.get(p.as_str()))
            .and_then(|p| p.members.iter().find(|m| **m != v.spec.name).cloned());
        let peer = peer.filter(|p| {
            running_names.contains(p.as_str()) || extra.iter().any(|e| &e.spec.name == p)
        });
        let mut info = vm_info(&v.spec, host, peer);
        if let Some((vm, avoid, site)) = exclude_for {
            if vm == v.spec.name {
                info.exclude = avoid
                    .iter()
                    .filter(|h| known.iter().any(|k| &&k.name == h))
                    .cloned()
                    .collect();
                info.site = site.map(str::to_string);
            }
        }
        state.vms.push(info);
    }
    for e in &extra {
        let mut i = vm_info(
            &e.spec,
            e.host.clone().filter(|_| on_known(&e.host)),
            e.pair_peer.clone(),
        );
        let keep = |l: &[String]| {
            l.iter()
                .filter(|h| known.iter().any(|k| &&k.name == h))
                .cloned()
                .collect::<Vec<_>>()
        };
        i.include = keep(&e.include);
        i.exclude = keep(&e.exclude);
        if !e.include.is_empty() && i.include.is_empty() {
            return Err(ApiError::bad_request(format!(
                "field `host`: {} is not in the topology",
                e.include.join(", ")
            )));
        }
        state.vms.push(i);
    }
    let mut engine = Engine::new(&topo, &state, &matrix, Params::default())
        .map_err(|e| engine_error(subject, e))?;
    f(&mut engine).map_err(|e| engine_error(subject, e))
}

/// Chooses a host for a new VM `spec`; `only` pins it. `peer` is the
/// other member of its pair, placed earlier in the same request
/// (its host, its spec): the engine's anti-affinity keeps them apart.
pub async fn choose(
    ctl: &Ctl,
    spec: &VmSpec,
    only: Option<&str>,
    peer: Option<(&str, &VmSpec)>,
) -> Result<String, ApiError> {
    let hosts = ctl.hosts().await?;
    if hosts.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_capacity",
            "no host has registered with the controller yet: start an agent with --controller",
        ));
    }
    let largest = hosts
        .iter()
        .map(|h| h.capacity.memory_mib)
        .max()
        .unwrap_or(0);
    if u64::from(spec.memory_mib) > largest {
        return Err(ApiError::bad_request(format!(
            "field `memory_mib`: {} MiB is more than any host has ({largest} MiB on the largest)",
            spec.memory_mib
        )));
    }
    if let Some(h) = only {
        if !hosts.iter().any(|x| x.name == h) {
            return Err(ApiError::bad_request(format!(
                "field `host`: no host `{h}` is registered"
            )));
        }
    }
    let mut all: Vec<Extra> = Vec::new();
    if let Some((host, p)) = peer {
        all.push(Extra {
            spec: p.clone(),
            host: Some(host.to_string()),
            pair_peer: Some(spec.name.clone()),
            include: Vec::new(),
            exclude: Vec::new(),
        });
    }
    all.push(Extra {
        spec: spec.clone(),
        host: None,
        pair_peer: peer.map(|(_, p)| p.name.clone()),
        include: only.map(|h| vec![h.to_string()]).unwrap_or_default(),
        exclude: Vec::new(),
    });
    let name = spec.name.clone();
    let d = with_engine(ctl, (all, None), None, |e| e.place_new(&name), &spec.name).await?;
    Ok(d.to)
}

/// Where a running VM should go (`--to auto`).
pub async fn decide(ctl: &Ctl, vm: &str) -> Result<Decision, ApiError> {
    with_engine(ctl, (Vec::new(), None), None, |e| e.decide(vm), vm).await
}

/// Where a running VM should go, never to a host in `avoid` (e.g. where
/// its pair peer is headed).
pub async fn decide_avoiding(ctl: &Ctl, vm: &str, avoid: &[String]) -> Result<Decision, ApiError> {
    with_engine(
        ctl,
        (Vec::new(), None),
        Some((vm, avoid, None)),
        |e| e.decide(vm),
        vm,
    )
    .await
}

/// Where `vm`'s replica should be kept in `site` (S5), never on `avoid`.
pub async fn decide_in_site(
    ctl: &Ctl,
    vm: &str,
    avoid: &[String],
    site: &str,
) -> Result<Decision, ApiError> {
    with_engine(
        ctl,
        (Vec::new(), None),
        Some((vm, avoid, Some(site))),
        |e| e.decide(vm),
        vm,
    )
    .await
}

/// Every host's filter verdict and factor terms for `vm`.
pub async fn explain(ctl: &Ctl, vm: &str) -> Result<Explanation, ApiError> {
    with_engine(ctl, (Vec::new(), None), None, |e| e.explain(vm), vm).await
}

/// Refuses an operator's explicit destination `to` for `vm` unless it
/// passes the filters placement's own choice must pass, naming the
/// filter and its reason.
pub async fn check_destination(ctl: &Ctl, vm: &str, to: &str) -> Result<(), ApiError> {
    let ex = explain(ctl, vm).await?;
    match ex.hosts.iter().find(|h| h.host == to).map(|h| &h.verdict) {
        None => Err(ApiError::bad_request(format!(
            "field `to`: host `{to}` is not in the topology"
        ))),
        Some(duplex_core::placement::explain::Verdict::Fail { filter, reason }) => {
            Err(ApiError::conflict(format!(
                "field `to`: {to} cannot take `{vm}`: {} ({reason})",
                filter.as_str()
            )))
        }
        Some(_) => Ok(()),
    }
}

/// Targets for the members of `pair` that run on `from`: `to` (if it
/// passes the filters), or placement's choice (never the other member's
/// host or target).
pub async fn targets(
    ctl: &Ctl,
    pair: &duplex_core::model::Pair,
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
            check_destination(ctl, &pair.members[i], to).await?;
            to.to_string()
        };
        t[i] = Some(dest);
    }
    Ok(t)
}

/// What relieving the hosts `due` takes (see `relief_plan`), weighed
/// as `pass` says; hosts in `loaded` receive nothing.
pub async fn relief_steps(
    ctl: &Ctl,
    due: &[Due],
    pass: relief_plan::Pass<'_>,
    loaded: BTreeSet<String>,
) -> Result<Vec<Step>, ApiError> {
    let plan = |e: &mut Engine| relief_plan::plan(e, due, pass);
    with_engine(
        ctl,
        (Vec::new(), Some(loaded)),
        None,
        plan,
        "the rebalancer",
    )
    .await
}
