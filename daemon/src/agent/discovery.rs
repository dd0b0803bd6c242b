//! Discovery, before kubeadm runs: cluster-info fetched, the token's JWS verified and
//! the CA pinned, so a dead token or a wrong pin is named up front. Only what the
//! signature or the pin establishes is final; a starting API server's answers are
//! waited out until `timeouts.discovery`.

use super::wait::{self, Look, Pace};
use super::{Agent, Phase, Stop};
use crate::config::Settings;
use crate::discovery::{self, ClusterInfo, DiscoveryError};
use crate::failure::Failure;
use crate::paths::Paths;
use crate::pki;
use crate::telemetry;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// A token created moments ago is signed within seconds by the controller manager's
/// bootstrap signer; past this grace a missing signature means the token is dead.
const TOKEN_SIGNATURE_GRACE: Duration = Duration::from_secs(60);

/// A first look fetched longer ago than this is fetched again: preflight waited (for
/// the runtime, say), and the cluster may have changed meanwhile.
const FIRST_LOOK_FRESH: Duration = Duration::from_secs(2);

/// Discovery's first look, fetched while preflight runs: cluster-info's GET and the
/// token's signature need nothing preflight finds out, and preflight spends tens of
/// milliseconds waiting for `kubeadm version` and the runtime. A verified answer is
/// used by the discovery phase, in its turn, as if fetched then; any other is fetched
/// again there, so nothing is said or decided before. Dropped unused (preflight
/// failed), the fetch is cancelled.
pub(super) struct FirstLook {
    task: tokio::task::JoinHandle<Result<ClusterInfo, DiscoveryError>>,
    started: Instant,
}

impl FirstLook {
    pub(super) fn start(s: &Settings) -> Self {
        let (endpoint, token, pins) = (
            s.join.api_server.clone(),
            s.join.token.clone(),
            s.join.ca_pins.clone(),
        );
        Self {
            task: tokio::spawn(async move { discovery::discover(&endpoint, &token, &pins).await }),
            started: Instant::now(),
        }
    }

    /// The verified cluster-info, if fetched recently. Anything else is looked at
    /// again in the discovery phase's own turn: an API server that refused while
    /// preflight waited for its port may be up now, and a wait is said from there.
    async fn answer(mut self) -> Option<ClusterInfo> {
        if self.started.elapsed() > FIRST_LOOK_FRESH {
            return None;
        }
        (&mut self.task).await.ok()?.ok()
    }
}

impl Drop for FirstLook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Agent {
    /// cluster-info fetched, the token's signature verified, the CA pinned.
    pub(super) async fn discovery(&self, first: FirstLook) -> Result<ClusterInfo, Stop> {
        self.enter(
            Phase::Discovery,
            &format!(
                "fetching cluster-info from {}",
                self.settings.join.api_server
            ),
        );
        discover_from(&self.paths, &self.settings, Some(first)).await
    }
}

/// Discovery until verified, or until its deadlines: the agent's discovery phase
/// without the phase line, for anything that runs it (the fleet simulation runs a
/// thousand).
pub async fn discover(paths: &Paths, s: &Settings) -> Result<ClusterInfo, Stop> {
    discover_from(paths, s, None).await
}

