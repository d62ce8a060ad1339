use super::*;
use crate::frame::{gratuitous_arp, parse};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 50);
const OWN: Mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
const NEW: Mac = Mac([0x52, 0x54, 0, 0, 0, 2]);
const CLIENT: Mac = Mac([0x52, 0x54, 0, 0, 0, 9]);

/// A UDP frame from the client to `dst` (at MAC `to`), tagged with `n`.
fn udp(to: Mac, dst: Ipv4Addr, n: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&to.0);
    f.extend_from_slice(&CLIENT.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 29, 0, 0, 0, 0, 64, 17, 0, 0, 10, 9, 0, 2]);
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[0, 1, 0, 2, 0, 9, 0, 0, n]);
    f
}

/// The verdict on `f`, with the frame if it passed.
fn feed(h: &mut Handover, dir: Direction, f: Vec<u8>, now: Instant) -> (Verdict, Vec<u8>) {
    let info = parse(&f);
    (h.on_frame(dir, info.as_ref(), &f, now), f)
}

fn passed((v, f): (Verdict, Vec<u8>)) -> Option<Vec<u8>> {
    (v == Verdict::Pass).then_some(f)
}

#[test]
fn idle_passes_everything() {
    let mut h = Handover::new(OWN);
    let t = Instant::now();
    let f = udp(OWN, VIP, 1);
    assert_eq!(
        passed(feed(&mut h, Direction::ToGuest, f.clone(), t)),
        Some(f)
    );
    assert!(h.take_out().is_empty());
    assert_eq!(h.status().mode, "idle");
}

#[test]
fn hold_then_forward_sends_everything_on_in_order_from_own_mac() {
    let mut h = Handover::new(OWN);
    let t = Instant::now();
    h.order(HandoverOrder::Hold { vip: VIP }, t);
    for n in 0..3 {
        assert!(matches!(
            feed(&mut h, Direction::ToGuest, udp(OWN, VIP, n), t).0,
            Verdict::Held
        ));
    }
    // Other addresses, broadcasts and the VM's own frames pass.
    let other = udp(OWN, Ipv4Addr::new(10, 9, 0, 101), 7);
    assert!(passed(feed(&mut h, Direction::ToGuest, other, t)).is_some());
    let bcast = udp(Mac([0xff; 6]), VIP, 8);
    assert!(passed(feed(&mut h, Direction::ToGuest, bcast, t)).is_some());
    assert!(passed(feed(&mut h, Direction::FromGuest, udp(CLIENT, VIP, 9), t)).is_some());
    assert_eq!(h.status().holding, 3);
    assert!(h.take_out().is_empty());

    h.order(HandoverOrder::Forward { vip: VIP, to: NEW }, t);
    assert!(matches!(
        feed(&mut h, Direction::ToGuest, udp(OWN, VIP, 3), t).0,
        Verdict::Held
    ));
    let out = h.take_out();
    assert_eq!(out.len(), 4);
    for (n, (dir, f)) in out.iter().enumerate() {
        assert_eq!(*dir, Direction::FromGuest);
        let mut want = udp(NEW, VIP, n as u8);
        want[6..12].copy_from_slice(&OWN.0);
        assert_eq!(f, &want, "frame {n}");
    }
    let s = h.status();
    assert_eq!((s.mode.as_str(), s.to), ("forwarding", Some(NEW)));
    assert_eq!((s.held_total, s.forwarded_total, s.holding), (3, 4, 0));
}

#[test]
fn release_gives_held_frames_to_the_vm_in_order() {
    let mut h = Handover::new(OWN);
    let t = Instant::now();
    h.order(HandoverOrder::Hold { vip: VIP }, t);
    for n in 0..3 {
        feed(&mut h, Direction::ToGuest, udp(OWN, VIP, n), t);
    }
    h.order(HandoverOrder::Release, t);
    let out = h.take_out();
    let want: Vec<_> = (0..3)
        .map(|n| (Direction::ToGuest, udp(OWN, VIP, n)))
        .collect();
    assert_eq!(out, want);
    assert_eq!(h.status().released_to_vm_total, 3);
    assert!(passed(feed(&mut h, Direction::ToGuest, udp(OWN, VIP, 4), t)).is_some());
}

