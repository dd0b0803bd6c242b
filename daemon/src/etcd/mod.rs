//! etcd, asked over its gRPC API with the certificates kubeadm downloaded: leader,
//! members, learners, peer reachability (control-plane joins).
//!
//! Why the agent talks to etcd itself: a second control plane's join fails late and
//! vaguely when etcd is not ready for it (seed 000: `etcdserver: can only promote a
//! learner member which is in sync with leader`). The causes are few and each has a
//! check here: no leader yet, a stale learner from an earlier attempt, port 2380
//! closed, the learner's etcd not running. Together they replace the incident's
//! "diagnose" and "cleanup stale learners" scripts.
//!
//! - [`client`]: the wire client (tonic, with the messages and stubs that build.rs
//!   generates from etcd's rpc.proto, [`proto`]).
//! - [`members`]: member IDs, stale learners, peer URLs, the etcdctl removal command.
//! - [`health`]: leader agreed by a quorum.
//! - [`checks`]: the typed findings, as check lines and as failures.
//! - [`progress`] and [`learner`]: this node's learner, catching up or stuck.

pub mod checks;
pub mod client;
pub mod health;
pub mod learner;
pub mod members;
pub mod progress;
pub mod proto;

pub use checks::{EtcdFinding, Inspection};
pub use client::{Client, EtcdError, Status, TlsFiles};
pub use members::{Member, MemberId};

use crate::config::Settings;
use crate::paths::Paths;
use crate::preflight::Finding;

/// The etcd checks for `kube-join-agent check`: nothing for a worker; for a control
/// plane, this node's name and, once kubeadm has written the etcd client certificate,
/// leader, stale learners, this node's own member and the peers' port 2380. Changes
/// nothing and does not wait.
pub async fn findings(settings: &Settings, paths: &Paths) -> Vec<Finding> {
    let Some(cp) = &settings.join.control_plane else {
        return Vec::new();
    };
    let mut out = vec![checks::name_finding(&settings.join.node_name).await];
    let Some(address) =
        checks::advertise_address(cp.advertise_address, &settings.join.api_server.host)
    else {
        out.push(EtcdFinding::NoAddress);
        return out.iter().map(EtcdFinding::to_finding).collect();
    };
    let files = TlsFiles::kubeadm(paths);
    if let Some(missing) = files.missing() {
        out.push(EtcdFinding::NoCertificates {
            missing: missing.display().to_string(),
        });
        return out.iter().map(EtcdFinding::to_finding).collect();
    }
    let client = match Client::from_files(&files) {
        Ok(c) => c,
        Err(e) => {
            out.push(EtcdFinding::NoAnswer {
                detail: e.to_string(),
            });
            return out.iter().map(EtcdFinding::to_finding).collect();
        }
    };
    match checks::inspect(&client, &settings.etcd.endpoints).await {
        Err(e) => out.push(EtcdFinding::NoAnswer {
            detail: e.to_string(),
        }),
        Ok(inspection) => {
            let detail = inspection.health.describe(&inspection.members);
            out.push(if inspection.health.has_leader() {
                EtcdFinding::Leader { detail }
            } else {
                EtcdFinding::NoLeader { detail }
            });
            out.extend(
                checks::membership_findings(
                    &inspection,
                    &members::peer_url(address),
                    settings.etcd.remove_stale_learners,
                )
                .await,
            );
        }
    }
    out.iter().map(EtcdFinding::to_finding).collect()
}
