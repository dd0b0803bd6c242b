//! `control-plane-prepare`: download-certs (the shared CAs from the kubeadm-certs
//! Secret), certs (this node's serving and client certificates), kubeconfig (admin,
//! controller-manager, scheduler) and control-plane (the static pod manifests).

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{ADMIN_CONF, MANIFESTS, PKI, read, write};
use crate::copycerts;
use crate::klog::{self, Severity};
use crate::kubeadm::error::{KubeadmError, generic};
use crate::kubeadm::join::JoinData;
use crate::kubepki::{Authority, Leaf, etcd_member_leaf};

/// `runControlPlanePrepareDownloadCertsPhaseLocal` + `copycerts.DownloadCerts`.
pub async fn download_certs(data: &mut JoinData) -> Result<(), KubeadmError> {
    let key_hex = data
        .cfg
        .control_plane
        .as_ref()
        .map(|c| c.certificate_key.clone())
        .unwrap_or_default();
    if key_hex.is_empty() {
        if data.verbosity >= 1 {
            klog::printf(
                Severity::Info,
                "controlplaneprepare.go:221",
                "[download-certs] Skipping certs download",
            );
        }
        return Ok(());
    }
    // data.InitCfg(): the cluster's configuration is read before anything is printed.
    data.cluster_configuration().await?;
    let d = data.discovered().await?;
    let client = data.bootstrap_client(&d)?;
    println!(
        "[download-certs] Downloading the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace"
    );
    let wrap = |e: String| generic(format!("error downloading certs: {e}"));
    let key = hex::decode(&key_hex)
        .map_err(|e| wrap(format!("error decoding certificate key: encoding/hex: {e}")))?;
    let resp = client
        .get("/api/v1/namespaces/kube-system/secrets/kubeadm-certs")
        .await
        .map_err(|e| wrap(format!("error downloading the secret: {e}")))?;
    let secret = match resp.status {
        200 => resp.json(),
        404 => {
            return Err(wrap(
                "error downloading the secret: Secret \"kubeadm-certs\" was not found in the \"kube-system\" Namespace. This Secret might have expired. Please, run `kubeadm init phase upload-certs --upload-certs` on a control plane to generate a new one".into(),
            ));
        }
        _ => {
            return Err(wrap(format!(
                "error downloading the secret: {}",
                resp.error_text()
            )));
        }
    };
    // getDataFromSecret: every entry decrypts, or nothing is used.
    let mut plain = std::collections::BTreeMap::new();
    if let Some(entries) = secret["data"].as_object() {
        for (name, value) in entries {
            let sealed = STANDARD
                .decode(value.as_str().unwrap_or_default())
                .map_err(|e| wrap(format!("error decoding secret data with provided key: {e}")))?;
            let bytes = if sealed.is_empty() {
                Vec::new()
            } else {
                copycerts::decrypt(&sealed, &key).map_err(|e| {
                    wrap(format!("error decoding secret data with provided key: {e}"))
                })?
            };
            plain.insert(name.clone(), bytes);
        }
    }
    for (entry, path) in copycerts::ENTRIES {
        let file = path.trim_start_matches(&format!("{PKI}/")).to_owned();
        let Some(bytes) = plain.get(*entry) else {
            return Err(wrap(format!(
                "the Secret does not include the required certificate or key - name: {file}, path: {path}"
            )));
        };
        if bytes.is_empty() {
            continue;
        }
        let mode = if entry.ends_with(".key") {
            0o600
        } else {
            0o644
        };
        write(data, path, bytes, mode)?;
    }
    Ok(())
}

fn service_ip(subnet: &str) -> Option<IpAddr> {
    // The first address of the service CIDR (the `kubernetes` Service's ClusterIP).
    let (net, _) = subnet.split(',').next()?.split_once('/')?;
    match net.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(IpAddr::V4((u32::from(v4) + 1).into())),
        IpAddr::V6(v6) => Some(IpAddr::V6((u128::from(v6) + 1).into())),
    }
}

