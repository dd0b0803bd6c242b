//! Bootstrap-token discovery (kubeadm/discovery/token/token.go): fetch cluster-info
//! unverified, check the token's JWS, pin the CA, fetch again with the CA enforced.

use std::time::Duration;

use tokio::time::Instant;

use super::config::JoinConfig;
use super::env::Knobs;
use super::error::{KubeadmError, generic};
use crate::httpclient::{ApiClient, Trust};
use crate::klog::{self, Severity};
use crate::kubeconfig::{self, Auth};
use crate::pin::{self, PinSet};
use crate::{jws, token::BootstrapToken};

/// kubeadm's discovery retry interval (constants.DiscoveryRetryInterval); not scaled.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);
const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

/// What discovery establishes: where the API server is and which CA to trust.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The server named in cluster-info's kubeconfig.
    pub server: String,
    /// The cluster CA, PEM.
    pub ca_pem: Vec<u8>,
}

fn v1(verbosity: u32, source: &str, msg: &str) {
    if verbosity >= 1 {
        klog::printf(Severity::Info, source, msg);
    }
}

/// Runs discovery; errors are worded as kubeadm's, wrapped in
/// "couldn't validate the identity of the API Server".
pub async fn discover(
    cfg: &JoinConfig,
    knobs: &Knobs,
    verbosity: u32,
) -> Result<Discovered, KubeadmError> {
    retrieve(cfg, knobs, verbosity).await.map_err(|e| {
        generic(format!(
            "couldn't validate the identity of the API Server: {e}"
        ))
    })
}

async fn retrieve(cfg: &JoinConfig, knobs: &Knobs, verbosity: u32) -> Result<Discovered, String> {
    let pins = PinSet::allow(&cfg.ca_cert_hashes)
        .map_err(|e| format!("invalid discovery token CA certificate hash: {e}"))?;
    let duration = knobs.scale(cfg.timeouts.discovery);
    let interval = RETRY_INTERVAL.min(duration);
    let endpoint = &cfg.api_server_endpoint;
    let server = format!("https://{endpoint}");
    let token = &cfg.token;

    v1(
        verbosity,
        "token.go:85",
        &format!(
            "[discovery] Created cluster-info discovery client, requesting info from {endpoint:?}"
        ),
    );
    let insecure = ApiClient::new(
        &server,
        Trust::Insecure,
        &Auth::Anonymous,
        Duration::from_secs(10),
    )
    .map_err(|e| format!("{e:#}"))?;
    let insecure_cm = get_cluster_info(&insecure, token, interval, duration, verbosity).await?;
    let kubeconfig_text = validate_cluster_info_token(&insecure_cm, token)?;
    let insecure_cfg = kubeconfig::parse(&kubeconfig_text).map_err(|e| {
        format!("couldn't parse the kubeconfig file in the cluster-info ConfigMap: {e}")
    })?;
    let clusters = insecure_cfg.clusters.clone().unwrap_or_default();
    let [cluster] = clusters.as_slice() else {
        return Err(format!(
            "expected the kubeconfig file in the cluster-info ConfigMap to have a single cluster, but it had {}",
            clusters.len()
        ));
    };
    let ca_pem = insecure_cfg
        .resolve(&crate::fsroot::Root::default(), std::path::Path::new("/"))
        .map(|r| r.ca_pem)
        .map_err(|e| format!("failed to parse cluster CA from the cluster-info ConfigMap: {e}"))?;
    let found = Discovered {
        server: cluster.cluster.server.clone(),
        ca_pem: ca_pem.clone(),
    };
    if pins.is_empty() {
        v1(
            verbosity,
            "token.go:120",
            &format!(
                "[discovery] Cluster info signature and contents are valid and no TLS pinning was specified, will use API Server {endpoint:?}"
            ),
        );
        return Ok(found);
    }
    let certs = pin::certs_from_pem(&ca_pem)
        .map_err(|e| format!("failed to parse cluster CA from the cluster-info ConfigMap: {e}"))?;
    pins.check_any(&certs)
        .map_err(|e| format!("cluster CA found in cluster-info ConfigMap is invalid: {e}"))?;

    v1(
        verbosity,
        "token.go:134",
        &format!(
            "[discovery] Requesting info from {endpoint:?} again to validate TLS against the pinned public key"
        ),
    );
    let secure = ApiClient::new(
        &server,
        Trust::Ca(&ca_pem),
        &Auth::Anonymous,
        Duration::from_secs(10),
    )
    .map_err(|e| format!("{e:#}"))?;
    let secure_cm = get_cluster_info(&secure, token, interval, duration, verbosity).await?;
    let secure_text = secure_cm["data"]["kubeconfig"].as_str().unwrap_or_default();
    if secure_text != kubeconfig_text {
        return Err("the second kubeconfig from the cluster-info ConfigMap (using validated TLS) was different from the first".into());
    }
    v1(
        verbosity,
        "token.go:151",
        &format!(
            "[discovery] Cluster info signature and contents are valid and TLS certificate validates against pinned roots, will use API Server {endpoint:?}"
        ),
    );
    Ok(found)
}

