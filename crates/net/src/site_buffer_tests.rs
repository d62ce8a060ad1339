use super::*;
use crate::frame::{gratuitous_arp, parse};
use std::time::Duration;

const VM: Mac = Mac([2, 0, 0, 0, 0, 1]);
const CLIENT: Mac = Mac([2, 0, 0, 0, 0, 9]);
const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
const BCAST: Mac = Mac([0xff; 6]);

/// A UDP-ish frame to the VM carrying `n` (so order can be checked).
fn to_vm(n: u32) -> Vec<u8> {
    let mut f = VM.0.to_vec();
    f.extend_from_slice(&CLIENT.0);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 24]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&[10, 0, 0, 2]);
    f.extend_from_slice(&IP.octets());
    f.extend_from_slice(&n.to_be_bytes());
    f
}

fn seq(f: &[u8]) -> u32 {
    u32::from_be_bytes([f[34], f[35], f[36], f[37]])
}

fn arp_request(target: Ipv4Addr, dst: Mac) -> Vec<u8> {
    let mut f = gratuitous_arp(CLIENT, Ipv4Addr::new(10, 0, 0, 2));
    f[0..6].copy_from_slice(&dst.0);
    f[38..42].copy_from_slice(&target.octets());
    f
}

fn feed(b: &mut SiteBuffer, f: &[u8], now: Instant) -> Verdict {
    b.on_frame(Direction::ToGuest, parse(f).as_ref(), f, now)
}

/// Drains with `room` frames per round until nothing is released.
fn drain_all(b: &mut SiteBuffer, frames: usize) -> Vec<u32> {
    let mut got = Vec::new();
    for _ in 0..100_000 {
        let out = b.released(Room {
            frames,
            bytes: usize::MAX,
        });
        if out.is_empty() && !b.wants_release() {
            break;
        }
        got.extend(out.iter().map(|(d, f)| {
            assert_eq!(*d, Direction::ToGuest);
            seq(f)
        }));
    }
    got
}

#[test]
fn passes_everything_until_told_to_buffer() {
    let mut b = SiteBuffer::new(VM, IP);
    let now = Instant::now();
    assert_eq!(feed(&mut b, &to_vm(1), now), Verdict::Pass);
    assert_eq!(feed(&mut b, &arp_request(IP, BCAST), now), Verdict::Pass);
    assert!(!b.wants_release());
}

#[test]
fn buffers_in_order_and_drains_before_later_frames() {
    let mut b = SiteBuffer::new(VM, IP);
    let t0 = Instant::now();
    b.order(BufferMode::Buffer);
    for n in 0..1000 {
        assert_eq!(feed(&mut b, &to_vm(n), t0), Verdict::Held);
    }
    assert_eq!(b.released(Room::ANY), Vec::new(), "nothing while buffering");
    let st = b.status(t0 + Duration::from_millis(250));
    assert_eq!((st.buffered, st.oldest_ms), (1000, Some(250)));
    b.order(BufferMode::Drain);
    // Frames arriving while it drains queue behind the buffered ones.
    let mut got = b
        .released(Room {
            frames: 10,
            bytes: usize::MAX,
        })
        .into_iter()
        .map(|(_, f)| seq(&f))
        .collect::<Vec<_>>();
    for n in 1000..1100 {
        assert_eq!(feed(&mut b, &to_vm(n), t0), Verdict::Held);
    }
    got.extend(drain_all(&mut b, 7));
    assert_eq!(got, (0..1100).collect::<Vec<_>>());
    assert_eq!(b.mode(), BufferMode::Pass);
    assert_eq!(feed(&mut b, &to_vm(5000), t0), Verdict::Pass);
    let st = b.status(t0);
    assert_eq!((st.buffered_total, st.released_total), (1100, 1100));
    assert_eq!(st.buffered, 0);
}

#[test]
fn releases_only_what_the_vm_side_takes() {
    let mut b = SiteBuffer::new(VM, IP);
    let now = Instant::now();
    b.order(BufferMode::Buffer);
    for n in 0..10 {
        feed(&mut b, &to_vm(n), now);
    }
    b.order(BufferMode::Drain);
    assert!(b.released(Room::NONE).is_empty(), "no VM connected");
    assert!(b.wants_release());
    let len = to_vm(0).len();
    let two = Room {
        frames: 100,
        bytes: 2 * (len + 4) + 3,
    };
    assert_eq!(b.released(two).len(), 2);
    assert_eq!(drain_all(&mut b, 1000), (2..10).collect::<Vec<_>>());
}

