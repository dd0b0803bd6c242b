//! CA public key pins as kubeadm computes and checks them (kubeadm/util/pubkeypin):
//! `sha256:<hex>` over the certificate's DER SubjectPublicKeyInfo, not the whole cert.

use anyhow::{Context, Result, anyhow, bail};
use ring::digest;
use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The pin of one DER certificate.
pub fn pin_of_der(cert_der: &[u8]) -> Result<String> {
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| anyhow!("parsing certificate: {e}"))?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(format!(
        "sha256:{}",
        hex::encode(digest::digest(&digest::SHA256, spki))
    ))
}

/// Every certificate's DER in a PEM bundle (non-certificate blocks are skipped).
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| anyhow!("parsing PEM: {e}"))?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        bail!("data does not contain any valid RSA or ECDSA certificates");
    }
    Ok(out)
}

/// The pin of the first certificate in a PEM bundle.
pub fn pin_of_pem(pem: &[u8]) -> Result<String> {
    let certs = certs_from_pem(pem)?;
    pin_of_der(&certs[0]).context("computing the public key pin")
}

/// A set of allowed pins, with upstream's parsing rules and error texts.
#[derive(Debug, Default, Clone)]
pub struct PinSet {
    sha256: Vec<String>,
}

impl PinSet {
    /// Parses pins as `Set.Allow` does: `format:hex`, format `sha256`, 32 bytes of hex.
    pub fn allow(pins: &[String]) -> Result<Self> {
        let mut set = Self::default();
        for pin in pins {
            let parts: Vec<&str> = pin.split(':').collect();
            if parts.len() != 2 {
                bail!("invalid hash, expected \"format:hex-value\". Known format(s) are: sha256");
            }
            let (format, value) = (parts[0], parts[1]);
            if !format.eq_ignore_ascii_case("sha256") {
                bail!("unknown hash format {format:?}. Known format(s) are: sha256");
            }
            // Go's hex.DecodedLen is len/2: report the length the same way.
            if value.len() / 2 != 32 {
                bail!(
                    "expected a 32 byte SHA-256 hash, found {} bytes",
                    value.len() / 2
                );
            }
            hex::decode(value).map_err(|e| anyhow!("could not decode SHA-256 from hex: {e}"))?;
            set.sha256.push(value.to_ascii_lowercase());
        }
        Ok(set)
    }

    /// No pins at all (only legal with unsafeSkipCAVerification).
    pub fn is_empty(&self) -> bool {
        self.sha256.is_empty()
    }

    /// `CheckAny`: passes if any certificate's pin is allowed; otherwise names the
    /// actual pins like upstream: `none of the public keys "sha256:..." are pinned`.
    pub fn check_any(&self, certs_der: &[Vec<u8>]) -> Result<()> {
        let mut seen = Vec::new();
        for der in certs_der {
            let pin = pin_of_der(der)?;
            if self
                .sha256
                .iter()
                .any(|p| Some(p.as_str()) == pin.strip_prefix("sha256:"))
            {
                return Ok(());
            }
            seen.push(pin);
        }
        bail!("none of the public keys {:?} are pinned", seen.join(":"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_ca() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.public_key_pem())
    }

    #[test]
    fn pin_is_sha256_of_spki() {
        let (cert_pem, pub_pem) = test_ca();
        // The PUBLIC KEY PEM body is exactly the DER SubjectPublicKeyInfo.
        let spki = certs_from_pem_label(pub_pem.as_bytes(), "PUBLIC KEY");
        let want = format!(
            "sha256:{}",
            hex::encode(digest::digest(&digest::SHA256, &spki))
        );
        assert_eq!(pin_of_pem(cert_pem.as_bytes()).unwrap(), want);
    }

    fn certs_from_pem_label(pem: &[u8], label: &str) -> Vec<u8> {
        Pem::iter_from_buffer(pem)
            .map(|b| b.unwrap())
            .find(|b| b.label == label)
            .unwrap()
            .contents
    }

    #[test]
    fn pinset_parsing_errors_match_upstream() {
        let err = |p: &str| PinSet::allow(&[p.to_owned()]).unwrap_err().to_string();
        assert!(err("abc").contains("expected \"format:hex-value\""));
        assert!(err("md5:00").contains("unknown hash format \"md5\""));
        assert!(err("sha256:00").contains("expected a 32 byte SHA-256 hash, found 1 bytes"));
        assert!(err(&format!("sha256:{}", "z".repeat(64))).contains("could not decode"));
        assert!(PinSet::allow(&[format!("SHA256:{}", "AB".repeat(32))]).is_ok());
    }

    #[test]
    fn check_any_reports_actual_pin() {
        let (cert_pem, _) = test_ca();
        let certs = certs_from_pem(cert_pem.as_bytes()).unwrap();
        let actual = pin_of_der(&certs[0]).unwrap();
        let good = PinSet::allow(&[actual.to_uppercase().replace("SHA256", "sha256")]).unwrap();
        good.check_any(&certs).unwrap();
        let bad = PinSet::allow(&[format!("sha256:{}", "00".repeat(32))]).unwrap();
        let msg = bad.check_any(&certs).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!("none of the public keys \"{actual}\" are pinned")
        );
    }
}
