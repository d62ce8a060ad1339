//! Boot benchmark: QEMU start -> the guest's `DUPLEX-INIT` line, through
//! the agent (request to answer of `POST /v1/vms?wait=init`) against QEMU
//! started by hand with the same command line (spawn to the line, found by
//! the same 5 ms polling of the serial log). Runs alternate between arms.
//!
//! And what a root disk costs: through the agent to the middleware's
//! `DUPLEX-GUEST-READY` (`wait=ready`), the diskless default image against
//! a disk-backed one (the Kamailio example's: a qcow2 overlay per VM,
//! mounted by /init before the middleware starts).

use crate::raw::{self, RawSpec};
use crate::stats::{self, summarize, RunInfo, Summary};
use crate::Lab;
use duplex_core::agent_api::WaitFor;
use duplex_core::vm_spec::VmSpec;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// The disk-backed arm's image: the Kamailio example's.
const DISK_IMAGE: &str = crate::migrate::DISK_IMAGE;

#[derive(Serialize)]
struct BootResult {
    benchmark: &'static str,
    run: RunInfo,
    runs_per_arm: usize,
    agent_ms: Vec<f64>,
    raw_ms: Vec<f64>,
    agent: Summary,
    raw: Summary,
    /// Median through the agent / median by hand.
    ratio_median: f64,
    /// To guest ready through the agent: diskless, disk-backed.
    ready_diskless_ms: Vec<f64>,
    ready_disk_ms: Vec<f64>,
    ready_diskless: Summary,
    ready_disk: Summary,
    /// Median disk-backed / median diskless.
    disk_ratio_median: f64,
}

pub async fn run(lab: &Lab, runs: usize, out: &Path) -> anyhow::Result<()> {
    let h1 = lab.agent(1)?;
    let accel = h1.host().await?.accel;
    let img = duplex_image::resolve(Path::new(duplex_image::DEFAULT_IMAGE_DIR), "default")?;
    let ip = lab.vm_ip(0)?;
    let (mut agent_ms, mut raw_ms) = (Vec::new(), Vec::new());
    let (mut ready_ms, mut disk_ms) = (Vec::new(), Vec::new());
    let scratch = std::env::temp_dir().join(format!("duplex-bench-boot-{}", std::process::id()));
    for i in 0..runs {
        // Through the agent.
        let spec = VmSpec::new("bboot", ip);
        let t = Instant::now();
        h1.create(&spec, WaitFor::Init).await?;
        let a = t.elapsed().as_secs_f64() * 1000.0;
        h1.delete("bboot").await?;
        // By hand.
        let vm = raw::start(&RawSpec {
            name: "rboot",
            dir: &scratch,
            accel: accel.kind,
            kernel: &img.vmlinuz,
            initrd: &img.initramfs,
            ip: "10.255.255.1",
            netns: None,
            incoming: false,
            net: raw::RawNet::Drain,
        })
        .await?;
        let seen =
            duplex_agent::serial::wait_marker(&vm.serial, "DUPLEX-INIT", Duration::from_secs(60))
                .await
                .ok_or_else(|| anyhow::anyhow!("raw QEMU never reached /init"))?;
        let r = seen.duration_since(vm.started).as_secs_f64() * 1000.0;
        drop(vm);
        eprintln!("  run {}/{runs}: agent {a:.0} ms, by hand {r:.0} ms", i + 1);
        // To guest ready, diskless and disk-backed, alternating first.
        let images = if i % 2 == 0 {
            [duplex_image::DEFAULT_NAME, DISK_IMAGE]
        } else {
            [DISK_IMAGE, duplex_image::DEFAULT_NAME]
        };
        for image in images {
            let spec = VmSpec {
                image: image.into(),
                ..VmSpec::new("bready", ip)
            };
            let t = Instant::now();
            h1.create(&spec, WaitFor::Ready).await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            h1.delete("bready").await?;
            eprintln!(
                "  run {}/{runs}: to guest ready, image {image}: {ms:.0} ms",
                i + 1
            );
            if image == DISK_IMAGE {
                disk_ms.push(ms);
            } else {
                ready_ms.push(ms);
            }
        }
        agent_ms.push(a);
        raw_ms.push(r);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let (agent, raw) = (summarize(&agent_ms), summarize(&raw_ms));
    let ratio = agent.median / raw.median;
    let (ready, disk) = (summarize(&ready_ms), summarize(&disk_ms));
    let disk_ratio = disk.median / ready.median;
    let result = BootResult {
        benchmark: "boot",
        run: stats::run_info(&format!("{:?}", accel.kind)).await,
        runs_per_arm: runs,
        agent_ms,
        raw_ms,
        agent: agent.clone(),
        raw: raw.clone(),
        ratio_median: ratio,
        ready_diskless_ms: ready_ms,
        ready_disk_ms: disk_ms,
        ready_diskless: ready.clone(),
        ready_disk: disk.clone(),
        disk_ratio_median: disk_ratio,
    };
    let md = format!(
        "# Boot: QEMU start -> guest /init marker ({:?}, {} runs per arm, alternating)\n\n\
         | arm | min ms | median ms | max ms |\n|---|---|---|---|\n\
         | Duplex agent (`POST /v1/vms?wait=init`) | {:.0} | {:.0} | {:.0} |\n\
         | QEMU by hand, same command line | {:.0} | {:.0} | {:.0} |\n\n\
         Median ratio agent / by hand: **{ratio:.3}** (goal <= 1.05).\n\n\
         ## Diskless and disk-backed, through the agent to the middleware's `DUPLEX-GUEST-READY` (`wait=ready`)\n\n\
         | image | min ms | median ms | max ms |\n|---|---|---|---|\n\
         | `default` (diskless: kernel + initramfs) | {:.0} | {:.0} | {:.0} |\n\
         | `{DISK_IMAGE}` (disk-backed: + qcow2 overlay on the image's root disk, virtio-blk) | {:.0} | {:.0} | {:.0} |\n\n\
         Median ratio disk-backed / diskless: **{disk_ratio:.3}**. The disk-backed time includes making the VM's overlay \
         (`qemu-img create`) and mounting the root disk in /init; the service itself starts later, once the VM is given its pair.\n",
        accel.kind, runs, agent.min, agent.median, agent.max, raw.min, raw.median, raw.max,
        ready.min, ready.median, ready.max, disk.min, disk.median, disk.max
    );
    println!("{md}");
    stats::write(out, "boot", &result, &md)
}
