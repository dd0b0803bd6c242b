//! Hostile and broken input to every parser: the committed corpus (tests/fixtures/corpus)
//! and random mutations of it. Each must end in a clear error or a value, never a
//! panic, and never a hang (the YAML corpus includes an alias bomb).

use kube_join_agent::config;
use kube_join_agent::discovery::{self, jws};
use kube_join_agent::kubeconfig::Kubeconfig;
use kube_join_agent::paths::Paths;
use kube_join_agent::pki;
use kube_join_agent::secret::BootstrapToken;
use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

fn corpus(kind: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/corpus")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

/// Loads `bytes` as the admin's config.toml next to a valid token file.
fn load_config(bytes: &[u8]) -> Result<config::Settings, config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    let etc = paths.at("/etc/kube-join-agent");
    std::fs::create_dir_all(&etc).unwrap();
    let token = etc.join("token");
    std::fs::write(&token, "abcdef.0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(etc.join("config.toml"), bytes).unwrap();
    config::load(&paths)
}

fn check_kubeconfig(bytes: &[u8]) {
    if let Ok(k) = Kubeconfig::parse(&String::from_utf8_lossy(bytes), "corpus") {
        let _ = k.server();
        let _ = k.ca_pem(|p| p.to_path_buf());
        let _ = k.user();
    }
}

fn check_cluster_info(bytes: &[u8]) {
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    if let Ok((kubeconfig, Some(sig))) = discovery::parse_cluster_info(bytes, "abcdef", "ep") {
        assert!(jws::verify_detached(&sig, kubeconfig.as_bytes(), &token).is_err());
    }
}

fn check_certs(bytes: &[u8]) {
    if let Ok(certs) = pki::pem_certificates(bytes, "corpus") {
        for c in &certs {
            let _ = pki::spki_pin(c, "corpus");
        }
        let _ = pki::check_kubelet_client_cert(bytes, bytes, &certs, "n", "corpus");
    }
}

#[test]
fn config_corpus_gives_errors_naming_file_and_key() {
    for (path, bytes) in corpus("config") {
        match load_config(&bytes) {
            Ok(s) => panic!("{} was accepted: {s:?}", path.display()),
            Err(e) => {
                assert!(
                    !e.key.is_empty(),
                    "{}: error without a key: {e}",
                    path.display()
                );
                assert!(
                    !e.reason.is_empty(),
                    "{}: error without a reason: {e}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn kubeconfig_corpus_is_rejected_cleanly() {
    for (path, bytes) in corpus("kubeconfig") {
        let started = std::time::Instant::now();
        // Broken either as YAML/kubeconfig, or in what the agent reads from it.
        let usable = Kubeconfig::parse(&String::from_utf8_lossy(&bytes), "corpus").is_ok_and(|k| {
            k.server().is_ok() && k.ca_pem(|p| p.to_path_buf()).is_ok() && k.user().is_ok()
        });
        assert!(!usable, "{} was accepted", path.display());
        assert!(
            started.elapsed().as_secs() < 5,
            "{} took {:?}",
            path.display(),
            started.elapsed()
        );
    }
}

#[test]
fn cluster_info_corpus_never_verifies() {
    for (_, bytes) in corpus("cluster-info") {
        check_cluster_info(&bytes);
    }
}

#[test]
fn certificate_corpus_never_panics() {
    for (_, bytes) in corpus("certs") {
        check_certs(&bytes);
    }
}

/// A corpus file with some bytes replaced and a tail cut: cheap structure-aware fuzzing.
fn mutated(kind: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let files: Vec<Vec<u8>> = corpus(kind).into_iter().map(|(_, b)| b).collect();
    (
        0..files.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<usize>(),
    )
        .prop_map(move |(i, flips, cut)| {
            let mut bytes = files[i].clone();
            for (at, byte) in flips {
                if !bytes.is_empty() {
                    let n = bytes.len();
                    bytes[at % n] = byte;
                }
            }
            let keep = if bytes.is_empty() {
                0
            } else {
                cut % (bytes.len() + 1)
            };
            bytes.truncate(keep);
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutated_configs_never_panic(bytes in mutated("config")) {
        let _ = load_config(&bytes);
    }

    #[test]
    fn mutated_kubeconfigs_never_panic(bytes in mutated("kubeconfig")) {
        check_kubeconfig(&bytes);
    }

    #[test]
    fn mutated_cluster_info_never_panics(bytes in mutated("cluster-info")) {
        check_cluster_info(&bytes);
    }

    #[test]
    fn mutated_certificates_never_panic(bytes in mutated("certs")) {
        check_certs(&bytes);
    }

    #[test]
    fn arbitrary_tokens_never_panic_or_echo(text in ".{0,40}") {
        if let Err(e) = BootstrapToken::parse(&text) {
            prop_assert!(text.len() < 3 || !e.to_string().contains(text.as_str()));
        }
    }
}
