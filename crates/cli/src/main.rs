//! `duplex`: one binary, a subcommand per role.

mod cmd_agent;
mod cmd_console;
mod cmd_controller;
mod cmd_data;
mod cmd_events;
mod cmd_host;
mod cmd_image;
mod cmd_lab;
mod cmd_ledger_probe;
mod cmd_pair;
mod cmd_pki;
mod cmd_placement;
mod cmd_policy;
mod cmd_rules;
mod cmd_site;
mod cmd_switch;
mod cmd_vm;
mod cmd_vm_ctl;
mod conn;
mod output;
mod stop;
mod user_data_file;
mod wait;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "duplex",
    version,
    about = "Keeps telecom-grade services running on VMs through maintenance, crashes and site loss."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the host agent (one per host).
    Agent(cmd_agent::AgentArgs),
    /// Run the in-guest middleware (started by the guest image's /init).
    Guest,
    /// Build and list guest images.
    #[command(subcommand)]
    Image(cmd_image::ImageCmd),
    /// Show (probing once if needed) which accelerator QEMU uses here.
    Accel(cmd_image::AccelArgs),
    /// The cluster's certificate authority: certificates for the
    /// controller, each host's agent and each operator.
    Pki(cmd_pki::PkiArgs),
    /// Run the controller (one leader; more on etcd stand by).
    Controller(cmd_controller::ControllerArgs),
    /// Hosts as the controller sees them.
    #[command(subcommand)]
    Host(cmd_host::HostCmd),
    /// VMs: through the controller, or one agent directly with --agent.
    #[command(subcommand)]
    Vm(cmd_vm::VmCmd),
    /// ACT/SBY pairs.
    #[command(subcommand)]
    Pair(cmd_pair::PairCmd),
    /// Run the Duplex switch (S2 embodiment B): an Ethernet switch that
    /// holds replicated VMs' output until their epoch commits.
    Switch(cmd_switch::SwitchArgs),
    /// S5: one VM kept in two sites, each site's traffic buffered where
    /// the VM does not run, processed in order when it runs there.
    #[command(subcommand)]
    Site(cmd_site::SiteCmd),
    /// Network-aware placement: why a VM goes where it goes.
    #[command(subcommand)]
    Placement(cmd_placement::PlacementCmd),
    /// S2: which packets of a replicated VM wait for their epoch's commit.
    #[command(subcommand)]
    Rules(cmd_rules::RulesCmd),
    /// What happened: host failures, placements, switchovers...
    Events(cmd_events::EventsArgs),
    /// The web console: opens a session for you and prints its address.
    Console(cmd_console::ConsoleArgs),
    /// Several hosts on this machine, in network namespaces.
    #[command(subcommand)]
    Lab(cmd_lab::LabCmd),
    /// Lab with 2 hosts, a VM, a live migration under traffic; prints what happened.
    Demo(cmd_lab::DemoArgs),
    /// The sample SIP service (UAS) the guest runs; state replicated through
    /// the middleware.
    Sip {
        #[arg(long, default_value = "0.0.0.0:5060")]
        listen: std::net::SocketAddr,
        /// The middleware's replication socket (none: no replication).
        #[arg(long)]
        sync_socket: Option<std::path::PathBuf>,
    },
    /// Health check of a SIP service: OPTIONS, expect 200 within 1 s.
    SipHealth { addr: std::net::SocketAddr },
    /// Benchmark load in a guest: rewrite MIB MiB of memory at a set rate.
    #[command(hide = true)]
    DirtyMemory {
        #[arg(long)]
        mib: u32,
        #[arg(long)]
        mib_per_s: u32,
    },
    /// Traffic probe (UDP echo client) used by the demo, tests and benchmarks.
    #[command(hide = true)]
    Probe(cmd_lab::ProbeArgs),
    /// Request-ledger client (S5 tests and benchmarks): lost, duplicated
    /// and reordered requests as the guest saw them.
    #[command(hide = true)]
    LedgerProbe(cmd_ledger_probe::LedgerProbeArgs),
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DUPLEX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Guest = cli.cmd {
        // In the guest: no runtime, no logging framework, just the service.
        return match duplex_guest::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("duplex guest: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Services in the guest log to the serial console, which is slow under
    // TCG: warnings only unless DUPLEX_LOG says otherwise.
    init_logging(match cli.cmd {
        Cmd::Sip { .. } | Cmd::SipHealth { .. } => "warn",
        _ => "info",
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Agent(a) => cmd_agent::run(a).await,
            Cmd::Guest => Ok(()),
            Cmd::Image(c) => cmd_image::run(c).await,
            Cmd::Accel(a) => cmd_image::accel(a).await,
            Cmd::Controller(a) => cmd_controller::run(a).await,
            Cmd::Pki(a) => cmd_pki::run(a),
            Cmd::Host(c) => cmd_host::run(c).await,
            Cmd::Vm(c) => cmd_vm::run(c).await,
            Cmd::Pair(c) => cmd_pair::run(c).await,
            Cmd::Site(c) => cmd_site::run(c).await,
            Cmd::Events(a) => cmd_events::run(a).await,
            Cmd::Console(a) => cmd_console::run(a).await,
            Cmd::Placement(c) => cmd_placement::run(c).await,
            Cmd::Rules(c) => cmd_rules::run(c).await,
            Cmd::Switch(a) => cmd_switch::run(a).await,
            Cmd::Lab(c) => cmd_lab::run(c).await,
            Cmd::Demo(a) => cmd_lab::demo(a).await,
            Cmd::Probe(a) => cmd_lab::probe(a).await,
            Cmd::LedgerProbe(a) => cmd_ledger_probe::run(a).await,
            Cmd::Sip {
                listen,
                sync_socket,
            } => {
                duplex_sip::run(duplex_sip::SipOptions {
                    listen,
                    sync_socket,
                })
                .await?;
                Ok(())
            }
            Cmd::DirtyMemory { mib, mib_per_s } => duplex_guest::load::dirty(mib, mib_per_s),
            Cmd::SipHealth { addr } => {
                let rtt = duplex_sip::health_check(addr).await?;
                println!("{addr}: 200 OK in {} ms", rtt.as_millis());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
