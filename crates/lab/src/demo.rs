//! `duplex demo`: a lab with two hosts, a VM booted on host 1 and reached
//! from the client, then live-migrated to host 2 while a UDP probe runs
//! from the client; prints what it cost. The lab is always taken down.

use crate::probe::ProbeReport;
use crate::{LabError, LabPlan, LabState, UpOptions};
use duplex_agent::client::{AgentClient, ClientError};
use duplex_controller::client::ControllerClient;
use duplex_core::agent_api::{
    AccelInfo, MigrateRequest, MigrationPhase, MigrationStats, MigrationTuning, VmState,
};
use duplex_core::guest_proto::Op;
use duplex_core::vm_spec::VmSpec;
use serde::Serialize;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub lab: String,
    pub duplex_bin: PathBuf,
    pub image_dir: PathBuf,
    /// Interval of the UDP probe.
    pub probe_interval: Duration,
    /// Migration bandwidth cap (MiB/s); QEMU's default if `None`.
    pub max_bandwidth_mib: Option<u64>,
    /// Leave the lab up afterwards (for poking around).
    pub keep: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub lab: String,
    pub accel: AccelInfo,
    pub vm: String,
    pub vm_ip: String,
    pub boot_to_init_ms: Option<u64>,
    pub boot_to_ready_ms: u64,
    pub reachable_before: bool,
    pub migration: MigrationStats,
    pub probe: ProbeReport,
    /// The destination agent reports the VM running there.
    pub running_on_destination: bool,
    /// The guest answered `status` over the destination's control channel.
    pub guest_answers_on_destination: bool,
    pub reachable_after: bool,
    /// The source agent no longer has the VM.
    pub gone_from_source: bool,
    /// The controller records the VM on h2 after the move.
    pub controller_follows: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Agent(#[from] ClientError),
    #[error(transparent)]
    Controller(#[from] duplex_controller::client::ClientError),
    #[error("{0}")]
    Step(String),
}

fn step(n: u32, total: u32, what: &str) {
    eprintln!("[{n}/{total}] {what}");
}

/// Runs the demo; the lab is taken down afterwards whatever happened
/// (unless `keep`).
pub async fn run(opts: &DemoOptions) -> Result<DemoReport, DemoError> {
    duplex_image_check(&opts.image_dir)?;
    let plan = LabPlan::new(&opts.lab, 2)?;
    step(
        1,
        7,
        &format!(
            "lab `{}` up: 2 hosts, a switch, a client ({})",
            opts.lab,
            plan.subnet()
        ),
    );
    let state = crate::up(
        &plan,
        UpOptions {
            duplex_bin: opts.duplex_bin.clone(),
            image_dir: opts.image_dir.clone(),
            extra_agent_args: Vec::new(),
            store: Default::default(),
            racks: 1,
            controllers: 1,
            power_fence: true,
            switch: Default::default(),
        },
    )
    .await?;
    let result = run_in_lab(opts, &state).await;
    if opts.keep {
        eprintln!(
            "lab `{}` left up (--keep); `duplex lab down --lab {}` removes it",
            opts.lab, opts.lab
        );
    } else {
        step(7, 7, &format!("lab `{}` down", opts.lab));
        let lab = opts.lab.clone();
        match tokio::task::spawn_blocking(move || crate::down(&lab)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("warning: taking the lab down: {e}"),
            Err(e) => eprintln!("warning: taking the lab down: {e}"),
        }
    }
    result
}

fn duplex_image_check(image_dir: &std::path::Path) -> Result<(), DemoError> {
    let img = image_dir.join("default").join("initramfs.img");
    if !img.exists() {
        return Err(DemoError::Step(format!(
            "no guest image at {}: run ./setup.sh (or `duplex image build`) first",
            image_dir.join("default").display()
        )));
    }
    Ok(())
}

async fn run_in_lab(opts: &DemoOptions, state: &LabState) -> Result<DemoReport, DemoError> {
    let src_url = state
        .agent_url(1)
        .ok_or_else(|| DemoError::Step("lab has no host 1".into()))?;
    let dst_url = state
        .agent_url(2)
        .ok_or_else(|| DemoError::Step("lab has no host 2".into()))?;
    let http = crate::pki::operator_client(&state.lab, duplex_agent_client::limits::shape)?;
    let (src, dst) = (
        AgentClient::new(src_url, http.clone()),
        AgentClient::new(dst_url, http),
    );
    let ip = state
        .vm_ip(0)
        .ok_or_else(|| DemoError::Step("no VM address".into()))?;
    let accel = src.host().await?.accel;
    let spec = VmSpec::new("demo", ip);

    step(
        2,
        7,
        &format!(
            "boot VM `demo` ({ip}) on h1 under {:?} ({})",
            accel.kind, accel.reason
        ),
    );
    let t = Instant::now();
    let ctl_state = state
        .controller
        .as_ref()
        .ok_or_else(|| DemoError::Step("the lab has no controller".into()))?;
    let ctl = ControllerClient::with_bundle(&ctl_state.url, &state.operator_tls())?;
    let _: serde_json::Value = ctl
        .post("/v1/vms", &serde_json::json!({"spec": spec, "host": "h1"}))
        .await?;
    let vm = wait_running(&ctl, "demo", Duration::from_secs(180)).await?;
    let boot_to_ready_ms = t.elapsed().as_millis() as u64;
    eprintln!(
        "      placed by the controller; guest reached /init after {} ms, answered on its control channel after {boot_to_ready_ms} ms",
        vm["info"]["boot_ms"].as_u64().map(|b| b.to_string()).unwrap_or_else(|| "?".into())
    );

    step(3, 7, &format!("ping {ip} from the client namespace"));
    let reachable_before = ping(state.client_ns(), &ip.to_string()).await;
    eprintln!(
        "      {}",
        if reachable_before {
            "answers"
        } else {
            "NO ANSWER"
        }
    );
    if !reachable_before {
        return Err(DemoError::Step(format!(
            "VM {ip} does not answer ping from the client namespace"
        )));
    }

    step(
        4,
        7,
        &format!(
            "start a UDP probe from the client to {ip}:7 every {} ms",
            opts.probe_interval.as_millis()
        ),
    );
    let probe = ProbeProcess::start(
        &opts.duplex_bin,
        state.client_ns(),
        &format!("{ip}:7"),
        opts.probe_interval,
    )?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    step(5, 7, "live-migrate `demo` h1 -> h2 under the probe");
    let req = MigrateRequest {
        to: dst_url.to_string(),
        tuning: MigrationTuning {
            max_bandwidth_mib: opts.max_bandwidth_mib,
            ..Default::default()
        },
    };
    let mut last = Instant::now() - Duration::from_secs(1);
    let migrated = src
        .migrate("demo", &req, Duration::from_secs(600), |i| {
            if i.phase == MigrationPhase::Active && last.elapsed() >= Duration::from_millis(250) {
                last = Instant::now();
                let p = &i.progress;
                eprintln!(
                    "      {:>6} ms: {:>6.1} MiB sent, {:>6.1} MiB left, pass {}",
                    p.elapsed_ms,
                    p.transferred_bytes as f64 / 1048576.0,
                    p.remaining_bytes as f64 / 1048576.0,
                    p.passes
                );
            }
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let probe = probe.stop().await?;
    let migration = migrated?
        .stats
        .ok_or_else(|| DemoError::Step("migration completed without statistics".into()))?;

    step(6, 7, "check the VM from h2 and from the client");
    let on_dst = dst.show("demo").await?;
    let running_on_destination = on_dst.state == VmState::Running;
    let guest_answers_on_destination = wait_guest(&dst, "demo", Duration::from_secs(10)).await;
    let reachable_after = ping(state.client_ns(), &ip.to_string()).await;
    let gone_from_source = matches!(
        src.show("demo").await,
        Err(ClientError::Api { status: 404, .. })
    );
    let controller_follows = follows(&ctl, "demo", "h2").await;
    let _: Result<serde_json::Value, _> = ctl.delete("/v1/vms/demo").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && ctl.get::<serde_json::Value>("/v1/vms/demo").await.is_ok() {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    Ok(DemoReport {
        lab: state.lab.clone(),
        accel,
        vm: "demo".into(),
        vm_ip: ip.to_string(),
        boot_to_init_ms: vm["info"]["boot_ms"].as_u64(),
        boot_to_ready_ms,
        reachable_before,
        migration,
        probe,
        running_on_destination,
        guest_answers_on_destination,
        reachable_after,
        gone_from_source,
        controller_follows,
    })
}

impl DemoReport {
    /// The checks that did not hold (empty: the demo showed what it should).
    pub fn failed_checks(&self) -> Vec<&'static str> {
        [
            (self.reachable_before, "ping before the move"),
            (self.running_on_destination, "running on h2"),
            (self.guest_answers_on_destination, "guest answers via h2"),
            (self.reachable_after, "ping after the move"),
            (self.gone_from_source, "gone from h1"),
            (self.controller_follows, "controller records it on h2"),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| what)
        .collect()
    }
}

/// Waits until the controller reports `vm` running (its guest answers).
async fn wait_running(
    ctl: &ControllerClient,
    vm: &str,
    within: Duration,
) -> Result<serde_json::Value, DemoError> {
    let deadline = Instant::now() + within;
    loop {
        let v: serde_json::Value = ctl.get(&format!("/v1/vms/{vm}")).await?;
        match v["status"].as_str() {
            Some("running") => return Ok(v),
            Some("crashed") => {
                return Err(DemoError::Step(format!("VM {vm} crashed while booting")))
            }
            _ if Instant::now() > deadline => {
                return Err(DemoError::Step(format!(
                    "VM {vm} not running within {} s (status {})",
                    within.as_secs(),
                    v["status"]
                )))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Whether the controller comes to record `vm` on `host` within 10 s.
async fn follows(ctl: &ControllerClient, vm: &str, host: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(v) = ctl.get::<serde_json::Value>(&format!("/v1/vms/{vm}")).await {
            if v["host"] == host && v["status"] == "running" {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

/// The guest answers `status` through this agent within `within`.
pub async fn wait_guest(agent: &AgentClient, vm: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if agent.guest(vm, &Op::Status).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// `ping -c 3` from a namespace; true if any answer came back.
pub async fn ping(ns: &str, ip: &str) -> bool {
    crate::netns_command(ns, "ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `duplex probe` running in a namespace until told to stop.
pub struct ProbeProcess {
    child: tokio::process::Child,
}

impl ProbeProcess {
    pub fn start(
        bin: &std::path::Path,
        ns: &str,
        target: &str,
        interval: Duration,
    ) -> Result<Self, DemoError> {
        let child = crate::netns_command(ns, bin)
            .args(["probe", "--target", target, "--interval-us"])
            .arg(interval.as_micros().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DemoError::Step(format!("cannot start the probe in {ns}: {e}")))?;
        Ok(ProbeProcess { child })
    }

    /// Stops the probe (SIGINT) and reads its report.
    pub async fn stop(self) -> Result<ProbeReport, DemoError> {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
        }
        let out = tokio::time::timeout(Duration::from_secs(10), self.child.wait_with_output())
            .await
            .map_err(|_| DemoError::Step("the probe did not stop".into()))?
            .map_err(|e| DemoError::Step(format!("probe: {e}")))?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            DemoError::Step(format!(
                "probe printed no report ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            ))
        })
    }
}

impl std::fmt::Display for DemoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.migration;
        let p = &self.probe;
        let yes = |b: bool| if b { "yes" } else { "NO" };
        writeln!(
            f,
            "Duplex demo: live migration of VM `{}` ({}) from h1 to h2, accel {:?}",
            self.vm, self.vm_ip, self.accel.kind
        )?;
        writeln!(
            f,
            "  boot (QEMU start -> /init)      {} ms",
            self.boot_to_init_ms
                .map(|b| b.to_string())
                .unwrap_or_else(|| "?".into())
        )?;
        writeln!(
            f,
            "  boot (request -> guest ready)   {} ms",
            self.boot_to_ready_ms
        )?;
        writeln!(f, "  migration total (QEMU)          {} ms", m.total_ms)?;
        writeln!(f, "  migration downtime (QEMU)       {} ms", m.downtime_ms)?;
        writeln!(
            f,
            "  orchestrated, end to end        {} ms",
            m.orchestrated_ms
        )?;
        writeln!(
            f,
            "  transferred                     {:.1} MiB in {} passes, {}",
            m.transferred_bytes as f64 / 1048576.0,
            m.passes,
            if m.encrypted {
                "over TLS"
            } else {
                "in the clear"
            }
        )?;
        writeln!(
            f,
            "  UDP probe every {:.0} ms          sent {}, answered {}, lost {}",
            p.interval_ms, p.sent, p.received, p.lost
        )?;
        writeln!(
            f,
            "  longest outage seen by client   {:.1} ms ({} probes in a row lost)",
            p.max_reply_gap_ms, p.longest_loss_run
        )?;
        writeln!(
            f,
            "  RTT p50 / p99 / max             {:.2} / {:.2} / {:.2} ms",
            p.rtt_p50_ms, p.rtt_p99_ms, p.rtt_max_ms
        )?;
        writeln!(
            f,
            "  running on h2                   {}",
            yes(self.running_on_destination)
        )?;
        writeln!(
            f,
            "  guest answers via h2            {}",
            yes(self.guest_answers_on_destination)
        )?;
        writeln!(
            f,
            "  ping from client after move     {}",
            yes(self.reachable_after)
        )?;
        writeln!(
            f,
            "  gone from h1                    {}",
            yes(self.gone_from_source)
        )?;
        write!(
            f,
            "  controller records it on h2     {}",
            yes(self.controller_follows)
        )
    }
}
