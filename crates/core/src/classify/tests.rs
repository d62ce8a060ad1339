use super::rule_match::{ICMP, TCP, UDP};
use super::*;

fn udp<'a>(sport: u16, dport: u16, payload: &'a [u8]) -> Packet<'a> {
    Packet {
        proto: Proto::Ip(UDP),
        src: Some(Ipv4Addr::new(10, 0, 0, 5)),
        dst: Some(Ipv4Addr::new(192, 168, 7, 9)),
        src_port: Some(sport),
        dst_port: Some(dport),
        dscp: Some(0),
        payload,
    }
}

fn hit_name(set: &Ruleset, p: &Packet) -> (Class, Option<String>) {
    let hit = set.classify(p);
    (hit.class, hit.rule.map(|r| r.name.clone()))
}

#[test]
fn defaults_are_valid_and_hold_signalling_send_media() {
    let set = default_ruleset();
    set.validate().unwrap();
    let invite = b"INVITE sip:bob@example.com SIP/2.0\r\n";
    let answer = b"SIP/2.0 200 OK\r\n";
    let rtp = [0x80u8, 0x00, 0x12, 0x34];
    let sip = |c: Class| (c, Some("sip-udp".to_string()));
    assert_eq!(hit_name(&set, &udp(5060, 5060, invite)), sip(Class::Hold));
    assert_eq!(hit_name(&set, &udp(5060, 40000, answer)), sip(Class::Hold));
    assert_eq!(
        hit_name(&set, &udp(20000, 30000, &rtp)),
        (Class::Send, Some("rtp".into()))
    );
    // SIP on another port is text, not RTP: nothing matches, held.
    assert_eq!(
        hit_name(&set, &udp(5080, 5080, invite)),
        (Class::Hold, None)
    );
    // An empty datagram is no RTP.
    assert_eq!(hit_name(&set, &udp(20000, 30000, &[])), (Class::Hold, None));
    // SIP marked EF is still SIP: the SIP rule comes first.
    let mut marked = udp(5060, 5060, invite);
    marked.dscp = Some(46);
    assert_eq!(hit_name(&set, &marked), sip(Class::Hold));
    let mut tcp = udp(5060, 41000, answer);
    tcp.proto = Proto::Ip(TCP);
    assert_eq!(hit_name(&set, &tcp), (Class::Hold, Some("sip-tcp".into())));
}

#[test]
fn arp_and_ping_replies_are_sent() {
    let set = default_ruleset();
    let arp = Packet {
        proto: Proto::Arp,
        src: None,
        dst: None,
        src_port: None,
        dst_port: None,
        dscp: None,
        payload: &[],
    };
    assert_eq!(hit_name(&set, &arp), (Class::Send, Some("arp".into())));
    let reply = [0u8, 0, 0x12, 0x34];
    let request = [8u8, 0, 0x12, 0x34];
    let icmp = |payload| Packet {
        proto: Proto::Ip(ICMP),
        src_port: None,
        dst_port: None,
        ..udp(0, 0, payload)
    };
    assert_eq!(hit_name(&set, &icmp(&reply)).0, Class::Send);
    assert_eq!(hit_name(&set, &icmp(&request)), (Class::Hold, None));
}

/// Each field alone: a rule giving only it matches exactly the packets
/// whose field matches, for every value in a small domain.
#[test]
fn every_field_matches_alone() {
    let ports = [None, Some(0u16), Some(5060), Some(5061), Some(65535)];
    let range = PortRange { lo: 5060, hi: 5061 };
    for sp in ports {
        for dp in ports {
            let p = Packet {
                src_port: sp,
                dst_port: dp,
                ..udp(0, 0, b"")
            };
            let only = |m: Match| Rule {
                name: "r".into(),
                priority: 0,
                matches: m,
                class: Class::Send,
                note: String::new(),
            };
            let inr = |v: Option<u16>| v.is_some_and(|v| range.contains(v));
            let m = |f: fn(&mut Match)| {
                let mut m = Match::default();
                f(&mut m);
                only(m).matches(&p)
            };
            assert_eq!(
                m(|m| m.src_port = Some(PortRange { lo: 5060, hi: 5061 })),
                inr(sp)
            );
            assert_eq!(
                m(|m| m.dst_port = Some(PortRange { lo: 5060, hi: 5061 })),
                inr(dp)
            );
            assert_eq!(
                m(|m| m.port = Some(PortRange { lo: 5060, hi: 5061 })),
                inr(sp) || inr(dp)
            );
            assert!(m(|_| {}), "an empty match matches everything");
        }
    }
    for dscp in [None, Some(0u8), Some(46), Some(63)] {
        let p = Packet {
            dscp,
            ..udp(1, 2, b"")
        };
        let r = Rule {
            name: "r".into(),
            priority: 0,
            matches: Match {
                dscp: Some(46),
                ..Match::default()
            },
            class: Class::Send,
            note: String::new(),
        };
        assert_eq!(r.matches(&p), dscp == Some(46));
    }
}

#[test]
fn networks_and_prefixes() {
    let net: Net = "10.1.0.0/16".parse().unwrap();
    assert!(net.contains(Ipv4Addr::new(10, 1, 200, 3)));
    assert!(!net.contains(Ipv4Addr::new(10, 2, 0, 1)));
    let all: Net = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(Ipv4Addr::new(255, 255, 255, 255)));
    let host: Net = "10.0.0.5".parse().unwrap();
    assert_eq!(host.prefix, 32);
    assert!(host.contains(Ipv4Addr::new(10, 0, 0, 5)));
    assert!(!host.contains(Ipv4Addr::new(10, 0, 0, 6)));
    for bad in ["10.0.0.0/33", "10.0.0/8", "x", "10.0.0.0/", "/8"] {
        assert!(bad.parse::<Net>().is_err(), "{bad}");
    }
    // Payload prefix under a mask; a payload shorter than the prefix.
    assert!(prefix_matches(&[0x80], &[0xc0], &[0xbf]));
    assert!(!prefix_matches(&[0x80], &[0xc0], &[0x40]));
    assert!(prefix_matches(b"SIP", &[], b"SIP/2.0"));
    assert!(!prefix_matches(b"SIP/2.0 ", &[], b"SIP"));
    assert!(prefix_matches(&[], &[], &[]));
}

