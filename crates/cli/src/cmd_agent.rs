use clap::Args;
use duplex_agent::config::{AccelChoice, AgentConfig, ControllerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args)]
pub struct AgentArgs {
    /// Host name this agent reports.
    #[arg(long)]
    name: String,
    /// Address to serve the API on; also where migrations arrive.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Where VM sockets and logs live, and the highest fencing token obeyed
    /// (`<data-dir>/fence`).
    #[arg(long, default_value = "/var/lib/duplex/agent")]
    data_dir: PathBuf,
    /// Directory with this host's TLS bundle (ca.crt, tls.crt, tls.key,
    /// crl.pem), made by `duplex pki issue agent <name> --ip <its IP>`
    /// (default: <data-dir>/tls). The agent serves with it and presents
    /// it to the controller and to peer agents.
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    #[arg(long, env = "DUPLEX_IMAGE_DIR", default_value = duplex_image::DEFAULT_IMAGE_DIR)]
    image_dir: PathBuf,
    #[arg(long, env = "DUPLEX_CACHE", default_value = duplex_image::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// Bridge the VMs' taps join.
    #[arg(long, default_value = "br0")]
    bridge: String,
    /// kvm, tcg, or auto (KVM if a probe boot works here).
    #[arg(long, default_value = "auto", value_parser = ["auto", "kvm", "tcg"])]
    accel: String,
    /// Controller to register with and report to every second, e.g.
    /// https://10.77.0.1:7080 (standalone without it). For a controller run
    /// as several instances, give all their URLs separated by commas
    /// (https://10.77.0.1:7080,https://10.77.0.2:7080): reports go to
    /// whichever instance leads, and follow it when another takes over.
    #[arg(long, value_name = "URL[,URL...]")]
    controller: Option<String>,
    /// URL the controller should reach this agent at [default: https://<listen>].
    #[arg(long, value_name = "URL", requires = "controller")]
    advertise: Option<String>,
    /// Memory to offer the controller for VMs, in MiB [default: MemTotal - 1024].
    #[arg(long, value_name = "N", requires = "controller",
          value_parser = clap::value_parser!(u64).range(1..))]
    memory_mib: Option<u64>,
    /// vCPUs to offer the controller [default: the number of CPUs].
    #[arg(long, value_name = "N", requires = "controller",
          value_parser = clap::value_parser!(u32).range(1..))]
    vcpus: Option<u32>,
    /// Fence this host itself after this many ms without a report accepted
    /// by the controller: cut every VM off the network and pause the ACT
    /// VMs, since the controller promotes their peers once this lease is
    /// over. 0: never (only safe with a fence device on the controller).
    #[arg(long, value_name = "MS", requires = "controller",
          default_value_t = duplex_agent::self_fence::DEFAULT_LEASE_MS)]
    self_fence_ms: u64,
    /// The unprivileged user QEMU runs as (its VM directories are given
    /// to it, 0700); `root` runs QEMU as the agent, not recommended.
    #[arg(long, value_name = "USER", default_value = duplex_qemu::runas::DEFAULT_USER)]
    qemu_user: String,
    /// Let the guests be sent injected faults (`duplex vm fault`): for
    /// labs and drills, never in production.
    #[arg(long)]
    allow_faults: bool,
    /// S2 embodiment B: the interface towards a Duplex switch (`duplex
    /// switch`) that holds replicated VMs' output; their epoch messages
    /// go out of it. Needed for VMs created with `--hold-at switch`.
    #[arg(long, value_name = "IFACE")]
    output_switch: Option<String>,
    /// The site (data centre) this host is in, reported to the controller:
    /// 1 to 32 characters of a-z, 0-9 and '-' [default: the controller's
    /// default site].
    #[arg(long, value_name = "NAME", requires = "controller", value_parser = parse_site)]
    site: Option<String>,
}

fn parse_site(s: &str) -> Result<String, String> {
    duplex_agent::config::check_site(s).map(|()| s.to_string())
}

pub async fn run(a: AgentArgs) -> anyhow::Result<()> {
    let accel = match a.accel.as_str() {
        "kvm" => AccelChoice::Kvm,
        "tcg" => AccelChoice::Tcg,
        _ => AccelChoice::Auto,
    };
    let controller = a.controller.map(|list| ControllerConfig {
        urls: ControllerConfig::split_urls(&list),
        advertise: a.advertise,
        memory_mib: a.memory_mib,
        vcpus: a.vcpus,
        self_fence_ms: (a.self_fence_ms > 0).then_some(a.self_fence_ms),
    });
    let qemu_user = match a.qemu_user.as_str() {
        "root" => None,
        name => Some(duplex_qemu::runas::RunAs::lookup(name)?),
    };
    let tls = duplex_tls::Bundle::new(a.tls_dir.unwrap_or_else(|| a.data_dir.join("tls")));
    duplex_agent::run(AgentConfig {
        tls,
        name: a.name,
        listen: a.listen,
        data_dir: a.data_dir,
        image_dir: a.image_dir,
        cache_dir: a.cache_dir,
        bridge: a.bridge,
        accel,
        qemu: duplex_qemu::qemu_binary(),
        qemu_user,
        controller,
        allow_faults: a.allow_faults,
        output_switch: a.output_switch,
        site: a.site,
    })
    .await?;
    Ok(())
}
