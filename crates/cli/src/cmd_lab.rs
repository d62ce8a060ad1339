//! `duplex lab ...`, `duplex demo`, and the hidden `duplex probe`.

use crate::output::{self, Format};
use anyhow::Context;
use clap::{Args, Subcommand};
use duplex_lab::demo::{DemoOptions, DemoReport};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum LabCmd {
    /// Create the lab and start an agent per host.
    Up {
        #[arg(long, default_value_t = 2)]
        hosts: u8,
        #[arg(long, default_value = duplex_lab::DEFAULT_LAB)]
        lab: String,
        #[arg(long, env = "DUPLEX_IMAGE_DIR", default_value = duplex_image::DEFAULT_IMAGE_DIR)]
        image_dir: PathBuf,
        /// The controller's store: embedded (a file) or etcd (started for the lab).
        #[arg(long, default_value = "embedded", value_parser = ["embedded", "etcd"])]
        store: String,
        /// Spread the hosts over this many racks (a topology for network-aware placement).
        #[arg(long, default_value_t = 1)]
        racks: u8,
        /// Controller processes: the first leads, the others stand by on
        /// the same etcd and take over if it dies (needs `--store etcd`).
        #[arg(long, default_value_t = 1)]
        controllers: u8,
        /// The controller's fence device: `power` (the lab's power switch,
        /// `duplex lab fault power-off`) or `none` (a gone host is fenced
        /// by its agent's self-fence lease).
        #[arg(long, default_value = "power", value_parser = ["power", "none"])]
        fence: String,
        /// What switches the lab: the kernel's bridge, or the Duplex
        /// switch (`duplex`: S2's embodiment B, for VMs created with
        /// `--hold-at switch`; its counters in the lab's switch.json).
        #[arg(long, default_value = "bridge", value_name = "bridge|duplex")]
        switch: duplex_lab::switch::SwitchKind,
        /// Sites (1 or 2). With 2, the first half of the hosts is site
        /// `a`, the rest site `b`, each with its own switch and client
        /// namespace, the two joined by a WAN link (`--wan-rtt-ms`,
        /// `--wan-loss-pct`; `duplex lab wan` changes it).
        #[arg(long, default_value_t = 1)]
        sites: u8,
        /// Round-trip time the WAN between the sites adds, ms [default: 40].
        #[arg(long, value_name = "MS")]
        wan_rtt_ms: Option<u32>,
        /// Share of frames the WAN loses in each direction, percent
        /// (0..=100) [default: 0].
        #[arg(long, value_name = "PCT")]
        wan_loss_pct: Option<f64>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Change the WAN between the sites of a running two-site lab.
    Wan {
        #[arg(long, default_value = duplex_lab::DEFAULT_LAB)]
        lab: String,
        /// Round-trip time the WAN adds, ms [default: unchanged].
        #[arg(long, value_name = "MS")]
        rtt_ms: Option<u32>,
        /// Share of frames lost in each direction, percent [default: unchanged].
        #[arg(long, value_name = "PCT")]
        loss_pct: Option<f64>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// The WAN of a two-site lab where the kernel has no netem: relays
    /// frames between two interfaces with a delay and loss (run by the lab
    /// in its `<lab>-wan` namespace).
    #[command(hide = true)]
    WanRelay {
        #[arg(long)]
        a: String,
        #[arg(long)]
        b: String,
        #[arg(long)]
        rtt_ms: u32,
        #[arg(long)]
        loss_pct: f64,
    },
    /// Inject a fault into a lab host, or undo it.
    Fault {
        #[command(subcommand)]
        fault: FaultCmd,
    },
    /// Stop everything the lab runs and remove it (also after a crash).
    Down {
        #[arg(long, default_value = duplex_lab::DEFAULT_LAB)]
        lab: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// What is up, and whether the agents answer.
    Status {
        #[arg(long, default_value = duplex_lab::DEFAULT_LAB)]
        lab: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
}

/// Most controller processes a lab runs.
const MAX_CONTROLLERS: u8 = 3;

fn this_binary() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find this executable")
}

pub async fn run(cmd: LabCmd) -> anyhow::Result<()> {
    match cmd {
        LabCmd::Up {
            hosts,
            lab,
            image_dir,
            store,
            racks,
            controllers,
            fence,
            switch,
            sites,
            wan_rtt_ms,
            wan_loss_pct,
            output: fmt,
        } => {
            if racks == 0 || racks > hosts {
                anyhow::bail!(
                    "--racks: {racks} is outside 1..={hosts} (one rack per host at most)"
                );
            }
            if !(1..=MAX_CONTROLLERS).contains(&controllers) {
                anyhow::bail!("--controllers: {controllers} is outside 1..={MAX_CONTROLLERS}");
            }
            if controllers > 1 && store != "etcd" {
                anyhow::bail!(
                    "--controllers {controllers}: standby controllers share the leader's store; add `--store etcd` (the embedded store is one process's file)"
                );
            }
            let plan = lab_plan(&lab, hosts, sites, wan_rtt_ms, wan_loss_pct)?;
            plan.check_switch(switch)?;
            let opts = duplex_lab::UpOptions {
                duplex_bin: this_binary()?,
                image_dir,
                extra_agent_args: Vec::new(),
                store: if store == "etcd" {
                    duplex_lab::LabStore::Etcd
                } else {
                    duplex_lab::LabStore::Embedded
                },
                racks,
                controllers,
                power_fence: fence == "power",
                switch,
            };
            let state = duplex_lab::up(&plan, opts).await?;
            match fmt {
                Format::Json => output::json(&state)?,
                Format::Table => {
                    println!(
                        "lab `{}` up on {} (this namespace: {} on {})",
                        state.lab, state.subnet, state.mgmt_ip, state.mgmt_if
                    );
                    let rows: Vec<Vec<String>> = state
                        .agents
                        .iter()
                        .map(|a| {
                            vec![
                                a.name.clone(),
                                a.ns.clone(),
                                a.url.clone(),
                                a.pid.to_string(),
                            ]
                        })
                        .collect();
                    output::table(&["HOST", "NAMESPACE", "AGENT", "PID"], &rows);
                    print_sites(&state);
                    if let Some(c) = &state.controller {
                        println!(
                            "controller {} ({:?} store), operator bundle {}; operator commands use it by default for lab `{}` (else --lab {})",
                            c.url, c.store, state.operator_tls().display(), duplex_lab::DEFAULT_LAB, state.lab
                        );
                    }
                    for c in &state.standby_controllers {
                        println!(
                            "standby controller {} (pid {}): operator commands turn to it when it leads",
                            c.url, c.pid
                        );
                    }
                }
            }
        }
        LabCmd::Fault { fault } => println!("{}", run_fault(fault).await?),
        LabCmd::Wan {
            lab,
            rtt_ms,
            loss_pct,
            output: fmt,
        } => {
            let wan =
                tokio::task::spawn_blocking(move || duplex_lab::wan::set(&lab, rtt_ms, loss_pct))
                    .await??;
            match fmt {
                Format::Json => output::json(&wan)?,
                Format::Table => println!("WAN: {wan}"),
            }
        }
        LabCmd::WanRelay {
            a,
            b,
            rtt_ms,
            loss_pct,
        } => wan_relay(a, b, rtt_ms, loss_pct).await?,
        LabCmd::Down { lab, output: fmt } => {
            let report = tokio::task::spawn_blocking(move || duplex_lab::down(&lab)).await??;
            match fmt {
                Format::Json => output::json(&report)?,
                Format::Table => println!("{report}"),
            }
        }
        LabCmd::Status { lab, output: fmt } => {
            let st = duplex_lab::status(&lab).await?;
            match fmt {
                Format::Json => output::json(&st)?,
                Format::Table => println!("{st}"),
            }
        }
    }
    Ok(())
}

/// The plan of `lab up`: one site, or two with their WAN (whose options
/// need `--sites 2`).
fn lab_plan(
    lab: &str,
    hosts: u8,
    sites: u8,
    wan_rtt_ms: Option<u32>,
    wan_loss_pct: Option<f64>,
) -> anyhow::Result<duplex_lab::LabPlan> {
    let plan = duplex_lab::LabPlan::with_sites(lab, hosts, sites)?;
    if !plan.two_sites() {
        if wan_rtt_ms.is_some() || wan_loss_pct.is_some() {
            anyhow::bail!("--wan-rtt-ms and --wan-loss-pct need --sites 2 (one site has no WAN)");
        }
        return Ok(plan);
    }
    let default = duplex_lab::WanSettings::default();
    let wan = duplex_lab::WanSettings::new(
        wan_rtt_ms.unwrap_or(default.rtt_ms),
        wan_loss_pct.unwrap_or(default.loss_pct),
    )?;
    Ok(plan.with_wan(wan)?)
}

/// The client namespaces, and with two sites the sites and the WAN.
fn print_sites(state: &duplex_lab::LabState) {
    if state.sites.is_empty() {
        println!("client namespace {} ({})", state.client_ns, state.client_ip);
        return;
    }
    for s in &state.sites {
        println!(
            "site {}: hosts {}, switch/router {} ({}), client namespace {} ({})",
            s.name,
            s.hosts.join(", "),
            s.switch_ns,
            s.router_ip,
            s.client_ns,
            s.client_ip
        );
    }
    if let Some(w) = &state.wan {
        println!("WAN: {w}");
    }
}

/// A raw packet socket as a port of the WAN relay.
struct RelayPort(duplex_net::packet_socket::PacketSocket);

impl duplex_lab::wan_relay::FramePort for RelayPort {
    fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf)
    }
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        self.0.send(&[frame])
    }
}

