//! The control-plane side of `kubeadm join` (kubeadm/cmd/phases/join/controlplaneprepare.go,
//! checketcd.go, controlplanejoin.go; phases/copycerts, phases/certs, phases/etcd/local.go,
//! util/etcd/etcd.go, phases/markcontrolplane): what runs when the JoinConfiguration
//! has a `controlPlane` section.

pub mod etcd;
pub mod mark;
pub mod prepare;

use std::net::TcpListener;
use std::time::Duration;

use super::error::{KubeadmError, generic};
use super::join::JoinData;
use crate::fsroot::write_atomic;
use crate::httpclient::ApiClient;
use crate::kubeconfig;

/// kubeadm's certificates directory.
pub const PKI: &str = "/etc/kubernetes/pki";
/// The static pod manifests directory.
pub const MANIFESTS: &str = "/etc/kubernetes/manifests";
/// The admin kubeconfig a joining control plane writes and then uses.
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";

/// The block a whole control-plane join ends with (cmd/join.go joinControlPlaneDoneTemp).
pub const JOIN_DONE_CONTROL_PLANE: &str = "
This node has joined the cluster and a new control plane instance was created:

* Certificate signing request was sent to apiserver and approval was received.
* The Kubelet was informed of the new secure connection details.
* Control plane label and taint were applied to the new node.
* The Kubernetes control plane instances scaled up.
* A new etcd member was added to the local/stacked etcd cluster.

To start administering your cluster from this node, you need to run the following as a regular user:

\tmkdir -p $HOME/.kube
\tsudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config
\tsudo chown $(id -u):$(id -g) $HOME/.kube/config

Run 'kubectl get nodes' to see this node join the cluster.
";

/// The parts of the cluster's ClusterConfiguration a control-plane join uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCfg {
    /// `controlPlaneEndpoint` (`host:port`); empty if unset.
    pub control_plane_endpoint: String,
    /// `etcd.local.dataDir`.
    pub etcd_data_dir: String,
    /// `etcd.external` is set.
    pub external_etcd: bool,
    /// `networking.serviceSubnet`.
    pub service_subnet: String,
}

impl ClusterCfg {
    /// Reads the YAML from the kubeadm-config ConfigMap (defaults where absent).
    pub fn parse(yaml: &str) -> Self {
        let v: serde_norway::Value = serde_norway::from_str(yaml).unwrap_or_default();
        let s = |v: Option<&serde_norway::Value>| {
            v.and_then(|v| v.as_str()).unwrap_or_default().to_owned()
        };
        let etcd = v.get("etcd");
        let data_dir = s(etcd
            .and_then(|e| e.get("local"))
            .and_then(|l| l.get("dataDir")));
        let subnet = s(v.get("networking").and_then(|n| n.get("serviceSubnet")));
        Self {
            control_plane_endpoint: s(v.get("controlPlaneEndpoint")),
            etcd_data_dir: if data_dir.is_empty() {
                "/var/lib/etcd".into()
            } else {
                data_dir
            },
            external_etcd: etcd.and_then(|e| e.get("external")).is_some(),
            service_subnet: if subnet.is_empty() {
                "10.96.0.0/12".into()
            } else {
                subnet
            },
        }
    }
}

/// Writes a node file.
pub fn write(
    data: &JoinData,
    node_path: &str,
    content: &[u8],
    mode: u32,
) -> Result<(), KubeadmError> {
    write_atomic(&data.root.path(node_path), content, mode)
        .map_err(|e| generic(format!("failed to write {node_path}: {e:#}")))
}

/// Reads a node file.
pub fn read(data: &JoinData, node_path: &str) -> Result<Vec<u8>, KubeadmError> {
    std::fs::read(data.root.path(node_path))
        .map_err(|e| generic(crate::fsroot::go_path_error("open", node_path, &e)))
}

/// The client `data.Client()` returns on a control plane: admin.conf's identity.
pub fn admin_client(data: &JoinData) -> Result<ApiClient, KubeadmError> {
    let fail = |e: String| generic(format!("couldn't create Kubernetes client: {e}"));
    let resolved = kubeconfig::load(&data.root, ADMIN_CONF).map_err(|e| fail(format!("{e:#}")))?;
    ApiClient::from_kubeconfig(&resolved, Duration::from_secs(10))
        .map_err(|e| fail(format!("{e:#}")))
}

/// The additional preflight of a control-plane join (cmd/phases/join/preflight.go):
/// a stable controlPlaneEndpoint, then the init checks for a secondary control plane.
pub async fn preflight(data: &mut JoinData) -> Result<(), KubeadmError> {
    let cfg = data.cluster_configuration().await?;
    if cfg.control_plane_endpoint.is_empty() {
        return Err(generic(
            "\nOne or more conditions for hosting a new control plane instance is not satisfied.\n\nunable to add a new control plane instance to a cluster that doesn't have a stable controlPlaneEndpoint address\n\nPlease ensure that:\n* The cluster has a stable controlPlaneEndpoint address.\n* The certificates that must be shared among control plane instances are provided.\n",
        ));
    }
    println!(
        "[preflight] Running pre-flight checks before initializing the new control plane instance"
    );
    let cp = data
        .cfg
        .control_plane
        .clone()
        .ok_or_else(|| generic("not a control plane"))?;
    let mut checks = vec![
        port_open(cp.advertise_address, cp.bind_port),
        port_open(cp.advertise_address, 10259),
        port_open(cp.advertise_address, 10257),
    ];
    for m in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "etcd",
    ] {
        checks.push(super::preflight::file_available(
            &data.root,
            &format!("{MANIFESTS}/{m}.yaml"),
        ));
    }
    if !cfg.external_etcd {
        checks.push(port_open(cp.advertise_address, 2379));
        checks.push(port_open(cp.advertise_address, 2380));
        checks.push(super::preflight::dir_available(
            &data.root,
            &cfg.etcd_data_dir,
        ));
    }
    super::preflight::report(checks, &data.ignore)?;
    println!("[preflight] Pulling images required for setting up a Kubernetes cluster");
    println!(
        "[preflight] This might take a minute or two, depending on the speed of your internet connection"
    );
    println!(
        "[preflight] You can also perform this action in beforehand using 'kubeadm config images pull'"
    );
    Ok(())
}

/// Upstream binds `:<port>`; the fake binds the advertise address, so the test's fake
/// API server on 127.0.0.1:6443 in the same network namespace does not count as taken.
fn port_open(ip: std::net::IpAddr, port: u16) -> super::preflight::Outcome {
    let o = super::preflight::Outcome::named(format!("Port-{port}"));
    match TcpListener::bind((ip, port)) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            o.with_error(format!("Port {port} is in use"))
        }
        _ => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_configuration_fields() {
        let c = ClusterCfg::parse(&crate::apiserver::objects::kubeadm_cluster_configuration(
            crate::kubeversion::KubeVersion::parse("v1.29.7").unwrap(),
            "127.0.0.1:6443",
        ));
        assert_eq!(c.control_plane_endpoint, "127.0.0.1:6443");
        assert_eq!(c.etcd_data_dir, "/var/lib/etcd");
        assert!(!c.external_etcd);
        assert_eq!(ClusterCfg::parse("").control_plane_endpoint, "");
    }
}
