//! The pure core: call flows, retransmissions, replication to a second Uas.

mod common;

use common::{code, codes, parse_reply, request, to_tag, uac, uas, with_body, Call, SDP};
use duplex_sip::methods::ALLOW;
use duplex_sip::transaction::{SyncSeq, LINGER};
use duplex_sip::{Owed, SyncOp, Uas};
use std::collections::HashSet;

/// INVITE on `u`: returns (to-tag, 200 OK bytes, sync ops).
fn invite(u: &mut Uas, call: &Call, now: u64) -> (String, Vec<u8>, Vec<SyncOp>) {
    let out = u.handle(&call.invite(), uac(), now);
    assert_eq!(codes(&out.replies), [100, 180, 200]);
    let ok = &out.replies[2];
    let tag = to_tag(ok).expect("200 has a To-tag");
    assert_eq!(
        to_tag(&out.replies[1]).as_deref(),
        Some(tag.as_str()),
        "180 and 200 share the tag"
    );
    assert_eq!(to_tag(&out.replies[0]), None, "no tag on 100 Trying");
    (tag, ok.data.clone(), out.sync)
}

#[test]
fn full_call_flow() {
    let mut u = uas(1);
    let call = Call { n: 1 };
    let out = u.handle(&call.invite(), uac(), 0);
    assert_eq!(codes(&out.replies), [100, 180, 200]);
    assert!(out.replies.iter().all(|r| r.to == uac()));
    // All three wait for the Put of the dialog: a provisional answer stops
    // the client's INVITE retransmissions, so it must not outrun the Put.
    assert!(out.replies.iter().all(|r| r.after_sync == Some(SyncSeq(1))));
    assert_eq!(out.sync.len(), 1);
    let ok = parse_reply(&out.replies[2]);
    let tag = ok.to_tag().unwrap().unwrap();
    let key = format!("dialog/{}/{tag}/{}", call.call_id(), call.caller_tag());
    match &out.sync[0] {
        SyncOp::Put { key: k, value } => {
            assert_eq!(*k, key);
            assert_eq!(value["confirmed"], false);
            assert_eq!(
                value["invite"]["response"].as_str().unwrap().as_bytes(),
                out.replies[2].data.as_slice()
            );
        }
        other => panic!("{other:?}"),
    }
    // The 200 OK: Via/From/Call-ID/CSeq copied, Contact, the SDP answer.
    assert_eq!(ok.call_id().unwrap(), call.call_id());
    assert_eq!(ok.branch().unwrap().as_deref(), Some("z9hG4bK-4242-1-0"));
    assert_eq!(ok.cseq().unwrap().seq, 1);
    assert_eq!(ok.header("Contact"), Some("<sip:duplex@127.0.0.1:5070>"));
    assert!(ok.body_is("application/sdp"));
    assert_eq!(
        ok.header("Content-Length"),
        Some(ok.body.len().to_string().as_str())
    );
    assert!(String::from_utf8_lossy(&ok.body).contains("a=inactive"));
    assert_eq!(u.dialogs().len(), 1);

    // ACK confirms the dialog: replicated, nothing sent.
    let out = u.handle(&call.ack(&tag), uac(), 20);
    assert!(out.replies.is_empty());
    assert!(
        matches!(&out.sync[..], [SyncOp::Put { key: k, value }] if *k == key && value["confirmed"] == true)
    );
    // No more 2xx retransmissions once ACKed.
    assert!(u.tick(10_000).replies.is_empty());

    // BYE: 200 after the Del.
    let out = u.handle(&call.bye(&tag), uac(), 10_500);
    assert_eq!(codes(&out.replies), [200]);
    // The Del carries the 200, for a new ACT that takes it late.
    let owed = Owed {
        to: uac(),
        data: out.replies[0].data.clone(),
    };
    assert_eq!(
        out.sync,
        vec![SyncOp::Del {
            key: key.clone(),
            reply: Some(owed)
        }]
    );
    assert_eq!(out.replies[0].after_sync, Some(SyncSeq(3)));
    assert_eq!(to_tag(&out.replies[0]).as_deref(), Some(tag.as_str()));
    assert_eq!(u.dialogs().len(), 0);
    assert_eq!(u.sync_issued(), SyncSeq(3));

    let c = u.counters();
    assert_eq!(c.requests.get("INVITE"), Some(&1));
    assert_eq!(c.requests.get("ACK"), Some(&1));
    assert_eq!(c.requests.get("BYE"), Some(&1));
    assert_eq!(c.responses.get(&200), Some(&2));
    assert_eq!(c.responses.get(&100), Some(&1));
    assert_eq!(c.responses.get(&180), Some(&1));
}

#[test]
fn retransmitted_invite_and_bye_get_the_same_bytes() {
    let mut u = uas(2);
    let call = Call { n: 7 };
    let (tag, ok, _) = invite(&mut u, &call, 0);
    for now in [500, 1500] {
        let out = u.handle(&call.invite(), uac(), now);
        assert_eq!(out.replies.len(), 1, "only the last response again");
        assert_eq!(out.replies[0].data, ok);
        assert_eq!(
            out.replies[0].after_sync,
            Some(SyncSeq(1)),
            "still waits for the Put"
        );
        assert!(out.sync.is_empty(), "no new processing");
    }
    assert_eq!(u.dialogs().len(), 1);
    u.handle(&call.ack(&tag), uac(), 1600);
    // ACK copies are absorbed quietly.
    let out = u.handle(&call.ack(&tag), uac(), 1700);
    assert!(out.replies.is_empty() && out.sync.is_empty());

    let first = u.handle(&call.bye(&tag), uac(), 2000);
    assert_eq!(codes(&first.replies), [200]);
    let again = u.handle(&call.bye(&tag), uac(), 2500);
    assert_eq!(again.replies.len(), 1);
    assert_eq!(again.replies[0].data, first.replies[0].data);
    assert!(again.sync.is_empty());
    assert_eq!(u.counters().retransmissions_absorbed, 4);
    // After Timer J the BYE transaction is gone: a late copy finds no dialog.
    u.tick(2000 + LINGER);
    let late = u.handle(&call.bye(&tag), uac(), 2000 + LINGER + 1);
    assert_eq!(codes(&late.replies), [481]);
}

