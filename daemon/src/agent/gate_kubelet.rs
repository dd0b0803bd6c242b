//! Gate kubelet: stop and mask it until its configuration is valid, then tell systemd
//! the agent is ready, so boot goes on and kubelet's own start job finds it masked.

use super::{Agent, Phase};
use crate::failure::Failure;
use tracing::info;

impl Agent {
    /// Closes the gate and sends READY=1.
    pub(super) async fn gate_kubelet(&self) -> Result<(), Failure> {
        let s = &self.settings;
        self.enter(
            Phase::GateKubelet,
            &format!(
                "stopping and masking {} until its configuration is valid",
                s.kubelet_unit
            ),
        );
        let method = self.gate().close().await?;
        info!(
            phase = Phase::GateKubelet.name(),
            "{} gated ({method:?})", s.kubelet_unit
        );
        // READY means "kubelet is gated or handed off": boot continues, kubelet's own
        // start job (ordered after us) finds the unit masked.
        self.ready();
        Ok(())
    }
}
