//! The element's data path on real descriptors, no root needed: a unix
//! datagram socketpair stands in for the tap (one frame per read and per
//! write, as a tap), a unix stream for QEMU's netdev connection.

use super::*;
use crate::frame::gratuitous_arp;
use crate::framing::MAX_FRAME;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::{Duration, Instant};

const VM_MAC: Mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
const NEW_MAC: Mac = Mac([0x52, 0x54, 0, 0, 0, 2]);
const CLIENT: Mac = Mac([0x52, 0x54, 0, 0, 0, 9]);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 50);
const WAIT: Duration = Duration::from_secs(5);

/// A UDP frame from the client to `dst` at the VM's MAC, tagged `n`.
fn udp(dst: Ipv4Addr, n: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&VM_MAC.0);
    f.extend_from_slice(&CLIENT.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 10, 9, 0, 2]);
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[0, 1, 0, 2, 0, 10, 0, 0]);
    f.extend_from_slice(&n.to_be_bytes());
    f
}

struct Rig {
    el: ElementHandle,
    /// The network's end of the "tap".
    net: UnixDatagram,
    sock: std::path::PathBuf,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rig(name: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("duplex-element-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("net.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (net, tap_end) = UnixDatagram::pair().unwrap();
    tap_end.set_nonblocking(true).unwrap();
    net.set_read_timeout(Some(WAIT)).unwrap();
    let tap = Tap {
        name: "test0".into(),
        fd: OwnedFd::from(tap_end),
    };
    let el = start(
        "vm1",
        VM_MAC,
        std::net::Ipv4Addr::new(10, 99, 0, 5),
        listener,
        tap,
        Vec::new(),
    )
    .unwrap();
    Rig {
        el,
        net,
        sock,
        _dir: TempDir(dir),
    }
}

impl Rig {
    fn qemu(&self) -> UnixStream {
        let c = UnixStream::connect(&self.sock).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c
    }

    /// The next frame the network hears.
    fn heard(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 65_536];
        let n = self.net.recv(&mut buf).expect("a frame on the tap");
        buf.truncate(n);
        buf
    }

    fn drops(&self, reason: &str) -> u64 {
        let r = self.el.report();
        r.drops
            .iter()
            .find(|d| d.reason == reason)
            .map_or(0, |d| d.packets)
    }

    /// Waits until `what` holds of the element's report.
    fn until(&self, what: impl Fn(&Rig) -> bool) {
        let t0 = Instant::now();
        while !what(self) {
            assert!(t0.elapsed() < WAIT, "not within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn framed(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn read_framed(c: &mut UnixStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    c.read_exact(&mut len).unwrap();
    let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut f).unwrap();
    f
}

#[tokio::test]
async fn frames_cross_both_ways_in_order_and_are_counted() {
    let r = rig("both");
    // Nobody connected yet: a frame from the network is dropped, counted.
    r.net.send(&udp(VIP, 0)).unwrap();
    r.until(|r| r.drops("VM not connected") == 1);
    let mut q = r.qemu();
    r.until(|r| r.el.report().rx_packets == 1);
    // Frames from the VM, several per write: all reach the tap, in order
    // (8 at a time: the socketpair standing in for the tap queues only
    // `net.unix.max_dgram_qlen` datagrams, 10 by default).
    let out: Vec<Vec<u8>> = (1..=504).map(|n| udp(VIP, n)).collect();
    for chunk in out.chunks(8) {
        q.write_all(&framed(chunk)).unwrap();
        for f in chunk {
            assert_eq!(&r.heard(), f);
        }
    }
    // And the other way.
    for chunk in (0..304).collect::<Vec<u16>>().chunks(8) {
        for &n in chunk {
            r.net.send(&udp(VIP, n)).unwrap();
        }
        for &n in chunk {
            assert_eq!(read_framed(&mut q), udp(VIP, n));
        }
    }
    let rep = r.el.report();
    assert_eq!((rep.tx_packets, rep.rx_packets), (504, 305));
    assert!(rep.drops.iter().all(|d| d.reason == "VM not connected"));
    r.el.stop().await;
}

#[tokio::test]
async fn a_corrupt_stream_is_closed_and_qemu_may_connect_again() {
    let r = rig("corrupt");
    let mut q = r.qemu();
    q.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes()).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(q.read(&mut b).unwrap(), 0, "the element closed it");
    let mut q = r.qemu();
    q.write_all(&framed(&[udp(VIP, 7)])).unwrap();
    assert_eq!(r.heard(), udp(VIP, 7));
    // A frame cut short by a new connection is not delivered.
    let f = framed(&[udp(VIP, 8)]);
    q.write_all(&f[..10]).unwrap();
    let mut q2 = r.qemu();
    q2.write_all(&framed(&[udp(VIP, 9)])).unwrap();
    assert_eq!(r.heard(), udp(VIP, 9));
    drop(q);
    r.el.stop().await;
}

#[tokio::test]
async fn injected_frames_and_a_handover_forward_reach_the_network() {
    let r = rig("handover");
    let _q = r.qemu();
    r.el.inject(Direction::FromGuest, gratuitous_arp(VM_MAC, VIP));
    assert_eq!(r.heard(), gratuitous_arp(VM_MAC, VIP));
    r.el.handover(HandoverOrder::Hold { vip: VIP });
    r.net.send(&udp(VIP, 1)).unwrap();
    r.until(|r| r.el.handover_status().holding == 1);
    r.el.handover(HandoverOrder::Forward {
        vip: VIP,
        to: NEW_MAC,
    });
    // The held frame goes back out re-addressed, and so does a new one.
    r.net.send(&udp(VIP, 2)).unwrap();
    for n in 1..=2 {
        let mut want = udp(VIP, n);
        want[0..6].copy_from_slice(&NEW_MAC.0);
        want[6..12].copy_from_slice(&VM_MAC.0);
        assert_eq!(r.heard(), want);
    }
    assert_eq!(r.el.handover_status().forwarded_total, 2);
    r.el.stop().await;
}

#[tokio::test]
async fn an_isolated_vm_hears_and_says_nothing() {
    let r = rig("isolated");
    let mut q = r.qemu();
    r.el.isolate(true);
    q.write_all(&framed(&[udp(VIP, 1)])).unwrap();
    r.net.send(&udp(VIP, 2)).unwrap();
    r.until(|r| r.drops(crate::isolate::FENCED) == 2);
    r.el.isolate(false);
    q.write_all(&framed(&[udp(VIP, 3)])).unwrap();
    assert_eq!(r.heard(), udp(VIP, 3));
    r.el.stop().await;
}

#[tokio::test]
async fn a_vm_not_reading_gets_a_bounded_queue_then_drops_counted() {
    let r = rig("backlog");
    let mut q = r.qemu();
    // Connected once a frame comes through.
    r.net.send(&udp(VIP, 0)).unwrap();
    assert_eq!(read_framed(&mut q), udp(VIP, 0));
    // QEMU reads nothing now: the socket buffer fills, then the element's
    // queue (at most 1024 frames), then frames are dropped and counted.
    let total: u16 = 4000;
    for chunk in (1..total).collect::<Vec<u16>>().chunks(8) {
        for &n in chunk {
            r.net.send(&udp(VIP, n)).unwrap();
        }
        let seen = u64::from(chunk[chunk.len() - 1]) + 1;
        r.until(|r| r.el.report().rx_packets == seen);
    }
    let dropped = r.drops("guest backlog full (VM not reading)");
    assert!(dropped > 0, "nothing dropped");
    // What was queued arrives, in order, with nothing missing before the
    // first drop.
    q.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = 1u16;
    loop {
        let mut len = [0u8; 4];
        if q.read_exact(&mut len).is_err() {
            break;
        }
        let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
        q.read_exact(&mut f).unwrap();
        assert_eq!(f, udp(VIP, got), "frame {got}");
        got += 1;
    }
    assert_eq!(
        u64::from(got) + dropped,
        u64::from(total),
        "got {got}, dropped {dropped}"
    );
    r.el.stop().await;
}
