//! The lab's PKI: a CA under the lab's state directory, and a bundle for
//! its controller, its etcd, each host's agent and the lab's operator (admin, so
//! the CLI can also reach the agents directly). Made at `up`, gone at
//! `down` with the state directory.

use crate::error::LabError;
use crate::plan::LabPlan;
use duplex_core::identity::{Identity, Scope};
use duplex_tls::pki::{IssueRequest, Pki, ISSUED_DIR};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// The lab operator's name in its certificate.
pub const OPERATOR: &str = "lab";

fn tls(e: duplex_tls::TlsError) -> LabError {
    LabError::Tls(e.to_string())
}

/// `<state dir>/pki`.
pub fn dir(lab: &str) -> PathBuf {
    crate::plan::state_dir(lab).join("pki")
}

/// The bundle directory of `id` in lab `lab`.
pub fn bundle(lab: &str, id: &Identity) -> PathBuf {
    dir(lab).join(ISSUED_DIR).join(id.dns_name())
}

pub fn operator_identity() -> Identity {
    Identity::Operator {
        name: OPERATOR.into(),
        scope: Scope::Admin,
    }
}

/// Makes the CA and every bundle the lab's processes use.
pub(crate) fn make(plan: &LabPlan) -> Result<(), LabError> {
    let pki = Pki::init(&dir(plan.lab())).map_err(tls)?;
    let mut ctl = IssueRequest::new(Identity::Controller);
    ctl.ips = vec![IpAddr::V4(plan.mgmt_ip()), IpAddr::V4(Ipv4Addr::LOCALHOST)];
    pki.issue(&ctl).map_err(tls)?;
    for h in plan.host_plans() {
        let mut a =
            IssueRequest::new(Identity::agent(&h.name).map_err(|e| LabError::Tls(e.to_string()))?);
        a.ips = vec![IpAddr::V4(h.ip)];
        pki.issue(&a).map_err(tls)?;
    }
    // The lab's etcd (with --store etcd) serves on loopback.
    let mut store = IssueRequest::new(Identity::Store);
    store.ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    pki.issue(&store).map_err(tls)?;
    pki.issue(&IssueRequest::new(operator_identity()))
        .map_err(tls)?;
    Ok(())
}

/// An HTTPS client of lab `lab`'s operator, shaped by `shape`.
pub fn operator_client(
    lab: &str,
    shape: duplex_tls::client::Shape,
) -> Result<reqwest::Client, LabError> {
    let bundle = duplex_tls::Bundle::new(bundle(lab, &operator_identity()));
    Ok(duplex_tls::client::Clients::new(bundle, shape)
        .map_err(tls)?
        .get())
}
