//! What every phase uses: the phase line (journal, `STATUS=`, state file), READY=1,
//! the attempt counter, the kubelet gate, and the secrets kubeadm's output must not show.

use super::{Agent, Phase};
use crate::kubelet::Gate;
use crate::telemetry;
use tracing::{info, warn};

impl Agent {
    pub(super) fn bump_attempt(&self) -> u32 {
        let mut state = self.state.lock().expect("state lock");
        state.next_attempt()
    }

    /// The attempt goes on past already-joined: it is one of the join's attempts.
    pub(super) fn attempt_began(&self) {
        let mut state = self.state.lock().expect("state lock");
        let attempt = state.attempt;
        state.attempt_started(attempt);
    }

    /// Records how the attempt under way ended (`None`: it did not fail), and saves.
    pub(super) fn attempt_ended(&self, failure: Option<(&str, String)>) {
        let mut state = self.state.lock().expect("state lock");
        state.attempt_ended(failure);
        if let Err(e) = state.save(&self.paths.state_file()) {
            warn!("cannot save state: {e}");
        }
    }

    /// Logs the phase line, updates STATUS= and the state file.
    pub(super) fn enter(&self, phase: Phase, message: &str) {
        self.announce(phase, message);
        self.record_phase(phase);
    }

    /// The phase line and STATUS= (quick: no disk sync).
    pub(super) fn announce(&self, phase: Phase, message: &str) {
        crate::metrics::phase_entered(phase.name());
        info!(phase = phase.name(), "phase {}: {message}", phase.name());
        telemetry::notify_status(&format!("{}: {message}", phase.name()));
    }

    /// The phase in the state file (written atomically, synced).
    pub(super) fn record_phase(&self, phase: Phase) {
        let mut state = self.state.lock().expect("state lock");
        state.phase = phase.name().to_string();
        state.phase_since = crate::state::now_rfc3339();
        if let Err(e) = state.save(&self.paths.state_file()) {
            warn!("cannot save state: {e}");
        }
    }

    pub(super) fn ready(&self) {
        let mut sent = self.ready_sent.lock().expect("ready lock");
        if !*sent {
            telemetry::notify_ready();
            *sent = true;
        }
    }

    /// Everything kubeadm's output must never show.
    pub(super) fn secrets(&self) -> Vec<&crate::secret::Secret> {
        let mut secrets = vec![self.settings.join.token.secret()];
        if let Some(cp) = &self.settings.join.control_plane {
            secrets.push(&cp.certificate_key);
        }
        secrets
    }

    pub(super) fn gate(&self) -> Gate<'_> {
        Gate::new(&self.systemd, &self.paths, &self.settings.kubelet_unit)
    }
}
