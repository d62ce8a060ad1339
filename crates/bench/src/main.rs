//! `duplex-bench`: benchmarks that measure Duplex and the plain way side by
//! side in one run, writing JSON + Markdown to `bench/results/`.

mod boot;
mod console;
mod element;
mod failover;
mod migrate;
mod raw;
mod relief;
mod s1;
mod s2;
mod s3;
mod s5;
mod s5_report;
mod sip;
mod stats;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "duplex-bench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Runs per arm.
    #[arg(long, default_value_t = 5, global = true)]
    runs: usize,
    #[arg(long, default_value = "bench/results", global = true)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// QEMU start -> guest /init, agent vs by hand.
    Boot,
    /// The web console at size: a simulated cluster served by the real
    /// controller, the page in headless chromium: page load, live update
    /// and the feed's CPU.
    Console {
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        #[arg(long, default_value_t = 5000)]
        vms: usize,
        /// Page loads (each a fresh session), alternating with no page.
        #[arg(long, default_value_t = 3)]
        loads: usize,
    },
    /// The rebalancer at size: a simulated cluster under shifting load,
    /// the rebalancer off against on (hosts over the high mark, traffic
    /// × hops, moves, oscillation).
    Relief {
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        #[arg(long, default_value_t = 5000)]
        vms: usize,
        /// Load shifts per arm.
        #[arg(long, default_value_t = 4)]
        shifts: usize,
        /// Seconds between shifts.
        #[arg(long, default_value_t = 120)]
        shift_every: u64,
        #[arg(long, default_value_t = 8423646)]
        seed: u64,
    },
    /// Live migration, agents vs raw QMP.
    Migrate,
    /// SIP load on an ACT/SBY pair: highest clean call rate, then a switchover.
    Sip,
    /// The ACT's host powered off under SIP load: Duplex's failover against
    /// no failover (host back later) and a cold restart of a lone VM.
    Failover,
    /// S3: the ACT's kernel panics under SIP load: the fast path against
    /// the full escalation, alternating in one lab.
    S3,
    /// S1: a pair's ACT member moved off its host under SIP load, Duplex
    /// pair migration against plain live migration.
    /// The network element: plain tap, the element before, the element
    /// now; without a guest and in front of guests.
    Element {
        /// Echoes/s offered between a tap and a stand-in QEMU.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "500,5000,25000,50000,100000"
        )]
        micro_rates: Vec<u32>,
        /// Echoes/s offered to guests.
        #[arg(long, value_delimiter = ',', default_value = "300,1000,2000")]
        guest_rates: Vec<u32>,
        /// Seconds per point.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// (internal) One arm's VM side of `element`, run in its namespace.
    #[command(hide = true)]
    ElementServe {
        #[arg(long, value_enum)]
        r#impl: element::Impl,
        #[arg(long)]
        tap: String,
        #[arg(long)]
        bridge: String,
        #[arg(long)]
        sock: PathBuf,
        #[arg(long)]
        mac: duplex_core::mac::Mac,
    },
    /// (internal) The client of `element`: timed UDP echoes, one JSON line.
    #[command(hide = true)]
    ElementProbe {
        #[arg(long)]
        to: std::net::Ipv4Addr,
        #[arg(long, default_value_t = 7)]
        port: u16,
        #[arg(long)]
        rate: u32,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        secs: f64,
    },
    /// S2: no protection, everything held, Duplex's classification; idle
    /// and busy guest; then a failover.
    S2 {
        /// Runs of each arm per load.
        #[arg(long, default_value_t = 2)]
        runs: usize,
        /// Datagrams/s per stream (class 1 and class 2).
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Seconds per point.
        #[arg(long, default_value_t = 8.0)]
        secs: f64,
    },
    /// S5: a VM kept in two sites switching on its policy against one VM
    /// in site a served across the WAN; then site a lost: the replica
    /// against a cold boot in site b.
    S5 {
        /// Runs of each arm.
        #[arg(long, default_value_t = 2)]
        runs: usize,
        /// Requests/s per site.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// Seconds per point.
        #[arg(long, default_value_t = 30.0)]
        secs: f64,
        /// (a) switches when the other site's oldest request waited this.
        #[arg(long, default_value_t = 1000)]
        max_age_ms: u64,
    },
    /// (internal) The client of `s2`: a class-1 and a class-2 stream.
    #[command(hide = true)]
    S2Probe {
        #[arg(long)]
        to: std::net::Ipv4Addr,
        #[arg(long, default_value_t = 7)]
        port: u16,
        #[arg(long)]
        rate: u32,
        #[arg(long)]
        secs: f64,
    },
    S1 {
        /// Moves there and back per arm.
        #[arg(long, default_value_t = 3)]
        moves: usize,
        /// Runs of the drain arm (its run-to-run spread is the claim).
        #[arg(long, default_value_t = 3)]
        drain_runs: usize,
    },
}

