use super::*;
use serde_norway::Value;
use std::os::unix::fs::MetadataExt;

fn input<'a>(
    ep: &'a Endpoint,
    token: &'a BootstrapToken,
    pins: &'a [CaPin],
) -> JoinConfigInput<'a> {
    JoinConfigInput {
        api_server: ep,
        token,
        ca_pins: pins,
        unsafe_skip_ca_verification: false,
        node_name: "worker-1",
        cri_socket: Path::new("/run/containerd/containerd.sock"),
        discovery_timeout: Duration::from_secs(300),
        tls_bootstrap_timeout: Duration::from_secs(240),
        control_plane: None,
    }
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

#[test]
fn api_version_follows_kubeadm_release() {
    let v = |s| ConfigApi::for_version(KubeadmVersion::parse(s).unwrap());
    assert_eq!(v("v1.20.2"), ConfigApi::V1beta2);
    assert_eq!(v("v1.21.14"), ConfigApi::V1beta2);
    assert_eq!(v("v1.22.0"), ConfigApi::V1beta3);
    assert_eq!(v("v1.29.7"), ConfigApi::V1beta3);
    assert_eq!(v("v1.30.9"), ConfigApi::V1beta3);
    assert_eq!(v("v1.31.0"), ConfigApi::V1beta4);
    assert_eq!(v("v1.34.1"), ConfigApi::V1beta4);
}

#[test]
fn renders_each_api_version_as_kubeadm_expects() {
    let ep = Endpoint::parse("10.0.0.10:6443").unwrap();
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    let pins = [CaPin::parse(&format!("sha256:{}", "a".repeat(64))).unwrap()];
    for api in [ConfigApi::V1beta2, ConfigApi::V1beta3, ConfigApi::V1beta4] {
        let yaml = render(api, &input(&ep, &token, &pins));
        let v: Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(get(&v, "apiVersion").as_str(), Some(api.api_version()));
        assert_eq!(get(&v, "kind").as_str(), Some("JoinConfiguration"));
        assert_eq!(
            get(&v, "discovery.bootstrapToken.apiServerEndpoint").as_str(),
            Some("10.0.0.10:6443")
        );
        assert_eq!(
            get(&v, "discovery.bootstrapToken.token").as_str(),
            Some("abcdef.0123456789abcdef")
        );
        assert_eq!(
            get(&v, "discovery.tlsBootstrapToken").as_str(),
            Some("abcdef.0123456789abcdef")
        );
        assert_eq!(
            get(&v, "discovery.bootstrapToken.caCertHashes")[0].as_str(),
            Some(pins[0].0.as_str())
        );
        assert_eq!(
            get(&v, "discovery.bootstrapToken.unsafeSkipCAVerification").as_bool(),
            Some(false)
        );
        assert_eq!(get(&v, "nodeRegistration.name").as_str(), Some("worker-1"));
        match api {
            ConfigApi::V1beta2 => {
                assert_eq!(
                    get(&v, "nodeRegistration.criSocket").as_str(),
                    Some("/run/containerd/containerd.sock")
                );
                assert_eq!(get(&v, "discovery.timeout").as_str(), Some("300s"));
            }
            ConfigApi::V1beta3 => {
                assert_eq!(
                    get(&v, "nodeRegistration.criSocket").as_str(),
                    Some("unix:///run/containerd/containerd.sock")
                );
                assert_eq!(get(&v, "discovery.timeout").as_str(), Some("300s"));
                assert!(get(&v, "timeouts").is_null());
            }
            ConfigApi::V1beta4 => {
                assert!(get(&v, "discovery.timeout").is_null());
                assert_eq!(get(&v, "timeouts.discovery").as_str(), Some("300s"));
                assert_eq!(get(&v, "timeouts.tlsBootstrap").as_str(), Some("240s"));
            }
        }
    }
}

#[test]
fn unsafe_skip_only_without_pins() {
    let ep = Endpoint::parse("cp:6443").unwrap();
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    let mut i = input(&ep, &token, &[]);
    i.unsafe_skip_ca_verification = true;
    let v: Value = serde_norway::from_str(&render(ConfigApi::V1beta3, &i)).unwrap();
    assert_eq!(
        get(&v, "discovery.bootstrapToken.unsafeSkipCAVerification").as_bool(),
        Some(true)
    );
    assert!(get(&v, "discovery.bootstrapToken.caCertHashes").is_null());
}

#[test]
fn written_private_even_over_a_world_readable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/kube-join-agent/join-config.yaml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_private(&path, "new").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
        0o700
    );
}

#[test]
fn control_plane_section() {
    let ep = Endpoint::parse("10.0.0.10:6443").unwrap();
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    let key = crate::secret::Secret::new("ab".repeat(32));
    let mut i = input(&ep, &token, &[]);
    i.unsafe_skip_ca_verification = true;
    i.control_plane = Some(ControlPlaneInput {
        certificate_key: &key,
        advertise_address: Some("10.0.0.11".parse().unwrap()),
    });
    let v: Value = serde_norway::from_str(&render(ConfigApi::V1beta3, &i)).unwrap();
    assert_eq!(
        get(&v, "controlPlane.certificateKey").as_str(),
        Some(key.expose())
    );
    assert_eq!(
        get(&v, "controlPlane.localAPIEndpoint.advertiseAddress").as_str(),
        Some("10.0.0.11")
    );
    assert_eq!(
        get(&v, "controlPlane.localAPIEndpoint.bindPort").as_u64(),
        Some(6443)
    );
    i.control_plane = None;
    let v: Value = serde_norway::from_str(&render(ConfigApi::V1beta3, &i)).unwrap();
    assert!(get(&v, "controlPlane").is_null());
}