fn load_ca(data: &JoinData, name: &str) -> Result<Authority, KubeadmError> {
    let crt = format!("{PKI}/{name}.crt");
    let key = format!("{PKI}/{name}.key");
    let cert_pem = read(data, &crt)
        .map_err(|e| generic(format!("failure loading {name} certificate authority: {e}")))?;
    let key_pem = read(data, &key)
        .map_err(|e| generic(format!("failure loading {name} certificate authority: {e}")))?;
    Authority::load(&cert_pem, &key_pem).map_err(|e| {
        generic(format!(
            "failure loading {name} certificate authority: {e:#}"
        ))
    })
}

fn issue(data: &JoinData, ca: &Authority, base: &str, leaf: &Leaf) -> Result<(), KubeadmError> {
    let crt = format!("{PKI}/{base}.crt");
    if data.root.path(&crt).exists() {
        println!("[certs] Using the existing \"{base}\" certificate and key");
        return Ok(());
    }
    println!("[certs] Generating \"{base}\" certificate and key");
    if leaf.server {
        let ips: Vec<String> = leaf.ips.iter().map(IpAddr::to_string).collect();
        println!(
            "[certs] {base} serving cert is signed for DNS names [{}] and IPs [{}]",
            leaf.dns.join(" "),
            ips.join(" ")
        );
    }
    let (cert, key) = ca.issue(leaf).map_err(|e| {
        generic(format!(
            "failure while creating {base} key and certificate: {e:#}"
        ))
    })?;
    write(data, &format!("{PKI}/{base}.key"), key.as_bytes(), 0o600)?;
    write(data, &crt, cert.as_bytes(), 0o644)
}

/// `CreatePKIAssets` with the downloaded CAs: this node's leaves, in certlist order.
pub async fn certs(data: &mut JoinData) -> Result<(), KubeadmError> {
    let cfg = data.cluster_configuration().await?;
    let cp = data
        .cfg
        .control_plane
        .clone()
        .ok_or_else(|| generic("not a control plane"))?;
    let node = data.cfg.node_name.clone();
    println!("[certs] Using certificateDir folder \"{PKI}\"");

    let ca = load_ca(data, "ca")?;
    let mut ips: Vec<IpAddr> = service_ip(&cfg.service_subnet).into_iter().collect();
    ips.push(cp.advertise_address);
    let mut dns = vec![
        node.clone(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ];
    if let Some((host, _)) = super::super::config::split_host_port(&cfg.control_plane_endpoint) {
        match host.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => dns.push(host),
        }
    }
    issue(
        data,
        &ca,
        "apiserver",
        &Leaf {
            cn: "kube-apiserver".into(),
            dns,
            ips,
            server: true,
            ..Leaf::default()
        },
    )?;
    issue(
        data,
        &ca,
        "apiserver-kubelet-client",
        &Leaf {
            cn: "kube-apiserver-kubelet-client".into(),
            orgs: vec!["kubeadm:cluster-admins".into()],
            client: true,
            ..Leaf::default()
        },
    )?;
    if data.root.path(format!("{PKI}/front-proxy-ca.key")).exists() {
        let fp = load_ca(data, "front-proxy-ca")?;
        issue(
            data,
            &fp,
            "front-proxy-client",
            &Leaf {
                cn: "front-proxy-client".into(),
                client: true,
                ..Leaf::default()
            },
        )?;
    }
    if !cfg.external_etcd {
        let etcd = load_ca(data, "etcd/ca")?;
        let member = etcd_member_leaf(&node, cp.advertise_address);
        issue(data, &etcd, "etcd/server", &member)?;
        issue(data, &etcd, "etcd/peer", &member)?;
        issue(
            data,
            &etcd,
            "etcd/healthcheck-client",
            &Leaf {
                cn: "kube-etcd-healthcheck-client".into(),
                client: true,
                ..Leaf::default()
            },
        )?;
        issue(
            data,
            &etcd,
            "apiserver-etcd-client",
            &Leaf {
                cn: "kube-apiserver-etcd-client".into(),
                client: true,
                ..Leaf::default()
            },
        )?;
    }
    println!("[certs] Valid certificates and keys now exist in \"{PKI}\"");
    println!("[certs] Using the existing \"sa\" key");
    Ok(())
}

