//! kubeadm: which version is installed, the JoinConfiguration it gets, running it as a
//! supervised child, and what its exit means.

pub mod join_config;
pub mod outcome;
pub mod supervisor;
pub mod version;

pub use join_config::{
    ConfigApi, ControlPlaneInput, JoinConfigInput, Unsupported, extra_flags, render, write_private,
};
pub use outcome::{KUBELET_HEALTH_WAIT, KUBELET_RESTART_FAILED, TLS_BOOTSTRAP_WAIT, classify};
pub use supervisor::{Finished, Killed, Limits, LineWatch, run, run_watching};
pub use version::{KubeadmVersion, query_kubelet_version, query_version};
