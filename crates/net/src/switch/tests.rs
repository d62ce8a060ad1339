use super::*;
use crate::switch_proto::{tagged, Msg};

const VM: Mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
const CLIENT: Mac = Mac([0x52, 0x54, 0, 0, 0, 9]);
const HOST1: Mac = Mac([0x02, 0, 0, 0, 0, 1]);
const HOST2: Mac = Mac([0x02, 0, 0, 0, 0, 2]);
// Ports: 0 and 1 hosts, 2 the client.
const H1: usize = 0;
const H2: usize = 1;
const CL: usize = 2;

fn switch() -> Switch {
    Switch::new(vec![PortKind::Host, PortKind::Host, PortKind::Edge])
}

fn frame(dst: Mac, src: Mac, n: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[n; 46]);
    f
}

fn msg(s: &mut Switch, port: usize, m: Msg, now: Instant) -> Vec<(Dest, Vec<u8>)> {
    let from = if port == H1 { HOST1 } else { HOST2 };
    assert_eq!(s.on_frame(port, &m.frame(from), now), Step::Applied(m));
    s.take_released()
}

/// The client is learned on its port, the VM on H1.
fn learned() -> (Switch, Instant) {
    let mut s = switch();
    let now = Instant::now();
    assert_eq!(
        s.on_frame(CL, &frame(VM, CLIENT, 0), now),
        Step::Forward(Dest::Flood { except: CL })
    );
    assert_eq!(
        s.on_frame(H1, &frame(CLIENT, VM, 0), now),
        Step::Forward(Dest::Port(CL))
    );
    msg(&mut s, H1, Msg::Claim { mac: VM, epoch: 0 }, now);
    (s, now)
}

#[test]
fn plain_frames_are_switched_by_learned_address() {
    let (mut s, now) = learned();
    assert_eq!(
        s.on_frame(CL, &frame(VM, CLIENT, 1), now),
        Step::Forward(Dest::Port(H1))
    );
    let bcast = Mac([0xff; 6]);
    assert_eq!(
        s.on_frame(H1, &frame(bcast, VM, 1), now),
        Step::Forward(Dest::Flood { except: H1 })
    );
    assert_eq!(
        s.on_frame(H1, &frame(VM, HOST1, 1), now),
        Step::Drop(DROP_SAME_PORT)
    );
    assert_eq!(s.on_frame(H1, &[1, 2, 3], now), Step::Drop(DROP_RUNT));
    // The VM moves to H2: its next frame teaches the switch.
    s.on_frame(H2, &frame(CLIENT, VM, 2), now);
    assert_eq!(
        s.on_frame(CL, &frame(VM, CLIENT, 2), now),
        Step::Forward(Dest::Port(H2))
    );
}

#[test]
fn class_two_leaves_in_order_only_when_its_epoch_commits() {
    let (mut s, now) = learned();
    let out: Vec<Vec<u8>> = (1..=3u8).map(|e| frame(CLIENT, VM, e)).collect();
    for (i, f) in out.iter().enumerate() {
        assert_eq!(s.on_frame(H1, &tagged(f, i as u64 + 1), now), Step::Held);
    }
    // Class 1 passes at once, untagged, past the held ones.
    let mut class1 = tagged(&frame(CLIENT, VM, 9), 3);
    class1[14] &= 0x7f;
    assert_eq!(
        s.on_frame(H1, &class1, now),
        Step::ForwardUntagged(Dest::Port(CL))
    );
    assert!(msg(&mut s, H1, Msg::Commit { mac: VM, epoch: 0 }, now).is_empty());
    let r = msg(&mut s, H1, Msg::Commit { mac: VM, epoch: 2 }, now);
    assert_eq!(
        r,
        vec![
            (Dest::Port(CL), out[0].clone()),
            (Dest::Port(CL), out[1].clone())
        ]
    );
    // A frame of a committed epoch that comes late goes at once.
    assert_eq!(
        s.on_frame(H1, &tagged(&out[0], 2), now),
        Step::ForwardUntagged(Dest::Port(CL))
    );
    let r = msg(&mut s, H1, Msg::Commit { mac: VM, epoch: 3 }, now);
    assert_eq!(r, vec![(Dest::Port(CL), out[2].clone())]);
    assert_eq!(s.counters.held_total, 3);
    assert_eq!(s.counters.released, 3);
    assert_eq!(s.streams()[0].held_now, 0);
}

#[test]
fn a_commit_from_another_host_releases_nothing_and_a_claim_drops_the_rest() {
    let (mut s, now) = learned();
    let f = frame(CLIENT, VM, 1);
    assert_eq!(s.on_frame(H1, &tagged(&f, 1), now), Step::Held);
    // The backup's host cannot release the primary's output.
    assert!(msg(&mut s, H2, Msg::Commit { mac: VM, epoch: 5 }, now).is_empty());
    // The primary is lost; the VM resumes on H2 from epoch 0's state.
    assert!(msg(&mut s, H2, Msg::Claim { mac: VM, epoch: 0 }, now).is_empty());
    assert_eq!(s.counters.discarded, 1);
    // Nothing the old primary held can be released any more.
    assert!(msg(&mut s, H1, Msg::Commit { mac: VM, epoch: 9 }, now).is_empty());
    assert_eq!(s.counters.released, 0);
    // The VM's new frames from H2 are held until H2 commits.
    assert_eq!(s.on_frame(H2, &tagged(&f, 1), now), Step::Held);
    assert_eq!(
        msg(&mut s, H2, Msg::Commit { mac: VM, epoch: 1 }, now).len(),
        1
    );
}

