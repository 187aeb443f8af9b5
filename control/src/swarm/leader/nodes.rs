//! The leader's node operations: admission (`Admit`), Raft membership for new managers, and
//! `node ls | update | promote | demote | rm`, `swarm join-token`.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use openraft::{BasicNode, ChangeMembers};
use tracing::info;

use super::{Leader, heartbeat_period};
use crate::{
    api::{
        AddRaftMemberRequest, AdmitRequest, AdmitResponse, Credentials, Empty, JoinTokenRequest,
        JoinTokenResponse, ListNodesResponse, NodeInfo, RemoveNodeRequest, RenewCertificateRequest,
        UpdateNodeRequest,
    },
    clock::now_secs,
    cluster::{
        Availability, ClusterInfo, ClusterState, Command, NodeRecord, NodeResources, Role, raft_id,
    },
    pki::{self, ClusterCa, JoinToken},
    swarm::{Active, ManagerRole, convert::parse_role, error::Error, lookup::resolve_node},
};

/// How long a membership change may wait for a new member to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long node certificates lived before `--cert-expiry` (shoal issued them for a year).
const LEGACY_NODE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

impl Leader {
    /// A node presents a join token: check it, issue its certificate, record the node.
    pub async fn admit(&self, request: AdmitRequest) -> Result<AdmitResponse, Error> {
        let cluster = self.cluster()?;
        let ca = ClusterCa {
            cert_pem: cluster.ca_cert_pem.clone(),
            key_pem: cluster.ca_key_pem.clone(),
        };
        let digest = ca.digest().map_err(Error::pki("digesting the CA"))?;
        let token: JoinToken = request
            .token
            .parse()
            .map_err(|e: pki::PkiError| Error::invalid(e.to_string()))?;
        let role = if token.matches(&digest, &cluster.worker_secret) {
            Role::Worker
        } else if token.matches(&digest, &cluster.manager_secret) {
            Role::Manager
        } else {
            return Err(Error::denied(
                "invalid join token: it was rotated, or belongs to another swarm",
            ));
        };
        if crate::identity::NodeId::parse(&request.node_id).is_none() {
            return Err(Error::invalid(format!(
                "invalid node ID {:?}",
                request.node_id
            )));
        }
        if request.hostname.is_empty() {
            return Err(Error::invalid("a joining node needs a hostname"));
        }
        // The managers decide who a node is: an ID the swarm knows stays its owner's. A join
        // carrying it is refused, or the token's holder could take that node's role, addresses
        // and tasks (a node that left comes back once its record is removed).
        if self.read(|state| state.nodes.contains_key(&request.node_id)) {
            return Err(Error::exists(already_member(&request.node_id)));
        }
        let addr: SocketAddr = request
            .addr
            .parse()
            .map_err(|_| Error::invalid(format!("invalid address {:?}", request.addr)))?;
        let data_path_addr = request.data_path_addr.parse().map_err(|_| {
            Error::invalid(format!(
                "invalid data path address {:?}",
                request.data_path_addr
            ))
        })?;
        let record = NodeRecord {
            id: request.node_id.clone(),
            hostname: request.hostname.clone(),
            role,
            availability: Availability::Active,
            labels: Default::default(),
            addr,
            data_path_addr,
            created_at: now_secs(),
            resources: NodeResources {
                nano_cpus: request.nano_cpus,
                memory_bytes: request.memory_bytes,
            },
        };
        self.propose(Command::AddNode(record)).await?;
        let creds = self.issue_credentials(&request.node_id, role).await?;
        self.active.liveness.record(&request.node_id);
        info!(node_id = %request.node_id, hostname = %request.hostname, role = role.as_str(), "node admitted");
        Ok(AdmitResponse {
            cluster_id: cluster.id.clone(),
            role: role.as_str().to_string(),
            ca_cert_pem: creds.ca_cert_pem,
            cert_pem: creds.cert_pem,
            key_pem: creds.key_pem,
            manager_addrs: self.read(manager_addrs),
        })
    }

