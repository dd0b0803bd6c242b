//! The fake cluster's PKI: a CA kept in `DIR/ca.{crt,key}` across restarts, a fresh
//! serving certificate per start, an admin client certificate for the harness, and the
//! CSR signer (kube-controller-manager's `kubernetes.io/kube-apiserver-client-kubelet`).
//!
//! Keys are ECDSA P-256: ring (the only crypto provider here) cannot generate RSA keys,
//! and kubeadm accepts ECDSA clusters (`encryptionAlgorithm: ECDSA-P256`).

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use crate::fsroot::write_atomic;

/// How long signed kubelet client certificates live (kube-controller-manager's default
/// `--cluster-signing-duration` of 8760h).
pub const CLIENT_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// The CSR signer backdates certificates by 5 minutes to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(300);

/// The CA and the certificates made from it.
pub struct Pki {
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// The CA's `sha256:` SPKI pin.
    pub pin: String,
    issuer: Issuer<'static, KeyPair>,
    /// Serving certificate chain (leaf, CA), DER.
    pub serving_chain: Vec<Vec<u8>>,
    /// Serving key, PKCS#8 DER.
    pub serving_key: Vec<u8>,
}

fn serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow!("system random source failed"))?;
    bytes[0] &= 0x7f; // a positive INTEGER
    Ok(SerialNumber::from_slice(&bytes))
}

fn odt(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn dn(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn leaf_params(cn: &str, orgs: &[&str], lifetime: Duration) -> Result<CertificateParams> {
    let now = SystemTime::now();
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn, orgs);
    p.not_before = odt(now - BACKDATE);
    p.not_after = odt(now + lifetime);
    p.serial_number = Some(serial()?);
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    Ok(p)
}

impl Pki {
    /// Loads the CA from `dir` or creates it (CN=kubernetes, 10 years, like kubeadm),
    /// then issues the serving certificate for `extra_ip` plus the usual names, writes
    /// `ca.pin`, and (re)writes the harness's `admin.crt`/`admin.key`.
    pub fn load_or_create(dir: &Path, extra_ip: IpAddr) -> Result<Self> {
        let (crt_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let (ca_pem, ca_key) = if crt_path.exists() && key_path.exists() {
            let pem = std::fs::read_to_string(&crt_path)
                .with_context(|| format!("reading {}", crt_path.display()))?;
            let key_pem = std::fs::read(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?;
            let key = crate::ecdsa_pem::key_pair_from_pem(&key_pem)
                .with_context(|| format!("loading {}", key_path.display()))?;
            (pem, key)
        } else {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let now = SystemTime::now();
            let mut p = CertificateParams::default();
            p.distinguished_name = dn("kubernetes", &[]);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
                KeyUsagePurpose::KeyCertSign,
            ];
            p.not_before = odt(now);
            p.not_after = odt(now + Duration::from_secs(10 * 365 * 24 * 3600));
            p.serial_number = Some(serial()?);
            let cert = p.self_signed(&key).context("self-signing the CA")?;
            write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&crt_path, cert.pem().as_bytes(), 0o644)?;
            (cert.pem(), key)
        };
        let ca_der = crate::pin::certs_from_pem(ca_pem.as_bytes())?
            .into_iter()
            .next()
            .context("ca.crt holds no certificate")?;
        let pin = crate::pin::pin_of_der(&ca_der)?;
        let issuer = Issuer::from_ca_cert_der(&ca_der.clone().into(), ca_key)
            .context("using ca.crt as issuer")?;
        write_atomic(&dir.join("ca.pin"), pin.as_bytes(), 0o644)?;

        // Serving certificate: kube-apiserver's usual names, plus the listen address.
        let serving_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = leaf_params("kube-apiserver", &[], CLIENT_CERT_LIFETIME)?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let localhost: IpAddr = "127.0.0.1".parse()?;
        let mut sans = vec![SanType::IpAddress(localhost)];
        if extra_ip != localhost && !extra_ip.is_unspecified() {
            sans.push(SanType::IpAddress(extra_ip));
        }
        for name in [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            sans.push(SanType::DnsName(name.try_into()?));
        }
        p.subject_alt_names = sans;
        let serving = p
            .signed_by(&serving_key, &issuer)
            .context("signing the serving certificate")?;

        // A cluster-admin identity for the harness (curl --cert admin.crt --key admin.key).
        let admin_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = leaf_params(
            "kubernetes-admin",
            &["system:masters"],
            CLIENT_CERT_LIFETIME,
        )?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin = p
            .signed_by(&admin_key, &issuer)
            .context("signing admin.crt")?;
        write_atomic(
            &dir.join("admin.key"),
            admin_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_atomic(&dir.join("admin.crt"), admin.pem().as_bytes(), 0o644)?;

        Ok(Self {
            ca_pem,
            serving_chain: vec![serving.der().to_vec(), ca_der.clone()],
            ca_der,
            pin,
            issuer,
            serving_key: serving_key.serialize_der(),
        })
    }

    /// Signs a (signature-verified) CSR as a kubelet client certificate: subject from the
    /// CSR, valid for `lifetime` (kube-controller-manager's --cluster-signing-duration,
    /// 1 year by default), EKU clientAuth, KeyUsage digitalSignature+keyEncipherment.
    /// PEM out.
    pub fn sign_client(&self, csr_pem: &str, lifetime: Duration) -> Result<String> {
        let mut req = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| anyhow!("parsing the certificate request: {e}"))?;
        let subject = req.params.distinguished_name.clone();
        let mut p = leaf_params("", &[], lifetime)?;
        p.distinguished_name = subject;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        req.params = p;
        let cert = req
            .signed_by(&self.issuer)
            .context("signing the certificate")?;
        Ok(cert.pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn ca_persists_and_signs_client_certs() {
        let dir = tempfile::tempdir().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let a = Pki::load_or_create(dir.path(), lo).unwrap();
        let b = Pki::load_or_create(dir.path(), lo).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem, "restart keeps the CA");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.pin")).unwrap(),
            a.pin
        );

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = dn("system:node:n1", &["system:nodes"]);
        let csr = p.serialize_request(&key).unwrap().pem().unwrap();
        let pem = b.sign_client(&csr, CLIENT_CERT_LIFETIME).unwrap();
        let der = crate::pin::certs_from_pem(pem.as_bytes())
            .unwrap()
            .remove(0);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(
            cert.subject().to_string(),
            "O=system:nodes, CN=system:node:n1"
        );
        assert_eq!(cert.issuer().to_string(), "CN=kubernetes");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86400;
        assert_eq!(days, 365);
    }
}
