//! Serve: joined; stay running, and watch the kubelet's client certificate: again each
//! time its files change (inotify) and when its expiry warning comes due, not on a timer,
//! so an idle agent does not wake up.

use super::record::RecordRetry;
use super::{Agent, Exit, Joined, Phase};
use crate::fswatch::{Changes, DirWatch};
use crate::kubelet;
use crate::pki;
use crate::systemd::UnitChanges;
use std::time::Duration;
use tracing::{info, warn};

/// Expiry is wall-clock time, sleeps are monotonic: look again at least this often so
/// a suspended machine or a stepped clock cannot make the warning late by much.
const LONGEST_SLEEP: Duration = Duration::from_secs(24 * 3600);

/// How often an idle agent looks at the kubelet's certificate files when inotify is not
/// available: a rotated or lost certificate is seen this late at most.
const LOOK_WITHOUT_INOTIFY: Duration = Duration::from_secs(10);

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
            crate::metrics::attempt_finished(true);
        }
        let took = self.state.lock().expect("state lock").join_duration_ms;
        crate::metrics::joined(std::time::Duration::from_millis(took.unwrap_or(0)));
        self.enter(
            Phase::Serve,
            &format!(
                "node \"{}\" joined; kubelet running",
                self.settings.join.node_name
            ),
        );
        self.ready();
        // The record's next try, while a busy API server keeps it from being posted.
        let mut record = RecordRetry::default();
        record.after(self.record_join(&joined).await);
        let mut files = DirWatch::new(
            &[
                self.paths.kubelet_dir().join("pki"),
                self.paths.kubernetes_dir(),
            ],
            Changes::Contents,
            LOOK_WITHOUT_INOTIFY,
        );
        let unit = &self.settings.kubelet_unit;
        let mut kubelet_changes = match self.systemd.unit_changes(unit).await {
            Ok(changes) => Some(changes),
            Err(e) => {
                warn!("cannot watch {unit} ({e}); its failures are not reported");
                None
            }
        };
        let mut restarts = self.systemd.restarts(unit).await.unwrap_or(0);
        let mut ca = joined.ca.clone();
        let mut said = String::new();
        let mut kubelet_said: Option<String> = None;
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
            let kubelet = self.kubelet_problem(&mut restarts).await;
            if kubelet != kubelet_said {
                match &kubelet {
                    Some(problem) => warn!("{problem}"),
                    None if kubelet_said.is_some() => info!("{unit} is running again"),
                    None => {}
                }
                kubelet_said = kubelet.clone();
            }
            self.watch_says(seen.problem().into_iter().chain(kubelet).collect());
            if record.due() {
                record.after(self.record_join(&joined).await);
            }
            let next_look = seen
                .next_look(self.warning_secs())
                .min(LONGEST_SLEEP)
                .min(record.wait().unwrap_or(LONGEST_SLEEP));
            tokio::select! {
                _ = tokio::time::sleep(next_look) => {}
                _ = files.changed() => {}
                changed = next_change(&mut kubelet_changes) => {
                    if changed.is_none() {
                        kubelet_changes = None;
                    }
                }
            }
        }
    }

    /// What is wrong with the kubelet's unit now, with the recovery that applies;
    /// counts its automatic restarts.
    async fn kubelet_problem(&self, restarts: &mut u32) -> Option<String> {
        let unit = &self.settings.kubelet_unit;
        let info = self.systemd.unit_info(unit).await.ok()?;
        let now = self.systemd.restarts(unit).await.unwrap_or(*restarts);
        if now > *restarts {
            info!("{unit} was restarted by systemd ({now} automatic restarts)");
            for _ in *restarts..now {
                crate::metrics::kubelet_restarted();
            }
        }
        *restarts = now;
        match (info.active_state.as_str(), info.sub_state.as_str()) {
            ("active", _) | ("reloading", _) => None,
            ("activating", "auto-restart") | ("failed", _) => Some(format!(
                "{unit} is {} ({}) after {now} automatic restarts: it keeps exiting, and systemd restarts it (Restart=always); see `journalctl -u kubelet` (an exit at start is usually a bad flag or config.yaml)",
                info.active_state, info.sub_state
            )),
            ("activating", _) => None,
            (state, sub) => Some(format!(
                "{unit} is {state} ({sub}): the node turns NotReady; start it with `systemctl start {unit}`"
            )),
        }
    }

    /// Keeps what the serve phase sees wrong in the state file, for `status`.
    fn watch_says(&self, problems: Vec<String>) {
        let mut state = self.state.lock().expect("state lock");
        if state.watch != problems {
            state.watch = problems;
            if let Err(e) = state.save(&self.paths.state_file()) {
                warn!("cannot save state: {e}");
            }
        }
    }

    /// `[kubelet] certificate_warning`, in seconds.
    fn warning_secs(&self) -> i64 {
        self.settings.certificate_warning.as_secs() as i64
    }

    /// The kubelet's credentials as they are now.
    fn credentials(&self, ca: &[rustls::pki_types::CertificateDer<'static>]) -> Credentials {
        let node = &self.settings.join.node_name;
        let checked = kubelet::check_kubelet_conf(&self.paths, ca, node);
        if let Ok(creds) = &checked {
            crate::metrics::kubelet_certificate_expiry(creds.summary.not_after_unix);
        }
        match checked {
            Ok(creds) if creds.summary.expires_in_secs < self.warning_secs() => {
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
    /// The problem with its recovery, when there is one.
    fn problem(&self) -> Option<String> {
        match self {
            Credentials::Valid { .. } => None,
            other => Some(other.to_string()),
        }
    }

    /// When to look again without a file event: when the expiry warning comes due,
    /// when the certificate expires.
    fn next_look(&self, warning_secs: i64) -> Duration {
        let secs = match self {
            Credentials::Valid { secs_left, .. } => secs_left - warning_secs,
            Credentials::Expiring { secs_left, .. } => *secs_left,
            Credentials::Invalid(_) => LONGEST_SLEEP.as_secs() as i64,
        };
        Duration::from_secs(secs.max(1) as u64)
    }
}

async fn next_change(changes: &mut Option<UnitChanges>) -> Option<()> {
    match changes {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}
