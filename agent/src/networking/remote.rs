//! Remote endpoints: every endpoint another node publishes on a network this node has a
//! sandbox for becomes a static FDB entry (MAC -> that node's VTEP) and a permanent neighbour
//! entry (IP -> MAC) in the sandbox; a withdrawn one (task gone, or its node down) is removed.
//!
//! Changes are applied as they come, and every [`SYNC_EVERY`] the sandboxes are compared with
//! the network DB as a whole: that removes entries no change will ever mention (programmed by
//! an agent that restarted while their owner went away) and repairs anything missed.

use std::{collections::HashSet, net::Ipv4Addr, sync::Arc, time::Duration};

use shoal_control::{
    error_chain::Chain,
    netdb::{Change, Endpoint},
};
use shoal_dataplane::overlay::{
    Sandbox, add_remote_endpoint, remote_endpoints, remove_remote_endpoint,
};
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tracing::{debug, warn};

use super::NodeNetworking;

/// Programs every remote endpoint of `endpoints` into `sandbox` (adds only: used when a
/// sandbox is created or after missed changes).
pub fn program_all(node_id: &str, sandbox: &Sandbox, endpoints: &[Endpoint]) {
    for e in endpoints.iter().filter(|e| e.node_id != node_id) {
        if let Err(err) = add_remote_endpoint(sandbox, e.ip, e.mac, e.vtep) {
            warn!(ip = %e.ip, vtep = %e.vtep, error = %Chain(&err), "programming a remote endpoint");
        }
    }
}

/// How often the sandboxes are compared with the whole network DB.
const SYNC_EVERY: Duration = Duration::from_secs(5);

/// Follows the network DB's changes until it stops. Each change is applied under the local
/// lock, so it cannot interleave with a sandbox being created and filled from a snapshot.
pub async fn follow(networking: Arc<NodeNetworking>, mut changes: Receiver<Change>) {
    let mut sync = tokio::time::interval(SYNC_EVERY);
    sync.tick().await;
    loop {
        let change = tokio::select! {
            received = changes.recv() => match received {
                Ok(change) => Some(change),
                Err(RecvError::Lagged(missed)) => {
                    warn!(missed, "network DB changes missed: syncing every sandbox");
                    None
                }
                Err(RecvError::Closed) => return,
            },
            _ = sync.tick() => None,
        };
        let n = networking.clone();
        let applied = tokio::task::spawn_blocking(move || match change {
            Some(change) => n.apply_change(&change),
            None => n.sync_all(),
        })
        .await;
        if let Err(e) = applied {
            warn!(error = %Chain(&e), "applying a network DB change failed");
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
            warn!(%ip, %vtep, add, error = %Chain(&e), "programming a remote endpoint");
        }
    }

    /// Makes every sandbox hold exactly the remote endpoints the network DB has. Skipped while
    /// this node sees no other member: before its first exchange it knows nothing, and a node
    /// cut off has had everything withdrawn by changes already.
    fn sync_all(&self) {
        let Some(db) = self.db() else {
            return;
        };
        if db.members().iter().all(|(_, _, alive)| !alive) {
            return;
        }
        let local = self.local();
        for (id, net) in &local.networks {
            let wanted = db.endpoints(id);
            program_all(&self.config.node_id, &net.sandbox, &wanted);
            let wanted: HashSet<(Ipv4Addr, [u8; 6], Ipv4Addr)> = wanted
                .iter()
                .filter(|e| e.node_id != self.config.node_id)
                .map(|e| (e.ip, e.mac, e.vtep))
                .collect();
            let present = match remote_endpoints(&net.sandbox) {
                Ok(present) => present,
                Err(e) => {
                    warn!(network = %net.network.name, error = %Chain(&e), "listing remote endpoints");
                    continue;
                }
            };
            for (ip, mac, vtep) in present {
                if wanted.contains(&(ip, mac, vtep)) {
                    continue;
                }
                debug!(%ip, %vtep, network = %net.network.name, "removing a stale remote endpoint");
                if let Err(e) = remove_remote_endpoint(&net.sandbox, ip, mac, vtep) {
                    warn!(%ip, error = %Chain(&e), "removing a stale remote endpoint");
                }
            }
        }
    }
}
