//! Every file the agent reads or writes, relative to one file-system root.
//!
//! Production uses `/`; unit tests point the root at a temporary directory so the
//! same code paths run against real files without touching the machine.

use std::path::{Path, PathBuf};

/// Locations of the agent's own files and of the kubeadm/kubelet files it watches.
#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self::new("/")
    }
}

impl Paths {
    /// Paths below `root` (normally `/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `path` (absolute, as on a real node) below the root.
    pub fn at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Configuration directories and files, lowest precedence first: vendor defaults,
    /// runtime overrides, the admin's file, the admin's fragments.
    pub fn config_sources(&self) -> Vec<ConfigSource> {
        vec![
            ConfigSource::Dir(self.at("/usr/lib/kube-join-agent/config.d")),
            ConfigSource::Dir(self.at("/run/kube-join-agent/config.d")),
            ConfigSource::File(self.at("/etc/kube-join-agent/config.toml")),
            ConfigSource::Dir(self.at("/etc/kube-join-agent/config.d")),
        ]
    }

    /// The persistent state file.
    pub fn state_file(&self) -> PathBuf {
        self.at("/var/lib/kube-join-agent/state.json")
    }

    /// Runtime directory (mode 0700): the generated JoinConfiguration lives here.
    pub fn runtime_dir(&self) -> PathBuf {
        self.at("/run/kube-join-agent")
    }

    /// The JoinConfiguration handed to kubeadm (holds the token: mode 0600).
    pub fn join_config(&self) -> PathBuf {
        self.runtime_dir().join("join-config.yaml")
    }

    /// The metrics server's Unix socket (mode 0660, in the 0700 runtime directory).
    pub fn metrics_socket(&self) -> PathBuf {
        self.runtime_dir().join("metrics.sock")
    }

    /// `/etc/kubernetes`.
    pub fn kubernetes_dir(&self) -> PathBuf {
        self.at("/etc/kubernetes")
    }

    /// The kubelet's own kubeconfig, written by the kubelet after TLS bootstrap.
    pub fn kubelet_conf(&self) -> PathBuf {
        self.kubernetes_dir().join("kubelet.conf")
    }

    /// The bootstrap kubeconfig kubeadm writes for the kubelet (holds the token).
    pub fn bootstrap_kubelet_conf(&self) -> PathBuf {
        self.kubernetes_dir().join("bootstrap-kubelet.conf")
    }

    /// The cluster CA kubeadm stores during discovery.
    pub fn cluster_ca(&self) -> PathBuf {
        self.kubernetes_dir().join("pki/ca.crt")
    }

    /// `/var/lib/kubelet`.
    pub fn kubelet_dir(&self) -> PathBuf {
        self.at("/var/lib/kubelet")
    }

    /// The KubeletConfiguration kubeadm downloads from the cluster.
    pub fn kubelet_config_yaml(&self) -> PathBuf {
        self.kubelet_dir().join("config.yaml")
    }

    /// The kubelet flags kubeadm computes for this node.
    pub fn kubeadm_flags_env(&self) -> PathBuf {
        self.kubelet_dir().join("kubeadm-flags.env")
    }

    /// The kubelet's current client certificate and key.
    pub fn kubelet_client_current(&self) -> PathBuf {
        self.kubelet_dir().join("pki/kubelet-client-current.pem")
    }

    /// Where systemd unit files placed by the administrator live.
    pub fn etc_systemd_system(&self) -> PathBuf {
        self.at("/etc/systemd/system")
    }

    /// Runtime unit drop-ins (removed at reboot).
    pub fn run_systemd_system(&self) -> PathBuf {
        self.at("/run/systemd/system")
    }

    /// systemd's early generator output, where the agent's generator masks kubelet at boot.
    pub fn generator_early(&self) -> PathBuf {
        self.at("/run/systemd/generator.early")
    }

    /// A path below the root, for files named in the configuration (token file).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match path.strip_prefix("/") {
            Ok(rel) => self.root.join(rel),
            Err(_) => self.root.join(path),
        }
    }

    /// `/proc`, for host checks.
    pub fn proc(&self) -> PathBuf {
        self.at("/proc")
    }
}

/// One place configuration is read from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// Every `*.toml` in the directory, in file-name order.
    Dir(PathBuf),
    /// One file, if it exists.
    File(PathBuf),
}
