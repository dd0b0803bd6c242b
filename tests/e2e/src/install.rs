//! Installs the agent, the fakes and a join configuration into a node before it boots,
//! laid out as the packages would (units in /lib/systemd/system, enabled by symlink in
//! /etc/systemd/system/multi-user.target.wants/, admin config in /etc).

use crate::node::Node;
use crate::paths;
use anyhow::{Context, Result, anyhow, bail};
use std::path::PathBuf;

/// The bootstrap token the fake control plane accepts by default.
pub const DEFAULT_TOKEN: &str = "abcdef.0123456789abcdef";
/// Its secret half, which must never show up in logs or state.
pub const DEFAULT_TOKEN_SECRET: &str = "0123456789abcdef";
/// Where the admin's join fragment goes.
pub const JOIN_CONFIG_PATH: &str = "/etc/kube-join-agent/config.d/50-join.toml";
/// Where the token file goes.
pub const TOKEN_PATH: &str = "/etc/kube-join-agent/token";
/// The fake kubeadm's knob file.
pub const KUBEADM_ENV_PATH: &str = "/etc/fake-k8s/kubeadm.env";
/// The fake kubeadm's invocation log.
pub const KUBEADM_INVOCATIONS_LOG: &str = "/var/lib/fake-k8s/kubeadm-invocations.log";
/// The agent's persistent state.
pub const AGENT_STATE_PATH: &str = "/var/lib/kube-join-agent/state.json";
/// The agent's unit.
pub const AGENT_UNIT: &str = "kube-join-agent.service";

const WANTS: &str = "/etc/systemd/system/multi-user.target.wants";

/// The `[join]` fragment written to [`JOIN_CONFIG_PATH`].
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// `host:port` of the API server (as the node sees it).
    pub api_server: String,
    /// CA pins, `sha256:<hex>`.
    pub ca_cert_hashes: Vec<String>,
    /// Path of the token file (the token itself goes to [`Install::token`]).
    pub token_file: String,
    /// More TOML, deep-merged over the generated tables (so it may add `[join]` keys too).
    pub extra_toml: String,
}

impl JoinConfig {
    /// The fake control plane at 127.0.0.1:6443 with one CA pin.
    pub fn new(pin: &str) -> Self {
        JoinConfig {
            api_server: "127.0.0.1:6443".into(),
            ca_cert_hashes: vec![pin.to_string()],
            token_file: TOKEN_PATH.into(),
            extra_toml: String::new(),
        }
    }

    /// The fragment's text.
    pub fn render(&self) -> Result<String> {
        let mut join = toml::Table::new();
        join.insert("api_server".into(), self.api_server.clone().into());
        join.insert("token_file".into(), self.token_file.clone().into());
        join.insert(
            "ca_cert_hashes".into(),
            toml::Value::Array(
                self.ca_cert_hashes
                    .iter()
                    .map(|h| h.clone().into())
                    .collect(),
            ),
        );
        let mut doc = toml::Table::new();
        doc.insert("join".into(), toml::Value::Table(join));
        if !self.extra_toml.trim().is_empty() {
            let extra: toml::Table = self
                .extra_toml
                .parse()
                .with_context(|| format!("extra TOML does not parse:\n{}", self.extra_toml))?;
            merge(&mut doc, extra);
        }
        Ok(format!(
            "# Written by the kja-e2e harness.\n{}",
            toml::to_string(&doc)?
        ))
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// One extra file to put into the node.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    /// Absolute path in the node.
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Mode bits.
    pub mode: u32,
}

/// What to install. Start from [`Install::agent`] or [`Install::fakes_only`].
#[derive(Debug, Clone)]
pub struct Install {
    /// The agent binary, its unit (enabled) and its default config.
    pub agent: bool,
    /// Agent binary on the host; default [`paths::agent_bin`].
    pub agent_bin: Option<PathBuf>,
    /// Agent unit file on the host; default [`paths::agent_unit`].
    pub agent_unit: Option<PathBuf>,
    /// Default config on the host; default [`paths::default_config`].
    pub default_config: Option<PathBuf>,
    /// The systemd generator on the host; default this tree's. `Some(None)`: none (an
    /// agent from before it existed).
    pub generator: Option<Option<PathBuf>>,
    /// fake kubeadm and kubelet, kubelet.service (enabled) and kubeadm's drop-in.
    pub fakes: bool,
    /// containerd.service enabled at boot (it is in the cached root).
    pub containerd_enabled: bool,
    /// Contents of the fake kubeadm's knob file.
    pub kubeadm_env: Option<String>,
    /// The admin join fragment.
    pub join: Option<JoinConfig>,
    /// Token file contents (mode 0600, root); `None` writes no token file.
    pub token: Option<String>,
    /// More files.
    pub files: Vec<ExtraFile>,
}

impl Install {
    /// Agent + fakes + containerd enabled + a join fragment pinning `pin` + the default token.
    pub fn agent(pin: &str) -> Self {
        Install {
            agent: true,
            join: Some(JoinConfig::new(pin)),
            token: Some(format!("{DEFAULT_TOKEN}\n")),
            ..Install::fakes_only()
        }
    }

    /// Only the fakes (kubeadm, kubelet and its units), containerd enabled; no agent.
    pub fn fakes_only() -> Self {
        Install {
            agent: false,
            agent_bin: None,
            agent_unit: None,
            default_config: None,
            generator: None,
            fakes: true,
            containerd_enabled: true,
            kubeadm_env: None,
            join: None,
            token: None,
            files: Vec::new(),
        }
    }

