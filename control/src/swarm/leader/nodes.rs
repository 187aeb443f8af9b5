//! What managers do for the cluster API. Every operation here runs on the Raft leader; on any
//! other node it is forwarded to the leader (callers have been authorized at the first hop).

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use openraft::{BasicNode, ChangeMembers};
use tonic::Status;
use tracing::info;

use super::{
    Active, ManagerRole, NOT_A_MANAGER, Swarm,
    dispatch::{decode_reports, encode_gossip, encode_mesh, encode_tasks, gossip_config},
    lifecycle::{heartbeat_period, internal, now_secs, parse_role},
};
use crate::{
    api::{
        AddRaftMemberRequest, AdmitRequest, AdmitResponse, Empty, HeartbeatRequest,
        HeartbeatResponse, JoinTokenRequest, JoinTokenResponse, ListNodesResponse, NodeInfo,
        RemoveNodeRequest, UpdateNodeRequest,
    },
    cluster::{
        Availability, ClusterInfo, ClusterState, Command, CommandResponse, NodeRecord, Role,
        mesh::RoutingMesh, raft_id,
    },
    pki::{self, ClusterCa, JoinToken},
};

/// How long a membership change may wait for a new member to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards `$call` to the leader unless this node leads; binds the leader's role otherwise.
macro_rules! on_leader {
    ($swarm:expr, $active:ident, $manager:ident, $request:expr, $call:ident) => {
        let $active = $swarm.active().await?;
        let Some($manager) = $active.leading($swarm.node_id()) else {
            let mut leader = $active.leader_client()?;
            return leader
                .$call($request)
                .await
                .map(tonic::Response::into_inner);
        };
    };
}
pub(super) use on_leader;