#[test]
fn field_text_round_trips() {
    for s in ["any", "arp", "icmp", "tcp", "udp", "sctp", "ip:47"] {
        assert_eq!(s.parse::<Proto>().unwrap().to_string(), s);
    }
    assert_eq!("ip:17".parse::<Proto>().unwrap(), Proto::Ip(UDP));
    for bad in ["", "UDP", "ip:256", "ip:"] {
        assert!(bad.parse::<Proto>().is_err(), "{bad}");
    }
    for s in ["5060", "10000-20000", "0-65535"] {
        assert_eq!(s.parse::<PortRange>().unwrap().to_string(), s);
    }
    for bad in ["", "70000", "1-", "a-b"] {
        assert!(bad.parse::<PortRange>().is_err(), "{bad}");
    }
    assert_eq!(hex_bytes::decode("5349500a").unwrap(), b"SIP\n");
    assert!(hex_bytes::decode("123").is_err());
    assert!(hex_bytes::decode("zz").is_err());
}

#[test]
fn json_round_trips_and_refuses_unknown_fields() {
    let set = default_ruleset();
    let text = serde_json::to_string(&set).unwrap();
    assert!(text.contains("\"payload\":\"80\""), "{text}");
    assert!(text.contains("\"port\":\"5060-5061\""), "{text}");
    let back: Ruleset = serde_json::from_str(&text).unwrap();
    assert_eq!(back, set);
    let unknown = r#"{"name":"x","priority":1,"match":{"prot":"udp"},"class":"send"}"#;
    assert!(serde_json::from_str::<Rule>(unknown).is_err());
    let bad_port = r#"{"name":"x","priority":1,"match":{"port":"99999"},"class":"send"}"#;
    let err = serde_json::from_str::<Rule>(bad_port)
        .unwrap_err()
        .to_string();
    assert!(err.contains("port `99999`"), "{err}");
}

fn rule(name: &str, m: Match) -> Rule {
    Rule {
        name: name.into(),
        priority: 5,
        matches: m,
        class: Class::Send,
        note: String::new(),
    }
}

#[test]
fn bad_rules_are_refused_with_the_reason() {
    let cases: Vec<(Rule, &str)> = vec![
        (rule("Bad", Match::default()), "rule name `Bad`"),
        (rule("", Match::default()), "rule name ``"),
        (
            rule(
                "d",
                Match {
                    dscp: Some(64),
                    ..Match::default()
                },
            ),
            "dscp 64",
        ),
        (
            rule(
                "p",
                Match {
                    payload: vec![0; MAX_PREFIX + 1],
                    ..Match::default()
                },
            ),
            "65 bytes",
        ),
        (
            rule(
                "m",
                Match {
                    payload: vec![1, 2],
                    payload_mask: vec![1],
                    ..Match::default()
                },
            ),
            "mask has 1 bytes",
        ),
        (
            rule(
                "i",
                Match {
                    proto: Some(Proto::Ip(ICMP)),
                    dst_port: Some(PortRange::one(1)),
                    ..Match::default()
                },
            ),
            "not icmp",
        ),
        (
            rule(
                "a",
                Match {
                    proto: Some(Proto::Arp),
                    dscp: Some(1),
                    ..Match::default()
                },
            ),
            "dscp needs an IP protocol",
        ),
        (
            rule(
                "b",
                Match {
                    port: Some(PortRange { lo: 9, hi: 1 }),
                    ..Match::default()
                },
            ),
            "9-1 runs backwards",
        ),
    ];
    for (r, want) in cases {
        let err = r.validate().unwrap_err().to_string();
        assert!(err.contains(want), "{err} lacks {want}");
        let set = default_ruleset();
        assert!(set.with_rule(r).is_err(), "a bad rule never enters a set");
    }
}

#[test]
fn edits_bump_the_version_and_keep_check_order() {
    let set = default_ruleset();
    let early = Rule {
        priority: 1,
        ..rule("early", Match::default())
    };
    let next = set.with_rule(early.clone()).unwrap();
    assert_eq!(next.version, set.version + 1);
    assert_eq!(next.rules[0].name, "early");
    // Everything is sent now: the catch-all comes first.
    assert_eq!(
        next.classify(&udp(5060, 5060, b"INVITE")).class,
        Class::Send
    );
    // Replacing by name keeps one copy.
    let moved = next
        .with_rule(Rule {
            priority: 99,
            ..early
        })
        .unwrap();
    assert_eq!(moved.rules.len(), set.rules.len() + 1);
    assert_eq!(moved.rules.last().unwrap().name, "early");
    let gone = moved.without_rule("early").unwrap();
    assert_eq!(gone.rules, set.rules);
    assert_eq!(gone.version, set.version + 3);
    assert_eq!(
        gone.without_rule("early").unwrap_err(),
        RuleError::NotFound("early".into())
    );
    let sent = gone.with_default(Class::Send);
    assert_eq!(sent.classify(&udp(5080, 5080, b"x")).class, Class::Send);
    let mut dup = set.clone();
    dup.rules.push(dup.rules[0].clone());
    assert_eq!(dup.validate(), Err(RuleError::Duplicate("sip-udp".into())));
}
