//! The switch's shell: one `AF_PACKET` socket per port, one thread in
//! poll(2) running every frame through the pure [`Switch`], and a stats
//! file rewritten every [`STATS_EVERY`].

use super::{Dest, PortKind, Step, Switch};
use crate::packet_socket::{PacketSocket, VNET_HDR_LEN};
use crate::switch_proto::TAG_LEN;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Longest wait in poll(2): how often addresses age and stats are written.
const TICK_MS: i32 = 200;
pub const STATS_EVERY: Duration = Duration::from_secs(1);
/// Frames read from one port before the next port's turn.
const BATCH: usize = 64;
/// Largest frame read: a 64 KiB segment not yet split by the kernel.
const MAX_FRAME: usize = 65_536 + 64;
/// `virtio_net_hdr.flags`: the checksum is still to be filled in.
const NEEDS_CSUM: u8 = 1;
const NO_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// `NAME` (an edge port) or `NAME=host` / `NAME=edge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub kind: PortKind,
}

impl FromStr for PortSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, kind) = match s.split_once('=') {
            None => (s, PortKind::Edge),
            Some((n, "host")) => (n, PortKind::Host),
            Some((n, "edge")) => (n, PortKind::Edge),
            Some((_, k)) => return Err(format!("port `{s}`: kind `{k}` is neither host nor edge")),
        };
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(format!("port `{s}`: not an interface name"));
        }
        Ok(PortSpec {
            name: name.to_string(),
            kind,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("port {port}: {source}")]
    Port { port: String, source: io::Error },
    #[error("poll: {0}")]
    Poll(io::Error),
    #[error("no ports given")]
    NoPorts,
}

/// What the stats file holds.
#[derive(Debug, Serialize)]
struct Stats<'a> {
    ports: Vec<(&'a str, PortKind)>,
    counters: &'a super::Counters,
    /// Sends the kernel refused, by port.
    send_errors: &'a BTreeMap<String, u64>,
    learned: usize,
    streams: Vec<super::StreamStats>,
}

struct Shell {
    ports: Vec<PortSpec>,
    socks: Vec<PacketSocket>,
    switch: Switch,
    send_errors: BTreeMap<String, u64>,
}

/// Runs the switch on `ports` until the process ends; writes `stats` (if
/// given) every [`STATS_EVERY`].
pub fn run(ports: Vec<PortSpec>, stats: Option<PathBuf>) -> Result<(), SwitchError> {
    if ports.is_empty() {
        return Err(SwitchError::NoPorts);
    }
    let socks = ports
        .iter()
        .map(|p| {
            PacketSocket::port(&p.name).map_err(|source| SwitchError::Port {
                port: p.name.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let switch = Switch::new(ports.iter().map(|p| p.kind).collect());
    let mut shell = Shell {
        ports,
        socks,
        switch,
        send_errors: BTreeMap::new(),
    };
    tracing::info!(
        ports = ?shell.ports.iter().map(|p| (&p.name, p.kind)).collect::<Vec<_>>(),
        "switch running"
    );
    shell.serve(stats.as_deref())
}

impl Shell {
    fn serve(&mut self, stats: Option<&Path>) -> Result<(), SwitchError> {
        let mut fds: Vec<libc::pollfd> = self
            .socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut buf = vec![0u8; VNET_HDR_LEN + MAX_FRAME];
        let mut last_stats = Instant::now();
        loop {
            // SAFETY: poll over a live array of pollfds of its length.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, TICK_MS) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(SwitchError::Poll(e));
                }
            }
            for (i, fd) in fds.iter().enumerate() {
                if fd.revents & libc::POLLIN != 0 {
                    self.drain(i, &mut buf);
                }
            }
            if last_stats.elapsed() >= STATS_EVERY {
                last_stats = Instant::now();
                self.switch.expire(last_stats);
                if let Some(path) = stats {
                    self.write_stats(path);
                }
            }
        }
    }

    /// Reads up to [`BATCH`] frames from port `i`.
    fn drain(&mut self, i: usize, buf: &mut [u8]) {
        for _ in 0..BATCH {
            let n = match self.socks[i].recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(port = %self.ports[i].name, "read: {e}");
                    return;
                }
            };
            if n <= VNET_HDR_LEN {
                continue;
            }
            self.on_frame(i, &buf[..n]);
        }
    }

    fn on_frame(&mut self, i: usize, packet: &[u8]) {
        let (hdr, frame) = packet.split_at(VNET_HDR_LEN);
        match self.switch.on_frame(i, frame, Instant::now()) {
            Step::Forward(d) => self.send(d, &[packet]),
            Step::ForwardUntagged(d) => {
                let mut h = [0u8; VNET_HDR_LEN];
                h.copy_from_slice(hdr);
                if h[0] & NEEDS_CSUM != 0 {
                    // The checksum starts TAG_LEN bytes earlier untagged.
                    let start = u16::from_le_bytes([h[6], h[7]]).saturating_sub(TAG_LEN as u16);
                    h[6..8].copy_from_slice(&start.to_le_bytes());
                }
                self.send(d, &[&h, &frame[..12], &frame[12 + TAG_LEN..]]);
            }
            Step::Applied(m) => {
                tracing::debug!(port = %self.ports[i].name, "message {m:?}");
                for (d, f) in self.switch.take_released() {
                    self.send(d, &[&NO_HDR, &f]);
                }
            }
            Step::Held | Step::Drop(_) => {}
        }
    }

    fn send(&mut self, d: Dest, parts: &[&[u8]]) {
        match d {
            Dest::Port(p) => self.send_one(p, parts),
            Dest::Flood { except } => {
                for p in (0..self.socks.len()).filter(|p| *p != except) {
                    self.send_one(p, parts);
                }
            }
        }
    }

    /// A send the kernel refuses (port down, queue full) is a dropped
    /// frame, as on any switch: counted per port.
    fn send_one(&mut self, p: usize, parts: &[&[u8]]) {
        if self.socks[p].send(parts).is_err() {
            *self
                .send_errors
                .entry(self.ports[p].name.clone())
                .or_default() += 1;
        }
    }

    fn write_stats(&self, path: &Path) {
        let s = Stats {
            ports: self
                .ports
                .iter()
                .map(|p| (p.name.as_str(), p.kind))
                .collect(),
            counters: &self.switch.counters,
            send_errors: &self.send_errors,
            learned: self.switch.learned(),
            streams: self.switch.streams(),
        };
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec_pretty(&s)
            .map_err(io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!("stats file {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            "h1=host".parse::<PortSpec>(),
            Ok(PortSpec {
                name: "h1".into(),
                kind: PortKind::Host
            })
        );
        assert_eq!("client".parse::<PortSpec>().unwrap().kind, PortKind::Edge);
        assert!("h1=core"
            .parse::<PortSpec>()
            .unwrap_err()
            .contains("neither"));
        assert!("=host".parse::<PortSpec>().is_err());
        assert!("a-very-long-interface-name".parse::<PortSpec>().is_err());
    }
}
