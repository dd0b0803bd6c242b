//! The kubelet's client-certificate bootstrap (pkg/kubelet/certificate/bootstrap and
//! client-go's certificate store): decide whether kubelet.conf is usable, otherwise
//! request a node client certificate with the bootstrap token and store it.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use serde_json::json;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::apiserver::routes::KUBELET_CLIENT_SIGNER;
use crate::fsroot::{Root, write_atomic};
use crate::httpclient::ApiClient;
use crate::klog::{self, Severity};
use crate::kubeconfig::{self, Auth, Resolved};
use crate::{ecdsa_pem, timefmt};

/// Usages of a kubelet client CSR, in upstream's order.
const USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];
/// How long `LoadClientCert` (rotation off, bootstrap.go) waits for its CSR.
pub const APPROVAL_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long client-go's certificate manager (rotation on) waits for one CSR
/// (`certificateWaitTimeout`) before giving up on it and, after its backoff, making a
/// new key and a new CSR.
pub const CERTIFICATE_WAIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Where the certificate lives.
#[derive(Debug, Clone)]
pub struct CertStore {
    /// `--cert-dir`, a node path (default /var/lib/kubelet/pki).
    pub dir: String,
}

impl CertStore {
    /// `kubelet-client-current.pem`.
    pub fn current(&self) -> String {
        format!("{}/kubelet-client-current.pem", self.dir)
    }

    fn tmp_key(&self) -> String {
        format!("{}/kubelet-client.key.tmp", self.dir)
    }

    /// Writes `kubelet-client-<stamp>.pem` (cert, then key; 0600) and points
    /// `kubelet-client-current.pem` at it by renaming a fresh symlink over it.
    pub fn update(&self, root: &Root, cert_pem: &str, key_pem: &str) -> Result<()> {
        let stamped = format!(
            "{}/kubelet-client-{}.pem",
            self.dir,
            timefmt::cert_file_stamp(SystemTime::now())
        );
        write_atomic(
            &root.path(&stamped),
            format!("{cert_pem}{key_pem}").as_bytes(),
            0o600,
        )?;
        let updated = root.path(format!("{}/kubelet-client-updated.pem", self.dir));
        let _ = std::fs::remove_file(&updated);
        // The link target is the absolute path, as upstream writes it (under
        // FAKE_K8S_ROOT: the prefixed path, so that the link resolves on the host).
        std::os::unix::fs::symlink(root.path(&stamped), &updated)
            .with_context(|| format!("creating symlink {}", updated.display()))?;
        std::fs::rename(&updated, root.path(self.current()))
            .with_context(|| format!("renaming {} to {}", updated.display(), self.current()))
    }
}

/// `isClientConfigStillValid`: the kubeconfig loads, has a client certificate and key
/// that form a TLS identity, and every certificate is before its NotAfter. Logs why not.
pub fn usable_kubeconfig(root: &Root, path: &str) -> Option<Resolved> {
    if !root.path(path).exists() {
        return None;
    }
    match check_kubeconfig(root, path) {
        Ok(r) => Some(r),
        Err(e) => {
            klog::log(
                Severity::Error,
                "bootstrap.go:265",
                "Unable to use existing client config",
                &[("path", path), ("err", &e)],
            );
            None
        }
    }
}

/// The same test without a word: what the client transport does on every connection
/// while the certificate it points at may not exist yet.
pub fn check_kubeconfig(root: &Root, path: &str) -> Result<Resolved, String> {
    let resolved = kubeconfig::load(root, path).map_err(|e| format!("{e:#}"))?;
    let Auth::ClientCert { cert_pem, key_pem } = &resolved.auth else {
        return Err("no client certificate in kubeconfig".into());
    };
    let key = ecdsa_pem::key_pair_from_pem(key_pem).map_err(|e| format!("{e:#}"))?;
    let certs = crate::pin::certs_from_pem(cert_pem).map_err(|e| e.to_string())?;
    // tls.X509KeyPair's check: the key belongs to the leaf certificate.
    let leaf_spki = X509Certificate::from_der(&certs[0])
        .ok()
        .map(|(_, c)| c.tbs_certificate.subject_pki.raw.to_vec());
    if leaf_spki.as_deref() != Some(key.subject_public_key_info().as_slice()) {
        return Err("tls: private key does not match public key".into());
    }
    let now = SystemTime::now();
    for der in certs {
        let Ok((_, cert)) = X509Certificate::from_der(&der) else {
            return Err("unparsable client certificate".into());
        };
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(cert.validity().not_after.timestamp().max(0) as u64);
        if now > not_after {
            return Err(format!(
                "part of the existing bootstrap client certificate in {path} is expired: {}",
                timefmt::k8s(not_after)
            ));
        }
    }
    Ok(resolved)
}

