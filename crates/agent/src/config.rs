use std::net::SocketAddr;
use std::path::PathBuf;

/// How the agent picks QEMU's accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM if a probe boot succeeds (cached), TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// Per-VM directories (sockets, logs) live under `<data_dir>/vms/`.
    pub data_dir: PathBuf,
    pub image_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// Bridge the VM taps join.
    pub bridge: String,
    pub accel: AccelChoice,
    pub qemu: PathBuf,
}
