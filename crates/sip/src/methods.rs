//! Which requests this UAS serves, and the RFC's answers to the rest
//! (RFC 3261 §8.2.1-§8.2.2.3): methods it knows but does not serve get 405
//! with `Allow`, methods it does not know 501, and a request that requires
//! an extension 420 naming it in `Unsupported` (this UAS implements none).
//! Pure.

use crate::message::{split_list, Message, Method};

/// A request refused: the final response, and what was wrong (for a
/// `Warning`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub why: String,
}

impl Refusal {
    pub fn new(code: u16, reason: &'static str, why: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason,
            why: why.into(),
        }
    }
}

/// The methods this UAS serves (`Allow`). INFO (RFC 6086) and UPDATE
/// (RFC 3311) are served inside a dialog, MESSAGE (RFC 3428) inside or
/// outside one, REGISTER by [`crate::registrar`].
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, MESSAGE, REGISTER";

/// Methods of registered SIP extensions this UAS knows but does not serve.
const KNOWN_NOT_SERVED: [&str; 4] = ["SUBSCRIBE", "NOTIFY", "REFER", "PUBLISH"];

/// The final answer to a method this UAS does not serve; `None` for the
/// methods it serves (and PRACK, answered by [`crate::dialog::route`]).
pub fn refusal(method: &Method) -> Option<(u16, &'static str)> {
    match method {
        Method::Other(name) if !KNOWN_NOT_SERVED.contains(&name.as_str()) => {
            Some((501, "Not Implemented"))
        }
        Method::Other(_) => Some((405, "Method Not Allowed")),
        _ => None,
    }
}

/// The option-tags `msg` requires (`Require`), all unsupported here; empty
/// for ACK and CANCEL, whose `Require` a UAS ignores (§8.2.2.3).
pub fn unsupported(msg: &Message) -> Vec<String> {
    if matches!(msg.method(), Some(Method::Ack | Method::Cancel) | None) {
        return Vec::new();
    }
    let mut tags: Vec<String> = msg
        .headers_named("Require")
        .flat_map(|h| split_list(&h.value))
        .map(str::to_string)
        .collect();
    tags.dedup();
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse;

    fn req(method: &str, extra: &str) -> Message {
        let text = format!(
            "{method} sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb\r\nFrom: <sip:a@h>;tag=rt\r\n\
             To: <sip:x@h>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\n{extra}\r\n"
        );
        parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn known_methods_not_served_get_405_unknown_ones_501() {
        for m in ["SUBSCRIBE", "NOTIFY", "REFER", "PUBLISH"] {
            assert_eq!(
                refusal(&Method::from_token(m)),
                Some((405, "Method Not Allowed")),
                "{m}"
            );
        }
        assert_eq!(
            refusal(&Method::from_token("FROB")),
            Some((501, "Not Implemented"))
        );
        for m in [
            "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "MESSAGE", "PRACK",
            "REGISTER",
        ] {
            assert_eq!(refusal(&Method::from_token(m)), None, "{m}");
        }
    }

    #[test]
    fn every_served_method_is_in_allow() {
        for m in split_list(ALLOW) {
            assert_eq!(refusal(&Method::from_token(m)), None, "{m}");
            assert!(!matches!(Method::from_token(m), Method::Other(_)), "{m}");
        }
    }

    #[test]
    fn required_extensions_are_named_except_for_ack_and_cancel() {
        let m = req(
            "INVITE",
            "Require: 100rel, timer\r\nRequire: precondition\r\n",
        );
        assert_eq!(unsupported(&m), ["100rel", "timer", "precondition"]);
        assert!(unsupported(&req("INVITE", "Supported: timer\r\n")).is_empty());
        assert!(unsupported(&req("CANCEL", "Require: 100rel\r\n")).is_empty());
        assert!(unsupported(&req("ACK", "Require: 100rel\r\n")).is_empty());
    }
}
