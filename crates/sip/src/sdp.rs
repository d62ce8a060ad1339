//! The session descriptions this UAS sends (RFC 3264 offer/answer over
//! RFC 4566 SDP). It is a signalling service and takes no media, so it
//! answers every stream it is offered *inactive* (`a=inactive`: nobody
//! sends) on the discard port 9 of its own address, with the first format
//! the offer lists (§6.1: a subset of the offered ones); a stream offered
//! with port 0 stays rejected. An INVITE without an offer gets an offer of
//! one inactive PCMU audio stream; the answer in the ACK is taken as it
//! comes. Pure.

use std::net::IpAddr;

/// Content type of a session description.
pub const CONTENT_TYPE: &str = "application/sdp";
/// The port of an inactive stream (discard): no media is taken.
const DISCARD_PORT: u16 = 9;
/// Streams answered per offer; an offer with more is refused.
pub const MAX_STREAMS: usize = 32;

/// Why an offer cannot be answered (488 Not Acceptable Here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("the body is not SDP (it must begin with v=0)")]
    NotSdp,
    #[error("the offer has no media stream (m= line)")]
    NoStream,
    #[error("more than {MAX_STREAMS} media streams")]
    TooManyStreams,
    #[error("bad media line {0:?}")]
    BadMedia(String),
}

/// The `o=` line's session id and version (§8: the version goes up by
/// one with each new description of a session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub session_id: u64,
    pub version: u64,
}

/// One offered stream: `m=<media> <port> <proto> <fmt> ...` and the
/// `a=rtpmap` of its first format.
struct Stream<'a> {
    media: &'a str,
    rejected: bool,
    proto: &'a str,
    format: &'a str,
    rtpmap: Option<&'a str>,
}

/// The answer to `offer`, from `addr`.
pub fn answer(offer: &[u8], addr: IpAddr, origin: Origin) -> Result<String, SdpError> {
    let text = std::str::from_utf8(offer).map_err(|_| SdpError::NotSdp)?;
    let streams = streams(text)?;
    let mut sdp = session(addr, origin);
    for s in streams {
        match s.rejected {
            true => sdp.push_str(&format!("m={} 0 {} {}\r\n", s.media, s.proto, s.format)),
            false => {
                sdp.push_str(&format!(
                    "m={} {DISCARD_PORT} {} {}\r\n",
                    s.media, s.proto, s.format
                ));
                if let Some(map) = s.rtpmap {
                    sdp.push_str(&format!("a=rtpmap:{} {map}\r\n", s.format));
                }
                sdp.push_str("a=inactive\r\n");
            }
        }
    }
    Ok(sdp)
}

/// An offer, for an INVITE that brought none.
pub fn offer(addr: IpAddr, origin: Origin) -> String {
    let mut sdp = session(addr, origin);
    sdp.push_str(&format!(
        "m=audio {DISCARD_PORT} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=inactive\r\n"
    ));
    sdp
}

/// A session id for a dialog's local tag: the same on both VMs.
pub fn session_id(local_tag: &str) -> u64 {
    // FNV-1a, kept below 2^63 (some parsers read it as a signed number).
    let h = local_tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h >> 1
}

fn session(addr: IpAddr, origin: Origin) -> String {
    let family = match addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    format!(
        "v=0\r\no=duplex {} {} IN {family} {addr}\r\ns=duplex\r\nc=IN {family} {addr}\r\nt=0 0\r\n",
        origin.session_id, origin.version
    )
}

fn streams(text: &str) -> Result<Vec<Stream<'_>>, SdpError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("v=0") {
        return Err(SdpError::NotSdp);
    }
    let mut out: Vec<Stream> = Vec::new();
    for line in lines {
        if let Some(m) = line.strip_prefix("m=") {
            if out.len() == MAX_STREAMS {
                return Err(SdpError::TooManyStreams);
            }
            out.push(media(m).ok_or_else(|| SdpError::BadMedia(line.chars().take(80).collect()))?);
        } else if let (Some(s), Some(map)) = (out.last_mut(), line.strip_prefix("a=rtpmap:")) {
            if let Some((fmt, codec)) = map.split_once(' ') {
                if fmt == s.format && s.rtpmap.is_none() {
                    s.rtpmap = Some(codec.trim());
                }
            }
        }
    }
    if out.is_empty() {
        return Err(SdpError::NoStream);
    }
    Ok(out)
}

fn media(m: &str) -> Option<Stream<'_>> {
    let mut words = m.split_ascii_whitespace();
    let media = words.next()?;
    let port = words.next()?;
    let proto = words.next()?;
    let format = words.next()?;
    let port: u16 = port.split('/').next()?.parse().ok()?;
    Some(Stream {
        media,
        rejected: port == 0,
        proto,
        format,
        rtpmap: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: Origin = Origin {
        session_id: 42,
        version: 1,
    };

    fn addr() -> IpAddr {
        "10.0.0.50".parse().unwrap()
    }

    #[test]
    fn every_stream_is_answered_inactive_with_its_first_format() {
        let offer = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                     m=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
                     m=video 0 RTP/AVP 96\r\nm=audio 7000/2 RTP/SAVP 0\r\n";
        let got = answer(offer.as_bytes(), addr(), ORIGIN).unwrap();
        assert_eq!(
            got,
            "v=0\r\no=duplex 42 1 IN IP4 10.0.0.50\r\ns=duplex\r\nc=IN IP4 10.0.0.50\r\nt=0 0\r\n\
             m=audio 9 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=inactive\r\n\
             m=video 0 RTP/AVP 96\r\n\
             m=audio 9 RTP/SAVP 0\r\na=inactive\r\n"
        );
    }

    #[test]
    fn what_is_not_an_offer_is_named() {
        let cases: [(&[u8], SdpError); 4] = [
            (b"hello", SdpError::NotSdp),
            (b"\xff\xfe", SdpError::NotSdp),
            (b"v=0\r\ns=-\r\n", SdpError::NoStream),
            (
                b"v=0\r\nm=audio x RTP/AVP 0\r\n",
                SdpError::BadMedia("m=audio x RTP/AVP 0".into()),
            ),
        ];
        for (offer, want) in cases {
            assert_eq!(answer(offer, addr(), ORIGIN), Err(want));
        }
        let many = format!(
            "v=0\r\n{}",
            "m=audio 1 RTP/AVP 0\r\n".repeat(MAX_STREAMS + 1)
        );
        assert_eq!(
            answer(many.as_bytes(), addr(), ORIGIN),
            Err(SdpError::TooManyStreams)
        );
    }

    #[test]
    fn an_offer_for_an_invite_without_one_and_ipv6() {
        let v6: IpAddr = "fd00::50".parse().unwrap();
        let got = offer(v6, ORIGIN);
        assert!(
            got.starts_with("v=0\r\no=duplex 42 1 IN IP6 fd00::50\r\n"),
            "{got}"
        );
        assert!(got.ends_with("m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=inactive\r\n"));
        assert_eq!(session_id("abc"), session_id("abc"));
        assert!(session_id("abc") < 1 << 63);
        assert_ne!(session_id("abc"), session_id("abd"));
    }
}