    /// A manager's Raft server is up: make it a learner, let it catch up, then a voter.
    pub async fn add_raft_member(&self, request: AddRaftMemberRequest) -> Result<Empty, Error> {
        let node = self
            .read(|state| state.nodes.get(&request.node_id).cloned())
            .ok_or_else(|| Error::not_found(format!("node {} not found", request.node_id)))?;
        if node.role != Role::Manager {
            return Err(Error::denied(format!(
                "node {} is not a manager",
                request.node_id
            )));
        }
        let id = raft_id(&node.id);
        let raft = &self.manager.raft;
        let add = raft.add_learner(id, BasicNode::new(node.addr.to_string()), true);
        tokio::time::timeout(CATCH_UP_TIMEOUT, add)
            .await
            .map_err(|_| Error::unavailable("the new manager did not catch up in time"))?
            .map_err(Error::internal("adding a raft learner"))?;
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(Error::internal("adding a raft voter"))?;
        info!(node_id = %request.node_id, "manager joined raft");
        Ok(Empty {})
    }

    /// Every node, with the leader's view of its status.
    pub async fn list_nodes(&self, _: Empty) -> Result<ListNodesResponse, Error> {
        let raft = RaftView::of(&self.manager);
        self.read(|state| {
            let period = heartbeat_period(state);
            let nodes = state
                .nodes
                .values()
                .map(|node| node_info(node, &self.active, &raft, period))
                .collect();
            Ok(ListNodesResponse { nodes })
        })
    }

