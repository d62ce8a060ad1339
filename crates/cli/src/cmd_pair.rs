//! `duplex pair create|list|show|switchover|delete`.

use crate::conn::Conn;
use crate::output::{self, s, Format};
use crate::wait;
use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::Duration;

#[derive(Subcommand)]
pub enum PairCmd {
    /// Create an ACT/SBY pair: two VMs on two hosts sharing a service address.
    Create {
        #[command(flatten)]
        c: Conn,
        name: String,
        /// Service address the ACT holds.
        #[arg(long)]
        vip: Ipv4Addr,
        #[arg(long, default_value_t = 24)]
        prefix_len: u8,
        /// A member as NAME=IP, twice; the first starts as ACT.
        #[arg(long = "member", required = true, num_args = 1)]
        members: Vec<String>,
        /// Pin the members to these hosts: HOST1,HOST2.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        #[arg(long, default_value_t = 256)]
        memory_mib: u32,
        #[arg(long, default_value = "default")]
        image: String,
        /// User data for both members (TOML or .json; docs/images.md).
        #[arg(long)]
        user_data: Option<std::path::PathBuf>,
        /// Return at once instead of waiting for the pair to be ready.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
    },
    List {
        #[command(flatten)]
        c: Conn,
    },
    /// The pair, each member's wanted and reported role.
    Show {
        #[command(flatten)]
        c: Conn,
        name: String,
    },
    /// Show or change the pair's S3 restart policy, which its members
    /// follow unless they have their own (`duplex vm policy`).
    Policy {
        #[command(flatten)]
        c: Conn,
        name: String,
        #[command(flatten)]
        policy: crate::cmd_policy::PolicyArgs,
    },
    /// Swap ACT and SBY.
    Switchover {
        #[command(flatten)]
        c: Conn,
        name: String,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
    /// Move the pair's member(s) off a host without pausing the ACT (S1):
    /// the SBY is live-migrated, the roles switched over, the new SBY migrated.
    Migrate {
        #[command(flatten)]
        c: Conn,
        name: String,
        /// Destination host, or `auto` for placement's choice.
        #[arg(long)]
        to: String,
        /// Move the member(s) on this host (default: the ACT's host).
        #[arg(long)]
        from: Option<String>,
        /// Switch back afterwards so the original ACT is ACT again.
        #[arg(long)]
        switch_back: bool,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 1200)]
        timeout_s: u64,
    },
    /// Delete the pair and both members.
    Delete {
        #[command(flatten)]
        c: Conn,
        name: String,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 180)]
        timeout_s: u64,
    },
}

