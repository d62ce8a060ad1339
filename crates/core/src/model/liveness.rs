//! When a host counts as failed, and when it is back.

use super::host::HostState;

/// A host whose agent has not reported for this long is marked failed
/// (five missed heartbeats of [`crate::agent_api::AGENT_HEARTBEAT_MS`]).
pub const HOST_FAILURE_TIMEOUT_MS: u64 = 5000;

/// The state a host should move to, or `None` to stay. `silent_ms` is the
/// time since its last report (since the controller took office if none).
/// A failed host that reports again returns to the state it had before
/// (`before_failure`, ready if unknown).
pub fn judge(
    state: HostState,
    before_failure: Option<HostState>,
    silent_ms: u64,
) -> Option<HostState> {
    let silent = silent_ms > HOST_FAILURE_TIMEOUT_MS;
    match (state, silent) {
        (HostState::Failed, false) => Some(before_failure.unwrap_or(HostState::Ready)),
        (HostState::Failed, true) => None,
        (_, true) => Some(HostState::Failed),
        (_, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_silence() {
        for s in HostState::ALL {
            for before in [None, Some(HostState::Maintenance), Some(HostState::Spare)] {
                for ms in [0, HOST_FAILURE_TIMEOUT_MS, HOST_FAILURE_TIMEOUT_MS + 1] {
                    let got = judge(s, before, ms);
                    let silent = ms > HOST_FAILURE_TIMEOUT_MS;
                    match s {
                        HostState::Failed if silent => assert_eq!(got, None),
                        HostState::Failed => {
                            assert_eq!(got, Some(before.unwrap_or(HostState::Ready)))
                        }
                        _ if silent => assert_eq!(got, Some(HostState::Failed)),
                        _ => assert_eq!(got, None),
                    }
                }
            }
        }
    }
}
