//! The swarm's settings on the leader: shown with their version (`GET /swarm`, `info`), and
//! changed at the version the caller read (`swarm update`). The changes themselves are the
//! commands each feature proposes (`SetCertExpiry` here; autolock, join tokens and the root CA
//! in their files), each in a [`Command::Settings`] that bumps the version.

use tracing::info;

use super::{Leader, ca::check_cert_expiry, nodes::cluster_of};
use crate::{
    api::{Empty, SwarmInfo, UpdateSwarmRequest},
    cluster::Command,
    pki,
    swarm::error::Error,
};

impl Leader {
    /// `swarm update --cert-expiry`, at the version the caller read (if it says): a change
    /// is checked against it when it applies; without one, against the state here now.
    pub async fn update_swarm(&self, request: UpdateSwarmRequest) -> Result<Empty, Error> {
        let expected = request.expected_version;
        match request.cert_expiry_secs {
            Some(secs) => {
                check_cert_expiry(secs)?;
                self.propose_setting(Command::SetCertExpiry { secs }, expected)
                    .await?;
                info!(secs, "node certificate expiry changed");
            }
            None => {
                let version = self.read(|state| Ok::<_, Error>(cluster_of(state)?.version))?;
                if expected.is_some_and(|v| v != version) {
                    return Err(Error::OutOfSequence);
                }
            }
        }
        Ok(Empty {})
    }

    /// The swarm's settings as the store holds them.
    pub async fn inspect_swarm(&self, _: Empty) -> Result<SwarmInfo, Error> {
        self.read(|state| {
            let cluster = cluster_of(state)?;
            let created_at_ms = cluster.created_at * 1000;
            Ok(SwarmInfo {
                id: cluster.id.clone(),
                version: cluster.version,
                created_at_ms,
                // A swarm whose settings never changed since (or from before the field) reports
                // its creation.
                updated_at_ms: cluster.updated_at_ms.max(created_at_ms),
                default_addr_pools: cluster.default_addr_pools.clone(),
                subnet_size: u32::from(cluster.subnet_size),
                heartbeat_period_ms: cluster.heartbeat_period_ms,
                cert_expiry_secs: state
                    .ca
                    .cert_expiry(pki::DEFAULT_NODE_CERT_EXPIRY)
                    .as_secs(),
                autolock: cluster.unlock_key.is_some(),
            })
        })
    }
}
