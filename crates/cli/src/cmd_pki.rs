//! `duplex pki`: the cluster's certificate authority. `init` makes the CA;
//! `issue` a bundle per identity (the controller, each host's agent, each
//! operator with a scope); `rotate` replaces a certificate and revokes the
//! old one; `revoke` puts one on the revocation list. Servers and clients
//! pick changed bundles up within a second, without a restart.

use clap::{Args, Subcommand};
use duplex_core::identity::{Identity, Scope};
use duplex_tls::pki::{Entry, IssueRequest, Pki, DEFAULT_DAYS};
use std::net::IpAddr;
use std::path::PathBuf;

pub const DEFAULT_PKI_DIR: &str = "/var/lib/duplex/pki";

#[derive(Args)]
pub struct PkiArgs {
    /// The CA's directory (its key never leaves it).
    #[arg(long, env = "DUPLEX_PKI_DIR", default_value = DEFAULT_PKI_DIR, global = true)]
    dir: PathBuf,
    #[command(subcommand)]
    cmd: PkiCmd,
}

#[derive(Subcommand)]
enum PkiCmd {
    /// Make the cluster's CA (once per cluster).
    Init,
    /// Issue a certificate and key (a bundle directory) for an identity.
    #[command(subcommand)]
    Issue(IssueCmd),
    /// Replace an identity's certificate (new key, same addresses) and
    /// revoke the old one. NAME as in `list`, e.g. h1.agent.duplex.
    Rotate {
        name: String,
        #[arg(long)]
        days: Option<i64>,
    },
    /// Revoke every certificate of an identity (NAME as in `list`).
    Revoke { name: String },
    /// Every certificate issued, with its state.
    List,
}

#[derive(Args)]
struct Where {
    /// An address it serves on (repeat for several).
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<IpAddr>,
    /// A host name it serves on (repeat for several).
    #[arg(long = "dns", value_name = "NAME")]
    dns: Vec<String>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = DEFAULT_DAYS)]
    days: i64,
    /// Where to write the bundle [default: <dir>/issued/<identity>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum IssueCmd {
    /// The controller (every instance of it may share one bundle).
    Controller(Where),
    /// The cluster store's server (etcd, started with this bundle's
    /// tls.crt, tls.key, ca.crt and crl.pem; see docs/security.md).
    Store(Where),
    /// The agent of host NAME.
    Agent {
        name: String,
        #[command(flatten)]
        at: Where,
    },
    /// An operator, with what they may do.
    Operator {
        name: String,
        /// read (look), operate (run the cluster), admin (also the agents directly).
        #[arg(long, default_value = "operate", value_parser = ["read", "operate", "admin"])]
        scope: String,
        #[command(flatten)]
        at: Where,
    },
}

pub fn run(a: PkiArgs) -> anyhow::Result<()> {
    match a.cmd {
        PkiCmd::Init => {
            let pki = Pki::init(&a.dir)?;
            println!(
                "CA made in {} (keep ca.key there; give each process the bundle `duplex pki issue` writes)",
                pki.dir().display()
            );
        }
        PkiCmd::Issue(c) => {
            let (identity, at) = match c {
                IssueCmd::Controller(at) => (Identity::Controller, at),
                IssueCmd::Store(at) => (Identity::Store, at),
                IssueCmd::Agent { name, at } => (Identity::agent(&name)?, at),
                IssueCmd::Operator { name, scope, at } => {
                    (Identity::operator(&name, Scope::parse(&scope)?)?, at)
                }
            };
            let req = IssueRequest {
                identity,
                ips: at.ips,
                dns: at.dns,
                days: at.days,
                out: at.out,
                validity: None,
            };
            let e = Pki::open(&a.dir)?.issue(&req)?;
            println!("issued {}", describe(&e));
        }
        PkiCmd::Rotate { name, days } => {
            let e = Pki::open(&a.dir)?.rotate(&name, days)?;
            println!("rotated: {}", describe(&e));
        }
        PkiCmd::Revoke { name } => {
            let serials = Pki::open(&a.dir)?.revoke(&name)?;
            println!(
                "revoked {name} (serial {}); the new crl.pem is in {} and in every bundle issued there: copy it to bundles kept elsewhere",
                serials.join(", "),
                a.dir.display()
            );
        }
        PkiCmd::List => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            println!("{:<36} {:<9} {:<12} SERIAL", "IDENTITY", "STATE", "EXPIRES");
            for e in Pki::open(&a.dir)?.list()? {
                let state = match e.revoked_at {
                    Some(_) => "revoked",
                    None if e.not_after < now => "expired",
                    None => "valid",
                };
                println!(
                    "{:<36} {:<9} {:<12} {}",
                    e.name,
                    state,
                    format!("in {} d", (e.not_after - now) / 86_400),
                    e.serial
                );
            }
        }
    }
    Ok(())
}

fn describe(e: &Entry) -> String {
    let mut at: Vec<String> = e.ips.iter().map(|i| i.to_string()).collect();
    at.extend(e.dns.iter().cloned());
    format!(
        "{} (serial {}, valid {} days{}): bundle {}",
        e.name,
        e.serial,
        (e.not_after - e.not_before) / 86_400,
        if at.is_empty() {
            String::new()
        } else {
            format!(", serving at {}", at.join(", "))
        },
        e.bundle.display()
    )
}
