//! Authenticated replication lines. Both guests of a pair hold the pair's
//! key ([`ReplicaKey`], handed to each at configure time). A connection
//! opens with a hello each way carrying a fresh random nonce; the
//! connection's key is HMAC-SHA256(pair key, "duplex replica v1" | client
//! nonce | server nonce), and every later line is `<tag> <json>`, the tag
//! being HMAC-SHA256(connection key, direction | number | json) in hex,
//! numbered per direction from 0. A line that does not carry its tag
//! (forged, altered, reordered, or replayed from another connection) ends
//! the connection: nobody without the key can replace the SBY's state,
//! inject writes into the ACT or have its service send anything.
//!
//! A guest configured without a key (a pair made before keys) speaks the
//! plain lines of before; one with a key refuses plain lines.

use duplex_core::replica_key::ReplicaKey;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::io::{BufRead, Read, Write};

type HmacSha256 = Hmac<Sha256>;

/// What the connection key is derived with (versioned: a change of the
/// scheme changes every tag).
const CONTEXT: &[u8] = b"duplex replica v1";
const NONCE_LEN: usize = 16;
/// Longest hello line (`hello <32 hex>\n`, with room).
const HELLO_MAX: usize = 128;
/// Direction bytes: client to server, server to client.
const TO_SERVER: u8 = b'C';
const TO_CLIENT: u8 = b'S';

/// Why a line was not taken.
#[derive(Debug)]
pub enum Refused {
    /// Plain mode: the line is not JSON (answered with an error).
    Json(String),
    /// Keyed mode: no valid tag (the connection ends).
    Forged(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Json(e) => write!(f, "bad JSON: {e}"),
            Refused::Forged(e) => write!(f, "unauthenticated replication line: {e}"),
        }
    }
}

/// One direction's state: the connection key and the next line's number.
/// The HMAC is keyed once per connection and cloned per line: keying
/// hashes the key's pads, which every replicated write would redo.
#[derive(Clone)]
struct Dir {
    keyed: HmacSha256,
    dir: u8,
    n: u64,
}

impl Dir {
    fn new(key: [u8; 32], dir: u8) -> Dir {
        let keyed = <HmacSha256 as Mac>::new_from_slice(&key).expect("HMAC takes any key");
        Dir { keyed, dir, n: 0 }
    }

    fn mac(&self) -> HmacSha256 {
        let mut m = self.keyed.clone();
        m.update(&[self.dir]);
        m.update(&self.n.to_be_bytes());
        m
    }
}

/// The sending half of a connection.
pub struct Seal(Option<Dir>);
/// The receiving half of a connection.
pub struct Unseal(Option<Dir>);

/// Both halves without a key: plain JSON lines.
pub fn plain() -> (Seal, Unseal) {
    (Seal(None), Unseal(None))
}

impl Seal {
    /// The line to send for `msg`, newline included.
    pub fn line(&mut self, msg: &Value) -> String {
        let json = msg.to_string();
        match &mut self.0 {
            None => format!("{json}\n"),
            Some(d) => {
                let mut m = d.mac();
                m.update(json.as_bytes());
                d.n += 1;
                format!("{} {json}\n", hex(&m.finalize().into_bytes()))
            }
        }
    }
}

impl Unseal {
    /// The message in a received line (newline included or not).
    pub fn open(&mut self, line: &[u8]) -> Result<Value, Refused> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let Some(d) = &mut self.0 else {
            return serde_json::from_slice(line).map_err(|e| Refused::Json(e.to_string()));
        };
        let forged = |why: &str| Refused::Forged(why.to_string());
        let (tag, json) = match line.iter().position(|b| *b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => return Err(forged("no tag")),
        };
        let tag = unhex(tag).ok_or_else(|| forged("the tag is not hex"))?;
        let mut m = d.mac();
        m.update(json);
        m.verify_slice(&tag).map_err(|_| {
            forged("the tag does not match (wrong key, or altered, replayed or reordered)")
        })?;
        d.n += 1;
        serde_json::from_slice(json).map_err(|e| forged(&format!("tagged line is not JSON: {e}")))
    }
}

/// The client's side of the hello (no hello without a key).
pub fn client<S: Read + Write>(
    r: &mut std::io::BufReader<S>,
    key: Option<&ReplicaKey>,
) -> Result<(Seal, Unseal), String> {
    let Some(key) = key else { return Ok(plain()) };
    let mine = nonce()?;
    send_hello(r.get_mut(), &mine)?;
    let theirs = read_hello(r)?;
    let k = connection_key(key, &mine, &theirs);
    Ok(halves(k, TO_SERVER, TO_CLIENT))
}

/// The server's side of the hello.
pub fn server<S: Read + Write>(
    r: &mut std::io::BufReader<S>,
    key: Option<&ReplicaKey>,
) -> Result<(Seal, Unseal), String> {
    let Some(key) = key else { return Ok(plain()) };
    let theirs = read_hello(r)?;
    let mine = nonce()?;
    send_hello(r.get_mut(), &mine)?;
    let k = connection_key(key, &theirs, &mine);
    Ok(halves(k, TO_CLIENT, TO_SERVER))
}

