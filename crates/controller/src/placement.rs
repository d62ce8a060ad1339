//! The one place where the controller decides which host takes a VM.
//! Today capacity placement (`duplex_core::model::place`); the
//! network-aware engine plugs in here.

use crate::ctl::Ctl;
use crate::error::ApiError;
use duplex_core::agent_api::HostCapacity;
use duplex_core::model::place::{place, HostRoom, PlaceError, Request};
use duplex_core::model::Desired;
use duplex_core::vm_spec::VmSpec;

/// Chooses a host for `spec`, never one in `avoid`; `only` pins it.
/// `extra` are VMs being placed in the same request (not stored yet).
pub async fn choose(
    ctl: &Ctl,
    spec: &VmSpec,
    avoid: &[String],
    only: Option<&str>,
    extra: &[(String, VmSpec)],
) -> Result<String, ApiError> {
    let hosts = ctl.hosts().await?;
    let vms = ctl.vms().await?;
    let rooms: Vec<HostRoom> = hosts
        .iter()
        .map(|h| {
            let mut used = HostCapacity {
                vcpus: 0,
                memory_mib: 0,
            };
            let placed = vms
                .iter()
                .filter(|v| v.host == h.name && v.desired == Desired::Running)
                .map(|v| &v.spec)
                .chain(
                    extra
                        .iter()
                        .filter(|(host, _)| host == &h.name)
                        .map(|(_, s)| s),
                );
            for s in placed {
                used.vcpus += s.vcpus;
                used.memory_mib += u64::from(s.memory_mib);
            }
            HostRoom {
                name: h.name.clone(),
                state: h.state,
                capacity: h.capacity,
                used,
            }
        })
        .collect();
    let req = Request {
        memory_mib: u64::from(spec.memory_mib),
        vcpus: spec.vcpus,
        avoid: avoid.to_vec(),
        only: only.map(str::to_owned),
    };
    place(&rooms, &req).map_err(|e| match e {
        PlaceError::NoRoom(_) | PlaceError::NoHosts => ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "no_capacity",
            format!("cannot place `{}`: {e}", spec.name),
        ),
        _ => ApiError::bad_request(e.to_string()),
    })
}