/// [`discover`], its first look taken from `first` when that is fresh.
async fn discover_from(
    paths: &Paths,
    s: &Settings,
    mut first: Option<FirstLook>,
) -> Result<ClusterInfo, Stop> {
    let started = Instant::now();
    let mut warned_token = false;
    let mut last_seen = String::new();
    // Every 0.5 s while a token created moments ago may get its signature or a
    // starting API server its RBAC policy, then backing off to kubeadm's 5 s.
    let pace = Pace::steady_then_doubling(
        Duration::from_millis(500),
        Duration::from_secs(10),
        Duration::from_secs(5),
    );
    wait::until(paths, s, pace, &[], async || {
        let prefetched = match first.take() {
            Some(look) => look.answer().await,
            None => None,
        };
        let answer = match prefetched {
            Some(info) => Ok(info),
            None => discovery::discover(&s.join.api_server, &s.join.token, &s.join.ca_pins).await,
        };
        match answer {
            Ok(info) => {
                if s.join.ca_pins.is_empty() {
                    warn!(
                        "cluster CA accepted without a pin (unsafe_skip_ca_verification = true)"
                    );
                }
                if let Some(skew) = info.clock_skew_secs.filter(|s| s.abs() > 60) {
                    warn!(
                        "this node's clock is {}s {} the API server's: certificates may look not-yet-valid or expired; fix time synchronization (systemd-timesyncd, chrony)",
                        skew.abs(),
                        if skew > 0 { "ahead of" } else { "behind" }
                    );
                }
                let pins: Vec<_> = info
                    .ca
                    .iter()
                    .filter_map(|c| pki::spki_pin(c, "ca").ok())
                    .map(|p| p.0)
                    .collect();
                info!(
                    phase = Phase::Discovery.name(),
                    "cluster-info verified: token signature valid, CA {} pinned",
                    pins.join(", ")
                );
                Look::Done(Ok(info))
            }
            Err(DiscoveryError::TokenUnknown { token_id }) => {
                if started.elapsed() >= TOKEN_SIGNATURE_GRACE.min(s.timeouts.discovery) {
                    return Look::Done(Err(Failure::TokenInvalid {
                        token_id,
                        source_name: s.join.token_source.to_string(),
                    }));
                }
                if !warned_token {
                    warn!(
                        "cluster-info has no signature for token id \"{token_id}\": the token is unknown, expired, or was created moments ago (the controller manager signs a new one within seconds); create one with `kubeadm token create` on a control plane and write it to {}; looking again for up to {}s",
                        s.join.token_source,
                        TOKEN_SIGNATURE_GRACE.as_secs()
                    );
                    warned_token = true;
                }
                Look::Again
            }
            // Established by the token's signature or the pin: no retry changes it.
            Err(e @ DiscoveryError::CaPinMismatch { .. }) => {
                Look::Done(Err(Failure::CaPinMismatch {
                    detail: e.to_string(),
                }))
            }
            Err(e) if e.is_verified() => Look::Done(Err(Failure::ClusterInfoInvalid {
                detail: e.to_string(),
            })),
            // Anything else may be a starting API server, or anyone on the path:
            // waited out until timeouts.discovery, then named as what it is.
            Err(e) => {
                let waited = started.elapsed();
                if waited >= s.timeouts.discovery {
                    return Look::Done(Err(if e.is_outage() {
                        Failure::ApiServerUnreachable {
                            detail: e.to_string(),
                            port: s.join.api_server.port,
                        }
                    } else {
                        Failure::ClusterInfoInvalid {
                            detail: format!(
                                "{e} (answered so for the {} of timeouts.discovery)",
                                humantime::format_duration(s.timeouts.discovery)
                            ),
                        }
                    }));
                }
                let text = e.to_string();
                if text != last_seen {
                    info!(
                        phase = Phase::Discovery.name(),
                        "waiting: {text}; retrying for up to {} more (timeouts.discovery)",
                        humantime::format_duration(Duration::from_secs(
                            (s.timeouts.discovery - waited).as_secs()
                        ))
                    );
                    telemetry::notify_status(&format!("discovery: waiting: {text}"));
                    last_seen = text;
                }
                match e.retry_after() {
                    Some(after) => Look::AgainAfter(after),
                    None => Look::Again,
                }
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(answer: Result<ClusterInfo, DiscoveryError>, age: Duration) -> FirstLook {
        FirstLook {
            task: tokio::spawn(async move { answer }),
            started: Instant::now() - age,
        }
    }

    fn unknown() -> Result<ClusterInfo, DiscoveryError> {
        Err(DiscoveryError::TokenUnknown {
            token_id: "abcdef".into(),
        })
    }

    fn verified() -> Result<ClusterInfo, DiscoveryError> {
        Ok(ClusterInfo {
            ca: Vec::new(),
            ca_pem: Vec::new(),
            server: "https://127.0.0.1:6443".into(),
            clock_skew_secs: None,
        })
    }

    #[tokio::test]
    async fn only_a_fresh_verified_first_look_is_used() {
        let fresh = look(verified(), FIRST_LOOK_FRESH / 2);
        assert!(fresh.answer().await.is_some());
        let stale = look(verified(), FIRST_LOOK_FRESH * 2);
        assert!(stale.answer().await.is_none());
        // Said and decided in the discovery phase's own look, not from the first one.
        let refused = look(unknown(), Duration::ZERO);
        assert!(refused.answer().await.is_none());
    }

    #[tokio::test]
    async fn an_unused_first_look_is_cancelled() {
        let first = FirstLook {
            task: tokio::spawn(std::future::pending()),
            started: Instant::now(),
        };
        let handle = first.task.abort_handle();
        drop(first);
        tokio::task::yield_now().await;
        assert!(handle.is_finished());
    }
}
