//! `duplex guest`: the in-guest cluster middleware the designs assume. It
//! knows and changes the VM's ACT/SBY role on the controller's order (with
//! fencing tokens), holds the pair's service address while ACT, supervises
//! the service through hooks, replicates the service's state to the peer,
//! performs restart phases PH0.5-PH2.0, and sends watchdog heartbeats.
//! Nothing here knows what the service is.

pub mod address;
pub mod control;
pub mod echo;
pub mod in_root;
pub mod ledger;
pub mod load;
pub mod middleware;
pub mod peer_beat;
pub mod peer_link;
pub mod port;
pub mod replica;
pub mod service;
pub mod state;
pub mod user_data;
pub mod witness;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Facts about this guest, reported on the control channel.
#[derive(Debug, Clone)]
pub struct GuestFacts {
    pub name: String,
    /// This VM's own address (`duplex.ip=`), if the command line has it.
    pub address: Option<std::net::Ipv4Addr>,
    pub boot_id: String,
    pub started: Instant,
}

impl GuestFacts {
    pub fn read() -> Self {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let name = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("duplex.name="))
            .unwrap_or("unnamed")
            .to_string();
        let address = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("duplex.ip="))
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok());
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        GuestFacts {
            name,
            address,
            boot_id,
            started: Instant::now(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("no virtio-serial port named `{0}` appeared (is virtio_console loaded?)")]
    NoPort(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("service configuration: {0}")]
    Config(String),
    #[error("user data: {0}")]
    UserData(String),
}

/// The service's root and environment; the user data's files are written
/// into that root first (again at every middleware start: they are the
/// operator's, a restart puts them back).
fn launcher(
    facts: &GuestFacts,
    root: Option<std::path::PathBuf>,
) -> Result<service::Launcher, GuestError> {
    let data = user_data::load().map_err(GuestError::UserData)?;
    let env = match &data {
        Some(d) => {
            user_data::apply(root.as_deref().unwrap_or(Path::new("/")), d)
                .map_err(GuestError::UserData)?;
            d.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        None => Vec::new(),
    };
    Ok(service::Launcher {
        root,
        address: facts.address,
        env,
    })
}

/// Runs the middleware until the control channel fails for good.
pub fn run() -> Result<(), GuestError> {
    let facts = GuestFacts::read();
    echo::spawn(7);
    ledger::spawn();
    let (config, root) = service::ServiceConfig::load().map_err(GuestError::Config)?;
    let launcher = launcher(&facts, root)?;
    let mw = Arc::new(middleware::Middleware {
        facts,
        state: Mutex::new(state::Persisted::load(Path::new(state::RUN_DIR))),
        service: service::Supervisor::new(config, launcher)
            .with_group_file(Path::new(state::RUN_DIR).join("service.group")),
        replica: Arc::default(),
        load: load::MemoryLoad::default(),
        claiming: Default::default(),
        beats: Default::default(),
        ear: Default::default(),
        witness: Default::default(),
        health_fails: Default::default(),
    });
    let roles: Arc<dyn replica::RoleView> = mw.clone();
    replica::serve_services(mw.replica.clone(), roles.clone(), service::SYNC_SOCKET).map_err(
        |source| GuestError::Io {
            what: format!("listen on {}", service::SYNC_SOCKET),
            source,
        },
    )?;
    replica::serve_peer(mw.replica.clone(), roles).map_err(|source| GuestError::Io {
        what: format!("listen on port {}", replica::PEER_PORT),
        source,
    })?;
    mw.service.end_left_over();
    mw.resume();
    let port = port::find(
        duplex_core::guest_proto::PORT_NAME,
        std::time::Duration::from_secs(10),
    )?;
    println!("DUPLEX-GUEST-READY {}", mw.facts.name);
    control::serve(&port, mw)
}
