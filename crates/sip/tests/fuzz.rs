//! Property-style: thousands of random and mutated datagrams through the
//! parser and the core. Nothing may panic, every datagram is accounted for,
//! every reply is a well-formed SIP response to its sender.

mod common;

use common::{request, uac, uas, Call};
use duplex_sip::message::{self, StartLine};
use duplex_sip::rng::SplitMix64;

fn seeds(n: u32) -> Vec<Vec<u8>> {
    let c = Call { n };
    vec![
        c.invite(),
        c.ack("abc"),
        c.bye("abc"),
        c.reinvite("abc", 3),
        request("OPTIONS", "z9hG4bKo", "o@h", None),
        request("CANCEL", "z9hG4bK-4242-1-0", "1-4242@127.0.0.1", None),
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:x@h>;tag=1\r\nt: <sip:a@b>\r\ni: r\r\nCSeq: 1 INVITE\r\n\r\n"
            .to_vec(),
    ]
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b"\"",
    b" ",
    b"\t",
    b"tag=",
    b"branch=",
    b"z9hG4bK",
    b"SIP/2.0",
    b"Content-Length: 99999\r\n",
    b"l: 3\r\n",
    b"\x00",
    b"\xff",
    b"\xc3\x28",
    b"CSeq: 1 BYE\r\n",
    b"Via: SIP/2.0/UDP [::1]:0\r\n",
    b"\r\n\r\n",
];

fn mutate(rng: &mut SplitMix64, mut d: Vec<u8>) -> Vec<u8> {
    let rounds = 1 + rng.below(6);
    for _ in 0..rounds {
        let len = d.len() as u64;
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len) as usize;
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len) as usize;
                d[i] = rng.next_u64() as u8;
            }
            2 => d.truncate(rng.below(len + 1) as usize),
            3 => {
                let i = rng.below(len + 1) as usize;
                let t = TOKENS[rng.below(TOKENS.len() as u64) as usize];
                d.splice(i..i, t.iter().copied());
            }
            4 if len > 0 => {
                // Drop a range.
                let a = rng.below(len) as usize;
                let b = (a + 1 + rng.below(64) as usize).min(d.len());
                d.drain(a..b);
            }
            5 => {
                // Duplicate a line.
                let text = String::from_utf8_lossy(&d).into_owned();
                let lines: Vec<&str> = text.split("\r\n").collect();
                let i = rng.below(lines.len() as u64) as usize;
                let mut out = lines.clone();
                out.insert(i, lines[i]);
                d = out.join("\r\n").into_bytes();
            }
            6 => {
                // CRLF -> LF everywhere.
                d = String::from_utf8_lossy(&d)
                    .replace("\r\n", "\n")
                    .into_bytes();
            }
            7 => {
                // Random bytes appended.
                for _ in 0..rng.below(40) {
                    d.push(rng.next_u64() as u8);
                }
            }
            _ => {
                // A long run of one byte.
                let i = rng.below(len + 1) as usize;
                let n = rng.below(9000) as usize;
                d.splice(i..i, vec![b'a'; n]);
            }
        }
    }
    d
}

fn random_bytes(rng: &mut SplitMix64) -> Vec<u8> {
    let n = rng.below(1500) as usize;
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

#[test]
fn random_and_mutated_datagrams_never_panic() {
    let mut rng = SplitMix64::new(0x5EED_0FD0_u64);
    let mut u = uas(42);
    let (mut n, mut parsed, mut replies) = (0u64, 0u64, 0u64);
    for i in 0..6000u64 {
        let d = match rng.below(4) {
            0 => random_bytes(&mut rng),
            _ => {
                let seeds = seeds(rng.below(40) as u32);
                let s = seeds[rng.below(seeds.len() as u64) as usize].clone();
                // Some pass untouched: real calls happen in between.
                match rng.below(5) {
                    0 => s,
                    _ => mutate(&mut rng, s),
                }
            }
        };
        // The codec alone.
        if message::parse(&d).is_ok() {
            parsed += 1;
        }
        let _ = message::salvage(&d);
        // The core.
        let from = uac();
        let out = u.handle(&d, from, i * 10);
        n += 1;
        for r in &out.replies {
            replies += 1;
            assert_eq!(r.to, from);
            assert!(
                r.data.starts_with(b"SIP/2.0 "),
                "not a response: {:?}",
                String::from_utf8_lossy(&r.data)
            );
            assert_eq!(declared_body(&r.data), Some(body_len(&r.data)));
            // Answers to parseable requests parse back.
            if message::parse(&d).is_ok() {
                let m = message::parse(&r.data).unwrap_or_else(|e| {
                    panic!(
                        "reply {e}: {}\nto {}",
                        String::from_utf8_lossy(&r.data),
                        String::from_utf8_lossy(&d)
                    )
                });
                assert!(matches!(m.start, StartLine::Response { .. }));
            }
        }
        if i % 50 == 0 {
            let _ = u.tick(i * 10);
        }
    }
    // Every datagram is accounted for exactly once.
    let c = u.counters();
    let requests: u64 = c.requests.values().sum();
    assert_eq!(
        requests + c.malformed_dropped + c.bad_requests_sent + c.keepalives + c.responses_ignored,
        n,
        "{c:?}"
    );
    // The corpus exercised all paths.
    assert!(parsed > 300, "only {parsed} mutated datagrams parsed");
    assert!(
        c.malformed_dropped > 1000 && c.bad_requests_sent > 100,
        "{c:?}"
    );
    assert!(replies > 500);
    eprintln!("{n} datagrams, {parsed} parsed, {replies} replies, counters {c:?}");
}

#[test]
fn every_truncation_of_a_valid_invite_is_handled() {
    let inv = Call { n: 5 }.invite();
    let mut u = uas(43);
    for cut in 0..=inv.len() {
        let r = message::parse(&inv[..cut]);
        // Cut inside the SDP: the declared Content-Length is too large.
        if cut < inv.len() {
            assert!(r.is_err(), "cut at {cut} parsed");
        } else {
            assert!(r.is_ok());
        }
        let _ = u.handle(&inv[..cut], uac(), cut as u64);
    }
    assert_eq!(u.dialogs().len(), 1, "only the whole INVITE makes a dialog");
}

/// The Content-Length a response declares (its last header).
fn declared_body(data: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next()?;
    let last = head.lines().last()?;
    last.strip_prefix("Content-Length: ")?.parse().ok()
}

/// Bytes after a response's header section.
fn body_len(data: &[u8]) -> usize {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(data.len(), |i| i + 4);
    data.len() - end
}
