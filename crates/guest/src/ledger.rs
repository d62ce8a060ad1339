//! The request ledger service (see `duplex_core::ledger`): answers every
//! request with what this guest's ledger made of it.

use duplex_core::ledger::{decode_query, Ledger, Request, PORT};
use std::net::UdpSocket;

pub fn spawn() {
    std::thread::spawn(move || {
        let sock = match UdpSocket::bind(("0.0.0.0", PORT)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("duplex guest: request ledger on port {PORT} unavailable: {e}");
                return;
            }
        };
        grow_receive_buffer(&sock);
        let mut ledger = Ledger::default();
        let mut buf = [0u8; 64];
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(client) = decode_query(&buf[..n]) {
                        let _ = sock.send_to(&ledger.view(client).encode(), from);
                        continue;
                    }
                    let Some(req) = Request::decode(&buf[..n]) else {
                        continue;
                    };
                    if let Some(a) = ledger.process(req) {
                        let _ = sock.send_to(&a.encode(), from);
                    }
                }
                Err(e) => eprintln!("duplex guest: request ledger: {e}"),
            }
        }
    });
}

/// Room for a burst: a site's buffered requests arrive at once when the VM
/// runs there again, faster than this thread answers them under TCG.
const RECEIVE_BUFFER: libc::c_int = 8 << 20;

fn grow_receive_buffer(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size = RECEIVE_BUFFER;
    // SAFETY: setsockopt(2) on our socket with a c_int we own; the guest
    // middleware runs as root, so the FORCE variant may pass rmem_max.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        eprintln!(
            "duplex guest: request ledger keeps the default receive buffer: {}",
            std::io::Error::last_os_error()
        );
    }
}
