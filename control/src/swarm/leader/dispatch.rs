//! The dispatcher: tasks travel to nodes, and their status back, on the heartbeat. Each beat a
//! node sends what its tasks did since the last one and gets every task assigned to it with its
//! desired state, the data of the secrets and configs its tasks about to start use (and of no
//! others), the network DB's keys, its routing mesh and the roots to trust; the node's
//! [`TaskRunner`](crate::swarm::TaskRunner) makes its processes follow.

use super::{
    Leader,
    ca::certificate_answer,
    heartbeat_period,
    mesh_cache::{MeshCache, NodeMesh},
    nodes::manager_addrs,
};
use crate::{
    api::{HeartbeatRequest, HeartbeatResponse},
    cluster::{
        ClusterState, Command, Role, Task, TaskState, gossip::GossipConfig, objects::TaskFiles,
    },
    swarm::{
        codec::{decode_reports, encode_files, encode_gossip, encode_tasks},
        error::Error,
        node::runner::TaskReports,
    },
};

impl Leader {
    /// A node says what its tasks did, and gets its task assignments back. (That it is alive
    /// was recorded by the manager the beat reached first.)
    ///
    /// The answer is built under the state machine's read lock, from the state as it is: no
    /// copy of the whole state per beat, and the routing mesh is the one kept for the state's
    /// mesh generation ([`MeshCache`](super::mesh_cache::MeshCache)), so a beat costs what the
    /// node's own tasks and the swarm's members cost, not what its services do.
    pub async fn heartbeat(&self, request: HeartbeatRequest) -> Result<HeartbeatResponse, Error> {
        let node_id = &request.node_id;
        if !self.read(|state| state.nodes.contains_key(node_id)) {
            return Err(Error::denied(format!(
                "node {node_id} is not a member of this swarm"
            )));
        }
        let reports = decode_reports(&request.task_reports)?;
        self.record_reports(node_id, reports).await?;
        self.note_cert(node_id, &request.cert_fingerprint);
        let leader_addr = self.active.file().addr.to_string();
        self.manager
            .state_machine
            .read_versioned(|state, generations| {
                answer_beat(
                    state,
                    generations.mesh,
                    &self.manager.meshes,
                    &request,
                    leader_addr,
                )
            })
    }

    /// The leader's own node's beat, answered without a round trip: what [`Leader::heartbeat`]
    /// would answer, not encoded.
    pub(in crate::swarm) async fn own_beat(
        &self,
        reports: TaskReports,
        cert_fingerprint: &str,
    ) -> Result<OwnBeat, Error> {
        let node_id = self.node_id();
        self.record_reports(node_id, reports).await?;
        self.note_cert(node_id, cert_fingerprint);
        self.manager
            .state_machine
            .read_versioned(|state, generations| {
                let (roots, renew_certificate) =
                    certificate_answer(state, node_id, cert_fingerprint);
                let (assigned, files) = assignments(state, node_id);
                Ok(OwnBeat {
                    assigned,
                    files,
                    roots,
                    renew_certificate,
                    gossip: gossip_config(state),
                    mesh: self
                        .manager
                        .meshes
                        .for_node(state, generations.mesh, node_id)?,
                })
            })
    }

    /// Records what a node's tasks did since its last beat (a Raft write when they did
    /// anything).
    pub(in crate::swarm) async fn record_reports(
        &self,
        node_id: &str,
        reports: TaskReports,
    ) -> Result<(), Error> {
        if node_id == self.node_id() {
            // The first manager's certificate was issued before the swarm existed (`swarm
            // init`): it is recorded by its first beat as leader (a no-op afterwards). A
            // failure must not stop the beat: the next one tries again.
            if let Err(e) = self.record_own_cert_if_unknown().await {
                tracing::warn!(error = %crate::error_chain::Chain(&e), "recording this node's certificate");
            }
        }
        if !reports.is_empty() {
            let command = Command::ReportTasks {
                node_id: node_id.to_string(),
                reports,
            };
            self.propose(command).await?;
        }
        Ok(())
    }
}

