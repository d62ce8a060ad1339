use clap::Args;
use duplex_agent::config::{AccelChoice, AgentConfig};
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
    /// Where VM sockets and logs live.
    #[arg(long, default_value = "/var/lib/duplex/agent")]
    data_dir: PathBuf,
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
}

pub async fn run(a: AgentArgs) -> anyhow::Result<()> {
    let accel = match a.accel.as_str() {
        "kvm" => AccelChoice::Kvm,
        "tcg" => AccelChoice::Tcg,
        _ => AccelChoice::Auto,
    };
    duplex_agent::run(AgentConfig {
        name: a.name,
        listen: a.listen,
        data_dir: a.data_dir,
        image_dir: a.image_dir,
        cache_dir: a.cache_dir,
        bridge: a.bridge,
        accel,
        qemu: duplex_qemu::qemu_binary(),
    })
    .await?;
    Ok(())
}
