//! Metrics for Prometheus, and health and readiness, on a Unix socket.
//!
//! `GET /metrics` on `/run/kube-join-agent/metrics.sock` (and on `[metrics] listen`, a
//! loopback address, when set) answers in the OpenMetrics text format to a client that
//! asks for it (Prometheus does) and in the 0.0.4 text format to any other; `/healthz`
//! is 200 while the process runs; `/readyz` is 200 once the node is joined and no
//! failure came after, else 503 with the phase (http.rs).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `kube_join_agent_build_info` | info (gauge in 0.0.4), always 1 | `version` |
//! | `kube_join_agent_attempts_total` | counter | `outcome`: joined, failed |
//! | `kube_join_agent_failures_total` | counter | `class`: the failure class |
//! | `kube_join_agent_phase` | gauge, 1 for the current phase | `phase` |
//! | `kube_join_agent_phase_duration_seconds` | histogram, 10 ms to 10 min | `phase` |
//! | `kube_join_agent_join_duration_seconds` | gauge, absent until joined | |
//! | `kube_join_agent_joined` | gauge, 0 or 1 | |
//! | `kube_join_agent_kubelet_client_certificate_expiry_timestamp_seconds` | gauge, absent until read | |
//! | `kube_join_agent_kubelet_restarts_total` | counter | |
//!
//! The recording functions below are safe to call from anywhere, at any time, whether
//! or not the server runs: each is a lock-free atomic update or a short lock, and the
//! registry is built on first use.

mod http;
mod listen;
mod registry;

use crate::config::MetricsSettings;
use crate::paths::Paths;
use registry::{Format, Metrics};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The process's metrics.
static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The agent entered `phase` (its `Phase::name()`): `kube_join_agent_phase` becomes 1
/// for it and 0 for the phase before, whose time since it was entered goes into
/// `kube_join_agent_phase_duration_seconds` (unless its attempt already ended, see
/// `attempt_finished`). `/readyz` names this phase until the node is joined.
pub fn phase_entered(phase: &'static str) {
    METRICS.phase_entered(phase, Instant::now());
}

/// An attempt ended: counts `kube_join_agent_attempts_total{outcome="joined"}` or
/// `{outcome="failed"}`. A failed attempt also ends its phase's time (the backoff
/// that follows is not counted as time in that phase; the phase gauge stays, so the
/// failed phase is still the one shown) and makes the node not joined.
pub fn attempt_finished(joined: bool) {
    METRICS.attempt_finished(joined, Instant::now());
}

/// A failure of `class` (`Failure::class()`, the journal's `FAILURE=`): counts
/// `kube_join_agent_failures_total{class}`, sets `kube_join_agent_joined` to 0 and
/// `/readyz` to 503 until `joined` is called again.
pub fn failure(class: &'static str) {
    METRICS.failure(class);
}

/// The node is joined, `duration` after the agent started:
/// `kube_join_agent_join_duration_seconds` is set to it, `kube_join_agent_joined` to
/// 1, and `/readyz` answers 200.
pub fn joined(duration: Duration) {
    METRICS.joined(duration);
}

/// The kubelet's client certificate expires at `unix_secs` (seconds since the epoch):
/// `kube_join_agent_kubelet_client_certificate_expiry_timestamp_seconds`. Call it at
/// each check of the certificate, so a rotation shows.
pub fn kubelet_certificate_expiry(unix_secs: i64) {
    METRICS.kubelet_certificate_expiry(unix_secs);
}

/// The agent saw the kubelet unit restart after the handoff:
/// `kube_join_agent_kubelet_restarts_total`.
pub fn kubelet_restarted() {
    METRICS.kubelet_restarted();
}

/// The metrics in the OpenMetrics text format, as `/metrics` serves them to Prometheus.
pub fn render() -> String {
    METRICS.render(Format::OpenMetrics)
}

/// Set once the server was started: it is started once per process.
static SERVING: AtomicBool = AtomicBool::new(false);

/// Starts serving the metrics on `/run/kube-join-agent/metrics.sock` (below `paths`'
/// root) and, when `settings.listen` is set, on that loopback address, in tasks of the
/// current tokio runtime (call it from within the runtime). A listener that cannot be
/// bound is a warning, never an error: the join goes on without it. Later calls do
/// nothing (a changed `listen` takes effect at the agent's next start).
pub fn serve(paths: &Paths, settings: &MetricsSettings) {
    if SERVING.swap(true, Ordering::SeqCst) {
        return;
    }
    let server = listen::Server::new(&METRICS, listen::LIMITS);
    let socket = paths.metrics_socket();
    match listen::bind_unix(&socket) {
        Ok(listener) => {
            server.spawn(listener);
            tracing::info!("metrics, /healthz and /readyz on {}", socket.display());
        }
        Err(e) => tracing::warn!(
            "cannot serve metrics on {}: {e}; carrying on without them",
            socket.display()
        ),
    }
    if let Some(addr) = settings.listen {
        match listen::bind_tcp(addr) {
            Ok(listener) => {
                server.spawn(listener);
                tracing::info!("metrics, /healthz and /readyz on http://{addr}");
            }
            Err(e) => tracing::warn!(
                "cannot serve metrics on {addr} (metrics.listen): {e}; carrying on without it"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn serve_answers_on_the_socket_under_the_root_and_carries_on_without_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        // An address that cannot be bound here: a warning, and the socket still serves.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = MetricsSettings {
            listen: Some(taken.local_addr().unwrap()),
        };
        serve(&paths, &settings);
        serve(&paths, &settings);
        let socket = dir.path().join("run/kube-join-agent/metrics.sock");
        assert_eq!(socket, paths.metrics_socket());
        let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
        assert!(render().ends_with("# EOF\n"));
    }
}