/// The `duplex` binary next to this one, else the installed one.
pub fn duplex_bin() -> PathBuf {
    let beside = std::env::current_exe()
        .map(|e| e.with_file_name("duplex"))
        .unwrap_or_default();
    if beside.exists() {
        beside
    } else {
        PathBuf::from("/usr/local/bin/duplex")
    }
}

/// The lab a benchmark runs in; taken down when dropped.
pub struct Lab {
    state: duplex_lab::LabState,
}

impl Lab {
    const NAME: &'static str = "bench";

    async fn up(hosts: u8) -> anyhow::Result<Lab> {
        Lab::up_with(hosts, true, &[]).await
    }

    /// A lab whose controller fences with the lab's power switch or not,
    /// with `agent_args` added to every agent's command line.
    async fn up_with(hosts: u8, power_fence: bool, agent_args: &[&str]) -> anyhow::Result<Lab> {
        Lab::up_switched(hosts, power_fence, agent_args, Default::default()).await
    }

    /// [`Lab::up_with`], switched by `switch`.
    async fn up_switched(
        hosts: u8,
        power_fence: bool,
        agent_args: &[&str],
        switch: duplex_lab::switch::SwitchKind,
    ) -> anyhow::Result<Lab> {
        let plan = duplex_lab::LabPlan::new(Lab::NAME, hosts)?;
        Lab::up_planned(plan, power_fence, agent_args, switch).await
    }

    /// Lab `plan` (taken down first if a run left it).
    async fn up_planned(
        plan: duplex_lab::LabPlan,
        power_fence: bool,
        agent_args: &[&str],
        switch: duplex_lab::switch::SwitchKind,
    ) -> anyhow::Result<Lab> {
        let _ = tokio::task::spawn_blocking(|| duplex_lab::down(Lab::NAME)).await;
        let state = duplex_lab::up(
            &plan,
            duplex_lab::UpOptions {
                duplex_bin: duplex_bin(),
                image_dir: duplex_image::DEFAULT_IMAGE_DIR.into(),
                extra_agent_args: agent_args.iter().map(|s| s.to_string()).collect(),
                store: Default::default(),
                racks: 1,
                controllers: 1,
                power_fence,
                switch,
            },
        )
        .await?;
        Ok(Lab { state })
    }

    /// A lab of `hosts` over `sites` sites (WAN of 40 ms RTT), fenced by
    /// the lab's power switch.
    async fn up_sites(hosts: u8, sites: u8) -> anyhow::Result<Lab> {
        let plan = duplex_lab::LabPlan::with_sites(Lab::NAME, hosts, sites)?;
        Lab::up_planned(plan, true, &[], Default::default()).await
    }

    /// The `i` of the lab's `10.i.0.0/24`.
    pub fn index(&self) -> u8 {
        self.state.index
    }

    /// The accelerator host h1's agent reports.
    pub async fn accel(&self) -> String {
        let Ok(agent) = self.agent(1) else {
            return String::new();
        };
        match agent.host().await {
            Ok(h) => format!("{:?}", h.accel.kind).to_lowercase(),
            Err(_) => String::new(),
        }
    }

    /// A client of host n's agent (as the lab's operator).
    pub fn agent(&self, n: u8) -> anyhow::Result<duplex_agent::client::AgentClient> {
        Ok(self.state.agent_client(n)?)
    }

    /// The pid of host n's agent.
    pub fn agent_pid(&self, n: u8) -> anyhow::Result<u32> {
        self.state
            .agent(n)
            .map(|a| a.pid as u32)
            .context("no such lab host")
    }

    pub fn agent_url(&self, n: u8) -> anyhow::Result<String> {
        self.state
            .agent_url(n)
            .map(str::to_string)
            .context("no such lab host")
    }

    pub fn agent_ip(&self, n: u8) -> anyhow::Result<std::net::Ipv4Addr> {
        self.state
            .agent(n)
            .map(|a| a.ip)
            .context("no such lab host")
    }

    pub fn host_ns(&self, n: u8) -> anyhow::Result<String> {
        self.state
            .host_ns(n)
            .map(str::to_string)
            .context("no such lab host")
    }

    pub fn client_ns(&self) -> &str {
        self.state.client_ns()
    }

    pub fn vm_ip(&self, k: u8) -> anyhow::Result<std::net::Ipv4Addr> {
        self.state.vm_ip(k).context("no VM address")
    }