#[test]
fn unacked_2xx_is_retransmitted_then_the_dialog_dropped() {
    let mut u = uas(3);
    let call = Call { n: 3 };
    let (_, ok, _) = invite(&mut u, &call, 0);
    let mut sent = 0;
    let mut dels = Vec::new();
    for now in (0..=LINGER).step_by(250) {
        let out = u.tick(now);
        for r in &out.replies {
            assert_eq!(r.data, ok);
        }
        sent += out.replies.len();
        dels.extend(out.sync);
    }
    assert_eq!(sent, 10);
    assert_eq!(dels.len(), 1);
    assert!(matches!(&dels[0], SyncOp::Del { .. }));
    assert_eq!(u.dialogs().len(), 0);
    assert_eq!(u.counters().ack_timeouts, 1);
}

#[test]
fn bye_for_unknown_dialog_is_481() {
    let mut u = uas(4);
    let out = u.handle(&Call { n: 9 }.bye("nosuchtag"), uac(), 0);
    assert_eq!(codes(&out.replies), [481]);
    assert!(out.sync.is_empty());
    assert_eq!(out.replies[0].after_sync, None);
    // BYE without a To-tag cannot name a dialog either.
    let out = u.handle(&request("BYE", "z9hG4bKx", "c9", None), uac(), 0);
    assert_eq!(codes(&out.replies), [481]);
}

#[test]
fn options_other_methods_cancel() {
    let mut u = uas(5);
    let out = u.handle(&request("OPTIONS", "z9hG4bKo", "o1", None), uac(), 0);
    assert_eq!(codes(&out.replies), [200]);
    let m = parse_reply(&out.replies[0]);
    assert_eq!(m.header("Allow"), Some(ALLOW));
    assert!(m.to_tag().unwrap().is_some());

    // A known method it does not serve: 405 with what it serves.
    let out = u.handle(&request("SUBSCRIBE", "z9hG4bKs", "s1", None), uac(), 0);
    assert_eq!(codes(&out.replies), [405]);
    assert_eq!(parse_reply(&out.replies[0]).header("Allow"), Some(ALLOW));
    // A REGISTER without Contact: a query of no bindings.
    let out = u.handle(&request("REGISTER", "z9hG4bKr", "r1", None), uac(), 0);
    assert_eq!(codes(&out.replies), [200]);
    assert_eq!(parse_reply(&out.replies[0]).header("Contact"), None);
    // A method it does not know at all: 501 (RFC 3261 §8.2.1).
    let out = u.handle(&request("X-ANY", "z9hG4bKx", "x1", None), uac(), 0);
    assert_eq!(codes(&out.replies), [501]);
    // Unknown methods share one counter.
    assert_eq!(u.counters().requests.get("OTHER"), Some(&2));
    assert_eq!(u.counters().requests.get("REGISTER"), Some(&1));

    // CANCEL of an answered INVITE: 200 (nothing left to cancel), same tag.
    let call = Call { n: 11 };
    let (tag, _, _) = invite(&mut u, &call, 0);
    let cancel = String::from_utf8(call.invite())
        .unwrap()
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .replace("INVITE sip", "CANCEL sip")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace("Content-Type: application/sdp\r\n", "")
        .replace(
            &format!("Content-Length:   {}", common::SDP.len()),
            "Content-Length: 0",
        )
        + "\r\n\r\n";
    let out = u.handle(cancel.as_bytes(), uac(), 10);
    assert_eq!(codes(&out.replies), [200]);
    assert_eq!(to_tag(&out.replies[0]).as_deref(), Some(tag.as_str()));
    // CANCEL matching nothing: 481.
    let out = u.handle(&request("CANCEL", "z9hG4bKnone", "n1", None), uac(), 10);
    assert_eq!(codes(&out.replies), [481]);
    assert_eq!(
        u.dialogs().len(),
        1,
        "CANCEL after the 200 leaves the dialog"
    );
}

#[test]
fn info_update_and_message_in_a_dialog_get_200_and_need_it() {
    let mut u = uas(7);
    let call = Call { n: 13 };
    let (tag, _, _) = invite(&mut u, &call, 0);
    u.handle(&call.ack(&tag), uac(), 10);
    for (cseq, method) in [(2, "INFO"), (3, "UPDATE"), (4, "MESSAGE")] {
        let out = u.handle(&call.within(method, &tag, cseq), uac(), 20);
        assert_eq!(codes(&out.replies), [200], "{method}");
        assert_eq!(to_tag(&out.replies[0]).as_deref(), Some(tag.as_str()));
        assert!(out.sync.is_empty(), "{method} changes nothing replicated");
        // Its retransmission: the same answer from the transaction.
        let again = u.handle(&call.within(method, &tag, cseq), uac(), 30);
        assert_eq!(again.replies[0].data, out.replies[0].data);
    }
    // Out of order now that CSeq 4 was seen (§12.2.2); another dialog: 481.
    let out = u.handle(&call.within("INFO", &tag, 3), uac(), 40);
    assert_eq!(codes(&out.replies), [500]);
    let out = u.handle(&call.within("INFO", "other", 5), uac(), 40);
    assert_eq!(codes(&out.replies), [481]);
    // An INFO of an Info Package: none is offered (RFC 6086 §4.2.2).
    let package = String::from_utf8(call.within("INFO", &tag, 5)).unwrap();
    let package = package
        .replace("Max-Forwards", "Info-Package: foo\r\nMax-Forwards")
        .replace("-13-45", "-13-99"); // not the 481'd INFO's branch
    let out = u.handle(package.as_bytes(), uac(), 40);
    assert_eq!(codes(&out.replies), [469]);
    assert_eq!(parse_reply(&out.replies[0]).header("Recv-Info"), Some(""));
    // No reliable provisional response was sent, so no PRACK matches one.
    let out = u.handle(&call.within("PRACK", &tag, 6), uac(), 40);
    assert_eq!(codes(&out.replies), [481]);
    // A MESSAGE outside any dialog is taken (RFC 3428).
    let out = u.handle(&request("MESSAGE", "z9hG4bKm", "m1", None), uac(), 40);
    assert_eq!(codes(&out.replies), [200]);
    let out = u.handle(&call.within("BYE", &tag, 7), uac(), 50);
    assert_eq!(codes(&out.replies), [200]);
    assert_eq!(u.dialogs().len(), 0);
}