fn halves(key: [u8; 32], out: u8, inn: u8) -> (Seal, Unseal) {
    (
        Seal(Some(Dir::new(key, out))),
        Unseal(Some(Dir::new(key, inn))),
    )
}

fn connection_key(key: &ReplicaKey, client: &[u8], server: &[u8]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(&key.0).expect("HMAC takes any key");
    m.update(CONTEXT);
    m.update(client);
    m.update(server);
    m.finalize().into_bytes().into()
}

fn send_hello(w: &mut impl Write, nonce: &[u8]) -> Result<(), String> {
    w.write_all(format!("hello {}\n", hex(nonce)).as_bytes())
        .map_err(|e| format!("sending hello: {e}"))
}

fn read_hello(r: &mut impl BufRead) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    match super::admit::read_line(r, &mut line, HELLO_MAX) {
        Ok(Some(())) => {}
        Ok(None) => return Err("the peer closed before its hello".into()),
        Err(e) => return Err(format!("reading the peer's hello: {e}")),
    }
    let text = String::from_utf8_lossy(&line);
    text.trim_end()
        .strip_prefix("hello ")
        .and_then(|h| unhex(h.as_bytes()))
        .filter(|n| n.len() == NONCE_LEN)
        .ok_or_else(|| {
            "the peer did not say hello with a nonce (is it configured with the pair's key?)".into()
        })
}

fn nonce() -> Result<[u8; NONCE_LEN], String> {
    let mut n = [0u8; NONCE_LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut n))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(n)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(h: &[u8]) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    h.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pair(key: [u8; 32], nc: &[u8], ns: &[u8]) -> ((Seal, Unseal), (Seal, Unseal)) {
        let k = connection_key(&ReplicaKey(key), nc, ns);
        (
            halves(k, TO_SERVER, TO_CLIENT),
            halves(k, TO_CLIENT, TO_SERVER),
        )
    }

    #[test]
    fn tagged_lines_pass_in_order_and_nothing_else_does() {
        let ((mut cs, _cu), (_ss, mut su)) = pair([1; 32], b"c", b"s");
        let msgs = [
            json!({"op":"put","key":"a","value":1}),
            json!({"op":"digest"}),
        ];
        let lines: Vec<String> = msgs.iter().map(|m| cs.line(m)).collect();
        for (l, m) in lines.iter().zip(&msgs) {
            assert_eq!(&su.open(l.as_bytes()).unwrap(), m);
        }
        // Replayed (the number moved on), altered, untagged, plain JSON.
        let ((_, _), (_, mut fresh)) = pair([1; 32], b"c", b"s");
        let altered = lines[0].replace("\"value\":1", "\"value\":2");
        for bad in [
            &lines[0],
            &altered,
            &"zz {}\n".to_string(),
            &"{}\n".to_string(),
        ] {
            let mut su2 = Unseal(su.0.clone());
            assert!(
                matches!(su2.open(bad.as_bytes()), Err(Refused::Forged(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            fresh.open(altered.as_bytes()),
            Err(Refused::Forged(_))
        ));
        // Another key, or another connection's nonces.
        for ((_, _), (_, mut other)) in [pair([2; 32], b"c", b"s"), pair([1; 32], b"c", b"t")] {
            assert!(matches!(
                other.open(lines[0].as_bytes()),
                Err(Refused::Forged(_))
            ));
        }
        // The answer direction has its own tags: a line cannot be bounced back.
        let ((_, mut cu), _) = pair([1; 32], b"c", b"s");
        assert!(matches!(
            cu.open(lines[0].as_bytes()),
            Err(Refused::Forged(_))
        ));
    }

    #[test]
    fn hellos_agree_on_a_key_or_say_why_not() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let key = ReplicaKey([9; 32]);
        let t = std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(b);
            server(&mut r, Some(&key)).map(|(mut s, u)| (s.line(&json!(2)), u))
        });
        let mut r = std::io::BufReader::new(a);
        let (mut s, mut u) = client(&mut r, Some(&key)).unwrap();
        let (answer, mut su) = t.join().unwrap().unwrap();
        assert_eq!(su.open(s.line(&json!(1)).as_bytes()).unwrap(), json!(1));
        assert_eq!(u.open(answer.as_bytes()).unwrap(), json!(2));
        // A server without a key (plain) never says hello: the client says why.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut w = b.try_clone().unwrap();
        let t = std::thread::spawn(move || w.write_all(b"{\"ok\":false}\n"));
        let e = client(&mut std::io::BufReader::new(a), Some(&key))
            .err()
            .unwrap();
        t.join().unwrap().unwrap();
        drop(b);
        assert!(e.contains("did not say hello"), "{e}");
    }

    #[test]
    fn without_a_key_lines_are_plain_json() {
        let (mut s, mut u) = plain();
        let l = s.line(&json!({"ok": true}));
        assert_eq!(l, "{\"ok\":true}\n");
        assert_eq!(u.open(l.as_bytes()).unwrap(), json!({"ok": true}));
        assert!(matches!(u.open(b"nope"), Err(Refused::Json(_))));
    }
}
