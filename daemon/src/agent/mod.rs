//! The join, as a state machine (architecture.md, "The join"), one file per phase:
//!
//! | phase | file | hands the next |
//! | --- | --- | --- |
//! | load-config | load_config.rs | `Settings` |
//! | already-joined | already_joined.rs | joined: start kubelet, verify, serve |
//! | gate-kubelet | gate_kubelet.rs | kubelet stopped and masked; READY=1 |
//! | preflight | preflight.rs | kubeadm's version |
//! | discovery | discovery.rs, node_name.rs | the verified cluster CA (`ClusterInfo`) |
//! | join, handoff | join.rs, handoff.rs | kubeadm done, kubelet started |
//! | tls-bootstrap | tls_bootstrap.rs | the kubelet's credentials |
//! | verify | verify.rs | the Node exists |
//! | serve | serve.rs | |
//!
//! Every phase logs one journal line (`PHASE=`, with `ATTEMPT=` and `NODE_NAME=` from
//! the attempt span), updates `STATUS=` and the state file (context.rs). Every failure
//! goes to policy.rs: classified, logged once with its cause and fix (`FAILURE=`),
//! kubelet gated again, then retry after a backoff, wait for a new token, or stop.

mod already_joined;
mod context;
pub mod discovery;
mod gate_kubelet;
mod handoff;
mod join;
mod load_config;
pub mod node_name;
mod phase;
mod policy;
mod preflight;
pub mod record;
mod serve;
mod tls_bootstrap;
mod verify;
pub mod wait;

pub use join::remove_secret_files;
pub use load_config::run;
pub use phase::{Exit, Phase};

use crate::config::Settings;
use crate::failure::Failure;
use crate::kubelet::KubeletCredentials;
use crate::paths::Paths;
use crate::state::State;
use crate::systemd::Systemd;
use std::sync::Mutex;
use tracing::Instrument;

/// The running agent.
pub struct Agent {
    paths: Paths,
    settings: Settings,
    systemd: Systemd,
    state: Mutex<State>,
    ready_sent: Mutex<bool>,
    /// When the agent started: a join's duration counts from here.
    started: std::time::Instant,
}

/// How an attempt ends without a join.
pub enum Stop {
    /// A phase failed: the failure policy (policy.rs) decides what next.
    Failed(Failure),
    /// The configuration changed while a phase waited: start over with it.
    Reconfigured(Box<Settings>),
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Self {
        Stop::Failed(failure)
    }
}

/// A completed join.
struct Joined {
    creds: KubeletCredentials,
    ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Joined by this run (kubeadm ran), not found joined at start.
    fresh: bool,
}

/// Said whenever a wait ends because the configuration changed under it.
fn log_reconfigured(settings: &Settings) {
    tracing::info!(
        "the configuration changed while waiting ({} file(s), token id \"{}\"): starting over with it",
        settings.files.len(),
        settings.join.token.id()
    );
}

impl Agent {
    /// Attempts until joined (then serve) or until the failure policy stops the agent.
    async fn main_loop(mut self) -> Exit {
        loop {
            let attempt = self.bump_attempt();
            let span =
                tracing::info_span!("attempt", attempt, node_name = %self.settings.join.node_name);
            match self.attempt().instrument(span.clone()).await {
                Ok(joined) => return self.serve(joined).instrument(span).await,
                Err(Stop::Failed(failure)) => {
                    if let Some(exit) = self.after_failure(failure, attempt).instrument(span).await
                    {
                        return exit;
                    }
                }
                Err(Stop::Reconfigured(settings)) => {
                    log_reconfigured(&settings);
                    self.attempt_ended(None);
                }
            }
            if let Err(exit) = self.reload_settings() {
                return exit;
            }
        }
    }

    /// One attempt at the runbook; each phase hands the next what it established.
    async fn attempt(&self) -> Result<Joined, Stop> {
        if let Some(joined) = self.already_joined()? {
            return Ok(self.start_joined(joined).await?);
        }
        self.attempt_began();
        self.gate_kubelet().await?;
        let first_look = discovery::FirstLook::start(&self.settings);
        let tools = self.preflight().await?;
        let cluster = self.discovery(first_look).await?;
        // One client, one TLS connection, for what the bootstrap token may read; the
        // skew check and the Node-name check ask at once, and either one's failure
        // ends the other.
        let api = self.bootstrap_client(&cluster)?;
        tokio::try_join!(
            async { Ok(self.version_skew(&tools, &api).await?) },
            self.settle_node_name(&api)
        )?;
        self.join(tools.kubeadm, &cluster).await?;
        let creds = self.tls_bootstrap(&cluster).await?;
        let joined = Joined {
            creds,
            ca: cluster.ca,
            fresh: true,
        };
        Ok(self.verify(joined).await?)
    }
}
