//! Tests of listen.rs.

use super::*;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const QUICK: Limits = Limits {
    connections: 8,
    header_read: Duration::from_millis(300),
    connection: Duration::from_secs(2),
};

struct Fixture {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    metrics: &'static Metrics,
}

/// A server of fresh metrics on a socket in a temporary directory.
fn serve(limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/kube-join-agent/metrics.sock");
    let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
    Server::new(metrics, limits).spawn(bind_unix(&socket).unwrap());
    Fixture {
        _dir: dir,
        socket,
        metrics,
    }
}

/// Sends `request` and reads the answer until the server closes. A server that
/// refuses a request early closes before it has all of it: the write may fail
/// and the read end in a reset, after the answer.
async fn exchange(socket: &Path, request: &str) -> String {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    stream.write_all(request.as_bytes()).await.ok();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf).await {
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

async fn call(socket: &Path, method: &str, path: &str) -> (u16, String) {
    let answer = exchange(
        socket,
        &format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    )
    .await;
    status_and_body(&answer)
}

fn status_and_body(answer: &str) -> (u16, String) {
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

#[tokio::test]
async fn endpoints_over_the_unix_socket() {
    let f = serve(QUICK);
    let mode = std::fs::metadata(&f.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);

    let answer = exchange(
            &f.socket,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
        )
        .await;
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{answer}"
    );
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 200);
    assert!(body.contains("kube_join_agent_phase{phase=\"discovery\"} 0"));
    assert!(body.ends_with("# EOF\n"));
    let answer = exchange(&f.socket, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{answer}"
    );

    assert_eq!(
        call(&f.socket, "GET", "/healthz").await,
        (200, "ok\n".into())
    );
    assert_eq!(
        call(&f.socket, "GET", "/readyz").await,
        (503, "not joined: starting\n".into())
    );
    f.metrics.phase_entered("tls-bootstrap", Instant::now());
    assert_eq!(
        call(&f.socket, "GET", "/readyz").await,
        (503, "not joined: phase tls-bootstrap\n".into())
    );
    f.metrics.joined(Duration::from_secs(75));
    assert_eq!(
        call(&f.socket, "GET", "/readyz").await,
        (200, "joined\n".into())
    );
    f.metrics.failure("kubelet-start-failed");
    assert_eq!(call(&f.socket, "GET", "/readyz").await.0, 503);

    assert_eq!(call(&f.socket, "GET", "/nope").await.0, 404);
    assert_eq!(call(&f.socket, "POST", "/metrics").await.0, 405);
    assert_eq!(call(&f.socket, "DELETE", "/readyz").await.0, 405);
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_anything_else_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("metrics.sock");
    // A previous run's socket: bound, then the process went away.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
    Server::new(metrics, QUICK).spawn(bind_unix(&socket).unwrap());
    assert_eq!(call(&socket, "GET", "/healthz").await.0, 200);

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let e = bind_unix(&file).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let f = serve(QUICK);
    let big = "a".repeat(MAX_HEADER_SIZE + 1);
    let answer = exchange(
        &f.socket,
        &format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    assert_eq!(status_and_body(&answer).0, 431, "{answer:.200}");
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("X-{i}: y\r\n"))
        .collect();
    let answer = exchange(
        &f.socket,
        &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
    )
    .await;
    assert_eq!(status_and_body(&answer).0, 431, "{answer:.200}");
}

#[tokio::test]
async fn a_slow_client_is_cut_off_and_does_not_block_others() {
    let f = serve(Limits {
        connections: 1,
        ..QUICK
    });
    // Holds the only slot: half a request head, then nothing.
    let mut slow = UnixStream::connect(&f.socket).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let started = Instant::now();
    // The next client waits for the slot, and is served once the slow one is cut.
    let (status, _) =
        tokio::time::timeout(Duration::from_secs(5), call(&f.socket, "GET", "/healthz"))
            .await
            .expect("served once the slow client is cut off");
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= QUICK.header_read / 2,
        "{:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
        .await
        .expect("the slow client's connection is closed")
        .ok();
}

#[tokio::test]
async fn a_silent_client_is_cut_off_at_the_connection_deadline() {
    let f = serve(Limits {
        connections: 1,
        header_read: Duration::from_secs(30),
        connection: Duration::from_millis(300),
    });
    let mut silent = UnixStream::connect(&f.socket).await.unwrap();
    let mut rest = Vec::new();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest))
        .await
        .expect("closed at the deadline")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(call(&f.socket, "GET", "/healthz").await.0, 200);
}

#[tokio::test]
async fn the_tcp_listener_serves_the_same() {
    let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
    let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    Server::new(metrics, QUICK).spawn(listener);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(status_and_body(&answer), (200, "ok\n".into()));
}