/// The leader's answer to `request`, a beat from one of the swarm's nodes, built from `state`
/// (whose routing-mesh generation is `generation`, the mesh kept in `meshes`); `leader_addr`:
/// where the leader serves. Public for the `leader-beat` benchmark.
pub fn answer_beat(
    state: &ClusterState,
    generation: u64,
    meshes: &MeshCache,
    request: &HeartbeatRequest,
    leader_addr: String,
) -> Result<HeartbeatResponse, Error> {
    let node_id = &request.node_id;
    let (ca_certs_pem, renew_certificate) =
        certificate_answer(state, node_id, &request.cert_fingerprint);
    let files = TaskFiles::for_tasks(state, assigned_to(state, node_id));
    // The node's tasks, sent again only when they changed: at 10,000 services a beat encoded
    // a node's 200 tasks whole each time.
    let assignments_token = assignments_token(state, node_id);
    let assignments_kept = request.assignments_token == assignments_token;
    let assigned_tasks = if assignments_kept {
        Vec::new()
    } else {
        let assigned: Vec<Task> = assigned_to(state, node_id).cloned().collect();
        encode_tasks(&assigned)?
    };
    // The mesh lists every service that publishes or has a VIP: sent again only when it
    // changed, so a quiet swarm of many services does not ship it to every node each beat.
    let mesh = meshes.for_node(state, generation, node_id)?;
    let (routing_mesh, routing_mesh_delta) = if request.routing_mesh_digest == mesh.digest {
        (Vec::new(), Vec::new())
    } else if request.accepts_mesh_delta
        && let Some(delta) = meshes.delta_to(&mesh, &request.routing_mesh_digest)?
    {
        (Vec::new(), delta)
    } else {
        (mesh.encoded(), Vec::new())
    };
    Ok(HeartbeatResponse {
        period_ms: heartbeat_period(state).as_millis() as u64,
        leader_addr,
        manager_addrs: manager_addrs(state),
        role: state
            .nodes
            .get(node_id)
            .map_or("", |n| n.role.as_str())
            .to_string(),
        assigned_tasks,
        task_files: encode_files(&files)?,
        gossip: encode_gossip(&gossip_config(state))?,
        routing_mesh,
        routing_mesh_digest: mesh.digest,
        routing_mesh_delta,
        manager_ids: state
            .nodes
            .values()
            .filter(|n| n.role == Role::Manager)
            .map(|n| n.id.clone())
            .collect(),
        ca_certs_pem,
        renew_certificate,
        assignments_token,
        assignments_kept,
    })
}

/// Names `node_id`'s assignments in `state`: this process's epoch (a number drawn when it
/// started, so a token from another leader, or from before a restart, never matches) and the
/// store's number for the last change to the node's tasks (`Tasks::changed_on`).
fn assignments_token(state: &ClusterState, node_id: &str) -> Vec<u8> {
    static EPOCH: std::sync::LazyLock<u64> = std::sync::LazyLock::new(rand::random);
    let mut token = EPOCH.to_be_bytes().to_vec();
    token.extend_from_slice(&state.tasks.changed_on(node_id).to_be_bytes());
    token
}

/// What the leader's own node follows from its beat.
pub(in crate::swarm) struct OwnBeat {
    pub assigned: Vec<Task>,
    pub files: TaskFiles,
    /// The swarm's roots (PEM), and whether this node's certificate must be renewed.
    pub roots: String,
    pub renew_certificate: bool,
    pub gossip: GossipConfig,
    pub mesh: NodeMesh,
}

/// A node's assignments, with the files they need.
fn assignments(state: &ClusterState, node_id: &str) -> (Vec<Task>, TaskFiles) {
    let assigned: Vec<Task> = assigned_to(state, node_id).cloned().collect();
    let files = TaskFiles::for_tasks(state, &assigned);
    (assigned, files)
}

/// The keys, peer addresses and node keys every node gets with its heartbeat answer.
fn gossip_config(state: &ClusterState) -> GossipConfig {
    GossipConfig {
        keys: state
            .cluster
            .as_ref()
            .map(|c| c.gossip_keys.clone())
            .unwrap_or_default(),
        peers: state
            .nodes
            .values()
            .map(|n| (n.id.clone(), n.addr.ip()))
            .collect(),
        node_keys: state
            .node_keys
            .iter()
            .map(|(id, key)| (id.clone(), key.clone()))
            .collect(),
    }
}

/// The tasks a node must run or stop: those desired running, and those still running there.
/// A global task Pending on its node (no room for its reservations yet) is not sent.
fn assigned_to<'a>(state: &'a ClusterState, node_id: &str) -> impl Iterator<Item = &'a Task> {
    state
        .tasks
        .on_node(node_id)
        .filter(|t| t.status.state >= TaskState::Assigned)
        .filter(|t| t.desired_state == TaskState::Running || !t.status.state.is_terminal())
}