/// Go's `digestedName`: `node-csr-` + base64url(SHA-512/256 over base64url(SPKI) "|"
/// base64url(CN) "|" base64url(O)... "|" base64url(usage)... "|"). Same key, same
/// name: a restarted kubelet finds its earlier CSR.
pub fn csr_name(spki_der: &[u8], node_name: &str) -> String {
    let mut input = Vec::new();
    let mut write = |data: &[u8]| {
        input.extend_from_slice(URL_SAFE_NO_PAD.encode(data).as_bytes());
        input.push(b'|');
    };
    write(spki_der);
    write(format!("system:node:{node_name}").as_bytes());
    write(b"system:nodes");
    for u in USAGES {
        write(u.as_bytes());
    }
    let digest = ring::digest::digest(&ring::digest::SHA512_256, &input);
    format!("node-csr-{}", URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// The private key for the pending request, kept across restarts in
/// `kubelet-client.key.tmp` (SEC1, 0600) like upstream, so the CSR name stays stable.
fn load_or_generate_key(root: &Root, store: &CertStore) -> Result<KeyPair> {
    let path = root.path(store.tmp_key());
    if let Ok(pem) = std::fs::read(&path)
        && let Ok(key) = ecdsa_pem::key_pair_from_pem(&pem)
    {
        return Ok(key);
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    write_atomic(&path, ecdsa_pem::to_sec1_pem(&key)?.as_bytes(), 0o600)?;
    Ok(key)
}

fn csr_pem(key: &KeyPair, node_name: &str) -> Result<String> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "system:nodes");
    dn.push(DnType::CommonName, format!("system:node:{node_name}"));
    params.distinguished_name = dn;
    Ok(params.serialize_request(key)?.pem()?)
}

/// Where a certificate request failed: the certificate manager words each step apart.
#[derive(Debug)]
pub enum ObtainError {
    /// Making the key or the CSR.
    Generate(anyhow::Error),
    /// Building the API client from the bootstrap credentials.
    Client(anyhow::Error),
    /// Creating (or reusing) the CSR: `cannot create certificate signing request: ...`.
    Request(anyhow::Error),
    /// Waiting for the certificate.
    NotSigned(anyhow::Error),
    /// Writing the certificate and key.
    Store(anyhow::Error),
}

impl std::fmt::Display for ObtainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObtainError::Generate(e)
            | ObtainError::Client(e)
            | ObtainError::Request(e)
            | ObtainError::NotSigned(e)
            | ObtainError::Store(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ObtainError {}

/// `LoadClientCert` (bootstrap.go, client rotation off): the key is kept in
/// `kubelet-client.key.tmp` and the CSR is named `node-csr-<digest>`, so a restarted
/// kubelet finds its earlier request. Polls the CSR every second; gives up after
/// [`APPROVAL_TIMEOUT`].
pub async fn obtain(
    root: &Root,
    store: &CertStore,
    bootstrap: &Resolved,
    node_name: &str,
) -> Result<(), ObtainError> {
    let key = load_or_generate_key(root, store).map_err(ObtainError::Generate)?;
    let name = csr_name(&key.subject_public_key_info(), node_name);
    let request = csr_pem(&key, node_name).map_err(ObtainError::Generate)?;
    let client = ApiClient::from_kubeconfig(bootstrap, Duration::from_secs(10))
        .map_err(ObtainError::Client)?;
    let name = create_csr(&client, Some(&name), &request, &key)
        .await
        .map_err(ObtainError::Request)?;
    if klog::v(2) {
        klog::printf(
            Severity::Info,
            "bootstrap.go:355",
            "Waiting for client certificate to be issued",
        );
    }
    let cert = wait_for_certificate(&client, &name, APPROVAL_TIMEOUT)
        .await
        .map_err(ObtainError::NotSigned)?;
    let key_pem = ecdsa_pem::to_sec1_pem(&key).map_err(ObtainError::Store)?;
    store
        .update(root, &cert, &key_pem)
        .map_err(ObtainError::Store)?;
    let _ = std::fs::remove_file(root.path(store.tmp_key()));
    Ok(())
}

/// One `rotateCerts` of client-go's certificate manager (rotation on, what kubeadm's
/// kubelet config asks for): a new ECDSA key every time, a CSR with
/// `generateName: csr-` (the API server names it `csr-XXXXX`), a wait of at most
/// [`CERTIFICATE_WAIT_TIMEOUT`] for it, then the certificate store.
pub async fn rotate_once(
    root: &Root,
    store: &CertStore,
    bootstrap: &Resolved,
    node_name: &str,
) -> Result<(), ObtainError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ObtainError::Generate(anyhow!("unable to generate a new private key: {e}")))?;
    let request = csr_pem(&key, node_name).map_err(ObtainError::Generate)?;
    let client = ApiClient::from_kubeconfig(bootstrap, Duration::from_secs(10))
        .map_err(ObtainError::Client)?;
    let name = create_csr(&client, None, &request, &key)
        .await
        .map_err(ObtainError::Request)?;
    let cert = wait_for_certificate(&client, &name, CERTIFICATE_WAIT_TIMEOUT)
        .await
        .map_err(ObtainError::NotSigned)?;
    let key_pem = ecdsa_pem::to_sec1_pem(&key).map_err(ObtainError::Store)?;
    store
        .update(root, &cert, &key_pem)
        .map_err(ObtainError::Store)
}