/// A kubeconfig with embedded client certificate data (kubeconfigutil.CreateWithCerts).
pub fn kubeconfig_with_certs(
    server: &str,
    ca_pem: &[u8],
    user: &str,
    cert: &str,
    key: &str,
) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: {user}\n  name: {user}@kubernetes\ncurrent-context: {user}@kubernetes\nkind: Config\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        STANDARD.encode(ca_pem),
        STANDARD.encode(cert),
        STANDARD.encode(key)
    )
}

/// `CreateJoinControlPlaneKubeConfigFiles`: admin.conf (controlPlaneEndpoint; since
/// v1.29 in group kubeadm:cluster-admins), controller-manager.conf and scheduler.conf
/// (this node's API server).
pub async fn kubeconfigs(data: &mut JoinData) -> Result<(), KubeadmError> {
    let cfg = data.cluster_configuration().await?;
    let cp = data
        .cfg
        .control_plane
        .clone()
        .ok_or_else(|| generic("not a control plane"))?;
    println!("[kubeconfig] Generating kubeconfig files");
    println!("[kubeconfig] Using kubeconfig folder \"/etc/kubernetes\"");
    let ca = load_ca(data, "ca")?;
    let local = match cp.advertise_address {
        IpAddr::V6(v6) => format!("https://[{v6}]:{}", cp.bind_port),
        IpAddr::V4(v4) => format!("https://{v4}:{}", cp.bind_port),
    };
    let endpoint = if cfg.control_plane_endpoint.is_empty() {
        local.clone()
    } else {
        format!("https://{}", cfg.control_plane_endpoint)
    };
    let admin_group = if data.knobs.version.at_least(1, 29) {
        "kubeadm:cluster-admins"
    } else {
        "system:masters"
    };
    let files = [
        (
            "admin.conf",
            endpoint.as_str(),
            "kubernetes-admin",
            vec![admin_group.to_string()],
        ),
        (
            "controller-manager.conf",
            local.as_str(),
            "system:kube-controller-manager",
            vec![],
        ),
        (
            "scheduler.conf",
            local.as_str(),
            "system:kube-scheduler",
            vec![],
        ),
    ];
    for (name, server, cn, orgs) in files {
        let path = format!("/etc/kubernetes/{name}");
        if data.root.path(&path).exists() {
            println!("[kubeconfig] Using existing kubeconfig file: \"{path}\"");
            continue;
        }
        println!("[kubeconfig] Writing \"{name}\" kubeconfig file");
        let (cert, key) = ca
            .issue(&Leaf {
                cn: cn.into(),
                orgs,
                client: true,
                ..Leaf::default()
            })
            .map_err(|e| generic(format!("error generating kubeconfig files: {e:#}")))?;
        let text = kubeconfig_with_certs(server, ca.cert_pem.as_bytes(), cn, &cert, &key);
        write(data, &path, text.as_bytes(), 0o600)?;
    }
    debug_assert!(ADMIN_CONF.ends_with("admin.conf"));
    Ok(())
}

fn static_pod(name: &str, image: &str, command: &[String]) -> String {
    let mut cmd = String::new();
    for c in command {
        cmd.push_str(&format!("    - {c}\n"));
    }
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  creationTimestamp: null\n  labels:\n    component: {name}\n    tier: control-plane\n  name: {name}\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n{cmd}    image: {image}\n    imagePullPolicy: IfNotPresent\n    name: {name}\n  hostNetwork: true\n  priorityClassName: system-node-critical\nstatus: {{}}\n"
    )
}

