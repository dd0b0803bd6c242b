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
        registration: &NO_REGISTRATION,
    }
}

static NO_REGISTRATION: std::sync::LazyLock<Registration> =
    std::sync::LazyLock::new(Registration::default);

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
        let yaml = render(api, &input(&ep, &token, &pins)).unwrap();
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
    let v: Value = serde_norway::from_str(&render(ConfigApi::V1beta3, &i).unwrap()).unwrap();
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
    let v: Value = serde_norway::from_str(&render(ConfigApi::V1beta3, &i).unwrap()).unwrap();
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
    let v: Value = serde_norway::from_str(&render(ConfigApi::V1beta3, &i).unwrap()).unwrap();
    assert!(get(&v, "controlPlane").is_null());
}

fn registration() -> Registration {
    Registration {
        ignore_preflight_errors: vec!["FileExisting-crictl".into(), "Swap".into()],
        labels: [
            ("node.kubernetes.io/pool".to_string(), "gpu".to_string()),
            ("example.com/rack".to_string(), "r1".to_string()),
        ]
        .into(),
        taints: Some(vec![
            crate::config::Taint {
                key: "dedicated".into(),
                value: Some("gpu".into()),
                effect: "NoSchedule".into(),
            },
            crate::config::Taint {
                key: "example.com/special".into(),
                value: None,
                effect: "NoExecute".into(),
            },
        ]),
        kubelet_extra_args: [("max-pods".to_string(), "200".to_string())].into(),
        patches: Some("/etc/kube-join-agent/patches".into()),
        skip_phases: vec!["control-plane-join/mark-control-plane".into()],
    }
}

#[test]
fn join_settings_in_each_api_version() {
    let ep = Endpoint::parse("10.0.0.10:6443").unwrap();
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    let reg = registration();
    for api in [ConfigApi::V1beta3, ConfigApi::V1beta4] {
        let mut i = input(&ep, &token, &[]);
        i.registration = &reg;
        let v: Value = serde_norway::from_str(&render(api, &i).unwrap()).unwrap();
        let nr = get(&v, "nodeRegistration");
        assert_eq!(
            nr["ignorePreflightErrors"],
            serde_norway::from_str::<Value>("[FileExisting-crictl, Swap]").unwrap()
        );
        assert_eq!(
            nr["taints"],
            serde_norway::from_str::<Value>(
                "[{key: dedicated, value: gpu, effect: NoSchedule}, {key: example.com/special, effect: NoExecute}]"
            )
            .unwrap()
        );
        let labels = "example.com/rack=r1,node.kubernetes.io/pool=gpu";
        match api {
            ConfigApi::V1beta4 => assert_eq!(
                nr["kubeletExtraArgs"],
                serde_norway::from_str::<Value>(&format!(
                    "[{{name: max-pods, value: '200'}}, {{name: node-labels, value: '{labels}'}}]"
                ))
                .unwrap(),
                "v1beta4's kubeletExtraArgs is a list of name/value pairs"
            ),
            _ => {
                assert_eq!(nr["kubeletExtraArgs"]["max-pods"].as_str(), Some("200"));
                assert_eq!(nr["kubeletExtraArgs"]["node-labels"].as_str(), Some(labels));
            }
        }
        assert_eq!(
            get(&v, "patches.directory").as_str(),
            Some("/etc/kube-join-agent/patches")
        );
        assert_eq!(
            get(&v, "skipPhases")[0].as_str(),
            Some("control-plane-join/mark-control-plane")
        );
    }
}

#[test]
fn v1beta2_takes_labels_taints_and_flags_but_not_patches_or_skipped_phases() {
    let ep = Endpoint::parse("10.0.0.10:6443").unwrap();
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    let mut reg = registration();
    let mut i = input(&ep, &token, &[]);
    i.registration = &reg;
    let err = render(ConfigApi::V1beta2, &i).unwrap_err();
    assert_eq!(err.key, "patches");
    assert!(err.to_string().contains("kubeadm 1.22 or later"), "{err}");
    reg.patches = None;
    let mut i = input(&ep, &token, &[]);
    i.registration = &reg;
    assert_eq!(
        render(ConfigApi::V1beta2, &i).unwrap_err().key,
        "skip_phases"
    );
    reg.skip_phases.clear();
    let mut i = input(&ep, &token, &[]);
    i.registration = &reg;
    let v: Value = serde_norway::from_str(&render(ConfigApi::V1beta2, &i).unwrap()).unwrap();
    let nr = get(&v, "nodeRegistration");
    assert_eq!(nr["kubeletExtraArgs"]["max-pods"].as_str(), Some("200"));
    assert_eq!(nr["taints"][0]["key"].as_str(), Some("dedicated"));
    assert_eq!(nr["ignorePreflightErrors"][1].as_str(), Some("Swap"));
    assert!(get(&v, "patches").is_null() && get(&v, "skipPhases").is_null());
}

#[test]
fn nothing_configured_renders_nothing_extra_and_no_taints_is_an_empty_list() {
    let ep = Endpoint::parse("10.0.0.10:6443").unwrap();
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    for api in [ConfigApi::V1beta2, ConfigApi::V1beta3, ConfigApi::V1beta4] {
        let v: Value =
            serde_norway::from_str(&render(api, &input(&ep, &token, &[])).unwrap()).unwrap();
        let nr = get(&v, "nodeRegistration");
        for absent in ["taints", "kubeletExtraArgs", "ignorePreflightErrors"] {
            assert!(nr[absent].is_null(), "{absent} in {api:?}");
        }
        let none = Registration {
            taints: Some(Vec::new()),
            ..Registration::default()
        };
        let mut i = input(&ep, &token, &[]);
        i.registration = &none;
        let v: Value = serde_norway::from_str(&render(api, &i).unwrap()).unwrap();
        // An empty list, not absent: on a control plane it drops kubeadm's default taint.
        assert_eq!(
            get(&v, "nodeRegistration.taints")
                .as_sequence()
                .map(Vec::len),
            Some(0)
        );
    }
}

#[test]
fn ignoring_all_preflight_errors_goes_on_the_command_line() {
    let ep = Endpoint::parse("10.0.0.10:6443").unwrap();
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    let all = Registration {
        ignore_preflight_errors: vec!["all".into()],
        ..Registration::default()
    };
    let mut i = input(&ep, &token, &[]);
    i.registration = &all;
    let v: Value = serde_norway::from_str(&render(ConfigApi::V1beta3, &i).unwrap()).unwrap();
    assert!(get(&v, "nodeRegistration.ignorePreflightErrors").is_null());
    assert_eq!(extra_flags(&all, None), ["--ignore-preflight-errors=all"]);
    assert_eq!(
        extra_flags(&all, Some("preflight")),
        ["--ignore-preflight-errors=all"]
    );
    assert!(extra_flags(&all, Some("kubelet-start")).is_empty());
    assert!(extra_flags(&registration(), None).is_empty());
}
