//! Detached JWS signatures over the cluster-info kubeconfig, as the bootstrap signer
//! controller writes them and kubeadm checks them
//! (staging/src/k8s.io/cluster-bootstrap/token/jws/jws.go).
//!
//! Format: `<b64url(header)>..<b64url(HMAC-SHA256(secret, b64url(header) "." b64url(content)))>`,
//! header exactly `{"alg":"HS256","kid":"<token id>"}`, base64url without padding.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// The protected header upstream's go-jose produces, byte for byte.
fn header(token_id: &str) -> String {
    // Token ids are [a-z0-9]{6}; serde_json keeps this correct for anything else too.
    format!(
        r#"{{"alg":"HS256","kid":{}}}"#,
        serde_json::Value::String(token_id.to_owned())
    )
}

fn signing_input(content: &str, token_id: &str) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header(token_id)),
        URL_SAFE_NO_PAD.encode(content)
    )
}

/// Computes the detached JWS for `content` (the kubeconfig exactly as stored).
pub fn sign_detached(content: &str, token_id: &str, token_secret: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token_secret.as_bytes());
    let input = signing_input(content, token_id);
    let sig = hmac::sign(&key, input.as_bytes());
    let (protected, _) = input.split_once('.').unwrap_or((&input, ""));
    format!("{protected}..{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// Checks a detached JWS the way kubeadm does: the header must be the one for this token
/// id and the signature must verify. The MAC comparison is constant-time (ring).
pub fn verify_detached(jws: &str, content: &str, token_id: &str, token_secret: &str) -> bool {
    let mut parts = jws.split('.');
    let (Some(protected), Some(""), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if protected != URL_SAFE_NO_PAD.encode(header(token_id)) {
        return false;
    }
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig_b64) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, token_secret.as_bytes());
    hmac::verify(&key, signing_input(content, token_id).as_bytes(), &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT: &str = "apiVersion: v1\nkind: Config\n";
    // Computed independently with:
    //   printf '%s' "$h.$p" | openssl dgst -sha256 -hmac 0123456789abcdef -binary | base64url
    const EXPECTED: &str =
        "eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9..vH_kT4yiol-nrAWgjfCYqvum5wsKETXe0S7OOp1VgnE";

    #[test]
    fn signs_fixed_vector() {
        assert_eq!(
            sign_detached(CONTENT, "abcdef", "0123456789abcdef"),
            EXPECTED
        );
    }

    #[test]
    fn verifies_and_rejects() {
        assert!(verify_detached(
            EXPECTED,
            CONTENT,
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!verify_detached(
            EXPECTED,
            CONTENT,
            "abcdef",
            "0123456789abcdeX"
        ));
        assert!(!verify_detached(
            EXPECTED,
            "other",
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!verify_detached(
            EXPECTED,
            CONTENT,
            "abcdeg",
            "0123456789abcdef"
        ));
        assert!(!verify_detached(
            "garbage",
            CONTENT,
            "abcdef",
            "0123456789abcdef"
        ));
        let attached = EXPECTED.replace("..", ".eA.");
        assert!(!verify_detached(
            &attached,
            CONTENT,
            "abcdef",
            "0123456789abcdef"
        ));
    }
}
