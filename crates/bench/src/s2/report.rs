//! `bench/results/s2.md`.

use super::{Arm, Point, Results};
use std::fmt::Write;

fn us(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x >= 10_000.0 {
        format!("{:.0} ms", x / 1e3)
    } else {
        format!("{x:.0} µs")
    }
}

fn mean(ps: &[&Point], f: impl Fn(&Point) -> f64) -> f64 {
    ps.iter().map(|p| f(p)).sum::<f64>() / ps.len().max(1) as f64
}

pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# S2: epoch replication with classification\n");
    let _ = writeln!(
        md,
        "Lab on this machine ({} CPUs, {}, {}), commit {}; a 128 MiB guest, epochs of 100 ms; two UDP streams of {} datagrams/s each to the guest's echo for {} s per point: class 1 (RTP-like payload: the `rtp` rule sends it at once) and class 2 (text: no rule, held until its epoch commits). Busy: {} MiB of guest memory rewritten at {} MiB/s. Arms take turns, order reversed every other run; values are means over runs of each run's percentile. Round trips include the client's and the guest's own time (TCG).\n",
        r.info.cpus, r.info.qemu, r.info.accel, r.info.commit, r.rate_per_stream, r.secs, super::BUSY_MIB, super::BUSY_MIB_PER_S
    );
    let pages = |busy: bool| {
        let ps: Vec<&Point> = r
            .points
            .iter()
            .filter(|p| p.busy == busy && p.epochs.is_some())
            .collect();
        mean(&ps, |p| p.epochs.as_ref().map_or(f64::NAN, |e| e.pages_p50))
    };
    for busy in [false, true] {
        let _ = writeln!(md, "## {} guest\n", if busy { "Busy" } else { "Idle" });
        let shown = pages(true).partial_cmp(&(2.0 * pages(false)));
        if busy && shown != Some(std::cmp::Ordering::Greater) {
            let _ = writeln!(md, "**The load did not show**: {:.0} changed pages per epoch busy against {:.0} idle; these rows are not those of a busy guest.\n", pages(true), pages(false));
        }
        let _ = writeln!(md, "| arm | class 1 p50 / p99 | class 2 p50 / p99 | lost 1 / 2 | epoch | pause p50 / p99 / max | stop / save / scan / cont | pages p50 / max | KB p50 | commit p50 / p99 | CPU agent / QEMU |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
        for arm in [Arm::Plain, Arm::HoldAll, Arm::Classified, Arm::Switched] {
            let ps: Vec<&Point> = r
                .points
                .iter()
                .filter(|p| p.busy == busy && p.arm == arm)
                .collect();
            if ps.is_empty() {
                continue;
            }
            let m = |f: &dyn Fn(&Point) -> f64| mean(&ps, f);
            let e = |f: &dyn Fn(&super::Epochs) -> f64| {
                mean(&ps, |p| p.epochs.as_ref().map_or(f64::NAN, f))
            };
            let lost1: u64 = ps.iter().map(|p| p.class1.lost).sum();
            let lost2: u64 = ps.iter().map(|p| p.class2.lost).sum();
            let has_epochs = ps.iter().any(|p| p.epochs.is_some());
            let epoch_cols = if has_epochs {
                format!(
                    "{:.0} ms | {} / {} / {} | {} / {} / {} / {} | {:.0} / {:.0} | {:.0} | {} / {}",
                    e(&|x| x.epoch_ms),
                    us(e(&|x| x.pause_us[0])),
                    us(e(&|x| x.pause_us[1])),
                    us(e(&|x| x.pause_us[2])),
                    us(e(&|x| x.breakdown_us[0])),
                    us(e(&|x| x.breakdown_us[1])),
                    us(e(&|x| x.breakdown_us[2])),
                    us(e(&|x| x.breakdown_us[3])),
                    e(&|x| x.pages_p50),
                    e(&|x| x.pages_max),
                    e(&|x| x.kb_p50),
                    us(e(&|x| x.commit_us_p50)),
                    us(e(&|x| x.commit_us_p99)),
                )
            } else {
                "- | - | - | - | - | -".into()
            };
            let _ = writeln!(
                md,
                "| {} | {} / {} | {} / {} | {lost1} / {lost2} | {epoch_cols} | {:.0} % / {:.0} % |",
                arm.label(),
                us(m(&|p| p.class1.p50_us)),
                us(m(&|p| p.class1.p99_us)),
                us(m(&|p| p.class2.p50_us)),
                us(m(&|p| p.class2.p99_us)),
                m(&|p| p.cpu_agent_pct),
                m(&|p| p.cpu_qemu_pct),
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "## Against the goals\n");
    for busy in [false, true] {
        let of = |arm: Arm| -> Vec<&Point> {
            r.points
                .iter()
                .filter(|p| p.busy == busy && p.arm == arm)
                .collect()
        };
        let a = of(Arm::Plain);
        for arm in [Arm::Classified, Arm::Switched] {
            goals(&mut md, busy, arm, &a, &of(arm));
        }
    }
    let _ = writeln!(md, "\nThe pause is where class 1 loses its p99: the guest cannot answer while it is stopped, and the stop is mostly the scan of all 128 MiB for changed pages (TCG keeps its dirty log inside QEMU; ENVIRONMENT.md). Under KVM, QEMU's dirty log (or a dirty ring) would replace the scan; not measurable here. Two replicated VMs take epochs at once (arms (b)/(c) and (d)), so every arm runs beside the other's epochs.\n");
    for f in &r.failovers {
        let _ = writeln!(md, "## Failover of arm {}\n", f.arm.label());
        let _ = writeln!(md, "The replicated VM's host powered off 5 s into a 20 s probe. Longest gap between echoes: class 1 {:.0} ms, class 2 {:.0} ms; lost: class 1 {}, class 2 {}; duplicated: {}.\n", f.class1_gap_ms, f.class2_gap_ms, f.class1_lost, f.class2_lost, f.duplicated);
        for e in &f.events {
            let _ = writeln!(md, "- {e}");
        }
        let _ = writeln!(md);
    }
    md
}

/// One line of "against the goals": arm `arm` (points `c`) against (a).
fn goals(md: &mut String, busy: bool, arm: Arm, a: &[&Point], c: &[&Point]) {
    let added1 = mean(c, |p| p.class1.p99_us) - mean(a, |p| p.class1.p99_us);
    let pause = mean(c, |p| p.epochs.as_ref().map_or(f64::NAN, |e| e.pause_us[0]));
    let scan = mean(c, |p| {
        p.epochs.as_ref().map_or(f64::NAN, |e| e.breakdown_us[2])
    });
    let epoch = mean(c, |p| p.epochs.as_ref().map_or(f64::NAN, |e| e.epoch_ms));
    let _ = writeln!(
            md,
            "- {} guest, {}: class 1 adds {} at p50 and {} at p99 to (a) (goal: within 1 ms at p99: {}); class 2 waits {} at p50, {} at p99 (goal: within one epoch of {epoch:.0} ms plus the round trip: {}); epochs {epoch:.0} ms (goal ≤ 200 ms); pause {} at p50 (goal ≤ 10 ms: {}), of which the page scan {}.",
            if busy { "Busy" } else { "Idle" },
            arm.label(),
            us(mean(c, |p| p.class1.p50_us) - mean(a, |p| p.class1.p50_us)),
            us(added1),
            if added1 <= 1000.0 { "met" } else { "not met: a packet that arrives while the guest is paused waits for the pause" },
            us(mean(c, |p| p.class2.p50_us)),
            us(mean(c, |p| p.class2.p99_us)),
            if mean(c, |p| p.class2.p99_us) <= epoch * 1e3 + mean(a, |p| p.class2.p99_us) { "met" } else { "not met at p99: a frame produced just after a checkpoint waits that epoch, its pause and its commit" },
            us(pause),
            if pause <= 10_000.0 { "met" } else { "not met under TCG" },
            us(scan),
        );
}
