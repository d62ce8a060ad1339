//! The rules a new cluster starts with: SIP signalling is held, media,
//! voice-marked traffic, ping replies and ARP are sent at once, and what
//! nothing names is held (the safe side).

use super::rule_match::{ICMP, TCP, UDP};
use super::{Class, Match, PortRange, Proto, Rule, Ruleset};

/// SIP's registered ports (5060, and 5061 for TLS).
const SIP_PORTS: PortRange = PortRange { lo: 5060, hi: 5061 };
/// RTP uses unprivileged UDP ports; its first byte carries version 2 in
/// its top two bits (RFC 3550 5.1), which no SIP message starts with.
const RTP_PORTS: PortRange = PortRange {
    lo: 1024,
    hi: 65535,
};
const RTP_V2: u8 = 0x80;
const RTP_VERSION_BITS: u8 = 0xc0;
/// DiffServ Expedited Forwarding, the mark of voice media (RFC 3246).
const DSCP_EF: u8 = 46;
const ICMP_ECHO_REPLY: u8 = 0;

fn rule(name: &str, priority: u32, matches: Match, class: Class, note: &str) -> Rule {
    Rule {
        name: name.into(),
        priority,
        matches,
        class,
        note: note.into(),
    }
}

pub fn default_ruleset() -> Ruleset {
    let sip = |proto| Match {
        proto: Some(Proto::Ip(proto)),
        port: Some(SIP_PORTS),
        ..Match::default()
    };
    Ruleset {
        version: 1,
        default: Class::Hold,
        rules: vec![
            rule(
                "sip-udp",
                10,
                sip(UDP),
                Class::Hold,
                "SIP signalling changes call state",
            ),
            rule(
                "sip-tcp",
                11,
                sip(TCP),
                Class::Hold,
                "SIP signalling changes call state",
            ),
            rule(
                "rtp",
                20,
                Match {
                    proto: Some(Proto::Ip(UDP)),
                    port: Some(RTP_PORTS),
                    payload: vec![RTP_V2],
                    payload_mask: vec![RTP_VERSION_BITS],
                    ..Match::default()
                },
                Class::Send,
                "RTP/RTCP media (version 2): no call state",
            ),
            rule(
                "voice-ef",
                30,
                Match {
                    dscp: Some(DSCP_EF),
                    ..Match::default()
                },
                Class::Send,
                "marked as voice media (DSCP EF)",
            ),
            rule(
                "ping-reply",
                40,
                Match {
                    proto: Some(Proto::Ip(ICMP)),
                    payload: vec![ICMP_ECHO_REPLY],
                    ..Match::default()
                },
                Class::Send,
                "health probe answers",
            ),
            rule(
                "arp",
                50,
                Match {
                    proto: Some(Proto::Arp),
                    ..Match::default()
                },
                Class::Send,
                "address resolution",
            ),
        ],
    }
}
