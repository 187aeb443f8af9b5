//! A node's membership in a swarm, at run time: init, join and leave; the 2377 server; Raft on
//! managers; heartbeats; and the leader-side operations behind the cluster API.
//!
//! A node is either outside any swarm, or *active*: it holds credentials signed by the cluster
//! CA, serves the cluster API on its listen address over mutual TLS, heartbeats the leader,
//! and, when a manager, runs Raft. Activation is all-or-nothing: a failed init or join leaves
//! no credentials, no Raft log and no listener behind.
//!
//! # Layout
//! - `lifecycle`: init, join, leave, resume after restart, promotion and demotion; `info`.
//! - `membership`: starting, saving and abandoning what an active membership runs.
//! - `autolock`: a manager's data key at rest, the locked state and `swarm unlock`.
//! - `grpc`: the `Cluster` gRPC service: who may call what, and where each call runs (here on
//!   the leader, else forwarded to it); the one place an [`Error`] becomes a `Status`.
//! - `leader/`: what the Raft leader does for each call, and the loops only it runs.
//! - `node/`: what every node runs: the heartbeat loop, certificate renewal, task I/O, the
//!   [`TaskRunner`] seam.
//! - `events`: the swarm events a manager applied, streamed (`Events`).
//! - `authz`: who may call what (the store's view of the caller, never its certificate alone).
//! - `codec`: the heartbeat's payloads on the wire.
//! - `convert`: API messages to and from the cluster model.
//! - `spec_fields`: labels, network aliases, process settings and the per-node replica limit
//!   of a spec, checked and converted (for `convert`).
//! - `file_refs`: a spec's `--secret` and `--config` references, checked and resolved (for
//!   `convert`).
//! - `lookup`: nodes, services, networks, secrets and configs found by ID, name or ID prefix.
//! - `error`: [`Error`], and its mapping to a gRPC status.
//! - `peers`: mutual-TLS clients for other nodes.
//! - `source_limits`: bounds on connections and join attempts per source on 2377.
//! - `raft_network`: openraft's network over the cluster API.
//! - `persist`: the membership files under the state dir.

mod authz;
mod autolock;
mod codec;
mod convert;
pub mod error;
mod events;
mod file_refs;
mod grpc;
mod leader;
mod lifecycle;
mod lookup;
mod membership;
mod node;
mod peers;
mod persist;
mod raft_network;
mod source_limits;
mod spec_fields;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

pub use self::{
    convert::service_to_api,
    error::Error,
    grpc::ClusterService,
    leader::{MeshCache, answer_beat},
    lifecycle::{BadAddress, parse_addr},
    node::heartbeat::MeshUpdateCounts,
    node::log_stamps,
    node::runner::{NoTasks, RunnerError, TaskReports, TaskRunner},
};
use tokio::{sync::watch, task::JoinHandle};
use tracing::warn;

use self::{
    leader::{CertReports, liveness::Liveness},
    node::certs::CertWatch,
    peers::Peers,
    persist::SwarmFile,
};
use crate::{
    api::cluster_client::ClusterClient,
    cluster::{ClusterState, Role, raft_id},
    identity::NodeId,
    pki::LiveTls,
    raft::{Raft, store::StateReader},
};

/// What the agent tells the swarm runtime about this node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub hostname: String,
    pub state_dir: PathBuf,
    /// Where the cluster API listens for other nodes (`--listen-addr`, port 2377).
    pub listen_addr: SocketAddr,
    /// The agent's `--advertise-addr` (or its guess), the default for init and join.
    pub advertise_addr: Option<SocketAddr>,
    /// The agent's `--data-path-addr`, the default for init and join.
    pub data_path_addr: Option<IpAddr>,
    /// Heartbeat period this node proposes at `swarm init`.
    pub heartbeat_period: Duration,
    /// What this node has for tasks, reported when it joins (for reservations).
    pub resources: crate::cluster::NodeResources,
}

/// A node's swarm runtime. Cheap to clone; all clones are the same node.
#[derive(Clone)]
pub struct Swarm {
    inner: Arc<Inner>,
}

struct Inner {
    config: NodeConfig,
    /// Runs the tasks the leader assigns to this node.
    runner: Arc<dyn TaskRunner>,
    /// `Some` while the node is in a swarm.
    active: tokio::sync::RwLock<Option<Arc<Active>>>,
    /// Serializes membership changes (init, join, leave, role switches).
    transitions: tokio::sync::Mutex<()>,
    /// A manager restarted under autolock: its membership, waiting for `swarm unlock`.
    locked: Mutex<Option<SwarmFile>>,
    /// A node whose certificate expired while it was off: when it expired. Only leaving helps.
    expired: Mutex<Option<String>>,
    /// How the routing meshes the leader sent came (`/metrics`).
    mesh_updates: node::heartbeat::MeshUpdates,
}

