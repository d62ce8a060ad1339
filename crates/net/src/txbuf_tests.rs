use super::*;
use duplex_core::classify::default_ruleset;

/// An Ethernet/IPv4/UDP frame from `sport` to `dport` with `payload`.
fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (28 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn sip(n: u8) -> Vec<u8> {
    udp(5060, 5060, &[b'I', b'N', b'V', n])
}

fn rtp(n: u8) -> Vec<u8> {
    udp(20000, 30000, &[0x80, 0, 0, n])
}

#[test]
fn signalling_waits_for_its_epoch_media_goes_at_once() {
    let mut b = TxBuffer::new(default_ruleset());
    // Before the first checkpoint nothing is held.
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(0)), Verdict::Pass);
    b.close_epoch(1);
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(1)), Verdict::Held);
    assert_eq!(b.on_frame(Direction::FromGuest, &rtp(1)), Verdict::Pass);
    assert_eq!(b.on_frame(Direction::ToGuest, &sip(9)), Verdict::Pass);
    b.close_epoch(2);
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(2)), Verdict::Held);
    b.commit(1);
    assert!(b.take_out().is_empty(), "sip(1) was sent during epoch 2");
    b.commit(2);
    let out: Vec<_> = b.take_out().into_iter().map(|(_, f)| f).collect();
    assert_eq!(out, vec![sip(1)]);
    b.close_epoch(3);
    b.commit(3);
    assert_eq!(b.take_out(), vec![(Direction::FromGuest, sip(2))]);
    let r = b.report();
    assert_eq!((r.held_total, r.released, r.sent_at_once), (2, 2, 2));
    let hits = |name: &str| r.rules.iter().find(|h| h.rule == name).unwrap().frames;
    assert_eq!((hits("sip-udp"), hits("rtp")), (3, 1));
}

#[test]
fn commits_release_in_order_and_never_twice() {
    let mut b = TxBuffer::new(default_ruleset());
    for e in 1..=5u8 {
        b.close_epoch(u64::from(e));
        b.on_frame(Direction::FromGuest, &sip(e));
        b.on_frame(Direction::FromGuest, &sip(e + 100));
    }
    b.commit(3);
    b.commit(2);
    b.commit(6);
    let out: Vec<u8> = b.take_out().iter().map(|(_, f)| f[f.len() - 1]).collect();
    assert_eq!(out, vec![1, 101, 2, 102, 3, 103, 4, 104, 5, 105]);
    b.commit(6);
    assert!(b.take_out().is_empty());
}

#[test]
fn discard_at_failover_and_unprotect() {
    let mut b = TxBuffer::new(default_ruleset());
    b.close_epoch(1);
    b.on_frame(Direction::FromGuest, &sip(1));
    b.on_frame(Direction::FromGuest, &sip(2));
    assert_eq!(b.discard(), 2);
    b.commit(5);
    assert!(b.take_out().is_empty(), "discarded frames never leave");
    b.on_frame(Direction::FromGuest, &sip(3));
    b.unprotect();
    assert_eq!(b.take_out().len(), 1);
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(4)), Verdict::Pass);
    let r = b.report();
    assert_eq!((r.discarded, r.holding, r.held_now), (2, false, 0));
}

#[test]
fn full_buffer_drops_new_signalling_but_not_media() {
    let mut b = TxBuffer::new(default_ruleset());
    b.close_epoch(1);
    for _ in 0..MAX_HELD_FRAMES {
        assert_eq!(b.on_frame(Direction::FromGuest, &sip(1)), Verdict::Held);
    }
    assert_eq!(
        b.on_frame(Direction::FromGuest, &sip(2)),
        Verdict::Drop(DROP_FULL)
    );
    assert_eq!(b.on_frame(Direction::FromGuest, &rtp(2)), Verdict::Pass);
    let big = udp(5060, 5060, &vec![b'S'; 9000]);
    let mut bytes = TxBuffer::new(default_ruleset());
    bytes.close_epoch(1);
    let fit = MAX_HELD_BYTES / big.len();
    for _ in 0..fit {
        assert_eq!(bytes.on_frame(Direction::FromGuest, &big), Verdict::Held);
    }
    assert_eq!(
        bytes.on_frame(Direction::FromGuest, &big),
        Verdict::Drop(DROP_FULL)
    );
    assert_eq!(bytes.report().dropped_full, 1);
    bytes.commit(2);
    assert_eq!(bytes.take_out().len(), fit);
    assert_eq!(bytes.report().held_bytes_now, 0);
}

