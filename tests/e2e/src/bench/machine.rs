//! The machine the numbers come from.

use serde_json::{Value, json};
use std::fs;

/// `/proc/loadavg`'s first three fields.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

pub fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The systemd package of the node root (its dpkg status), e.g. `systemd 252.30-1~deb12u2`.
pub fn node_systemd() -> String {
    let version = kja_e2e::paths::node_root().ok().and_then(|root| {
        let status = fs::read_to_string(root.join("var/lib/dpkg/status")).ok()?;
        status.split("\n\n").find_map(|pkg| {
            pkg.lines().any(|l| l == "Package: systemd").then(|| {
                pkg.lines()
                    .find_map(|l| l.strip_prefix("Version: "))
                    .map(str::to_string)
            })?
        })
    });
    match version {
        Some(v) => format!("systemd {v}"),
        None => "systemd (version unknown)".into(),
    }
}

/// What the report says about the machine.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub systemd: String,
    pub load_start: String,
    pub load_end: String,
}

impl Machine {
    pub fn at_start() -> Self {
        Machine {
            cpu: cpu_model(),
            cores: cores(),
            kernel: kernel(),
            systemd: node_systemd(),
            load_start: load_average(),
            load_end: String::new(),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "cpu": self.cpu,
            "cores": self.cores,
            "kernel": self.kernel,
            "systemd_in_node": self.systemd,
            "load_average_start": self.load_start,
            "load_average_end": self.load_end,
        })
    }

    /// Busy: the 1-minute load average at start or end exceeds the cores.
    pub fn busy(&self) -> bool {
        let one = |s: &str| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        one(&self.load_start) > self.cores as f64 || one(&self.load_end) > self.cores as f64
    }
}
