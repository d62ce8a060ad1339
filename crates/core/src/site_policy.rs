//! S5: when a VM replicated across sites switches on its own. The paused
//! side's element buffers what its site sends; the policy switches when
//! that traffic has waited long enough or piled up, or on a schedule, and
//! never sooner than `min_stay_ms` after the last switch (so two busy
//! sites do not make the VM bounce). Pure: time comes in as an argument.

use crate::site::SiteBufferStatus;
use serde::{Deserialize, Serialize};

/// Shortest stay an operator may set (a switch takes about a second).
pub const MIN_STAY_MS: u64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitePolicy {
    /// Switch when the oldest buffered frame is this old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Switch when this many frames are buffered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_buffered: Option<u64>,
    /// Switch this often, buffered traffic or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// Stay at least this long after a switch.
    pub min_stay_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "why")]
pub enum Why {
    Age { oldest_ms: u64 },
    Size { buffered: u64 },
    Schedule { every_ms: u64 },
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Age { oldest_ms } => {
                write!(f, "the other site's oldest request waited {oldest_ms} ms")
            }
            Why::Size { buffered } => write!(f, "the other site buffered {buffered} frames"),
            Why::Schedule { every_ms } => write!(f, "its schedule (every {every_ms} ms)"),
        }
    }
}

impl SitePolicy {
    pub fn validate(&self) -> Result<(), String> {
        if self.min_stay_ms < MIN_STAY_MS {
            return Err(format!(
                "field `min_stay_ms`: {} ms is shorter than {MIN_STAY_MS} ms",
                self.min_stay_ms
            ));
        }
        if self.max_age_ms.is_none() && self.max_buffered.is_none() && self.every_ms.is_none() {
            return Err("set at least one of `max_age_ms`, `max_buffered`, `every_ms`".into());
        }
        if self.max_buffered == Some(0) || self.every_ms == Some(0) {
            return Err("`max_buffered` and `every_ms` must be positive".into());
        }
        Ok(())
    }

    /// Whether to switch now, `stayed_ms` after the last switch, with the
    /// paused side buffering `paused` (`None`: not known now).
    pub fn due(&self, stayed_ms: u64, paused: Option<&SiteBufferStatus>) -> Option<Why> {
        if stayed_ms < self.min_stay_ms {
            return None;
        }
        if let (Some(max), Some(b)) = (self.max_age_ms, paused) {
            if let Some(oldest_ms) = b.oldest_ms.filter(|o| *o >= max) {
                return Some(Why::Age { oldest_ms });
            }
        }
        if let (Some(max), Some(b)) = (self.max_buffered, paused) {
            if b.buffered >= max {
                return Some(Why::Size {
                    buffered: b.buffered,
                });
            }
        }
        match self.every_ms {
            Some(every_ms) if stayed_ms >= every_ms => Some(Why::Schedule { every_ms }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(buffered: u64, oldest_ms: Option<u64>) -> SiteBufferStatus {
        SiteBufferStatus {
            buffered,
            oldest_ms,
            ..SiteBufferStatus::default()
        }
    }

    fn policy() -> SitePolicy {
        SitePolicy {
            max_age_ms: Some(300),
            max_buffered: Some(100),
            every_ms: Some(10_000),
            min_stay_ms: 1_000,
        }
    }

    #[test]
    fn switches_on_age_size_or_schedule_after_the_stay() {
        let p = policy();
        assert_eq!(p.due(999, Some(&buf(500, Some(900)))), None, "stays first");
        assert_eq!(
            p.due(1_000, Some(&buf(1, Some(300)))),
            Some(Why::Age { oldest_ms: 300 })
        );
        assert_eq!(
            p.due(1_000, Some(&buf(100, Some(10)))),
            Some(Why::Size { buffered: 100 })
        );
        assert_eq!(p.due(1_000, Some(&buf(0, None))), None);
        assert_eq!(p.due(1_000, None), None, "nothing known, nothing due");
        assert_eq!(
            p.due(10_000, None),
            Some(Why::Schedule { every_ms: 10_000 })
        );
    }

    #[test]
    fn refuses_a_policy_that_would_bounce_or_never_act() {
        assert!(policy().validate().is_ok());
        let short = SitePolicy {
            min_stay_ms: 10,
            ..policy()
        };
        assert!(short.validate().unwrap_err().contains("min_stay_ms"));
        let none = SitePolicy {
            max_age_ms: None,
            max_buffered: None,
            every_ms: None,
            min_stay_ms: 1_000,
        };
        assert!(none.validate().is_err());
        let zero = SitePolicy {
            max_buffered: Some(0),
            ..policy()
        };
        assert!(zero.validate().is_err());
    }
}
