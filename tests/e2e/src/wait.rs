//! Polling with a deadline, and errors that say what was last seen.

use anyhow::{Result, anyhow};
use std::time::{Duration, Instant};

/// Polls `f` every `poll` until it returns `Some`, for at most `timeout`.
///
/// `f` has no way to describe what it saw; when that matters use [`until_ok`], whose
/// error carries the last observed state.
pub fn until<T>(timeout: Duration, poll: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    let mut polls = 0u32;
    loop {
        polls += 1;
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(anyhow!(
                "condition not met within {timeout:?} ({polls} polls)"
            ));
        }
        std::thread::sleep(poll);
    }
}

/// Polls `f` every `poll` until it returns `Ok`, for at most `timeout`. An `Err` from `f`
/// means "not yet" and describes the state it saw; on timeout the error names `what`, the
/// time waited and that last observed state.
pub fn until_ok<T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut f: impl FnMut() -> Result<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(last) => {
                if start.elapsed() >= timeout {
                    return Err(anyhow!(
                        "timed out after {:.1}s waiting for {what}; last observed: {last:#}",
                        start.elapsed().as_secs_f64()
                    ));
                }
            }
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_returns_the_value() {
        let mut n = 0;
        let v = until(Duration::from_secs(1), Duration::from_millis(1), || {
            n += 1;
            (n == 3).then_some(n)
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn until_ok_reports_last_state() {
        let mut n = 0;
        let err = until_ok(
            "n to reach 1000",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || {
                n += 1;
                Err::<(), _>(anyhow!("n is {n}"))
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("n to reach 1000"), "{err}");
        assert!(err.contains("last observed: n is"), "{err}");
    }
}