    /// sipp from the client namespace against `vip`: `rate_cps` calls/s of
    /// `call_ms` until stopped (at most `longest`), its work directory
    /// `work` made afresh; with the instant it was started.
    pub fn sipp_load(
        &self,
        vip: std::net::Ipv4Addr,
        work: &std::path::Path,
        (rate_cps, call_ms): (f64, u64),
        longest: std::time::Duration,
    ) -> anyhow::Result<(duplex_sipp::RunningSipp, std::time::Instant)> {
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(work)?;
        let mut run =
            duplex_sipp::SippRun::new(std::net::SocketAddr::from((vip, 5060)), work.into());
        (run.rate_cps, run.call_length_ms, run.calls) = (rate_cps, call_ms, None);
        run.duration = Some(longest);
        run.recv_timeout = Some(std::time::Duration::from_secs(10));
        run.timeout = longest + std::time::Duration::from_secs(60);
        let prefix: Vec<String> = ["ip", "netns", "exec", self.client_ns()]
            .map(String::from)
            .to_vec();
        let started = std::time::Instant::now();
        Ok((duplex_sipp::spawn(&run, &prefix)?, started))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = duplex_lab::down(Lab::NAME) {
            eprintln!("warning: taking the bench lab down: {e}");
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DUPLEX_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    anyhow::ensure!(cli.runs >= 1, "--runs must be at least 1");
    match cli.cmd {
        Cmd::Console { hosts, vms, loads } => {
            let p = console::Params {
                hosts,
                vms,
                runs: loads,
            };
            console::run(p, &cli.out).await
        }
        Cmd::Relief {
            hosts,
            vms,
            shifts,
            shift_every,
            seed,
        } => {
            let p = relief::Params {
                hosts,
                vms,
                shifts,
                shift_every: std::time::Duration::from_secs(shift_every),
                seed,
            };
            relief::run(p, &cli.out).await
        }
        Cmd::Boot => {
            let lab = Lab::up(1).await?;
            boot::run(&lab, cli.runs, &cli.out).await
        }
        Cmd::Migrate => {
            let lab = Lab::up(2).await?;
            migrate::run(&lab, cli.runs, &cli.out).await
        }
        Cmd::Failover => failover::run(cli.runs, &cli.out).await,
        Cmd::Element {
            micro_rates,
            guest_rates,
            secs,
        } => {
            anyhow::ensure!((0.5..=60.0).contains(&secs), "--secs must be in 0.5..=60");
            let plan = element::Plan {
                runs: cli.runs,
                micro_rates,
                guest_rates,
                secs,
            };
            element::run(&plan, &cli.out).await
        }
        Cmd::ElementServe {
            r#impl,
            tap,
            bridge,
            sock,
            mac,
        } => element::serve(r#impl, &tap, &bridge, &sock, mac).await,
        Cmd::ElementProbe {
            to,
            port,
            rate,
            size,
            secs,
        } => {
            let p = element::probe(to, port, rate, size, secs)?;
            println!("{}", serde_json::to_string(&p)?);
            Ok(())
        }
        Cmd::S3 => s3::run(cli.runs, &cli.out).await,
        Cmd::Sip => {
            let lab = Lab::up(2).await?;
            sip::run(&lab, &cli.out).await
        }
        Cmd::S1 { moves, drain_runs } => {
            anyhow::ensure!((1..=20).contains(&moves), "--moves must be in 1..=20");
            anyhow::ensure!(
                (1..=10).contains(&drain_runs),
                "--drain-runs must be in 1..=10"
            );
            let lab = Lab::up(3).await?;
            s1::run(&lab, &cli.out, moves, drain_runs).await
        }
        Cmd::S2 { runs, rate, secs } => {
            anyhow::ensure!((1..=10).contains(&runs), "--runs must be in 1..=10");
            anyhow::ensure!((1..=5000).contains(&rate), "--rate must be in 1..=5000");
            anyhow::ensure!((1.0..=120.0).contains(&secs), "--secs must be in 1..=120");
            // Embodiment B's arm needs the Duplex switch; every arm's
            // traffic passes it, so they compare on the same path.
            let switch = duplex_lab::switch::SwitchKind::Duplex;
            let lab = Lab::up_switched(4, true, &[], switch).await?;
            s2::run(&lab, &cli.out, runs, rate, secs).await
        }
        Cmd::S5 {
            runs,
            rate,
            secs,
            max_age_ms,
        } => {
            let lab = Lab::up_sites(2, 2).await?;
            s5::run(&lab, &cli.out, runs, rate, secs, max_age_ms).await
        }
        Cmd::S2Probe {
            to,
            port,
            rate,
            secs,
        } => {
            let p = s2::probe::probe(to, port, rate, secs)?;
            println!("{}", serde_json::to_string(&p)?);
            Ok(())
        }
    }
}
