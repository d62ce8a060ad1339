//! Migration benchmark: the same idle 256 MiB guest moved between two lab
//! hosts, through the agents (prepare destination, migrate, hand over)
//! with the stream over TLS (the default) and in the clear, against raw
//! QMP (start the destination QEMU by hand, `migrate-incoming`, `migrate`,
//! wait until it runs; cleartext). Same QEMU parameters in every arm (128
//! MiB/s, 50 ms downtime limit), same path (the lab's veths), runs
//! alternating between arms.

use crate::raw::{self, RawSpec, RawVm};
use crate::stats::{self, summarize, RunInfo, Summary};
use crate::Lab;
use duplex_agent::client::AgentClient;
use duplex_core::agent_api::{MigrateRequest, MigrationPhase, MigrationStats, WaitFor};
use duplex_core::vm_spec::VmSpec;
use duplex_qemu::migration;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// The image of the disk-backed arm: the Kamailio example's.
pub const DISK_IMAGE: &str = "kamailio";

#[derive(Serialize, Clone)]
struct Run {
    /// QEMU's total time (setup to completion).
    total_ms: f64,
    downtime_ms: f64,
    transferred_bytes: u64,
    /// Whole operation: destination prepared, stream, destination running.
    wall_ms: f64,
}

#[derive(Serialize)]
struct ArmSummary {
    total_ms: Summary,
    downtime_ms: Summary,
    wall_ms: Summary,
    transferred_mib: Summary,
}

#[derive(Serialize)]
struct MigrateResult {
    benchmark: &'static str,
    run: RunInfo,
    runs_per_arm: usize,
    /// Duplex with the stream over TLS (the default).
    duplex: Vec<Run>,
    /// Duplex with `cleartext: true`.
    duplex_cleartext: Vec<Run>,
    /// Duplex (TLS) moving a VM booted from a root disk (image `kamailio`):
    /// its overlay goes along by block migration.
    duplex_disk: Vec<Run>,
    raw: Vec<Run>,
    duplex_summary: ArmSummary,
    duplex_cleartext_summary: ArmSummary,
    duplex_disk_summary: ArmSummary,
    raw_summary: ArmSummary,
    /// Disk-backed / diskless (both Duplex, TLS).
    disk_ratio_total_median: f64,
    disk_ratio_wall_median: f64,
    disk_ratio_downtime_median: f64,
    /// Duplex cleartext / raw.
    ratio_total_median: f64,
    ratio_wall_median: f64,
    ratio_downtime_median: f64,
    /// Duplex TLS / Duplex cleartext: what TLS costs.
    tls_ratio_total_median: f64,
    tls_ratio_wall_median: f64,
    tls_ratio_downtime_median: f64,
}

fn summary(runs: &[Run]) -> ArmSummary {
    let f = |g: fn(&Run) -> f64| summarize(&runs.iter().map(g).collect::<Vec<_>>());
    ArmSummary {
        total_ms: f(|r| r.total_ms),
        downtime_ms: f(|r| r.downtime_ms),
        wall_ms: f(|r| r.wall_ms),
        transferred_mib: f(|r| r.transferred_bytes as f64 / 1048576.0),
    }
}

fn from_stats(s: &MigrationStats, wall_ms: f64) -> Run {
    Run {
        total_ms: s.total_ms as f64,
        downtime_ms: s.downtime_ms as f64,
        transferred_bytes: s.transferred_bytes,
        wall_ms,
    }
}

