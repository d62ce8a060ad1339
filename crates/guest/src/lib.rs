//! `duplex guest`: the in-guest side. For now it serves the control channel
//! (`hello`, `status`) and a UDP echo used by traffic probes; the cluster
//! middleware (roles, hooks, restart phases) grows here.

pub mod control;
pub mod echo;
pub mod port;

use std::time::Instant;

/// Facts about this guest, reported on the control channel.
#[derive(Debug, Clone)]
pub struct GuestFacts {
    pub name: String,
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
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        GuestFacts {
            name,
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
}

/// Runs the guest services until the control channel fails for good.
pub fn run() -> Result<(), GuestError> {
    let facts = GuestFacts::read();
    echo::spawn(7);
    let port = port::find(
        duplex_core::guest_proto::PORT_NAME,
        std::time::Duration::from_secs(10),
    )?;
    println!("DUPLEX-GUEST-READY {}", facts.name);
    control::serve(&port, &facts)
}
