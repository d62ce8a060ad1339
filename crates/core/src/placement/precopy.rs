//! How many bytes a live migration moves: the pre-copy model.
//!
//! Round 0 copies all of memory; while a round runs the guest dirties pages
//! at `dirty` bytes/s, which the next round copies again. With link
//! bandwidth `bw` each round copies `λ = dirty / bw` times the previous one,
//! so after `n` iterative rounds plus the final stop-and-copy:
//!
//! ```text
//! bytes = mem * (1 + λ + λ^2 + ... + λ^n) = mem * (1 - λ^(n+1)) / (1 - λ)
//! ```
//!
//! `λ = 0` moves exactly `mem`; as `λ -> 1` the sum grows towards
//! `mem * (n + 1)`. With `λ >= 1` pre-copy never converges (the guest dirties
//! faster than the link copies); the model then charges a large but finite
//! penalty, `mem * (n + 1) * nonconverging_factor`, so a decision can still
//! rank such hosts (last) without infinities or NaN.

/// Result of [`precopy_bytes`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Precopy {
    /// Bytes sent over the network (finite, >= 0).
    pub bytes: f64,
    /// dirty rate / bandwidth; `f64::MAX` when the bandwidth is 0.
    pub lambda: f64,
    /// False when `λ >= 1`: `bytes` is then the penalty.
    pub converges: bool,
}

/// Bytes moved by pre-copy for `mem_bytes` of guest memory dirtied at
/// `dirty_bps` over a path of `bandwidth_bps`, with at most `max_rounds`
/// iterative rounds. Out-of-domain inputs (negative, NaN, infinite) are
/// clamped: memory and dirty rate to 0, a bandwidth that is not positive to
/// "no bandwidth" (non-converging); a `nonconverging_factor` below 1 or not
/// finite counts as 1.
pub fn precopy_bytes(
    mem_bytes: f64,
    dirty_bps: f64,
    bandwidth_bps: f64,
    max_rounds: u32,
    nonconverging_factor: f64,
) -> Precopy {
    let clamp = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
    let mem = clamp(mem_bytes);
    let dirty = clamp(dirty_bps);
    let rounds = f64::from(max_rounds) + 1.0;
    let factor = if nonconverging_factor.is_finite() && nonconverging_factor >= 1.0 {
        nonconverging_factor
    } else {
        1.0
    };
    let lambda = if dirty == 0.0 {
        0.0
    } else if bandwidth_bps.is_nan() || bandwidth_bps <= 0.0 {
        f64::MAX
    } else {
        // bandwidth may be +inf (no limit): λ = 0.
        dirty / bandwidth_bps
    };
    if lambda >= 1.0 {
        return Precopy {
            bytes: mem * rounds * factor,
            lambda,
            converges: false,
        };
    }
    let one_minus = 1.0 - lambda;
    let sum = if one_minus < 1e-9 {
        rounds
    } else {
        // powi takes i32; rounds beyond i32 are not meaningful (λ^n is 0 long before).
        let n1 = max_rounds.saturating_add(1).min(i32::MAX as u32) as i32;
        ((1.0 - lambda.powi(n1)) / one_minus).min(rounds)
    };
    Precopy {
        bytes: mem * sum,
        lambda,
        converges: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    #[test]
    fn no_dirtying_moves_memory_once() {
        let p = precopy_bytes(4.0 * GIB, 0.0, 1e9, 30, 10.0);
        assert_eq!(p.bytes, 4.0 * GIB);
        assert_eq!(p.lambda, 0.0);
        assert!(p.converges);
        // No bandwidth limit at all: still λ = 0.
        assert_eq!(precopy_bytes(GIB, 1e6, f64::INFINITY, 30, 10.0).bytes, GIB);
    }

    #[test]
    fn matches_the_geometric_sum() {
        let p = precopy_bytes(1000.0, 250.0, 1000.0, 3, 10.0);
        // 1000 * (1 + 1/4 + 1/16 + 1/64)
        assert!((p.bytes - 1328.125).abs() < 1e-9, "{p:?}");
        assert_eq!(p.lambda, 0.25);
    }

    #[test]
    fn grows_as_lambda_approaches_one() {
        let mut last = 0.0;
        for l in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999_999, 0.999_999_999_9] {
            let p = precopy_bytes(GIB, l * 1e9, 1e9, 30, 10.0);
            assert!(p.converges);
            assert!(
                p.bytes > last || (l == 0.0 && p.bytes == GIB),
                "λ={l}: {p:?}"
            );
            assert!(p.bytes <= 31.0 * GIB * (1.0 + 1e-12));
            last = p.bytes;
        }
        assert!(last > 30.9 * GIB);
    }

    #[test]
    fn nonconverging_is_a_large_finite_penalty() {
        let conv_max = 31.0 * GIB;
        for (dirty, bw) in [
            (1e9, 1e9),
            (2e9, 1e9),
            (1e9, 0.0),
            (1e9, -3.0),
            (1e9, f64::NAN),
        ] {
            let p = precopy_bytes(GIB, dirty, bw, 30, 10.0);
            assert!(!p.converges, "{dirty} {bw}");
            assert!(p.bytes.is_finite() && p.lambda.is_finite());
            assert_eq!(p.bytes, conv_max * 10.0);
        }
        // Bad memory / dirty inputs never give NaN.
        for m in [f64::NAN, -1.0, f64::INFINITY] {
            let p = precopy_bytes(m, 1.0, 1.0, 30, 10.0);
            assert_eq!(p.bytes, 0.0);
        }
        let p = precopy_bytes(GIB, f64::NAN, 1e9, 30, f64::NAN);
        assert_eq!(p.bytes, GIB);
        let p = precopy_bytes(GIB, 2e9, 1e9, u32::MAX, f64::NAN);
        assert!(p.bytes.is_finite());
    }
}
