//! The request ledger: a stateful UDP request/response service every guest
//! runs, so that a test can see, from the answers alone, whether the VM
//! processed each client's requests once and in order across checkpoints,
//! switches between sites and failovers. Its state (per client: the last
//! request processed and the ones skipped) lives in the guest's RAM.
//!
//! Request, 16 bytes: `DXQ1`, client id (u32 BE), sequence number (u64 BE).
//! Answer, 29 bytes: `DXA1`, client, sequence, verdict (u8), requests
//! processed by this guest in total (u64 BE), this client's count (u32 BE).
//! Query, 8 bytes: `DXS1`, client: what the ledger remembers of it, without
//! processing anything. Its answer, 20 bytes: `DXT1`, client, the highest
//! sequence number processed (u64 BE, all ones: none), its count (u32 BE).

use std::collections::{BTreeMap, BTreeSet};

/// UDP port of the ledger in every guest.
pub const PORT: u16 = 7100;
const REQ_MAGIC: &[u8; 4] = b"DXQ1";
const ANS_MAGIC: &[u8; 4] = b"DXA1";
pub const REQUEST_LEN: usize = 16;
pub const ANSWER_LEN: usize = 29;
/// Most skipped sequence numbers remembered per client (older ones are
/// forgotten: a request that late counts as a duplicate).
pub const MAX_SKIPPED: usize = 65_536;
/// Most clients remembered.
pub const MAX_CLIENTS: usize = 1024;

const QUERY_MAGIC: &[u8; 4] = b"DXS1";
const STATE_MAGIC: &[u8; 4] = b"DXT1";
pub const QUERY_LEN: usize = 8;
pub const STATE_LEN: usize = 20;

/// What the ledger remembers of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientView {
    pub client: u32,
    pub last: Option<u64>,
    pub count: u32,
}