/// `duplex lab wan-relay`: runs until killed (or a socket fails).
async fn wan_relay(a: String, b: String, rtt_ms: u32, loss_pct: f64) -> anyhow::Result<()> {
    let settings = duplex_lab::WanSettings::new(rtt_ms, loss_pct)?;
    let open = |name: &str| {
        duplex_net::packet_socket::PacketSocket::port(name)
            .map(RelayPort)
            .with_context(|| format!("cannot open interface `{name}`"))
    };
    let ports = [open(&a)?, open(&b)?];
    tracing::info!("WAN relay {a} <-> {b}: {settings}");
    tokio::task::spawn_blocking(move || duplex_lab::wan_relay::run(ports, settings))
        .await?
        .context("WAN relay")
}

#[derive(Subcommand)]
pub enum FaultCmd {
    /// Kill every process of the host (agent, QEMU) and take its uplink
    /// down, as a power loss would. The lab controller's fence device.
    PowerOff {
        host: String,
        #[arg(long, default_value = duplex_lab::DEFAULT_LAB)]
        lab: String,
    },
    /// Cut one of the host's links: `mgmt` (its own address: agent to
    /// controller and other agents), `service` (its VMs' traffic over the
    /// uplink) or `all`.
    Partition {
        host: String,
        #[arg(long, value_parser = ["mgmt", "service", "all"])]
        link: String,
        #[arg(long, default_value = duplex_lab::DEFAULT_LAB)]
        lab: String,
    },
    /// Undo every fault of the host; power it on if it is off (its agent
    /// starts again with no VMs).
    Heal {
        host: String,
        #[arg(long, default_value = duplex_lab::DEFAULT_LAB)]
        lab: String,
    },
}

