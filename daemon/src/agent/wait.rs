//! One way to wait, for every phase: look, and look again at a pace, or at once when a
//! watched file changes, until the look finds what it waits for (or gives up: the look
//! decides its own deadlines), or the configuration changes, or SIGHUP asks for a look
//! now. A fix dropped in while the agent waits (a new token, a corrected fragment) ends
//! any wait within moments: the attempt starts over with it.

use super::{Agent, Stop};
use crate::config::Settings;
use crate::failure::Failure;
use crate::fswatch::{Changes, DirWatch, LOOK_WHILE_WAITING};
use crate::paths::Paths;
use crate::reload::ConfigWatch;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// What a look found.
pub enum Look<T> {
    /// The wait is over: this is its outcome.
    Done(Result<T, Failure>),
    /// Not yet: look again at the pace.
    Again,
    /// Not yet, and not before this long (an API server's Retry-After).
    AgainAfter(Duration),
}

/// How often to look again: `first` for `steady`, then doubling up to `max`. Each
/// pause is jittered (half to one and a half times), so nodes that started waiting
/// together (a fleet booting, a control plane coming back) do not look in lockstep.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    next: Duration,
    max: Duration,
    steady_until: Instant,
}

impl Pace {
    /// `first`, doubling up to `max`.
    pub fn doubling(first: Duration, max: Duration) -> Self {
        Self::steady_then_doubling(first, Duration::ZERO, max)
    }

    /// `first` for `steady` (a change expected within seconds), then doubling to `max`.
    pub fn steady_then_doubling(first: Duration, steady: Duration, max: Duration) -> Self {
        Self {
            next: first,
            max,
            steady_until: Instant::now() + steady,
        }
    }

    /// The pause before the next look, with `draw` in [0, 1).
    fn advance_with(&mut self, draw: f64) -> Duration {
        let pause = self.next.mul_f64(0.5 + draw.clamp(0.0, 1.0));
        if Instant::now() >= self.steady_until {
            self.next = (self.next * 2).min(self.max);
        }
        pause
    }

    /// The pause before the next look.
    fn advance(&mut self) -> Duration {
        self.advance_with(fastrand::f64())
    }
}

impl Agent {
    /// [`until`], watching this agent's configuration.
    pub(super) async fn wait_until<T>(
        &self,
        pace: Pace,
        watch: &[PathBuf],
        look: impl AsyncFnMut() -> Look<T>,
    ) -> Result<T, Stop> {
        until(&self.paths, &self.settings, pace, watch, look).await
    }

    /// Sleeps `pause`, cut short by a changed configuration or SIGHUP.
    pub(super) async fn pause(&self, pause: Duration) {
        let mut config = ConfigWatch::new(&self.paths, &self.settings);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            changed = config.next() => match changed {
                Some(settings) => super::log_reconfigured(&settings),
                None => tracing::info!("SIGHUP: not waiting out the pause"),
            }
        }
    }
}

/// Calls `look` now and again until it is done: after each pause of `pace`, at once
/// after a file event in `watch` (directories that exist), and at SIGHUP. A changed,
/// valid configuration (the one `settings` was read from, below `paths`) ends the wait
/// with [`Stop::Reconfigured`].
pub async fn until<T>(
    paths: &Paths,
    settings: &Settings,
    mut pace: Pace,
    watch: &[PathBuf],
    mut look: impl AsyncFnMut() -> Look<T>,
) -> Result<T, Stop> {
    let mut config = ConfigWatch::new(paths, settings);
    let mut files = DirWatch::new(watch, Changes::Contents, LOOK_WHILE_WAITING);
    loop {
        let pause = match look().await {
            Look::Done(result) => return result.map_err(Stop::Failed),
            Look::Again => pace.advance(),
            // At least what the server asked, and spread over half as long again.
            Look::AgainAfter(after) => after.mul_f64(1.0 + fastrand::f64() / 2.0),
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = files.changed() => {}
            changed = config.next() => {
                if let Some(settings) = changed {
                    return Err(Stop::Reconfigured(settings));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_holds_then_doubles_to_its_cap_jittered() {
        let mut pace = Pace::doubling(Duration::from_millis(500), Duration::from_secs(2));
        let pauses: Vec<_> = (0..4).map(|_| pace.advance_with(0.5).as_millis()).collect();
        assert_eq!(pauses, [500, 1000, 2000, 2000]);
        let mut steady = Pace::steady_then_doubling(
            Duration::from_millis(500),
            Duration::from_secs(3600),
            Duration::from_secs(5),
        );
        assert!((0..5).all(|_| steady.advance_with(0.5) == Duration::from_millis(500)));
        let mut jittered = Pace::doubling(Duration::from_secs(2), Duration::from_secs(2));
        assert_eq!(jittered.advance_with(0.0), Duration::from_secs(1));
        assert_eq!(jittered.advance_with(1.0), Duration::from_secs(3));
        let mut any = Pace::doubling(Duration::from_secs(2), Duration::from_secs(2));
        assert!(
            (0..100)
                .map(|_| any.advance())
                .all(|p| p >= Duration::from_secs(1) && p <= Duration::from_secs(3))
        );
    }
}
