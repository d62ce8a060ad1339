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
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
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
            let plan = duplex_lab::LabPlan::new(&lab, hosts)?;
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
                    println!("client namespace {} ({})", state.client_ns, state.client_ip);
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
    let stop = async move {
        use tokio::signal::unix::{signal, SignalKind};
        let limit = async {
            match a.duration_s {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = limit => {}
            },
            Err(_) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = limit => {}
            },
        }
    };
    let interval = Duration::from_micros(a.interval_us.max(100));
    let report =
        duplex_lab::probe::run(a.target, interval, Duration::from_millis(500), stop).await?;
    output::json(&report)
}
