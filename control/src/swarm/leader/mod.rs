//! The leader's side of the cluster API: what the Raft leader does for each call, and the loops
//! only the leader runs. Nothing here forwards: a [`Leader`] exists only on the node that leads
//! (see [`Swarm::route`]), and the gRPC file decides between it and the leader's client.
//!
//! # Layout
//! - `nodes`: admission, Raft membership for new managers, node operations, join tokens.
//! - `ca`: node certificates issued, `--cert-expiry`, root CA rotation.
//! - `settings`: the swarm's settings shown with their version, and `swarm update`.
//! - `services`: service create, update (and roll back), remove, list; tasks listed.
//! - `networks`: network create, remove, list; the `ingress` network.
//! - `objects`: secret and config create, list, inspect, remove.
//! - `dispatch`: heartbeats answered: task reports in, assignments, keys and routing mesh out.
//! - `mesh_cache`: each node's routing mesh, kept encoded until the state changes it.
//! - `orchestrate`: the orchestration loop (and periodic gossip key rotation) on the leader.
//! - `gossip_keys`: rotating the network DB's keys.
//! - `autolock`: the unlock key shown, rotated, autolock turned on or off.
//! - `liveness`: the heartbeats seen (Ready/Down), and noticing leadership.

mod autolock;
mod ca;
mod dispatch;
mod gossip_keys;
pub(super) mod liveness;
pub(super) mod mesh_cache;
mod networks;
mod nodes;
mod objects;
pub(super) mod orchestrate;
mod services;
mod settings;

use std::{sync::Arc, time::Duration};

use tonic::transport::Channel;

pub(super) use self::ca::{CertReports, check_cert_expiry};
pub use self::{dispatch::answer_beat, mesh_cache::MeshCache};
use super::{Active, ManagerRole, Swarm, error::Error};
use crate::{
    api::cluster_client::ClusterClient,
    cluster::{ClusterInfo, ClusterState, Command, CommandResponse, touched::Touched},
    raft::store::Generations,
};

/// This node leads the swarm: the handles the leader's operations work with.
#[derive(Clone)]
pub struct Leader {
    swarm: Swarm,
    active: Arc<Active>,
    manager: ManagerRole,
}

/// Where a cluster operation runs.
pub enum Route {
    /// This node leads: run it here.
    Here(Leader),
    /// Another manager leads: send it there (the caller was authorized at this first hop).
    Forward(ClusterClient<Channel>),
}

impl Swarm {
    /// Decides where a cluster operation runs: here when this node leads, else on the leader.
    pub(super) async fn route(&self) -> Result<Route, Error> {
        let active = self.active().await?;
        if let Some(leader) = Leader::of(self, &active) {
            return Ok(Route::Here(leader));
        }
        Ok(Route::Forward(active.leader_client()?))
    }
}

impl Leader {
    /// `Some` when `swarm` leads in this membership.
    pub(super) fn of(swarm: &Swarm, active: &Arc<Active>) -> Option<Leader> {
        let manager = active.leading(swarm.node_id())?.clone();
        Some(Leader {
            swarm: swarm.clone(),
            active: Arc::clone(active),
            manager,
        })
    }

    /// The swarm's own record (its CA, tokens and settings), copied: small, unlike the state.
    pub(super) fn cluster(&self) -> Result<ClusterInfo, Error> {
        self.read(|state| nodes::cluster_of(state).cloned())
    }

    /// Runs `f` on the replicated state under the state machine's read lock (entries wait to
    /// apply while it runs: keep it to computing, never IO or an await). Every API call reads
    /// it so, taking out what it needs before an await: a copy of the whole state is ~40 ms at
    /// 10,000 services.
    pub(super) fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        self.manager.state_machine.read(f)
    }

    /// [`Leader::read`], with the state's [`Generations`] and the services changed since the
    /// last call (for the orchestrator, the one caller).
    pub(super) fn read_touched<T>(
        &self,
        f: impl FnOnce(&ClusterState, Generations, Touched) -> T,
    ) -> T {
        self.manager.state_machine.read_touched(f)
    }

    fn node_id(&self) -> &str {
        self.swarm.node_id()
    }

    /// Appends `command` to the Raft log and waits for it to apply.
    pub(super) async fn propose(&self, command: Command) -> Result<(), Error> {
        let response = self
            .manager
            .raft
            .client_write(command)
            .await
            .map_err(|e| Error::unavailable_because("cannot commit to the raft log", e))?;
        match response.data {
            CommandResponse::Ok => Ok(()),
            CommandResponse::Rejected(why) => Err(Error::refused(why)),
            CommandResponse::OutOfSequence => Err(Error::OutOfSequence),
        }
    }

    /// Commits a change to the swarm's settings (see [`Command::Settings`]), refused unless
    /// they are still at `expected_version` when it applies (if given).
    pub(super) async fn propose_setting(
        &self,
        change: Command,
        expected_version: Option<u64>,
    ) -> Result<(), Error> {
        self.propose(Command::Settings {
            change: Box::new(change),
            expected_version,
            at_ms: crate::clock::now_ms(),
        })
        .await
    }
}

/// The cluster's heartbeat period (Docker's `--dispatcher-heartbeat`).
pub(super) fn heartbeat_period(state: &ClusterState) -> Duration {
    Duration::from_millis(
        state
            .cluster
            .as_ref()
            .map_or(1000, |c| c.heartbeat_period_ms.max(1)),
    )
}
