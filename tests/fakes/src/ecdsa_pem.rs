//! ECDSA P-256 private keys in the PEM form Go's kubelet writes (`EC PRIVATE KEY`, SEC1,
//! RFC 5915) and back to the PKCS#8 that ring (and so rcgen) loads.
//!
//! Why bother: the agent reads `kubelet-client-current.pem` on real nodes, where the key
//! is SEC1. A fake writing PKCS#8 would let an agent that only handles PKCS#8 pass.

use anyhow::{Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use x509_parser::pem::Pem;

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// One DER TLV: tag, contents, remaining input. Only what these two key formats need.
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("truncated DER"))?;
    let (&len0, rest) = rest
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("truncated DER"))?;
    let (len, rest) = match len0 {
        l if l < 0x80 => (l as usize, rest),
        0x81 if !rest.is_empty() => (rest[0] as usize, &rest[1..]),
        0x82 if rest.len() >= 2 => (((rest[0] as usize) << 8) | rest[1] as usize, &rest[2..]),
        _ => bail!("unsupported DER length"),
    };
    if rest.len() < len {
        bail!("truncated DER");
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// The private scalar and uncompressed public point of an ECPrivateKey structure.
struct EcKey<'a> {
    d: &'a [u8],
    public: &'a [u8],
}

fn parse_ec_private_key(sec1: &[u8]) -> Result<EcKey<'_>> {
    let (tag, body, _) = tlv(sec1)?;
    if tag != 0x30 {
        bail!("ECPrivateKey is not a SEQUENCE");
    }
    let (tag, version, rest) = tlv(body)?;
    if tag != 0x02 || version != [1] {
        bail!("unsupported ECPrivateKey version");
    }
    let (tag, d, mut rest) = tlv(rest)?;
    if tag != 0x04 || d.len() != 32 {
        bail!("ECPrivateKey is not a P-256 key");
    }
    let mut public = None;
    while !rest.is_empty() {
        let (tag, content, next) = tlv(rest)?;
        match tag {
            0xa0 => {
                let (_, oid, _) = tlv(content)?;
                if oid != OID_PRIME256V1 {
                    bail!("ECPrivateKey curve is not P-256");
                }
            }
            0xa1 => {
                let (tag, bits, _) = tlv(content)?;
                if tag != 0x03 || bits.first() != Some(&0) {
                    bail!("malformed ECPrivateKey public key");
                }
                public = Some(&bits[1..]);
            }
            _ => bail!("unexpected field in ECPrivateKey"),
        }
        rest = next;
    }
    let public = public.ok_or_else(|| anyhow::anyhow!("ECPrivateKey lacks its public key"))?;
    Ok(EcKey { d, public })
}

fn ec_private_key(key: &EcKey<'_>, with_params: bool) -> Vec<u8> {
    let mut body = der(0x02, &[1]);
    body.extend(der(0x04, key.d));
    if with_params {
        body.extend(der(0xa0, &der(0x06, OID_PRIME256V1)));
    }
    let mut bits = vec![0];
    bits.extend_from_slice(key.public);
    body.extend(der(0xa1, &der(0x03, &bits)));
    der(0x30, &body)
}

/// PKCS#8 (as ring generates it) to SEC1 DER with the curve named, like Go's
/// `x509.MarshalECPrivateKey`.
pub fn pkcs8_to_sec1(pkcs8: &[u8]) -> Result<Vec<u8>> {
    let (tag, body, _) = tlv(pkcs8)?;
    if tag != 0x30 {
        bail!("PKCS#8 is not a SEQUENCE");
    }
    let (_, _version, rest) = tlv(body)?;
    let (tag, alg, rest) = tlv(rest)?;
    let (_, alg_oid, alg_rest) = tlv(alg)?;
    let (_, curve_oid, _) = tlv(alg_rest)?;
    if tag != 0x30 || alg_oid != OID_EC_PUBLIC_KEY || curve_oid != OID_PRIME256V1 {
        bail!("PKCS#8 key is not ECDSA P-256");
    }
    let (tag, inner, _) = tlv(rest)?;
    if tag != 0x04 {
        bail!("PKCS#8 private key is not an OCTET STRING");
    }
    Ok(ec_private_key(&parse_ec_private_key(inner)?, true))
}

/// SEC1 DER to the PKCS#8 layout ring accepts.
pub fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>> {
    let key = parse_ec_private_key(sec1)?;
    let mut alg = der(0x06, OID_EC_PUBLIC_KEY);
    alg.extend(der(0x06, OID_PRIME256V1));
    let mut body = der(0x02, &[0]);
    body.extend(der(0x30, &alg));
    body.extend(der(0x04, &ec_private_key(&key, false)));
    Ok(der(0x30, &body))
}

/// PEM-encodes DER with 64-column lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The key pair as `EC PRIVATE KEY` PEM, as kubelet writes it.
pub fn to_sec1_pem(key: &rcgen::KeyPair) -> Result<String> {
    Ok(pem_encode(
        "EC PRIVATE KEY",
        &pkcs8_to_sec1(key.serialized_der())?,
    ))
}

/// Loads the first private key (`EC PRIVATE KEY` or `PRIVATE KEY`) found in a PEM bundle.
pub fn key_pair_from_pem(pem: &[u8]) -> Result<rcgen::KeyPair> {
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| anyhow::anyhow!("parsing PEM: {e}"))?;
        let pkcs8 = match block.label.as_str() {
            "EC PRIVATE KEY" => sec1_to_pkcs8(&block.contents)?,
            "PRIVATE KEY" => block.contents,
            _ => continue,
        };
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8);
        return rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| anyhow::anyhow!("loading ECDSA P-256 key: {e}"));
    }
    bail!("no private key found in PEM data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sec1_round_trip_keeps_the_key() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = to_sec1_pem(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
        let back = key_pair_from_pem(pem.as_bytes()).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
        // And PKCS#8 input still loads.
        let back = key_pair_from_pem(key.serialize_pem().as_bytes()).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
    }

    #[test]
    fn sec1_pem_is_accepted_by_rustls_pki_types() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sec1 = pkcs8_to_sec1(key.serialized_der()).unwrap();
        // Starts like Go's output: SEQUENCE, version 1, 32-byte scalar.
        assert_eq!(&sec1[..7], &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(key_pair_from_pem(b"nope").is_err());
        assert!(sec1_to_pkcs8(&[0x30, 0x03, 0x02, 0x01]).is_err());
    }
}
