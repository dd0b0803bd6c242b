//! The kubelet side of a join: keep it gated while kubeadm works, watch kubeadm's
//! kubelet files appear, hand off, and check the credentials TLS bootstrap produces.

pub mod files;
pub mod gate;
pub mod tls;
pub mod view;
mod watch;

pub use files::{check_kubelet_files, wait_for_kubelet_files, wait_for_kubelet_files_then};
pub use gate::{Gate, GateMethod};
pub use tls::{KubeletCredentials, KubeletView, check_kubelet_conf, wait_for_tls_bootstrap};
