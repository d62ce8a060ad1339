//! Creates the lab's namespaces, bridges and veths (see [`crate::plan`]).
//!
//! Blocking: every step is one short iproute2 command. Nothing here undoes
//! itself on failure; the caller tears the lab down by name.

use crate::error::LabError;
use crate::ip::{ip, ip_in, ip_json};
use crate::netns;
use crate::plan::{LabPlan, Prefix, BRIDGE};
use crate::switch::SwitchKind;

/// Refuses if an address or a route in the root namespace lies inside the
/// lab's subnet (another lab with the same index, or a real network). A
/// broader route that merely contains it (say `10.0.0.0/8`) is only logged:
/// the lab's `/24` takes precedence for its own addresses.
pub(crate) fn check_subnet_free(plan: &LabPlan) -> Result<(), LabError> {
    let subnet = plan.subnet();
    let net = Prefix::parse(&subnet).ok_or_else(|| LabError::Output {
        cmdline: "plan".into(),
        detail: format!("bad subnet {subnet}"),
    })?;
    let in_use = |used_by: String| LabError::SubnetInUse {
        lab: plan.lab().to_string(),
        subnet: subnet.clone(),
        used_by,
    };

    let links = ip_json(&["-4", "addr", "show"])?;
    for link in links.as_array().into_iter().flatten() {
        let dev = link.get("ifname").and_then(|v| v.as_str()).unwrap_or("?");
        for a in link
            .get("addr_info")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let Some(local) = a.get("local").and_then(|v| v.as_str()) else {
                continue;
            };
            if let Some(p) = Prefix::parse(local) {
                if net.contains(&p) {
                    return Err(in_use(format!("address {local} on {dev}")));
                }
            }
        }
    }

    let routes = ip_json(&["-4", "route", "show"])?;
    for r in routes.as_array().into_iter().flatten() {
        let Some(dst) = r.get("dst").and_then(|v| v.as_str()) else {
            continue;
        };
        let Some(p) = Prefix::parse(dst) else {
            continue; // "default" and the like
        };
        let dev = r.get("dev").and_then(|v| v.as_str()).unwrap_or("?");
        if net.contains(&p) {
            return Err(in_use(format!("route {dst} dev {dev}")));
        }
        if p.contains(&net) && p.len > 0 {
            tracing::warn!(
                "route {dst} dev {dev} covers the lab subnet {subnet}; the lab's own /24 takes precedence for it"
            );
        }
    }
    Ok(())
}

/// A fresh namespace with IPv6 off (no DAD/RS noise) and `lo` up.
fn new_namespace(ns: &str) -> Result<(), LabError> {
    netns::add(ns)?;
    netns::sysctl(
        ns,
        &[
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    )?;
    ip_in(ns, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Bridge `br0` in `ns`, forwarding at once (`forward_delay 0`, STP off,
/// default ageing), optionally with a fixed MAC.
fn new_bridge(ns: &str, mac: Option<&str>) -> Result<(), LabError> {
    let mut args = vec!["link", "add", BRIDGE];
    if let Some(mac) = mac {
        args.extend(["address", mac]);
    }
    args.extend(["type", "bridge", "forward_delay", "0", "stp_state", "0"]);
    ip_in(ns, &args)?;
    Ok(())
}

/// Puts switch port `ifname` up: on `br0`, or alone for the Duplex switch
/// to take.
fn switch_port(sw: &str, ifname: &str, kind: SwitchKind) -> Result<(), LabError> {
    match kind {
        SwitchKind::Bridge => ip_in(sw, &["link", "set", ifname, "master", BRIDGE, "up"])?,
        SwitchKind::Duplex => ip_in(sw, &["link", "set", ifname, "up"])?,
    };
    Ok(())
}

/// Builds the whole topology of `plan`. Assumes none of it exists.
pub(crate) fn build(plan: &LabPlan, kind: SwitchKind) -> Result<(), LabError> {
    let sw = plan.switch_ns();

    tracing::info!("creating switch namespace {sw} with bridge {BRIDGE}");
    new_namespace(&sw)?;
    new_bridge(&sw, None)?;
    ip_in(&sw, &["link", "set", BRIDGE, "up"])?;

    for h in plan.host_plans() {
        tracing::info!(
            "creating host namespace {} (bridge {BRIDGE} {}/24, uplink to {sw} port {})",
            h.ns,
            h.ip,
            h.switch_if
        );
        new_namespace(&h.ns)?;
        new_bridge(&h.ns, Some(&h.bridge_mac))?;
        ip_in(
            &sw,
            &[
                "link",
                "add",
                &h.switch_if,
                "type",
                "veth",
                "peer",
                "name",
                h.uplink_if,
                "netns",
                &h.ns,
            ],
        )?;
        switch_port(&sw, &h.switch_if, kind)?;
        ip_in(&h.ns, &["link", "set", h.uplink_if, "master", BRIDGE, "up"])?;
        ip_in(&h.ns, &["addr", "add", &LabPlan::cidr(h.ip), "dev", BRIDGE])?;
        ip_in(&h.ns, &["link", "set", BRIDGE, "up"])?;
    }

    let cl = plan.client_ns();
    tracing::info!("creating client namespace {cl} ({}/24)", plan.client_ip());
    new_namespace(&cl)?;
    let (cl_if, cl_sw_if) = (plan.client_if(), plan.client_switch_if());
    ip_in(
        &sw,
        &[
            "link", "add", cl_sw_if, "type", "veth", "peer", "name", cl_if, "netns", &cl,
        ],
    )?;
    switch_port(&sw, cl_sw_if, kind)?;
    ip_in(&cl, &["link", "set", cl_if, "address", &plan.client_mac()])?;
    ip_in(
        &cl,
        &[
            "addr",
            "add",
            &LabPlan::cidr(plan.client_ip()),
            "dev",
            cl_if,
        ],
    )?;
    ip_in(&cl, &["link", "set", cl_if, "up"])?;

    let mg = plan.mgmt_if();
    let mg_sw = plan.mgmt_switch_if();
    tracing::info!(
        "creating management link {mg} ({}/24) in the root namespace",
        plan.mgmt_ip()
    );
    ip(&[
        "link",
        "add",
        &mg,
        "address",
        &plan.mgmt_mac(),
        "type",
        "veth",
        "peer",
        "name",
        mg_sw,
        "netns",
        &sw,
    ])?;
    switch_port(&sw, mg_sw, kind)?;
    ip(&["addr", "add", &LabPlan::cidr(plan.mgmt_ip()), "dev", &mg])?;
    ip(&["link", "set", &mg, "up"])?;
    Ok(())
}
