//! The SIP codec on valid messages and on a corpus of malformed ones.

mod common;

use common::{Call, SDP};
use duplex_sip::message::{parse, salvage, Method, ParseError, StartLine, MAX_HEADERS};

#[test]
fn sipp_uac_invite_with_sdp() {
    let data = Call { n: 1 }.invite();
    let m = parse(&data).unwrap();
    assert_eq!(
        m.start,
        StartLine::Request {
            method: Method::Invite,
            uri: "sip:service@127.0.0.1:5070".into()
        }
    );
    let names: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Contact",
            "Max-Forwards",
            "Subject",
            "Content-Type",
            "Content-Length"
        ]
    );
    assert_eq!(m.body, SDP.as_bytes());
    assert_eq!(m.discarded, 0);
    assert_eq!(m.content_length().unwrap(), Some(SDP.len()));
    assert_eq!(m.branch().unwrap().as_deref(), Some("z9hG4bK-4242-1-0"));
    assert_eq!(m.top_via().unwrap().sent_by(), "127.0.0.1:5061");
    assert_eq!(m.call_id().unwrap(), "1-4242@127.0.0.1");
    assert_eq!(m.from_tag().unwrap().as_deref(), Some("4242SIPpTag001"));
    assert_eq!(m.to_tag().unwrap(), None);
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (1, Method::Invite));
    assert_eq!(m.header("content-type"), Some("application/sdp"));
    // Serialize and parse again: same message.
    assert_eq!(parse(&m.to_bytes()).unwrap(), m);
}

#[test]
fn compact_headers() {
    let body = "v=0\r\n";
    let data = format!(
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
         v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds10\r\n\
         f: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
         t: Bob <sip:bob@biloxi.example.com>\r\n\
         i: a84b4c76e66710@pc33.atlanta.example.com\r\n\
         CSeq: 314159 INVITE\r\n\
         m: <sip:alice@pc33.atlanta.example.com>\r\n\
         c: application/sdp\r\n\
         k: 100rel\r\n\
         s: compact\r\n\
         l: {}\r\n\r\n{body}",
        body.len()
    );
    let m = parse(data.as_bytes()).unwrap();
    assert_eq!(
        m.call_id().unwrap(),
        "a84b4c76e66710@pc33.atlanta.example.com"
    );
    assert_eq!(m.from_tag().unwrap().as_deref(), Some("1928301774"));
    assert_eq!(m.branch().unwrap().as_deref(), Some("z9hG4bKnashds10"));
    assert_eq!(
        m.header("Contact"),
        Some("<sip:alice@pc33.atlanta.example.com>")
    );
    assert_eq!(m.header("Content-Type"), Some("application/sdp"));
    assert_eq!(m.header("Supported"), Some("100rel"));
    assert_eq!(m.header("Subject"), Some("compact"));
    assert_eq!(m.body, body.as_bytes());
    // Names are kept as received.
    assert_eq!(m.headers[0].name, "v");
}

#[test]
fn multiple_vias_in_order() {
    let data = "BYE sip:bob@192.0.2.4 SIP/2.0\r\n\
        Via: SIP/2.0/UDP proxy2.example.com:5062;branch=z9hG4bK-top;received=192.0.2.3\r\n\
        v: SIP/2.0/UDP proxy1.example.com;branch=z9hG4bK-mid , SIP/2.0/UDP pc.example.com:5060;branch=z9hG4bK-bottom\r\n\
        From: <sip:a@example.com>;tag=a\r\n\
        To: <sip:b@example.com>;tag=b\r\n\
        Call-ID: c@x\r\n\
        CSeq: 2 BYE\r\n\
        Content-Length: 0\r\n\r\n";
    let m = parse(data.as_bytes()).unwrap();
    let vias = m.vias();
    assert_eq!(vias.len(), 3);
    assert!(vias[0].contains("branch=z9hG4bK-top"));
    assert!(vias[1].contains("branch=z9hG4bK-mid"));
    assert!(vias[2].contains("branch=z9hG4bK-bottom"));
    let top = m.top_via().unwrap();
    assert_eq!(
        (top.host.as_str(), top.port, top.branch()),
        ("proxy2.example.com", Some(5062), Some("z9hG4bK-top"))
    );
    assert_eq!(m.to_tag().unwrap().as_deref(), Some("b"));
}

#[test]
fn bare_lf_folding_and_leading_crlf() {
    let body = "v=0\nm=audio 6000 RTP/AVP 0\n";
    let data = format!(
        "\r\n\r\nINVITE sip:a@b SIP/2.0\n\
         Via: SIP/2.0/UDP h;branch=z9hG4bK1\n\
         From: <sip:x@h>;tag=1\n\
         To: <sip:a@b>\n\
         Subject: first part\n \tsecond part\n\
         Call-ID: lf@h\n\
         CSeq: 1 INVITE\n\
         Content-Length: {}\n\n{body}",
        body.len()
    );
    let m = parse(data.as_bytes()).unwrap();
    assert_eq!(m.header("Subject"), Some("first part second part"));
    assert_eq!(m.body, body.as_bytes());
    assert_eq!(m.call_id().unwrap(), "lf@h");
}

