//! `duplex vm ...`: create/list/show/delete go through the controller
//! (`cmd_vm_ctl`); with `--agent URL` every command talks to that agent
//! directly, which is also how pause/resume/traffic/status/migrate work today.

use crate::output::{self, Format};
use clap::{Args, Subcommand};
use duplex_agent::client::AgentClient;
use duplex_core::agent_api::{MigrateRequest, MigrationPhase, MigrationTuning, WaitFor};
use duplex_core::guest_proto::{Fault, Op};
use duplex_core::vm_spec::VmSpec;
use std::net::Ipv4Addr;
use std::time::Duration;

#[derive(Args)]
pub struct Target {
    /// Talk to this agent directly instead of the controller.
    #[arg(long, env = "DUPLEX_AGENT", global = true)]
    agent: Option<String>,
    #[command(flatten)]
    pub c: crate::conn::Conn,
}

impl Target {
    fn agent_url(&self) -> anyhow::Result<&str> {
        self.agent.as_deref().ok_or_else(|| {
            anyhow::anyhow!("this command talks to an agent directly: pass --agent URL (e.g. https://10.77.0.11:7070)")
        })
    }

    /// A client of the `--agent`, presenting the operator's certificate
    /// (an agent obeys admins and the controller; scope read may look).
    fn agent(&self) -> anyhow::Result<AgentClient> {
        let url = self.agent_url()?;
        let http = self.c.http(duplex_agent::client::limits::shape)?;
        Ok(AgentClient::new(url, http))
    }
}

#[derive(Subcommand)]
pub enum VmCmd {
    /// Create and boot a VM.
    Create {
        #[command(flatten)]
        t: Target,
        name: String,
        #[arg(long)]
        ip: Ipv4Addr,
        #[arg(long, default_value_t = 24)]
        prefix_len: u8,
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        #[arg(long, default_value = "default")]
        image: String,
        #[arg(long, default_value_t = 256)]
        memory_mib: u32,
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Do not wait for the guest to answer.
        #[arg(long)]
        no_wait: bool,
        /// Through the controller: put it on this host instead of letting the controller place it.
        #[arg(long)]
        host: Option<String>,
        /// User data (files and environment for the guest, TOML or .json;
        /// docs/images.md).
        #[arg(long)]
        user_data: Option<std::path::PathBuf>,
        /// S2: checkpoint the whole VM to a backup host every epoch (its
        /// image must be diskless; docs/epochs.md).
        #[arg(long)]
        replicated: bool,
        /// S2: where its held output waits for commit: in its host
        /// (`host`) or in the Duplex switch its host's uplink passes
        /// through (`switch`; the agents need --output-switch).
        #[arg(
            long,
            value_name = "host|switch|none",
            default_value = "host",
            requires = "replicated"
        )]
        hold_at: duplex_core::vm_spec::HoldAt,
    },
    List {
        #[command(flatten)]
        t: Target,
    },
    Show {
        #[command(flatten)]
        t: Target,
        name: String,
    },
    Delete {
        #[command(flatten)]
        t: Target,
        name: String,
        /// Return once deletion is recorded, without waiting for the VM to go.
        #[arg(long)]
        no_wait: bool,
    },
    Pause {
        #[command(flatten)]
        t: Target,
        name: String,
    },
    Resume {
        #[command(flatten)]
        t: Target,
        name: String,
    },
    /// Hard reset (QMP system_reset), as a guest crash would be: the guest
    /// boots again; a pair member comes back without its role, and the
    /// controller repairs the pair.
    Reset {
        #[command(flatten)]
        t: Target,
        name: String,
    },
    /// Network element counters, per peer.
    Traffic {
        #[command(flatten)]
        t: Target,
        name: String,
    },
    /// Inject a fault into the guest, for a drill (through its agent,
    /// which must run with --allow-faults, as a lab's do): kill-service,
    /// hang-service, kill-middleware, panic or damage-data.
    Fault {
        #[command(flatten)]
        t: Target,
        name: String,
        #[arg(value_parser = parse_fault)]
        fault: Fault,
    },
    /// Restart counters per phase and the failures acted on (S3): when,
    /// where, cause, phase, outcome. Through the controller only.
    History {
        #[command(flatten)]
        t: Target,
        name: String,
    },
    /// Take a LAF backup of the VM's service data now (of its pair's ACT),
    /// onto the external disk. Through the controller only.
    Backup {
        #[command(flatten)]
        t: Target,
        name: String,
    },
    /// The LAF backups and REF data sets stored for the VM, newest first;
    /// a damaged version says why. Through the controller only.
    Data {
        #[command(flatten)]
        t: Target,
        name: String,
    },
    /// Give the VM a REF data set: the state PH3.5 re-creates it with
    /// (and PH3.0 when there is no LAF backup). FILE is one JSON object of
    /// key → value, as the service stores its state.
    Ref {
        #[command(flatten)]
        t: Target,
        name: String,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Show or change the VM's S3 restart policy (its own, else its
    /// pair's, else the defaults): thresholds, probation windows, fast path.
    Policy {
        #[command(flatten)]
        t: Target,
        name: String,
        #[command(flatten)]
        policy: crate::cmd_policy::PolicyArgs,
    },
    /// Ask the guest for its status over the control channel.
    Status {
        #[command(flatten)]
        t: Target,
        name: String,
    },
    /// Live-migrate to another agent, following progress.
    Migrate {
        #[command(flatten)]
        t: Target,
        name: String,
        /// Through the controller: a host name, or `auto` for the placement
        /// engine's choice. With --agent: the destination agent's base URL.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        tuning: TuningArgs,
        #[arg(long)]
        no_wait: bool,
        /// Live-migrate a pair's ACT anyway: its service pauses for the
        /// final copy (without it the controller refuses and points to
        /// `duplex pair migrate`, which moves it with no pause). Needed
        /// with --agent, where nothing knows the VM's role.
        #[arg(long)]
        plain: bool,
    },
}

