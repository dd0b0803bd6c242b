//! `kube-join-agent check [--json]`: everything the agent would verify before changing
//! anything, one row each with a verdict, a reason and a fix. It changes nothing on the
//! node and creates nothing in the cluster: it reads files, asks systemd, containerd
//! and etcd, runs `kubeadm version` and `kubelet --version`, and reads cluster-info,
//! /version and this node's Node anonymously or with the bootstrap token.

use super::Row;
use crate::apiserver::ApiClient;
use crate::config::Settings;
use crate::discovery::{self, ClusterInfo, DiscoveryError};
use crate::kubeadm::{self, ConfigApi};
use crate::paths::Paths;
use crate::preflight;
use serde::Serialize;

/// Clock skew worth a warning (TLS and tokens tolerate a little).
const SKEW_WARN_SECS: i64 = 30;
/// Clock skew that breaks certificates: the kubelet's new certificate is backdated by
/// 5 minutes at most, so a clock further behind sees it as not yet valid.
const SKEW_FAIL_SECS: i64 = 300;

/// `kube-join-agent.check/v1`.
#[derive(Debug, Serialize)]
pub struct Check {
    /// Always `kube-join-agent.check/v1`.
    pub schema: &'static str,
    /// The Node name checked for.
    pub node_name: String,
    /// True when no row fails (the exit code is then 0).
    pub ok: bool,
    /// Every check, in the order the agent runs them.
    pub rows: Vec<Row>,
}

impl Check {
    /// The rows as a terminal shows them.
    pub fn text(&self) -> String {
        let mut out = format!("node name: {}\n", self.node_name);
        for row in &self.rows {
            out += &format!("{row}\n");
        }
        out += if self.ok {
            "nothing fails: the agent can join this node\n"
        } else {
            "something fails: see the rows marked FAIL and their fixes\n"
        };
        out
    }
}

