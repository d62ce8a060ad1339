//! `duplex controller`: run the controller.

use clap::Args;
use duplex_controller::{ControllerConfig, StoreChoice};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct ControllerArgs {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:7080")]
    listen: SocketAddr,
    /// The embedded store lives here.
    #[arg(long, default_value = crate::conn::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Directory with this controller's TLS bundle (ca.crt, tls.crt,
    /// tls.key, crl.pem), made by `duplex pki issue controller --ip ...`
    /// (default: <data-dir>/tls).
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// embedded (a file under --data-dir, no other process) or etcd.
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "etcd"])]
    store: String,
    /// etcd client URLs, comma-separated (with --store etcd).
    #[arg(long, value_delimiter = ',', default_value = "https://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// Leader lease time to live in ms: a dead leader is replaced after about this long.
    #[arg(long, default_value_t = duplex_controller::config::DEFAULT_LEASE_TTL.as_millis() as u64)]
    lease_ttl_ms: u64,
    /// How long to keep trying to reach the store at start, in seconds.
    #[arg(long, default_value_t = 30)]
    store_timeout_s: u64,
    /// JSON topology for network-aware placement: {"switches": [...],
    /// "hosts": [{"name","attach"}], "links": [{"a","b","capacity_gbps"}]}.
    /// Without it every host is in one rack.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Name of this controller in logs and events (default: hostname-pid).
    #[arg(long)]
    id: Option<String>,
    /// Fence device: a command that powers a host off and exits 0 once it
    /// is off (an IPMI or Redfish tool), run when a host is found gone,
    /// before anyone is promoted in its place. `{host}` and `{url}` are
    /// replaced by the host's name and agent URL (also in DUPLEX_FENCE_HOST
    /// and DUPLEX_FENCE_URL). Without it, promotion waits for the agent's
    /// self-fence lease to run out.
    #[arg(long, value_name = "COMMAND")]
    fence_command: Option<String>,
    /// A host that has not reported for this long is gone (then fenced).
    #[arg(long, value_name = "MS", default_value_t = duplex_core::model::liveness::HOST_FAILURE_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1000..=600_000))]
    host_failure_timeout_ms: u64,
    /// After a guest says it stopped hearing its peer, how long the
    /// controller waits for the peer's agent to answer its own check
    /// before counting that host gone.
    #[arg(long, value_name = "MS", default_value_t = duplex_controller::config::DEFAULT_PROBE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(50..=10_000))]
    probe_timeout_ms: u64,
    /// Added to an agent's self-fence lease before its silence counts as
    /// proof that it fenced itself.
    #[arg(long, value_name = "MS", default_value_t = duplex_core::model::liveness::SELF_FENCE_MARGIN_MS,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    self_fence_margin_ms: u64,
    /// An address on the service network that answers ping (its gateway,
    /// say). Pair members ping it; a member that loses its peer and the
    /// witness while its peer still hears the witness is cut off the
    /// service network, and the pair fails over. Without it a cut of the
    /// service network alone leaves the pair degraded.
    #[arg(long, value_name = "IPV4")]
    service_witness: Option<std::net::Ipv4Addr>,
    /// S3's external disk (restart counters and history per VM): a
    /// directory (default <data-dir>/external-disk), or
    /// s3+https://HOST[:PORT]/BUCKET with DUPLEX_S3_ACCESS_KEY_ID and
    /// DUPLEX_S3_SECRET_ACCESS_KEY set. Controllers that stand by for one
    /// another must share it.
    #[arg(long, value_name = "DIR|URL")]
    external_disk: Option<String>,
}

pub async fn run(a: ControllerArgs) -> anyhow::Result<()> {
    if a.lease_ttl_ms < 1000 {
        anyhow::bail!(
            "--lease-ttl-ms: {} is below 1000 (etcd leases are whole seconds)",
            a.lease_ttl_ms
        );
    }
    if a.fence_command
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        anyhow::bail!(
            "--fence-command: empty; give the command that fences a host, or leave the flag out"
        );
    }
    let store = match a.store.as_str() {
        "etcd" => StoreChoice::Etcd {
            endpoints: a.etcd_endpoints,
        },
        _ => StoreChoice::Embedded,
    };
    let id = a.id.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_else(|_| "controller".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let tls = duplex_tls::Bundle::new(a.tls_dir.unwrap_or_else(|| a.data_dir.join("tls")));
    duplex_controller::run(ControllerConfig {
        id,
        listen: a.listen,
        tls,
        data_dir: a.data_dir,
        store,
        lease_ttl: Duration::from_millis(a.lease_ttl_ms),
        store_connect_timeout: Duration::from_secs(a.store_timeout_s),
        topology: a.topology,
        fence_command: a.fence_command,
        liveness: duplex_core::model::liveness::Timing {
            suspect_after_ms: a.host_failure_timeout_ms,
            self_fence_margin_ms: a.self_fence_margin_ms,
        },
        probe_timeout: Duration::from_millis(a.probe_timeout_ms),
        service_witness: a.service_witness,
        external_disk: a.external_disk,
    })
    .await?;
    Ok(())
}
