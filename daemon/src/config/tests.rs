//! Merging and validation, against real files in a temporary root.

use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Root {
    _dir: tempfile::TempDir,
    paths: Paths,
}

impl Root {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        Self { _dir: dir, paths }
    }

    fn write(&self, path: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.paths.at(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// The shipped defaults plus a minimal valid join fragment.
    fn valid() -> Self {
        let root = Self::new();
        root.write(
            "/usr/lib/kube-join-agent/config.d/10-defaults.toml",
            include_str!("../../../config/config.toml"),
            0o644,
        );
        root.write(
            "/etc/kube-join-agent/token",
            "abcdef.0123456789abcdef\n",
            0o600,
        );
        root.write(
            "/etc/kube-join-agent/config.d/50-join.toml",
            &format!(
                "[join]\napi_server = \"10.0.0.10:6443\"\ntoken_file = \"/etc/kube-join-agent/token\"\nca_cert_hashes = [\"{PIN}\"]\nnode_name = \"worker-1\"\n"
            ),
            0o644,
        );
        root
    }

    fn load(&self) -> Result<Settings, ConfigError> {
        load(&self.paths)
    }
}

#[test]
fn shipped_defaults_plus_join_fragment_is_valid() {
    let s = Root::valid().load().unwrap();
    assert_eq!(
        s.join.api_server,
        Endpoint {
            host: "10.0.0.10".into(),
            port: 6443
        }
    );
    assert_eq!(s.join.token.id(), "abcdef");
    assert_eq!(s.join.ca_pins, vec![CaPin(PIN.into())]);
    assert_eq!(s.join.node_name, "worker-1");
    assert_eq!(s.retry.max_attempts, 5);
    assert_eq!(s.timeouts.join_phase, Duration::from_secs(600));
    assert_eq!(
        s.containerd_socket,
        PathBuf::from("/run/containerd/containerd.sock")
    );
    assert_eq!(s.kubelet_unit, "kubelet.service");
    assert_eq!(s.files.len(), 2);
}

#[test]
fn later_files_win_in_name_order_across_layers() {
    let root = Root::valid();
    root.write(
        "/etc/kube-join-agent/config.d/90-late.toml",
        "[retry]\nmax_attempts = 9\n",
        0o644,
    );
    root.write(
        "/etc/kube-join-agent/config.d/60-mid.toml",
        "[retry]\nmax_attempts = 7\ninitial_backoff = \"1s\"\n",
        0o644,
    );
    // /etc/kube-join-agent/config.toml comes before config.d, after /usr/lib and /run.
    root.write(
        "/etc/kube-join-agent/config.toml",
        "[retry]\nmax_attempts = 3\nmax_backoff = \"2s\"\n",
        0o644,
    );
    root.write(
        "/run/kube-join-agent/config.d/50-run.toml",
        "[retry]\nmax_backoff = \"1h\"\n",
        0o644,
    );
    let s = root.load().unwrap();
    assert_eq!(s.retry.max_attempts, 9);
    assert_eq!(s.retry.initial_backoff, Duration::from_secs(1));
    assert_eq!(s.retry.max_backoff, Duration::from_secs(2));
}

#[test]
fn non_toml_files_are_ignored() {
    let root = Root::valid();
    root.write(
        "/etc/kube-join-agent/config.d/99-broken.toml.bak",
        "this is not toml",
        0o644,
    );
    assert!(root.load().is_ok());
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let root = Root::valid();
    let f = root.write(
        "/etc/kube-join-agent/config.d/70-typo.toml",
        "[join]\n\napi_sever = \"x:1\"\n",
        0o644,
    );
    let e = root.load().unwrap_err();
    assert_eq!(e.file.as_deref(), Some(f.as_path()));
    assert_eq!(e.key, "line 3");
    assert!(e.reason.contains("unknown field `api_sever`"), "{e}");
}

#[test]
fn unknown_section_is_an_error() {
    let root = Root::valid();
    root.write(
        "/etc/kube-join-agent/config.d/70-x.toml",
        "[joinn]\n",
        0o644,
    );
    assert!(
        root.load()
            .unwrap_err()
            .reason
            .contains("unknown field `joinn`")
    );
}

#[test]
fn wrong_type_is_an_error() {
    let root = Root::valid();
    root.write(
        "/etc/kube-join-agent/config.d/70-x.toml",
        "[retry]\nmax_attempts = \"five\"\n",
        0o644,
    );
    let e = root.load().unwrap_err();
    assert!(e.reason.contains("invalid type"), "{e}");
}

#[test]
fn bad_values_name_the_key_and_the_file() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[join]\napi_server = \"10.0.0.10\"\n",
            "join.api_server",
            "host:port",
        ),
        (
            "[join]\napi_server = \"10.0.0.10:0\"\n",
            "join.api_server",
            "port",
        ),
        (
            "[join]\napi_server = \"fd00::1:6443\"\n",
            "join.api_server",
            "brackets",
        ),
        (
            "[join]\nca_cert_hashes = [\"md5:abc\"]\n",
            "join.ca_cert_hashes[0]",
            "sha256",
        ),
        (
            "[join]\nca_cert_hashes = [\"sha256:abc\"]\n",
            "join.ca_cert_hashes[0]",
            "64 hex",
        ),
        (
            "[join]\nnode_name = \"Worker_1\"\n",
            "join.node_name",
            "DNS-1123",
        ),
        (
            "[retry]\nmax_attempts = 0\n",
            "retry.max_attempts",
            "out of range",
        ),
        (
            "[retry]\ninitial_backoff = \"soon\"\n",
            "retry.initial_backoff",
            "not a duration",
        ),
        (
            "[retry]\ninitial_backoff = \"10m\"\n",
            "retry.initial_backoff",
            "longer than retry.max_backoff",
        ),
        (
            "[timeouts]\nno_progress = \"0s\"\n",
            "timeouts.no_progress",
            "greater than zero",
        ),
        (
            "[containerd]\nsocket = \"run/containerd.sock\"\n",
            "containerd.socket",
            "absolute",
        ),
        (
            "[kubelet]\nunit = \"kubelet\"\n",
            "kubelet.unit",
            "service unit",
        ),
        (
            "[preflight]\nwarn_only = [\"swapp\"]\n",
            "preflight.warn_only",
            "unknown check",
        ),
        (
            "[join]\ntoken_file = \"token\"\n",
            "join.token_file",
            "absolute",
        ),
    ];
    for (text, key, reason) in cases {
        let root = Root::valid();
        let f = root.write("/etc/kube-join-agent/config.d/70-bad.toml", text, 0o644);
        let e = root.load().unwrap_err();
        assert_eq!(e.key, *key, "for {text:?}: {e}");
        assert!(e.reason.contains(reason), "for {text:?}: {e}");
        assert_eq!(e.file.as_deref(), Some(f.as_path()), "for {text:?}");
    }
}

