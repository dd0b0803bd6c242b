//! `[join]`: the API server, the token, the CA pins, the node name, the Node-name conflict
//! settings and, for control planes, the certificate key and advertise address.

use super::super::ConfigError;
use super::super::files;
use super::super::fragments::Merged;
use super::super::settings::{CaPin, ControlPlaneSettings, Endpoint, JoinSettings, TokenSource};
use super::values::{duration, validate_node_name};
use crate::paths::Paths;
use crate::secret::{BootstrapToken, Secret};

/// Validates `[join]`.
pub fn join(paths: &Paths, m: &Merged) -> Result<JoinSettings, ConfigError> {
    let api_server = match &m.api_server {
        None => {
            return Err(ConfigError::new(
                None,
                "join.api_server",
                "not set: put `api_server = \"<host>:6443\"` under [join] in /etc/kube-join-agent/config.d/<name>.toml",
            ));
        }
        Some(s) => Endpoint::parse(&s.value)
            .map_err(|reason| ConfigError::new(Some(&s.file), "join.api_server", reason))?,
    };

    let (token, token_source) = match (&m.token, &m.token_file) {
        (Some(t), None) => (
            BootstrapToken::parse(&t.value)
                .map_err(|e| ConfigError::new(Some(&t.file), "join.token", e.to_string()))?,
            TokenSource::Inline(t.file.clone()),
        ),
        (None, Some(f)) => {
            if !f.value.is_absolute() {
                return Err(ConfigError::new(
                    Some(&f.file),
                    "join.token_file",
                    format!("{:?} must be an absolute path", f.value),
                ));
            }
            let real = paths.resolve(&f.value);
            let text = files::read_private(
                &real,
                "join.token_file",
                files::SECRET_LIMIT,
                "the bootstrap token",
            )
            .map_err(|mut e| {
                // Blame the token file itself, and say which fragment named it.
                e.reason = format!("{} (named in {})", e.reason, f.file.display());
                e
            })?;
            (
                BootstrapToken::parse(&text)
                    .map_err(|e| ConfigError::new(Some(&real), "join.token_file", e.to_string()))?,
                TokenSource::File(f.value.clone()),
            )
        }
        (None, None) => {
            return Err(ConfigError::new(
                None,
                "join.token_file",
                "no bootstrap token: set `token_file = \"/etc/kube-join-agent/token\"` (a root-owned 0600 file) under [join]",
            ));
        }
        (Some(_), Some(_)) => unreachable!("merge keeps only one of token and token_file"),
    };

    let mut ca_pins = Vec::new();
    if let Some(s) = &m.ca_cert_hashes {
        for (i, text) in s.value.iter().enumerate() {
            ca_pins.push(CaPin::parse(text).map_err(|reason| {
                ConfigError::new(Some(&s.file), &format!("join.ca_cert_hashes[{i}]"), reason)
            })?);
        }
    }
    let unsafe_skip = m
        .unsafe_skip_ca_verification
        .as_ref()
        .is_some_and(|s| s.value);
    if ca_pins.is_empty() && !unsafe_skip {
        return Err(ConfigError::new(
            m.ca_cert_hashes.as_ref().map(|s| s.file.as_path()),
            "join.ca_cert_hashes",
            "no CA pin: set ca_cert_hashes = [\"sha256:...\"] (from `kubeadm token create --print-join-command` on a control plane); joining without one needs unsafe_skip_ca_verification = true",
        ));
    }

    let node_name = match &m.node_name {
        Some(s) if !s.value.is_empty() => {
            validate_node_name(&s.value)
                .map_err(|reason| ConfigError::new(Some(&s.file), "join.node_name", reason))?;
            s.value.clone()
        }
        _ => {
            let host = nix::unistd::gethostname()
                .map_err(|e| {
                    ConfigError::new(
                        None,
                        "join.node_name",
                        format!("not set, and the hostname cannot be read: {e}"),
                    )
                })?
                .to_string_lossy()
                .to_lowercase();
            validate_node_name(&host).map_err(|reason| {
                ConfigError::new(
                    None,
                    "join.node_name",
                    format!("not set, and the hostname is not a valid node name: {reason}; set node_name under [join]"),
                )
            })?;
            host
        }
    };

    let node_conflict_wait = duration(&m.node_conflict_wait, "join.node_conflict_wait", "5m")?;
    let node_delete_kubeconfig = match &m.node_delete_kubeconfig {
        Some(s) if s.value.as_os_str().is_empty() => None,
        Some(s) if !s.value.is_absolute() => {
            return Err(ConfigError::new(
                Some(&s.file),
                "join.node_delete_kubeconfig",
                format!("{:?} must be an absolute path", s.value),
            ));
        }
        Some(s) => {
            files::read_private(
                &paths.resolve(&s.value),
                "join.node_delete_kubeconfig",
                files::KUBECONFIG_LIMIT,
                "credentials that may delete Nodes",
            )?;
            Some(s.value.clone())
        }
        None => None,
    };
    let control_plane = if m.control_plane.as_ref().is_some_and(|s| s.value) {
        let file = match &m.certificate_key_file {
            Some(s) if s.value.is_absolute() => s,
            Some(s) => {
                return Err(ConfigError::new(
                    Some(&s.file),
                    "join.certificate_key_file",
                    format!("{:?} must be an absolute path", s.value),
                ));
            }
            None => {
                return Err(ConfigError::new(
                    m.control_plane.as_ref().map(|s| s.file.as_path()),
                    "join.certificate_key_file",
                    "a control-plane join needs the certificate key: set certificate_key_file to a root-owned 0600 file holding the key `kubeadm init phase upload-certs --upload-certs` printed",
                ));
            }
        };
        let real = paths.resolve(&file.value);
        let text = files::read_private(
            &real,
            "join.certificate_key_file",
            files::SECRET_LIMIT,
            "the certificate key",
        )?;
        let key = text.trim();
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::new(
                Some(&real),
                "join.certificate_key_file",
                "not a certificate key: expected 64 hex digits (32 bytes, as kubeadm prints it)",
            ));
        }
        let advertise_address = match &m.advertise_address {
            Some(s) if !s.value.is_empty() => Some(s.value.parse().map_err(|_| {
                ConfigError::new(
                    Some(&s.file),
                    "join.advertise_address",
                    format!("{:?} is not an IP address", s.value),
                )
            })?),
            _ => None,
        };
        Some(ControlPlaneSettings {
            certificate_key: Secret::new(key.to_ascii_lowercase()),
            certificate_key_file: file.value.clone(),
            advertise_address,
        })
    } else {
        None
    };
    Ok(JoinSettings {
        api_server,
        token,
        token_source,
        ca_pins,
        node_name,
        unsafe_skip_ca_verification: unsafe_skip,
        node_conflict_wait,
        node_delete_kubeconfig,
        control_plane,
        registration: super::registration::registration(paths, m)?,
    })
}
