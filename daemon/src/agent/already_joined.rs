//! Already joined? A valid kubelet.conf for this cluster means yes: start kubelet with
//! its existing credentials and verify, without running kubeadm. Running on every boot
//! is harmless.

use super::{Agent, Joined, Phase};
use crate::failure::Failure;
use crate::kubelet;
use crate::pki;
use tracing::{info, warn};

impl Agent {
    /// Looks for a valid kubelet.conf; `None` means the node must be joined.
    pub(super) fn already_joined(&self) -> Result<Option<Joined>, Failure> {
        self.enter(Phase::AlreadyJoined, "looking for a valid kubelet.conf");
        self.joined_credentials()
    }

    /// A joined node: kubelet starts with the credentials it has, then verify.
    pub(super) async fn start_joined(&self, joined: Joined) -> Result<Joined, Failure> {
        info!(
            phase = Phase::AlreadyJoined.name(),
            "node is already joined ({}); not running kubeadm", joined.creds.summary.subject
        );
        self.remove_bootstrap_leftover();
        self.ready();
        self.enter(
            Phase::Handoff,
            "starting kubelet with its existing credentials",
        );
        self.gate().open().await?;
        self.verify(joined).await
    }

    /// kubeadm removes bootstrap-kubelet.conf, which holds the bootstrap token, once the
    /// kubelet has its certificate; a join interrupted after that moment (the agent or
    /// the machine stopped before kubeadm returned) leaves it behind. A joined kubelet
    /// never needs it again.
    fn remove_bootstrap_leftover(&self) {
        let leftover = self.paths.bootstrap_kubelet_conf();
        match std::fs::remove_file(&leftover) {
            Ok(()) => info!(
                phase = Phase::AlreadyJoined.name(),
                "removed {}: kubeadm's bootstrap kubeconfig (it holds the bootstrap token) outlived an interrupted join",
                leftover.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(
                "cannot remove {} (it holds the bootstrap token): {e}",
                leftover.display()
            ),
        }
    }

    /// A valid kubelet.conf for this cluster means the node is joined.
    fn joined_credentials(&self) -> Result<Option<Joined>, Failure> {
        let s = &self.settings;
        if !self.paths.kubelet_conf().exists() {
            info!(
                phase = Phase::AlreadyJoined.name(),
                "not joined: {} does not exist",
                self.paths.kubelet_conf().display()
            );
            return Ok(None);
        }
        let ca_pem = match std::fs::read(self.paths.cluster_ca()) {
            Ok(pem) => pem,
            Err(e) => {
                warn!(
                    "{} exists but {} cannot be read ({e}): rejoining",
                    self.paths.kubelet_conf().display(),
                    self.paths.cluster_ca().display()
                );
                return Ok(None);
            }
        };
        let ca = match pki::pem_certificates(&ca_pem, "cluster CA") {
            Ok(ca) => ca,
            Err(e) => {
                warn!("{e}: rejoining");
                return Ok(None);
            }
        };
        if !s.join.ca_pins.is_empty() {
            let pins: Vec<_> = ca
                .iter()
                .filter_map(|c| pki::spki_pin(c, "cluster CA").ok())
                .collect();
            if !pins.iter().any(|p| s.join.ca_pins.contains(p)) {
                return Err(Failure::HostNotReady {
                    check: "leftovers".into(),
                    reason: format!(
                        "this node is joined to another cluster: {} has CA {} which matches no configured pin",
                        self.paths.cluster_ca().display(),
                        pins.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    fix: "if the node should move to the configured cluster, run `kubeadm reset -f` and restart kube-join-agent; otherwise correct join.ca_cert_hashes".into(),
                });
            }
        }
        match kubelet::check_kubelet_conf(&self.paths, &ca, &s.join.node_name) {
            Ok(creds) => Ok(Some(Joined {
                creds,
                ca,
                fresh: false,
            })),
            Err(problem) => {
                warn!(
                    phase = Phase::AlreadyJoined.name(),
                    "kubelet.conf is not usable ({problem}): the node will be joined again"
                );
                Ok(None)
            }
        }
    }
}
