//! Commands: the entries of the Raft log, and how each one changes [`ClusterState`].
//!
//! Callers validate before proposing (for a clear error without a log entry); `apply`
//! validates again, because the state may have changed between the check and the commit.

use serde::{Deserialize, Serialize};

use super::{
    certs::{IssuedCert, RootRotation},
    model::{Availability, ClusterInfo, ClusterState, NodeRecord, Role},
    network::Network,
    service::{Service, Task, TaskStatus},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `swarm init`: the cluster and its first node (a manager).
    Init {
        cluster: ClusterInfo,
        node: NodeRecord,
    },
    /// A node joined (`swarm join`), or re-joined with the same ID.
    AddNode(NodeRecord),
    /// `node update`.
    UpdateNode {
        id: String,
        availability: Option<Availability>,
        labels_add: Vec<(String, String)>,
        labels_rm: Vec<String>,
    },
    /// `node promote` / `node demote`.
    SetRole { id: String, role: Role },
    /// `node rm`, or a node's `swarm leave`. The node's certificates are refused until the
    /// last one it could hold expires (`revoked_until`); entries past theirs are dropped then
    /// (`removed_at`), so the list stays as long as the removals of one certificate lifetime.
    RemoveNode {
        id: String,
        /// Unix time of the removal, seconds.
        removed_at: u64,
        /// Unix time the last certificate the node could hold expires, seconds.
        revoked_until: u64,
    },
    /// `swarm join-token --rotate`.
    RotateSecret { role: Role, secret: String },
    /// `service create`: the name must be free.
    CreateService(Service),
    /// `service update`, `scale`, rollback, and the orchestrator's update progress.
    UpdateService(Service),
    /// `service rm`: the service and all its tasks.
    RemoveService { id: String },
    /// The orchestrator creates or changes tasks (placement, desired state).
    PutTasks(Vec<Task>),
    /// Nodes report what their tasks did. Reports for unknown tasks, from a node the task is
    /// not on, or moving a task backwards are ignored: nodes may report late.
    ReportTasks {
        node_id: String,
        reports: Vec<(String, TaskStatus)>,
    },
    /// The orchestrator prunes task history.
    RemoveTasks(Vec<String>),
    /// `network create`, and the ingress network at `swarm init`. Name, subnet and VNI must be
    /// free.
    CreateNetwork(Network),
    /// `network rm`.
    RemoveNetwork { id: String },
    /// A new network-DB key (the leader's periodic rotation, or `swarm update
    /// --rotate-gossip-key`).
    RotateGossipKey(super::gossip::GossipKey),
    /// `swarm update --autolock`, `swarm unlock-key --rotate`: the unlock key, or `None` to
    /// turn autolock off.
    SetUnlockKey(Option<String>),
    /// A certificate was issued for a node (admission, renewal): the public key it certifies.
    SetNodeKey { id: String, public_key: Vec<u8> },
    /// Secrets and configs created, relabelled or removed (see [`super::objects`]).
    Objects(super::objects::ObjectCommand),
    /// A certificate was issued for a node (admission, renewal, role change, root rotation):
    /// the public key it certifies (as [`Command::SetNodeKey`]) and what identifies it.
    CertIssued {
        id: String,
        public_key: Vec<u8>,
        cert: IssuedCert,
    },
    /// `swarm init --cert-expiry`, `swarm update --cert-expiry`: the lifetime of the node
    /// certificates issued from now on, seconds (0: the default).
    SetCertExpiry { secs: u64 },
    /// `swarm ca --rotate`: a new CA to move to, replacing a rotation under way.
    StartCaRotation(RootRotation),
    /// Every node uses a certificate of the rotation's CA (`ca_cert_pem`): it becomes the
    /// root, the old one is dropped, and the join tokens change (they name the root). Refused
    /// unless that rotation is still the one under way.
    FinishCaRotation {
        ca_cert_pem: String,
        worker_secret: String,
        manager_secret: String,
    },
    /// A change to the swarm's settings: `change` (one of [`Command::is_setting`]'s) applied
    /// only while the settings are at `expected_version` when one is given (else
    /// [`CommandResponse::OutOfSequence`]); it bumps [`ClusterInfo::version`] and sets
    /// `updated_at_ms` to `at_ms`, the leader's clock (the apply reads none: every manager
    /// must reach the same state).
    Settings {
        change: Box<Command>,
        expected_version: Option<u64>,
        at_ms: u64,
    },
}

impl Command {
    /// Whether this command changes what the swarm's settings show, so that it belongs in a
    /// [`Command::Settings`].
    pub fn is_setting(&self) -> bool {
        matches!(
            self,
            Command::SetCertExpiry { .. }
                | Command::SetUnlockKey(_)
                | Command::RotateSecret { .. }
                | Command::StartCaRotation(_)
                | Command::FinishCaRotation { .. }
        )
    }
}

