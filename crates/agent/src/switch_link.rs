//! S2 embodiment B, the host's side of the switch: the agent's messages
//! (claim, commit, release of a VM's held output) go out of the interface
//! towards the Duplex switch (`--output-switch`), straight to its port.

use crate::error::AgentError;
use duplex_core::mac::Mac;
use duplex_core::vm_spec::HoldAt;
use duplex_net::packet_socket::PacketSocket;
use duplex_net::switch_proto::Msg;

pub struct SwitchLink {
    sock: PacketSocket,
    /// The interface's own address: the messages' source.
    mac: Mac,
}

impl SwitchLink {
    pub fn open(ifname: &str) -> Result<SwitchLink, AgentError> {
        let failed =
            |e: std::io::Error| AgentError::Config(format!("--output-switch {ifname}: {e}"));
        let sock = PacketSocket::sender(ifname).map_err(failed)?;
        let mac = sock.mac().map_err(failed)?;
        Ok(SwitchLink { sock, mac })
    }

    /// Sends `msgs` in order. A message that cannot be sent is an error:
    /// a commit lost here would hold the output until the next one.
    pub fn send(&self, msgs: &[Msg]) -> Result<(), AgentError> {
        for m in msgs {
            self.sock.send(&[&m.frame(self.mac)]).map_err(|e| {
                AgentError::Unavailable(format!(
                    "switch message {m:?} out of {}: {e}",
                    self.sock.ifname
                ))
            })?;
        }
        Ok(())
    }
}

/// The link a VM held at `at` needs: none for the host, the switch's for
/// the switch (an error naming the flag if this agent has none).
pub fn for_vm<'a>(
    link: Option<&'a SwitchLink>,
    at: HoldAt,
    vm: &str,
) -> Result<Option<&'a SwitchLink>, AgentError> {
    match (at, link) {
        (HoldAt::Host | HoldAt::None, _) => Ok(None),
        (HoldAt::Switch, Some(l)) => Ok(Some(l)),
        (HoldAt::Switch, None) => Err(AgentError::Conflict(format!(
            "VM `{vm}` holds its output in the switch (`hold_at: switch`), but this agent has no switch (start it with --output-switch IFACE)"
        ))),
    }
}