#[test]
fn answers_arp_for_the_vm_while_buffering_broadcast_or_unicast() {
    let mut b = SiteBuffer::new(VM, IP);
    let now = Instant::now();
    b.order(BufferMode::Buffer);
    for dst in [BCAST, VM] {
        assert_eq!(feed(&mut b, &arp_request(IP, dst), now), Verdict::Held);
        assert!(b.wants_release());
        let out = b.released(Room::NONE);
        assert_eq!(out.len(), 1);
        let (dir, reply) = &out[0];
        assert_eq!(*dir, Direction::FromGuest);
        let i = parse(reply).unwrap();
        assert_eq!((i.src, i.dst, i.src_ip), (VM, CLIENT, Some(IP)));
    }
    let other = arp_request(Ipv4Addr::new(10, 0, 0, 7), BCAST);
    assert_eq!(feed(&mut b, &other, now), Verdict::Drop(DROP_OTHER));
    let mut not_ours = to_vm(1);
    not_ours[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 3]);
    assert_eq!(feed(&mut b, &not_ours, now), Verdict::Drop(DROP_OTHER));
    assert_eq!(
        feed(&mut b, &to_vm(1)[..10], now),
        Verdict::Drop(DROP_OTHER),
        "a runt"
    );
    let st = b.status(now);
    assert_eq!((st.arp_answered, st.dropped_other, st.buffered), (2, 3, 0));
}

#[test]
fn full_buffer_drops_the_newest_and_keeps_order() {
    let mut b = SiteBuffer::new(VM, IP);
    let now = Instant::now();
    b.order(BufferMode::Buffer);
    for n in 0..MAX_FRAMES as u32 + 5 {
        feed(&mut b, &to_vm(n), now);
    }
    assert_eq!(b.status(now).dropped_full, 5);
    b.order(BufferMode::Pass);
    assert_eq!(b.mode(), BufferMode::Drain, "an order never drops frames");
    let got = drain_all(&mut b, 1024);
    assert_eq!(got.len(), MAX_FRAMES);
    assert!(got.windows(2).all(|w| w[0] + 1 == w[1]));
}

#[test]
fn frames_from_the_guest_always_pass() {
    let mut b = SiteBuffer::new(VM, IP);
    b.order(BufferMode::Buffer);
    let f = to_vm(1);
    let v = b.on_frame(Direction::FromGuest, parse(&f).as_ref(), &f, Instant::now());
    assert_eq!(v, Verdict::Pass);
}

#[test]
fn buffering_again_while_draining_keeps_the_rest() {
    let mut b = SiteBuffer::new(VM, IP);
    let now = Instant::now();
    b.order(BufferMode::Buffer);
    for n in 0..10 {
        feed(&mut b, &to_vm(n), now);
    }
    b.order(BufferMode::Drain);
    let first = b.released(Room {
        frames: 4,
        bytes: usize::MAX,
    });
    b.order(BufferMode::Buffer);
    feed(&mut b, &to_vm(10), now);
    assert!(b.released(Room::ANY).is_empty());
    b.order(BufferMode::Drain);
    let mut got: Vec<u32> = first.iter().map(|(_, f)| seq(f)).collect();
    got.extend(drain_all(&mut b, 3));
    assert_eq!(got, (0..11).collect::<Vec<_>>());
}

#[test]
fn answers_for_the_addresses_the_vm_announced_while_it_ran_here() {
    let buf = Arc::new(Mutex::new(SiteBuffer::new(VM, IP)));
    let mut stage = SiteBufferStage::new(buf.clone());
    let now = Instant::now();
    let vip = Ipv4Addr::new(10, 0, 0, 50);
    let from_vm = |mac: Mac, ip: Ipv4Addr| gratuitous_arp(mac, ip);
    // While passing: the guest claims its service address; another MAC's
    // announcement and an address probe (sender 0.0.0.0) teach nothing.
    for f in [
        from_vm(VM, vip),
        from_vm(CLIENT, Ipv4Addr::new(10, 0, 0, 60)),
        from_vm(VM, Ipv4Addr::UNSPECIFIED),
    ] {
        let v = stage.on_frame(Direction::FromGuest, parse(&f).as_ref(), &f, now);
        assert_eq!(v, Verdict::Pass);
    }
    let mut b = buf.lock().unwrap();
    assert_eq!(b.status(now).addresses, vec![IP, vip]);
    b.order(BufferMode::Buffer);
    assert_eq!(feed(&mut b, &arp_request(vip, BCAST), now), Verdict::Held);
    let out = b.released(Room::NONE);
    let i = parse(&out[0].1).unwrap();
    assert_eq!((i.src, i.dst, i.src_ip), (VM, CLIENT, Some(vip)));
    let unknown = arp_request(Ipv4Addr::new(10, 0, 0, 60), BCAST);
    assert_eq!(feed(&mut b, &unknown, now), Verdict::Drop(DROP_OTHER));
}

#[test]
fn addresses_given_are_bounded_and_never_doubled() {
    let mut b = SiteBuffer::new(VM, IP);
    let many: Vec<Ipv4Addr> = (1..=20).map(|n| Ipv4Addr::new(10, 0, 1, n)).collect();
    b.add_addresses(&[IP, Ipv4Addr::BROADCAST]);
    b.add_addresses(&many);
    b.add_addresses(&many);
    let got = b.status(Instant::now()).addresses;
    assert_eq!(got.len(), MAX_ADDRESSES);
    assert_eq!(got[0], IP);
    assert_eq!(&got[1..], &many[..MAX_ADDRESSES - 1]);
}
