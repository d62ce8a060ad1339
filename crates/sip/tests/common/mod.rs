//! Builders of SIP requests as sipp's built-in `uac` scenario sends them.
#![allow(dead_code)]

use duplex_sip::message::{self, Message, StartLine};
use duplex_sip::transaction::Reply;
use duplex_sip::{Uas, UasConfig};
use std::net::SocketAddr;

pub const SDP: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

pub fn uac() -> SocketAddr {
    "127.0.0.1:5061".parse().unwrap()
}

pub fn server_addr() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

pub fn uas(seed: u64) -> Uas {
    Uas::new(UasConfig::new(server_addr(), seed))
}

/// A call as sipp numbers it: call `n` of process 4242.
#[derive(Clone)]
pub struct Call {
    pub n: u32,
}

impl Call {
    pub fn call_id(&self) -> String {
        format!("{}-4242@127.0.0.1", self.n)
    }
    pub fn caller_tag(&self) -> String {
        format!("4242SIPpTag00{}", self.n)
    }

    pub fn invite(&self) -> Vec<u8> {
        format!(
            "INVITE sip:service@127.0.0.1:5070 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-{n}-0\r\n\
             From: sipp <sip:sipp@127.0.0.1:5061>;tag={tag}\r\n\
             To: service <sip:service@127.0.0.1:5070>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: sip:sipp@127.0.0.1:5061\r\n\
             Max-Forwards: 70\r\n\
             Subject: Performance Test\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length:   {len}\r\n\
             \r\n{SDP}",
            n = self.n,
            tag = self.caller_tag(),
            cid = self.call_id(),
            len = SDP.len()
        )
        .into_bytes()
    }

    fn in_dialog(&self, method: &str, branch: u32, cseq: u32, to_tag: &str) -> Vec<u8> {
        format!(
            "{method} sip:service@127.0.0.1:5070 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-{n}-{branch}\r\n\
             From: sipp <sip:sipp@127.0.0.1:5061>;tag={tag}\r\n\
             To: service <sip:service@127.0.0.1:5070>;tag={to_tag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: sip:sipp@127.0.0.1:5061\r\n\
             Max-Forwards: 70\r\n\
             Subject: Performance Test\r\n\
             Content-Length: 0\r\n\r\n",
            n = self.n,
            tag = self.caller_tag(),
            cid = self.call_id(),
        )
        .into_bytes()
    }

    pub fn ack(&self, to_tag: &str) -> Vec<u8> {
        self.in_dialog("ACK", 5, 1, to_tag)
    }

    pub fn bye(&self, to_tag: &str) -> Vec<u8> {
        self.in_dialog("BYE", 7, 2, to_tag)
    }

    pub fn reinvite(&self, to_tag: &str, cseq: u32) -> Vec<u8> {
        self.in_dialog("INVITE", 20 + cseq, cseq, to_tag)
    }

    /// Another request of the dialog (INFO, UPDATE, ...), its own branch.
    pub fn within(&self, method: &str, to_tag: &str, cseq: u32) -> Vec<u8> {
        self.in_dialog(method, 40 + cseq, cseq, to_tag)
    }
}

pub fn request(method: &str, branch: &str, call_id: &str, to_tag: Option<&str>) -> Vec<u8> {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} sip:service@127.0.0.1:5070 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}\r\n\
         From: <sip:a@127.0.0.1>;tag=ft\r\n\
         To: <sip:service@127.0.0.1:5070>{to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

pub fn parse_reply(r: &Reply) -> Message {
    message::parse(&r.data).unwrap_or_else(|e| {
        panic!(
            "reply does not parse ({e}): {}",
            String::from_utf8_lossy(&r.data)
        )
    })
}

pub fn code(r: &Reply) -> u16 {
    match parse_reply(r).start {
        StartLine::Response { code, .. } => code,
        StartLine::Request { .. } => panic!("reply is a request"),
    }
}

pub fn codes(replies: &[Reply]) -> Vec<u16> {
    replies.iter().map(code).collect()
}

pub fn to_tag(r: &Reply) -> Option<String> {
    parse_reply(r).to_tag().unwrap()
}

/// `request` (ending in `Content-Length: 0` and an empty line) with a body.
pub fn with_body(request: Vec<u8>, content_type: &str, body: &str) -> Vec<u8> {
    let text = String::from_utf8(request).unwrap();
    let head = text
        .strip_suffix("Content-Length: 0\r\n\r\n")
        .expect("a request without a body");
    format!(
        "{head}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