/// An active membership: everything that exists only while the node is in a swarm.
struct Active {
    file: Mutex<SwarmFile>,
    /// The node's certificate, key and roots, replaced in place on renewal and CA rotation.
    tls: Arc<LiveTls>,
    /// Renewal: when this node's certificate is due, or asked for by a root rotation.
    certs: CertWatch,
    /// On the leader: the certificate each node says it uses (a root rotation's progress).
    cert_reports: CertReports,
    peers: Arc<Peers>,
    /// Raft, on managers.
    manager: Option<ManagerRole>,
    /// On managers: the data key sealing the Raft store and the TLS key.
    at_rest: Option<autolock::AtRest>,
    /// On managers: heartbeats seen (the leader's is the one that counts).
    liveness: Liveness,
    /// Where the leader was last seen, for workers (managers ask Raft).
    leader_hint: Mutex<Option<SocketAddr>>,
    /// The managers' node IDs as the leader last named them: on a worker, who may relay logs
    /// and exec to it (managers ask their store).
    manager_ids: Mutex<Vec<String>>,
    /// Set to `true` to stop the server and the loops.
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Clone)]
struct ManagerRole {
    raft: Raft,
    /// Read access to the state machine that Raft owns.
    state_machine: StateReader,
    /// The routing mesh each node is told, kept for the state machine's mesh generation.
    meshes: Arc<leader::mesh_cache::MeshCache>,
}

/// What `shoal info` shows about the swarm.
#[derive(Clone, Debug, Default)]
pub struct SwarmSummary {
    pub active: bool,
    /// A manager restarted under autolock, waiting for `swarm unlock`.
    pub locked: bool,
    pub cluster_id: String,
    pub is_manager: bool,
    pub managers: u32,
    pub nodes: u32,
    /// Why the node cannot take part although it is in a swarm (an expired certificate).
    pub error: Option<String>,
}

/// How long a stopping task may take before it is aborted.
const STOP_GRACE: Duration = Duration::from_millis(300);

impl Swarm {
    pub fn new(config: NodeConfig, runner: Arc<dyn TaskRunner>) -> Swarm {
        Swarm {
            inner: Arc::new(Inner {
                config,
                runner,
                active: tokio::sync::RwLock::new(None),
                transitions: tokio::sync::Mutex::new(()),
                locked: Mutex::new(None),
                expired: Mutex::new(None),
                mesh_updates: Default::default(),
            }),
        }
    }

    /// The routing meshes this node followed from the leader's answers: sent whole, sent as
    /// a change, and changes refused (not the mesh the leader named: the next came whole).
    pub fn mesh_updates(&self) -> node::heartbeat::MeshUpdateCounts {
        self.inner.mesh_updates.counts()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    fn node_id(&self) -> &str {
        self.inner.config.node_id.as_str()
    }

    async fn active(&self) -> Result<Arc<Active>, Error> {
        match self.inner.active.read().await.clone() {
            Some(active) => Ok(active),
            None if self.locked().is_some() => Err(Error::Locked),
            None => match self.expired() {
                Some(expired_on) => Err(Error::CertificateExpired { expired_on }),
                None => Err(Error::NotInSwarm),
            },
        }
    }

    /// Stops the server, loops and Raft, keeping the membership on disk (agent shutdown).
    pub async fn shutdown(&self) {
        let _guard = self.inner.transitions.lock().await;
        if let Some(active) = self.inner.active.write().await.take() {
            node::heartbeat::say_stopping(self, &active).await;
            active.deactivate().await;
        }
    }
}

impl Active {
    fn file(&self) -> SwarmFile {
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn role(&self) -> Role {
        self.file().role
    }

    /// The leader's API address, if known.
    fn leader_addr(&self) -> Option<SocketAddr> {
        if let Some(manager) = &self.manager {
            let metrics = manager.raft.metrics().borrow().clone();
            let leader = metrics.current_leader?;
            let node = metrics
                .membership_config
                .membership()
                .get_node(&leader)?
                .clone();
            return node.addr.parse().ok();
        }
        let hint = *self
            .leader_hint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        hint.or_else(|| self.file().manager_addrs.first().copied())
    }

    /// `Some` when this node is the Raft leader.
    fn leading(&self, node_id: &str) -> Option<&ManagerRole> {
        let manager = self.manager.as_ref()?;
        let leader = manager.raft.metrics().borrow().current_leader;
        (leader == Some(raft_id(node_id))).then_some(manager)
    }

    /// Where to ask the managers: the leader (if known), then every manager last heard of.
    fn managers_leader_first(&self) -> Vec<SocketAddr> {
        self.leader_addr()
            .into_iter()
            .chain(self.file().manager_addrs)
            .collect()
    }

    /// A client for the leader, for forwarding.
    fn leader_client(&self) -> Result<ClusterClient<tonic::transport::Channel>, Error> {
        let addr = self.leader_addr().ok_or(Error::NoLeader)?;
        self.peers.client(addr)
    }

    /// Stops everything this membership runs. Tasks get a moment to finish; the server's open
    /// connections (peers keep theirs open) are then cut, which releases the port.
    async fn deactivate(&self) {
        let _ = self.stop.send(true);
        if let Some(manager) = &self.manager
            && let Err(e) = manager.raft.shutdown().await
        {
            warn!(cause = %crate::error_chain::Chain(&e), "raft did not shut down cleanly");
        }
        let tasks: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for mut task in tasks {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl ManagerRole {
    /// Runs `f` on the replicated state as applied here, under the state machine's read lock
    /// (keep it short: entries wait to apply). Not a copy: at 10,000 services that is ~40 ms.
    fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        self.state_machine.read(f)
    }
}
