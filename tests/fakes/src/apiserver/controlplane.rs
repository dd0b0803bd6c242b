//! What a joining control plane reads from the API server: the `kubeadm-certs` Secret
//! (the shared CAs and service-account key, encrypted with the certificate key) and the
//! etcd static pods, whose annotation tells kubeadm where etcd listens.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::knobs::KubeadmCertsKnob;
use crate::copycerts;
use crate::fsroot::write_atomic;
use crate::kubepki::Authority;

/// The annotation kubeadm puts on its etcd pods (constants.EtcdAdvertiseClientUrlsAnnotationKey).
pub const ETCD_CLIENT_URLS_ANNOTATION: &str = "kubeadm.kubernetes.io/etcd.advertise-client-urls";

/// The front-proxy CA and the service-account key pair, made once in the state dir
/// (a real first control plane made them at `kubeadm init`).
fn shared_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let fp_crt = dir.join("front-proxy-ca.crt");
    let fp_key = dir.join("front-proxy-ca.key");
    if !fp_crt.exists() || !fp_key.exists() {
        let ca = Authority::generate("front-proxy-ca")?;
        write_atomic(&fp_key, ca.key_pem.as_bytes(), 0o600)?;
        write_atomic(&fp_crt, ca.cert_pem.as_bytes(), 0o644)?;
    }
    let sa_key = dir.join("sa.key");
    let sa_pub = dir.join("sa.pub");
    if !sa_key.exists() || !sa_pub.exists() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        write_atomic(
            &sa_key,
            crate::ecdsa_pem::to_sec1_pem(&key)?.as_bytes(),
            0o600,
        )?;
        write_atomic(&sa_pub, key.public_key_pem().as_bytes(), 0o644)?;
    }
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(vec![
        ("front-proxy-ca.crt".into(), read(&fp_crt)?),
        ("front-proxy-ca.key".into(), read(&fp_key)?),
        ("sa.pub".into(), read(&sa_pub)?),
        ("sa.key".into(), read(&sa_key)?),
    ])
}

/// The Secret's data, each entry encrypted afresh (random nonces, as upload-certs does).
pub fn kubeadm_certs_data(state_dir: &Path, knob: &KubeadmCertsKnob) -> Result<Value> {
    let key = hex::decode(&knob.certificate_key).context("certificate key")?;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let etcd = Path::new(&knob.etcd_ca_dir);
    let mut files = vec![
        ("ca.crt".to_string(), read(&state_dir.join("ca.crt"))?),
        ("ca.key".to_string(), read(&state_dir.join("ca.key"))?),
        ("etcd-ca.crt".to_string(), read(&etcd.join("ca.crt"))?),
        ("etcd-ca.key".to_string(), read(&etcd.join("ca.key"))?),
    ];
    files.extend(shared_files(state_dir)?);
    let mut data = serde_json::Map::new();
    for (name, plain) in files {
        let sealed = copycerts::encrypt(&plain, &key).map_err(anyhow::Error::msg)?;
        data.insert(name, json!(STANDARD.encode(sealed)));
    }
    Ok(Value::Object(data))
}

/// The Secret object.
pub fn kubeadm_certs_secret(data: Value) -> Value {
    json!({
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "kubeadm-certs", "namespace": "kube-system",
                     "uid": super::objects::uid_for("kubeadm-certs")},
        "type": "Opaque",
        "data": data,
    })
}

/// `kube-system` pods: one Ready etcd static pod per configured control plane.
pub fn etcd_pod_list(pods: &std::collections::BTreeMap<String, String>) -> Value {
    let items: Vec<Value> = pods
        .iter()
        .map(|(node, url)| {
            json!({
                "metadata": {
                    "name": format!("etcd-{node}"),
                    "namespace": "kube-system",
                    "labels": {"component": "etcd", "tier": "control-plane"},
                    "annotations": {ETCD_CLIENT_URLS_ANNOTATION: url},
                },
                "spec": {"nodeName": node},
                "status": {"phase": "Running",
                           "conditions": [{"type": "Ready", "status": "True"}]},
            })
        })
        .collect();
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_entries_decrypt_with_the_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("kubernetes").unwrap();
        std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem).unwrap();
        std::fs::write(dir.path().join("ca.key"), &ca.key_pem).unwrap();
        let etcd = dir.path().join("etcd");
        std::fs::create_dir(&etcd).unwrap();
        let etcd_ca = Authority::generate("etcd-ca").unwrap();
        std::fs::write(etcd.join("ca.crt"), &etcd_ca.cert_pem).unwrap();
        std::fs::write(etcd.join("ca.key"), &etcd_ca.key_pem).unwrap();
        let knob = KubeadmCertsKnob {
            certificate_key: "11".repeat(32),
            etcd_ca_dir: etcd.display().to_string(),
        };
        let data = kubeadm_certs_data(dir.path(), &knob).unwrap();
        let names: Vec<&str> = copycerts::ENTRIES.iter().map(|(n, _)| *n).collect();
        for n in &names {
            assert!(data.get(*n).is_some(), "missing {n}");
        }
        let sealed = STANDARD
            .decode(data["etcd-ca.crt"].as_str().unwrap())
            .unwrap();
        let plain = copycerts::decrypt(&sealed, &[0x11; 32]).unwrap();
        assert_eq!(plain, etcd_ca.cert_pem.as_bytes());
        assert!(copycerts::decrypt(&sealed, &[0x12; 32]).is_err());
    }
}
