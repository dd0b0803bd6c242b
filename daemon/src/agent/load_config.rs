//! Load config: read, merge and validate the fragments; a bad configuration stops the
//! agent with EX_CONFIG before it changes anything on the node.

use super::{Agent, Exit, Phase};
use crate::config::{self, ConfigError, Settings};
use crate::paths::Paths;
use crate::state::{self, State};
use crate::systemd::Systemd;
use crate::telemetry;
use std::sync::Mutex;
use tracing::{error, info, warn};

/// `kube-join-agent run`.
pub async fn run(paths: Paths) -> Exit {
    super::remove_secret_files(&paths);
    let settings = match load_settings(&paths) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    crate::metrics::serve(&paths, &settings.metrics);
    let systemd = match Systemd::connect().await {
        Ok(s) => s,
        Err(e) => {
            error!(failure = "local", "cannot talk to systemd: {e}");
            return Exit::Restart;
        }
    };
    let mut state = State::load(&paths.state_file()).unwrap_or_else(|e| {
        warn!("{e}");
        State::default()
    });
    // Attempts count per boot and per configuration: a reboot or a fixed config (a new
    // token) deserves a fresh budget; a crash loop within one boot does not.
    let boot = state::boot_id(&paths.proc());
    let stamp = config_stamp(&settings);
    if state.boot_id != boot || state.config_fingerprint != stamp {
        state.attempt = 0;
        state.boot_id = boot;
        state.config_fingerprint = stamp;
    }
    state.node_name = settings.join.node_name.clone();
    // Logged once the configuration is read, so that it carries the node name and the
    // attempt about to start like every other phase line.
    info!(
        phase = Phase::LoadConfig.name(),
        attempt = state.attempt + 1,
        node_name = %settings.join.node_name,
        "phase load-config: {} file(s) read: {}",
        settings.files.len(),
        settings.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    let agent = Agent {
        paths,
        settings,
        systemd,
        state: Mutex::new(state),
        ready_sent: Mutex::new(false),
        started: std::time::Instant::now(),
    };
    telemetry::spawn_watchdog();
    agent.main_loop().await
}

fn load_settings(paths: &Paths) -> Result<Settings, Exit> {
    config::load(paths).map_err(|e: ConfigError| {
        error!(
            phase = Phase::LoadConfig.name(),
            failure = "config-invalid",
            "configuration error: {e}; nothing was changed on this node{}",
            held_by_generator(paths)
        );
        telemetry::notify_status(&format!("configuration error: {e}"));
        Exit::Config
    })
}

/// What a stopped agent leaves of the gate: at boot the agent's generator masks kubelet
/// (the default unit name: the configuration that might name another is what failed)
/// while the agent is enabled and the node has no kubelet.conf, so kubelet stays held,
/// as it should without its configuration, and the operator is told how to go on.
fn held_by_generator(paths: &Paths) -> &'static str {
    let mask = paths.generator_early().join("kubelet.service");
    if mask
        .read_link()
        .is_ok_and(|t| t == std::path::Path::new("/dev/null"))
    {
        "; kubelet stays held by the agent's generator (masked since boot): fix the file and \
         `systemctl restart kube-join-agent`, or let kubelet run without the agent with \
         `systemctl disable kube-join-agent && systemctl daemon-reload`"
    } else {
        ""
    }
}

fn config_stamp(settings: &Settings) -> String {
    format!("{}-{}", settings.fingerprint, settings.join.token.id())
}

impl Agent {
    /// Rereads the configuration before the next attempt: a new token or a fixed value
    /// dropped in while the agent waited is used without a restart, and a changed
    /// configuration (a new token) gets a fresh retry budget.
    pub(super) fn reload_settings(&mut self) -> Result<(), Exit> {
        self.settings = load_settings(&self.paths)?;
        let stamp = config_stamp(&self.settings);
        let mut state = self.state.lock().expect("state lock");
        if state.config_fingerprint != stamp {
            state.attempt = 0;
            state.config_fingerprint = stamp;
        }
        Ok(())
    }
}
