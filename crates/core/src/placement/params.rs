//! Tunables of the placement engine, with the units of each weight.

use serde::{Deserialize, Serialize};

/// Weights and limits. The impact factor of a candidate host is
///
/// ```text
/// total = traffic_weight     * Σ_peers rate(vm,peer) * hops(candidate, host(peer))      [B/s·hop]
///       + utilization_weight * Σ_peers rate(vm,peer) * c(u(candidate, host(peer)))      [B/s]
///       + memory_weight      * precopy_bytes(current -> candidate) * hops(current, candidate) [B·hop]
/// ```
///
/// with `c(u) = u / (1 - min(u, 0.99))` the congestion of the most loaded
/// link on the path (0 when idle, 1 at 50 %, 9 at 90 %, 99 at saturation).
/// With the defaults a byte/s over a path at 50 % load costs as much as one
/// more hop, and the bytes a migration moves count as if spread over one
/// hour (`memory_weight = 1/3600`): a move must save more network than it
/// costs within the hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub traffic_weight: f64,
    pub utilization_weight: f64,
    pub memory_weight: f64,
    /// A host with this many migrations in flight takes no more.
    pub max_concurrent_migrations: u32,
    /// Bytes/s a migration may use (further limited by the path's free bandwidth).
    pub migration_bandwidth_bps: f64,
    /// Iterative pre-copy rounds before stop-and-copy.
    pub max_precopy_rounds: u32,
    /// Penalty multiplier when pre-copy cannot converge (see [`super::precopy`]).
    pub nonconverging_factor: f64,
    /// Let a VM move to another site than its current host's.
    pub allow_cross_site: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            traffic_weight: 1.0,
            utilization_weight: 1.0,
            memory_weight: 1.0 / 3600.0,
            max_concurrent_migrations: 2,
            migration_bandwidth_bps: 10e9 / 8.0,
            max_precopy_rounds: 30,
            nonconverging_factor: 10.0,
            allow_cross_site: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parameter `{name}` is {value}; it must be {want}")]
pub struct ParamError {
    pub name: &'static str,
    pub value: f64,
    pub want: &'static str,
}

impl Params {
    pub fn validate(&self) -> Result<(), ParamError> {
        let check = |name, value: f64, ok: bool, want| {
            if ok {
                Ok(())
            } else {
                Err(ParamError { name, value, want })
            }
        };
        for (name, v) in [
            ("traffic_weight", self.traffic_weight),
            ("utilization_weight", self.utilization_weight),
            ("memory_weight", self.memory_weight),
        ] {
            check(name, v, v.is_finite() && v >= 0.0, ">= 0 and finite")?;
        }
        let bw = self.migration_bandwidth_bps;
        check(
            "migration_bandwidth_bps",
            bw,
            bw.is_finite() && bw > 0.0,
            "> 0 and finite",
        )?;
        let f = self.nonconverging_factor;
        check(
            "nonconverging_factor",
            f,
            f.is_finite() && f >= 1.0,
            ">= 1 and finite",
        )?;
        check(
            "max_precopy_rounds",
            f64::from(self.max_precopy_rounds),
            self.max_precopy_rounds <= 10_000,
            "<= 10000",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_named() {
        Params::default().validate().unwrap();
        let p = Params {
            memory_weight: -1.0,
            ..Params::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "parameter `memory_weight` is -1; it must be >= 0 and finite"
        );
        let p = Params {
            migration_bandwidth_bps: 0.0,
            ..Params::default()
        };
        assert!(p.validate().is_err());
        let p = Params {
            nonconverging_factor: f64::NAN,
            ..Params::default()
        };
        assert!(p.validate().is_err());
        let p: Params = serde_json::from_str(r#"{"max_concurrent_migrations":5}"#).unwrap();
        assert_eq!(p.max_concurrent_migrations, 5);
        assert_eq!(p.traffic_weight, 1.0);
        assert!(serde_json::from_str::<Params>(r#"{"bogus":1}"#).is_err());
    }
}
