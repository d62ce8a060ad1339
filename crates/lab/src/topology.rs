//! Creates the lab's namespaces, bridges and veths (see [`crate::plan`]);
//! with two sites also the site routers and the WAN link between them.
//!
//! Blocking: every step is one short iproute2 command. Nothing here undoes
//! itself on failure; the caller tears the lab down by name.

use crate::error::LabError;
use crate::ip::{ip, ip_in, ip_json};
use crate::netns;
use crate::plan::{HostPlan, LabPlan, Prefix, Site, BRIDGE, WAN_IF};
use crate::switch::SwitchKind;
use crate::wan::WanVia;

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

/// Builds the whole topology of `plan`. Assumes none of it exists. With
/// two sites it also makes the site routers and the WAN link, and answers
/// what is to delay the WAN ([`crate::wan::start`] applies it).
pub(crate) fn build(plan: &LabPlan, kind: SwitchKind) -> Result<Option<WanVia>, LabError> {
    for site in plan.site_list() {
        build_switch(plan, site)?;
    }
    for h in plan.host_plans() {
        build_host(&h, kind)?;
    }
    for site in plan.site_list() {
        build_client(plan, site, kind)?;
    }
    build_mgmt(plan, kind)?;
    if !plan.two_sites() {
        return Ok(None);
    }
    for site in plan.site_list() {
        build_router(plan, site)?;
    }
    let via = crate::wan::choose(plan);
    build_wan(plan, via)?;
    for site in plan.site_list() {
        route_over_wan(plan, site)?;
    }
    Ok(Some(via))
}

/// `site`'s switch namespace with its bridge up (a fixed MAC when it will
/// also route).
fn build_switch(plan: &LabPlan, site: Site) -> Result<(), LabError> {
    let sw = plan.site_switch_ns(site);
    tracing::info!("creating switch namespace {sw} with bridge {BRIDGE}");
    new_namespace(&sw)?;
    let mac = plan.two_sites().then(|| plan.router_mac(site));
    new_bridge(&sw, mac.as_deref())?;
    ip_in(&sw, &["link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// Host `h`'s namespace and bridge, uplinked to its site's switch.
fn build_host(h: &HostPlan, kind: SwitchKind) -> Result<(), LabError> {
    let sw = &h.switch_ns;
    tracing::info!(
        "creating host namespace {} (bridge {BRIDGE} {}/24, uplink to {sw} port {})",
        h.ns,
        h.ip,
        h.switch_if
    );
    new_namespace(&h.ns)?;
    new_bridge(&h.ns, Some(&h.bridge_mac))?;
    ip_in(
        sw,
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
    switch_port(sw, &h.switch_if, kind)?;
    ip_in(&h.ns, &["link", "set", h.uplink_if, "master", BRIDGE, "up"])?;
    ip_in(&h.ns, &["addr", "add", &LabPlan::cidr(h.ip), "dev", BRIDGE])?;
    ip_in(&h.ns, &["link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// `site`'s client namespace, on its switch.
fn build_client(plan: &LabPlan, site: Site, kind: SwitchKind) -> Result<(), LabError> {
    let (sw, cl, cl_ip) = (
        plan.site_switch_ns(site),
        plan.site_client_ns(site),
        plan.site_client_ip(site),
    );
    tracing::info!("creating client namespace {cl} ({cl_ip}/24)");
    new_namespace(&cl)?;
    let (cl_if, cl_sw_if) = (plan.client_if(), plan.client_switch_if());
    ip_in(
        &sw,
        &[
            "link", "add", cl_sw_if, "type", "veth", "peer", "name", cl_if, "netns", &cl,
        ],
    )?;
    switch_port(&sw, cl_sw_if, kind)?;
    ip_in(
        &cl,
        &["link", "set", cl_if, "address", &LabPlan::mac_for(cl_ip)],
    )?;
    ip_in(&cl, &["addr", "add", &LabPlan::cidr(cl_ip), "dev", cl_if])?;
    ip_in(&cl, &["link", "set", cl_if, "up"])?;
    Ok(())
}

/// The management veth: `<lab>mgmt` in the root namespace, on site a's switch.
fn build_mgmt(plan: &LabPlan, kind: SwitchKind) -> Result<(), LabError> {
    let sw = plan.switch_ns();
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

/// Makes `site`'s switch a router: forwarding, its address on `br0`,
/// proxy ARP there (it answers for an address only when its route leaves
/// by another interface, i.e. over the WAN: on-link VM addresses are never
/// answered for), no reverse-path filter, no redirects.
fn build_router(plan: &LabPlan, site: Site) -> Result<(), LabError> {
    let sw = plan.site_switch_ns(site);
    let ip_addr = plan.router_ip(site);
    tracing::info!("making {sw} the router of site {site} ({ip_addr}/24 on {BRIDGE}, proxy ARP)");
    netns::sysctl(
        &sw,
        &[
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.br0.rp_filter=0",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.default.send_redirects=0",
            "net.ipv4.conf.br0.send_redirects=0",
            "net.ipv4.conf.br0.proxy_arp=1",
            // Answer proxied requests at once, not after a random delay.
            "net.ipv4.neigh.br0.proxy_delay=0",
        ],
    )?;
    ip_in(
        &sw,
        &["addr", "add", &LabPlan::cidr(ip_addr), "dev", BRIDGE],
    )?;
    Ok(())
}

/// The WAN veth `wan` of both site switches, addressed and up: one pair
/// between them, or (relay) each paired with its end in `<lab>-wan`.
fn build_wan(plan: &LabPlan, via: WanVia) -> Result<(), LabError> {
    let (a, b) = (plan.site_switch_ns(Site::A), plan.site_switch_ns(Site::B));
    match via {
        WanVia::Netem => {
            tracing::info!("creating WAN link {WAN_IF} between {a} and {b}");
            veth(&a, WAN_IF, WAN_IF, &b)?;
        }
        WanVia::Relay => {
            let wan = plan.wan_ns();
            tracing::info!("creating WAN links {WAN_IF} of {a} and {b} to relay namespace {wan}");
            new_namespace(&wan)?;
            for site in Site::ALL {
                let relay_if = plan.wan_relay_if(site);
                veth(&plan.site_switch_ns(site), WAN_IF, relay_if, &wan)?;
                ip_in(&wan, &["link", "set", "dev", relay_if, "up"])?;
            }
        }
    }
    for site in Site::ALL {
        let sw = plan.site_switch_ns(site);
        ip_in(&sw, &["addr", "add", &plan.wan_cidr(site), "dev", WAN_IF])?;
        ip_in(&sw, &["link", "set", WAN_IF, "up"])?;
    }
    Ok(())
}

/// Veth `name` in `ns` with peer `peer` in `peer_ns`.
fn veth(ns: &str, name: &str, peer: &str, peer_ns: &str) -> Result<(), LabError> {
    ip_in(
        ns,
        &[
            "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_ns,
        ],
    )
    .map(drop)
}

/// `/32` routes over the WAN in `site`'s router for the other site's
/// addresses ([`LabPlan::routes_via_wan`]).
fn route_over_wan(plan: &LabPlan, site: Site) -> Result<(), LabError> {
    let sw = plan.site_switch_ns(site);
    let via = plan.wan_ip(site.other()).to_string();
    for dst in plan.routes_via_wan(site) {
        let dst = format!("{dst}/32");
        ip_in(&sw, &["route", "add", &dst, "via", &via, "dev", WAN_IF])?;
    }
    Ok(())
}
