//! `duplex placement explain VM`: why placement would put a VM where it
//! does; `duplex placement policy` and `plan`: the rebalancer that
//! relieves overloaded hosts, its settings and a dry run.

use crate::conn::Conn;
use crate::output::{self, Format};
use clap::{Args, Subcommand};
use duplex_controller::relief::PlanView;
use duplex_core::placement::relief::{ReliefChange, ReliefPolicy};
use duplex_core::placement::relief_plan::Step;
use duplex_core::placement::Explanation;

#[derive(Subcommand)]
pub enum PlacementCmd {
    /// Every host's filter result and impact-factor terms for the VM.
    Explain {
        #[command(flatten)]
        c: Conn,
        vm: String,
    },
    /// Show the rebalancer's policy, or change the settings given. It is
    /// off until `--enable`: a host above `--high` for `--sustain`
    /// seconds gives up the VM with the most incoming traffic.
    Policy {
        #[command(flatten)]
        c: Conn,
        #[command(flatten)]
        change: PolicyArgs,
    },
    /// Dry run: what the rebalancer would do now (as if it were on), and
    /// each host's measured load. Moves nothing.
    Plan {
        #[command(flatten)]
        c: Conn,
    },
}

#[derive(Args)]
pub struct PolicyArgs {
    /// Turn the rebalancer on.
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Turn it off (nothing moves by itself).
    #[arg(long)]
    disable: bool,
    /// Overloaded above this share of a host's vCPUs or memory (0-1].
    #[arg(long)]
    high: Option<f64>,
    /// Relieved below this share; a host above it takes no VM (0-1).
    #[arg(long)]
    low: Option<f64>,
    /// Seconds over the high mark before anything moves.
    #[arg(long, value_name = "SECONDS")]
    sustain: Option<u64>,
    /// Seconds a relieved host and a moved VM rest.
    #[arg(long, value_name = "SECONDS")]
    cooldown: Option<u64>,
    /// Moves running at once, cluster-wide (1-16).
    #[arg(long)]
    max_in_flight: Option<usize>,
}

impl PolicyArgs {
    fn change(&self) -> Option<ReliefChange> {
        let c = ReliefChange {
            enabled: match (self.enable, self.disable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            high: self.high,
            low: self.low,
            sustain_ms: self.sustain.map(|s| s.saturating_mul(1000)),
            cooldown_ms: self.cooldown.map(|s| s.saturating_mul(1000)),
            max_in_flight: self.max_in_flight,
        };
        (c != ReliefChange::default()).then_some(c)
    }
}

const POLICY: &str = "/v1/rebalancer/policy";

pub async fn run(cmd: PlacementCmd) -> anyhow::Result<()> {
    match cmd {
        PlacementCmd::Explain { c, vm } => {
            let ex: Explanation = c.client()?.get(&format!("/v1/placement/{vm}")).await?;
            match c.output {
                Format::Json => output::json(&ex)?,
                Format::Table => print!("{}", ex.render()),
            }
        }
        PlacementCmd::Policy { c, change } => {
            let client = c.client()?;
            let p: ReliefPolicy = match change.change() {
                Some(ch) => client.post(POLICY, &ch).await?,
                None => client.get(POLICY).await?,
            };
            match c.output {
                Format::Json => output::json(&p)?,
                Format::Table => println!("{}", describe(&p)),
            }
        }
        PlacementCmd::Plan { c } => {
            let plan: PlanView = c.client()?.get("/v1/rebalancer/plan").await?;
            match c.output {
                Format::Json => output::json(&plan)?,
                Format::Table => show_plan(&plan),
            }
        }
    }
    Ok(())
}

fn describe(p: &ReliefPolicy) -> String {
    format!(
        "rebalancer {}: a host above {:.0} % for {} s gives up a VM; below {:.0} % it is relieved \
         (and above it takes none); hosts and VMs moved rest {} s; {} move(s) at once",
        if p.enabled { "on" } else { "off" },
        p.high * 100.0,
        p.sustain_ms / 1000,
        p.low * 100.0,
        p.cooldown_ms / 1000,
        p.max_in_flight
    )
}

fn show_plan(plan: &PlanView) {
    println!("{}", describe(&plan.policy));
    if !plan.policy.enabled {
        println!("(off: this is what it would do if it were on)");
    }
    let secs = |t: u64| plan.now_ms.abs_diff(t) / 1000;
    let rows: Vec<Vec<String>> = plan
        .hosts
        .iter()
        .map(|h| {
            let standing = match (h.rests_until_ms, h.over_since_ms) {
                (Some(t), _) => format!("relieved, rests {} s more", secs(t)),
                (None, Some(t)) => format!("over the high mark for {} s", secs(t)),
                (None, None) => "-".into(),
            };
            vec![
                h.host.clone(),
                format!("{:.0} %", h.cpu * 100.0),
                format!("{:.0} %", h.mem * 100.0),
                standing,
            ]
        })
        .collect();
    output::table(&["HOST", "CPU", "MEMORY", "STANDING"], &rows);
    println!("moves of the rebalancer running: {}", plan.in_flight);
    if plan.steps.is_empty() {
        println!("no host is due for relief now");
    }
    for s in &plan.steps {
        match s {
            Step::Move(m) => println!("would move: {}", m.why()),
            Step::Stuck(s) => println!("stuck: {}", s.why()),
        }
    }
}
