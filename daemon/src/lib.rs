//! kube-join-agent: takes a machine from "image booted" to "registered Kubernetes node"
//! with kubeadm, gates kubelet until its configuration is valid, and explains itself in
//! the journal when it cannot.
#![deny(unused_must_use)]
#![deny(missing_docs)]

pub mod agent;
pub mod apiserver;
pub mod backoff;
pub mod body;
pub mod cli;
pub mod config;
pub mod control_plane;
pub mod cri;
pub mod discovery;
pub mod etcd;
pub mod failure;
pub mod fswatch;
pub mod kubeadm;
pub mod kubeconfig;
pub mod kubelet;
pub mod metrics;
pub mod node;
pub mod paths;
pub mod pki;
pub mod preflight;
pub mod reload;
pub mod report;
pub mod secret;
pub mod skew;
pub mod state;
pub mod systemd;
pub mod telemetry;
#[cfg(test)]
mod testutil;