/// The shortest `--cert-expiry` the store takes, seconds (`pki::MIN_NODE_CERT_EXPIRY`).
const MIN_CERT_EXPIRY_SECS: u64 = 30;

/// What applying a command produced. Errors are part of the replicated result, not a failure
/// of the log: every manager reaches the same verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    Ok,
    Rejected(String),
    /// A write quoted a version of its object that is no longer the current one.
    OutOfSequence,
}

/// Why a command was not applied. Its text is the replicated verdict
/// ([`CommandResponse::Rejected`]); the allocator's errors keep their type until then.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Allocation(#[from] crate::allocator::AllocError),
    #[error("update out of sequence")]
    OutOfSequence,
}

impl From<String> for Rejection {
    fn from(why: String) -> Self {
        Rejection::Refused(why)
    }
}

impl From<&str> for Rejection {
    fn from(why: &str) -> Self {
        Rejection::Refused(why.to_string())
    }
}

impl ClusterState {
    /// Applies `command`, or leaves the state untouched and says why not.
    pub fn apply(&mut self, command: &Command) -> CommandResponse {
        match self.try_apply(command) {
            Ok(()) => {
                if matches!(
                    command,
                    Command::Init { .. }
                        | Command::AddNode(_)
                        | Command::RemoveNode { .. }
                        | Command::CreateNetwork(_)
                ) {
                    crate::allocator::assign_ingress_addrs(self);
                }
                CommandResponse::Ok
            }
            Err(Rejection::OutOfSequence) => CommandResponse::OutOfSequence,
            Err(why) => CommandResponse::Rejected(why.to_string()),
        }
    }

