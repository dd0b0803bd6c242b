//! kubelet-start's waits for the kubelet: its healthz, then a working kubelet.conf.
//!
//! Two generations of upstream behaviour, chosen by the VERSION knob:
//! - before v1.31 (`WaitForKubeletAndFunc`): the healthz probe starts after an initial
//!   40 s and backs off 5, 10, 20, 40 s (probes at +40, +45, +55, +75, +115 s, then
//!   "timed out waiting for the condition"), racing the TLS-bootstrap poll;
//! - v1.31 and later (`WaitForKubelet`): healthz every 0.5 s up to kubeletHealthCheck,
//!   then the TLS-bootstrap poll up to tlsBootstrap.
//!
//! All durations are multiplied by TIMEOUT_SCALE; poll intervals are not.

use std::time::Duration;

use tokio::time::Instant;

use super::env::Knobs;
use crate::fsroot::Root;
use crate::gotime;
use crate::httpclient::ApiClient;
use crate::kubeconfig;

/// Upstream's message when the kubelet never becomes healthy or bootstrapped.
pub const JOIN_FAIL_MSG: &str = "
Unfortunately, an error has occurred:
	{err}

This error is likely caused by:
	- The kubelet is not running
	- The kubelet is unhealthy due to a misconfiguration of the node in some way (required cgroups disabled)

If you are on a systemd-powered system, you can try to troubleshoot the error with the following commands:
	- 'systemctl status kubelet'
	- 'journalctl -xeu kubelet'
";

const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";

async fn probe(url: &str) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    match client.get(url).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(crate::httpclient::go_error(&reqwest::Method::GET, url, &e)),
    }
}

/// Pre-1.31 healthz watcher: resolves only with an error (success keeps it pending, as
/// the goroutine upstream sends nothing on success).
pub async fn legacy_healthz(knobs: &Knobs) -> String {
    let initial = knobs.scale(Duration::from_secs(40));
    tokio::time::sleep(initial).await;
    println!(
        "[kubelet-check] Initial timeout of {} passed.",
        gotime::format(initial)
    );
    // The URL upstream prints; the fake connects to 127.0.0.1 (what localhost resolves to).
    let shown = "http://localhost:10248/healthz";
    let mut backoff = knobs.scale(Duration::from_secs(5));
    for step in 0..5 {
        match probe("http://127.0.0.1:10248/healthz").await {
            Ok(200) => return std::future::pending().await,
            Ok(code) => {
                println!("[kubelet-check] It seems like the kubelet isn't running or healthy.");
                println!(
                    "[kubelet-check] The HTTP call equal to 'curl -sSL {shown}' returned HTTP code {code}"
                );
            }
            Err(e) => {
                let e = e.replace("127.0.0.1:10248/healthz\"", "localhost:10248/healthz\"");
                println!("[kubelet-check] It seems like the kubelet isn't running or healthy.");
                println!(
                    "[kubelet-check] The HTTP call equal to 'curl -sSL {shown}' failed with error: {e}."
                );
            }
        }
        if step < 4 {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    "timed out waiting for the condition".to_owned()
}

/// v1.31+ `WaitForKubelet`.
pub async fn wait_for_kubelet(address: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let url = format!("http://{address}:{port}/healthz");
    if port == 0 {
        println!(
            "[kubelet-check] Skipping the kubelet health check because the healthz port is set to 0"
        );
        return Ok(());
    }
    println!(
        "[kubelet-check] Waiting for a healthy kubelet at {url}. This can take up to {}",
        gotime::format(timeout)
    );
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match probe(&url).await {
            Ok(200) => {
                println!(
                    "[kubelet-check] The kubelet is healthy after {}",
                    gotime::format(start.elapsed())
                );
                return Ok(());
            }
            Ok(code) => {
                last = format!(
                    "The HTTP call equal to 'curl -sSL {url}' returned status code: {code}\n"
                )
            }
            Err(e) => {
                last = format!("The HTTP call equal to 'curl -sSL {url}' returned error: {e}\n")
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "[kubelet-check] The kubelet is not healthy after {}",
        gotime::format(start.elapsed())
    );
    Err(last)
}

/// Whether kubelet.conf yields a client whose certificate the API server accepts.
async fn working_client(root: &Root, node_name: &str) -> bool {
    let Ok(resolved) = kubeconfig::load(root, KUBELET_CONF) else {
        return false;
    };
    let Ok(client) = ApiClient::from_kubeconfig(&resolved, Duration::from_secs(5)) else {
        return false;
    };
    match client.get(&format!("/api/v1/nodes/{node_name}")).await {
        Ok(resp) => resp.status != 401,
        Err(_) => false,
    }
}

/// Polls for a working kubelet.conf every `interval` up to `timeout`.
pub async fn tls_bootstrap(
    root: &Root,
    node_name: &str,
    interval: Duration,
    timeout: Duration,
    timeout_error: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if working_client(root, node_name).await {
            return Ok(());
        }
        if Instant::now() + interval > deadline {
            tokio::time::sleep_until(deadline).await;
            return Err(timeout_error.to_owned());
        }
        tokio::time::sleep(interval).await;
    }
}

/// `healthzBindAddress` and `healthzPort` from the kubelet config kubeadm wrote.
pub fn healthz_endpoint(kubelet_config: &str) -> (String, u16) {
    let v: serde_norway::Value =
        serde_norway::from_str(kubelet_config).unwrap_or(serde_norway::Value::Null);
    let addr = v
        .get("healthzBindAddress")
        .and_then(|a| a.as_str())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let port = v
        .get("healthzPort")
        .and_then(|p| p.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(10248);
    (addr, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_from_config() {
        assert_eq!(
            healthz_endpoint(crate::apiserver::objects::KUBELET_CONFIG),
            ("127.0.0.1".into(), 10248)
        );
        assert_eq!(
            healthz_endpoint("healthzPort: 0\n"),
            ("127.0.0.1".into(), 0)
        );
    }
}
