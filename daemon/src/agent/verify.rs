//! Verify: with the kubelet's own credentials, the Node exists (and whether it is Ready).

use super::{Agent, Joined, Phase};
use crate::failure::Failure;
use crate::node;
use tracing::info;

impl Agent {
    pub(super) async fn verify(&self, joined: Joined) -> Result<Joined, Failure> {
        let s = &self.settings;
        self.enter(
            Phase::Verify,
            &format!(
                "checking that Node \"{}\" exists, with the kubelet's credentials",
                s.join.node_name
            ),
        );
        let status = node::wait_for_node(
            &joined.creds,
            &joined.ca,
            &s.join.node_name,
            s.timeouts.node_registration,
        )
        .await?;
        match status.ready.as_str() {
            "True" => info!(
                phase = Phase::Verify.name(),
                "Node \"{}\" is registered and Ready", s.join.node_name
            ),
            other => info!(
                phase = Phase::Verify.name(),
                "Node \"{}\" is registered, Ready={} ({}); a node stays NotReady until a pod network (CNI) is installed",
                s.join.node_name,
                if other.is_empty() {
                    "not reported yet"
                } else {
                    other
                },
                status.detail
            ),
        }
        Ok(joined)
    }
}
