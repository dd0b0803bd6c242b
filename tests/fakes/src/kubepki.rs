//! Certificates the way kubeadm issues them (kubeadm/util/pkiutil, phases/certs): CAs of
//! 10 years, leaves of 1 year signed by them, keys written as `EC PRIVATE KEY` (kubeadm
//! marshals ECDSA keys with x509.MarshalECPrivateKey). Used by the fake kubeadm's certs
//! phase and, through `fake-pki`, by the test harness for its etcd cluster.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// A certificate authority that can sign leaves.
pub struct Authority {
    /// CA certificate, PEM.
    pub cert_pem: String,
    /// CA key, `EC PRIVATE KEY` PEM.
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Default)]
pub struct Leaf {
    /// Subject CN.
    pub cn: String,
    /// Subject O values.
    pub orgs: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// ExtKeyUsage serverAuth.
    pub server: bool,
    /// ExtKeyUsage clientAuth.
    pub client: bool,
}

fn serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow!("system random source failed"))?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

fn dn(cn: &str, orgs: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, cn);
    dn
}

impl Authority {
    /// A new self-signed CA named `cn` (kubeadm: `kubernetes`, `etcd-ca`, `front-proxy-ca`).
    pub fn generate(cn: &str) -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = SystemTime::now();
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn, &[]);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
        p.not_before = now.into();
        p.not_after = (now + 10 * YEAR).into();
        p.serial_number = Some(serial()?);
        let cert = p.self_signed(&key).context("self-signing the CA")?;
        let key_pem = crate::ecdsa_pem::to_sec1_pem(&key)?;
        let cert_pem = cert.pem();
        Self::load(cert_pem.as_bytes(), key_pem.as_bytes())
    }

    /// A CA from its certificate and key (PEM; `EC PRIVATE KEY` or `PRIVATE KEY`).
    pub fn load(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        let key = crate::ecdsa_pem::key_pair_from_pem(key_pem).context("loading the CA key")?;
        let der = crate::pin::certs_from_pem(cert_pem)?
            .into_iter()
            .next()
            .context("no certificate in the CA file")?;
        let issuer = Issuer::from_ca_cert_der(&der.into(), key).context("using the CA")?;
        Ok(Self {
            cert_pem: String::from_utf8_lossy(cert_pem).into_owned(),
            key_pem: String::from_utf8_lossy(key_pem).into_owned(),
            issuer,
        })
    }

    /// Issues a 1-year leaf: (certificate PEM, `EC PRIVATE KEY` PEM).
    pub fn issue(&self, leaf: &Leaf) -> Result<(String, String)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = SystemTime::now();
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(&leaf.cn, &leaf.orgs);
        p.not_before = (now - Duration::from_secs(300)).into();
        p.not_after = (now + YEAR).into();
        p.serial_number = Some(serial()?);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if leaf.server {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if leaf.client {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let mut sans = Vec::new();
        for d in &leaf.dns {
            sans.push(SanType::DnsName(
                d.as_str()
                    .try_into()
                    .map_err(|e| anyhow!("DNS SAN {d:?}: {e}"))?,
            ));
        }
        sans.extend(leaf.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        p.subject_alt_names = sans;
        let cert = p
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing {}", leaf.cn))?;
        Ok((cert.pem(), crate::ecdsa_pem::to_sec1_pem(&key)?))
    }
}

/// kubeadm's etcd serving and peer certificates for a member (certs/certlist.go):
/// CN and a DNS SAN of the node name, `localhost`, the advertise address, loopback.
pub fn etcd_member_leaf(node_name: &str, advertise: IpAddr) -> Leaf {
    let mut ips = vec![advertise];
    for lo in ["127.0.0.1", "::1"] {
        let ip: IpAddr = lo.parse().expect("loopback parses");
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Leaf {
        cn: node_name.to_string(),
        orgs: vec![],
        dns: vec![node_name.to_string(), "localhost".into()],
        ips,
        server: true,
        client: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn leaves_chain_to_the_ca_with_kubeadm_names() {
        let ca = Authority::generate("etcd-ca").unwrap();
        assert!(ca.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let again = Authority::load(ca.cert_pem.as_bytes(), ca.key_pem.as_bytes()).unwrap();
        let (cert, key) = again
            .issue(&etcd_member_leaf("cp2", "10.0.0.12".parse().unwrap()))
            .unwrap();
        assert!(key.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let der = crate::pin::certs_from_pem(cert.as_bytes())
            .unwrap()
            .remove(0);
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(c.subject().to_string(), "CN=cp2");
        assert_eq!(c.issuer().to_string(), "CN=etcd-ca");
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let sans = c.subject_alternative_name().unwrap().unwrap().value;
        let text = format!("{sans:?}");
        assert!(
            text.contains("10.0.0.12") || text.contains("[10, 0, 0, 12]"),
            "{text}"
        );
    }
}