impl Swarm {
    /// A node presents a join token: check it, issue its certificate, record the node.
    pub async fn admit(&self, request: AdmitRequest) -> Result<AdmitResponse, Status> {
        on_leader!(self, active, manager, request, admit);
        let state = manager.state();
        let cluster = cluster_of(&state)?;
        let ca = ClusterCa {
            cert_pem: cluster.ca_cert_pem.clone(),
            key_pem: cluster.ca_key_pem.clone(),
        };
        let digest = ca.digest().map_err(internal("digesting the CA"))?;
        let token: JoinToken = request
            .token
            .parse()
            .map_err(|e| Status::invalid_argument(format!("{e}")))?;
        let role = if token.matches(&digest, &cluster.worker_secret) {
            Role::Worker
        } else if token.matches(&digest, &cluster.manager_secret) {
            Role::Manager
        } else {
            return Err(Status::permission_denied(
                "invalid join token: it was rotated, or belongs to another swarm",
            ));
        };
        if crate::identity::NodeId::parse(&request.node_id).is_none() {
            return Err(Status::invalid_argument(format!(
                "invalid node ID {:?}",
                request.node_id
            )));
        }
        if request.hostname.is_empty() {
            return Err(Status::invalid_argument("a joining node needs a hostname"));
        }
        let addr: SocketAddr = request
            .addr
            .parse()
            .map_err(|_| Status::invalid_argument(format!("invalid address {:?}", request.addr)))?;
        let data_path_addr = request.data_path_addr.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "invalid data path address {:?}",
                request.data_path_addr
            ))
        })?;
        let creds = ca
            .issue(&request.node_id, role, &cluster.id)
            .map_err(internal("issuing the node certificate"))?;
        // A node that joins again keeps its labels (a restarted node with a wiped state dir
        // gets a new ID and is a new node, as in Swarm).
        let labels = state
            .nodes
            .get(&request.node_id)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        let record = NodeRecord {
            id: request.node_id.clone(),
            hostname: request.hostname.clone(),
            role,
            availability: Availability::Active,
            labels,
            addr,
            data_path_addr,
            created_at: now_secs(),
        };
        self.propose(manager, Command::AddNode(record)).await?;
        active.liveness.record(&request.node_id);
        info!(node_id = %request.node_id, hostname = %request.hostname, role = role.as_str(), "node admitted");
        Ok(AdmitResponse {
            cluster_id: cluster.id.clone(),
            role: role.as_str().to_string(),
            ca_cert_pem: creds.ca_cert_pem,
            cert_pem: creds.cert_pem,
            key_pem: creds.key_pem,
            manager_addrs: manager_addrs(&manager.state()),
        })
    }

    /// A manager's Raft server is up: make it a learner, let it catch up, then a voter.
    pub async fn add_raft_member(&self, request: AddRaftMemberRequest) -> Result<Empty, Status> {
        on_leader!(self, active, manager, request, add_raft_member);
        let state = manager.state();
        let node = state
            .nodes
            .get(&request.node_id)
            .ok_or_else(|| Status::not_found(format!("node {} not found", request.node_id)))?;
        if node.role != Role::Manager {
            return Err(Status::permission_denied(format!(
                "node {} is not a manager",
                request.node_id
            )));
        }
        let id = raft_id(&node.id);
        let raft = &manager.raft;
        let add = raft.add_learner(id, BasicNode::new(node.addr.to_string()), true);
        tokio::time::timeout(CATCH_UP_TIMEOUT, add)
            .await
            .map_err(|_| Status::unavailable("the new manager did not catch up in time"))?
            .map_err(internal("adding a raft learner"))?;
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(internal("adding a raft voter"))?;
        drop(active);
        info!(node_id = %request.node_id, "manager joined raft");
        Ok(Empty {})
    }

    /// Every node, with the leader's view of its status.
    pub async fn list_nodes(&self) -> Result<ListNodesResponse, Status> {
        on_leader!(self, active, manager, Empty {}, list_nodes);
        let state = manager.state();
        let raft = RaftView::of(manager);
        let period = heartbeat_period(&state);
        let nodes = state
            .nodes
            .values()
            .map(|node| node_info(node, &active, &raft, period))
            .collect();
        Ok(ListNodesResponse { nodes })
    }

    /// `node update`, `node promote` and `node demote`.
    pub async fn update_node(&self, request: UpdateNodeRequest) -> Result<NodeInfo, Status> {
        on_leader!(self, active, manager, request, update_node);
        let state = manager.state();
        let node = resolve_node(&state, &request.node)?.clone();
        let availability = match request.availability.as_str() {
            "" => None,
            a => Some(Availability::parse(a).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "invalid availability {a:?}: expected active, pause or drain"
                ))
            })?),
        };
        for key in request.labels_add.keys().chain(&request.labels_rm) {
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(Status::invalid_argument(format!(
                    "invalid label key {key:?}"
                )));
            }
        }
        if availability.is_some() || !request.labels_add.is_empty() || !request.labels_rm.is_empty()
        {
            self.propose(
                manager,
                Command::UpdateNode {
                    id: node.id.clone(),
                    availability,
                    labels_add: request.labels_add.clone().into_iter().collect(),
                    labels_rm: request.labels_rm.clone(),
                },
            )
            .await?;
        }
        if !request.role.is_empty() {
            let role = parse_role(&request.role)?;
            self.set_role(manager, &state, &node, role).await?;
        }
        let state = manager.state();
        let updated = state
            .nodes
            .get(&node.id)
            .ok_or_else(|| Status::not_found(format!("node {} not found", node.id)))?;
        let raft = RaftView::of(manager);
        Ok(node_info(updated, &active, &raft, heartbeat_period(&state)))
    }

    async fn set_role(
        &self,
        manager: &ManagerRole,
        state: &ClusterState,
        node: &NodeRecord,
        role: Role,
    ) -> Result<(), Status> {
        if node.role == role {
            return Ok(());
        }
        match role {
            // The node learns of it from its next heartbeat, starts Raft, and asks to be
            // added as a voter (`add_raft_member`).
            Role::Manager => {
                self.propose(
                    manager,
                    Command::SetRole {
                        id: node.id.clone(),
                        role,
                    },
                )
                .await
            }
            Role::Worker => {
                let managers = state
                    .nodes
                    .values()
                    .filter(|n| n.role == Role::Manager)
                    .count();
                if managers <= 1 {
                    return Err(Status::failed_precondition(
                        "attempting to demote the last manager of the swarm",
                    ));
                }
                // Role first: if the demoted node is this leader, it stops leading once it
                // leaves the voters, and could not write the role afterwards.
                self.propose(
                    manager,
                    Command::SetRole {
                        id: node.id.clone(),
                        role,
                    },
                )
                .await?;
                let id = raft_id(&node.id);
                let voters: Vec<u64> = manager
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                if voters.contains(&id) {
                    manager
                        .raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(internal("removing a raft voter"))?;
                }
                Ok(())
            }
        }
    }

    /// `node rm`.
    pub async fn remove_node(&self, request: RemoveNodeRequest) -> Result<Empty, Status> {
        on_leader!(self, active, manager, request, remove_node);
        let state = manager.state();
        let node = resolve_node(&state, &request.node)?.clone();
        if node.role == Role::Manager {
            return Err(Status::failed_precondition(format!(
                "node {} is a cluster manager and is a member of the raft cluster. It must be \
                 demoted to worker before removal",
                node.id
            )));
        }
        if !request.force && !active.liveness.is_down(&node.id, heartbeat_period(&state)) {
            return Err(Status::failed_precondition(format!(
                "node {} is not down and can't be removed",
                node.id
            )));
        }
        self.propose(
            manager,
            Command::RemoveNode {
                id: node.id.clone(),
            },
        )
        .await?;
        Ok(Empty {})
    }

    /// `swarm join-token [--rotate] worker|manager`.
    pub async fn join_token(&self, request: JoinTokenRequest) -> Result<JoinTokenResponse, Status> {
        on_leader!(self, active, manager, request, join_token);
        let role = parse_role(&request.role)?;
        if request.rotate {
            let secret = pki::generate_secret();
            self.propose(manager, Command::RotateSecret { role, secret })
                .await?;
        }
        let state = manager.state();
        let cluster = cluster_of(&state)?;
        let ca = ClusterCa {
            cert_pem: cluster.ca_cert_pem.clone(),
            key_pem: cluster.ca_key_pem.clone(),
        };
        let secret = match role {
            Role::Worker => cluster.worker_secret.clone(),
            Role::Manager => cluster.manager_secret.clone(),
        };
        let token = JoinToken::new(ca.digest().map_err(internal("digesting the CA"))?, secret);
        Ok(JoinTokenResponse {
            token: token.to_string(),
            manager_addr: active.file().addr.to_string(),
        })
    }

    /// A node says it is alive, and what its tasks did; gets its task assignments back.
    pub async fn heartbeat(&self, request: HeartbeatRequest) -> Result<HeartbeatResponse, Status> {
        let active = self.active().await?;
        // Followers keep a record too, so a follower that becomes leader knows who was alive.
        active.liveness.record(&request.node_id);
        on_leader!(self, active, manager, request, heartbeat);
        let state = manager.state();
        let node = state.nodes.get(&request.node_id).ok_or_else(|| {
            Status::permission_denied(format!(
                "node {} is not a member of this swarm",
                request.node_id
            ))
        })?;
        let reports = decode_reports(&request.task_reports)?;
        let assigned = self.dispatch(manager, &request.node_id, reports).await?;
        Ok(HeartbeatResponse {
            period_ms: heartbeat_period(&state).as_millis() as u64,
            leader_addr: active.file().addr.to_string(),
            manager_addrs: manager_addrs(&state),
            role: node.role.as_str().to_string(),
            assigned_tasks: encode_tasks(&assigned),
            gossip: encode_gossip(&gossip_config(&state)),
            routing_mesh: encode_mesh(&RoutingMesh::for_node(&state, &request.node_id)),
        })
    }

    /// The role the store gives `node_id`, when this node holds the store.
    pub(super) async fn stored_role(&self, node_id: &str) -> Option<Role> {
        let active = self.active().await.ok()?;
        let manager = active.manager.as_ref()?;
        manager.state().nodes.get(node_id).map(|n| n.role)
    }

    /// Appends `command` to the Raft log and waits for it to apply.
    pub(super) async fn propose(
        &self,
        manager: &ManagerRole,
        command: Command,
    ) -> Result<(), Status> {
        let response = manager
            .raft
            .client_write(command)
            .await
            .map_err(|e| Status::unavailable(format!("cannot commit to the raft log: {e}")))?;
        match response.data {
            CommandResponse::Ok => Ok(()),
            CommandResponse::Rejected(why) => Err(Status::failed_precondition(why)),
        }
    }

    /// Refuses the call unless this node is a manager.
    pub(super) async fn require_manager(&self) -> Result<(), Status> {
        let active = self.active().await?;
        if active.role() != Role::Manager {
            return Err(Status::permission_denied(NOT_A_MANAGER));
        }
        Ok(())
    }
}

