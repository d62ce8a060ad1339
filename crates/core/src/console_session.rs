//! Sessions of the web console. A browser has no client certificate; an
//! operator who has one asks the controller for a session (`duplex
//! console`), and the browser then acts as that operator, with that
//! operator's scope, until the session expires or is ended.
//!
//! The address `duplex console` prints carries a login token, good once
//! and for [`LOGIN_TTL_MS`]: opening it exchanges it for the session's own
//! token, which only ever travels in the cookie (an address left in a
//! browser's history opens nothing).
//!
//! Pure: the caller brings the tokens (random, from the OS) and the time.

use crate::identity::{Identity, Scope};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How long a session lasts unless asked for shorter.
pub const DEFAULT_TTL_MS: u64 = 8 * 3600 * 1000;
/// The longest session one may ask for.
pub const MAX_TTL_MS: u64 = 24 * 3600 * 1000;
/// How long a login address stays good, unused.
pub const LOGIN_TTL_MS: u64 = 5 * 60 * 1000;
/// Most sessions held at once (the oldest to expire goes first).
pub const MAX_SESSIONS: usize = 1024;
/// Name of the session cookie.
pub const COOKIE: &str = "duplex_session";
/// Header every changing request of the console carries: a page of
/// another site cannot send it (no cross-site form posts with the cookie).
pub const CSRF_HEADER: &str = "x-duplex-console";

/// What the controller answers to `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGrant {
    /// Opens the session in a browser (once: it sets the cookie).
    pub url: String,
    pub operator: String,
    pub scope: Scope,
    pub expires_ms: u64,
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// Shorter than [`DEFAULT_TTL_MS`] if given; at most [`MAX_TTL_MS`].
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    operator: String,
    scope: Scope,
    expires_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("only operators open console sessions (this is {0})")]
    NotOperator(String),
    #[error("field `ttl_ms`: {0} is outside 1..={MAX_TTL_MS}")]
    Ttl(u64),
    #[error("the token is too short to be a session's")]
    WeakToken,
}

/// The sessions a controller holds, and the logins not used yet.
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
    /// Login token → the session it opens, and until when it may.
    logins: HashMap<String, (Session, u64)>,
}

/// Fewest characters of a token (hex of 32 random bytes is 64).
const MIN_TOKEN: usize = 32;

