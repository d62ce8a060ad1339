//! `bench/results/s5.md`.

use crate::s5::{Arm, Point, Results};
use duplex_lab::ledger_probe::LedgerReport;
use duplex_sipp::SippReport;
use std::fmt::Write;

fn label(arm: Arm) -> &'static str {
    match arm {
        Arm::Duplex => "(a) Duplex, switching on its policy",
        Arm::AcrossWan => "(b) one VM in site a, site b across the WAN",
    }
}

/// lost / answered twice / out of order or twice, summed over reports.
fn faults(rs: &[&LedgerReport]) -> String {
    let sum = |f: fn(&LedgerReport) -> u64| rs.iter().map(|r| f(r)).sum::<u64>();
    let sent = sum(|r| r.sent);
    let lost = sum(|r| r.lost);
    let dup = sum(|r| r.duplicate_answers + r.processed_twice);
    let reordered = sum(|r| r.skipped + r.late + r.answers_out_of_order);
    format!("{sent} / {lost} / {dup} / {reordered}")
}

fn times(rs: &[&LedgerReport]) -> String {
    let mean =
        |f: fn(&LedgerReport) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / rs.len().max(1) as f64;
    format!(
        "{:.1} / {:.0} / {:.0}",
        mean(|r| r.rtt_p50_ms),
        mean(|r| r.rtt_p99_ms),
        mean(|r| r.rtt_max_ms)
    )
}

pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# S5: one VM, two sites\n");
    let _ = writeln!(
        md,
        "Two-site lab on this machine ({} CPUs, {}, {}), commit {}: h1 in site a, h2 in site b, a WAN of {} ms RTT between them (a user-space relay: this kernel has no netem). A 128 MiB guest per arm; in each site a request-ledger client sends {} numbered UDP requests/s for {} s (then listens {} s more); the guest judges each request in order, skipped, late or twice. Arms take turns. (a) switches when the other site's oldest buffered request has waited {} ms (and stays at least 1 s). Response times include the time a request waited in the other site's buffer.\n",
        r.info.cpus, r.info.qemu, r.info.accel, r.info.commit, r.wan_rtt_ms, r.rate_per_site, r.secs, crate::s5::GRACE_S_PUB, r.max_age_ms
    );
    let _ = writeln!(md, "WAN KB/s is both directions at site a's end over the point; (b)'s includes (a)'s VM idling in the background (its epochs cross the WAN).\n");
    let _ = writeln!(
        md,
        "| arm | site | sent / lost / twice / reordered | response p50 / p99 / max ms | WAN KB/s |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for arm in [Arm::Duplex, Arm::AcrossWan] {
        let ps: Vec<&Point> = r.points.iter().filter(|p| p.arm == arm).collect();
        if ps.is_empty() {
            continue;
        }
        let wan = ps.iter().map(|p| p.wan_bytes_per_s).sum::<f64>() / ps.len() as f64 / 1e3;
        for (site, get) in [
            (
                "a",
                (|p: &Point| p.site_a.clone()) as fn(&Point) -> LedgerReport,
            ),
            ("b", |p: &Point| p.site_b.clone()),
        ] {
            let reps: Vec<LedgerReport> = ps.iter().map(|p| get(p)).collect();
            let refs: Vec<&LedgerReport> = reps.iter().collect();
            let _ = writeln!(
                md,
                "| {} | {site} | {} | {} | {wan:.0} |",
                label(arm),
                faults(&refs),
                times(&refs)
            );
        }
    }
    sip_table(&mut md, r);
    let sw: Vec<(u64, u64)> = r
        .points
        .iter()
        .flat_map(|p| p.switches_ms.clone())
        .collect();
    if !sw.is_empty() {
        let mut running: Vec<u64> = sw.iter().map(|s| s.0).collect();
        running.sort_unstable();
        let mut done: Vec<u64> = sw.iter().map(|s| s.1).collect();
        done.sort_unstable();
        let duplex: Vec<&Point> = r.points.iter().filter(|p| p.arm == Arm::Duplex).collect();
        let mean = |f: fn(&Point) -> f64| {
            duplex.iter().map(|p| f(p)).sum::<f64>() / duplex.len().max(1) as f64
        };
        let _ = writeln!(
            md,
            "\n**Switches of (a)**: {} in all; from the switch's start to the VM running on the other side (its buffered requests are then processed first) p50 {} ms, max {} ms; whole switch (with the new replica's epochs started) p50 {} ms, max {} ms. State per switch: the last checkpoint (median checkpoint {:.0} KB), then a first round to the new replica of {:.1} MB (0: epochs go on from the state both sides hold).\n",
            sw.len(),
            running[running.len() / 2],
            running[running.len() - 1],
            done[done.len() / 2],
            done[done.len() - 1],
            mean(|p| p.checkpoint_bytes) / 1e3,
            mean(|p| p.first_round_bytes) / 1e6,
        );
    }
    if let Some(l) = &r.loss {
        let _ = writeln!(md, "## Site a lost (h1 powered off, both VMs on it)\n");
        let _ = writeln!(md, "| arm | site b's requests during the loss: sent / lost / twice / reordered | power-off to serving in site b | site a's answered requests the VM running on lacks |");
        let _ = writeln!(md, "|---|---|---|---|");
        let _ = writeln!(md, "| (a) Duplex: the replica runs it in site b, its buffer first | {} | {:.1} s | {} (lag shown before the loss: {} ms) |", faults(&[&l.duplex_b]), l.duplex_back_ms / 1e3, l.duplex_forgotten, l.duplex_lag_ms);
        let _ = writeln!(md, "| (c) cold recovery: a new VM booted in site b from the image | {} | {:.1} s (address free after {:.1} s, then the boot) | {} (all: a new VM) |", faults(&[&l.cold_b]), l.cold_back_ms / 1e3, l.cold_address_free_ms / 1e3, l.cold_forgotten);
        let _ = writeln!(md, "\nThe loss detection and fencing are the controller's (the lab's power switch); the site b clients' requests to (c) during the outage were sent to an address nobody served, and the new VM's ledger starts empty (its first request counts as skipped). (a)'s site b requests had been buffered where the replica was, never processed elsewhere.");
    }
    md
}

