//! `bench/results/element.{json,md}`: every point, and per phase, size,
//! rate and arm the medians over the runs.

use super::pipeline_only::Alone;
use super::{Impl, Plan, Point, SIZES};
use crate::stats::{summarize, RunInfo};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
struct Row {
    phase: &'static str,
    size: usize,
    rate: u32,
    arm: Impl,
    echoed_pct: f64,
    rtt_us_p50: f64,
    rtt_us_p99: f64,
    added_us_p50: f64,
    added_us_p99: f64,
    cpu_us_per_frame: Option<f64>,
    frames_per_core_s: Option<f64>,
}

#[derive(Serialize)]
struct Results<'a> {
    info: &'a RunInfo,
    runs: usize,
    secs_per_point: f64,
    pipeline_alone: &'a Alone,
    rows: Vec<Row>,
    points: &'a [Point],
}

fn median(points: &[&Point], f: impl Fn(&Point) -> Option<f64>) -> Option<f64> {
    let xs: Vec<f64> = points.iter().filter_map(|p| f(p)).collect();
    (!xs.is_empty()).then(|| summarize(&xs).median)
}

fn rows(points: &[Point]) -> Vec<Row> {
    let mut keys: Vec<(&'static str, usize, u32)> =
        points.iter().map(|p| (p.phase, p.size, p.rate)).collect();
    keys.dedup();
    keys.sort_by_key(|k| (k.0 != "micro", k.1, k.2));
    keys.dedup();
    let mut out = Vec::new();
    for (phase, size, rate) in keys {
        let of = |arm: Impl| -> Vec<&Point> {
            points
                .iter()
                .filter(|p| (p.phase, p.size, p.rate, p.arm) == (phase, size, rate, arm))
                .collect()
        };
        let plain = of(Impl::Plain);
        let base50 = median(&plain, |p| p.probed.rtt_us_p50).unwrap_or(f64::NAN);
        let base99 = median(&plain, |p| p.probed.rtt_us_p99).unwrap_or(f64::NAN);
        for arm in [Impl::Plain, Impl::Legacy, Impl::Fast] {
            let ps = of(arm);
            let p50 = median(&ps, |p| p.probed.rtt_us_p50).unwrap_or(f64::NAN);
            let p99 = median(&ps, |p| p.probed.rtt_us_p99).unwrap_or(f64::NAN);
            let cpu = median(&ps, |p| p.cpu_us_per_frame);
            out.push(Row {
                phase,
                size,
                rate,
                arm,
                echoed_pct: median(&ps, |p| {
                    Some(100.0 * p.probed.received as f64 / p.probed.sent.max(1) as f64)
                })
                .unwrap_or(f64::NAN),
                rtt_us_p50: p50,
                rtt_us_p99: p99,
                added_us_p50: p50 - base50,
                added_us_p99: p99 - base99,
                cpu_us_per_frame: cpu,
                frames_per_core_s: cpu.filter(|c| *c > 0.0).map(|c| 1e6 / c),
            });
        }
    }
    out
}

fn table(md: &mut String, rows: &[Row], phase: &str, size: usize) {
    let _ = writeln!(
        md,
        "| echoes/s | arm | echoed | RTT p50 µs | RTT p99 µs | added p50 / p99 µs | CPU µs per frame | frames/s per core |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in rows.iter().filter(|r| r.phase == phase && r.size == size) {
        let arm = match r.arm {
            Impl::Plain => "plain tap",
            Impl::Legacy => "element before",
            Impl::Fast => "element now",
        };
        let added = match r.arm {
            Impl::Plain => "-".to_string(),
            _ => format!("{:.0} / {:.0}", r.added_us_p50, r.added_us_p99),
        };
        let cpu = r.cpu_us_per_frame.map_or("-".into(), |c| format!("{c:.2}"));
        let per_core = r
            .frames_per_core_s
            .map_or("-".into(), |f| format!("{f:.0}"));
        let _ = writeln!(
            md,
            "| {} | {arm} | {:.1} % | {:.0} | {:.0} | {added} | {cpu} | {per_core} |",
            r.rate, r.echoed_pct, r.rtt_us_p50, r.rtt_us_p99
        );
    }
    md.push('\n');
}

pub fn write(
    out: &Path,
    info: &RunInfo,
    alone: &Alone,
    points: &[Point],
    plan: &Plan,
) -> anyhow::Result<()> {
    let rows = rows(points);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Network element: plain tap, the element before, the element now\n\n\
         `bench/element`, {} run(s) per point, {} s per point, arms taking turns \
         (order reversed every other run); medians over runs. {} CPUs, accel {}, QEMU {}, commit {}.\n\n\
         A frame is one datagram or one echo through the arm (both counted). CPU per frame is the \
         arm's process (`element-serve`) from its threads' schedstat; for the plain tap with a \
         guest it is the kernel's and not counted. Added latency is against the plain tap at the \
         same point.\n",
        plan.runs, plan.secs, info.cpus, info.accel, info.qemu, info.commit
    );
    let _ = writeln!(
        md,
        "## The pipeline alone\n\nIn process, {} synthetic 202-byte frames: {:.0} ns per frame now \
         (borrowed, one lock per batch), {:.0} ns before (a `Vec`, a lock and a release poll per frame).\n",
        alone.frames, alone.fast_ns_per_frame, alone.legacy_ns_per_frame
    );
    for (phase, title) in [
        (
            "micro",
            "## Between a real tap and a stand-in QEMU that echoes (no guest)",
        ),
        ("guest", "## In front of a guest that echoes (port 7)"),
    ] {
        let _ = writeln!(md, "{title}\n");
        for size in SIZES {
            let _ = writeln!(md, "### {size}-byte datagrams\n");
            table(&mut md, &rows, phase, size);
        }
    }
    let json = Results {
        info,
        runs: plan.runs,
        secs_per_point: plan.secs,
        pipeline_alone: alone,
        rows,
        points,
    };
    crate::stats::write(out, "element", &json, &md)
}
