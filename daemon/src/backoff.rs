//! Exponential backoff with full jitter (AWS architecture blog's "full jitter"):
//! the sleep is uniform in [0, min(cap, base * 2^n)], which spreads many nodes that
//! failed together (a control plane restart) instead of retrying in lockstep.

use std::time::Duration;

/// The upper bound of the sleep before retry number `retry` (1-based).
pub fn ceiling(initial: Duration, max: Duration, retry: u32) -> Duration {
    let shift = retry.saturating_sub(1).min(30);
    initial.saturating_mul(1u32 << shift).min(max)
}

/// A random sleep in `[0, ceiling]`, with `draw` in `[0, 1)`.
pub fn full_jitter(initial: Duration, max: Duration, retry: u32, draw: f64) -> Duration {
    ceiling(initial, max, retry).mul_f64(draw.clamp(0.0, 1.0))
}

/// The sleep before retry number `retry`, drawn from the process's random source.
pub fn delay(initial: Duration, max: Duration, retry: u32) -> Duration {
    full_jitter(initial, max, retry, fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let s = Duration::from_secs;
        assert_eq!(ceiling(s(5), s(300), 1), s(5));
        assert_eq!(ceiling(s(5), s(300), 2), s(10));
        assert_eq!(ceiling(s(5), s(300), 6), s(160));
        assert_eq!(ceiling(s(5), s(300), 7), s(300));
        assert_eq!(ceiling(s(5), s(300), u32::MAX), s(300));
    }

    proptest! {
        #[test]
        fn jitter_stays_within_the_ceiling(initial in 1u64..10_000, extra in 0u64..1_000_000, retry in 0u32..100, draw in 0.0f64..1.0) {
            let initial = Duration::from_millis(initial);
            let max = initial + Duration::from_millis(extra);
            let d = full_jitter(initial, max, retry, draw);
            prop_assert!(d <= ceiling(initial, max, retry));
            prop_assert!(d <= max);
        }

        #[test]
        fn ceiling_never_decreases(initial in 1u64..10_000, extra in 0u64..1_000_000, retry in 1u32..60) {
            let initial = Duration::from_millis(initial);
            let max = initial + Duration::from_millis(extra);
            prop_assert!(ceiling(initial, max, retry) <= ceiling(initial, max, retry + 1));
        }
    }
}
