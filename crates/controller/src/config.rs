use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the controller keeps its state.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// Single-file store under the data directory; no other process.
    Embedded,
    /// etcd cluster at these client URLs.
    Etcd { endpoints: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Name for logs and the leader key (default: host name + pid).
    pub id: String,
    pub listen: SocketAddr,
    /// The embedded store lives here.
    pub data_dir: PathBuf,
    /// This controller's TLS bundle (`duplex pki issue controller`): it
    /// serves with it and presents it to the agents.
    pub tls: duplex_tls::Bundle,
    pub store: StoreChoice,
    /// Leader lease time to live (etcd): a dead leader is replaced after at most this.
    pub lease_ttl: Duration,
    /// How long to keep trying to reach the store at start.
    pub store_connect_timeout: Duration,
    /// JSON topology (switches, hosts, links) for network-aware placement.
    pub topology: Option<PathBuf>,
    /// Fence device: a command run to fence a host found gone (`{host}`,
    /// `{url}` replaced); `None`: wait out the agents' self-fence lease.
    pub fence_command: Option<String>,
    /// When a host counts as gone (`duplex_core::model::liveness`).
    pub liveness: duplex_core::model::liveness::Timing,
    /// How long the controller's own check of an agent may take, after a
    /// peer stopped hearing its VM.
    pub probe_timeout: Duration,
    /// An address on the service network (its gateway, say) every pair's
    /// guests ping: a member that loses its peer and the witness while its
    /// peer still hears the witness is the one cut off, and fails over.
    /// `None`: a cut of the service network alone leaves the pair degraded.
    pub service_witness: Option<std::net::Ipv4Addr>,
    /// S3's external disk (`duplex_extdisk::ExternalDisk::open`): a
    /// directory, or an S3 bucket; default `<data_dir>/external-disk`.
    pub external_disk: Option<String>,
}

/// Default of [`ControllerConfig::probe_timeout`].
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(300);

pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
pub const DEFAULT_PORT: u16 = 7080;