#[test]
fn a_new_ruleset_applies_to_the_next_frame_and_old_versions_are_ignored() {
    let mut b = TxBuffer::new(default_ruleset());
    b.close_epoch(1);
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(1)), Verdict::Held);
    let all_send = default_ruleset().with_default(Class::Send);
    let sip_sent = all_send
        .without_rule("sip-udp")
        .expect("the default set has sip-udp");
    assert!(b.set_rules(sip_sent.clone()));
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(2)), Verdict::Pass);
    let r = b.report();
    assert_eq!((r.ruleset_version, r.default_frames), (sip_sent.version, 1));
    assert!(
        !b.set_rules(default_ruleset()),
        "an older version is ignored"
    );
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(3)), Verdict::Pass);
}

#[test]
fn a_restart_releases_and_counts_from_one() {
    let mut b = TxBuffer::new(default_ruleset());
    for e in 1..=40u8 {
        b.close_epoch(u64::from(e));
    }
    b.on_frame(Direction::FromGuest, &sip(1));
    b.restart();
    assert_eq!(b.take_out().len(), 1, "held output leaves at a restart");
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(2)), Verdict::Pass);
    b.close_epoch(1);
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(3)), Verdict::Held);
    b.commit(2);
    assert_eq!(b.take_out().len(), 1, "epoch 2 of the new run releases it");
}

#[test]
fn released_signalling_is_not_overtaken_by_later_signalling() {
    let mut b = TxBuffer::new(default_ruleset());
    b.close_epoch(1);
    b.on_frame(Direction::FromGuest, &sip(1));
    b.unprotect();
    // Released, not yet taken by the element: a later SIP frame waits
    // behind it; media does not.
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(2)), Verdict::Held);
    assert_eq!(b.on_frame(Direction::FromGuest, &rtp(2)), Verdict::Pass);
    let out: Vec<_> = b.take_out().into_iter().map(|(_, f)| f).collect();
    assert_eq!(out, vec![sip(1), sip(2)]);
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(3)), Verdict::Pass);
}

#[test]
fn in_the_switch_signalling_leaves_marked_and_commits_become_messages() {
    let mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
    let mut b = TxBuffer::new(default_ruleset());
    b.hold_at(HoldAt::Switch, mac);
    // The first run: nothing of this VM may still be held anywhere else.
    let first = b.restart();
    assert_eq!(
        first,
        vec![Msg::Release { mac, epoch: 1 }, Msg::Claim { mac, epoch: 1 }]
    );
    b.close_epoch(1);
    assert_eq!(b.on_frame(Direction::FromGuest, &sip(1)), Verdict::Held);
    assert_eq!(b.on_frame(Direction::FromGuest, &rtp(1)), Verdict::Pass);
    let out = b.take_out();
    assert_eq!(out.len(), 1, "marked frames leave at once");
    let tag = proto::tag(&out[0].1).unwrap();
    assert!(tag.hold);
    assert_eq!(
        u64::from(tag.low),
        1 + 2,
        "epoch 2 of the run, after base 1"
    );
    assert_eq!(proto::untagged(&out[0].1), sip(1));
    assert_eq!(b.commit(2), Some(Msg::Commit { mac, epoch: 3 }));
    // A restart towards a new backup: wire epochs go on growing.
    b.close_epoch(2);
    let again = b.restart();
    assert_eq!(
        again,
        vec![Msg::Release { mac, epoch: 4 }, Msg::Claim { mac, epoch: 4 }]
    );
    b.close_epoch(1);
    b.on_frame(Direction::FromGuest, &sip(2));
    let tag = proto::tag(&b.take_out()[0].1).unwrap();
    assert_eq!(u64::from(tag.low), 4 + 2);
    assert_eq!(b.unprotect(), Some(Msg::Release { mac, epoch: 6 }));
    let r = b.report();
    assert_eq!((r.hold_at, r.marked, r.held_total), (HoldAt::Switch, 2, 0));
}

#[test]
fn in_the_host_no_messages_are_made() {
    let mut b = TxBuffer::new(default_ruleset());
    assert!(b.restart().is_empty());
    b.close_epoch(1);
    assert_eq!(b.commit(1), None);
    assert_eq!(b.unprotect(), None);
}

#[test]
fn holding_nowhere_sends_everything_at_once_while_epochs_run() {
    let hold_all = Ruleset {
        version: 1,
        default: Class::Hold,
        rules: Vec::new(),
    };
    let mut held = TxBuffer::new(hold_all.clone());
    held.close_epoch(1);
    assert_eq!(
        held.on_frame(Direction::FromGuest, &[0u8; 60]),
        Verdict::Held
    );
    let mut b = TxBuffer::new(hold_all);
    b.hold_at(HoldAt::None, Mac([2, 0, 0, 0, 0, 1]));
    b.close_epoch(1);
    assert_eq!(b.on_frame(Direction::FromGuest, &[0u8; 60]), Verdict::Pass);
    assert_eq!(b.commit(1), None);
    let r = b.report();
    assert_eq!(
        (r.hold_at, r.held_total, r.sent_at_once),
        (HoldAt::None, 0, 1)
    );
}
