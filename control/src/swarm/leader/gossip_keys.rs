//! Rotating the network-DB keys: on request (`swarm update --rotate-gossip-key`) and, on the
//! leader, whenever the newest key is older than [`ROTATE_EVERY`] (swarmkit rotates every 12 h).
//! Nodes get the keys with their heartbeats; see [`crate::cluster::gossip`] for why rotation
//! never leaves a gap.

use std::time::Duration;

use super::Leader;
use crate::{
    api::Empty,
    clock::now_ms,
    cluster::{ClusterState, Command, gossip::GossipKey},
    error_chain::Chain,
    swarm::error::Error,
};

/// Age of the newest key after which the leader adds a new one.
pub const ROTATE_EVERY: Duration = Duration::from_secs(12 * 60 * 60);

impl Leader {
    /// `swarm update --rotate-gossip-key`.
    pub async fn rotate_gossip_key(&self, _: Empty) -> Result<Empty, Error> {
        self.add_gossip_key().await?;
        Ok(Empty {})
    }

    async fn add_gossip_key(&self) -> Result<(), Error> {
        let command = Command::RotateGossipKey(GossipKey::generate(now_ms()));
        self.propose(command).await
    }

    /// On the leader, from the orchestrator's loop: rotates when the newest key is too old.
    pub(super) async fn rotate_gossip_key_if_due(&self) {
        if !self.read(|state| rotation_due(state, now_ms())) {
            return;
        }
        match self.add_gossip_key().await {
            Ok(()) => tracing::info!("gossip key rotated (periodic)"),
            Err(e) => tracing::warn!(cause = %Chain(&e), "periodic gossip key rotation"),
        }
    }
}

fn rotation_due(state: &ClusterState, now_ms: u64) -> bool {
    let newest = state
        .cluster
        .as_ref()
        .and_then(|c| c.gossip_keys.iter().map(|k| k.created_at_ms).max());
    newest.is_some_and(|t| now_ms.saturating_sub(t) >= ROTATE_EVERY.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterInfo;

    #[test]
    fn rotation_is_due_when_the_newest_key_is_old() {
        let mut state = ClusterState::default();
        assert!(!rotation_due(&state, u64::MAX), "no swarm, no rotation");
        state.cluster = Some(ClusterInfo {
            id: String::new(),
            ca_cert_pem: String::new(),
            ca_key_pem: String::new(),
            worker_secret: String::new(),
            manager_secret: String::new(),
            default_addr_pools: Vec::new(),
            subnet_size: 24,
            heartbeat_period_ms: 1000,
            created_at: 0,
            gossip_keys: vec![GossipKey::generate(1_000), GossipKey::generate(5_000)],
            unlock_key: None,
            version: 1,
            updated_at_ms: 0,
        });
        let period = ROTATE_EVERY.as_millis() as u64;
        assert!(!rotation_due(&state, 5_000 + period - 1));
        assert!(rotation_due(&state, 5_000 + period));
    }
}
