//! Faithful fakes of the Kubernetes pieces that cannot run on the test machines:
//! `fake-apiserver`, `fake-kubeadm`, `fake-kubelet` and `fake-crictl`.
//!
//! They exist so kube-join-agent can be tested against upstream's real files, messages,
//! exit codes and timings (design/kubeadm-facts.md), not against mocks inside the agent.
//! The binaries in `src/bin/` are thin: each calls the `run` of its module here.
#![deny(unused_must_use)]
#![warn(missing_docs)]

pub mod apiserver;
pub mod copycerts;
pub mod crictl;
pub mod ecdsa_pem;
pub mod fsroot;
pub mod gotime;
pub mod httpclient;
pub mod jws;
pub mod klog;
pub mod kubeadm;
pub mod kubeconfig;
pub mod kubelet;
pub mod kubepki;
pub mod kubeversion;
pub mod pin;
pub mod timefmt;
pub mod token;

/// The Kubernetes version the fakes pretend to be unless a knob says otherwise.
pub const DEFAULT_KUBERNETES_VERSION: &str = "v1.29.7";

/// Installs ring as rustls' process-wide crypto provider; reqwest is built with
/// `rustls-no-provider`, so every binary calls this once before any TLS.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is exactly what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