#[test]
fn missing_required_keys_say_what_to_set() {
    let root = Root::new();
    let e = root.load().unwrap_err();
    assert_eq!(e.key, "join.api_server");

    let root = Root::new();
    root.write(
        "/etc/kube-join-agent/config.toml",
        "[join]\napi_server = \"cp:6443\"\n",
        0o644,
    );
    assert_eq!(root.load().unwrap_err().key, "join.token_file");

    let root = Root::new();
    root.write(
        "/etc/kube-join-agent/token",
        "abcdef.0123456789abcdef",
        0o600,
    );
    root.write(
        "/etc/kube-join-agent/config.toml",
        "[join]\napi_server = \"cp:6443\"\ntoken_file = \"/etc/kube-join-agent/token\"\n",
        0o644,
    );
    let e = root.load().unwrap_err();
    assert_eq!(e.key, "join.ca_cert_hashes");
    assert!(e.reason.contains("unsafe_skip_ca_verification"));
}

#[test]
fn unsafe_skip_allows_no_pins() {
    let root = Root::new();
    root.write(
        "/etc/kube-join-agent/token",
        "abcdef.0123456789abcdef",
        0o600,
    );
    root.write(
        "/etc/kube-join-agent/config.toml",
        "[join]\napi_server = \"cp:6443\"\ntoken_file = \"/etc/kube-join-agent/token\"\nunsafe_skip_ca_verification = true\nnode_name = \"n1\"\n",
        0o644,
    );
    let s = root.load().unwrap();
    assert!(s.join.unsafe_skip_ca_verification && s.join.ca_pins.is_empty());
}

#[test]
fn token_file_readable_by_others_is_refused_without_leaking_it() {
    let root = Root::valid();
    let token = root.paths.at("/etc/kube-join-agent/token");
    fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
    let e = root.load().unwrap_err();
    assert_eq!(e.file.as_deref(), Some(token.as_path()));
    assert!(
        e.reason.contains("mode 0644") && e.reason.contains("chmod 600"),
        "{e}"
    );
    assert!(!e.to_string().contains("0123456789abcdef"));
}