#[test]
fn response_and_missing_content_length() {
    let data =
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@h>;tag=1\r\n\
                To: <sip:a@b>;tag=2\r\nCall-ID: r@h\r\nCSeq: 1 INVITE\r\n\r\nrest";
    let m = parse(data.as_bytes()).unwrap();
    assert_eq!(
        m.start,
        StartLine::Response {
            code: 180,
            reason: "Ringing".into()
        }
    );
    assert_eq!(m.method(), None);
    // Without Content-Length over UDP the body is the rest of the datagram.
    assert_eq!(m.body, b"rest");
}

#[test]
fn content_length_smaller_than_body_discards_the_rest() {
    // RFC 3261 §18.3: over UDP, bytes beyond Content-Length MUST be discarded.
    let data = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@h>;tag=1\r\n\
                To: <sip:a@b>\r\nCall-ID: o@h\r\nCSeq: 1 OPTIONS\r\nContent-Length: 3\r\n\r\nabcdefgh";
    let m = parse(data.as_bytes()).unwrap();
    assert_eq!(m.body, b"abc");
    assert_eq!(m.discarded, 5);
}

fn base(first: &str, extra: &str) -> String {
    format!(
        "{first}\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK77\r\nFrom: <sip:x@h>;tag=1\r\n\
         To: <sip:a@b>\r\nCall-ID: m@h\r\nCSeq: 1 INVITE\r\n{extra}"
    )
}

fn bad_header(header: &'static str) -> impl Fn(&ParseError) -> bool {
    move |e| matches!(e, ParseError::BadHeader { header: h, .. } if *h == header)
}

