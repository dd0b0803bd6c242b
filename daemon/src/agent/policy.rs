//! After a failure: classify (failure.rs), log once with cause and fix, clean up what the
//! attempt left, gate kubelet again; then retry after a full-jitter backoff, wait for a
//! new token, or stop.

use super::{Agent, Exit};
use crate::backoff;
use crate::failure::{Failure, Policy};
use crate::kubeadm::{self, Limits};
use crate::reload::ConfigWatch;
use crate::telemetry;
use std::time::Duration;
use tracing::{error, info, warn};

impl Agent {
    /// Classify, log once (cause, fix, and what happens next), clean up, gate kubelet
    /// again, then back off and retry, wait for a new token, or stop.
    pub(super) async fn after_failure(&self, failure: Failure, attempt: u32) -> Option<Exit> {
        let s = &self.settings;
        let policy = failure.policy();
        let exhausted = matches!(policy, Policy::Retry { .. }) && attempt >= s.retry.max_attempts;
        let delay = backoff::delay(s.retry.initial_backoff, s.retry.max_backoff, attempt);
        let next = match policy {
            Policy::Stop => {
                "not retrying: this needs an operator; kubelet stays masked".to_string()
            }
            Policy::Retry { .. } if exhausted => format!(
                "giving up: retry.max_attempts ({}) reached; kubelet stays masked",
                s.retry.max_attempts
            ),
            Policy::Retry { cleanup } => format!(
                "{}retrying in {:.1}s (attempt {} of {})",
                if cleanup { "cleaning up, " } else { "" },
                delay.as_secs_f64(),
                attempt + 1,
                s.retry.max_attempts
            ),
            Policy::WaitForNewToken => format!(
                "waiting for a new token in {} (or SIGHUP after changing the configuration); kubelet stays masked",
                s.join.token_source
            ),
        };
        error!(
            failure = failure.class(),
            "attempt {attempt} failed: {failure}; {next}"
        );
        {
            let mut state = self.state.lock().expect("state lock");
            state.failure = Some(failure.class().to_string());
            state.last_error = Some(failure.to_string());
        }
        self.attempt_ended(Some((failure.class(), failure.to_string())));
        crate::metrics::failure(failure.class());
        crate::metrics::attempt_finished(false);
        if matches!(policy, Policy::Retry { cleanup: true })
            && !exhausted
            && let Err(e) = self.reset().await
        {
            warn!("cleanup after the failed attempt failed: {e}");
        }
        // Whatever happened, kubelet must not run without a valid configuration.
        if let Err(e) = self.gate().close().await {
            warn!("cannot gate {} after the failure: {e}", s.kubelet_unit);
        }
        self.ready();
        match policy {
            Policy::Stop => {
                telemetry::notify_status(&format!("stopped ({}): {failure}", failure.class()));
                Some(Exit::Config)
            }
            Policy::Retry { .. } if exhausted => {
                telemetry::notify_status(&format!(
                    "gave up after {attempt} attempts ({}): {failure}",
                    failure.class()
                ));
                Some(Exit::GaveUp)
            }
            Policy::Retry { .. } => {
                telemetry::notify_status(&format!(
                    "retrying in {}s after {}",
                    delay.as_secs(),
                    failure.class()
                ));
                // A changed configuration or SIGHUP retries at once.
                self.pause(delay).await;
                None
            }
            Policy::WaitForNewToken => {
                telemetry::notify_status(&format!("waiting for a new bootstrap token: {failure}"));
                self.wait_for_new_configuration().await;
                None
            }
        }
    }

    /// `kubeadm reset -f`: removes what a failed join left (certificates, kubeconfigs,
    /// kubelet state) so the next attempt passes kubeadm's preflight.
    pub(super) async fn reset(&self) -> Result<(), Failure> {
        let s = &self.settings;
        info!("cleaning up with `kubeadm reset -f`");
        let limits = Limits {
            deadline: Duration::from_secs(180),
            no_progress: Duration::from_secs(120),
        };
        let args = vec!["reset".to_string(), "-f".to_string()];
        let finished = kubeadm::run(&s.kubeadm_path, &args, limits, &self.secrets(), true).await?;
        if finished.code != Some(0) {
            return Err(Failure::Local {
                detail: format!("`kubeadm reset -f` failed: {}", finished.last_line()),
            });
        }
        Ok(())
    }

    /// Returns once the configuration changed (a new token, most likely).
    async fn wait_for_new_configuration(&self) {
        let mut watch = ConfigWatch::new(&self.paths, &self.settings);
        while watch.next().await.is_none() {}
        info!("the configuration changed: joining again");
    }
}