/// The CertificateSigningRequest client-go posts: named, or `generateName: csr-`.
pub fn csr_body(name: Option<&str>, request: &str) -> serde_json::Value {
    let metadata = match name {
        Some(n) => json!({"name": n}),
        None => json!({"generateName": "csr-"}),
    };
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": metadata,
        "spec": {"request": STANDARD.encode(request), "signerName": KUBELET_CLIENT_SIGNER, "usages": USAGES},
    })
}

/// client-go's `RequestCertificate`: `name` set (bootstrap.go's digest) or, when none,
/// `generateName: csr-`; any failure to create reads `cannot create certificate signing
/// request: <err>` (transport errors included); a 409 for a named CSR reuses the
/// existing one if it carries our key. Returns the CSR's name.
async fn create_csr(
    client: &ApiClient,
    name: Option<&str>,
    request: &str,
    key: &KeyPair,
) -> Result<String> {
    let body = csr_body(name, request);
    let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let resp = client
        .call(reqwest::Method::POST, path, Some(&body))
        .await
        .map_err(|e| anyhow!("cannot create certificate signing request: {e}"))?;
    match (resp.status, name) {
        (200 | 201, _) => resp.json()["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                anyhow!("cannot create certificate signing request: the answer names no CSR")
            }),
        (409, Some(name)) => {
            klog::printf(
                Severity::Info,
                "csr.go:93",
                "csr for this node already exists, reusing",
            );
            let existing = client
                .get(&format!("{path}/{name}"))
                .await
                .map_err(|e| anyhow!("cannot retrieve certificate signing request: {e}"))?;
            if existing.status != 200 {
                bail!(
                    "cannot retrieve certificate signing request: {}",
                    existing.error_text()
                );
            }
            ensure_compatible(&existing.json(), key)?;
            klog::printf(
                Severity::Info,
                "csr.go:103",
                "csr for this node is still valid",
            );
            Ok(name.to_owned())
        }
        _ => bail!(
            "cannot create certificate signing request: {}",
            resp.error_text()
        ),
    }
}

/// The existing CSR must carry our public key, or its certificate would be useless.
fn ensure_compatible(csr: &serde_json::Value, key: &KeyPair) -> Result<()> {
    let pem = csr["spec"]["request"]
        .as_str()
        .and_then(|r| STANDARD.decode(r).ok())
        .unwrap_or_default();
    let ours = key.subject_public_key_info();
    let block = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .next()
        .and_then(|b| b.ok());
    let theirs = block.and_then(|b| {
        use x509_parser::certification_request::X509CertificationRequest;
        X509CertificationRequest::from_der(&b.contents)
            .ok()
            .map(|(_, c)| c.certification_request_info.subject_pki.raw.to_vec())
    });
    if theirs.as_deref() != Some(ours.as_slice()) {
        bail!("retrieved csr is not compatible: public key does not match");
    }
    Ok(())
}

