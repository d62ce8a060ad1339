//! `bench/element`: what the network element costs, side by side in one
//! run, three arms taking turns at every point:
//!
//! - `plain`: no element (the kernel's tap alone);
//! - `legacy`: the element as it was (tokio tasks and channels, `legacy.rs`);
//! - `fast`: today's element (`duplex_net::element`, its own thread).
//!
//! Three measurements: the pipeline alone on synthetic frames (in this
//! process); the element between a real tap on a bridge and a stand-in QEMU
//! that echoes (no guest: the element's own ceiling); and real TCG guests
//! echoing UDP (port 7). Each arm's VM side runs in a process of its own
//! (`element-serve`), whose CPU time per frame is the element's cost; the
//! client (`element-probe`, in its own namespace) times every echo.

mod echo;
mod legacy;
mod pipeline_only;
mod probe;
mod report;
pub mod serve;
mod topology;

pub use probe::probe;
pub use serve::{serve, Impl};

use crate::raw::{self, RawNet, RawSpec};
use duplex_core::mac::Mac;
use probe::Probed;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use topology::Topology;

/// Datagram payload sizes: RTP-sized and near the MTU.
pub const SIZES: [usize; 2] = [160, 1400];
/// How long a child gets to say `ready`, and a guest to echo.
const READY_WAIT: Duration = Duration::from_secs(90);

pub struct Arm {
    pub imp: Impl,
    vm: &'static str,
    tap: &'static str,
    ip: Ipv4Addr,
}

const ARMS: [Arm; 3] = [
    Arm {
        imp: Impl::Plain,
        vm: "belplain",
        tap: "dxbt-plain",
        ip: Ipv4Addr::new(10, 251, 0, 2),
    },
    Arm {
        imp: Impl::Legacy,
        vm: "bellegacy",
        tap: "dxbt-legacy",
        ip: Ipv4Addr::new(10, 251, 0, 3),
    },
    Arm {
        imp: Impl::Fast,
        vm: "belfast",
        tap: "dxbt-fast",
        ip: Ipv4Addr::new(10, 251, 0, 4),
    },
];

impl Arm {
    fn mac(&self) -> Mac {
        Mac::for_vm(self.vm)
    }
}

/// One measured point.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub phase: &'static str,
    pub arm: Impl,
    pub size: usize,
    pub rate: u32,
    pub run: usize,
    pub probed: Probed,
    /// CPU time of the arm's process per frame through it (datagrams sent
    /// plus echoes received), µs; `None` for a guest's plain tap (the
    /// kernel's work, not a process of ours).
    pub cpu_us_per_frame: Option<f64>,
}

pub struct Plan {
    pub runs: usize,
    pub micro_rates: Vec<u32>,
    pub guest_rates: Vec<u32>,
    pub secs: f64,
}

pub async fn run(plan: &Plan, out: &Path) -> anyhow::Result<()> {
    let topo = Topology::up()?;
    for arm in &ARMS {
        topo.neighbour(arm.ip, arm.mac())?;
    }
    let scratch = std::env::temp_dir().join(format!("duplex-bench-element-{}", std::process::id()));
    let _clean = Scratch(scratch.clone());
    eprintln!("pipeline alone, synthetic frames");
    let alone = pipeline_only::measure();
    eprintln!("element between a tap and a stand-in QEMU");
    let mut points = micro(plan, &scratch).await?;
    let img = duplex_image::resolve(Path::new(duplex_image::DEFAULT_IMAGE_DIR), "default")?;
    let accel = duplex_qemu::accel::detect(
        &duplex_qemu::qemu_binary(),
        &img.vmlinuz,
        &img.initramfs,
        &scratch.join("accel.json"),
        Duration::from_secs(10),
    )
    .await?
    .kind;
    eprintln!("element in front of guests ({accel:?})");
    points.extend(with_guests(plan, &topo, &scratch, accel).await?);
    let info = crate::stats::run_info(&format!("{accel:?}").to_lowercase()).await;
    report::write(out, &info, &alone, &points, plan)
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An arm's `element-serve` process (in the host namespace) and, without a
/// guest, the stand-in QEMU echoing on its socket.
struct Served {
    child: tokio::process::Child,
    pid: u32,
    standin: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some((stop, _)) = &self.standin {
            stop.store(true, Ordering::Relaxed);
        }
        let _ = self.child.start_kill();
    }
}

