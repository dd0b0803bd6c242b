//! The kubelet's listeners: healthz (plain HTTP, default 127.0.0.1:10248) and the
//! kubelet API port 10250, held so kubeadm's preflight sees "Port 10250 is in use" while
//! a kubelet runs.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::klog::{self, Severity};

async fn healthz(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/healthz" | "/healthz/" => (200, "ok"),
        _ => (404, "404 page not found\n"),
    };
    Ok(Response::builder()
        .status(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// Serves healthz forever; a failed bind is retried every 5 s, as kubelet's
/// `wait.Until(ListenAndServe)` does.
pub async fn serve_healthz(addr: String, port: u16) {
    loop {
        match TcpListener::bind((addr.as_str(), port)).await {
            Ok(listener) => loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service_fn(healthz))
                        .await;
                });
            },
            Err(e) => klog::log(
                Severity::Error,
                "server.go:1027",
                "Failed to start healthz server",
                &[(
                    "err",
                    &format!(
                        "listen tcp {addr}:{port}: bind: {}",
                        crate::fsroot::go_errno_text(&e)
                    ),
                )],
            ),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Binds the kubelet API port; connections are accepted and dropped (nothing here
/// talks to it). A bind failure is fatal, as for the real kubelet.
pub async fn bind_api_port(address: &str) -> Result<TcpListener, String> {
    TcpListener::bind((address, 10250)).await.map_err(|e| {
        format!(
            "listen tcp {address}:10250: bind: {}",
            crate::fsroot::go_errno_text(&e)
        )
    })
}

/// Accepts and drops connections on the kubelet API port.
pub async fn hold_api_port(listener: TcpListener) {
    loop {
        if listener.accept().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
