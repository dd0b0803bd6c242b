//! The sections besides `[join]`: `[etcd]`, `[kubeadm]`, `[retry]`, `[timeouts]`,
//! `[containerd]`, `[kubelet]`, `[preflight]`, `[metrics]`.

use super::super::ConfigError;
use super::super::fragments::{Merged, Sourced};
use super::super::settings::{
    CHECK_NAMES, Endpoint, EtcdSettings, MetricsSettings, PreflightSettings, RetrySettings,
    Timeouts,
};
use super::values::{duration, positive};
use std::path::PathBuf;
use std::time::Duration;

/// `[containerd]`: the socket, how long to wait for it, and the optional restart.
pub struct Containerd {
    pub socket: PathBuf,
    pub ready_timeout: Duration,
    pub restart_after: Option<Duration>,
}

/// Validates `[containerd]`.
pub fn containerd(m: &Merged) -> Result<Containerd, ConfigError> {
    let containerd_restart_after = if m.restart_when_not_ready.as_ref().is_some_and(|s| s.value) {
        Some(duration(
            &m.restart_after,
            "containerd.restart_after",
            "2m",
        )?)
    } else {
        None
    };
    let containerd_socket = match &m.containerd_socket {
        Some(s) if !s.value.is_absolute() => {
            return Err(ConfigError::new(
                Some(&s.file),
                "containerd.socket",
                format!("{:?} must be an absolute path", s.value),
            ));
        }
        Some(s) => s.value.clone(),
        None => PathBuf::from("/run/containerd/containerd.sock"),
    };
    // `[join] cri_socket`, kubeadm's name for it (nodeRegistration.criSocket), says the
    // same thing: one socket for the agent's CRI check and for kubeadm.
    let containerd_socket = match &m.cri_socket {
        None => containerd_socket,
        Some(s) => {
            let path = cri_socket_path(&s.value).ok_or_else(|| {
                ConfigError::new(
                    Some(&s.file),
                    "join.cri_socket",
                    format!("{:?} is not a CRI socket: write \"unix:///run/containerd/containerd.sock\" or the absolute path", s.value),
                )
            })?;
            if let Some(c) = &m.containerd_socket
                && c.value != path
            {
                return Err(ConfigError::new(
                    Some(&s.file),
                    "join.cri_socket",
                    format!(
                        "{:?} differs from containerd.socket ({}, set in {}): set one of them",
                        s.value,
                        c.value.display(),
                        c.file.display()
                    ),
                ));
            }
            path
        }
    };
    let containerd_ready_timeout = duration(
        &m.containerd_ready_timeout,
        "containerd.ready_timeout",
        "5m",
    )?;

    Ok(Containerd {
        socket: containerd_socket,
        ready_timeout: containerd_ready_timeout,
        restart_after: containerd_restart_after,
    })
}

/// Validates `[etcd]`; endpoints default to the API server's host.
pub fn etcd(m: &Merged, api_server: &Endpoint) -> Result<EtcdSettings, ConfigError> {
    let mut endpoints = Vec::new();
    if let Some(s) = &m.etcd_endpoints {
        for (i, url) in s.value.iter().enumerate() {
            let ok = url
                .strip_prefix("https://")
                .and_then(|rest| Endpoint::parse(rest.trim_end_matches('/')).ok())
                .is_some();
            if !ok {
                return Err(ConfigError::new(
                    Some(&s.file),
                    &format!("etcd.endpoints[{i}]"),
                    format!("{url:?} is not an etcd client URL like \"https://10.0.0.10:2379\""),
                ));
            }
            endpoints.push(url.trim_end_matches('/').to_string());
        }
    }
    if endpoints.is_empty() {
        endpoints.push(format!("https://{}:2379", api_server.url_host()));
    }
    let etcd = EtcdSettings {
        endpoints,
        remove_stale_learners: m.remove_stale_learners.as_ref().is_some_and(|s| s.value),
        healthy_timeout: duration(&m.etcd_healthy_timeout, "etcd.healthy_timeout", "5m")?,
        learner_sync_timeout: duration(&m.learner_sync_timeout, "etcd.learner_sync_timeout", "5m")?,
    };

    Ok(etcd)
}

/// `[kubeadm] path`.
pub fn kubeadm_path(m: &Merged) -> PathBuf {
    m.kubeadm_path
        .as_ref()
        .map(|s| s.value.clone())
        .unwrap_or_else(|| PathBuf::from("kubeadm"))
}

