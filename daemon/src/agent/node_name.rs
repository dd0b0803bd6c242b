//! A Node that already carries this machine's name. kubeadm refuses to join over a Ready
//! one (phases/join/kubelet.go) and silently reuses a NotReady one. The agent looks first,
//! with the bootstrap token (kubeadm grants bootstrappers `get nodes` for this check),
//! and waits for a lingering Ready Node to go NotReady instead of letting kubeadm fail
//! and leave files behind.

use super::wait::{Look, Pace};
use super::{Agent, Stop};
use crate::apiserver::ApiClient;
use crate::config::Settings;
use crate::discovery::ClusterInfo;
use crate::failure::Failure;
use crate::paths::Paths;
use crate::telemetry;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// The journal phase these lines belong to.
const PHASE: &str = "discovery";
/// How often a Ready Node with this name is looked at again.
const RECHECK: Duration = Duration::from_secs(5);

/// kubeadm refuses a name held by a Ready Node. A reset machine's old Node turns
/// NotReady within about 40 s (node lease), so wait for that rather than fail; a
/// Node that stays Ready is a live machine, and deleting it would be wrong.
impl Agent {
    /// Waits, before kubeadm runs, until no Ready Node holds this node's name.
    pub(super) async fn settle_node_name(&self, client: &ApiClient) -> Result<(), Stop> {
        settle(&self.paths, &self.settings, client).await
    }
}

/// The agent's Node-name check without the agent, for anything that runs it (the
/// fleet simulation runs a thousand): waits until no Ready Node holds the name.
pub async fn settle(paths: &Paths, s: &Settings, client: &ApiClient) -> Result<(), Stop> {
    let name = &s.join.node_name;
    let started = Instant::now();
    let mut reported = false;
    let mut busy_reported = false;
    // Looks every 5 s (a reset machine's Node turns NotReady within about 40 s); a
    // new node name or token dropped in ends the wait at once.
    super::wait::until(paths, s, Pace::doubling(RECHECK, RECHECK), &[], async || {
            match client.node(name).await {
                Ok(None) => Look::Done(Ok(())),
                Ok(Some(node)) if node.ready != "True" => {
                    info!(
                        phase = PHASE,
                        "a Node named \"{name}\" exists and is not Ready (Ready={}): this machine takes the name over, as kubeadm does",
                        if node.ready.is_empty() {
                            "not reported"
                        } else {
                            node.ready.as_str()
                        }
                    );
                    if let Some(kubeconfig) = &s.join.node_delete_kubeconfig {
                        let deleted =
                            match ApiClient::from_kubeconfig(paths, kubeconfig, client.ca()) {
                                Ok(admin) => admin.delete_node(name).await,
                                Err(e) => Err(e),
                            };
                        match deleted {
                            Ok(()) => info!(
                                "deleted the stale Node \"{name}\" (join.node_delete_kubeconfig) so this machine registers a fresh one"
                            ),
                            Err(e) => warn!(
                                "could not delete the stale Node \"{name}\": {e}; kubeadm reuses it"
                            ),
                        }
                    }
                    Look::Done(Ok(()))
                }
                Ok(Some(node)) => {
                    if started.elapsed() >= s.join.node_conflict_wait {
                        return Look::Done(Err(Failure::NodeNameTaken {
                            node: name.clone(),
                            waited: s.join.node_conflict_wait,
                        }));
                    }
                    if !reported {
                        warn!(
                            phase = PHASE,
                            "a Node named \"{name}\" already exists and is Ready (last heartbeat {}): kubeadm would refuse to join; if this machine was reset, its old Node turns NotReady about 40 s after the old kubelet stopped; waiting up to {} for that",
                            if node.last_heartbeat.is_empty() {
                                "unknown"
                            } else {
                                node.last_heartbeat.as_str()
                            },
                            humantime::format_duration(s.join.node_conflict_wait)
                        );
                        telemetry::notify_status(&format!(
                            "discovery: waiting for the Ready Node \"{name}\" to turn NotReady"
                        ));
                        reported = true;
                    }
                    Look::Again
                }
                // A busy or restarting API server: running kubeadm now would only add
                // its own retries to the load, so look again (after Retry-After, which
                // the client honoured already) until timeouts.discovery, as discovery
                // does; an API server that answers so for that long is unreachable.
                Err(e) if e.is_transient() => {
                    if started.elapsed() >= s.timeouts.discovery {
                        return Look::Done(Err(Failure::ApiServerUnreachable {
                            detail: format!(
                                "{e} (answered so for the {} of timeouts.discovery)",
                                humantime::format_duration(s.timeouts.discovery)
                            ),
                            port: s.join.api_server.port,
                        }));
                    }
                    if !busy_reported {
                        warn!(
                            phase = PHASE,
                            "cannot check for an existing Node \"{name}\" yet ({e}); looking again for up to {}",
                            humantime::format_duration(s.timeouts.discovery)
                        );
                        busy_reported = true;
                    }
                    Look::AgainAfter(RECHECK)
                }
                // Not allowed (an older cluster's bootstrap RBAC): kubeadm makes the
                // same check itself.
                Err(e) => {
                    warn!("cannot check for an existing Node {name} ({e}); kubeadm will check");
                    Look::Done(Ok(()))
                }
            }
        })
        .await
}

impl Agent {
    /// A client with the bootstrap token for the API server discovery verified.
    pub(super) fn bootstrap_client(&self, cluster: &ClusterInfo) -> Result<ApiClient, Failure> {
        let s = &self.settings;
        ApiClient::bootstrap(&s.join.api_server, &cluster.ca, &s.join.token).map_err(|e| {
            Failure::Local {
                detail: e.to_string(),
            }
        })
    }
}