impl Sessions {
    /// A login for a session of `who`: `token` opens it once (see
    /// [`Sessions::redeem`]) within [`LOGIN_TTL_MS`]; when the session
    /// will expire.
    pub fn open(
        &mut self,
        who: &Identity,
        token: String,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<u64, SessionError> {
        let Identity::Operator { name, scope } = who else {
            return Err(SessionError::NotOperator(who.dns_name()));
        };
        let ttl = ttl_ms.unwrap_or(DEFAULT_TTL_MS);
        if ttl == 0 || ttl > MAX_TTL_MS {
            return Err(SessionError::Ttl(ttl));
        }
        if token.len() < MIN_TOKEN {
            return Err(SessionError::WeakToken);
        }
        self.expire(now_ms);
        make_room(&mut self.logins, |(_, until)| *until);
        let expires_ms = now_ms.saturating_add(ttl);
        let session = Session {
            operator: name.clone(),
            scope: *scope,
            expires_ms,
        };
        let until = now_ms.saturating_add(LOGIN_TTL_MS).min(expires_ms);
        self.logins.insert(token, (session, until));
        Ok(expires_ms)
    }

    /// Uses login `login` (once): its session is held under `token` from
    /// now on. `false` if the login is unknown, used or too old.
    pub fn redeem(&mut self, login: &str, token: String, now_ms: u64) -> bool {
        self.expire(now_ms);
        let Some((session, _)) = self.logins.remove(login) else {
            return false;
        };
        if token.len() < MIN_TOKEN {
            return false;
        }
        make_room(&mut self.by_token, |s| s.expires_ms);
        self.by_token.insert(token, session);
        true
    }

    /// Who a request carrying `token` acts as, if the session is live.
    pub fn who(&self, token: &str, now_ms: u64) -> Option<Identity> {
        let s = self.by_token.get(token).filter(|s| s.expires_ms > now_ms)?;
        Some(Identity::Operator {
            name: s.operator.clone(),
            scope: s.scope,
        })
    }

    /// Ends a session (logging out); whether it existed.
    pub fn close(&mut self, token: &str) -> bool {
        self.by_token.remove(token).is_some()
    }

    fn expire(&mut self, now_ms: u64) {
        self.by_token.retain(|_, s| s.expires_ms > now_ms);
        self.logins.retain(|_, (_, until)| *until > now_ms);
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

/// Drops the entries that end soonest until one more fits under
/// [`MAX_SESSIONS`].
fn make_room<V>(map: &mut HashMap<String, V>, ends: impl Fn(&V) -> u64) {
    while map.len() >= MAX_SESSIONS {
        let Some(first) = map
            .iter()
            .min_by_key(|(_, v)| ends(v))
            .map(|(t, _)| t.clone())
        else {
            break;
        };
        map.remove(&first);
    }
}

/// The session token in a `Cookie` header's value, if any.
pub fn token_in_cookies(header: &str) -> Option<&str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE && !v.is_empty()).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(scope: Scope) -> Identity {
        Identity::Operator {
            name: "ann".into(),
            scope,
        }
    }

    const L: &str = "login-789abcdef0123456789abcdef0123";
    const T: &str = "0123456789abcdef0123456789abcdef0123";

    #[test]
    fn a_login_opens_its_session_once() {
        let mut s = Sessions::default();
        s.open(&op(Scope::Operate), L.into(), None, 0).unwrap();
        assert_eq!(s.who(L, 1), None, "a login is not a session");
        assert!(s.redeem(L, T.into(), 1));
        assert_eq!(s.who(T, 2), Some(op(Scope::Operate)));
        assert!(!s.redeem(L, format!("{T}x"), 3), "used already");
        s.open(&op(Scope::Read), L.into(), None, 0).unwrap();
        assert!(!s.redeem(L, format!("{T}y"), LOGIN_TTL_MS), "too old");
    }

    #[test]
    fn a_session_acts_as_its_operator_until_it_expires() {
        let mut s = Sessions::default();
        let exp = s.open(&op(Scope::Read), L.into(), Some(1000), 5).unwrap();
        assert_eq!(exp, 1005);
        assert!(s.redeem(L, T.into(), 6));
        assert_eq!(s.who(T, 1004), Some(op(Scope::Read)));
        assert_eq!(s.who(T, 1005), None, "expired");
        assert_eq!(s.who("other", 10), None);
        assert!(s.close(T));
        assert_eq!(s.who(T, 10), None, "closed");
    }

    #[test]
    fn only_operators_with_sane_lifetimes_and_tokens_get_one() {
        let mut s = Sessions::default();
        let agent = Identity::Agent { host: "h1".into() };
        assert!(matches!(
            s.open(&agent, T.into(), None, 0),
            Err(SessionError::NotOperator(_))
        ));
        for bad in [0, MAX_TTL_MS + 1] {
            assert_eq!(
                s.open(&op(Scope::Operate), T.into(), Some(bad), 0),
                Err(SessionError::Ttl(bad))
            );
        }
        assert_eq!(
            s.open(&op(Scope::Operate), "short".into(), None, 0),
            Err(SessionError::WeakToken)
        );
        assert!(s.is_empty());
        assert!(!s.redeem(T, format!("{T}z"), 0), "nothing to redeem");
    }

    #[test]
    fn sessions_are_bounded_the_soonest_to_expire_going_first() {
        let mut s = Sessions::default();
        for i in 0..MAX_SESSIONS + 3 {
            let token = format!("{T}{i:06}");
            s.open(&op(Scope::Read), L.into(), Some(1000 + i as u64), 0)
                .unwrap();
            assert!(s.redeem(L, token, 0));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(s.who(&format!("{T}{:06}", 0), 1), None);
        assert!(s.who(&format!("{T}{:06}", MAX_SESSIONS + 2), 1).is_some());
    }

    #[test]
    fn the_token_is_found_among_cookies() {
        assert_eq!(
            token_in_cookies("a=1; duplex_session=xyz; b=2"),
            Some("xyz")
        );
        assert_eq!(token_in_cookies("duplex_session="), None);
        assert_eq!(token_in_cookies("xduplex_session=1"), None);
    }
}