#[test]
fn malformed_token_file_is_refused_without_leaking_it() {
    let root = Root::valid();
    root.write(
        "/etc/kube-join-agent/token",
        "abcdef:0123456789abcdef",
        0o600,
    );
    let e = root.load().unwrap_err();
    assert_eq!(e.key, "join.token_file");
    assert!(!e.to_string().contains("0123456789abcdef"));
}

#[test]
fn inline_token_needs_a_private_fragment() {
    let root = Root::valid();
    let f = root.write(
        "/etc/kube-join-agent/config.d/80-token.toml",
        "[join]\ntoken = \"abcdef.0123456789abcdef\"\n",
        0o644,
    );
    let e = root.load().unwrap_err();
    assert_eq!(e.file.as_deref(), Some(f.as_path()));
    assert_eq!(e.key, "join.token");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let s = root.load().unwrap();
    // The inline token replaced the token_file of the earlier fragment.
    assert_eq!(s.join.token_source, TokenSource::Inline(f));
}

#[test]
fn fingerprint_changes_with_content() {
    let root = Root::valid();
    let a = root.load().unwrap().fingerprint;
    root.write(
        "/etc/kube-join-agent/config.d/60-x.toml",
        "[retry]\nmax_attempts = 2\n",
        0o644,
    );
    assert_ne!(a, root.load().unwrap().fingerprint);
}

#[test]
fn endpoints_parse() {
    assert_eq!(
        Endpoint::parse("[fd00::1]:6443").unwrap().to_string(),
        "[fd00::1]:6443"
    );
    assert_eq!(
        Endpoint::parse("cp.example.com:443").unwrap().host,
        "cp.example.com"
    );
    assert!(Endpoint::parse(":6443").is_err());
    assert!(Endpoint::parse("cp:65536").is_err());
}

#[test]
fn control_plane_needs_a_private_certificate_key() {
    let root = Root::valid();
    root.write(
        "/etc/kube-join-agent/config.d/60-cp.toml",
        "[join]\ncontrol_plane = true\n",
        0o644,
    );
    let e = root.load().unwrap_err();
    assert_eq!(e.key, "join.certificate_key_file");
    root.write(
        "/etc/kube-join-agent/config.d/60-cp.toml",
        "[join]\ncontrol_plane = true\ncertificate_key_file = \"/etc/kube-join-agent/certificate-key\"\nadvertise_address = \"10.0.0.11\"\n",
        0o644,
    );
    let key = "0f".repeat(32);
    let f = root.write("/etc/kube-join-agent/certificate-key", &key, 0o640);
    assert!(root.load().unwrap_err().reason.contains("chmod 600"));
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let s = root.load().unwrap();
    let cp = s.join.control_plane.unwrap();
    assert_eq!(cp.certificate_key.expose(), key);
    assert_eq!(cp.advertise_address, Some("10.0.0.11".parse().unwrap()));
    assert!(!format!("{cp:?}").contains(&key));
    root.write("/etc/kube-join-agent/certificate-key", "abc", 0o600);
    let e = root.load().unwrap_err();
    assert!(e.reason.contains("64 hex digits") && !e.to_string().contains("abc\""));
}

#[test]
fn remediation_and_etcd_keys() {
    let s = Root::valid().load().unwrap();
    assert_eq!(s.containerd_restart_after, None);
    assert!(!s.etcd.remove_stale_learners);
    assert_eq!(s.join.node_conflict_wait, Duration::from_secs(300));
    assert!(s.join.node_delete_kubeconfig.is_none());
    assert!(s.join.control_plane.is_none());
    let root = Root::valid();
    root.write(
        "/etc/kube-join-agent/config.d/60-x.toml",
        "[containerd]\nrestart_when_not_ready = true\nrestart_after = \"30s\"\n[etcd]\nremove_stale_learners = true\nlearner_sync_timeout = \"1m\"\n",
        0o644,
    );
    let s = root.load().unwrap();
    assert_eq!(s.containerd_restart_after, Some(Duration::from_secs(30)));
    assert!(s.etcd.remove_stale_learners);
    assert_eq!(s.etcd.learner_sync_timeout, Duration::from_secs(60));
}

/// Loads the valid configuration plus `fragment` as 60-settings.toml; the error, if any.
fn with_settings(fragment: &str) -> (Root, Result<Settings, ConfigError>) {
    let root = Root::valid();
    root.write(
        "/etc/kube-join-agent/config.d/60-settings.toml",
        fragment,
        0o644,
    );
    let result = root.load();
    (root, result)
}