/// Validates `[retry]`.
pub fn retry(m: &Merged) -> Result<RetrySettings, ConfigError> {
    let max_attempts = positive(&m.max_attempts, "retry.max_attempts", 5, 1000)? as u32;
    let initial_backoff = duration(&m.initial_backoff, "retry.initial_backoff", "5s")?;
    let max_backoff = duration(&m.max_backoff, "retry.max_backoff", "5m")?;
    if max_backoff < initial_backoff {
        // Blame whichever of the two was set last: that file made them disagree.
        let position = |f: &Option<Sourced<String>>| {
            f.as_ref()
                .and_then(|s| m.files.iter().position(|p| *p == s.file))
        };
        let (key, file) = if position(&m.initial_backoff) >= position(&m.max_backoff) {
            ("retry.initial_backoff", m.initial_backoff.as_ref())
        } else {
            ("retry.max_backoff", m.max_backoff.as_ref())
        };
        return Err(ConfigError::new(
            file.map(|s| s.file.as_path()),
            key,
            format!(
                "retry.initial_backoff ({}) is longer than retry.max_backoff ({})",
                humantime::format_duration(initial_backoff),
                humantime::format_duration(max_backoff)
            ),
        ));
    }

    Ok(RetrySettings {
        max_attempts,
        initial_backoff,
        max_backoff,
    })
}

/// Validates `[timeouts]`.
pub fn timeouts(m: &Merged) -> Result<Timeouts, ConfigError> {
    let timeouts = Timeouts {
        discovery: duration(&m.discovery, "timeouts.discovery", "5m")?,
        join_phase: duration(&m.join_phase, "timeouts.join_phase", "10m")?,
        no_progress: duration(&m.no_progress, "timeouts.no_progress", "3m")?,
        tls_bootstrap: duration(&m.tls_bootstrap, "timeouts.tls_bootstrap", "5m")?,
        node_registration: duration(&m.node_registration, "timeouts.node_registration", "2m")?,
    };

    Ok(timeouts)
}

/// Validates `[kubelet] unit`.
pub fn kubelet_unit(m: &Merged) -> Result<String, ConfigError> {
    let kubelet_unit = match &m.kubelet_unit {
        Some(s) if !s.value.ends_with(".service") || s.value.contains('/') => {
            return Err(ConfigError::new(
                Some(&s.file),
                "kubelet.unit",
                format!(
                    "{:?} is not a service unit name (like \"kubelet.service\")",
                    s.value
                ),
            ));
        }
        Some(s) => s.value.clone(),
        None => "kubelet.service".to_string(),
    };

    Ok(kubelet_unit)
}

/// Validates `[preflight]`.
pub fn preflight(m: &Merged) -> Result<PreflightSettings, ConfigError> {
    let warn_only = match &m.warn_only {
        None => Vec::new(),
        Some(s) => {
            for name in &s.value {
                if !CHECK_NAMES.contains(&name.as_str()) {
                    return Err(ConfigError::new(
                        Some(&s.file),
                        "preflight.warn_only",
                        format!(
                            "unknown check {name:?}; known checks: {}",
                            CHECK_NAMES.join(", ")
                        ),
                    ));
                }
            }
            s.value.clone()
        }
    };
    let preflight = PreflightSettings {
        min_memory_mib: positive(&m.min_memory_mib, "preflight.min_memory_mib", 1024, 1 << 30)?,
        min_disk_free_mib: positive(
            &m.min_disk_free_mib,
            "preflight.min_disk_free_mib",
            2048,
            1 << 40,
        )?,
        warn_only,
    };

    Ok(preflight)
}

/// Validates `[metrics] listen`: empty for the Unix socket only, else a loopback
/// `address:port`. The metrics are about this node, for a scraper running on it: the
/// agent opens no port to the network.
pub fn metrics(m: &Merged) -> Result<MetricsSettings, ConfigError> {
    let Some(s) = m.metrics_listen.as_ref().filter(|s| !s.value.is_empty()) else {
        return Ok(MetricsSettings { listen: None });
    };
    let key = "metrics.listen";
    let addr: std::net::SocketAddr = s.value.parse().map_err(|_| {
        ConfigError::new(
            Some(&s.file),
            key,
            format!(
                "{:?} is not an address and port: write \"127.0.0.1:9731\" or \"[::1]:9731\" (an IP address, not a name), or \"\" for the Unix socket only",
                s.value
            ),
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(ConfigError::new(
            Some(&s.file),
            key,
            format!(
                "{} is not a loopback address: the metrics are for this node, not the network; use 127.0.0.1 or [::1] (or the Unix socket /run/kube-join-agent/metrics.sock)",
                addr.ip()
            ),
        ));
    }
    if addr.port() == 0 {
        return Err(ConfigError::new(
            Some(&s.file),
            key,
            "port 0 picks a random port no scraper would know: choose one, like 9731",
        ));
    }
    Ok(MetricsSettings { listen: Some(addr) })
}

/// `unix:///path` or `/path`; other schemes (npipe, tcp) are not for Linux nodes.
fn cri_socket_path(text: &str) -> Option<PathBuf> {
    let path = text.strip_prefix("unix://").unwrap_or(text);
    let path = PathBuf::from(path);
    (path.is_absolute() && !text.contains(char::is_whitespace)).then_some(path)
}