async fn duplex_move(
    vm: &str,
    from: &AgentClient,
    to: &AgentClient,
    cleartext: bool,
) -> anyhow::Result<Run> {
    let req = MigrateRequest {
        to: to.base().to_string(),
        tuning: duplex_core::agent_api::MigrationTuning {
            cleartext,
            ..Default::default()
        },
    };
    from.start_migration(vm, &req).await?;
    loop {
        let i = from.migration(vm).await?;
        match i.phase {
            MigrationPhase::Completed => {
                let s = i.stats.ok_or_else(|| anyhow::anyhow!("no stats"))?;
                // The agent's own measure of the whole operation (the
                // client's view would add up to one poll interval).
                return Ok(from_stats(&s, s.orchestrated_ms as f64));
            }
            MigrationPhase::Failed => anyhow::bail!("migration failed: {:?}", i.error),
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

struct RawSide<'a> {
    lab: &'a Lab,
    accel: duplex_core::agent_api::AccelKind,
    img: duplex_image::ImagePaths,
    scratch: std::path::PathBuf,
}

impl RawSide<'_> {
    async fn start(&self, host: u8, incoming: bool, tag: &str) -> anyhow::Result<RawVm> {
        let ns = self.lab.host_ns(host)?;
        let dir = self.scratch.join(tag);
        raw::start(&RawSpec {
            name: "rmig",
            dir: &dir,
            accel: self.accel,
            kernel: &self.img.vmlinuz,
            initrd: &self.img.initramfs,
            ip: &self.lab.vm_ip(1)?.to_string(),
            netns: Some(&ns),
            incoming,
            net: raw::RawNet::Drain,
        })
        .await
    }

    /// Moves `src` (on host `from`) to host `to`; returns the new VM.
    async fn migrate(&self, src: RawVm, to: u8, tag: &str) -> anyhow::Result<(RawVm, Run)> {
        let t = Instant::now();
        let dst = self.start(to, true, tag).await?;
        let off = migration::StreamTls::Off;
        let ip = self.lab.agent_ip(to)?.to_string();
        let uri = migration::listen_incoming(&dst.qmp, &ip, &off).await?;
        let s = migration::migrate(
            &src.qmp,
            &uri,
            &Default::default(),
            &off,
            false,
            Duration::from_millis(200),
            |_| {},
        )
        .await?;
        while dst.qmp.run_state().await? != "running" {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let wall = t.elapsed().as_secs_f64() * 1000.0;
        drop(src);
        Ok((dst, from_stats(&s, wall)))
    }
}

pub async fn run(lab: &Lab, runs: usize, out: &Path) -> anyhow::Result<()> {
    let h = [lab.agent(1)?, lab.agent(2)?];
    let accel = h[0].host().await?.accel;
    let raw_side = RawSide {
        lab,
        accel: accel.kind,
        img: duplex_image::resolve(Path::new(duplex_image::DEFAULT_IMAGE_DIR), "default")?,
        scratch: std::env::temp_dir().join(format!("duplex-bench-mig-{}", std::process::id())),
    };
    eprintln!("  booting the Duplex VM on h1 and the hand-started VM in h1's namespace");
    let spec = VmSpec::new("bmig", lab.vm_ip(0)?);
    h[0].create(&spec, WaitFor::Ready).await?;
    let disk_spec = VmSpec {
        image: DISK_IMAGE.into(),
        ..VmSpec::new("bdisk", lab.vm_ip(2)?)
    };
    h[0].create(&disk_spec, WaitFor::Ready).await?;
    let mut raw_vm = raw_side.start(1, false, "r0").await?;
    duplex_agent::serial::wait_marker(
        &raw_vm.serial,
        "DUPLEX-GUEST-READY",
        Duration::from_secs(90),
    )
    .await
    .ok_or_else(|| anyhow::anyhow!("hand-started guest never got ready"))?;
    let (mut duplex_runs, mut clear_runs, mut raw_runs) = (Vec::new(), Vec::new(), Vec::new());
    let mut disk_runs = Vec::new();
    // Where the Duplex VM is (0: h1); every Duplex move sends it across.
    let mut at = 0usize;
    let mut disk_at = 0usize;
    for i in 0..runs {
        // TLS first on even runs, cleartext first on odd ones.
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let (mut d, mut c) = (None, None);
        let k = duplex_move("bdisk", &h[disk_at], &h[1 - disk_at], false).await?;
        disk_at = 1 - disk_at;
        for cleartext in order {
            let r = duplex_move("bmig", &h[at], &h[1 - at], cleartext).await?;
            at = 1 - at;
            if cleartext {
                c = Some(r);
            } else {
                d = Some(r);
            }
        }
        let (Some(d), Some(c)) = (d, c) else {
            anyhow::bail!("a Duplex arm did not run");
        };
        let to = (i + 1) % 2;
        let (next, r) = raw_side
            .migrate(raw_vm, to as u8 + 1, &format!("r{}", i + 1))
            .await?;
        raw_vm = next;
        eprintln!(
            "  run {}/{runs}: disk-backed total {:.0} ms, downtime {:.0} ms, wall {:.0} ms, {:.1} MiB",
            i + 1,
            k.total_ms,
            k.downtime_ms,
            k.wall_ms,
            k.transferred_bytes as f64 / 1048576.0
        );
        disk_runs.push(k);
        eprintln!(
            "  run {}/{runs}: duplex TLS total {:.0} ms, downtime {:.0} ms, wall {:.0} ms | duplex cleartext total {:.0} ms, downtime {:.0} ms, wall {:.0} ms | raw total {:.0} ms, downtime {:.0} ms, wall {:.0} ms",
            i + 1, d.total_ms, d.downtime_ms, d.wall_ms, c.total_ms, c.downtime_ms, c.wall_ms, r.total_ms, r.downtime_ms, r.wall_ms
        );
        duplex_runs.push(d);
        clear_runs.push(c);
        raw_runs.push(r);
    }
    drop(raw_vm);
    let _ = std::fs::remove_dir_all(&raw_side.scratch);
    let (ds, cs, rs) = (
        summary(&duplex_runs),
        summary(&clear_runs),
        summary(&raw_runs),
    );
    let ks = summary(&disk_runs);
    let result = MigrateResult {
        benchmark: "migrate",
        run: stats::run_info(&format!("{:?}", accel.kind)).await,
        runs_per_arm: runs,
        ratio_total_median: cs.total_ms.median / rs.total_ms.median,
        ratio_wall_median: cs.wall_ms.median / rs.wall_ms.median,
        ratio_downtime_median: cs.downtime_ms.median / rs.downtime_ms.median,
        tls_ratio_total_median: ds.total_ms.median / cs.total_ms.median,
        tls_ratio_wall_median: ds.wall_ms.median / cs.wall_ms.median,
        tls_ratio_downtime_median: ds.downtime_ms.median / cs.downtime_ms.median,
        disk_ratio_total_median: ks.total_ms.median / ds.total_ms.median,
        disk_ratio_wall_median: ks.wall_ms.median / ds.wall_ms.median,
        disk_ratio_downtime_median: ks.downtime_ms.median / ds.downtime_ms.median,
        duplex: duplex_runs,
        duplex_cleartext: clear_runs,
        duplex_disk: disk_runs,
        raw: raw_runs,
        duplex_summary: ds,
        duplex_cleartext_summary: cs,
        duplex_disk_summary: ks,
        raw_summary: rs,
    };
    let row = |name: &str, s: &ArmSummary| {
        format!(
            "| {name} | {:.0} / {:.0} / {:.0} | {:.1} / {:.1} / {:.1} | {:.0} / {:.0} / {:.0} | {:.1} |\n",
            s.total_ms.min, s.total_ms.median, s.total_ms.max,
            s.downtime_ms.min, s.downtime_ms.median, s.downtime_ms.max,
            s.wall_ms.min, s.wall_ms.median, s.wall_ms.max,
            s.transferred_mib.median
        )
    };
    let md = format!(
        "# Live migration, idle 256 MiB guest, h1 <-> h2 in the lab ({:?}, {} runs per arm, alternating)\n\n\
         | arm | QEMU total ms (min / median / max) | downtime ms | whole operation ms | MiB sent (median) |\n|---|---|---|---|---|\n{}{}{}{}\n\
         Median ratios Duplex (cleartext) / raw: total **{:.3}** (goal <= 1.1), whole operation **{:.3}**, downtime **{:.3}** (goal: no worse).\n\n\
         What TLS costs, median ratios Duplex TLS / Duplex cleartext: total **{:.3}**, whole operation **{:.3}**, downtime **{:.3}**. \
         The stream is capped at 128 MiB/s in every arm (Duplex's default), so TLS shows where it adds time under that cap.\n\n\
         What a root disk costs, median ratios disk-backed / diskless (Duplex, TLS): total **{:.3}**, whole operation **{:.3}**, downtime **{:.3}**. \
         The disk-backed VM boots image `{DISK_IMAGE}` (examples/kamailio) with a qcow2 overlay of its own; QEMU's incremental block \
         migration sends the overlay's blocks (the base is on every host) in the same stream; MiB sent counts RAM and disk.\n\n\
         Whole operation: Duplex = the source agent's orchestrated time (ask the destination agent to prepare, which starts QEMU, \
         its tap and network element; migrate; destination confirms the VM runs). Raw = start the destination QEMU by hand, \
         `migrate-incoming`, `migrate`, until the destination reports `running`.\n",
        accel.kind,
        runs,
        row("Duplex agents, TLS stream (default)", &result.duplex_summary),
        row("Duplex agents, cleartext stream", &result.duplex_cleartext_summary),
        row("Duplex agents, TLS, disk-backed", &result.duplex_disk_summary),
        row("raw QMP, cleartext", &result.raw_summary),
        result.ratio_total_median,
        result.ratio_wall_median,
        result.ratio_downtime_median,
        result.tls_ratio_total_median,
        result.tls_ratio_wall_median,
        result.tls_ratio_downtime_median,
        result.disk_ratio_total_median,
        result.disk_ratio_wall_median,
        result.disk_ratio_downtime_median
    );
    println!("{md}");
    let _ = h[at].delete("bmig").await;
    let _ = h[disk_at].delete("bdisk").await;
    stats::write(out, "migrate", &result, &md)
}