    /// Enables or disables containerd at boot.
    pub fn containerd_enabled(mut self, enabled: bool) -> Self {
        self.containerd_enabled = enabled;
        self
    }

    /// Sets the fake kubeadm's knob file.
    pub fn kubeadm_env(mut self, env: &str) -> Self {
        self.kubeadm_env = Some(env.to_string());
        self
    }

    /// Adds TOML to the join fragment (deep-merged).
    pub fn extra_toml(mut self, toml: &str) -> Self {
        if let Some(join) = &mut self.join {
            join.extra_toml.push_str(toml);
            join.extra_toml.push('\n');
        }
        self
    }

    /// Adds a file.
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push(ExtraFile {
            path: path.to_string(),
            contents: contents.into(),
            mode,
        });
        self
    }
}

const FAKES_HINT: &str = "build the fakes first: cargo build -p kja-fakes";

/// Installs `what` into the node's tree (before boot; after boot a daemon-reload is needed).
pub fn install(node: &Node, what: &Install) -> Result<()> {
    if what.agent {
        let bin = what.agent_bin.clone().unwrap_or_else(paths::agent_bin);
        paths::require_file(
            &bin,
            "build the agent first: cargo build -p kube-join-agent",
        )?;
        node.copy_in(&bin, "/usr/bin/kube-join-agent", 0o755)?;

        let unit = what.agent_unit.clone().unwrap_or_else(paths::agent_unit);
        paths::require_file(
            &unit,
            "the agent's unit is missing (set KJA_AGENT_UNIT to use another)",
        )?;
        node.copy_in(&unit, "/lib/systemd/system/kube-join-agent.service", 0o644)?;
        // As the packages install it: kubelet gated from the first moment of the boot.
        let generator = what.generator.clone().unwrap_or_else(|| {
            Some(paths::workspace_root().join("systemd/kube-join-agent-generator"))
        });
        if let Some(generator) = generator {
            node.copy_in(
                &generator,
                "/lib/systemd/system-generators/kube-join-agent-generator",
                0o755,
            )?;
        }
        node.symlink(
            "/lib/systemd/system/kube-join-agent.service",
            &format!("{WANTS}/{AGENT_UNIT}"),
        )?;

        let config = what
            .default_config
            .clone()
            .unwrap_or_else(paths::default_config);
        paths::require_file(&config, "the default config is missing")?;
        node.copy_in(
            &config,
            "/usr/lib/kube-join-agent/config.d/10-defaults.toml",
            0o644,
        )?;
    }
    if what.fakes {
        // kubeadm's preflight wants crictl on PATH (FileExisting-crictl) and runs
        // `crictl info` for its CRI check; the node image has no crictl of its own.
        for (bin, dest) in [
            ("fake-kubeadm", "/usr/bin/kubeadm"),
            ("fake-kubelet", "/usr/bin/kubelet"),
            ("fake-crictl", "/usr/bin/crictl"),
        ] {
            let src = paths::fake_bin(bin);
            paths::require_file(&src, FAKES_HINT)?;
            node.copy_in(&src, dest, 0o755)?;
        }
        let units = paths::fake_units_dir();
        let kubelet_unit = units.join("kubelet.service");
        paths::require_file(&kubelet_unit, FAKES_HINT)?;
        node.copy_in(&kubelet_unit, "/lib/systemd/system/kubelet.service", 0o644)?;
        node.symlink(
            "/lib/systemd/system/kubelet.service",
            &format!("{WANTS}/kubelet.service"),
        )?;
        let dropin = units.join("10-kubeadm.conf");
        paths::require_file(&dropin, FAKES_HINT)?;
        node.copy_in(
            &dropin,
            "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
            0o644,
        )?;
    }
    if what.containerd_enabled {
        node.symlink(
            "/lib/systemd/system/containerd.service",
            &format!("{WANTS}/containerd.service"),
        )?;
    } else {
        node.remove_file(&format!("{WANTS}/containerd.service"))?;
    }
    if let Some(env) = &what.kubeadm_env {
        node.write_file(KUBEADM_ENV_PATH, env.as_bytes(), 0o644)?;
    }
    if let Some(join) = &what.join {
        node.write_file(JOIN_CONFIG_PATH, join.render()?.as_bytes(), 0o644)?;
    }
    if let Some(token) = &what.token {
        let path = what
            .join
            .as_ref()
            .map(|j| j.token_file.as_str())
            .unwrap_or(TOKEN_PATH);
        node.write_file(path, token.as_bytes(), 0o600)?;
    }
    for f in &what.files {
        if !f.path.starts_with('/') {
            bail!("extra file path {:?} must be absolute", f.path);
        }
        node.write_file(&f.path, &f.contents, f.mode)
            .map_err(|e| anyhow!("installing {}: {e:#}", f.path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_fragment_has_the_contract_keys_and_merges_extra() {
        let mut j = JoinConfig::new("sha256:00ff");
        j.extra_toml = "[join]\nnode_name = \"n1\"\n[retry]\nmax_attempts = 2\n".into();
        let text = j.render().unwrap();
        let doc: toml::Table = text.parse().unwrap();
        let join = doc["join"].as_table().unwrap();
        assert_eq!(join["api_server"].as_str(), Some("127.0.0.1:6443"));
        assert_eq!(join["token_file"].as_str(), Some(TOKEN_PATH));
        assert_eq!(
            join["ca_cert_hashes"].as_array().unwrap()[0].as_str(),
            Some("sha256:00ff")
        );
        assert_eq!(join["node_name"].as_str(), Some("n1"));
        assert_eq!(doc["retry"]["max_attempts"].as_integer(), Some(2));
    }
}