#[test]
fn malformed_corpus_gives_the_right_errors() {
    let inv = "INVITE sip:a@b SIP/2.0";
    let huge = format!("Subject: {}\r\n\r\n", "x".repeat(10_000));
    let many: String = (0..MAX_HEADERS + 5)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect::<String>()
        + "\r\n";
    let mut junk = vec![0u8; 300];
    let mut x: u32 = 12345;
    for b in junk.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *b = (x >> 16) as u8 | 0x80;
    }
    type Check = Box<dyn Fn(&ParseError) -> bool>;
    let corpus: Vec<(&str, Vec<u8>, Check)> = vec![
        ("empty", b"".to_vec(), Box::new(|e| *e == ParseError::Empty)),
        ("only CRLF", b"\r\n\r\n".to_vec(), Box::new(|e| *e == ParseError::Empty)),
        ("missing final CRLF", base(inv, "").into_bytes(), Box::new(|e| *e == ParseError::NoEmptyLine)),
        ("last header unterminated", base(inv, "Max-Forwards: 70").into_bytes(), Box::new(|e| *e == ParseError::NoEmptyLine)),
        ("no line end at all", inv.as_bytes().to_vec(), Box::new(|e| *e == ParseError::NoEmptyLine)),
        ("status code too short", base("SIP/2.0 20 OK", "\r\n").into_bytes(), Box::new(|e| matches!(e, ParseError::BadStatusLine(_)))),
        ("status code not a number", base("SIP/2.0 abc OK", "\r\n").into_bytes(), Box::new(|e| matches!(e, ParseError::BadStatusLine(_)))),
        ("status code out of range", base("SIP/2.0 700 Huh", "\r\n").into_bytes(), Box::new(|e| matches!(e, ParseError::BadStatusLine(_)))),
        ("bad version", base("INVITE sip:a@b SIP/3.0", "\r\n").into_bytes(), Box::new(|e| matches!(e, ParseError::BadVersion(_)))),
        ("request line too short", base("INVITE sip:a@b", "\r\n").into_bytes(), Box::new(|e| matches!(e, ParseError::BadRequestLine(_)))),
        ("Request-URI without scheme", base("INVITE nowhere SIP/2.0", "\r\n").into_bytes(), Box::new(|e| matches!(e, ParseError::BadRequestLine(_)))),
        (
            "no Call-ID",
            format!("{inv}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@h>;tag=1\r\nTo: <sip:a@b>\r\nCSeq: 1 INVITE\r\n\r\n").into_bytes(),
            Box::new(|e| *e == ParseError::MissingHeader("Call-ID")),
        ),
        (
            "no Via",
            format!("{inv}\r\nFrom: <sip:x@h>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n").into_bytes(),
            Box::new(|e| *e == ParseError::MissingHeader("Via")),
        ),
        (
            "CSeq without number",
            format!("{inv}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@h>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: INVITE\r\n\r\n").into_bytes(),
            Box::new(bad_header("CSeq")),
        ),
        (
            "CSeq number too large",
            format!("{inv}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@h>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 4294967296 INVITE\r\n\r\n").into_bytes(),
            Box::new(bad_header("CSeq")),
        ),
        (
            "CSeq method mismatch",
            b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@h>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n".to_vec(),
            Box::new(|e| matches!(e, ParseError::CSeqMethodMismatch { .. })),
        ),
        (
            "Content-Length larger than body",
            base(inv, "Content-Length: 500\r\n\r\nv=0\r\n").into_bytes(),
            Box::new(|e| *e == ParseError::BodyTruncated { declared: 500, actual: 5 }),
        ),
        ("Content-Length not a number", base(inv, "Content-Length: ten\r\n\r\n").into_bytes(), Box::new(bad_header("Content-Length"))),
        ("Content-Length negative", base(inv, "Content-Length: -1\r\n\r\n").into_bytes(), Box::new(bad_header("Content-Length"))),
        ("binary junk", junk, Box::new(|e| *e == ParseError::NotText { line: 1 })),
        ("huge header", base(inv, &huge).into_bytes(), Box::new(|e| matches!(e, ParseError::HeaderTooLong { line: 7, len } if *len > 10_000))),
        ("too many headers", base(inv, &many).into_bytes(), Box::new(|e| *e == ParseError::TooManyHeaders)),
        ("datagram too large", vec![b'A'; 70_000], Box::new(|e| *e == ParseError::TooLarge(70_000))),
        ("header without colon", base(inv, "Max-Forwards 70\r\n\r\n").into_bytes(), Box::new(|e| *e == ParseError::BadHeaderLine { line: 7 })),
        ("header name with space", base(inv, "Max Forwards: 70\r\n\r\n").into_bytes(), Box::new(|e| *e == ParseError::BadHeaderLine { line: 7 })),
        ("NUL in a header", base(inv, "Subject: a\0b\r\n\r\n").into_bytes(), Box::new(|e| *e == ParseError::NotText { line: 7 })),
        (
            "invalid UTF-8 in a header",
            [base(inv, "Subject: ").as_bytes(), b"\xff\xfe\r\n\r\n"].concat(),
            Box::new(|e| *e == ParseError::NotText { line: 7 }),
        ),
        (
            "continuation before any header",
            format!("{inv}\r\n folded\r\n\r\n").into_bytes(),
            Box::new(|e| *e == ParseError::BadHeaderLine { line: 2 }),
        ),
        (
            "bad Via",
            format!("{inv}\r\nVia: HTTP/1.1 h\r\nFrom: <sip:x@h>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n").into_bytes(),
            Box::new(bad_header("Via")),
        ),
        (
            "Via port out of range",
            format!("{inv}\r\nVia: SIP/2.0/UDP h:70000;branch=z9hG4bK1\r\nFrom: <sip:x@h>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n").into_bytes(),
            Box::new(bad_header("Via")),
        ),
        (
            "From with unbalanced <",
            format!("{inv}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@h;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n").into_bytes(),
            Box::new(bad_header("From")),
        ),
        (
            "two different Call-IDs",
            base(inv, "i: other@h\r\n\r\n").into_bytes(),
            Box::new(bad_header("Call-ID")),
        ),
        (
            "Call-ID with spaces",
            format!("{inv}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@h>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: a b\r\nCSeq: 1 INVITE\r\n\r\n").into_bytes(),
            Box::new(bad_header("Call-ID")),
        ),
    ];
    assert!(corpus.len() >= 15);
    for (name, data, check) in &corpus {
        match parse(data) {
            Ok(m) => panic!("{name}: parsed as {m:?}"),
            Err(e) => assert!(check(&e), "{name}: unexpected error {e:?} ({e})"),
        }
        // Errors display without panicking, and stay short even for huge input.
        let shown = parse(data).unwrap_err().to_string();
        assert!(shown.len() < 200, "{name}: error too long: {shown}");
    }
}

#[test]
fn salvage_finds_what_a_400_needs_only_when_present() {
    let inv = "INVITE sip:a@b SIP/2.0";
    // Body shorter than Content-Length: answerable.
    let s = salvage(base(inv, "Content-Length: 500\r\n\r\nv=0\r\n").as_bytes()).unwrap();
    assert_eq!(s.method, Method::Invite);
    let names: Vec<&str> = s.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["Via", "From", "To", "Call-ID", "CSeq"]);
    // Missing blank line, compact names: still answerable.
    let s = salvage(b"BYE sip:a@b SIP/2.0\nv: SIP/2.0/UDP h;branch=z9hG4bK1\nf: <sip:x@h>;tag=1\nt: <sip:a@b>\ni: c\nCSeq: x").unwrap();
    assert_eq!(s.headers.len(), 5);
    assert_eq!(s.headers[3].value, "c");
    // No Call-ID: dropped.
    assert!(salvage(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:x@h>\r\nTo: <sip:a@b>\r\nCSeq: 1 INVITE\r\n\r\n").is_none());
    // Responses, junk, empty: dropped.
    assert!(salvage(base("SIP/2.0 20 OK", "\r\n").as_bytes()).is_none());
    assert!(salvage(b"\xff\xfe\xfd").is_none());
    assert!(salvage(b"").is_none());
}
