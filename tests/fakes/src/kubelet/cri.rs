//! The container runtime check: kubelet refuses to go on until its CRI endpoint answers.
//! (Upstream validates the CRI v1 API over gRPC and exits; the fake retries every 5 s,
//! which is what systemd's Restart= makes of the real behaviour, minus the restarts.)

use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::fsroot::{Root, go_errno_text};
use crate::klog::{self, Severity};

/// Whether the socket accepts a connection; Err is the dial error in Go's words.
pub fn dial(root: &Root, endpoint: &str) -> Result<(), String> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    UnixStream::connect(root.path(path))
        .map(|_| ())
        .map_err(|e| format!("dial unix {path}: connect: {}", go_errno_text(&e)))
}

/// Waits until the runtime socket answers, logging like the real failure every 5 s.
pub async fn wait_for_runtime(root: &Root, endpoint: &str) {
    loop {
        match dial(root, endpoint) {
            Ok(()) => return,
            Err(e) => klog::log(
                Severity::Error,
                "remote_runtime.go:146",
                "Validate CRI v1 runtime API for endpoint failed, will retry in 5s",
                &[
                    ("endpoint", endpoint),
                    (
                        "err",
                        &format!(
                            "validate CRI v1 runtime API for endpoint {endpoint:?}: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: {e}\""
                        ),
                    ),
                ],
            ),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