impl ClientView {
    pub fn encode(&self) -> [u8; STATE_LEN] {
        let mut b = [0u8; STATE_LEN];
        b[..4].copy_from_slice(STATE_MAGIC);
        b[4..8].copy_from_slice(&self.client.to_be_bytes());
        b[8..16].copy_from_slice(&self.last.unwrap_or(u64::MAX).to_be_bytes());
        b[16..20].copy_from_slice(&self.count.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<ClientView> {
        if b.len() != STATE_LEN || &b[..4] != STATE_MAGIC {
            return None;
        }
        let last = u64::from_be_bytes(b[8..16].try_into().ok()?);
        Some(ClientView {
            client: u32::from_be_bytes(b[4..8].try_into().ok()?),
            last: (last != u64::MAX).then_some(last),
            count: u32::from_be_bytes(b[16..20].try_into().ok()?),
        })
    }
}

/// `DXS1` + client.
pub fn encode_query(client: u32) -> [u8; QUERY_LEN] {
    let mut b = [0u8; QUERY_LEN];
    b[..4].copy_from_slice(QUERY_MAGIC);
    b[4..8].copy_from_slice(&client.to_be_bytes());
    b
}

/// The client a query asks about.
pub fn decode_query(b: &[u8]) -> Option<u32> {
    if b.len() != QUERY_LEN || &b[..4] != QUERY_MAGIC {
        return None;
    }
    Some(u32::from_be_bytes(b[4..8].try_into().ok()?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    pub client: u32,
    pub seq: u64,
}

/// What the ledger made of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// The next one from this client.
    InOrder,
    /// Later than the next: some before it were not (yet) processed.
    Skipped,
    /// One that was skipped earlier: processed out of order.
    Late,
    /// Processed before.
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub client: u32,
    pub seq: u64,
    pub verdict: Verdict,
    pub processed: u64,
    pub client_count: u32,
}

impl Request {
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[..4].copy_from_slice(REQ_MAGIC);
        b[4..8].copy_from_slice(&self.client.to_be_bytes());
        b[8..16].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Request> {
        if b.len() != REQUEST_LEN || &b[..4] != REQ_MAGIC {
            return None;
        }
        Some(Request {
            client: u32::from_be_bytes(b[4..8].try_into().ok()?),
            seq: u64::from_be_bytes(b[8..16].try_into().ok()?),
        })
    }
}

impl Verdict {
    fn code(self) -> u8 {
        match self {
            Verdict::InOrder => 0,
            Verdict::Skipped => 1,
            Verdict::Late => 2,
            Verdict::Duplicate => 3,
        }
    }
    fn from_code(c: u8) -> Option<Verdict> {
        Some(match c {
            0 => Verdict::InOrder,
            1 => Verdict::Skipped,
            2 => Verdict::Late,
            3 => Verdict::Duplicate,
            _ => return None,
        })
    }
}

impl Answer {
    pub fn encode(&self) -> [u8; ANSWER_LEN] {
        let mut b = [0u8; ANSWER_LEN];
        b[..4].copy_from_slice(ANS_MAGIC);
        b[4..8].copy_from_slice(&self.client.to_be_bytes());
        b[8..16].copy_from_slice(&self.seq.to_be_bytes());
        b[16] = self.verdict.code();
        b[17..25].copy_from_slice(&self.processed.to_be_bytes());
        b[25..29].copy_from_slice(&self.client_count.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Answer> {
        if b.len() != ANSWER_LEN || &b[..4] != ANS_MAGIC {
            return None;
        }
        Some(Answer {
            client: u32::from_be_bytes(b[4..8].try_into().ok()?),
            seq: u64::from_be_bytes(b[8..16].try_into().ok()?),
            verdict: Verdict::from_code(b[16])?,
            processed: u64::from_be_bytes(b[17..25].try_into().ok()?),
            client_count: u32::from_be_bytes(b[25..29].try_into().ok()?),
        })
    }
}

#[derive(Debug, Default)]
struct ClientState {
    /// The highest sequence number processed.
    last: Option<u64>,
    skipped: BTreeSet<u64>,
    count: u32,
}

/// The ledger's state.
#[derive(Debug, Default)]
pub struct Ledger {
    clients: BTreeMap<u32, ClientState>,
    processed: u64,
}

impl Ledger {
    /// Processes one request (`None`: a new client past [`MAX_CLIENTS`]).
    pub fn process(&mut self, r: Request) -> Option<Answer> {
        if !self.clients.contains_key(&r.client) && self.clients.len() >= MAX_CLIENTS {
            return None;
        }
        let c = self.clients.entry(r.client).or_default();
        let verdict = match c.last {
            None if r.seq == 0 => Verdict::InOrder,
            None => {
                skip(c, 0, r.seq);
                Verdict::Skipped
            }
            Some(last) if Some(r.seq) == last.checked_add(1) => Verdict::InOrder,
            Some(last) if r.seq > last => {
                skip(c, last.saturating_add(1), r.seq);
                Verdict::Skipped
            }
            Some(_) if c.skipped.remove(&r.seq) => Verdict::Late,
            Some(_) => Verdict::Duplicate,
        };
        c.last = Some(c.last.map_or(r.seq, |l| l.max(r.seq)));
        c.count = c.count.saturating_add(1);
        self.processed += 1;
        Some(Answer {
            client: r.client,
            seq: r.seq,
            verdict,
            processed: self.processed,
            client_count: c.count,
        })
    }
}

impl Ledger {
    pub fn view(&self, client: u32) -> ClientView {
        let c = self.clients.get(&client);
        ClientView {
            client,
            last: c.and_then(|c| c.last),
            count: c.map_or(0, |c| c.count),
        }
    }
}

/// Remembers `from..to` as skipped, forgetting the oldest past the bound.
fn skip(c: &mut ClientState, from: u64, to: u64) {
    let start = from.max(to.saturating_sub(MAX_SKIPPED as u64));
    c.skipped.extend(start..to);
    while c.skipped.len() > MAX_SKIPPED {
        c.skipped.pop_first();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(client: u32, seq: u64) -> Request {
        Request { client, seq }
    }

    #[test]
    fn wire_round_trips_and_refuses_garbage() {
        let r = req(7, 1 << 40);
        assert_eq!(Request::decode(&r.encode()), Some(r));
        let a = Answer {
            client: 7,
            seq: 9,
            verdict: Verdict::Late,
            processed: 1 << 33,
            client_count: 5,
        };
        assert_eq!(Answer::decode(&a.encode()), Some(a));
        assert_eq!(Request::decode(b"DXQ1short"), None);
        assert_eq!(Request::decode(&[0u8; REQUEST_LEN]), None);
        let mut bad = a.encode();
        bad[16] = 9;
        assert_eq!(Answer::decode(&bad), None);
        for n in 0..ANSWER_LEN {
            assert_eq!(Answer::decode(&a.encode()[..n]), None);
        }
    }

    #[test]
    fn a_query_tells_what_is_remembered_of_a_client() {
        let mut l = Ledger::default();
        assert_eq!(decode_query(&encode_query(4)), Some(4));
        assert_eq!(decode_query(b"DXS1"), None);
        let none = l.view(4);
        assert_eq!(ClientView::decode(&none.encode()), Some(none));
        assert_eq!(none.last, None);
        l.process(req(4, 0));
        l.process(req(4, 3));
        let v = l.view(4);
        assert_eq!((v.last, v.count), (Some(3), 2));
        assert_eq!(ClientView::decode(&v.encode()), Some(v));
    }

    #[test]
    fn judges_each_client_on_its_own() {
        let mut l = Ledger::default();
        let v = |l: &mut Ledger, c, s| l.process(req(c, s)).map(|a| a.verdict);
        assert_eq!(v(&mut l, 1, 0), Some(Verdict::InOrder));
        assert_eq!(v(&mut l, 2, 0), Some(Verdict::InOrder));
        assert_eq!(v(&mut l, 1, 1), Some(Verdict::InOrder));
        assert_eq!(v(&mut l, 1, 4), Some(Verdict::Skipped));
        assert_eq!(v(&mut l, 1, 2), Some(Verdict::Late));
        assert_eq!(v(&mut l, 1, 2), Some(Verdict::Duplicate));
        assert_eq!(v(&mut l, 1, 4), Some(Verdict::Duplicate));
        assert_eq!(v(&mut l, 1, 3), Some(Verdict::Late));
        assert_eq!(v(&mut l, 1, 5), Some(Verdict::InOrder));
        assert_eq!(v(&mut l, 2, 1), Some(Verdict::InOrder));
        let a = l.process(req(3, 5)).unwrap();
        assert_eq!(
            (a.verdict, a.processed, a.client_count),
            (Verdict::Skipped, 11, 1)
        );
    }

    #[test]
    fn bounded_in_clients_and_skipped_numbers() {
        let mut l = Ledger::default();
        for c in 0..MAX_CLIENTS as u32 {
            assert!(l.process(req(c, 0)).is_some());
        }
        assert!(l.process(req(u32::MAX, 0)).is_none());
        assert!(l.process(req(0, u64::MAX - 1)).is_some());
        let c = &l.clients[&0];
        assert!(c.skipped.len() <= MAX_SKIPPED);
    }
}