    fn try_apply(&mut self, command: &Command) -> Result<(), Rejection> {
        match command {
            Command::Init { cluster, node } => {
                if self.cluster.is_some() {
                    return Err("This node is already part of a swarm.".into());
                }
                self.cluster = Some(cluster.clone());
                self.nodes.insert(node.id.clone(), node.clone());
            }
            Command::AddNode(node) => {
                self.cluster_info()?;
                // Checked again in the replicated apply: two joins racing with one ID cannot
                // both win, and a node's record is never overwritten by another's.
                if self.nodes.contains_key(&node.id) {
                    return Err(
                        format!("node {} is already a member of this swarm", node.id).into(),
                    );
                }
                self.nodes.insert(node.id.clone(), node.clone());
            }
            Command::UpdateNode {
                id,
                availability,
                labels_add,
                labels_rm,
            } => {
                let node = self.node_mut(id)?;
                if let Some(a) = availability {
                    node.availability = *a;
                }
                for key in labels_rm {
                    node.labels.remove(key);
                }
                for (key, value) in labels_add {
                    node.labels.insert(key.clone(), value.clone());
                }
            }
            Command::SetRole { id, role } => {
                self.node_mut(id)?.role = *role;
            }
            Command::RemoveNode {
                id,
                removed_at,
                revoked_until,
            } => {
                self.nodes
                    .remove(id)
                    .ok_or_else(|| format!("node {id} not found"))?;
                self.node_keys.remove(id);
                self.node_certs.remove(id);
                self.revoked.retain(|_, until| *until > *removed_at);
                self.revoked.insert(id.clone(), *revoked_until);
            }
            Command::CreateService(service) => {
                if self.services.named(&service.spec.name).is_some() {
                    return Err(format!("service {} already exists", service.spec.name).into());
                }
                super::objects::check_new_references(self, &service.spec, &[])?;
                self.check_ingress_present(&service.spec)?;
                let mut service = service.clone();
                crate::allocator::assign_published_ports(self, &mut service)?;
                crate::allocator::assign_vips(self, &mut service)?;
                self.services.insert(service.id.clone(), service);
            }
            Command::UpdateService(service) => {
                let current = self
                    .services
                    .get(&service.id)
                    .ok_or_else(|| format!("service {} not found", service.id))?;
                // A write based on an older version (the orchestrator's, racing a user's
                // update) must not undo the newer spec.
                if service.version < current.version {
                    return Err(format!(
                        "service {} changed meanwhile (version {} < {}); retry",
                        service.spec.name, service.version, current.version
                    )
                    .into());
                }
                let before: Vec<&super::ServiceSpec> = std::iter::once(&current.spec)
                    .chain(&current.previous_spec)
                    .collect();
                super::objects::check_new_references(self, &service.spec, &before)?;
                self.check_ingress_present(&service.spec)?;
                let mut service = service.clone();
                // The stored VIPs and ports, not the writer's copy, are what the service keeps.
                service.virtual_ips = current.virtual_ips.clone();
                service.endpoint_ports = current.endpoint_ports.clone();
                crate::allocator::assign_published_ports(self, &mut service)?;
                crate::allocator::assign_vips(self, &mut service)?;
                self.services.insert(service.id.clone(), service);
            }
            Command::RemoveService { id } => {
                self.services
                    .remove(id)
                    .ok_or_else(|| format!("service {id} not found"))?;
                self.tasks.retain(|_, t| t.service_id != *id);
            }
            Command::PutTasks(tasks) => {
                for task in tasks {
                    if !self.services.contains_key(&task.service_id) {
                        continue;
                    }
                    let mut task = task.clone();
                    if !self.tasks.contains_key(&task.id) && self.address_conflict(&task) {
                        // Addressed by the leader from a state older than a VIP allocated
                        // since: back to Pending, the next pass addresses it again.
                        task.networks.clear();
                        task.node_id.clear();
                        task.status.state = super::TaskState::Pending;
                        task.status.error = "address conflict with a service VIP; retrying".into();
                    }
                    // The writer decided on a state read before a node's report (or the
                    // orchestrator's placement) was committed: keep the further-along status,
                    // states only move forward, and with it the node and addresses it got
                    // (a re-tag by `service update` must not unplace a task placed meanwhile).
                    if let Some(existing) = self.tasks.get(&task.id)
                        && existing.status.state > task.status.state
                    {
                        task.status = existing.status.clone();
                        task.node_id.clone_from(&existing.node_id);
                        task.networks.clone_from(&existing.networks);
                    }
                    self.tasks.insert(task.id.clone(), task);
                }
            }
            Command::ReportTasks { node_id, reports } => {
                for (id, status) in reports {
                    // Only a report that changes something writes: a write moves the node's
                    // number (`Tasks::changed_on`), and its next beat gets its tasks whole.
                    let changes = self.tasks.get(id).is_some_and(|task| {
                        task.node_id == *node_id
                            && status.state >= task.status.state
                            && task.status != *status
                    });
                    if changes {
                        self.tasks.update(id, |task| task.status = status.clone());
                    }
                }
            }
            Command::RemoveTasks(ids) => {
                for id in ids {
                    self.tasks.remove(id);
                }
            }
            Command::CreateNetwork(network) => {
                if network.ingress
                    && let Some(ingress) = self.networks.values().find(|n| n.ingress)
                {
                    return Err(
                        format!("ingress network ({}) is already present", ingress.id).into(),
                    );
                }
                if let Some(other) = self.networks.values().find(|n| {
                    n.name == network.name
                        || n.vni == network.vni
                        || n.subnet.contains(&network.subnet)
                        || network.subnet.contains(&n.subnet)
                }) {
                    return Err(format!(
                        "network {} conflicts with network {}",
                        network.name, other.name
                    )
                    .into());
                }
                self.networks.insert(network.id.clone(), network.clone());
            }
            Command::RemoveNetwork { id } => {
                // Checked here, in the replicated apply, so a service created concurrently on
                // the network cannot slip between a check and the removal.
                if let Some(user) = self
                    .services
                    .values()
                    .find(|s| s.spec.networks.contains(id))
                {
                    let name = self.networks.get(id).map_or(id.as_str(), |n| &n.name);
                    return Err(
                        format!("network {name} is in use by service {}", user.spec.name).into(),
                    );
                }
                let ingress = self.networks.get(id).is_some_and(|n| n.ingress);
                if ingress
                    && let Some(user) = self.services.values().find(|s| s.spec.needs_ingress())
                {
                    return Err(format!(
                        "ingress network cannot be removed because service {} depends on it",
                        user.spec.name
                    )
                    .into());
                }
                self.networks
                    .remove(id)
                    .ok_or_else(|| format!("network {id} not found"))?;
                if ingress {
                    // The nodes' addresses were on it; a new ingress network gives new ones.
                    self.ingress_addrs.clear();
                }
            }
            Command::RotateGossipKey(key) => {
                let cluster = self.cluster.as_mut().ok_or("no swarm")?;
                super::gossip::rotate(&mut cluster.gossip_keys, key.clone());
            }
            Command::SetUnlockKey(key) => {
                let cluster = self.cluster.as_mut().ok_or("no swarm")?;
                cluster.unlock_key = key.clone();
            }
            Command::RotateSecret { role, secret } => {
                let cluster = self.cluster.as_mut().ok_or("no swarm")?;
                match role {
                    Role::Worker => cluster.worker_secret = secret.clone(),
                    Role::Manager => cluster.manager_secret = secret.clone(),
                }
            }
            Command::SetNodeKey { id, public_key } => {
                // Only for a member: a key must not outlive (or precede) its node's record.
                self.node_mut(id)?;
                self.node_keys.insert(id.clone(), public_key.clone());
            }
            Command::Objects(command) => {
                if command.is_stale(self) {
                    return Err(Rejection::OutOfSequence);
                }
                command.apply(self)?;
            }
            Command::CertIssued {
                id,
                public_key,
                cert,
            } => {
                self.node_mut(id)?;
                self.node_keys.insert(id.clone(), public_key.clone());
                self.node_certs.insert(id.clone(), cert.clone());
            }
            Command::SetCertExpiry { secs } => {
                self.cluster_info()?;
                if (1..MIN_CERT_EXPIRY_SECS).contains(secs) {
                    return Err(format!(
                        "node certificates must be valid for at least {MIN_CERT_EXPIRY_SECS}s"
                    )
                    .into());
                }
                self.ca.cert_expiry_secs = *secs;
            }
            Command::StartCaRotation(rotation) => {
                self.cluster_info()?;
                self.ca.rotation = Some(rotation.clone());
            }
            Command::FinishCaRotation {
                ca_cert_pem,
                worker_secret,
                manager_secret,
            } => {
                if self
                    .ca
                    .rotation
                    .as_ref()
                    .is_none_or(|r| r.ca_cert_pem != *ca_cert_pem)
                {
                    return Err("that root rotation is no longer under way".into());
                }
                let cluster = self.cluster.as_mut().ok_or("no swarm")?;
                let rotation = self.ca.rotation.take().ok_or("no root rotation")?;
                cluster.ca_cert_pem = rotation.ca_cert_pem;
                cluster.ca_key_pem = rotation.ca_key_pem;
                cluster.worker_secret = worker_secret.clone();
                cluster.manager_secret = manager_secret.clone();
            }
            Command::Settings {
                change,
                expected_version,
                at_ms,
            } => {
                if !change.is_setting() {
                    return Err("not a change to the swarm's settings".into());
                }
                let version = self.cluster_info()?.version;
                if expected_version.is_some_and(|expected| expected != version) {
                    return Err(Rejection::OutOfSequence);
                }
                self.try_apply(change)?;
                let cluster = self.cluster.as_mut().ok_or("no swarm")?;
                cluster.version = version + 1;
                cluster.updated_at_ms = *at_ms;
            }
        }
        Ok(())
    }

