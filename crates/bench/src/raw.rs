//! The baseline: QEMU started by hand with the very command line the agent
//! would use (same machine, kernel, initramfs, devices), a netdev socket we
//! serve ourselves and drain, and QMP driven directly.

use duplex_core::agent_api::AccelKind;
use duplex_core::mac::Mac;
use duplex_qemu::{Launch, Qmp};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::process::{Child, Command};

pub struct RawVm {
    /// Held so QEMU is killed when the VM is dropped.
    _child: Child,
    pub qmp: Qmp,
    pub serial: PathBuf,
    pub started: Instant,
    _drain: tokio::task::JoinHandle<()>,
}

impl Drop for RawVm {
    fn drop(&mut self) {
        self._drain.abort();
    }
}

pub struct RawSpec<'a> {
    pub name: &'a str,
    pub dir: &'a Path,
    pub accel: AccelKind,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub ip: &'a str,
    /// Run inside this network namespace (lab host), else here.
    pub netns: Option<&'a str>,
    pub incoming: bool,
    pub net: RawNet<'a>,
}

/// The NIC's other end.
#[derive(Debug, Clone, Copy)]
pub enum RawNet<'a> {
    /// A netdev socket we serve ourselves and drain.
    Drain,
    /// Whoever already listens on `<dir>/net.sock` (a network element).
    Served,
    /// QEMU's own tap backend on an existing tap of this name (no element).
    Tap(&'a str),
}

/// Starts QEMU by hand; returns once QMP answers.
pub async fn start(s: &RawSpec<'_>) -> anyhow::Result<RawVm> {
    std::fs::create_dir_all(s.dir)?;
    let launch = Launch {
        name: s.name.to_string(),
        accel: s.accel,
        memory_mib: 256,
        vcpus: 1,
        kernel: s.kernel.to_path_buf(),
        initrd: s.initrd.to_path_buf(),
        kernel_args: format!("duplex.name={} duplex.ip={}/24", s.name, s.ip),
        mac: Mac::for_vm(s.name),
        net_socket: s.dir.join("net.sock"),
        ctl_socket: s.dir.join("ctl.sock"),
        qmp_socket: s.dir.join("qmp.sock"),
        serial_log: s.dir.join("serial.log"),
        incoming: s.incoming,
        disk: None,
        user_data: None,
        ram_file: None,
        from_checkpoint: false,
    };
    for p in [&launch.ctl_socket, &launch.qmp_socket, &launch.serial_log] {
        let _ = std::fs::remove_file(p);
    }
    let drain = match s.net {
        RawNet::Drain => {
            let _ = std::fs::remove_file(&launch.net_socket);
            // Accept QEMU's connection and discard its frames.
            let listener = UnixListener::bind(&launch.net_socket)?;
            tokio::spawn(async move {
                if let Ok((mut c, _)) = listener.accept().await {
                    let mut buf = vec![0u8; 65_536];
                    while matches!(c.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            })
        }
        RawNet::Served | RawNet::Tap(_) => tokio::spawn(async {}),
    };
    let mut args = launch.args();
    if let RawNet::Tap(tap) = s.net {
        let netdev = args.iter().position(|a| a == "-netdev").map(|i| i + 1);
        if let Some(i) = netdev {
            args[i] = format!("tap,id=net0,ifname={tap},script=no,downscript=no");
        }
    }
    let qemu = duplex_qemu::qemu_binary();
    let mut cmd = match s.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&qemu);
            c
        }
        None => Command::new(&qemu),
    };
    let log = std::fs::File::create(s.dir.join("qemu.log"))?;
    let started = Instant::now();
    let child = cmd
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let qmp = Qmp::connect(&launch.qmp_socket, Duration::from_secs(10)).await?;
    Ok(RawVm {
        _child: child,
        qmp,
        serial: launch.serial_log,
        started,
        _drain: drain,
    })
}
