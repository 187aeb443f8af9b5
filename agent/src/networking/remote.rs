//! Remote endpoints: every endpoint another node publishes on a network this node has a
//! sandbox for becomes a static FDB entry (MAC -> that node's VTEP) and a permanent neighbour
//! entry (IP -> MAC) in the sandbox; a withdrawn one (task gone, or its node down) is removed.
//!
//! A sandbox gets every remote endpoint when it is created (the full reconcile, over one
//! netlink connection). After that each change is applied as it comes: one endpoint coming or
//! going is its own three entries written or deleted, one netlink request each, whatever else
//! the sandbox holds. Every [`SYNC_EVERY`] a background check reads each sandbox's entries (two
//! dumps) and compares them with the network DB: it writes only what differs, removing entries
//! no change will ever mention (programmed by an agent that restarted while their owner went
//! away) and repairing anything missed or half programmed, and logs and counts what it
//! repaired ([`RemoteRepairs`], in `/metrics`). The same check runs at once after changes were
//! missed.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use shoal_control::{
    error_chain::Chain,
    netdb::{Change, Endpoint},
};
use shoal_dataplane::overlay::{
    RemoteEndpoint, Sandbox, add_remote_endpoint, add_remote_endpoints, remote_endpoint_entries,
    remove_remote_endpoint, remove_remote_endpoints,
};
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tracing::{debug, info, warn};

use super::NodeNetworking;

/// Programs every remote endpoint of `endpoints` into `sandbox` (adds only, over one netlink
/// connection: used when a sandbox is created).
pub fn program_all(node_id: &str, sandbox: &Sandbox, endpoints: &[Endpoint]) {
    let remote: Vec<RemoteEndpoint> = endpoints
        .iter()
        .filter(|e| e.node_id != node_id)
        .map(|e| (e.ip, e.mac, e.vtep))
        .collect();
    if let Err(err) = add_remote_endpoints(sandbox, &remote) {
        warn!(endpoints = remote.len(), error = %Chain(&err), "programming the remote endpoints");
    }
}

/// What the background check found wrong in the sandboxes, and put right, since the agent
/// started: remote endpoints.
#[derive(Debug, Default)]
pub struct RemoteRepairs {
    /// Present in a sandbox, but not in the network DB: removed.
    stale: AtomicU64,
    /// In the network DB, but missing from a sandbox or only half programmed there: added.
    missing: AtomicU64,
}

impl RemoteRepairs {
    /// (stale, missing).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.stale.load(Ordering::Relaxed),
            self.missing.load(Ordering::Relaxed),
        )
    }

    fn add(&self, stale: usize, missing: usize) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.stale.fetch_add(count(stale), Ordering::Relaxed);
        self.missing.fetch_add(count(missing), Ordering::Relaxed);
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

    /// Makes every sandbox hold exactly the remote endpoints the network DB has, writing only
    /// the difference (reading costs two dumps per sandbox; nothing is written when nothing
    /// differs). Skipped while this node sees no other member: before its first exchange it
    /// knows nothing, and a node cut off has had everything withdrawn by changes already.
    fn sync_all(&self) {
        let Some(db) = self.db() else {
            return;
        };
        if db.members().iter().all(|(_, _, alive)| !alive) {
            return;
        }
        let local = self.local();
        for (id, net) in &local.networks {
            let wanted: HashSet<RemoteEndpoint> = db
                .endpoints(id)
                .iter()
                .filter(|e| e.node_id != self.config.node_id)
                .map(|e| (e.ip, e.mac, e.vtep))
                .collect();
            let present = match remote_endpoint_entries(&net.sandbox) {
                Ok(present) => present,
                Err(e) => {
                    warn!(network = %net.network.name, error = %Chain(&e), "listing remote endpoints");
                    continue;
                }
            };
            let complete: HashSet<RemoteEndpoint> = present
                .iter()
                .filter(|(_, complete)| *complete)
                .map(|(endpoint, _)| *endpoint)
                .collect();
            let stale: Vec<RemoteEndpoint> = present
                .into_iter()
                .map(|(endpoint, _)| endpoint)
                .filter(|endpoint| !wanted.contains(endpoint))
                .collect();
            let missing: Vec<RemoteEndpoint> = wanted.difference(&complete).copied().collect();
            if stale.is_empty() && missing.is_empty() {
                continue;
            }
            info!(
                network = %net.network.name,
                stale = stale.len(),
                missing = missing.len(),
                "repairing remote endpoints"
            );
            self.remote_repairs.add(stale.len(), missing.len());
            if let Err(e) = remove_remote_endpoints(&net.sandbox, &stale) {
                warn!(network = %net.network.name, error = %Chain(&e), "removing stale remote endpoints");
            }
            if let Err(e) = add_remote_endpoints(&net.sandbox, &missing) {
                warn!(network = %net.network.name, error = %Chain(&e), "programming missing remote endpoints");
            }
        }
    }
}
