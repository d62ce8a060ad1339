//! `duplex rules ...`: the S2 ruleset through the controller: which packets
//! a replicated VM sends at once (class 1, `send`) and which wait until the
//! epoch that produced them commits on its backup (class 2, `hold`).

use crate::conn::Conn;
use crate::output::{self, Format};
use clap::{Args, Subcommand};
use duplex_core::classify::hex_bytes;
use duplex_core::classify::{
    Class, Match, Net, PacketSample, PortRange, Proto, Rule, Ruleset, TestAnswer,
};

#[derive(Subcommand)]
pub enum RulesCmd {
    /// The rules in check order, the default class and the version.
    List {
        #[command(flatten)]
        c: Conn,
    },
    /// One rule.
    Show {
        #[command(flatten)]
        c: Conn,
        name: String,
    },
    /// Add a rule (or replace the one of this name): a new version,
    /// applied by every host within a second.
    Add {
        #[command(flatten)]
        c: Conn,
        name: String,
        /// send (class 1: at once) or hold (class 2: until its epoch commits).
        #[arg(long, value_parser = parse_class)]
        class: Class,
        /// Lower is checked first.
        #[arg(long, default_value_t = 100)]
        priority: u32,
        #[command(flatten)]
        m: MatchArgs,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Delete a rule.
    Delete {
        #[command(flatten)]
        c: Conn,
        name: String,
    },
    /// The class of packets no rule matches.
    Default {
        #[command(flatten)]
        c: Conn,
        #[arg(value_parser = parse_class)]
        class: Class,
    },
    /// Which rule a packet described by these fields hits.
    Test {
        #[command(flatten)]
        c: Conn,
        #[command(flatten)]
        m: SampleArgs,
    },
}

fn parse_class(s: &str) -> Result<Class, String> {
    match s {
        "send" | "1" => Ok(Class::Send),
        "hold" | "2" => Ok(Class::Hold),
        _ => Err(format!("`{s}`: use send (class 1) or hold (class 2)")),
    }
}

/// The payload as text (`--payload`) or hex (`--payload-hex`).
fn payload(text: &Option<String>, hex: &Option<String>) -> anyhow::Result<Vec<u8>> {
    match (text, hex) {
        (Some(_), Some(_)) => anyhow::bail!("give --payload or --payload-hex, not both"),
        (Some(t), None) => Ok(t.as_bytes().to_vec()),
        (None, Some(h)) => hex_bytes::decode(h).map_err(|e| anyhow::anyhow!("--payload-hex: {e}")),
        (None, None) => Ok(Vec::new()),
    }
}

#[derive(Args)]
pub struct MatchArgs {
    /// any, arp, icmp, tcp, udp, sctp or ip:N.
    #[arg(long)]
    proto: Option<Proto>,
    /// Source network, A.B.C.D[/N].
    #[arg(long)]
    src: Option<Net>,
    #[arg(long)]
    dst: Option<Net>,
    /// P or LO-HI.
    #[arg(long)]
    src_port: Option<PortRange>,
    #[arg(long)]
    dst_port: Option<PortRange>,
    /// Either port.
    #[arg(long)]
    port: Option<PortRange>,
    /// DiffServ code point, 0-63 (46: EF, voice).
    #[arg(long)]
    dscp: Option<u8>,
    /// The payload's first bytes, as text (e.g. "INVITE ").
    #[arg(long)]
    payload: Option<String>,
    #[arg(long)]
    payload_hex: Option<String>,
    /// Hex mask over the payload prefix (e.g. c0 with --payload-hex 80).
    #[arg(long)]
    payload_mask: Option<String>,
}

impl MatchArgs {
    fn to_match(&self) -> anyhow::Result<Match> {
        let mask = match &self.payload_mask {
            Some(h) => hex_bytes::decode(h).map_err(|e| anyhow::anyhow!("--payload-mask: {e}"))?,
            None => Vec::new(),
        };
        Ok(Match {
            proto: self.proto,
            src: self.src,
            dst: self.dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
            port: self.port,
            dscp: self.dscp,
            payload: payload(&self.payload, &self.payload_hex)?,
            payload_mask: mask,
        })
    }
}

#[derive(Args)]
pub struct SampleArgs {
    /// Default udp.
    #[arg(long)]
    proto: Option<Proto>,
    #[arg(long)]
    src: Option<std::net::Ipv4Addr>,
    #[arg(long)]
    dst: Option<std::net::Ipv4Addr>,
    #[arg(long)]
    src_port: Option<u16>,
    #[arg(long)]
    dst_port: Option<u16>,
    #[arg(long)]
    dscp: Option<u8>,
    #[arg(long)]
    payload: Option<String>,
    #[arg(long)]
    payload_hex: Option<String>,
}

pub async fn run(cmd: RulesCmd) -> anyhow::Result<()> {
    match cmd {
        RulesCmd::List { c } => {
            let set: Ruleset = c.client()?.get("/v1/rules").await?;
            print_set(&c, &set)
        }
        RulesCmd::Show { c, name } => {
            let set: Ruleset = c.client()?.get("/v1/rules").await?;
            let rule = set.rules.iter().find(|r| r.name == name).ok_or_else(|| {
                anyhow::anyhow!("no rule named `{name}` (see `duplex rules list`)")
            })?;
            output::json(rule)
        }
        RulesCmd::Add {
            c,
            name,
            class,
            priority,
            m,
            note,
        } => {
            let rule = Rule {
                name,
                priority,
                matches: m.to_match()?,
                class,
                note,
            };
            rule.validate()?;
            let set: Ruleset = c.client()?.post("/v1/rules", &rule).await?;
            print_set(&c, &set)
        }
        RulesCmd::Delete { c, name } => {
            let set: Ruleset = c.client()?.delete(&format!("/v1/rules/{name}")).await?;
            print_set(&c, &set)
        }
        RulesCmd::Default { c, class } => {
            let body = serde_json::json!({ "class": class });
            let set: Ruleset = c.client()?.put("/v1/rules/default", &body).await?;
            print_set(&c, &set)
        }
        RulesCmd::Test { c, m } => {
            let sample = PacketSample {
                proto: m.proto,
                src: m.src,
                dst: m.dst,
                src_port: m.src_port,
                dst_port: m.dst_port,
                dscp: m.dscp,
                payload: payload(&m.payload, &m.payload_hex)?,
            };
            let a: TestAnswer = c.client()?.post("/v1/rules/test", &sample).await?;
            match c.output {
                Format::Json => output::json(&a),
                Format::Table => {
                    let by = a.rule.map_or("no rule: the default".to_string(), |r| {
                        format!("rule `{r}`")
                    });
                    println!("{} by {by} (ruleset v{})", a.class, a.version);
                    Ok(())
                }
            }
        }
    }
}

fn print_set(c: &Conn, set: &Ruleset) -> anyhow::Result<()> {
    if let Format::Json = c.output {
        return output::json(set);
    }
    println!(
        "ruleset v{}; packets no rule matches: {}",
        set.version, set.default
    );
    let rows: Vec<Vec<String>> = set
        .rules
        .iter()
        .map(|r| {
            vec![
                r.priority.to_string(),
                r.name.clone(),
                r.class.to_string(),
                describe(&r.matches),
                r.note.clone(),
            ]
        })
        .collect();
    output::table(&["PRIO", "NAME", "CLASS", "MATCH", "NOTE"], &rows);
    Ok(())
}

fn describe(m: &Match) -> String {
    let mut parts = Vec::new();
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    };
    add("proto", m.proto.map(|p| p.to_string()));
    add("src", m.src.map(|n| n.to_string()));
    add("dst", m.dst.map(|n| n.to_string()));
    add("src_port", m.src_port.map(|r| r.to_string()));
    add("dst_port", m.dst_port.map(|r| r.to_string()));
    add("port", m.port.map(|r| r.to_string()));
    add("dscp", m.dscp.map(|d| d.to_string()));
    if !m.payload.is_empty() {
        let mask = if m.payload_mask.is_empty() {
            String::new()
        } else {
            format!("/{}", hex::encode(&m.payload_mask))
        };
        parts.push(format!("payload={}{mask}", hex::encode(&m.payload)));
    }
    if parts.is_empty() {
        "everything".into()
    } else {
        parts.join(" ")
    }
}
