//! Serve: joined; stay running, and watch the kubelet's client certificate: again each
//! time its files change (inotify) and when its expiry warning comes due, not on a timer,
//! so an idle agent does not wake up.

use super::wait::{next_event, watch_dirs};
use super::{Agent, Exit, Joined, Phase};
use crate::kubelet;
use crate::pki;
use std::time::Duration;
use tracing::{info, warn};

/// Warn this long before the kubelet client certificate expires.
const EXPIRY_WARNING_SECS: i64 = 7 * 24 * 3600;
/// Expiry is wall-clock time, sleeps are monotonic: look again at least this often so
/// a suspended machine or a stepped clock cannot make the warning late by much.
const LONGEST_SLEEP: Duration = Duration::from_secs(24 * 3600);

impl Agent {
    /// Joined: report, then watch the kubelet's credentials until stopped.
    pub(super) async fn serve(self, joined: Joined) -> Exit {
        {
            let mut state = self.state.lock().expect("state lock");
            state.joined = true;
            state.failure = None;
            state.last_error = None;
            if joined.fresh || state.joined_since.is_none() {
                state.joined_since = Some(crate::state::now_rfc3339());
                state.join_duration_ms = Some(self.started.elapsed().as_millis() as u64);
            }
        }
        if joined.fresh {
            self.attempt_ended(None);
        }
        self.enter(
            Phase::Serve,
            &format!(
                "node \"{}\" joined; kubelet running",
                self.settings.join.node_name
            ),
        );
        self.ready();
        let mut files = watch_dirs(&[
            self.paths.kubelet_dir().join("pki"),
            self.paths.kubernetes_dir(),
        ]);
        let mut ca = joined.ca;
        let mut said = String::new();
        loop {
            if let Ok(pem) = std::fs::read(self.paths.cluster_ca())
                && let Ok(fresh) = pki::pem_certificates(&pem, "cluster CA")
            {
                ca = fresh;
            }
            let seen = self.credentials(&ca);
            let says = seen.to_string();
            if says != said {
                match &seen {
                    Credentials::Invalid(_) => warn!(failure = "tls-bootstrap-stuck", "{says}"),
                    Credentials::Expiring { .. } => warn!("{says}"),
                    Credentials::Valid { .. } => info!("{says}"),
                }
                said = says;
            }
            let next_look = seen.next_look();
            tokio::select! {
                _ = tokio::time::sleep(next_look.min(LONGEST_SLEEP)) => {}
                _ = next_event(&mut files) => {}
            }
        }
    }

    /// The kubelet's credentials as they are now.
    fn credentials(&self, ca: &[rustls::pki_types::CertificateDer<'static>]) -> Credentials {
        let node = &self.settings.join.node_name;
        match kubelet::check_kubelet_conf(&self.paths, ca, node) {
            Ok(creds) if creds.summary.expires_in_secs < EXPIRY_WARNING_SECS => {
                Credentials::Expiring {
                    not_after: creds.summary.not_after,
                    secs_left: creds.summary.expires_in_secs,
                }
            }
            Ok(creds) => Credentials::Valid {
                subject: creds.summary.subject,
                not_after: creds.summary.not_after,
                secs_left: creds.summary.expires_in_secs,
            },
            Err(problem) => Credentials::Invalid(problem.to_string()),
        }
    }
}

/// What the serve phase sees of the kubelet's client certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Credentials {
    #[error("the kubelet client certificate ({subject}) is valid until {not_after}")]
    Valid {
        subject: String,
        not_after: String,
        secs_left: i64,
    },
    #[error(
        "the kubelet client certificate expires {not_after} and has not been rotated; check that rotateCertificates is on and CSRs are approved"
    )]
    Expiring { not_after: String, secs_left: i64 },
    #[error(
        "the kubelet's credentials are no longer valid ({0}): the kubelet will run anonymous; restart kube-join-agent to rejoin"
    )]
    Invalid(String),
}

impl Credentials {
    /// When to look again without a file event: when the expiry warning comes due,
    /// when the certificate expires.
    fn next_look(&self) -> Duration {
        let secs = match self {
            Credentials::Valid { secs_left, .. } => secs_left - EXPIRY_WARNING_SECS,
            Credentials::Expiring { secs_left, .. } => *secs_left,
            Credentials::Invalid(_) => LONGEST_SLEEP.as_secs() as i64,
        };
        Duration::from_secs(secs.max(1) as u64)
    }
}