/// sipp in both sites, summed (calls) and averaged (times) over runs.
fn sip_table(md: &mut String, r: &Results) {
    let _ = writeln!(
        md,
        "\n**SIP** (the guest's SIP service at its service address, claimed by the guest; sipp's built-in UAC in each site, {} calls/s of {} ms, at the same time as the ledger clients; a retransmission is sipp resending a request its answer had not come for within 500 ms, T1):\n",
        crate::s5::SIP_RATE_CPS,
        crate::s5::SIP_CALL_MS
    );
    let _ = writeln!(
        md,
        "| arm | site | calls / successful / failed | retransmissions | response p50 / p99 / max ms |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for arm in [Arm::Duplex, Arm::AcrossWan] {
        let ps: Vec<&Point> = r.points.iter().filter(|p| p.arm == arm).collect();
        if ps.is_empty() {
            continue;
        }
        for (site, get) in [
            ("a", (|p: &Point| &p.sip_a) as fn(&Point) -> &SippReport),
            ("b", |p: &Point| &p.sip_b),
        ] {
            let reps: Vec<&SippReport> = ps.iter().map(|p| get(p)).collect();
            let sum = |f: fn(&SippReport) -> u64| reps.iter().map(|s| f(s)).sum::<u64>();
            let rts: Vec<&duplex_sipp::ResponseTimes> = reps
                .iter()
                .filter_map(|s| s.response_time_ms.as_ref())
                .collect();
            let mean = |f: fn(&duplex_sipp::ResponseTimes) -> f64| {
                rts.iter().map(|t| f(t)).sum::<f64>() / rts.len().max(1) as f64
            };
            let _ = writeln!(
                md,
                "| {} | {site} | {} / {} / {} | {} | {:.0} / {:.0} / {:.0} |",
                label(arm),
                sum(|s| s.total_calls),
                sum(|s| s.successful),
                sum(|s| s.failed),
                sum(|s| s.retransmissions),
                mean(|t| t.p50),
                mean(|t| t.p99),
                mean(|t| t.max),
            );
        }
    }
}