#[test]
fn join_settings_are_read() {
    let root = Root::valid();
    fs::create_dir_all(root.paths.at("/etc/kube-join-agent/patches")).unwrap();
    root.write(
        "/etc/kube-join-agent/config.d/60-settings.toml",
        r#"[join]
ignore_preflight_errors = ["FileExisting-crictl"]
labels = { "node.kubernetes.io/pool" = "gpu", "example.com/rack" = "r1" }
taints = ["dedicated=gpu:NoSchedule", "example.com/special:NoExecute"]
kubelet_extra_args = { "max-pods" = "200" }
cri_socket = "unix:///run/containerd/containerd.sock"
patches = "/etc/kube-join-agent/patches"
skip_phases = ["control-plane-join/mark-control-plane"]
"#,
        0o644,
    );
    let s = root.load().unwrap();
    let r = &s.join.registration;
    assert_eq!(r.ignore_preflight_errors, ["FileExisting-crictl"]);
    assert_eq!(r.labels["node.kubernetes.io/pool"], "gpu");
    let taints: Vec<String> = r
        .taints
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(
        taints,
        ["dedicated=gpu:NoSchedule", "example.com/special:NoExecute"]
    );
    assert_eq!(r.kubelet_extra_args["max-pods"], "200");
    assert_eq!(
        r.patches.as_deref(),
        Some(std::path::Path::new("/etc/kube-join-agent/patches"))
    );
    assert!(r.skips("control-plane-join/mark-control-plane") && !r.skips("preflight"));
    assert_eq!(
        s.containerd_socket,
        PathBuf::from("/run/containerd/containerd.sock")
    );
}

#[test]
fn join_settings_errors_name_file_key_and_rule() {
    for (fragment, key, says) in [
        (
            "[join]\nlabels = { \"node-role.kubernetes.io/worker\" = \"\" }\n",
            "join.labels.\"node-role.kubernetes.io/worker\"",
            "NodeRestriction",
        ),
        (
            "[join]\nlabels = { \"Bad Key\" = \"x\" }\n",
            "join.labels.\"Bad Key\"",
            "name part",
        ),
        (
            "[join]\ntaints = [\"dedicated=gpu\"]\n",
            "join.taints[0]",
            "key[=value]:Effect",
        ),
        (
            "[join]\ntaints = [\"a:NoSchedule\", \"a=b:NoSchedule\"]\n",
            "join.taints[1]",
            "listed twice",
        ),
        (
            "[join]\nkubelet_extra_args = { \"--max-pods\" = \"200\" }\n",
            "join.kubelet_extra_args.\"--max-pods\"",
            "without the leading dashes",
        ),
        (
            "[join]\nkubelet_extra_args = { \"kubeconfig\" = \"/tmp/x\" }\n",
            "join.kubelet_extra_args.\"kubeconfig\"",
            "kubeadm's drop-in sets it",
        ),
        (
            "[join]\nkubelet_extra_args = { \"node-labels\" = \"a=b\" }\n",
            "join.kubelet_extra_args.\"node-labels\"",
            "join.labels",
        ),
        (
            "[join]\nkubelet_extra_args = { \"eviction-hard\" = \"memory.available<100Mi nodefs\" }\n",
            "join.kubelet_extra_args.\"eviction-hard\"",
            "kubeadm-flags.env",
        ),
        (
            "[join]\nignore_preflight_errors = [\"all\", \"Swap\"]\n",
            "join.ignore_preflight_errors",
            "list it alone",
        ),
        (
            "[join]\nignore_preflight_errors = [\"no spaces\"]\n",
            "join.ignore_preflight_errors[0]",
            "preflight check name",
        ),
        (
            "[join]\npatches = \"/nonexistent/patches\"\n",
            "join.patches",
            "is not a directory",
        ),
        (
            "[join]\nskip_phases = [\"kubelet-start\"]\n",
            "join.skip_phases[0]",
            "hands off to kubelet",
        ),
        (
            "[join]\nskip_phases = [\"addon\"]\n",
            "join.skip_phases[0]",
            "not a phase of kubeadm join",
        ),
        (
            "[join]\ncri_socket = \"npipe:////./pipe/containerd\"\n",
            "join.cri_socket",
            "not a CRI socket",
        ),
        (
            "[join]\ncri_socket = \"unix:///run/crio/crio.sock\"\n[containerd]\nsocket = \"/run/containerd/containerd.sock\"\n",
            "join.cri_socket",
            "set one of them",
        ),
    ] {
        let (root, result) = with_settings(fragment);
        let e = result.expect_err(fragment);
        assert_eq!(
            e.file.as_deref(),
            Some(
                root.paths
                    .at("/etc/kube-join-agent/config.d/60-settings.toml")
                    .as_path()
            ),
            "{fragment}: {e}"
        );
        assert_eq!(e.key, key, "{fragment}: {e}");
        assert!(e.reason.contains(says), "{fragment}: {e}");
    }
}

