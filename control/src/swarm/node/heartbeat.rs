//! The node side of heartbeats: every period, tell the leader this node is alive, and learn
//! from the answer where the leader and the managers are, the period, and this node's role
//! (a promoted or demoted node follows it).

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{
    Active, Swarm,
    dispatch::{decode_gossip, decode_mesh, decode_tasks, encode_reports, gossip_config},
    lifecycle::parse_role,
};
use crate::{
    api::HeartbeatRequest,
    cluster::{mesh::RoutingMesh, raft_id},
    raft::Raft,
};

/// How soon a node beats again when its tasks have news.
const SOON: Duration = Duration::from_millis(100);

/// Boxed because the loop may switch the node's role, which starts a new loop: the future
/// would otherwise contain itself.
pub(super) fn run(
    swarm: Swarm,
    active: Arc<Active>,
    stop: watch::Receiver<bool>,
) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(beat(swarm, active, stop))
}

async fn beat(swarm: Swarm, active: Arc<Active>, mut stop: watch::Receiver<bool>) {
    let mut period = swarm.config().heartbeat_period;
    let mut next = period;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(next) => {}
        }
        next = period;
        let node_id = swarm.config().node_id.as_str().to_string();
        let reports = swarm.inner.runner.take_reports();
        if let Some(manager) = active.leading(&node_id) {
            // The leader beats for itself without a round trip.
            active.liveness.record(&node_id);
            match swarm.dispatch(manager, &node_id, reports.clone()).await {
                Ok(assigned) => {
                    let state = manager.state();
                    swarm.inner.runner.gossip(&gossip_config(&state));
                    swarm
                        .inner
                        .runner
                        .routing_mesh(&RoutingMesh::for_node(&state, &node_id));
                    if follow(&swarm, assigned).await {
                        next = SOON.min(period);
                    }
                }
                Err(e) => {
                    debug!(cause = %e.message(), "local dispatch failed");
                    swarm.inner.runner.requeue(reports);
                }
            }
            continue;
        }
        let Some(leader) = active.leader_addr() else {
            debug!("no leader known; heartbeat skipped");
            swarm.inner.runner.requeue(reports);
            continue;
        };
        let request = HeartbeatRequest {
            node_id,
            task_reports: encode_reports(&reports),
        };
        let reply = match active.peers.client(leader) {
            Ok(mut client) => client.heartbeat(request).await,
            Err(e) => Err(e),
        };
        match reply {
            Ok(reply) => {
                let reply = reply.into_inner();
                period = Duration::from_millis(reply.period_ms.max(50));
                active.learn_managers(reply.leader_addr.parse().ok(), &reply.manager_addrs, &swarm);
                match decode_gossip(&reply.gossip) {
                    Ok(config) => swarm.inner.runner.gossip(&config),
                    Err(e) => warn!(cause = %e.message(), "bad gossip config from the leader"),
                }
                match decode_mesh(&reply.routing_mesh) {
                    Ok(mesh) => swarm.inner.runner.routing_mesh(&mesh),
                    Err(e) => warn!(cause = %e.message(), "bad routing mesh from the leader"),
                }
                match decode_tasks(&reply.assigned_tasks) {
                    Ok(assigned) => {
                        if follow(&swarm, assigned).await {
                            next = SOON.min(period);
                        }
                    }
                    Err(e) => warn!(cause = %e.message(), "bad task assignments from the leader"),
                }
                if let Ok(role) = parse_role(&reply.role)
                    && role != active.role()
                {
                    // The switch restarts this membership (and this loop): run it elsewhere.
                    let swarm = swarm.clone();
                    tokio::spawn(async move {
                        if let Err(e) = swarm.switch_role(role).await {
                            warn!(cause = %e.message(), "cannot switch role");
                        }
                    });
                    return;
                }
            }
            Err(status) => {
                debug!(%leader, cause = %status.message(), "heartbeat failed");
                swarm.inner.runner.requeue(reports);
                active.forget_leader(leader);
            }
        }
    }
}

/// Hands the assignments to the task runner, which forks: not on an async worker.
/// Returns whether the runner has news to report: then the next beat should come soon, so a
/// task that just started is seen Running within ~100 ms instead of a period later.
async fn follow(swarm: &Swarm, assigned: Vec<crate::cluster::Task>) -> bool {
    let runner = std::sync::Arc::clone(&swarm.inner.runner);
    match tokio::task::spawn_blocking(move || {
        runner.reconcile(&assigned);
        let pending = runner.take_reports();
        let news = !pending.is_empty();
        runner.requeue(pending);
        news
    })
    .await
    {
        Ok(news) => news,
        Err(e) => {
            warn!(cause = %e, "the task runner failed");
            false
        }
    }
}

/// On managers: notices when this node becomes leader, to give every node a fresh grace
/// period before it can be declared Down.
pub(super) async fn watch_leadership(
    swarm: Swarm,
    active: Arc<Active>,
    raft: Raft,
    mut stop: watch::Receiver<bool>,
) {
    let me = raft_id(swarm.config().node_id.as_str());
    let mut metrics = raft.metrics();
    let mut leading = false;
    loop {
        let now_leading = metrics.borrow().current_leader == Some(me);
        if now_leading && !leading {
            info!("this node is now the raft leader");
            active.liveness.became_leader();
        }
        leading = now_leading;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

impl Active {
    /// Remembers the leader and managers a heartbeat answer named, persisting a changed list
    /// so a restarted worker can find the swarm again.
    fn learn_managers(
        &self,
        leader: Option<std::net::SocketAddr>,
        managers: &[String],
        swarm: &Swarm,
    ) {
        if let Ok(mut hint) = self.leader_hint.lock() {
            *hint = leader;
        }
        let managers: Vec<std::net::SocketAddr> =
            managers.iter().filter_map(|m| m.parse().ok()).collect();
        if managers.is_empty() {
            return;
        }
        let changed = match self.file.lock() {
            Ok(mut file) if file.manager_addrs != managers => {
                file.manager_addrs = managers;
                Some(file.clone())
            }
            _ => None,
        };
        if let Some(file) = changed
            && let Err(e) = super::persist::save(&swarm.config().state_dir, &file)
        {
            warn!(cause = %e, "cannot save the manager list");
        }
    }

    /// After a failed heartbeat: try the next manager next time.
    fn forget_leader(&self, failed: std::net::SocketAddr) {
        let managers = self.file().manager_addrs;
        let next = managers
            .iter()
            .position(|m| *m == failed)
            .map_or(0, |i| (i + 1) % managers.len().max(1));
        if let Ok(mut hint) = self.leader_hint.lock() {
            *hint = managers.get(next).copied();
        }
    }
}