async fn spawn_serve(arm: &Arm, tap: &str, sock: &Path) -> anyhow::Result<Served> {
    let exe = std::env::current_exe()?;
    let imp = match arm.imp {
        Impl::Plain => "plain",
        Impl::Legacy => "legacy",
        Impl::Fast => "fast",
    };
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", topology::HOST_NS])
        .arg(exe)
        .args(["element-serve", "--impl", imp, "--tap", tap, "--bridge"])
        .arg(topology::BRIDGE)
        .arg("--sock")
        .arg(sock)
        .args(["--mac", &arm.mac().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // `ip netns exec` execs the command: the pid is the server's.
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("element-serve died"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(READY_WAIT, lines.next_line()).await??;
    anyhow::ensure!(
        line.as_deref() == Some("ready"),
        "element-serve {imp} did not get ready: {line:?}"
    );
    Ok(Served {
        child,
        pid,
        standin: None,
    })
}

/// CPU time of every thread of `pid`, ns (from schedstat: no tick rounding).
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut sum = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let s = std::fs::read_to_string(t?.path().join("schedstat"))?;
        sum += s
            .split_whitespace()
            .next()
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(sum)
}

async fn probe_child(ip: Ipv4Addr, rate: u32, size: usize, secs: f64) -> anyhow::Result<Probed> {
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", topology::CLIENT_NS])
        .arg(exe)
        .args(["element-probe", "--to", &ip.to_string()])
        .args(["--rate", &rate.to_string(), "--size", &size.to_string()])
        .args(["--secs", &secs.to_string()])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "element-probe: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Every point of one phase, the arms taking turns (their order reversed
/// every other run).
async fn points(
    phase: &'static str,
    plan: &Plan,
    rates: &[u32],
    pid: impl Fn(Impl) -> Option<u32>,
) -> anyhow::Result<Vec<Point>> {
    let mut out = Vec::new();
    for run in 0..plan.runs {
        for size in SIZES {
            for &rate in rates {
                let mut order: Vec<&Arm> = ARMS.iter().collect();
                if run % 2 == 1 {
                    order.reverse();
                }
                for arm in order {
                    let pid = pid(arm.imp);
                    let before = pid.map(cpu_ns).transpose()?;
                    let probed = probe_child(arm.ip, rate, size, plan.secs).await?;
                    let after = pid.map(cpu_ns).transpose()?;
                    let frames = (probed.sent + probed.received).max(1) as f64;
                    let cpu_us_per_frame = match (before, after) {
                        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / 1000.0 / frames),
                        _ => None,
                    };
                    eprintln!(
                        "  {phase} run {} {:?} {size} B at {rate}/s: {}/{} echoed, p50 {:.0} µs p99 {:.0} µs, cpu {}",
                        run + 1,
                        arm.imp,
                        probed.received,
                        probed.sent,
                        probed.rtt_us_p50.unwrap_or(f64::NAN),
                        probed.rtt_us_p99.unwrap_or(f64::NAN),
                        cpu_us_per_frame.map_or("-".into(), |c| format!("{c:.2} µs/frame")),
                    );
                    out.push(Point {
                        phase,
                        arm: arm.imp,
                        size,
                        rate,
                        run,
                        probed,
                        cpu_us_per_frame,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The element between a real tap and a stand-in QEMU that echoes; the
/// plain arm echoes on its tap.
async fn micro(plan: &Plan, scratch: &Path) -> anyhow::Result<Vec<Point>> {
    std::fs::create_dir_all(scratch)?;
    let mut served = Vec::new();
    for arm in &ARMS {
        let sock = scratch.join(format!("{}.sock", arm.vm));
        let mut s = spawn_serve(arm, arm.tap, &sock).await?;
        if arm.imp != Impl::Plain {
            let stop = Arc::new(AtomicBool::new(false));
            let t = echo::qemu_standin(&sock, arm.mac(), stop.clone())?;
            s.standin = Some((stop, t));
        }
        served.push((arm.imp, s));
    }
    for arm in &ARMS {
        echoing(arm).await?;
    }
    let pid = |imp| served.iter().find(|(i, _)| *i == imp).map(|(_, s)| s.pid);
    points("micro", plan, &plan.micro_rates, pid).await
}

/// Guests echoing on port 7: the plain arm's QEMU on its own tap, the
/// others behind an element each.
async fn with_guests(
    plan: &Plan,
    topo: &Topology,
    scratch: &Path,
    accel: duplex_core::agent_api::AccelKind,
) -> anyhow::Result<Vec<Point>> {
    let img = duplex_image::resolve(Path::new(duplex_image::DEFAULT_IMAGE_DIR), "default")?;
    let mut served = Vec::new();
    let mut vms = Vec::new();
    for arm in &ARMS {
        let dir = scratch.join(arm.vm);
        std::fs::create_dir_all(&dir)?;
        let tap = format!("{}g", arm.tap);
        let net = if arm.imp == Impl::Plain {
            topo.plain_tap(&tap)?;
            RawNet::Tap(&tap)
        } else {
            served.push((
                arm.imp,
                spawn_serve(arm, &tap, &dir.join("net.sock")).await?,
            ));
            RawNet::Served
        };
        let ip = arm.ip.to_string();
        vms.push(
            raw::start(&RawSpec {
                name: arm.vm,
                dir: &dir,
                accel,
                kernel: &img.vmlinuz,
                initrd: &img.initramfs,
                ip: &ip,
                netns: Some(topology::HOST_NS),
                incoming: false,
                net,
            })
            .await?,
        );
    }
    for arm in &ARMS {
        echoing(arm).await?;
    }
    let pid = |imp| served.iter().find(|(i, _)| *i == imp).map(|(_, s)| s.pid);
    let points = points("guest", plan, &plan.guest_rates, pid).await;
    drop(vms);
    points
}

/// Waits until `arm`'s VM side echoes (and the bridge has learnt where
/// its MAC is, so nothing is flooded to the other arms).
async fn echoing(arm: &Arm) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let p = probe_child(arm.ip, 20, 160, 0.5).await?;
        if p.received > 0 {
            return Ok(());
        }
        anyhow::ensure!(
            t0.elapsed() < READY_WAIT,
            "the guest of {} does not echo",
            arm.vm
        );
    }
}