    /// `node update`, `node promote` and `node demote`.
    pub async fn update_node(&self, request: UpdateNodeRequest) -> Result<NodeInfo, Error> {
        let node = self.read(|state| resolve_node(state, &request.node).cloned())?;
        let availability = match request.availability.as_str() {
            "" => None,
            a => Some(Availability::parse(a).ok_or_else(|| {
                Error::invalid(format!(
                    "invalid availability {a:?}: expected active, pause or drain"
                ))
            })?),
        };
        for key in request.labels_add.keys().chain(&request.labels_rm) {
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(Error::invalid(format!("invalid label key {key:?}")));
            }
        }
        if availability.is_some() || !request.labels_add.is_empty() || !request.labels_rm.is_empty()
        {
            self.propose(Command::UpdateNode {
                id: node.id.clone(),
                availability,
                labels_add: request.labels_add.clone().into_iter().collect(),
                labels_rm: request.labels_rm.clone(),
            })
            .await?;
        }
        if !request.role.is_empty() {
            let role = parse_role(&request.role)?;
            self.set_role(&node, role).await?;
        }
        let raft = RaftView::of(&self.manager);
        self.read(|state| {
            let updated = state
                .nodes
                .get(&node.id)
                .ok_or_else(|| Error::not_found(format!("node {} not found", node.id)))?;
            Ok(node_info(
                updated,
                &self.active,
                &raft,
                heartbeat_period(state),
            ))
        })
    }

    async fn set_role(&self, node: &NodeRecord, role: Role) -> Result<(), Error> {
        if node.role == role {
            return Ok(());
        }
        match role {
            // The node learns of it from its next heartbeat, starts Raft, and asks to be
            // added as a voter (`add_raft_member`).
            Role::Manager => {
                self.propose(Command::SetRole {
                    id: node.id.clone(),
                    role,
                })
                .await
            }
            Role::Worker => {
                let managers = self.read(|state| {
                    state
                        .nodes
                        .values()
                        .filter(|n| n.role == Role::Manager)
                        .count()
                });
                if managers <= 1 {
                    return Err(Error::refused(
                        "attempting to demote the last manager of the swarm",
                    ));
                }
                // Role first: if the demoted node is this leader, it stops leading once it
                // leaves the voters, and could not write the role afterwards.
                self.propose(Command::SetRole {
                    id: node.id.clone(),
                    role,
                })
                .await?;
                let id = raft_id(&node.id);
                let voters: Vec<u64> = self
                    .manager
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                if voters.contains(&id) {
                    self.manager
                        .raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(Error::internal("removing a raft voter"))?;
                }
                Ok(())
            }
        }
    }

    /// `node rm`.
    pub async fn remove_node(&self, request: RemoveNodeRequest) -> Result<Empty, Error> {
        // What the removal needs of the state, read in place.
        let (node, period, lifetime, last) = self.read(|state| {
            let node = resolve_node(state, &request.node)?.clone();
            // The longest any certificate of it can live: the swarm's expiry now, or a year
            // (certificates issued before the expiry was configurable), or the last one issued.
            let lifetime = state
                .ca
                .cert_expiry(pki::DEFAULT_NODE_CERT_EXPIRY)
                .max(LEGACY_NODE_CERT_VALIDITY)
                .as_secs();
            let last = state.node_certs.get(&node.id).map_or(0, |c| c.not_after);
            Ok::<_, Error>((node, heartbeat_period(state), lifetime, last))
        })?;
        if node.role == Role::Manager {
            return Err(Error::refused(format!(
                "node {} is a cluster manager and is a member of the raft cluster. It must be \
                 demoted to worker before removal",
                node.id
            )));
        }
        if !request.force && !self.active.liveness.is_down(&node.id, period) {
            return Err(Error::refused(format!(
                "node {} is not down and can't be removed",
                node.id
            )));
        }
        let removed_at = now_secs();
        self.propose(Command::RemoveNode {
            id: node.id.clone(),
            removed_at,
            revoked_until: removed_at.saturating_add(lifetime).max(last),
        })
        .await?;
        Ok(Empty {})
    }

    /// A new certificate for a node, with the role the store gives it now (a promoted or
    /// demoted node asks after it learned of the change; every node asks before its
    /// certificate expires, and when a root rotation needs it).
    pub async fn renew_certificate(
        &self,
        request: RenewCertificateRequest,
    ) -> Result<Credentials, Error> {
        let node = self
            .read(|state| state.nodes.get(&request.node_id).cloned())
            .ok_or_else(|| Error::UnknownNode(request.node_id.clone()))?;
        // Recorded before the node gets its new key: every node learns it with its next
        // heartbeat.
        let creds = self.issue_credentials(&node.id, node.role).await?;
        info!(node_id = %node.id, role = node.role.as_str(), "node certificate renewed");
        Ok(Credentials {
            ca_cert_pem: creds.ca_cert_pem,
            cert_pem: creds.cert_pem,
            key_pem: creds.key_pem,
        })
    }

    /// `swarm join-token [--rotate] worker|manager`.
    pub async fn join_token(&self, request: JoinTokenRequest) -> Result<JoinTokenResponse, Error> {
        let role = parse_role(&request.role)?;
        if request.rotate {
            let secret = pki::generate_secret();
            self.propose_setting(Command::RotateSecret { role, secret }, None)
                .await?;
        }
        let cluster = self.cluster()?;
        let ca = ClusterCa {
            cert_pem: cluster.ca_cert_pem.clone(),
            key_pem: cluster.ca_key_pem.clone(),
        };
        let secret = match role {
            Role::Worker => cluster.worker_secret.clone(),
            Role::Manager => cluster.manager_secret.clone(),
        };
        let token = JoinToken::new(ca.digest().map_err(Error::pki("digesting the CA"))?, secret);
        Ok(JoinTokenResponse {
            token: token.to_string(),
            manager_addr: self.active.file().addr.to_string(),
        })
    }
}

/// Why a join with a known node ID is refused, and what to do about it.
pub fn already_member(node_id: &str) -> String {
    format!(
        "node {node_id} is already a member of this swarm: a node joins once; to join it again, \
         remove it first (`shoal node rm {node_id}` on a manager)"
    )
}

pub(super) fn cluster_of(state: &ClusterState) -> Result<&ClusterInfo, Error> {
    state.cluster.as_ref().ok_or_else(|| Error::NotInitialized)
}

pub(super) fn manager_addrs(state: &ClusterState) -> Vec<String> {
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
        nano_cpus: node.resources.nano_cpus,
        memory_bytes: node.resources.memory_bytes,
    }
}