/// Polls cluster-info every `interval` (first try at once) until it carries a JWS for
/// the token or `duration` passes; then the last error is the result.
async fn get_cluster_info(
    client: &ApiClient,
    token: &BootstrapToken,
    interval: Duration,
    duration: Duration,
    verbosity: u32,
) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + duration;
    v1(
        verbosity,
        "token.go:227",
        &format!(
            "[discovery] Waiting for the cluster-info ConfigMap to receive a JWS signaturefor token ID {:?}",
            token.id()
        ),
    );
    let mut last_error = String::from("timed out waiting for the condition");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(
            remaining.max(Duration::from_millis(1)),
            client.get(CLUSTER_INFO),
        )
        .await;
        match attempt {
            Err(_) => {}
            Ok(Err(e)) => {
                last_error = format!("failed to request the cluster-info ConfigMap: {e}");
                v1(
                    verbosity,
                    "token.go:239",
                    &format!("[discovery] Retrying due to error: {last_error}"),
                );
            }
            Ok(Ok(resp)) if resp.status != 200 => {
                last_error = format!(
                    "failed to request the cluster-info ConfigMap: {}",
                    resp.error_text()
                );
                v1(
                    verbosity,
                    "token.go:239",
                    &format!("[discovery] Retrying due to error: {last_error}"),
                );
            }
            Ok(Ok(resp)) => {
                let cm = resp.json();
                if cm["data"]
                    .get(format!("jws-kubeconfig-{}", token.id()))
                    .is_some()
                {
                    return Ok(cm);
                }
                // A deleted or expired token has no signature; a fresh one gets it a
                // moment later from the bootstrap signer. Either way: wait and see.
                last_error = token_invalid(token);
                v1(
                    verbosity,
                    "token.go:245",
                    &format!(
                        "[discovery] The cluster-info ConfigMap does not yet contain a JWS signature for token ID {:?}, will try again",
                        token.id()
                    ),
                );
            }
        }
        let now = Instant::now();
        if now >= deadline || now + interval > deadline {
            if now < deadline {
                tokio::time::sleep_until(deadline).await;
            }
            return Err(last_error);
        }
        tokio::time::sleep(interval).await;
    }
}

fn token_invalid(token: &BootstrapToken) -> String {
    format!(
        "token id {:?} is invalid for this cluster or it has expired. Use \"kubeadm token create\" on the control-plane node to create a new valid token",
        token.id()
    )
}

fn validate_cluster_info_token(
    cm: &serde_json::Value,
    token: &BootstrapToken,
) -> Result<String, String> {
    let kubeconfig = cm["data"]["kubeconfig"].as_str().unwrap_or_default();
    if kubeconfig.is_empty() {
        return Err("there is no kubeconfig key in the cluster-info ConfigMap. This API Server isn't set up for token bootstrapping, can't connect".into());
    }
    let sig = cm["data"][format!("jws-kubeconfig-{}", token.id())]
        .as_str()
        .unwrap_or_default();
    if sig.is_empty() {
        return Err(token_invalid(token));
    }
    if !jws::verify_detached(sig, kubeconfig, token.id(), token.secret()) {
        return Err("failed to verify JWS signature of received cluster info object, can't trust this API Server".into());
    }
    Ok(kubeconfig.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jws_checks() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let kc = "apiVersion: v1\n";
        let good = json!({"data": {"kubeconfig": kc, "jws-kubeconfig-abcdef": jws::sign_detached(kc, "abcdef", "0123456789abcdef")}});
        assert_eq!(validate_cluster_info_token(&good, &t).unwrap(), kc);
        let forged = json!({"data": {"kubeconfig": kc, "jws-kubeconfig-abcdef": jws::sign_detached(kc, "abcdef", "ffffffffffffffff")}});
        assert!(
            validate_cluster_info_token(&forged, &t)
                .unwrap_err()
                .contains("failed to verify JWS signature")
        );
        let missing = json!({"data": {"kubeconfig": kc}});
        assert!(
            validate_cluster_info_token(&missing, &t)
                .unwrap_err()
                .contains("token id \"abcdef\" is invalid for this cluster or it has expired")
        );
        let empty = json!({"data": {}});
        assert!(
            validate_cluster_info_token(&empty, &t)
                .unwrap_err()
                .contains("there is no kubeconfig key")
        );
    }
}
