//! Service VIPs on this node: the task-facing eBPF programs on every task's veth, and the load
//! balancer's table (VIP -> running tasks' addresses) kept equal to what the network DB and
//! this node's own endpoints say, so a task starting or stopping anywhere, a scale, a drain or
//! a node's death reaches the maps as fast as gossip brings it. Every VIP of the joined
//! networks that the leader lists stays in the table with no backend when none runs, so its
//! connections are refused rather than lost.
//!
//! After an agent restart the maps still hold the last table (they are pinned) while the
//! network DB starts empty. Until it has settled (met a live member, or run for
//! [`SETTLE_AFTER`] alone), backends are only added, never removed: removing one resets its
//! flows, and a backend missing only because gossip has not caught up yet must not lose its
//! connections.

use std::{
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use shoal_dataplane::{LbTable, MeshTable, lb::ApplyReport};
use tracing::{debug, info, warn};

use shoal_control::error_chain::Chain;

use super::NodeNetworking;

/// What the networking needs of the eBPF data path (VIPs and published ports): implemented
/// by the agent's shared [`shoal_dataplane::Dataplane`]; absent when the agent runs without
/// one (unit tests).
pub trait ServiceDataplane: Send + Sync {
    /// Attaches the task-facing programs to `interface` inside the namespace at `netns`.
    fn attach_task_veth(&self, netns: &Path, interface: &str) -> anyhow::Result<()>;
    /// Attaches the published ports' reply program to `interface` inside `netns`.
    fn attach_mesh_reply(&self, netns: &Path, interface: &str) -> anyhow::Result<()>;
    /// Makes the published ports' maps hold exactly `table`.
    fn apply_mesh(&self, table: &MeshTable) -> anyhow::Result<()>;
    /// What the published ports' maps hold now.
    fn mesh_table(&self) -> MeshTable;
    /// Makes the maps hold exactly `table`, with the backends of `draining` (per VIP) kept
    /// for their flows but out of the round robin.
    fn apply(&self, table: &LbTable, draining: &LbTable) -> anyhow::Result<ApplyReport>;
    /// What the maps hold now.
    fn table(&self) -> LbTable;
    /// Forgets flows that are over (closed TCP, idle UDP), VIP and published-port ones;
    /// returns how many entries went.
    fn expire_flows(&self) -> anyhow::Result<usize>;
}

/// How long a network DB that has met nobody is waited for before backends may be removed.
pub const SETTLE_AFTER: Duration = Duration::from_secs(5);
/// How often the table is recomputed even without a change (applies what was deferred).
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How often flows that are over are removed from the flow table.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);

/// The load balancer as this node runs it.
pub struct Vips {
    dataplane: Option<Arc<dyn ServiceDataplane>>,
    state: Mutex<VipState>,
}

#[derive(Default)]
struct VipState {
    /// When the network DB started in this agent's life.
    db_started: Option<Instant>,
    /// Latched once removals are allowed.
    settled: bool,
}

impl Vips {
    pub fn new(dataplane: Option<Arc<dyn ServiceDataplane>>) -> Vips {
        Vips {
            dataplane,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, VipState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts the task-facing programs on a task's veth (its sandbox end).
    pub fn attach(&self, sandbox: &Path, interface: &str) -> anyhow::Result<()> {
        match &self.dataplane {
            Some(dp) => dp.attach_task_veth(sandbox, interface),
            None => Ok(()),
        }
    }

    /// Puts the published ports' reply program on `interface` in `netns`.
    pub fn attach_mesh_reply(&self, netns: &Path, interface: &str) -> anyhow::Result<()> {
        match &self.dataplane {
            Some(dp) => dp.attach_mesh_reply(netns, interface),
            None => Ok(()),
        }
    }

    /// Makes the published ports' maps hold exactly `table`.
    pub fn apply_mesh(&self, table: &MeshTable) -> anyhow::Result<()> {
        match &self.dataplane {
            Some(dp) => dp.apply_mesh(table),
            None => Ok(()),
        }
    }

    /// What the published ports' maps hold now.
    pub fn mesh_table(&self) -> MeshTable {
        self.dataplane
            .as_ref()
            .map(|dp| dp.mesh_table())
            .unwrap_or_default()
    }
}

impl NodeNetworking {
    /// Recomputes the load balancer's table from the endpoints this node sees and applies
    /// what changed.
    pub(super) fn refresh_vips(&self) {
        let Some(dp) = self.vips.dataplane.clone() else {
            return;
        };
        let mut wanted = LbTable::new();
        // Withdrawn tasks: their flows go on until they are gone (see `executor::stop`).
        let mut draining = LbTable::new();
        // A service's VIP stays while the service exists, with no backend if none runs: the
        // programs then refuse its connections at once (reset, port unreachable).
        for vip in self.known_vips() {
            wanted.entry(vip).or_default();
        }
        for e in self.visible_endpoints() {
            if let Some(vip) = e.vip {
                let backends = wanted.entry(vip).or_default();
                if e.draining {
                    draining.entry(vip).or_default().insert(e.ip);
                } else {
                    backends.insert(e.ip);
                }
            }
        }
        self.add_host_frontends(&mut wanted, &mut draining);
        if !self.vips_settled() {
            // Keep what the maps hold; only add.
            for (vip, backends) in dp.table() {
                wanted.entry(vip).or_default().extend(backends);
            }
        }
        match dp.apply(&wanted, &draining) {
            Ok(report) if report != ApplyReport::default() => {
                info!(
                    vips_added = report.vips_added,
                    vips_removed = report.vips_removed,
                    backends_added = report.backends_added,
                    backends_removed = report.backends_removed,
                    "service VIPs updated"
                );
            }
            Ok(_) => {}
            Err(e) => warn!(error = %Chain(e.as_ref()), "updating the service VIPs"),
        }
    }

    /// May backends be removed yet? See the module's comment. (The published ports' VTEPs
    /// follow the same rule.)
    pub(super) fn vips_settled(&self) -> bool {
        let mut state = self.vips.state();
        if state.settled {
            return true;
        }
        let Some(db) = self.db() else {
            return false;
        };
        let started = *state.db_started.get_or_insert_with(Instant::now);
        if db.alive_members() > 0 || started.elapsed() >= SETTLE_AFTER {
            debug!("network DB settled: stale VIP backends may be removed");
            state.settled = true;
        }
        state.settled
    }
}

/// Re-applies the table every [`REFRESH_EVERY`] (changes are applied as they come by the
/// network DB follower; this catches what was deferred while the DB settled).
/// Also removes the flows that are over every [`EXPIRE_EVERY`], so churn of short connections
/// never makes the flow table's LRU evict a quiet live one.
pub async fn refresh_periodically(networking: Arc<NodeNetworking>) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    let mut last_expiry = Instant::now();
    loop {
        tick.tick().await;
        let n = networking.clone();
        let expire = last_expiry.elapsed() >= EXPIRE_EVERY;
        if expire {
            last_expiry = Instant::now();
        }
        let done = tokio::task::spawn_blocking(move || {
            n.ensure_ingress_endpoint();
            n.refresh_vips();
            n.refresh_mesh();
            if expire && let Some(dp) = &n.vips.dataplane {
                match dp.expire_flows() {
                    Ok(0) => {}
                    Ok(removed) => debug!(removed, "flows that are over forgotten"),
                    Err(e) => warn!(error = %Chain(e.as_ref()), "expiring flows"),
                }
            }
        })
        .await;
        if let Err(e) = done {
            warn!(error = %Chain(&e), "refreshing the service VIPs failed");
        }
    }
}