fn member(
    arg: &str,
    memory_mib: u32,
    image: &str,
    user_data: Option<&duplex_core::user_data::UserData>,
) -> anyhow::Result<duplex_core::vm_spec::VmSpec> {
    let (name, ip) = arg
        .split_once('=')
        .with_context(|| format!("--member `{arg}`: expected NAME=IP, e.g. sip-a=10.77.0.101"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .with_context(|| format!("--member `{arg}`: `{ip}` is not an IPv4 address"))?;
    let spec = duplex_core::vm_spec::VmSpec {
        memory_mib,
        image: image.to_string(),
        user_data: user_data.cloned(),
        ..duplex_core::vm_spec::VmSpec::new(name, ip)
    };
    spec.validate()
        .with_context(|| format!("--member `{arg}`"))?;
    Ok(spec)
}

async fn finish(
    c: &Conn,
    accepted: Value,
    no_wait: bool,
    timeout_s: u64,
    what: &str,
) -> anyhow::Result<()> {
    let client = c.client()?;
    let id = s(&accepted["operation"]["id"]);
    let name = s(&accepted["pair"]["name"]);
    if no_wait {
        match c.output {
            Format::Json => output::json(&accepted)?,
            Format::Table => println!("{what} of pair {name} started: operation {id} (follow with `duplex events --follow`)"),
        }
        return Ok(());
    }
    eprintln!("{what} of pair {name} (operation {id}):");
    let op = wait::operation(&client, &id, Duration::from_secs(timeout_s)).await?;
    if what == "deletion" {
        match c.output {
            Format::Json => output::json(&op)?,
            Format::Table => println!("{}", s(&op["progress"])),
        }
        return Ok(());
    }
    let pair: Value = client.get(&format!("/v1/pairs/{name}")).await?;
    match c.output {
        Format::Json => output::json(&pair)?,
        Format::Table => show(&pair),
    }
    Ok(())
}

pub async fn run(cmd: PairCmd) -> anyhow::Result<()> {
    match cmd {
        PairCmd::Create {
            c,
            name,
            vip,
            prefix_len,
            members,
            hosts,
            memory_mib,
            image,
            user_data,
            no_wait,
            timeout_s,
        } => {
            let user_data = user_data
                .map(|p| crate::user_data_file::read(&p))
                .transpose()?;
            if members.len() != 2 {
                anyhow::bail!(
                    "--member: give exactly two members (NAME=IP), got {}",
                    members.len()
                );
            }
            if !hosts.is_empty() && hosts.len() != 2 {
                anyhow::bail!("--hosts: give two hosts, HOST1,HOST2");
            }
            let ms: Vec<duplex_core::vm_spec::VmSpec> = members
                .iter()
                .map(|m| member(m, memory_mib, &image, user_data.as_ref()))
                .collect::<Result<_, _>>()?;
            let mut body =
                json!({"name": name, "vip": vip, "prefix_len": prefix_len, "members": ms});
            if !hosts.is_empty() {
                body["hosts"] = json!(hosts);
            }
            let acc: Value = c.client()?.post("/v1/pairs", &body).await?;
            finish(&c, acc, no_wait, timeout_s, "creation").await
        }
        PairCmd::List { c } => {
            let pairs: Vec<Value> = c.client()?.get("/v1/pairs").await?;
            match c.output {
                Format::Json => output::json(&pairs)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = pairs
                        .iter()
                        .map(|p| {
                            let m = |i: usize| {
                                let x = &p["members_status"][i];
                                format!("{}@{} ({})", s(&x["vm"]), s(&x["host"]), s(&x["role"]))
                            };
                            vec![
                                s(&p["name"]),
                                s(&p["phase"]),
                                s(&p["health"]),
                                s(&p["vip"]),
                                m(0),
                                m(1),
                            ]
                        })
                        .collect();
                    output::table(
                        &["PAIR", "PHASE", "HEALTH", "VIP", "MEMBER 1", "MEMBER 2"],
                        &rows,
                    )
                }
            }
            Ok(())
        }
        PairCmd::Show { c, name } => {
            let p: Value = c.client()?.get(&format!("/v1/pairs/{name}")).await?;
            match c.output {
                Format::Json => output::json(&p)?,
                Format::Table => show(&p),
            }
            Ok(())
        }
        PairCmd::Policy { c, name, policy } => {
            crate::cmd_policy::run(&c, &format!("/v1/pairs/{name}/policy"), &policy).await
        }
        PairCmd::Switchover {
            c,
            name,
            no_wait,
            timeout_s,
        } => {
            let acc: Value = c
                .client()?
                .post(&format!("/v1/pairs/{name}/switchover"), &json!({}))
                .await?;
            finish(&c, acc, no_wait, timeout_s, "switchover").await
        }
        PairCmd::Migrate {
            c,
            name,
            to,
            from,
            switch_back,
            no_wait,
            timeout_s,
        } => {
            let mut body = json!({"to": to, "switch_back": switch_back});
            if let Some(f) = from {
                body["from"] = json!(f);
            }
            let mut acc: Value = c
                .client()?
                .post(&format!("/v1/pairs/{name}/migrate"), &body)
                .await?;
            acc["pair"] = json!({"name": name});
            finish(&c, acc, no_wait, timeout_s, "move").await
        }
        PairCmd::Delete {
            c,
            name,
            no_wait,
            timeout_s,
        } => {
            let acc: Value = c.client()?.delete(&format!("/v1/pairs/{name}")).await?;
            finish(&c, acc, no_wait, timeout_s, "deletion").await
        }
    }
}

fn show(p: &Value) {
    println!(
        "pair {}: phase {}, health {}, service address {}/{}, role token {}",
        s(&p["name"]),
        s(&p["phase"]),
        s(&p["health"]),
        s(&p["vip"]),
        s(&p["prefix_len"]),
        s(&p["token"])
    );
    let rows: Vec<Vec<String>> = p["members_status"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    vec![
                        s(&m["vm"]),
                        s(&m["host"]),
                        s(&m["status"]),
                        s(&m["wanted"]),
                        s(&m["role"]),
                        s(&m["healthy"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    output::table(
        &[
            "VM",
            "HOST",
            "STATUS",
            "WANTED",
            "REPORTED ROLE",
            "SERVICE HEALTHY",
        ],
        &rows,
    );
}
