//! Remote endpoints: every endpoint another node publishes on a network this node has a
//! sandbox for becomes a static FDB entry (MAC -> that node's VTEP) and a permanent neighbour
//! entry (IP -> MAC) in the sandbox; a withdrawn one (task gone, or its node down) is removed.

use std::sync::Arc;

use shoal_control::netdb::{Change, Endpoint};
use shoal_dataplane::overlay::{Sandbox, add_remote_endpoint, remove_remote_endpoint};
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tracing::{debug, warn};

use super::NodeNetworking;

/// Programs every remote endpoint of `endpoints` into `sandbox` (adds only: used when a
/// sandbox is created or after missed changes).
pub fn program_all(node_id: &str, sandbox: &Sandbox, endpoints: &[Endpoint]) {
    for e in endpoints.iter().filter(|e| e.node_id != node_id) {
        if let Err(err) = add_remote_endpoint(sandbox, e.ip, e.mac, e.vtep) {
            warn!(ip = %e.ip, vtep = %e.vtep, error = %err, "programming a remote endpoint");
        }
    }
}

/// Follows the network DB's changes until it stops. Each change is applied under the local
/// lock, so it cannot interleave with a sandbox being created and filled from a snapshot.
pub async fn follow(networking: Arc<NodeNetworking>, mut changes: Receiver<Change>) {
    loop {
        let change = match changes.recv().await {
            Ok(change) => Some(change),
            Err(RecvError::Lagged(missed)) => {
                warn!(
                    missed,
                    "network DB changes missed: reprogramming every sandbox"
                );
                None
            }
            Err(RecvError::Closed) => return,
        };
        let n = networking.clone();
        let applied = tokio::task::spawn_blocking(move || match change {
            Some(change) => n.apply_change(&change),
            None => n.reprogram_all(),
        })
        .await;
        if let Err(e) = applied {
            warn!(error = %e, "applying a network DB change failed");
        }
    }
}

impl NodeNetworking {
    fn apply_change(&self, change: &Change) {
        let (endpoint, add) = match change {
            Change::Upsert(e) => (e, true),
            Change::Remove(e) => (e, false),
        };
        if endpoint.node_id == self.config.node_id {
            return;
        }
        let local = self.local();
        let Some(net) = local.networks.get(&endpoint.network_id) else {
            return;
        };
        let (ip, mac, vtep) = (endpoint.ip, endpoint.mac, endpoint.vtep);
        debug!(%ip, %vtep, add, network = %net.network.name, "remote endpoint");
        let result = if add {
            add_remote_endpoint(&net.sandbox, ip, mac, vtep)
        } else {
            remove_remote_endpoint(&net.sandbox, ip, mac, vtep)
        };
        if let Err(e) = result {
            warn!(%ip, %vtep, add, error = %e, "programming a remote endpoint");
        }
    }

    fn reprogram_all(&self) {
        let Some(db) = self.db() else {
            return;
        };
        let local = self.local();
        for (id, net) in &local.networks {
            program_all(&self.config.node_id, &net.sandbox, &db.endpoints(id));
        }
    }
}
