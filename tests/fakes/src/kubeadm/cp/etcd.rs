//! kubeadm's stacked-etcd join (phases/etcd/local.go `CreateStackedEtcdStaticPodManifestFile`,
//! util/etcd/etcd.go), against the test's real etcd through the agent's etcd client:
//! find etcd from the etcd pods' annotation, sync endpoints from the member list, add
//! this node as a learner, write the etcd static pod, promote it (polling up to
//! etcdAPICall), wait for the cluster. Also the hidden check-etcd phase and reset's
//! member removal.

use std::net::IpAddr;
use std::time::Duration;

use kube_join_agent::etcd::{Client, EtcdError, Member, members};
use tokio::time::Instant;

use super::{ADMIN_CONF, MANIFESTS, PKI, admin_client, write};
use crate::apiserver::controlplane::ETCD_CLIENT_URLS_ANNOTATION;
use crate::fsroot::Root;
use crate::klog::{self, Severity};
use crate::kubeadm::error::{KubeadmError, generic};
use crate::kubeadm::join::JoinData;
use crate::kubeversion::KubeVersion;

/// constants.EtcdAPICallRetryInterval (not scaled, like the other poll intervals).
const RETRY: Duration = Duration::from_millis(500);
/// etcdTimeout: each etcd call's own deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// etcdHealthyCheckInterval and etcdHealthyCheckRetries ("can take up to 40s").
const HEALTHY_INTERVAL: Duration = Duration::from_secs(5);
const HEALTHY_RETRIES: u32 = 8;
const ETCD_MANIFEST: &str = "/etc/kubernetes/manifests/etcd.yaml";

/// kubeadm's `GetPeerURL`.
pub fn peer_url(ip: IpAddr) -> String {
    members::peer_url(ip)
}

/// kubeadm's `GetClientURL`.
pub fn client_url(ip: IpAddr) -> String {
    members::client_url(ip)
}

/// EtcdLearnerMode: beta and on by default from v1.29 (alpha, off, in 1.27-1.28).
fn learner_mode(v: KubeVersion) -> bool {
    v.at_least(1, 29)
}

/// kubernetes PR #127491 ("check whether the peer URL for the added etcd member already
/// exists"), in v1.28.15, v1.29.10, v1.30.6, v1.31.2 and v1.32: before it, adding a
/// learner whose peer URL exists fails until etcdAPICall runs out.
pub fn add_is_idempotent(v: KubeVersion) -> bool {
    match (v.major, v.minor) {
        (1, 28) => v.patch >= 15,
        (1, 29) => v.patch >= 10,
        (1, 30) => v.patch >= 6,
        (1, 31) => v.patch >= 2,
        _ => v.at_least(1, 32),
    }
}

/// How clientv3 errors read: etcd's own message, or the dial timeout's.
fn go_error(e: &EtcdError) -> String {
    match e.message() {
        Some(m) => m.to_owned(),
        None => "context deadline exceeded".into(),
    }
}

fn etcd_client(root: &Root) -> Result<Client, String> {
    let read = |p: &str| {
        std::fs::read(root.path(p)).map_err(|e| crate::fsroot::go_path_error("open", p, &e))
    };
    Ok(Client::from_pem(
        &read(&format!("{PKI}/etcd/ca.crt"))?,
        &read(&format!("{PKI}/etcd/healthcheck-client.crt"))?,
        &read(&format!("{PKI}/etcd/healthcheck-client.key"))?,
    )
    .with_call_timeout(CALL_TIMEOUT))
}

