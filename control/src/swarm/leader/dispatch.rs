//! The dispatcher: tasks travel to nodes, and their status back, on the heartbeat. Each beat a
//! node sends what its tasks did since the last one and gets every task assigned to it with its
//! desired state, the data of the secrets and configs its tasks about to start use (and of no
//! others), the network DB's keys, its routing mesh and the roots to trust; the node's
//! [`TaskRunner`](crate::swarm::TaskRunner) makes its processes follow.

use super::{Leader, heartbeat_period, nodes::manager_addrs};
use crate::{
    api::{HeartbeatRequest, HeartbeatResponse},
    cluster::{
        ClusterState, Command, Role, Task, TaskState, gossip::GossipConfig, mesh::RoutingMesh,
        objects::TaskFiles,
    },
    swarm::{
        codec::{
            decode_reports, encode_files, encode_gossip, encode_mesh, encode_tasks, mesh_digest,
        },
        error::Error,
        node::runner::TaskReports,
    },
};

impl Leader {
    /// A node says what its tasks did, and gets its task assignments back. (That it is alive
    /// was recorded by the manager the beat reached first.)
    pub async fn heartbeat(&self, request: HeartbeatRequest) -> Result<HeartbeatResponse, Error> {
        if !self.state().nodes.contains_key(&request.node_id) {
            return Err(Error::denied(format!(
                "node {} is not a member of this swarm",
                request.node_id
            )));
        }
        let reports = decode_reports(&request.task_reports)?;
        let (assigned, files) = self.dispatch(&request.node_id, reports).await?;
        let state = self.state();
        let (ca_certs_pem, renew_certificate) =
            self.certificate_answer(&state, &request.node_id, &request.cert_fingerprint);
        // The mesh lists every service that publishes or has a VIP: sent again only when it
        // changed, so a quiet swarm of many services does not ship it to every node each beat.
        let routing_mesh = encode_mesh(&RoutingMesh::for_node(&state, &request.node_id))?;
        let routing_mesh_digest = mesh_digest(&routing_mesh);
        let routing_mesh = if request.routing_mesh_digest == routing_mesh_digest {
            Vec::new()
        } else {
            routing_mesh
        };
        Ok(HeartbeatResponse {
            period_ms: heartbeat_period(&state).as_millis() as u64,
            leader_addr: self.active.file().addr.to_string(),
            manager_addrs: manager_addrs(&state),
            role: state
                .nodes
                .get(&request.node_id)
                .map_or("", |n| n.role.as_str())
                .to_string(),
            assigned_tasks: encode_tasks(&assigned)?,
            task_files: encode_files(&files)?,
            gossip: encode_gossip(&gossip_config(&state))?,
            routing_mesh,
            routing_mesh_digest,
            manager_ids: state
                .nodes
                .values()
                .filter(|n| n.role == Role::Manager)
                .map(|n| n.id.clone())
                .collect(),
            ca_certs_pem,
            renew_certificate,
        })
    }

    /// Records a node's reports and returns its assignments, with the files they need.
    pub(in crate::swarm) async fn dispatch(
        &self,
        node_id: &str,
        reports: TaskReports,
    ) -> Result<(Vec<Task>, TaskFiles), Error> {
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
        let state = self.state();
        let assigned = assigned_to(&state, node_id);
        let files = TaskFiles::for_tasks(&state, &assigned);
        Ok((assigned, files))
    }
}

/// The keys, peer addresses and node keys every node gets with its heartbeat answer.
pub fn gossip_config(state: &ClusterState) -> GossipConfig {
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
fn assigned_to(state: &ClusterState, node_id: &str) -> Vec<Task> {
    state
        .tasks
        .values()
        .filter(|t| t.node_id == node_id && t.status.state >= TaskState::Assigned)
        .filter(|t| t.desired_state == TaskState::Running || !t.status.state.is_terminal())
        .cloned()
        .collect()
}