/// client-go's `csr.WaitForCertificate` (which watches; the fake polls every second).
/// At the kubelet's default verbosity it says nothing: its lines are `V(2)`.
async fn wait_for_certificate(client: &ApiClient, name: &str, timeout: Duration) -> Result<String> {
    let path = format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}");
    let start = tokio::time::Instant::now();
    let mut announced_approved = false;
    while start.elapsed() < timeout {
        match client.get(&path).await {
            Ok(r) if r.status == 200 => {
                let csr = r.json();
                let conds = csr["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if let Some(c) = conds
                    .iter()
                    .find(|c| c["type"] == "Denied" || c["type"] == "Failed")
                {
                    bail!(
                        "certificate signing request is {}, reason: {}, message: {}",
                        if c["type"] == "Denied" {
                            "denied"
                        } else {
                            "failed"
                        },
                        c["reason"].as_str().unwrap_or_default(),
                        c["message"].as_str().unwrap_or_default()
                    );
                }
                if conds.iter().any(|c| c["type"] == "Approved") {
                    if let Some(cert) = csr["status"]["certificate"]
                        .as_str()
                        .filter(|c| !c.is_empty())
                    {
                        if klog::v(2) {
                            klog::printf(
                                Severity::Info,
                                "csr.go:257",
                                &format!("certificate signing request {name} is issued"),
                            );
                        }
                        let pem = STANDARD
                            .decode(cert)
                            .context("status.certificate is not base64")?;
                        return String::from_utf8(pem).context("status.certificate is not PEM");
                    }
                    if !announced_approved && klog::v(2) {
                        klog::printf(
                            Severity::Info,
                            "csr.go:261",
                            &format!(
                                "certificate signing request {name} is approved, waiting to be issued"
                            ),
                        );
                        announced_approved = true;
                    }
                }
            }
            Ok(r) => klog::log(
                Severity::Error,
                "csr.go:240",
                "Failed to get certificate signing request",
                &[("csr", name), ("err", &r.error_text())],
            ),
            Err(e) => klog::log(
                Severity::Error,
                "csr.go:240",
                "Failed to get certificate signing request",
                &[("csr", name), ("err", &e)],
            ),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("timed out waiting for the condition")
}

/// Writes kubelet.conf (0600, atomically) pointing at the certificate store.
pub fn write_kubeconfig(
    root: &Root,
    path: &str,
    bootstrap: &Resolved,
    store: &CertStore,
) -> Result<()> {
    let text = kubeconfig::kubelet(&bootstrap.server, &bootstrap.ca_pem, &store.current());
    write_atomic(&root.path(path), text.as_bytes(), 0o600)
}

/// True if `p` exists (through the root).
pub fn exists(root: &Root, p: &str) -> bool {
    Path::new(&root.path(p)).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_name_is_deterministic_and_key_bound() {
        let a = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let b = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let n1 = csr_name(&a.subject_public_key_info(), "n1");
        assert_eq!(n1, csr_name(&a.subject_public_key_info(), "n1"));
        assert_ne!(n1, csr_name(&b.subject_public_key_info(), "n1"));
        assert_ne!(n1, csr_name(&a.subject_public_key_info(), "n2"));
        assert!(n1.starts_with("node-csr-") && n1.len() == "node-csr-".len() + 43);
    }

    #[test]
    fn rotation_requests_use_generate_name_and_wait_15_minutes() {
        let b = csr_body(None, "PEM");
        assert_eq!(b["metadata"], json!({"generateName": "csr-"}));
        assert_eq!(b["spec"]["signerName"], KUBELET_CLIENT_SIGNER);
        let b = csr_body(Some("node-csr-x"), "PEM");
        assert_eq!(b["metadata"], json!({"name": "node-csr-x"}));
        assert_eq!(CERTIFICATE_WAIT_TIMEOUT, Duration::from_secs(900));
        assert_eq!(APPROVAL_TIMEOUT, Duration::from_secs(3600));
    }

    #[test]
    fn kubelet_conf_before_its_certificate_is_not_usable_but_anonymous_works() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let root = Root::at(dir.path());
        let store = CertStore {
            dir: "/var/lib/kubelet/pki".into(),
        };
        let ca = crate::kubepki::Authority::generate("kubernetes").unwrap();
        let boot = Resolved {
            server: "https://127.0.0.1:6443".into(),
            ca_pem: ca.cert_pem.clone().into_bytes(),
            auth: Auth::Token("abcdef.0123456789abcdef".into()),
        };
        write_kubeconfig(&root, "/etc/kubernetes/kubelet.conf", &boot, &store).unwrap();
        let e = check_kubeconfig(&root, "/etc/kubernetes/kubelet.conf").unwrap_err();
        assert!(e.contains("kubelet-client-current.pem"), "{e}");
        let mut clients = crate::kubelet::node::Clients {
            root: root.clone(),
            kubeconfig: "/etc/kubernetes/kubelet.conf".into(),
            anonymous: None,
        };
        assert!(clients.client().is_err());
        clients.anonymous = Some(boot);
        assert!(clients.client().is_ok());
    }

    #[test]
    fn store_update_makes_current_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::at(dir.path());
        let store = CertStore {
            dir: "/var/lib/kubelet/pki".into(),
        };
        store.update(&root, "CERT\n", "KEY\n").unwrap();
        let current = root.path(store.current());
        assert!(
            std::fs::symlink_metadata(&current)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&current).unwrap(), "CERT\nKEY\n");
        store.update(&root, "CERT2\n", "KEY2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&current).unwrap(), "CERT2\nKEY2\n");
    }

    #[test]
    fn tmp_key_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::at(dir.path());
        let store = CertStore {
            dir: "/var/lib/kubelet/pki".into(),
        };
        let k1 = load_or_generate_key(&root, &store).unwrap();
        let k2 = load_or_generate_key(&root, &store).unwrap();
        assert_eq!(k1.public_key_raw(), k2.public_key_raw());
        let pem = std::fs::read_to_string(root.path(store.tmp_key())).unwrap();
        assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    }
}