/// How QEMU runs a live migration (defaults: Duplex's, see
/// `duplex_qemu::migration`).
#[derive(Args, Debug)]
pub struct TuningArgs {
    /// Bandwidth cap of the migration stream, MiB/s (default 128).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_bandwidth_mib: Option<u64>,
    /// Longest pause QEMU may plan for the final copy, ms (default 50).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    downtime_limit_ms: Option<u64>,
    /// Slow the guest's vCPUs, more every pass, until the copy converges
    /// (for guests that dirty memory faster than the link carries it).
    #[arg(long)]
    auto_converge: bool,
}

impl TuningArgs {
    fn tuning(&self) -> MigrationTuning {
        MigrationTuning {
            max_bandwidth_mib: self.max_bandwidth_mib,
            downtime_limit_ms: self.downtime_limit_ms,
            auto_converge: self.auto_converge,
            cleartext: false,
        }
    }
}

pub async fn run(cmd: VmCmd) -> anyhow::Result<()> {
    match cmd {
        VmCmd::Create {
            t,
            name,
            ip,
            prefix_len,
            gateway,
            image,
            memory_mib,
            vcpus,
            no_wait,
            host,
            user_data,
            replicated,
            hold_at,
        } => {
            let user_data = user_data
                .map(|p| crate::user_data_file::read(&p))
                .transpose()?;
            let spec = VmSpec {
                name,
                image,
                memory_mib,
                vcpus,
                ip,
                prefix_len,
                gateway,
                mac: None,
                user_data,
                replicated,
                hold_at,
            };
            spec.validate()?;
            if t.agent.is_none() {
                return crate::cmd_vm_ctl::create(&t.c, spec, host, no_wait).await;
            }
            if host.is_some() {
                anyhow::bail!("--host places a VM through the controller; with --agent the VM goes to that agent");
            }
            let c = t.agent()?;
            if !no_wait {
                eprintln!(
                    "booting `{}` on {} (waiting for its guest to answer)...",
                    spec.name,
                    t.agent_url()?
                );
            }
            let vm = c
                .create(
                    &spec,
                    if no_wait {
                        WaitFor::Started
                    } else {
                        WaitFor::Ready
                    },
                )
                .await?;
            match t.c.output {
                Format::Json => output::json(&vm)?,
                Format::Table => println!(
                    "VM `{}` {:?} on {} (ip {}, mac {}, boot to /init {} ms)",
                    vm.spec.name,
                    vm.state,
                    t.agent_url()?,
                    vm.spec.ip,
                    vm.mac,
                    vm.boot_ms
                        .map(|b| b.to_string())
                        .unwrap_or_else(|| "?".into())
                ),
            }
        }
        VmCmd::List { t } if t.agent.is_none() => crate::cmd_vm_ctl::list(&t.c).await?,
        VmCmd::Show { t, name } if t.agent.is_none() => {
            crate::cmd_vm_ctl::show(&t.c, &name).await?
        }
        VmCmd::Delete { t, name, no_wait } if t.agent.is_none() => {
            crate::cmd_vm_ctl::delete(&t.c, &name, no_wait).await?
        }
        VmCmd::List { t } => {
            let vms = t.agent()?.list().await?;
            match t.c.output {
                Format::Json => output::json(&vms)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = vms
                        .iter()
                        .map(|v| {
                            vec![
                                v.name.clone(),
                                format!("{:?}", v.state),
                                v.ip.to_string(),
                                v.mac.to_string(),
                            ]
                        })
                        .collect();
                    output::table(&["NAME", "STATE", "IP", "MAC"], &rows);
                }
            }
        }
        VmCmd::Show { t, name } => output::json(&t.agent()?.show(&name).await?)?,
        VmCmd::Delete { t, name, .. } => {
            t.agent()?.delete(&name).await?;
            println!("VM `{name}` deleted");
        }
        VmCmd::Pause { t, name } => {
            t.agent()?.pause(&name).await?;
            println!("VM `{name}` paused");
        }
        VmCmd::Resume { t, name } => {
            t.agent()?.resume(&name).await?;
            println!("VM `{name}` resumed");
        }
        VmCmd::Reset { t, name } => {
            t.agent()?.reset(&name).await?;
            println!("VM `{name}` reset: its guest boots again");
        }
        VmCmd::Traffic { t, name } => {
            let r = t.agent()?.traffic(&name).await?;
            match t.c.output {
                Format::Json => output::json(&r)?,
                Format::Table => {
                    println!(
                        "tx {} pkts / {} B, rx {} pkts / {} B",
                        r.tx_packets, r.tx_bytes, r.rx_packets, r.rx_bytes
                    );
                    let rows: Vec<Vec<String>> = r
                        .peers
                        .iter()
                        .map(|p| {
                            vec![
                                p.mac.to_string(),
                                p.ip.map(|i| i.to_string()).unwrap_or_default(),
                                p.tx_packets.to_string(),
                                p.tx_bytes.to_string(),
                                p.rx_packets.to_string(),
                                p.rx_bytes.to_string(),
                            ]
                        })
                        .collect();
                    output::table(
                        &[
                            "PEER MAC", "PEER IP", "TX PKTS", "TX BYTES", "RX PKTS", "RX BYTES",
                        ],
                        &rows,
                    );
                    for d in &r.drops {
                        println!("dropped {} ({})", d.packets, d.reason);
                    }
                }
            }
        }
        VmCmd::Status { t, name } => output::json(&t.agent()?.guest(&name, &Op::Status).await?)?,
        VmCmd::Policy { t, name, policy } => {
            if t.agent.is_some() {
                anyhow::bail!("`duplex vm policy` is the controller's; drop --agent");
            }
            crate::cmd_policy::run(&t.c, &format!("/v1/vms/{name}/policy"), &policy).await?
        }
        VmCmd::History { t, name } => {
            if t.agent.is_some() {
                anyhow::bail!("`duplex vm history` asks the controller, which keeps the counters; drop --agent");
            }
            crate::cmd_vm_ctl::history(&t.c, &name).await?
        }
        VmCmd::Backup { t, name } => {
            crate::cmd_data::backup(controller_only(&t, "backup")?, &name).await?
        }
        VmCmd::Data { t, name } => {
            crate::cmd_data::list(controller_only(&t, "data")?, &name).await?
        }
        VmCmd::Ref { t, name, file } => {
            crate::cmd_data::set_ref(controller_only(&t, "ref")?, &name, &file).await?
        }
        VmCmd::Fault { t, name, fault } => {
            output::json(&t.agent()?.guest(&name, &Op::InjectFault { fault }).await?)?
        }
        VmCmd::Migrate {
            t,
            name,
            to,
            tuning,
            no_wait,
            plain,
        } if t.agent.is_none() => {
            let how = crate::cmd_vm_ctl::How {
                tuning: tuning.tuning(),
                no_wait,
                plain,
            };
            crate::cmd_vm_ctl::migrate(&t.c, &name, &to, &how).await?
        }
        VmCmd::Migrate {
            t,
            name,
            to,
            tuning,
            no_wait,
            plain,
        } => {
            // Only the controller knows whether `name` is a pair's ACT,
            // which a live migration would pause.
            if !plain {
                anyhow::bail!(
                    "straight to an agent, nothing checks whether `{name}` is a pair's ACT (its service would pause for the final copy): migrate through the controller (without --agent), or pass --plain if you mean a plain live migration"
                );
            }
            let c = t.agent()?;
            let req = MigrateRequest {
                to: to.clone(),
                tuning: tuning.tuning(),
            };
            if no_wait {
                let info = c.start_migration(&name, &req).await?;
                return output::json(&info);
            }
            let info = c
                .migrate(&name, &req, Duration::from_secs(3600), |i| {
                    if i.phase == MigrationPhase::Active {
                        let p = &i.progress;
                        eprint!(
                            "\r  migrating `{name}`: {:>5.1} MiB sent, {:>5.1} MiB left, pass {}   ",
                            p.transferred_bytes as f64 / 1048576.0,
                            p.remaining_bytes as f64 / 1048576.0,
                            p.passes
                        );
                    }
                })
                .await;
            eprintln!();
            let info = info?;
            match t.c.output {
                Format::Json => output::json(&info)?,
                Format::Table => {
                    if let Some(s) = &info.stats {
                        println!(
                            "VM `{name}` now runs on {to}: total {} ms, downtime {} ms, {:.1} MiB, {} passes",
                            s.total_ms,
                            s.downtime_ms,
                            s.transferred_bytes as f64 / 1048576.0,
                            s.passes
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// A fault's name as the command line spells it (`kill-service`).
/// The controller connection of a command only the controller answers
/// (the external disk is its).
fn controller_only<'a>(t: &'a Target, what: &str) -> anyhow::Result<&'a crate::conn::Conn> {
    if t.agent.is_some() {
        anyhow::bail!(
            "`duplex vm {what}` asks the controller, which keeps the external disk; drop --agent"
        );
    }
    Ok(&t.c)
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    Fault::ALL
        .into_iter()
        .find(|f| fault_name(*f) == s)
        .ok_or_else(|| {
            let names: Vec<String> = Fault::ALL.into_iter().map(fault_name).collect();
            format!("unknown fault `{s}` (one of: {})", names.join(", "))
        })
}

fn fault_name(f: Fault) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', "-")))
        .unwrap_or_default()
}

#[cfg(test)]
mod fault_tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(parse_fault(&fault_name(f)), Ok(f));
        }
        assert!(parse_fault("kill_service")
            .unwrap_err()
            .contains("kill-service"));
    }
}
