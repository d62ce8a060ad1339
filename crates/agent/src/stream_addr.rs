//! Where a live migration's stream goes. QEMU's `migrate` runs an `exec:`
//! address as a shell command, so the address is never taken from anyone:
//! the source builds it from the destination agent's own address (the
//! IPv4 literal of the `to` URL the order names) and the port the
//! destination answered, `tcp:` only. A destination that answers anything
//! else (another scheme, another address, no port) is refused.

use std::net::Ipv4Addr;

/// The destination's IPv4 address in an agent URL `https://A.B.C.D:PORT`.
pub fn agent_ip(to: &str) -> Result<Ipv4Addr, String> {
    let bad = || format!("`{to}` is not an agent URL like https://10.77.0.12:7070");
    let rest = to.strip_prefix("https://").ok_or_else(bad)?;
    let (ip, port) = rest.trim_end_matches('/').split_once(':').ok_or_else(bad)?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(bad)?;
    ip.parse().map_err(|_| bad())
}

/// The stream address for a destination at `dest` that answered
/// `answered` (`tcp:A.B.C.D:PORT` with its own address).
pub fn stream_uri(dest: Ipv4Addr, answered: &str) -> Result<String, String> {
    let refused = || {
        format!("the destination answered stream address `{answered}`; only tcp:{dest}:PORT is accepted")
    };
    let (ip, port) = answered
        .strip_prefix("tcp:")
        .and_then(|a| a.rsplit_once(':'))
        .ok_or_else(refused)?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(refused)?;
    match ip.parse::<Ipv4Addr>() {
        Ok(ip) if ip == dest => Ok(format!("tcp:{dest}:{port}")),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 12);

    #[test]
    fn only_an_agent_url_with_an_address_names_a_destination() {
        assert_eq!(agent_ip("https://10.77.0.12:7070"), Ok(D));
        assert_eq!(agent_ip("https://10.77.0.12:7070/"), Ok(D));
        for bad in [
            "http://10.77.0.12:7070",
            "https://agent.example:7070",
            "https://10.77.0.12",
            "https://10.77.0.12:0",
            "https://10.77.0.12:99999",
            "https://10.77.0.12:7070/x",
            "exec:sh",
            "",
        ] {
            assert!(agent_ip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_stream_goes_to_the_destinations_own_address_over_tcp_only() {
        assert_eq!(
            stream_uri(D, "tcp:10.77.0.12:41235"),
            Ok("tcp:10.77.0.12:41235".into())
        );
        for bad in [
            "exec:touch /tmp/pwned",
            "exec:tcp:10.77.0.12:1",
            "unix:/run/x.sock",
            "fd:3",
            "file:/etc/shadow",
            "rdma:10.77.0.12:41235",
            "tcp:10.77.0.99:41235",
            "tcp:10.77.0.12:0",
            "tcp:10.77.0.12:70000",
            "tcp:10.77.0.12:41235,to=41240",
            "tcp:10.77.0.12",
            "tcp::41235",
            "",
        ] {
            let e = stream_uri(D, bad).unwrap_err();
            assert!(e.contains("only tcp:10.77.0.12:PORT"), "{bad}: {e}");
        }
    }
}
