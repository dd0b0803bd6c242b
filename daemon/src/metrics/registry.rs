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

/// The phases, in order, so that each has its series from the start.
const PHASES: [Phase; 10] = [
    Phase::LoadConfig,
    Phase::AlreadyJoined,
    Phase::GateKubelet,
    Phase::Preflight,
    Phase::Discovery,
    Phase::Join,
    Phase::Handoff,
    Phase::TlsBootstrap,
    Phase::Verify,
    Phase::Serve,
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
        for p in PHASES {
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
mod tests {
    use super::*;
    use openmetrics_parser::{
        MetricNumber, MetricsExposition, OpenMetricsType, OpenMetricsValue, PrometheusType,
        PrometheusValue,
    };

    type OpenMetrics = MetricsExposition<OpenMetricsType, OpenMetricsValue>;
    type Text = MetricsExposition<PrometheusType, PrometheusValue>;

    /// The histogram's `# UNIT` line, which OpenMetrics allows (its own example is a
    /// `foo_seconds` histogram) but openmetrics-parser 0.5 refuses for histograms.
    const HISTOGRAM_UNIT: &str = "# UNIT kube_join_agent_phase_duration_seconds seconds\n";

    fn openmetrics(m: &Metrics) -> OpenMetrics {
        let text = m.render(Format::OpenMetrics);
        assert!(text.contains(HISTOGRAM_UNIT), "{text}");
        let text = text.replace(HISTOGRAM_UNIT, "");
        openmetrics_parser::openmetrics::parse_openmetrics(&text)
            .unwrap_or_else(|e| panic!("not OpenMetrics: {e:?}\n{text}"))
    }

    fn text(m: &Metrics) -> Text {
        let text = m.render(Format::Text);
        openmetrics_parser::prometheus::parse_prometheus(&text)
            .unwrap_or_else(|e| panic!("not the Prometheus text format: {e:?}\n{text}"))
    }

    fn number(n: &MetricNumber) -> f64 {
        n.as_f64()
    }

    /// The value of the counter or gauge `family` for `labels`, from the 0.0.4 text.
    fn value(t: &Text, family: &str, labels: &[&str]) -> f64 {
        let f = t
            .families
            .get(family)
            .unwrap_or_else(|| panic!("no {family} in {:?}", t.families.keys()));
        let values: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let sample = f
            .get_sample_by_label_values(&values)
            .unwrap_or_else(|| panic!("no {family}{labels:?}"));
        match &sample.value {
            PrometheusValue::Counter(c) => number(&c.value),
            PrometheusValue::Gauge(g) => number(g),
            PrometheusValue::Unknown(u) => number(u),
            other => panic!("{family} is not a counter or a gauge: {other:?}"),
        }
    }

    /// `(count, sum, count in the bucket le=bound)` of a phase's histogram.
    fn histogram(t: &Text, phase: &str, bound: f64) -> (u64, f64, u64) {
        let f = &t.families["kube_join_agent_phase_duration_seconds"];
        let sample = f.get_sample_by_label_values(&[phase.to_string()]).unwrap();
        let PrometheusValue::Histogram(h) = &sample.value else {
            panic!("not a histogram: {:?}", sample.value);
        };
        let bucket = h
            .buckets
            .iter()
            .find(|b| b.upper_bound == bound)
            .unwrap_or_else(|| panic!("no bucket {bound} in {:?}", h.buckets));
        (
            h.count.unwrap_or_default(),
            h.sum.as_ref().map(number).unwrap_or_default(),
            number(&bucket.count) as u64,
        )
    }

    #[test]
    fn both_formats_parse_and_name_every_metric() {
        let m = Metrics::new();
        m.phase_entered("preflight", Instant::now());
        m.failure("preflight-failed");
        m.kubelet_certificate_expiry(1_900_000_000);
        m.joined(Duration::from_secs(90));
        let om = openmetrics(&m);
        let t = text(&m);
        let mut names: Vec<&str> = t.families.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "kube_join_agent_attempts_total",
                "kube_join_agent_build_info",
                "kube_join_agent_failures_total",
                "kube_join_agent_join_duration_seconds",
                "kube_join_agent_joined",
                "kube_join_agent_kubelet_client_certificate_expiry_timestamp_seconds",
                "kube_join_agent_kubelet_restarts_total",
                "kube_join_agent_phase",
                "kube_join_agent_phase_duration_seconds",
            ]
        );
        let types: Vec<(String, PrometheusType)> = t
            .families
            .iter()
            .map(|(name, f)| (name.clone(), f.family_type.clone()))
            .collect();
        for (name, ty) in types {
            let want = if name.ends_with("_total") {
                PrometheusType::Counter
            } else if name.ends_with("phase_duration_seconds") {
                PrometheusType::Histogram
            } else {
                PrometheusType::Gauge
            };
            assert_eq!(ty, want, "{name}");
        }
        // OpenMetrics names a counter's family without `_total`, and has an info type.
        let mut om_names: Vec<&str> = om.families.keys().map(String::as_str).collect();
        om_names.sort();
        assert!(
            om_names.contains(&"kube_join_agent_attempts"),
            "{om_names:?}"
        );
        assert_eq!(
            om.families["kube_join_agent_build"].family_type,
            OpenMetricsType::Info
        );
        assert_eq!(
            om.families["kube_join_agent_join_duration_seconds"].unit,
            "seconds"
        );
        assert!(m.render(Format::OpenMetrics).ends_with("# EOF\n"));
        assert_eq!(
            value(
                &t,
                "kube_join_agent_build_info",
                &[env!("CARGO_PKG_VERSION")]
            ),
            1.0
        );
    }

    #[test]
    fn every_phase_and_outcome_is_there_from_the_start() {
        let t = text(&Metrics::new());
        for p in PHASES {
            assert_eq!(value(&t, "kube_join_agent_phase", &[p.name()]), 0.0);
            assert_eq!(histogram(&t, p.name(), 600.0), (0, 0.0, 0));
        }
        assert_eq!(
            value(&t, "kube_join_agent_attempts_total", &["joined"]),
            0.0
        );
        assert_eq!(
            value(&t, "kube_join_agent_attempts_total", &["failed"]),
            0.0
        );
        assert_eq!(value(&t, "kube_join_agent_joined", &[]), 0.0);
        // Absent until known.
        let rendered = Metrics::new().render(Format::OpenMetrics);
        for unknown in [
            "kube_join_agent_join_duration_seconds",
            "kube_join_agent_kubelet_client_certificate_expiry_timestamp_seconds",
        ] {
            assert!(!t.families.contains_key(unknown), "{unknown}");
            assert!(!rendered.contains(unknown), "{unknown}");
        }
    }

    #[test]
    fn the_phase_gauge_follows_the_agent_and_durations_are_observed() {
        let m = Metrics::new();
        let t0 = Instant::now();
        m.phase_entered("preflight", t0);
        m.phase_entered("discovery", t0 + Duration::from_millis(40));
        let t = text(&m);
        assert_eq!(value(&t, "kube_join_agent_phase", &["preflight"]), 0.0);
        assert_eq!(value(&t, "kube_join_agent_phase", &["discovery"]), 1.0);
        let (count, sum, in_50ms) = histogram(&t, "preflight", 0.05);
        assert_eq!((count, in_50ms), (1, 1));
        assert!((sum - 0.04).abs() < 1e-9, "{sum}");
        assert_eq!(histogram(&t, "preflight", 0.025).2, 0);
        // Nothing observed for the phase still running.
        assert_eq!(histogram(&t, "discovery", 600.0).0, 0);

        // A failed attempt ends the phase's time: the backoff after it is not counted,
        // and the phase stays the current one for /readyz.
        m.attempt_finished(false, t0 + Duration::from_secs(100));
        m.phase_entered("preflight", t0 + Duration::from_secs(400));
        let t = text(&m);
        let (count, sum, in_120s) = histogram(&t, "discovery", 120.0);
        assert_eq!((count, in_120s), (1, 1));
        assert!((sum - 99.96).abs() < 1e-6, "{sum}");
        assert_eq!(histogram(&t, "preflight", 600.0).0, 1);
        assert_eq!(
            value(&t, "kube_join_agent_attempts_total", &["failed"]),
            1.0
        );
        // A phase longer than the last bucket still counts, in +Inf.
        m.phase_entered("join", t0 + Duration::from_secs(400));
        m.phase_entered("handoff", t0 + Duration::from_secs(1400));
        let t = text(&m);
        let (count, _, in_600s) = histogram(&t, "join", 600.0);
        assert_eq!((count, in_600s), (1, 0));
        assert_eq!(histogram(&t, "join", f64::INFINITY).2, 1);
    }

    #[test]
    fn counters_and_gauges_reflect_the_calls() {
        let m = Metrics::new();
        m.failure("token-invalid");
        m.failure("token-invalid");
        m.failure("api-server-unreachable");
        m.attempt_finished(false, Instant::now());
        m.attempt_finished(true, Instant::now());
        m.joined(Duration::from_millis(93_500));
        m.kubelet_certificate_expiry(1_893_456_000);
        m.kubelet_restarted();
        m.kubelet_restarted();
        m.kubelet_restarted();
        let t = text(&m);
        let v = |family: &str, labels: &[&str]| value(&t, family, labels);
        assert_eq!(v("kube_join_agent_failures_total", &["token-invalid"]), 2.0);
        assert_eq!(
            v(
                "kube_join_agent_failures_total",
                &["api-server-unreachable"]
            ),
            1.0
        );
        assert_eq!(v("kube_join_agent_attempts_total", &["failed"]), 1.0);
        assert_eq!(v("kube_join_agent_attempts_total", &["joined"]), 1.0);
        assert_eq!(v("kube_join_agent_join_duration_seconds", &[]), 93.5);
        assert_eq!(v("kube_join_agent_joined", &[]), 1.0);
        assert_eq!(
            v(
                "kube_join_agent_kubelet_client_certificate_expiry_timestamp_seconds",
                &[]
            ),
            1_893_456_000.0
        );
        assert_eq!(v("kube_join_agent_kubelet_restarts_total", &[]), 3.0);
    }

    #[test]
    fn readiness_is_joined_and_no_failure_since() {
        let m = Metrics::new();
        assert_eq!(m.readiness().unwrap_err(), "not joined: starting");
        m.phase_entered("discovery", Instant::now());
        m.failure("token-invalid");
        assert_eq!(
            m.readiness().unwrap_err(),
            "not joined: phase discovery, last failure token-invalid"
        );
        m.phase_entered("verify", Instant::now());
        m.joined(Duration::from_secs(60));
        assert_eq!(m.readiness(), Ok(()));
        m.phase_entered("serve", Instant::now());
        assert_eq!(m.readiness(), Ok(()));
        m.failure("kubelet-files-invalid");
        assert_eq!(
            m.readiness().unwrap_err(),
            "not joined: phase serve, last failure kubelet-files-invalid"
        );
        assert_eq!(value(&text(&m), "kube_join_agent_joined", &[]), 0.0);
    }

    #[test]
    fn phase_names_are_the_agents() {
        let names: Vec<&str> = PHASES.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), 10);
        assert!(names.contains(&"tls-bootstrap") && names.contains(&"serve"));
    }
}
