//! UDP echo: every datagram to the port goes back to its sender unchanged.
//! Traffic probes use it to measure loss and gaps during migrations.

use std::net::UdpSocket;

pub fn spawn(port: u16) {
    std::thread::spawn(move || {
        let sock = match UdpSocket::bind(("0.0.0.0", port)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("duplex guest: UDP echo on port {port} unavailable: {e}");
                return;
            }
        };
        let mut buf = [0u8; 2048];
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = sock.send_to(&buf[..n], from);
                }
                Err(e) => eprintln!("duplex guest: UDP echo: {e}"),
            }
        }
    });
}
