//! How long each kind of order to an agent may take before the caller
//! gives up on it (the agent may still carry it out: callers treat a
//! timeout as "may have happened").

use duplex_core::agent_api::WaitFor;
use std::time::Duration;

/// Connecting to an agent.
pub const CONNECT: Duration = Duration::from_secs(3);
/// Host info and the fence: answered from memory.
pub const QUICK: Duration = Duration::from_secs(5);
/// Reading a VM's state, listing VMs.
pub const READ: Duration = Duration::from_secs(10);
/// An order to a guest (a role change runs the service's hooks).
pub const GUEST: Duration = Duration::from_secs(30);
/// An order to a VM's network element.
pub const ELEMENT: Duration = Duration::from_secs(10);
/// Stopping a VM (QEMU asked to quit, then killed).
pub const DELETE: Duration = Duration::from_secs(60);
/// Pause, resume, reset.
pub const CONTROL: Duration = Duration::from_secs(30);
/// Starting a migration (the destination prepares its QEMU).
pub const START_MIGRATION: Duration = Duration::from_secs(60);

/// Creating a VM: until QEMU runs, or until its guest answers (a boot
/// under emulation takes tens of seconds; the agent gives up at 90 s).
pub fn create(wait: WaitFor) -> Duration {
    match wait {
        WaitFor::Ready => Duration::from_secs(150),
        _ => Duration::from_secs(90),
    }
}

/// The shape of every HTTPS client to agents: its connect limit, no proxy
/// (agents are on the cluster's own network).
pub fn shape(b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    b.connect_timeout(CONNECT).no_proxy()
}
