//! The phases of the join, named as the architecture and the journal name them, and
//! how the daemon ends.

/// The phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Parse, merge, validate the configuration.
    LoadConfig,
    /// Is there a valid kubelet.conf already?
    AlreadyJoined,
    /// Stop and mask kubelet.
    GateKubelet,
    /// Host, kernel, tools, runtime, network.
    Preflight,
    /// cluster-info, JWS, CA pin.
    Discovery,
    /// kubeadm join under supervision.
    Join,
    /// kubeadm's kubelet files are valid: unmask and start kubelet.
    Handoff,
    /// Wait for kubelet.conf and the client certificate.
    TlsBootstrap,
    /// The Node exists in the API server.
    Verify,
    /// Joined: stay running, watch the client certificate.
    Serve,
}

impl Phase {
    /// Every phase, in the runbook's order.
    pub const ALL: [Phase; 10] = [
        Phase::LoadConfig,
        Phase::AlreadyJoined,
        Phase::GateKubelet,
        Phase::Preflight,
        Phase::Discovery,
        Phase::Join,
        Phase::Handoff,
        Phase::TlsBootstrap,
        Phase::Verify,
        Phase::Serve,
    ];

    /// The name used in `PHASE=`, the state file and `STATUS=`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::LoadConfig => "load-config",
            Phase::AlreadyJoined => "already-joined",
            Phase::GateKubelet => "gate-kubelet",
            Phase::Preflight => "preflight",
            Phase::Discovery => "discovery",
            Phase::Join => "join",
            Phase::Handoff => "handoff",
            Phase::TlsBootstrap => "tls-bootstrap",
            Phase::Verify => "verify",
            Phase::Serve => "serve",
        }
    }
}

/// How the daemon ends (the unit's RestartPreventExitStatus lists 69 and 78).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// EX_CONFIG: bad configuration, or a failure only the operator can fix.
    Config = 78,
    /// EX_UNAVAILABLE: the retry budget is spent.
    GaveUp = 69,
    /// A local error (D-Bus unavailable): let systemd restart the agent.
    Restart = 1,
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_named_as_the_architecture_lists_them() {
        let names: Vec<_> = Phase::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "load-config",
                "already-joined",
                "gate-kubelet",
                "preflight",
                "discovery",
                "join",
                "handoff",
                "tls-bootstrap",
                "verify",
                "serve"
            ]
        );
        assert_eq!(Exit::Config as i32, 78);
    }
}
