//! The agent's metrics: one prometheus-client registry, the handles that record into
//! it, what `/readyz` answers, and the two text encodings of it.

use crate::agent::Phase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Every metric's name starts with this (`kube_join_agent_attempts_total`).
pub const PREFIX: &str = "kube_join_agent";

/// Upper bounds of the phase-duration buckets, in seconds: 10 ms (a check of a file)
/// to 10 min (a kubeadm run at its default deadline); anything longer lands in +Inf.
pub const DURATION_BUCKETS: [f64; 15] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// A metric without labels that is left out until its value is known: a timestamp of
/// 0 would read as "expired in 1970".
type UntilKnown<M> = Family<[(&'static str, &'static str); 0], M>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The exposition formats `/metrics` offers (http.rs chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: typed info metrics, units, and `# EOF`, which lets the
    /// scraper tell a complete answer from a cut one.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, which every scraper and tool reads.
    Text,
}

impl Format {
    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Where the agent is, for `/readyz` and the phase timings.
#[derive(Debug, Default)]
struct Progress {
    /// The phase last entered.
    current: Option<&'static str>,
    /// When it was entered; `None` once its time was observed (its attempt ended).
    since: Option<Instant>,
    /// Joined, and no failure since.
    joined: bool,
    /// The class of the latest failure since the last join.
    last_failure: Option<&'static str>,
}

/// The metrics and the agent's progress.
pub struct Metrics {
    registry: Registry,
    attempts: Family<OutcomeLabel, Counter>,
    failures: Family<ClassLabel, Counter>,
    phase: Family<PhaseLabel, Gauge>,
    phase_duration: Family<PhaseLabel, Histogram, fn() -> Histogram>,
    join_duration: UntilKnown<Gauge<f64, AtomicU64>>,
    joined: Gauge,
    certificate_expiry: UntilKnown<Gauge>,
    kubelet_restarts: Counter,
    progress: Mutex<Progress>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered; every phase's series and both attempt
    /// outcomes are there, at zero, from the start.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "build",
            "The agent's version, as the value of the label",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let attempts = Family::<OutcomeLabel, Counter>::default();
        for outcome in ["joined", "failed"] {
            // Created at zero, so that rate() sees the first increase.
            drop(attempts.get_or_create(&OutcomeLabel { outcome }));
        }
        registry.register(
            "attempts",
            "Join attempts finished, by outcome (joined or failed)",
            attempts.clone(),
        );
        let failures = Family::<ClassLabel, Counter>::default();
        registry.register(
            "failures",
            "Failures, by class (the FAILURE= field of the journal)",
            failures.clone(),
        );
        let phase = Family::<PhaseLabel, Gauge>::default();
        let phase_duration =
            Family::<PhaseLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        // Every phase, so that each has its series from the start.
        for p in Phase::ALL {
            let label = PhaseLabel { phase: p.name() };
            drop(phase.get_or_create(&label));
            drop(phase_duration.get_or_create(&label));
        }
        registry.register(
            "phase",
            "1 for the phase the agent is in, 0 for the others",
            phase.clone(),
        );
        registry.register_with_unit(
            "phase_duration",
            "Time spent in each phase, until the next phase or the end of the attempt",
            Unit::Seconds,
            phase_duration.clone(),
        );
        let join_duration = UntilKnown::<Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "join_duration",
            "Time from the agent's start to the node being joined",
            Unit::Seconds,
            join_duration.clone(),
        );
        let joined = Gauge::default();
        registry.register(
            "joined",
            "1 once the node is joined, 0 before and after a later failure",
            joined.clone(),
        );
        let certificate_expiry = UntilKnown::<Gauge>::default();
        registry.register_with_unit(
            "kubelet_client_certificate_expiry_timestamp",
            "When the kubelet's client certificate expires, in Unix time",
            Unit::Seconds,
            certificate_expiry.clone(),
        );
        let kubelet_restarts = Counter::default();
        registry.register(
            "kubelet_restarts",
            "Restarts of the kubelet unit the agent saw after handing off to it",
            kubelet_restarts.clone(),
        );
        Self {
            registry,
            attempts,
            failures,
            phase,
            phase_duration,
            join_duration,
            joined,
            certificate_expiry,
            kubelet_restarts,
            progress: Mutex::new(Progress::default()),
        }
    }

    /// A poisoned lock still holds a consistent `Progress`: every update is one
    /// assignment at a time, and metrics must never take the agent down.
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The agent entered `phase` at `now`: see `metrics::phase_entered`.
    pub fn phase_entered(&self, phase: &'static str, now: Instant) {
        let mut progress = self.progress();
        if let Some(previous) = progress.current {
            self.phase
                .get_or_create(&PhaseLabel { phase: previous })
                .set(0);
        }
        self.observe(&mut progress, now);
        self.phase.get_or_create(&PhaseLabel { phase }).set(1);
        progress.current = Some(phase);
        progress.since = Some(now);
    }

    /// The current phase's time so far goes into its histogram, once.
    fn observe(&self, progress: &mut Progress, now: Instant) {
        if let (Some(phase), Some(since)) = (progress.current, progress.since.take()) {
            self.phase_duration
                .get_or_create(&PhaseLabel { phase })
                .observe(now.saturating_duration_since(since).as_secs_f64());
        }
    }

    /// An attempt ended at `now`: see `metrics::attempt_finished`.
    pub fn attempt_finished(&self, joined: bool, now: Instant) {
        let mut progress = self.progress();
        let outcome = if joined { "joined" } else { "failed" };
        self.attempts.get_or_create(&OutcomeLabel { outcome }).inc();
        if !joined {
            self.observe(&mut progress, now);
            self.unjoin(&mut progress);
        }
    }

    /// A failure of class `class`: see `metrics::failure`.
    pub fn failure(&self, class: &'static str) {
        let mut progress = self.progress();
        self.failures.get_or_create(&ClassLabel { class }).inc();
        self.unjoin(&mut progress);
        progress.last_failure = Some(class);
    }

    fn unjoin(&self, progress: &mut Progress) {
        progress.joined = false;
        self.joined.set(0);
    }

    /// The node is joined, `duration` after the agent started: see `metrics::joined`.
    pub fn joined(&self, duration: Duration) {
        let mut progress = self.progress();
        self.join_duration
            .get_or_create(&[])
            .set(duration.as_secs_f64());
        self.joined.set(1);
        progress.joined = true;
        progress.last_failure = None;
    }

    /// See `metrics::kubelet_certificate_expiry`.
    pub fn kubelet_certificate_expiry(&self, unix_secs: i64) {
        self.certificate_expiry.get_or_create(&[]).set(unix_secs);
    }

    /// See `metrics::kubelet_restarted`.
    pub fn kubelet_restarted(&self) {
        self.kubelet_restarts.inc();
    }

    /// `Ok` once joined (and no failure since); else what `/readyz` says instead.
    pub fn readiness(&self) -> Result<(), String> {
        let progress = self.progress();
        if progress.joined {
            return Ok(());
        }
        let mut why = match progress.current {
            Some(phase) => format!("not joined: phase {phase}"),
            None => "not joined: starting".to_string(),
        };
        if let Some(class) = progress.last_failure {
            why.push_str(&format!(", last failure {class}"));
        }
        Err(why)
    }

    /// The registry in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail, and every metric encodes; an error here
        // would be a bug in the encoder, and an empty answer the least harmful outcome.
        let result = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        if let Err(e) = result {
            tracing::warn!("cannot encode the metrics: {e}");
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests;