fn cluster_of(state: &ClusterState) -> Result<&ClusterInfo, Status> {
    state
        .cluster
        .as_ref()
        .ok_or_else(|| Status::unavailable("the swarm is still being initialized"))
}

fn manager_addrs(state: &ClusterState) -> Vec<String> {
    state
        .nodes
        .values()
        .filter(|n| n.role == Role::Manager)
        .map(|n| n.addr.to_string())
        .collect()
}

/// The leader's view of Raft, for manager status.
struct RaftView {
    leader: Option<u64>,
    voters: BTreeSet<u64>,
}

impl RaftView {
    fn of(manager: &ManagerRole) -> Self {
        let metrics = manager.raft.metrics().borrow().clone();
        RaftView {
            leader: metrics.current_leader,
            voters: metrics.membership_config.membership().voter_ids().collect(),
        }
    }
}

fn node_info(node: &NodeRecord, active: &Active, raft: &RaftView, period: Duration) -> NodeInfo {
    let id = raft_id(&node.id);
    let is_leader = raft.leader == Some(id);
    let down = !is_leader && active.liveness.is_down(&node.id, period);
    // A manager counts as reachable only once it votes: a promoted node is unreachable until
    // it has caught up and joined the Raft membership.
    let manager_status = match (node.role, is_leader, down || !raft.voters.contains(&id)) {
        (Role::Worker, ..) => "",
        (Role::Manager, true, _) => "leader",
        (Role::Manager, false, false) => "reachable",
        (Role::Manager, false, true) => "unreachable",
    };
    NodeInfo {
        id: node.id.clone(),
        hostname: node.hostname.clone(),
        role: node.role.as_str().to_string(),
        availability: node.availability.as_str().to_string(),
        labels: node.labels.clone().into_iter().collect(),
        addr: node.addr.to_string(),
        data_path_addr: node.data_path_addr.to_string(),
        status: if down { "down" } else { "ready" }.to_string(),
        manager_status: manager_status.to_string(),
        created_at: node.created_at,
        last_seen_ms: if is_leader {
            0
        } else {
            active.liveness.silence(&node.id).as_millis() as u64
        },
    }
}

/// Finds a node by ID, hostname, or unique ID prefix, as Docker does.
pub(super) fn resolve_node<'a>(
    state: &'a ClusterState,
    reference: &str,
) -> Result<&'a NodeRecord, Status> {
    if reference.is_empty() {
        return Err(Status::invalid_argument(
            "a node ID or hostname is required",
        ));
    }
    if let Some(node) = state.nodes.get(reference) {
        return Ok(node);
    }
    let by_name: Vec<&NodeRecord> = state
        .nodes
        .values()
        .filter(|n| n.hostname == reference)
        .collect();
    let matches = if by_name.is_empty() {
        state
            .nodes
            .values()
            .filter(|n| n.id.starts_with(reference))
            .collect()
    } else {
        by_name
    };
    match matches.as_slice() {
        [node] => Ok(node),
        [] => Err(Status::not_found(format!("node {reference} not found"))),
        _ => Err(Status::failed_precondition(format!(
            "node {reference} is ambiguous ({} matches)",
            matches.len()
        ))),
    }
}