#[test]
fn an_abandoned_hold_expires_to_the_vm_and_forwarding_ends() {
    let mut h = Handover::new(OWN);
    let t = Instant::now();
    h.order(HandoverOrder::Hold { vip: VIP }, t);
    feed(&mut h, Direction::ToGuest, udp(OWN, VIP, 0), t);
    h.tick(t + HOLD_LIMIT - Duration::from_millis(1));
    assert!(h.take_out().is_empty());
    h.tick(t + HOLD_LIMIT);
    assert_eq!(h.take_out(), vec![(Direction::ToGuest, udp(OWN, VIP, 0))]);
    assert_eq!(h.status().expired_holds, 1);

    h.order(HandoverOrder::Forward { vip: VIP, to: NEW }, t);
    let late = t + FORWARD_FOR;
    assert!(passed(feed(&mut h, Direction::ToGuest, udp(OWN, VIP, 1), late)).is_some());
    assert_eq!(h.status().mode, "idle");
}

#[test]
fn the_vm_announcing_the_address_ends_hold_and_forwarding() {
    for forwarding in [false, true] {
        let mut h = Handover::new(OWN);
        let t = Instant::now();
        h.order(HandoverOrder::Hold { vip: VIP }, t);
        feed(&mut h, Direction::ToGuest, udp(OWN, VIP, 0), t);
        if forwarding {
            h.order(HandoverOrder::Forward { vip: VIP, to: NEW }, t);
        }
        h.take_out();
        // An ARP reply about the address (the VM answering a client while
        // it still holds it) is no announcement.
        let mut reply = gratuitous_arp(OWN, VIP);
        reply[38..42].copy_from_slice(&[10, 9, 0, 2]);
        feed(&mut h, Direction::FromGuest, reply, t);
        assert_ne!(h.status().mode, "idle");
        feed(&mut h, Direction::FromGuest, gratuitous_arp(OWN, VIP), t);
        assert_eq!(h.status().mode, "idle");
        let out = h.take_out();
        if forwarding {
            assert!(out.is_empty());
        } else {
            assert_eq!(out, vec![(Direction::ToGuest, udp(OWN, VIP, 0))]);
        }
        assert!(passed(feed(&mut h, Direction::ToGuest, udp(OWN, VIP, 1), t)).is_some());
    }
}

#[test]
fn a_full_hold_drops_with_a_reason_and_other_addresses_are_not_forwarded() {
    let mut h = Handover::new(OWN);
    let t = Instant::now();
    h.order(HandoverOrder::Hold { vip: VIP }, t);
    for _ in 0..MAX_HELD {
        assert!(matches!(
            feed(&mut h, Direction::ToGuest, udp(OWN, VIP, 0), t).0,
            Verdict::Held
        ));
    }
    assert!(matches!(
        feed(&mut h, Direction::ToGuest, udp(OWN, VIP, 0), t).0,
        Verdict::Drop("handover hold full")
    ));
    // A forward for another address: what was held goes to the VM.
    let other = Ipv4Addr::new(10, 9, 0, 60);
    h.order(
        HandoverOrder::Forward {
            vip: other,
            to: NEW,
        },
        t,
    );
    let out = h.take_out();
    assert_eq!(out.len(), MAX_HELD);
    assert!(out.iter().all(|(d, _)| *d == Direction::ToGuest));
}

/// Random orders, frames and clock steps: every frame for the address is
/// accounted for exactly once (passed, sent on, given to the VM, dropped
/// with a reason, or still held).
#[test]
fn simulation_accounts_for_every_frame() {
    let mut seed: u64 = 0x5eed;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..500 {
        let mut h = Handover::new(OWN);
        let mut t = Instant::now();
        let (mut sent, mut passed_n, mut dropped) = (0u64, 0u64, 0u64);
        let mut delivered: Vec<(Direction, Vec<u8>)> = Vec::new();
        for step in 0..200u32 {
            match rnd(10) {
                0 => h.order(HandoverOrder::Hold { vip: VIP }, t),
                1 => h.order(HandoverOrder::Forward { vip: VIP, to: NEW }, t),
                2 => h.order(HandoverOrder::Release, t),
                3 => t += Duration::from_millis(rnd(3000)),
                4 => {
                    feed(&mut h, Direction::FromGuest, gratuitous_arp(OWN, VIP), t);
                }
                _ => {
                    sent += 1;
                    let f = udp(OWN, VIP, (step % 251) as u8);
                    match feed(&mut h, Direction::ToGuest, f, t).0 {
                        Verdict::Pass => passed_n += 1,
                        Verdict::Held => {}
                        Verdict::Drop(_) => dropped += 1,
                    }
                }
            }
            delivered.extend(h.take_out());
        }
        let s = h.status();
        let out = delivered.len() as u64;
        assert_eq!(sent, passed_n + out + dropped + s.holding);
        assert_eq!(out, s.forwarded_total + s.released_to_vm_total);
        // Every held frame is still held, went to the VM, or was sent on.
        assert!(s.held_total >= s.holding + s.released_to_vm_total);
        assert!(s.held_total <= s.holding + s.released_to_vm_total + s.forwarded_total);
    }
}
