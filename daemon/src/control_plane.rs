//! The control-plane join: kubeadm phase by phase, with etcd checked between phases.
//!
//! The agent has written the JoinConfiguration (with its `controlPlane` section) and
//! hands over a runner for kubeadm invocations: `kubeadm(args)` runs one supervised
//! kubeadm (the agent starts kubelet during `kubelet-start`) and classifies its exit.

use crate::config::Settings;
use crate::failure::Failure;
use crate::paths::Paths;
use std::path::Path;

/// What the agent hands to the control-plane join.
pub struct ControlPlaneJoin<'a> {
    /// File-system root.
    pub paths: &'a Paths,
    /// Validated settings; `settings.join.control_plane` is set.
    pub settings: &'a Settings,
    /// The JoinConfiguration, mode 0600.
    pub config_path: &'a Path,
}

/// Runs the control-plane join.
pub async fn join(
    job: &ControlPlaneJoin<'_>,
    mut kubeadm: impl AsyncFnMut(Vec<String>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    // The phase-by-phase flow with etcd checks between phases lands with the etcd
    // client; until then a control plane joins in one kubeadm run.
    let config = job.config_path.display().to_string();
    kubeadm(vec!["join".into(), "--config".into(), config]).await
}
