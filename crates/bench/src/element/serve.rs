//! `duplex-bench element-serve`: one arm's VM side of `bench/element`, in a
//! process of its own (run in the bench's host namespace) so that its CPU
//! time is the element's alone. It creates its tap on the bridge, says
//! `ready`, and runs until its standard input closes:
//!
//! - `plain`: no element; frames are echoed on the tap itself (the
//!   baseline: what the kernel costs without a user-space hop);
//! - `legacy`: the element before its own thread (`legacy.rs`);
//! - `fast`: today's element (`duplex_net::element`).
//!
//! With `legacy` and `fast` the frames go on to the unix socket a QEMU
//! (or the bench's echo, standing in for one) connects to.

use duplex_core::mac::Mac;
use duplex_net::tap::Tap;
use std::os::fd::AsRawFd;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Impl {
    Plain,
    Legacy,
    Fast,
}

pub async fn serve(
    imp: Impl,
    tap: &str,
    bridge: &str,
    sock: &Path,
    mac: Mac,
) -> anyhow::Result<()> {
    let tap = Tap::create(tap, bridge).await?;
    let _ = std::fs::remove_file(sock);
    // Held until stdin closes.
    let mut keep: (
        Option<tokio::task::JoinHandle<()>>,
        Option<duplex_net::element::ElementHandle>,
    ) = (None, None);
    match imp {
        Impl::Plain => {
            std::thread::spawn(move || echo_on_tap(&tap, mac));
        }
        Impl::Legacy => {
            let parts = duplex_net::element::parts(mac, std::net::Ipv4Addr::LOCALHOST, Vec::new());
            let listener = tokio::net::UnixListener::bind(sock)?;
            keep.0 = Some(super::legacy::start(listener, tap, &parts));
        }
        Impl::Fast => {
            let listener = std::os::unix::net::UnixListener::bind(sock)?;
            keep.1 = Some(duplex_net::element::start(
                "bench",
                mac,
                std::net::Ipv4Addr::LOCALHOST,
                listener,
                tap,
                Vec::new(),
            )?);
        }
    }
    println!("ready");
    // Until the bench closes our standard input (or dies).
    let _ = tokio::task::spawn_blocking(|| {
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest)
    })
    .await;
    if let Some(t) = keep.0 {
        t.abort();
    }
    Ok(())
}

/// The plain arm: every UDP frame on the tap goes back with its addresses
/// swapped (one read and one write per frame, as the kernel hands them).
fn echo_on_tap(tap: &Tap, own: Mac) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let mut pfd = libc::pollfd {
            fd: tap.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd we own.
        if unsafe { libc::poll(&mut pfd, 1, 1000) } < 0 {
            return;
        }
        while let Ok(n) = tap.read(&mut buf) {
            if super::echo::swap(&mut buf[..n], own) {
                let _ = tap.write(&buf[..n]);
            }
        }
    }
}
