//! Tests of registry.rs.

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
    for p in Phase::ALL {
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
    let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
    assert_eq!(names.len(), 10);
    assert!(names.contains(&"tls-bootstrap") && names.contains(&"serve"));
}