async fn run_fault(f: FaultCmd) -> anyhow::Result<String> {
    use duplex_lab::fault::{self, Link};
    let blocking = |f: Box<dyn FnOnce() -> Result<String, duplex_lab::LabError> + Send>| {
        tokio::task::spawn_blocking(f)
    };
    Ok(match f {
        FaultCmd::PowerOff { host, lab } => {
            blocking(Box::new(move || fault::power_off(&lab, &host))).await??
        }
        FaultCmd::Partition { host, link, lab } => {
            let link = match link.as_str() {
                "mgmt" => Link::Mgmt,
                "service" => Link::Service,
                _ => Link::All,
            };
            blocking(Box::new(move || fault::partition(&lab, &host, link))).await??
        }
        FaultCmd::Heal { host, lab } => fault::heal(&lab, &host).await?,
    })
}

#[derive(Args)]
pub struct DemoArgs {
    #[arg(long, default_value = duplex_lab::DEFAULT_LAB)]
    lab: String,
    #[arg(long, env = "DUPLEX_IMAGE_DIR", default_value = duplex_image::DEFAULT_IMAGE_DIR)]
    image_dir: PathBuf,
    /// UDP probe interval in milliseconds.
    #[arg(long, default_value_t = 10)]
    probe_interval_ms: u64,
    /// Migration bandwidth cap, MiB/s (QEMU's default: 128).
    #[arg(long)]
    max_bandwidth_mib: Option<u64>,
    /// Leave the lab up afterwards.
    #[arg(long)]
    keep: bool,
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

pub async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let opts = DemoOptions {
        lab: a.lab,
        duplex_bin: this_binary()?,
        image_dir: a.image_dir,
        probe_interval: Duration::from_millis(a.probe_interval_ms.max(1)),
        max_bandwidth_mib: a.max_bandwidth_mib,
        keep: a.keep,
    };
    let report: DemoReport = duplex_lab::demo::run(&opts).await?;
    match a.output {
        Format::Json => output::json(&report)?,
        Format::Table => println!("\n{report}"),
    }
    let failed = report.failed_checks();
    if !failed.is_empty() {
        anyhow::bail!("demo checks failed: {}", failed.join(", "));
    }
    Ok(())
}

#[derive(Args)]
pub struct ProbeArgs {
    /// Echo service to probe, e.g. 10.77.0.100:7.
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, default_value_t = 10_000)]
    interval_us: u64,
    /// Stop after this many seconds (default: at SIGINT/SIGTERM).
    #[arg(long)]
    duration_s: Option<u64>,
}

/// Probes until stopped, then prints the JSON report on stdout.
pub async fn probe(a: ProbeArgs) -> anyhow::Result<()> {
    let stop = crate::stop::signalled_or(a.duration_s.map(Duration::from_secs));
    let interval = Duration::from_micros(a.interval_us.max(100));
    let report =
        duplex_lab::probe::run(a.target, interval, Duration::from_millis(500), stop).await?;
    output::json(&report)
}