fn register(call_id: &str, cseq: u32, contact: &str) -> Vec<u8> {
    format!(
        "REGISTER sip:127.0.0.1:5070 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-reg-{call_id}-{cseq}\r\n\
         From: <sip:alice@127.0.0.1>;tag=r{cseq}\r\n\
         To: <sip:alice@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         {contact}\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The contacts `u` holds for alice at wall-clock `now`.
fn alice(u: &Uas, now: u64) -> Vec<String> {
    let b = u.registrar().bindings("sip:alice@127.0.0.1", now);
    b.iter().map(|b| b.contact.clone()).collect()
}

#[test]
fn a_refused_registration_is_undone_and_a_stored_one_is_not() {
    let mut u = uas(33);
    let first = "Contact: <sip:alice@127.0.0.1:5061>\r\n";
    let out = u.handle(&register("reg1", 1, first), uac(), 0);
    assert_eq!(codes(&out.replies), [200]);
    let [SyncOp::Put { key, .. }] = &out.sync[..] else {
        panic!("{:?}", out.sync)
    };
    let key = key.clone();
    u.stored(u.sync_issued());
    // Two more writes of the same address-of-record, both refused (this VM
    // stopped being ACT): alice is bound as the stored write left her.
    let second = "Contact: <sip:alice@127.0.0.1:5062>\r\n";
    u.handle(&register("reg1", 2, second), uac(), 10);
    let seq2 = u.sync_issued();
    let out = u.handle(
        &register("reg1", 3, "Contact: *\r\nExpires: 0\r\n"),
        uac(),
        20,
    );
    assert!(
        matches!(&out.sync[..], [SyncOp::Del { .. }]),
        "{:?}",
        out.sync
    );
    let seq3 = u.sync_issued();
    assert!(alice(&u, 30).is_empty());
    u.forget(&key, seq2);
    u.forget(&key, seq3);
    assert_eq!(alice(&u, 30), ["sip:alice@127.0.0.1:5061"]);
    assert_eq!(u.counters().unstored_forgotten, 1);
    // A stored write is not undone by a late refusal of its number.
    let out = u.handle(&register("reg1", 4, second), uac(), 40);
    assert_eq!(codes(&out.replies), [200]);
    let seq4 = u.sync_issued();
    u.stored(seq4);
    u.forget(&key, seq4);
    assert_eq!(alice(&u, 50).len(), 2);
    assert_eq!(u.counters().unstored_forgotten, 1);
}

#[test]
fn a_registration_is_replicated_before_its_200_and_served_by_the_other_vm() {
    let (mut act, mut sby) = (uas(31), uas(32));
    let bind = register(
        "reg1",
        1,
        "Contact: <sip:alice@127.0.0.1:5061>;expires=300\r\n",
    );
    let out = act.handle(&bind, uac(), 0);
    assert_eq!(codes(&out.replies), [200]);
    assert_eq!(
        out.replies[0].after_sync,
        Some(act.sync_issued()),
        "waits for its Put"
    );
    let ok = parse_reply(&out.replies[0]);
    assert_eq!(
        ok.header("Contact"),
        Some("<sip:alice@127.0.0.1:5061>;expires=300")
    );
    let [op @ SyncOp::Put { key, .. }] = &out.sync[..] else {
        panic!("{:?}", out.sync)
    };
    assert_eq!(key, "binding/sip:alice@127.0.0.1");
    sby.apply(op.clone()).unwrap();
    // The other VM answers a query, and the same REGISTER again (its 200
    // lost in a handover) from the bindings: 200, nothing changed.
    let out = sby.handle(&register("reg2", 1, ""), uac(), 10_000);
    assert_eq!(codes(&out.replies), [200]);
    // A query on the ACT while its Put is unanswered waits for it.
    let q = act.handle(&register("reg3", 1, ""), uac(), 100);
    assert_eq!(q.replies[0].after_sync, Some(act.sync_issued()));
    assert_eq!(
        parse_reply(&out.replies[0]).header("Contact"),
        Some("<sip:alice@127.0.0.1:5061>;expires=290")
    );
    let out = sby.handle(&bind, uac(), 10_000);
    assert_eq!(codes(&out.replies), [200]);
    assert!(out.sync.is_empty());
    // An older CSeq of the same registration fails; a removal replicates
    // as a Del.
    let out = sby.handle(
        &register("reg1", 0, "Contact: <sip:alice@127.0.0.1:5061>\r\n"),
        uac(),
        10_000,
    );
    assert_eq!(codes(&out.replies), [500]);
    let out = sby.handle(
        &register("reg1", 2, "Contact: *\r\nExpires: 0\r\n"),
        uac(),
        11_000,
    );
    assert_eq!(codes(&out.replies), [200]);
    assert!(
        matches!(&out.sync[..], [SyncOp::Del { key, .. }] if key == "binding/sip:alice@127.0.0.1")
    );
    act.apply(out.sync[0].clone()).unwrap();
    assert!(act.registrar().is_empty());
}

#[test]
fn a_registration_lapses_and_a_bad_one_is_refused_with_the_reason() {
    let mut u = uas(33);
    u.handle(
        &register(
            "reg1",
            1,
            "Contact: <sip:alice@127.0.0.1:5061>;expires=5\r\n",
        ),
        uac(),
        0,
    );
    assert_eq!(u.registrar().len(), 1);
    u.tick(5_000);
    assert!(
        u.registrar().is_empty(),
        "lapsed by the clock, no sync needed"
    );
    let out = u.handle(&register("reg1", 2, "Contact: *\r\n"), uac(), 6_000);
    assert_eq!(codes(&out.replies), [400]);
    let warning = parse_reply(&out.replies[0])
        .header("Warning")
        .unwrap()
        .to_string();
    assert!(warning.contains("Expires: 0"), "{warning}");
    // Bindings are in the dump a reconnected VM puts again.
    u.handle(
        &register("reg3", 1, "Contact: <sip:alice@127.0.0.1:5061>\r\n"),
        uac(),
        7_000,
    );
    let out = u.resync(&HashSet::new());
    assert!(out
        .sync
        .iter()
        .any(|op| op.key() == "binding/sip:alice@127.0.0.1"));
}

/// The `o=` version of a reply's session description.
fn sdp_version(r: &duplex_sip::transaction::Reply) -> u64 {
    let m = parse_reply(r);
    assert!(m.body_is("application/sdp"), "{:?}", m.headers);
    let body = String::from_utf8(m.body).unwrap();
    let o = body.lines().find(|l| l.starts_with("o=")).unwrap();
    o.split(' ').nth(2).unwrap().parse().unwrap()
}

#[test]
fn offers_are_answered_inactive_and_each_new_answer_is_a_new_version() {
    let (mut act, mut sby) = (uas(41), uas(42));
    let call = Call { n: 41 };
    let (tag, ok, ops) = invite(&mut act, &call, 0);
    let body = String::from_utf8(
        parse_reply(&duplex_sip::transaction::Reply {
            to: uac(),
            data: ok.clone(),
            after_sync: None,
        })
        .body,
    )
    .unwrap();
    assert!(
        body.contains("m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=inactive"),
        "{body}"
    );
    for op in ops
        .into_iter()
        .chain(act.handle(&call.ack(&tag), uac(), 10).sync)
    {
        sby.apply(op).unwrap();
    }
    // UPDATE with an offer: version 2, replicated before its 200.
    let update = with_body(call.within("UPDATE", &tag, 2), "application/sdp", SDP);
    let out = act.handle(&update, uac(), 20);
    assert_eq!(codes(&out.replies), [200]);
    assert_eq!(sdp_version(&out.replies[0]), 2);
    assert_eq!(out.replies[0].after_sync, Some(act.sync_issued()));
    let update_ok = out.replies[0].data.clone();
    for op in out.sync {
        sby.apply(op).unwrap();
    }
    // Its 200 lost in a switchover, the client retransmits the UPDATE to
    // the other VM: the same answer, not a new version.
    let out = sby.handle(&update, uac(), 25);
    assert_eq!(out.replies.len(), 1);
    assert_eq!(out.replies[0].data, update_ok);
    assert!(out.sync.is_empty());
    // After a switchover the other VM goes on from there: version 3.
    let out = sby.handle(
        &with_body(call.within("INVITE", &tag, 3), "application/sdp", SDP),
        uac(),
        30,
    );
    assert_eq!(codes(&out.replies), [200]);
    assert_eq!(sdp_version(&out.replies[0]), 3);
    // An UPDATE without a body is no offer: 200 without one.
    let out = sby.handle(&call.within("UPDATE", &tag, 4), uac(), 40);
    assert!(parse_reply(&out.replies[0]).body.is_empty());
    // An INVITE without an offer gets one.
    let bare = Call { n: 42 };
    let plain = String::from_utf8(bare.invite()).unwrap();
    let plain =
        plain.split("Content-Type").next().unwrap().to_string() + "Content-Length: 0\r\n\r\n";
    let out = act.handle(plain.as_bytes(), uac(), 50);
    assert_eq!(codes(&out.replies), [100, 180, 200]);
    assert_eq!(sdp_version(&out.replies[2]), 1);
    // Until the ACK brings the answer, an offer in an UPDATE crosses ours:
    // 491 (RFC 3311 §5.2); after it, 200.
    let bare_tag = to_tag(&out.replies[2]).unwrap();
    let offer = |cseq| {
        with_body(
            bare.within("UPDATE", &bare_tag, cseq),
            "application/sdp",
            SDP,
        )
    };
    assert_eq!(codes(&act.handle(&offer(2), uac(), 60).replies), [491]);
    act.handle(&bare.ack(&bare_tag), uac(), 70);
    assert_eq!(codes(&act.handle(&offer(3), uac(), 80).replies), [200]);
}

#[test]
fn a_body_that_is_no_offer_is_refused_and_sets_nothing_up() {
    let mut u = uas(43);
    let call = Call { n: 43 };
    let text = String::from_utf8(call.invite()).unwrap();
    let text = text.replace("Content-Type: application/sdp", "Content-Type: text/plain");
    let out = u.handle(text.as_bytes(), uac(), 0);
    assert_eq!(codes(&out.replies), [415]);
    assert_eq!(
        parse_reply(&out.replies[0]).header("Accept"),
        Some("application/sdp")
    );
    let call = Call { n: 44 };
    let text = String::from_utf8(call.invite()).unwrap();
    let text = text.replace("m=audio 6000 RTP/AVP 0", "m=audio sixx RTP/AVP 0");
    let out = u.handle(text.as_bytes(), uac(), 0);
    assert_eq!(codes(&out.replies), [488]);
    let warning = parse_reply(&out.replies[0])
        .header("Warning")
        .unwrap()
        .to_string();
    assert!(warning.contains("bad media line"), "{warning}");
    assert!(out.sync.is_empty());
    assert_eq!(u.dialogs().len(), 0);
    // A re-INVITE with a bad offer leaves the call as it was.
    let call = Call { n: 45 };
    let (tag, _, _) = invite(&mut u, &call, 0);
    let bad = with_body(call.within("INVITE", &tag, 2), "application/sdp", "v=0\r\n");
    let out = u.handle(&bad, uac(), 10);
    assert_eq!(codes(&out.replies), [488]);
    assert_eq!(u.dialogs().len(), 1);
}

#[test]
fn a_required_extension_gets_420_naming_it() {
    let mut u = uas(8);
    let call = Call { n: 14 };
    let invite = String::from_utf8(call.invite()).unwrap().replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nRequire: 100rel\r\n",
    );
    let out = u.handle(invite.as_bytes(), uac(), 0);
    assert_eq!(codes(&out.replies), [420]);
    assert_eq!(
        parse_reply(&out.replies[0]).header("Unsupported"),
        Some("100rel")
    );
    assert!(out.sync.is_empty());
    assert_eq!(u.dialogs().len(), 0, "no call is set up");
    // A method it does not know is refused as such, whatever it requires.
    let frob = String::from_utf8(request("FROB", "z9hG4bKf", "f1", None)).unwrap();
    let frob = frob.replace("Content-Length", "Require: 100rel\r\nContent-Length");
    assert_eq!(codes(&u.handle(frob.as_bytes(), uac(), 0).replies), [501]);
    // The client's ACK for the 420 is taken by its transaction.
    let tag = to_tag(&out.replies[0]).unwrap();
    assert!(u.handle(&call.ack(&tag), uac(), 10).replies.is_empty());
}

#[test]
fn reinvite_refreshes_and_stale_cseq_is_500() {
    let mut u = uas(6);
    let call = Call { n: 12 };
    let (tag, _, _) = invite(&mut u, &call, 0);
    u.handle(&call.ack(&tag), uac(), 10);
    let out = u.handle(&call.reinvite(&tag, 3), uac(), 20);
    assert_eq!(codes(&out.replies), [200]);
    assert_eq!(to_tag(&out.replies[0]).as_deref(), Some(tag.as_str()));
    assert_eq!(out.replies[0].after_sync, Some(u.sync_issued()));
    assert!(
        matches!(&out.sync[..], [SyncOp::Put { value, .. }] if value["remote_cseq"] == 3 && value["confirmed"] == false)
    );
    // A BYE with a lower CSeq than seen is out of order.
    let out = u.handle(&call.bye(&tag), uac(), 30); // CSeq 2 < 3
    assert_eq!(codes(&out.replies), [500]);
    assert_eq!(u.dialogs().len(), 1);
    // re-INVITE for an unknown dialog: 481.
    let out = u.handle(&call.reinvite("other", 4), uac(), 40);
    assert_eq!(codes(&out.replies), [481]);
}

#[test]
fn malformed_requests_get_400_or_are_dropped() {
    let mut u = uas(7);
    // Body shorter than Content-Length, but the headers are there: 400.
    let mut data = Call { n: 1 }.invite();
    data.truncate(data.len() - 10);
    let out = u.handle(&data, uac(), 0);
    assert_eq!(codes(&out.replies), [400]);
    let m = parse_reply(&out.replies[0]);
    assert!(
        m.header("Warning").unwrap().contains("Content-Length"),
        "{:?}",
        m.header("Warning")
    );
    assert_eq!(m.call_id().unwrap(), "1-4242@127.0.0.1");
    assert!(m.to_tag().unwrap().is_some());
    assert!(out.sync.is_empty());
    // No Call-ID: cannot be answered, dropped.
    let no_cid = String::from_utf8(Call { n: 2 }.invite())
        .unwrap()
        .replace("Call-ID: 2-4242@127.0.0.1\r\n", "");
    assert!(u.handle(no_cid.as_bytes(), uac(), 0).replies.is_empty());
    // Junk and a malformed ACK: dropped. Keep-alives: counted apart.
    assert!(u
        .handle(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", uac(), 0)
        .replies
        .is_empty());
    let mut ack = Call { n: 3 }.ack("t");
    ack.truncate(ack.len() - 2); // no empty line
    assert!(u.handle(&ack, uac(), 0).replies.is_empty());
    assert!(u.handle(b"\r\n\r\n", uac(), 0).replies.is_empty());
    // Responses are ignored.
    let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@h>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: r\r\nCSeq: 1 INVITE\r\n\r\n";
    assert!(u.handle(resp, uac(), 0).replies.is_empty());
    let c = u.counters();
    assert_eq!(
        (
            c.bad_requests_sent,
            c.malformed_dropped,
            c.keepalives,
            c.responses_ignored
        ),
        (1, 3, 1, 1)
    );
    assert_eq!(c.responses.get(&400), Some(&1));
    assert_eq!(u.dialogs().len(), 0);
}

#[test]
fn via_rport_and_received_are_filled() {
    let mut u = uas(8);
    let data = String::from_utf8(request("OPTIONS", "z9hG4bKv", "v1", None))
        .unwrap()
        .replace(
            "127.0.0.1:5061;branch=z9hG4bKv",
            "10.9.9.9:5999;rport;branch=z9hG4bKv",
        );
    let from = "192.0.2.7:40000".parse().unwrap();
    let out = u.handle(data.as_bytes(), from, 0);
    let r = &out.replies[0];
    assert_eq!(r.to, from, "answered where the request came from");
    let via = parse_reply(r).top_via().unwrap();
    assert_eq!(via.param("rport"), Some(Some("40000")));
    assert_eq!(via.param("received"), Some(Some("192.0.2.7")));
    assert_eq!(via.branch(), Some("z9hG4bKv"));
    assert_eq!(code(r), 200);
}

#[test]
fn capacity_limit_gives_503() {
    let mut cfg = duplex_sip::UasConfig::new(common::server_addr(), 9);
    cfg.max_dialogs = 2;
    let mut u = Uas::new(cfg);
    invite(&mut u, &Call { n: 1 }, 0);
    invite(&mut u, &Call { n: 2 }, 0);
    let out = u.handle(&Call { n: 3 }.invite(), uac(), 0);
    assert_eq!(codes(&out.replies), [503]);
    assert!(out.sync.is_empty());
}

#[test]
fn transaction_limit_gives_unkept_503() {
    let mut cfg = duplex_sip::UasConfig::new(common::server_addr(), 10);
    cfg.max_transactions = 3;
    let mut u = Uas::new(cfg);
    for i in 0..3 {
        let out = u.handle(
            &request("OPTIONS", &format!("z9hG4bK{i}"), "t", None),
            uac(),
            0,
        );
        assert_eq!(codes(&out.replies), [200]);
    }
    let out = u.handle(&Call { n: 1 }.invite(), uac(), 0);
    assert_eq!(codes(&out.replies), [503]);
    assert_eq!((u.transactions().len(), u.dialogs().len()), (3, 0));
    // Once they expire, service resumes.
    u.tick(LINGER);
    assert_eq!(
        codes(&u.handle(&Call { n: 1 }.invite(), uac(), LINGER).replies),
        [100, 180, 200]
    );
}

// ---- Replication: the state of one Uas carried to another ----

#[test]
fn switchover_bye_on_the_other_vm() {
    let (mut act, mut sby) = (uas(100), uas(200));
    let call = Call { n: 21 };
    let (tag, ok, ops) = invite(&mut act, &call, 0);
    let out = act.handle(&call.ack(&tag), uac(), 50);
    let confirmed = out.sync.clone();
    for op in ops.into_iter().chain(out.sync) {
        sby.apply(op).unwrap();
    }
    assert_eq!(sby.dialogs().len(), 1);
    // A standby that got only the final state (a snapshot): no transaction,
    // yet a late INVITE copy gets the same 200 from the dialog.
    let mut late = uas(300);
    for op in confirmed {
        late.apply(op).unwrap();
    }
    assert!(late.transactions().is_empty());
    let out = late.handle(&call.invite(), uac(), 59_000);
    assert_eq!(out.replies.len(), 1);
    assert_eq!(out.replies[0].data, ok);
    assert!(out.sync.is_empty());
    // Switchover: the BYE reaches the former standby.
    let out = sby.handle(&call.bye(&tag), uac(), 60_000);
    assert_eq!(codes(&out.replies), [200]);
    let m = parse_reply(&out.replies[0]);
    assert_eq!(
        m.to_tag().unwrap().as_deref(),
        Some(tag.as_str()),
        "same local tag"
    );
    assert_eq!(
        m.from_tag().unwrap().as_deref(),
        Some(call.caller_tag().as_str()),
        "same remote tag"
    );
    assert_eq!(m.call_id().unwrap(), call.call_id());
    assert_eq!(
        out.sync.iter().map(SyncOp::key).collect::<Vec<_>>(),
        [format!(
            "dialog/{}/{tag}/{}",
            call.call_id(),
            call.caller_tag()
        )]
    );
    assert_eq!(sby.dialogs().len(), 0);
}

#[test]
fn switchover_retransmitted_invite_gets_the_identical_200_then_ack_and_bye() {
    let (mut act, mut sby) = (uas(101), uas(201));
    let call = Call { n: 22 };
    let (tag, ok, ops) = invite(&mut act, &call, 0);
    // The ACT dies right after the Put was acknowledged (200 maybe lost).
    for op in ops {
        sby.apply(op).unwrap();
    }
    let out = sby.handle(&call.invite(), uac(), 40_000);
    assert_eq!(out.replies.len(), 1);
    assert_eq!(out.replies[0].data, ok, "byte-identical 200 OK");
    assert_eq!(out.replies[0].after_sync, None, "already replicated");
    assert!(out.sync.is_empty(), "no new dialog");
    assert_eq!(sby.counters().retransmissions_absorbed, 1);
    // The ACK confirms it there (and is replicated onwards).
    let out = sby.handle(&call.ack(&tag), uac(), 40_010);
    assert!(out.replies.is_empty());
    assert!(matches!(&out.sync[..], [SyncOp::Put { value, .. }] if value["confirmed"] == true));
    let out = sby.handle(&call.bye(&tag), uac(), 41_000);
    assert_eq!(codes(&out.replies), [200]);
    assert_eq!(to_tag(&out.replies[0]).as_deref(), Some(tag.as_str()));
}

#[test]
fn standby_retransmits_an_unacked_2xx_until_the_confirming_put() {
    let (mut act, mut sby) = (uas(102), uas(202));
    let call = Call { n: 23 };
    let (tag, ok, ops) = invite(&mut act, &call, 0);
    sby.tick(1_000);
    for op in ops {
        sby.apply(op).unwrap();
    }
    // The new ACT keeps the 2xx alive (a UAC past 1xx does not retransmit the INVITE).
    let out = sby.tick(1_500);
    assert_eq!(out.replies.len(), 1);
    assert_eq!(
        (out.replies[0].data.clone(), out.replies[0].to),
        (ok, uac())
    );
    let ack_put = act.handle(&call.ack(&tag), uac(), 1_600).sync;
    for op in ack_put {
        sby.apply(op).unwrap();
    }
    assert!(sby.tick(10_000).replies.is_empty());
    assert!(
        sby.tick(1_000 + LINGER).sync.is_empty(),
        "no ACK timeout for a confirmed dialog"
    );
    assert_eq!(sby.dialogs().len(), 1);
}

#[test]
fn del_event_ends_the_dialog_on_the_standby() {
    let (mut act, mut sby) = (uas(103), uas(203));
    let call = Call { n: 24 };
    let (tag, _, ops) = invite(&mut act, &call, 0);
    let ack = act.handle(&call.ack(&tag), uac(), 5).sync;
    let bye = act.handle(&call.bye(&tag), uac(), 10).sync;
    for op in ops.into_iter().chain(ack).chain(bye) {
        sby.apply(op).unwrap();
    }
    assert_eq!(sby.dialogs().len(), 0);
    // The ACT's 200 to that BYE may have been lost with the handover (held
    // for the Del's replication while the address moved): a retransmitted
    // BYE reaching this VM as the new ACT gets 200 again, not 481...
    let out = sby.handle(&call.bye(&tag), uac(), 20);
    assert_eq!(codes(&out.replies), [200]);
    assert_eq!(sby.counters().bye_after_end, 1);
    assert_eq!(sby.dialogs().len(), 0);
    // ...until the tombstone expires; a BYE of a dialog never seen is 481.
    sby.tick(20 + LINGER + 1);
    let other = Call { n: 25 };
    let out = sby.handle(&other.bye("nosuchtag"), uac(), 20 + LINGER + 2);
    assert_eq!(codes(&out.replies), [481]);
    let out = sby.handle(&call.bye(&tag), uac(), 20 + LINGER + 3);
    assert_eq!(codes(&out.replies), [481], "tombstone outlived LINGER");
}

#[test]
fn load_full_dump_and_resync() {
    let mut act = uas(104);
    let mut dump = serde_json::Map::new();
    for n in 30..35 {
        let (_, _, ops) = invite(&mut act, &Call { n }, 0);
        for op in ops {
            if let SyncOp::Put { key, value } = op {
                dump.insert(key, value);
            }
        }
    }
    dump.insert(
        "dialog/bad/x/y".into(),
        serde_json::json!({"nonsense": true}),
    );
    dump.insert("other/key".into(), serde_json::json!(1));
    let mut fresh = uas(204);
    let report = fresh.load(dump.clone());
    assert_eq!((report.loaded, report.rejected), (5, 2));
    assert_eq!(fresh.dialogs().len(), 5);
    // A dump lacking two local dialogs: they are put again.
    let present: HashSet<String> = dump.keys().take(3).cloned().collect();
    let out = act.resync(&present);
    assert_eq!(
        out.sync.len(),
        5 - present
            .iter()
            .filter(|k| k.starts_with("dialog/") && !k.contains("/bad/"))
            .count()
    );
    assert!(out
        .sync
        .iter()
        .all(|op| matches!(op, SyncOp::Put { key, .. } if !present.contains(key))));
}

#[test]
fn apply_refuses_what_is_not_a_dialog() {
    let mut u = uas(105);
    assert!(u
        .apply(SyncOp::Put {
            key: "dialog/a/b/c".into(),
            value: serde_json::json!("x")
        })
        .is_err());
    assert!(u
        .apply(SyncOp::Put {
            key: "elsewhere".into(),
            value: serde_json::json!({})
        })
        .is_err());
    assert!(u.apply(SyncOp::del("dialog/none/x/y")).is_ok());
    assert_eq!(u.counters().sync_rejected, 2);
}

#[test]
fn a_dialog_whose_put_was_refused_is_forgotten() {
    let mut u = uas(7);
    let call = Call { n: 7 };
    let (_, _, ops) = invite(&mut u, &call, 0);
    let key = match &ops[..] {
        [SyncOp::Put { key, .. }] => key.clone(),
        other => panic!("{other:?}"),
    };
    u.forget(&key, SyncSeq(1));
    assert_eq!(u.dialogs().len(), 0);
    assert_eq!(u.counters().unstored_forgotten, 1);
    for now in (0..=LINGER).step_by(250) {
        let out = u.tick(now);
        assert!(out.replies.is_empty(), "no 2xx retransmission at {now}");
        assert!(out.sync.is_empty(), "no Del for a dialog never stored");
    }
    u.forget(&key, SyncSeq(1));
    assert_eq!(u.counters().unstored_forgotten, 1, "unknown key: no-op");
}

#[test]
fn an_invite_answered_anew_before_the_old_acts_put_arrives_keeps_one_dialog() {
    let (mut old, mut new) = (uas(11), uas(211));
    let call = Call { n: 11 };
    let (_, _, ops) = invite(&mut old, &call, 0);
    let [put @ SyncOp::Put { key, .. }] = &ops[..] else {
        panic!("{ops:?}")
    };
    // The old ACT's Put is refused at the handover: nothing was sent.
    old.forget(key, SyncSeq(1));
    // The client's retransmission reaches the new ACT first.
    let (own_tag, own_ok, _) = invite(&mut new, &call, 500);
    assert_ne!(
        key,
        &format!("dialog/{}/{own_tag}/{}", call.call_id(), call.caller_tag())
    );
    // Then the old ACT's Put is handed on: dropped, its record deleted.
    let out = new.take_over(put.clone()).unwrap();
    assert!(
        out.replies.is_empty(),
        "no second answer: {:?}",
        out.replies
    );
    assert!(matches!(&out.sync[..], [SyncOp::Del { key: k, .. }] if k == key));
    assert_eq!(new.counters().taken_over_superseded, 1);
    assert_eq!(new.dialogs().len(), 1);
    // Further retransmissions get this VM's own 200.
    let again = new.handle(&call.invite(), uac(), 900);
    assert_eq!(again.replies.len(), 1);
    assert_eq!(again.replies[0].data, own_ok);
}

/// Seen in the lab (1 call of 7,500 across an S1 switchover): the old ACT
/// answered an INVITE whose write it could not store, the new ACT answered
/// the retransmission anew and superseded the old dialog, and then the old
/// ACT's 2xx, handed on, went out from the new ACT too: the client took
/// its tag and its BYE got 481. That 2xx is not sent; others are.
#[test]
fn a_handed_on_2xx_for_an_invite_answered_anew_is_not_sent() {
    let (mut old, mut new) = (uas(12), uas(212));
    let call = Call { n: 12 };
    let (old_tag, old_ok, _) = invite(&mut old, &call, 0);
    let (own_tag, own_ok, _) = invite(&mut new, &call, 500);
    assert_ne!(old_tag, own_tag);
    assert!(!new.sends_handed_on(&old_ok), "the old ACT's 2xx went out");
    assert_eq!(new.counters().handed_on_superseded, 1);
    assert!(
        new.sends_handed_on(&own_ok),
        "a 2xx of the dialog held here"
    );
    // A VM that holds no dialog for that INVITE sends it (the old ACT's
    // dialog reaches it replicated or taken over).
    assert!(uas(13).sends_handed_on(&old_ok));
    // Not a 2xx to an INVITE: sent as it came.
    let ack = new.handle(&call.ack(&own_tag), uac(), 600);
    assert!(ack.replies.is_empty());
    let bye = new.handle(&call.bye(&own_tag), uac(), 700);
    assert!(new.sends_handed_on(&bye.replies[0].data));
    assert!(new.sends_handed_on(b"not SIP at all"));
    assert_eq!(new.counters().handed_on_superseded, 1);
}

#[test]
fn a_dialog_taken_over_from_the_old_act_is_answered_at_once() {
    let (mut old, mut new) = (uas(8), uas(208));
    let call = Call { n: 8 };
    let (tag, ok, ops) = invite(&mut old, &call, 0);
    let [put @ SyncOp::Put { key, .. }] = &ops[..] else {
        panic!("{ops:?}")
    };
    // The old ACT's Put was refused: it forgets; the new ACT took it.
    old.forget(key, SyncSeq(1));
    new.tick(1_000);
    let out = new.take_over(put.clone()).unwrap();
    assert_eq!(out.replies.len(), 1, "the 2xx goes out now");
    assert_eq!(
        (out.replies[0].data.clone(), out.replies[0].to),
        (ok, uac())
    );
    assert_eq!(out.replies[0].after_sync, None, "already replicated");
    assert!(out.sync.is_empty());
    assert_eq!(new.counters().taken_over_answered, 1);
    // And again at T1 until the ACK, which confirms it.
    assert_eq!(new.tick(1_500).replies.len(), 1);
    let out = new.handle(&call.ack(&tag), uac(), 1_600);
    assert!(matches!(&out.sync[..], [SyncOp::Put { value, .. }] if value["confirmed"] == true));
    assert!(new.tick(3_000).replies.is_empty(), "ACKed: no more 2xx");
    // A confirmed dialog or a Del without a reply owes the client nothing now.
    let confirmed = out.sync[0].clone();
    assert!(uas(9).take_over(confirmed).unwrap().replies.is_empty());
    assert!(uas(10)
        .take_over(SyncOp::del(key.clone()))
        .unwrap()
        .replies
        .is_empty());

    // The old ACT took a BYE just before the handover: its Del, handed
    // on, brings the 200 OK, which the new ACT sends at once.
    let (mut old, mut new) = (uas(11), uas(211));
    let call = Call { n: 11 };
    let (tag, _, ops) = invite(&mut old, &call, 0);
    for op in ops {
        new.apply(op).unwrap();
    }
    let out = old.handle(&call.ack(&tag), uac(), 20);
    for op in out.sync {
        new.apply(op).unwrap();
    }
    let out = old.handle(&call.bye(&tag), uac(), 1_000);
    let [del @ SyncOp::Del { .. }] = &out.sync[..] else {
        panic!("{:?}", out.sync)
    };
    let taken = new.take_over(del.clone()).unwrap();
    assert_eq!(codes(&taken.replies), [200]);
    assert_eq!(taken.replies[0].data, out.replies[0].data, "the very 200");
    assert_eq!(taken.replies[0].to, uac());
    assert_eq!(taken.replies[0].after_sync, None, "already replicated");
    assert_eq!(new.dialogs().len(), 0);
    assert_eq!(new.counters().taken_over_answered, 1);
    // Its retransmission is answered 200 too, from the ended dialog.
    let again = new.handle(&call.bye(&tag), uac(), 1_500);
    assert_eq!(codes(&again.replies), [200]);
}

#[test]
fn a_replicated_dialog_awaiting_its_ack_is_retransmitted_t1_after_it_came() {
    let (mut act, mut sby) = (uas(12), uas(212));
    let call = Call { n: 12 };
    sby.tick(0);
    // The standby's last tick was long ago when the dialog comes.
    let (_, _, ops) = invite(&mut act, &call, 10_000);
    for op in ops {
        sby.apply_at(op, 10_000).unwrap();
    }
    assert!(
        sby.tick(10_100).replies.is_empty(),
        "not due at once: its ACK is on its way"
    );
    assert_eq!(codes(&sby.tick(10_500).replies), [200]);
}

/// The SBY's service (re)connects: a dialog replicated to it just before
/// the middleware's dump, which is older, is put again (refused: the SBY
/// may not write); that refusal must not drop it, nor a refused
/// confirmation the dialog it confirms.
#[test]
fn a_refused_put_again_keeps_the_dialog() {
    let mut act = uas(11);
    let call = Call { n: 11 };
    let (tag, _, ops) = invite(&mut act, &call, 0);
    let mut sby = uas(211);
    for op in ops {
        sby.apply(op).unwrap();
    }
    let out = sby.resync(&HashSet::new());
    assert_eq!(out.sync.len(), 1, "put again");
    sby.forget(out.sync[0].key(), SyncSeq(1));
    assert_eq!(sby.dialogs().len(), 1, "the replicated dialog stays");
    // On the ACT: the ACK's confirmation refused (a handover overtook it).
    let out = act.handle(&call.ack(&tag), uac(), 100);
    let [SyncOp::Put { key, .. }] = &out.sync[..] else {
        panic!("{:?}", out.sync)
    };
    act.forget(key, SyncSeq(2));
    assert_eq!(
        act.dialogs().len(),
        1,
        "a confirmation refused drops nothing"
    );
    assert_eq!(act.counters().unstored_forgotten, 0);
}