    /// Whether a new task's address on some network is a service's VIP there.
    fn address_conflict(&self, task: &Task) -> bool {
        task.networks.iter().any(|a| {
            let vips = self.services.vips_on(&a.network.id);
            vips.holders(u32::from(a.addr.addr())) > 0
        })
    }

    /// A service publishing in ingress mode needs the routing-mesh network (it may have been
    /// removed: `network rm ingress`).
    fn check_ingress_present(&self, spec: &super::ServiceSpec) -> Result<(), Rejection> {
        if spec.needs_ingress() && !self.networks.values().any(|n| n.ingress) {
            return Err("service needs ingress network, but no ingress network is present".into());
        }
        Ok(())
    }

    fn cluster_info(&self) -> Result<&ClusterInfo, Rejection> {
        self.cluster.as_ref().ok_or_else(|| "no swarm".into())
    }

    fn node_mut(&mut self, id: &str) -> Result<&mut NodeRecord, Rejection> {
        self.nodes
            .get_mut(id)
            .ok_or_else(|| format!("node {id} not found").into())
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::{Command, TaskState};
    use crate::orchestrator::fixture::{Sim, replicated};

    #[test]
    fn only_a_report_that_changes_a_task_moves_its_nodes_number() {
        let mut sim = Sim::new(2);
        sim.create("web", replicated("web", 1));
        sim.settle();
        let task = sim.current("web", 1).clone();
        let node = task.node_id.clone();
        let other = if node == "n1" { "n2" } else { "n1" };
        let report = |node: &str, state: TaskState| {
            let mut status = task.status.clone();
            status.state = state;
            Command::ReportTasks {
                node_id: node.to_string(),
                reports: vec![(task.id.clone(), status)],
            }
        };
        let number = sim.state.tasks.changed_on(&node);
        // The state it is in, from another node, or backwards: nothing changes.
        for command in [
            report(&node, task.status.state),
            report(other, TaskState::Failed),
            report(&node, TaskState::Assigned),
        ] {
            sim.apply(&command);
            assert_eq!(sim.state.tasks.changed_on(&node), number, "{command:?}");
            assert_eq!(sim.state.tasks[&task.id].status, task.status);
        }
        sim.apply(&report(&node, TaskState::Failed));
        assert_ne!(sim.state.tasks.changed_on(&node), number);
        assert_eq!(sim.state.tasks[&task.id].status.state, TaskState::Failed);
    }
}
