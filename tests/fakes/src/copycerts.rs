//! The encryption of the `kubeadm-certs` Secret (kubeadm/util/crypto/crypto.go, used by
//! phases/copycerts): AES-GCM with the 32-byte certificate key, a random 12-byte nonce
//! prepended to the sealed data (Go's `gcm.Seal(nonce, nonce, data, nil)`).

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Secret entry names: kubeadm's file names with `/` replaced by `-`
/// (`certOrKeyNameToSecretName`), and the paths they are written to.
pub const ENTRIES: &[(&str, &str)] = &[
    ("ca.crt", "/etc/kubernetes/pki/ca.crt"),
    ("ca.key", "/etc/kubernetes/pki/ca.key"),
    (
        "front-proxy-ca.crt",
        "/etc/kubernetes/pki/front-proxy-ca.crt",
    ),
    (
        "front-proxy-ca.key",
        "/etc/kubernetes/pki/front-proxy-ca.key",
    ),
    ("sa.pub", "/etc/kubernetes/pki/sa.pub"),
    ("sa.key", "/etc/kubernetes/pki/sa.key"),
    ("etcd-ca.crt", "/etc/kubernetes/pki/etcd/ca.crt"),
    ("etcd-ca.key", "/etc/kubernetes/pki/etcd/ca.key"),
];

fn key(k: &[u8]) -> Result<LessSafeKey, String> {
    UnboundKey::new(&AES_256_GCM, k)
        .map(LessSafeKey::new)
        // Go: aes.KeySizeError.
        .map_err(|_| format!("crypto/aes: invalid key size {}", k.len()))
}

/// `EncryptBytes`.
pub fn encrypt(data: &[u8], k: &[u8]) -> Result<Vec<u8>, String> {
    let key = key(k)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| "random source failed".to_string())?;
    let mut sealed = data.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::empty(),
        &mut sealed,
    )
    .map_err(|_| "cipher: seal failed".to_string())?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

/// `DecryptBytes`, with Go's error texts.
pub fn decrypt(data: &[u8], k: &[u8]) -> Result<Vec<u8>, String> {
    let key = key(k)?;
    if data.len() < NONCE_LEN {
        return Err("size of data is less than the nonce size".into());
    }
    let (nonce, sealed) = data.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| "size of data is less than the nonce size".to_string())?;
    let mut buf = sealed.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::empty(), &mut buf)
        .map_err(|_| "cipher: message authentication failed".to_string())?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let k = [7u8; 32];
        let sealed = encrypt(b"-----BEGIN CERTIFICATE-----", &k).unwrap();
        assert_eq!(sealed.len(), 12 + 27 + 16);
        assert_eq!(
            decrypt(&sealed, &k).unwrap(),
            b"-----BEGIN CERTIFICATE-----"
        );
        assert_eq!(
            decrypt(&sealed, &[8u8; 32]).unwrap_err(),
            "cipher: message authentication failed"
        );
        assert_eq!(
            decrypt(b"short", &k).unwrap_err(),
            "size of data is less than the nonce size"
        );
        assert!(
            encrypt(b"x", &[0u8; 5])
                .unwrap_err()
                .contains("invalid key size 5")
        );
    }
}