#[test]
fn a_later_file_replaces_a_table_whole() {
    let root = Root::valid();
    root.write(
        "/etc/kube-join-agent/config.d/60-a.toml",
        "[join]\nlabels = { \"example.com/a\" = \"1\", \"example.com/b\" = \"2\" }\n",
        0o644,
    );
    root.write(
        "/etc/kube-join-agent/config.d/70-b.toml",
        "[join]\nlabels = { \"example.com/c\" = \"3\" }\n",
        0o644,
    );
    let s = root.load().unwrap();
    assert_eq!(
        s.join.registration.labels.keys().collect::<Vec<_>>(),
        ["example.com/c"]
    );
}

#[test]
fn metrics_listen_defaults_to_the_socket_only_and_takes_loopback() {
    let s = Root::valid().load().unwrap();
    assert_eq!(s.metrics.listen, None);
    for (text, addr) in [
        ("127.0.0.1:9731", "127.0.0.1:9731"),
        ("127.0.0.53:9000", "127.0.0.53:9000"),
        ("[::1]:9731", "[::1]:9731"),
    ] {
        let (_root, result) = with_settings(&format!("[metrics]\nlisten = \"{text}\"\n"));
        assert_eq!(
            result.unwrap().metrics.listen,
            Some(addr.parse().unwrap()),
            "{text}"
        );
    }
    let (_root, result) = with_settings("[metrics]\nlisten = \"\"\n");
    assert_eq!(result.unwrap().metrics.listen, None);
}

#[test]
fn metrics_listen_refuses_the_network_naming_file_and_key() {
    for (text, says) in [
        ("0.0.0.0:9731", "not a loopback address"),
        ("10.0.0.5:9731", "not a loopback address"),
        ("[::]:9731", "not a loopback address"),
        ("[::ffff:10.0.0.5]:9731", "not a loopback address"),
        ("localhost:9731", "not a name"),
        ("127.0.0.1", "not an address and port"),
        ("::1:9731", "[::1]:9731"),
        ("127.0.0.1:0", "port 0"),
    ] {
        let (root, result) = with_settings(&format!("[metrics]\nlisten = \"{text}\"\n"));
        let e = result.expect_err(text);
        assert_eq!(e.key, "metrics.listen", "{text}: {e}");
        assert_eq!(
            e.file.as_deref(),
            Some(
                root.paths
                    .at("/etc/kube-join-agent/config.d/60-settings.toml")
                    .as_path()
            ),
            "{text}: {e}"
        );
        assert!(e.reason.contains(says), "{text}: {e}");
    }
    let (_root, result) = with_settings("[metrics]\naddress = \"127.0.0.1:9731\"\n");
    assert!(
        result
            .unwrap_err()
            .reason
            .contains("unknown field `address`")
    );
}

#[test]
fn an_absurd_duration_is_an_error_not_a_panic_later() {
    let (_root, result) = with_settings("[timeouts]\njoin_phase = \"500000000000y\"\n");
    let e = result.unwrap_err();
    assert_eq!(e.key, "timeouts.join_phase");
    assert!(e.reason.contains("longest duration"), "{e}");
    let (_root, result) = with_settings("[timeouts]\njoin_phase = \"366days\"\n");
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn fragments_and_secret_files_are_regular_private_and_small() {
    // A FIFO fragment must not block load() (it did).
    let root = Root::valid();
    let fifo = root.paths.at("/etc/kube-join-agent/config.d/70-fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let paths = root.paths.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(load(&paths).map(|_| ()));
    });
    let e = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("load() blocked on a FIFO fragment")
        .unwrap_err();
    assert_eq!(e.file.as_deref(), Some(fifo.as_path()));
    assert!(e.reason.contains("not a regular file"), "{e}");

    // A token file replaced by a symlink to a world-readable file.
    let root = Root::valid();
    let elsewhere = root.write("/tmp/token", "abcdef.0123456789abcdef\n", 0o644);
    fs::remove_file(root.paths.at("/etc/kube-join-agent/token")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.paths.at("/etc/kube-join-agent/token")).unwrap();
    let e = root.load().unwrap_err();
    assert_eq!(e.key, "join.token_file");
    assert!(e.reason.contains("symbolic link"), "{e}");

    // A huge token file is refused unread.
    let root = Root::valid();
    root.write("/etc/kube-join-agent/token", &"a".repeat(1 << 20), 0o600);
    let e = root.load().unwrap_err();
    assert!(
        e.reason.contains("more than such a file can sensibly hold"),
        "{e}"
    );
}