/// Runs every check once, without waiting for anything.
pub async fn run(paths: &Paths, s: &Settings) -> Check {
    let mut rows = vec![Row::pass(
        "configuration",
        format!(
            "{} file(s): {}",
            s.files.len(),
            s.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )];
    let waiting_fix = |check: &str| match check {
        "container-runtime" => {
            "start containerd (`systemctl start containerd`) and see `journalctl -u containerd`"
                .to_string()
        }
        _ => format!(
            "check the address {}, the network path to port {}, and that the control plane is up",
            s.join.api_server, s.join.api_server.port
        ),
    };
    let mut findings = preflight::static_checks(paths, s);
    let kubeadm_version = match kubeadm::query_version(&s.kubeadm_path).await {
        Ok(v) => {
            rows.extend(findings.drain(..).map(|f| Row::from_finding(&f, "")));
            rows.push(Row::pass(
                "kubeadm",
                format!(
                    "{v} at {}, JoinConfiguration {}",
                    s.kubeadm_path.display(),
                    ConfigApi::for_version(v).api_version()
                ),
            ));
            Some(v)
        }
        Err(e) => {
            rows.extend(findings.drain(..).map(|f| Row::from_finding(&f, "")));
            rows.push(Row::fail(
                "kubeadm",
                e.to_string(),
                "install the kubeadm package matching the cluster's version, or set [kubeadm] path",
            ));
            None
        }
    };
    match crate::systemd::Systemd::connect().await {
        Ok(systemd) => {
            let f = preflight::kubelet_unit::finding(&systemd, paths, &s.kubelet_unit).await;
            rows.push(Row::from_finding(&f, ""));
        }
        Err(e) => rows.push(Row::warn(
            "kubelet-flags",
            format!("cannot ask systemd about {}: {e}", s.kubelet_unit),
            "run check as root on a node booted with systemd",
        )),
    }
    let mut waitable = vec![preflight::runtime::check(&s.containerd_socket).await];
    waitable.extend(preflight::network::check(&s.join.api_server).await);
    for f in preflight::downgrade(waitable, &s.preflight.warn_only) {
        rows.push(Row::from_finding(&f, &waiting_fix(f.check)));
    }
    if let Some(cluster) = discovery_row(s, &mut rows).await {
        clock_row(&cluster, &mut rows);
        let kubelet = crate::skew::kubelet_version().await;
        let skew = match ApiClient::bootstrap(&s.join.api_server, &cluster.ca, &s.join.token) {
            Ok(client) => crate::skew::findings(&client, &kubelet, kubeadm_version).await,
            Err(e) => Err(e.to_string()),
        };
        match skew {
            Ok(findings) => {
                for f in preflight::downgrade(findings, &s.preflight.warn_only) {
                    rows.push(Row::from_finding(&f, ""));
                }
            }
            Err(why) => rows.push(Row::warn(
                crate::skew::CHECK,
                why,
                "check that the API server answers /version",
            )),
        }
        rows.push(node_name_row(s, &cluster).await);
    }
    for f in crate::etcd::findings(s, paths).await {
        rows.push(Row::from_finding(&f, ""));
    }
    Check {
        schema: "kube-join-agent.check/v1",
        node_name: s.join.node_name.clone(),
        ok: !rows.iter().any(Row::fails),
        rows,
    }
}

/// Discovery once: the token's signature and the CA pin.
async fn discovery_row(s: &Settings, rows: &mut Vec<Row>) -> Option<ClusterInfo> {
    match discovery::discover(&s.join.api_server, &s.join.token, &s.join.ca_pins).await {
        Ok(info) => {
            rows.push(Row::pass(
                "discovery",
                format!(
                    "cluster-info signed for token id {}, CA {}, server {}",
                    s.join.token.id(),
                    if s.join.ca_pins.is_empty() {
                        "accepted without a pin (unsafe_skip_ca_verification)"
                    } else {
                        "pinned"
                    },
                    info.server
                ),
            ));
            Some(info)
        }
        Err(e) => {
            let fix = match &e {
                DiscoveryError::TokenUnknown { .. } => format!(
                    "create a token with `kubeadm token create` on a control plane and write it to {}",
                    s.join.token_source
                ),
                DiscoveryError::BadSignature { .. } => format!(
                    "check the token in {}: its secret does not match the cluster's",
                    s.join.token_source
                ),
                DiscoveryError::CaPinMismatch { .. } => "set join.ca_cert_hashes to the pin `kubeadm token create --print-join-command` prints, or check that this is the right API server".into(),
                _ if e.is_outage() => format!(
                    "check the address {}, the network path to it, and that the control plane is up",
                    s.join.api_server
                ),
                _ => "see the reason; the agent waits this out for timeouts.discovery".into(),
            };
            rows.push(Row::fail("discovery", e.to_string(), fix));
            None
        }
    }
}

/// This node's clock against the API server's Date header.
fn clock_row(cluster: &ClusterInfo, rows: &mut Vec<Row>) {
    let Some(skew) = cluster.clock_skew_secs else {
        rows.push(Row::warn(
            "clock-skew",
            "the API server sent no Date header",
            "check time synchronization by hand (timedatectl)",
        ));
        return;
    };
    let how = format!(
        "this node's clock is {}s {} the API server's",
        skew.abs(),
        if skew >= 0 { "ahead of" } else { "behind" }
    );
    let fix = "fix time synchronization (systemd-timesyncd, chrony): `timedatectl set-ntp true`";
    rows.push(match skew.abs() {
        n if n > SKEW_FAIL_SECS => Row::fail(
            "clock-skew",
            format!("{how}: certificates will look not yet valid or expired"),
            fix,
        ),
        n if n > SKEW_WARN_SECS => Row::warn("clock-skew", how, fix),
        _ => Row::pass("clock-skew", how),
    });
}

/// A Node already holding this name: Ready means the agent would wait.
async fn node_name_row(s: &Settings, cluster: &ClusterInfo) -> Row {
    let name = &s.join.node_name;
    let client = match ApiClient::bootstrap(&s.join.api_server, &cluster.ca, &s.join.token) {
        Ok(c) => c,
        Err(e) => return Row::warn("node-name", e.to_string(), "kubeadm will check"),
    };
    match client.node(name).await {
        Ok(None) => Row::pass("node-name", format!("no Node named \"{name}\" yet")),
        Ok(Some(node)) if node.ready == "True" => Row::warn(
            "node-name",
            format!(
                "a Node named \"{name}\" exists and is Ready: the agent would wait up to {} for it to turn NotReady (a reset machine's Node does within about 40 s)",
                humantime::format_duration(s.join.node_conflict_wait)
            ),
            "if another live machine holds this name, set join.node_name",
        ),
        Ok(Some(_)) => Row::pass(
            "node-name",
            format!("a Node named \"{name}\" exists and is not Ready: kubeadm takes it over"),
        ),
        Err(e) => Row::warn("node-name", e.to_string(), "kubeadm will check"),
    }
}
