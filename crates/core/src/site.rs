//! S5 protocol facts shared by agent, controller and CLI: what the network
//! element of a VM's host does with the VM's traffic in its site, and what
//! it reports.
//!
//! A VM replicated across sites has one copy running (the active side) and
//! one paused (its replica's host). Each site's network delivers the VM's
//! address to the copy in that site; the paused side's element answers for
//! the address and buffers what is sent to it, in arrival order, until the
//! VM runs there (a site switch) and takes the buffer first.

use serde::{Deserialize, Serialize};

/// What a VM's element does with frames sent to the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferMode {
    /// Deliver (the VM runs here).
    Pass,
    /// Answer ARP for the VM's address and keep every frame sent to the
    /// VM, in order (the VM is paused here or not running here).
    Buffer,
    /// The VM runs here again: buffered frames go to it first, in order,
    /// as fast as it takes them; frames arriving meanwhile queue behind
    /// them. Back to `Pass` once the buffer is empty.
    Drain,
}

/// What the site buffer of a VM's element holds and has done.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SiteBufferStatus {
    pub mode: Option<BufferMode>,
    /// Frames buffered now, and their bytes.
    pub buffered: u64,
    pub buffered_bytes: u64,
    /// Age of the oldest buffered frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ms: Option<u64>,
    /// Totals since the element started.
    pub buffered_total: u64,
    pub released_total: u64,
    /// Frames refused because the buffer was full (the newest are dropped:
    /// what was buffered keeps its order).
    pub dropped_full: u64,
    /// Frames dropped because they were not for the VM (broadcasts other
    /// than ARP for its address, other destinations).
    pub dropped_other: u64,
    pub arp_answered: u64,
    /// Deepest the buffer was.
    pub max_depth: u64,
    /// The addresses it answers ARP for while buffering: the VM's own and
    /// those the VM announced (a service address its guest claimed), at
    /// most [`MAX_ADDRESSES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<std::net::Ipv4Addr>,
}

/// The order to buffer for a VM where its replica is: the addresses to
/// answer for besides the VM's own (those it announced on its active
/// side).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferRequest {
    #[serde(default)]
    pub addresses: Vec<std::net::Ipv4Addr>,
}

/// The addresses the active side learned that the paused side does not
/// answer for yet (none while a switch is under way: the sides are
/// trading places).
pub fn addresses_to_share(active: &SiteSide, paused: &SiteSide) -> Vec<std::net::Ipv4Addr> {
    if !active.active || paused.active || active.handed_off.is_some() {
        return Vec::new();
    }
    let known = |s: &SiteSide| {
        s.buffer
            .as_ref()
            .map(|b| b.addresses.clone())
            .unwrap_or_default()
    };
    let have = known(paused);
    known(active)
        .into_iter()
        .filter(|a| !have.contains(a))
        .collect()
}

/// Most addresses a VM's site buffer answers for.
pub const MAX_ADDRESSES: usize = 8;

/// The active side's answer to a handoff: its replica holds the paused
/// VM's state as of checkpoint `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffInfo {
    pub epoch: u64,
    /// From the start of buffering to the replica's acknowledgement.
    pub pause_ms: u64,
    /// What the element buffers here now.
    pub buffer: Option<SiteBufferStatus>,
}

/// One side of a VM replicated across sites, as its host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSide {
    pub vm: String,
    /// The VM runs on this host (else its replica is here).
    pub active: bool,
    /// What the element buffers here.
    pub buffer: Option<SiteBufferStatus>,
    /// Active side: how old the state its replica holds is (since the
    /// newest checkpoint it applied was taken): what losing this host
    /// loses at most, plus the checkpoint on its way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// Paused side: the newest consistent epoch the replica holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    /// Active side: the VM was handed off at this epoch and is paused
    /// here, waiting for the switch to go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_off: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn side(active: bool, handed_off: Option<u64>, addresses: &[u8]) -> SiteSide {
        SiteSide {
            vm: "web".into(),
            active,
            buffer: Some(SiteBufferStatus {
                addresses: addresses
                    .iter()
                    .map(|n| Ipv4Addr::new(10, 0, 0, *n))
                    .collect(),
                ..SiteBufferStatus::default()
            }),
            lag_ms: None,
            applied: None,
            handed_off,
        }
    }

    #[test]
    fn the_paused_side_is_given_only_what_it_lacks_and_never_mid_switch() {
        let running = side(true, None, &[70, 50, 51]);
        let paused = side(false, None, &[70, 50]);
        assert_eq!(
            addresses_to_share(&running, &paused),
            vec![Ipv4Addr::new(10, 0, 0, 51)]
        );
        assert!(addresses_to_share(&running, &side(false, None, &[70, 50, 51])).is_empty());
        assert!(addresses_to_share(&side(true, Some(3), &[70, 50, 51]), &paused).is_empty());
        assert!(addresses_to_share(&running, &side(true, None, &[70])).is_empty());
    }
}
