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