/// `control-plane`: the three component manifests (what kubelet will run).
pub async fn manifests(data: &mut JoinData) -> Result<(), KubeadmError> {
    let cp = data
        .cfg
        .control_plane
        .clone()
        .ok_or_else(|| generic("not a control plane"))?;
    let v = data.knobs.version;
    println!("[control-plane] Using manifest folder \"{MANIFESTS}\"");
    let tag = format!("v{}.{}.{}", v.major, v.minor, v.patch);
    let components: [(&str, Vec<String>); 3] = [
        (
            "kube-apiserver",
            vec![
                "kube-apiserver".into(),
                format!("--advertise-address={}", cp.advertise_address),
                format!("--secure-port={}", cp.bind_port),
                "--etcd-servers=https://127.0.0.1:2379".into(),
                format!("--etcd-cafile={PKI}/etcd/ca.crt"),
                format!("--etcd-certfile={PKI}/apiserver-etcd-client.crt"),
                format!("--etcd-keyfile={PKI}/apiserver-etcd-client.key"),
                format!("--client-ca-file={PKI}/ca.crt"),
                format!("--tls-cert-file={PKI}/apiserver.crt"),
                format!("--tls-private-key-file={PKI}/apiserver.key"),
            ],
        ),
        (
            "kube-controller-manager",
            vec![
                "kube-controller-manager".into(),
                "--kubeconfig=/etc/kubernetes/controller-manager.conf".into(),
                format!("--cluster-signing-cert-file={PKI}/ca.crt"),
                format!("--cluster-signing-key-file={PKI}/ca.key"),
            ],
        ),
        (
            "kube-scheduler",
            vec![
                "kube-scheduler".into(),
                "--kubeconfig=/etc/kubernetes/scheduler.conf".into(),
            ],
        ),
    ];
    for (name, command) in components {
        println!("[control-plane] Creating static Pod manifest for \"{name}\"");
        let image = format!("registry.k8s.io/{name}:{tag}");
        write(
            data,
            &format!("{MANIFESTS}/{name}.yaml"),
            static_pod(name, &image, &command).as_bytes(),
            0o600,
        )?;
    }
    Ok(())
}

/// The etcd static pod (phases/etcd/local.go `GetEtcdPodSpec`), for `initial_cluster`
/// `name=peerURL` pairs (this node included).
pub fn etcd_manifest(
    node: &str,
    advertise: IpAddr,
    data_dir: &str,
    initial_cluster: &[(String, String)],
) -> String {
    let client = crate::kubeadm::cp::etcd::client_url(advertise);
    let peer = crate::kubeadm::cp::etcd::peer_url(advertise);
    let lo = if advertise.is_ipv6() {
        "[::1]"
    } else {
        "127.0.0.1"
    };
    let cluster: Vec<String> = initial_cluster
        .iter()
        .map(|(n, u)| format!("{n}={u}"))
        .collect();
    let command = vec![
        "etcd".to_string(),
        format!("--advertise-client-urls={client}"),
        format!("--cert-file={PKI}/etcd/server.crt"),
        "--client-cert-auth=true".into(),
        format!("--data-dir={data_dir}"),
        "--experimental-initial-corrupt-check=true".into(),
        "--experimental-watch-progress-notify-interval=5s".into(),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster={}", cluster.join(",")),
        "--initial-cluster-state=existing".into(),
        format!("--key-file={PKI}/etcd/server.key"),
        format!("--listen-client-urls=https://{lo}:2379,{client}"),
        format!("--listen-metrics-urls=http://{lo}:2381"),
        format!("--listen-peer-urls={peer}"),
        format!("--name={node}"),
        format!("--peer-cert-file={PKI}/etcd/peer.crt"),
        "--peer-client-cert-auth=true".into(),
        format!("--peer-key-file={PKI}/etcd/peer.key"),
        format!("--peer-trusted-ca-file={PKI}/etcd/ca.crt"),
        "--snapshot-count=10000".into(),
        format!("--trusted-ca-file={PKI}/etcd/ca.crt"),
    ];
    static_pod("etcd", "registry.k8s.io/etcd:3.5.12-0", &command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ip_is_the_first_address() {
        assert_eq!(
            service_ip("10.96.0.0/12"),
            Some("10.96.0.1".parse().unwrap())
        );
        assert_eq!(service_ip("fd00::/108"), Some("fd00::1".parse().unwrap()));
        assert_eq!(service_ip("junk"), None);
    }

    #[test]
    fn etcd_manifest_names_the_existing_cluster() {
        let m = etcd_manifest(
            "cp2",
            "10.0.0.12".parse().unwrap(),
            "/var/lib/etcd",
            &[
                ("cp1".into(), "https://10.0.0.11:2380".into()),
                ("cp2".into(), "https://10.0.0.12:2380".into()),
            ],
        );
        assert!(
            m.contains("--initial-cluster=cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380")
        );
        assert!(m.contains("--initial-cluster-state=existing"));
        assert!(m.contains("--initial-advertise-peer-urls=https://10.0.0.12:2380"));
    }
}