#[test]
fn release_sends_all_held_and_passes_what_is_still_on_its_way() {
    let (mut s, now) = learned();
    let f = frame(CLIENT, VM, 1);
    for e in 1..=4 {
        assert_eq!(s.on_frame(H1, &tagged(&f, e), now), Step::Held);
    }
    let r = msg(&mut s, H1, Msg::Release { mac: VM, epoch: 6 }, now);
    assert_eq!(r.len(), 4);
    assert_eq!(
        s.on_frame(H1, &tagged(&f, 6), now),
        Step::ForwardUntagged(Dest::Port(CL))
    );
    assert_eq!(s.on_frame(H1, &tagged(&f, 7), now), Step::Held);
}

#[test]
fn edge_ports_may_neither_tag_nor_send_messages_and_bad_messages_are_dropped() {
    let (mut s, now) = learned();
    let m = Msg::Commit { mac: VM, epoch: 1 }.frame(CLIENT);
    assert_eq!(s.on_frame(CL, &m, now), Step::Drop(DROP_EDGE_MSG));
    let t = tagged(&frame(VM, CLIENT, 1), 1);
    assert_eq!(s.on_frame(CL, &t, now), Step::Drop(DROP_EDGE_TAG));
    let mut bad = Msg::Commit { mac: VM, epoch: 1 }.frame(HOST1);
    bad.truncate(20);
    assert_eq!(s.on_frame(H1, &bad, now), Step::Drop(DROP_BAD_MSG));
    assert_eq!(s.on_frame(H1, &t[..15], now), Step::Drop(DROP_BAD_TAG));
    assert_eq!(s.counters.dropped.values().sum::<u64>(), 4);
}

#[test]
fn holding_is_bounded_and_the_excess_is_dropped_and_counted() {
    let (mut s, now) = learned();
    let f = frame(CLIENT, VM, 1);
    for _ in 0..MAX_HELD_FRAMES {
        assert_eq!(s.on_frame(H1, &tagged(&f, 1), now), Step::Held);
    }
    assert_eq!(s.on_frame(H1, &tagged(&f, 1), now), Step::Drop(DROP_FULL));
    assert_eq!(s.counters.dropped[DROP_FULL], 1);
    let r = msg(&mut s, H1, Msg::Commit { mac: VM, epoch: 1 }, now);
    assert_eq!(r.len(), MAX_HELD_FRAMES);
    assert_eq!(s.on_frame(H1, &tagged(&f, 2), now), Step::Held);
}

#[test]
fn epochs_past_the_tags_fifteen_bits_still_order() {
    let (mut s, now) = learned();
    let base = 40_000u64;
    msg(
        &mut s,
        H1,
        Msg::Claim {
            mac: VM,
            epoch: base,
        },
        now,
    );
    let f = frame(CLIENT, VM, 1);
    assert_eq!(s.on_frame(H1, &tagged(&f, base + 1), now), Step::Held);
    assert_eq!(s.on_frame(H1, &tagged(&f, base + 2), now), Step::Held);
    assert_eq!(
        msg(
            &mut s,
            H1,
            Msg::Commit {
                mac: VM,
                epoch: base + 1
            },
            now
        )
        .len(),
        1
    );
    assert_eq!(
        msg(
            &mut s,
            H1,
            Msg::Commit {
                mac: VM,
                epoch: base + 2
            },
            now
        )
        .len(),
        1
    );
}

#[test]
fn addresses_and_idle_streams_age_out() {
    let (mut s, now) = learned();
    // The client, the VM and H1 (its message).
    assert_eq!(s.learned(), 3);
    let later = now + MAC_AGE + Duration::from_secs(1);
    s.expire(later);
    assert_eq!(s.learned(), 0);
    assert!(s.streams().is_empty());
}

#[test]
fn streams_are_bounded_and_messages_for_none_create_none() {
    let mut s = switch();
    let now = Instant::now();
    // A commit for a VM nothing was held of starts no stream.
    msg(&mut s, H1, Msg::Commit { mac: VM, epoch: 3 }, now);
    assert!(s.streams().is_empty());
    for i in 0..MAX_STREAMS {
        let mac = Mac([0x52, 0, 0, 0, (i >> 8) as u8, i as u8]);
        msg(&mut s, H1, Msg::Claim { mac, epoch: 0 }, now);
    }
    let one_more = Msg::Claim { mac: VM, epoch: 0 }.frame(HOST1);
    assert_eq!(s.on_frame(H1, &one_more, now), Step::Drop(DROP_STREAMS));
    let marked = tagged(&frame(CLIENT, VM, 1), 1);
    assert_eq!(s.on_frame(H1, &marked, now), Step::Drop(DROP_STREAMS));
    assert_eq!(s.streams().len(), MAX_STREAMS);
}