/// `getEtcdEndpoints`: the etcd pods' advertise-client-urls annotations.
async fn endpoints_from_pods(
    client: &crate::httpclient::ApiClient,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let err = match client.get("/api/v1/namespaces/kube-system/pods").await {
            Ok(r) if r.status == 200 => {
                let v = r.json();
                let urls: Vec<String> = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        p["metadata"]["annotations"][ETCD_CLIENT_URLS_ANNOTATION]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .collect();
                if !urls.is_empty() {
                    return Ok(urls);
                }
                "etcd Pods exist, but no etcd endpoint annotations were found".to_owned()
            }
            Ok(r) => r.error_text(),
            Err(e) => e,
        };
        if Instant::now() + RETRY > deadline {
            return Err(format!(
                "could not retrieve the list of etcd endpoints: {err}"
            ));
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Polls `f` every 500 ms until it yields, or `timeout`; then the last error.
async fn poll<T>(
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() + RETRY > deadline => return Err(e),
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// `NewFromCluster`: endpoints from the pods, then `Sync` (every member's client URLs).
async fn from_cluster(data: &JoinData) -> Result<(Client, Vec<String>), String> {
    let api = admin_client(data).map_err(|e| e.to_string())?;
    let api_timeout = data.knobs.scale(data.cfg.timeouts.kubernetes_api_call);
    let pods = endpoints_from_pods(&api, api_timeout).await?;
    if data.verbosity >= 1 {
        klog::printf(
            Severity::Info,
            "etcd.go:140",
            &format!("etcd endpoints read from pods: {}", pods.join(",")),
        );
    }
    let client = etcd_client(&data.root)
        .map_err(|e| format!("error creating etcd client for {pods:?} endpoints: {e}"))?;
    let timeout = data.knobs.scale(data.cfg.timeouts.etcd_api_call);
    let list = poll(timeout, async || {
        client
            .first(&pods, async |c, ep| c.member_list(ep).await)
            .await
            .map(|(_, l)| l)
            .map_err(|e| go_error(&e))
    })
    .await
    .map_err(|e| format!("error syncing endpoints with etcd: {e}"))?;
    let mut endpoints: Vec<String> = list.iter().flat_map(|m| m.client_urls.clone()).collect();
    if endpoints.is_empty() {
        endpoints = pods;
    }
    Ok((client, endpoints))
}

/// `addMember` as of the kubeadm release: returns the member list after the addition.
async fn add_member(
    client: &Client,
    endpoints: &[String],
    peer: &str,
    learner: bool,
    idempotent: bool,
    timeout: Duration,
    verbosity: u32,
) -> Result<Vec<Member>, String> {
    poll(timeout, async || {
        if idempotent {
            let (_, list) = client
                .first(endpoints, async |c, ep| c.member_list(ep).await)
                .await
                .map_err(|e| go_error(&e))?;
            if list
                .iter()
                .any(|m| m.peer_urls.first().map(String::as_str) == Some(peer))
            {
                return Ok(list);
            }
        }
        if verbosity >= 1 {
            klog::printf(
                Severity::Info,
                "etcd.go:432",
                &format!(
                    "[etcd] Adding etcd member {peer:?}{}",
                    if learner { " as learner" } else { "" }
                ),
            );
        }
        match client
            .first(endpoints, async |c, ep| {
                c.member_add(ep, vec![peer.to_owned()], learner).await
            })
            .await
        {
            Ok((_, (_, all))) => Ok(all),
            // Only the voter path and the fixed releases treat an existing URL as done.
            Err(e) if e.is_peer_url_exists() && (!learner || idempotent) => client
                .first(endpoints, async |c, ep| c.member_list(ep).await)
                .await
                .map(|(_, l)| l)
                .map_err(|e| go_error(&e)),
            Err(e) => Err(go_error(&e)),
        }
    })
    .await
}

/// `MemberPromote`, polling until etcd accepts or etcdAPICall runs out.
async fn promote(
    client: &Client,
    endpoints: &[String],
    peer: &str,
    timeout: Duration,
    verbosity: u32,
) -> Result<(), String> {
    poll(timeout, async || {
        let (_, list) = client
            .first(endpoints, async |c, ep| c.member_list(ep).await)
            .await
            .map_err(|e| go_error(&e))?;
        let member = list
            .iter()
            .find(|m| m.peer_urls.first().map(String::as_str) == Some(peer))
            .ok_or_else(|| "no member id found for peer URL".to_owned())?;
        if !member.is_learner {
            if verbosity >= 1 {
                klog::printf(
                    Severity::Info,
                    "etcd.go:481",
                    &format!("[etcd] Member {} already promoted.", member.id),
                );
            }
            return Ok(());
        }
        match client
            .first(endpoints, async |c, ep| {
                c.member_promote(ep, member.id).await
            })
            .await
        {
            Ok(_) => {
                if verbosity >= 1 {
                    klog::printf(
                        Severity::Info,
                        "etcd.go:503",
                        &format!(
                            "[etcd] The learner was promoted as a voting member: {}",
                            member.id
                        ),
                    );
                }
                Ok(())
            }
            Err(e) => {
                if verbosity >= 5 {
                    klog::printf(
                        Severity::Info,
                        "etcd.go:506",
                        &format!(
                            "[etcd] Promoting the learner {} failed: {}",
                            member.id,
                            go_error(&e)
                        ),
                    );
                }
                Err(go_error(&e))
            }
        }
    })
    .await
}

/// `WaitForClusterAvailable(8, 5s)`: every endpoint answers Status.
async fn wait_available(client: &Client, endpoints: &[String]) -> Result<(), String> {
    for i in 0..HEALTHY_RETRIES {
        if i > 0 {
            tokio::time::sleep(HEALTHY_INTERVAL).await;
        }
        let mut ok = true;
        for ep in endpoints {
            if client.status(ep).await.is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            return Ok(());
        }
    }
    Err("timeout waiting for etcd cluster to be available".into())
}

/// `control-plane-join etcd`.
pub async fn join(data: &mut JoinData) -> Result<(), KubeadmError> {
    let cfg = data.cluster_configuration().await?;
    if cfg.external_etcd {
        println!("[control-plane-join] Using external etcd - no local stacked instance added");
        return Ok(());
    }
    admin_client(data)?;
    let cp = data
        .cfg
        .control_plane
        .clone()
        .ok_or_else(|| generic("not a control plane"))?;
    let dir = data.root.path(&cfg.etcd_data_dir);
    std::fs::create_dir_all(&dir)
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        })
        .map_err(|e| {
            generic(format!(
                "failed to create etcd directory {:?}: {}",
                cfg.etcd_data_dir,
                crate::fsroot::go_errno_text(&e)
            ))
        })?;
    create_stacked_member(data, &cfg.etcd_data_dir, cp.advertise_address)
        .await
        .map_err(|e| {
            generic(format!(
                "error creating local etcd static pod manifest file: {e}"
            ))
        })
}

async fn create_stacked_member(
    data: &JoinData,
    data_dir: &str,
    advertise: IpAddr,
) -> Result<(), String> {
    if data.verbosity >= 1 {
        klog::printf(
            Severity::Info,
            "local.go:144",
            "creating etcd client that connects to etcd pods",
        );
    }
    let (client, mut endpoints) = from_cluster(data).await?;
    let peer = peer_url(advertise);
    let v = data.knobs.version;
    let timeout = data.knobs.scale(data.cfg.timeouts.etcd_api_call);
    if data.verbosity >= 1 {
        klog::printf(
            Severity::Info,
            "local.go:156",
            &format!("[etcd] Adding etcd member: {peer}"),
        );
    }
    let list = add_member(
        &client,
        &endpoints,
        &peer,
        learner_mode(v),
        add_is_idempotent(v),
        timeout,
        data.verbosity,
    )
    .await?;
    println!("[etcd] Announced new etcd member joining to the existing etcd cluster");
    let node = data.cfg.node_name.clone();
    let initial: Vec<(String, String)> = list
        .iter()
        .filter_map(|m| {
            let url = m.peer_urls.first()?.clone();
            let name = if url == peer {
                node.clone()
            } else if m.name.is_empty() {
                m.id.to_string()
            } else {
                m.name.clone()
            };
            Some((name, url))
        })
        .collect();
    if data.verbosity >= 1 {
        klog::printf(
            Severity::Info,
            "local.go:171",
            &format!("Updated etcd member list: {initial:?}"),
        );
    }
    endpoints.push(client_url(advertise));
    println!("[etcd] Creating static Pod manifest for \"etcd\"");
    let manifest = super::prepare::etcd_manifest(&node, advertise, data_dir, &initial);
    write(data, ETCD_MANIFEST, manifest.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    debug_assert!(ETCD_MANIFEST.starts_with(MANIFESTS));
    if learner_mode(v) {
        promote(&client, &endpoints, &peer, timeout, data.verbosity).await?;
    }
    println!(
        "[etcd] Waiting for the new etcd member to join the cluster. This can take up to {}s",
        HEALTHY_INTERVAL.as_secs() * HEALTHY_RETRIES as u64
    );
    wait_available(&client, &endpoints).await
}

/// The hidden `check-etcd` phase of a whole join: every member answers Status.
pub async fn check_etcd(data: &mut JoinData) -> Result<(), KubeadmError> {
    let cfg = data.cluster_configuration().await?;
    if cfg.external_etcd {
        return Ok(());
    }
    println!("[check-etcd] Checking that the etcd cluster is healthy");
    let (client, endpoints) = from_cluster(data).await.map_err(generic)?;
    let timeout = data.knobs.scale(data.cfg.timeouts.etcd_api_call);
    for ep in &endpoints {
        poll(timeout, async || {
            client
                .status(ep)
                .await
                .map(|_| ())
                .map_err(|e| go_error(&e))
        })
        .await
        .map_err(generic)?;
    }
    Ok(())
}

fn manifest_flag(manifest: &str, flag: &str) -> Option<String> {
    let prefix = format!("--{flag}=");
    manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .find_map(|arg| arg.strip_prefix(&prefix).map(str::to_owned))
}

/// reset's remove-etcd-member phase: the etcd data dir to clean, after removing this
/// node's member (by its peer URL) through the cluster, if admin.conf still allows.
/// `None` when there is no etcd manifest ("Assuming external etcd").
pub fn reset_local_member(root: &Root, version: KubeVersion) -> Option<String> {
    let Ok(manifest) = std::fs::read_to_string(root.path(ETCD_MANIFEST)) else {
        println!("[reset] No etcd config found. Assuming external etcd");
        println!("[reset] Please, manually reset etcd to prevent further issues");
        return None;
    };
    let data_dir = manifest_flag(&manifest, "data-dir").unwrap_or_else(|| "/var/lib/etcd".into());
    let peer = manifest_flag(&manifest, "initial-advertise-peer-urls");
    if let (Some(peer), true) = (peer, root.path(ADMIN_CONF).exists()) {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(remove_member(root, version, &peer)));
        if let Err(e) = result {
            klog::printf(
                Severity::Warning,
                "removeetcdmember.go:61",
                &format!(
                    "[reset] Failed to remove etcd member: {e}, please manually remove this etcd member using etcdctl"
                ),
            );
        }
    }
    Some(data_dir)
}

async fn remove_member(root: &Root, version: KubeVersion, peer: &str) -> Result<(), String> {
    crate::install_crypto_provider();
    let resolved = crate::kubeconfig::load(root, ADMIN_CONF).map_err(|e| format!("{e:#}"))?;
    let api = crate::httpclient::ApiClient::from_kubeconfig(&resolved, Duration::from_secs(10))
        .map_err(|e| format!("{e:#}"))?;
    let pods = endpoints_from_pods(&api, Duration::from_secs(10)).await?;
    let client = etcd_client(root)?;
    let (_, list) = client
        .first(&pods, async |c, ep| c.member_list(ep).await)
        .await
        .map_err(|e| go_error(&e))?;
    let Some(m) = list
        .iter()
        .find(|m| m.peer_urls.first().map(String::as_str) == Some(peer))
    else {
        // Fixed releases skip a member that is not there; older ones failed to find it.
        return if add_is_idempotent(version) {
            Ok(())
        } else {
            Err("no member id found for peer URL".into())
        };
    };
    match client
        .first(&pods, async |c, ep| c.member_remove(ep, m.id).await)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_member_not_found() => Ok(()),
        Err(e) => Err(go_error(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_and_flags() {
        let v = |s: &str| KubeVersion::parse(s).unwrap();
        assert!(!add_is_idempotent(v("v1.29.7")));
        assert!(add_is_idempotent(v("v1.29.10")));
        assert!(add_is_idempotent(v("v1.32.0")));
        assert!(learner_mode(v("v1.29.0")) && !learner_mode(v("v1.28.9")));
        let m = super::super::prepare::etcd_manifest(
            "cp2",
            "10.0.0.12".parse().unwrap(),
            "/var/lib/etcd",
            &[("cp2".into(), "https://10.0.0.12:2380".into())],
        );
        assert_eq!(
            manifest_flag(&m, "data-dir").as_deref(),
            Some("/var/lib/etcd")
        );
        assert_eq!(
            manifest_flag(&m, "initial-advertise-peer-urls").as_deref(),
            Some("https://10.0.0.12:2380")
        );
    }
}
