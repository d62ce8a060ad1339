use crate::output::{self, Format};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Build a guest image: the diskless default (Debian cloud kernel +
    /// busybox + this binary), or with --spec FILE an image whose root disk
    /// holds Debian with the user's service (docs/images.md).
    Build(BuildArgs),
    /// List built images.
    List {
        #[arg(long, env = "DUPLEX_IMAGE_DIR", default_value = duplex_image::DEFAULT_IMAGE_DIR)]
        image_dir: PathBuf,
    },
}

#[derive(Args)]
pub struct BuildArgs {
    /// Image name (with --spec: the spec's `name`).
    #[arg(long, default_value = duplex_image::DEFAULT_NAME, conflicts_with = "spec")]
    name: String,
    /// An image spec (TOML): Debian release, packages, files, the service
    /// and its hooks.
    #[arg(long)]
    spec: Option<PathBuf>,
    #[arg(long, env = "DUPLEX_IMAGE_DIR", default_value = duplex_image::DEFAULT_IMAGE_DIR)]
    image_dir: PathBuf,
    #[arg(long, env = "DUPLEX_CACHE", default_value = duplex_image::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// Exact Debian kernel package (default: what linux-image-cloud-amd64 depends on).
    #[arg(long)]
    kernel_package: Option<String>,
    #[arg(long, default_value = duplex_image::DEFAULT_BUSYBOX)]
    busybox: PathBuf,
    /// The static duplex binary to put in the guest (default: this one).
    #[arg(long)]
    duplex_binary: Option<PathBuf>,
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

pub async fn run(cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Build(a) => {
            let bin = match a.duplex_binary {
                Some(b) => b,
                None => std::env::current_exe().context("cannot find this executable")?,
            };
            let opts = duplex_image::BuildOptions {
                name: a.name,
                cache_dir: a.cache_dir,
                image_dir: a.image_dir.clone(),
                duplex_binary: bin,
                kernel_package: a.kernel_package,
                busybox: a.busybox,
            };
            let spec = a.spec;
            let m = tokio::task::spawn_blocking(move || match spec {
                Some(spec) => duplex_image::build_spec(&opts, &spec),
                None => duplex_image::build(&opts),
            })
            .await??;
            match a.output {
                Format::Json => output::json(&m)?,
                Format::Table => {
                    println!("image `{}` built: kernel {}", m.name, m.kernel_version);
                    println!("  {}  {}", m.outputs.vmlinuz.sha256, m.outputs.vmlinuz.path);
                    println!(
                        "  {}  {}",
                        m.outputs.initramfs.sha256, m.outputs.initramfs.path
                    );
                    if let Some(d) = &m.disk {
                        println!("  {}  {}", d.rootfs.sha256, d.rootfs.path);
                        println!(
                            "  Debian {}, {} packages, {} MiB filesystem; versions in {}",
                            d.release,
                            d.packages.len(),
                            d.size_mib,
                            a.image_dir
                                .join(&m.name)
                                .join(duplex_image::MANIFEST)
                                .display()
                        );
                    }
                }
            }
            Ok(())
        }
        ImageCmd::List { image_dir } => {
            for name in duplex_image::list(&image_dir)? {
                println!("{name}");
            }
            Ok(())
        }
    }
}

#[derive(Args)]
pub struct AccelArgs {
    #[arg(long, env = "DUPLEX_IMAGE_DIR", default_value = duplex_image::DEFAULT_IMAGE_DIR)]
    image_dir: PathBuf,
    #[arg(long, env = "DUPLEX_CACHE", default_value = duplex_image::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
}

pub async fn accel(a: AccelArgs) -> anyhow::Result<()> {
    let img = duplex_image::resolve(&a.image_dir, duplex_image::DEFAULT_NAME)?;
    let info = duplex_qemu::accel::detect(
        &duplex_qemu::qemu_binary(),
        &img.vmlinuz,
        &img.initramfs,
        &a.cache_dir.join("accel.json"),
        Duration::from_secs(10),
    )
    .await?;
    println!("{:?}: {}", info.kind, info.reason);
    Ok(())
}
