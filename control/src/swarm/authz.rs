//! Who may call what on the cluster API.
//!
//! What a node may do follows what the swarm knows of it now, never its certificate alone: on
//! a manager, the node's record in the Raft store (a demoted manager's certificate still says
//! manager; a removed node's certificate is still signed by the CA); on a worker, which has no
//! store, the managers the leader named with the last heartbeat (the only callers a worker
//! serves: managers relaying logs and exec). A node the swarm does not know gets nothing but
//! `Admit`, whose credential is the join token. A manager's 2377 server also refuses a removed
//! node's certificate at the TLS handshake ([`StoreRevocations`]).

use std::sync::PoisonError;

use super::{Swarm, error::Error};
use crate::{
    cluster::Role,
    pki::{PeerIdentity, Revocations},
    raft::store::StateReader,
};

/// Who is calling.
pub enum Caller {
    /// Root on this node: the local unix socket (mode 0600).
    Root,
    /// 2377 without a client certificate.
    Anonymous,
    /// 2377 with a certificate of the cluster CA, for this node.
    Node(PeerIdentity),
}

/// What a call needs of its caller.
#[derive(Clone, Copy, Debug)]
pub enum Needs<'a> {
    /// Root on this node (init, join, leave).
    LocalRoot,
    /// Root on this node, or a node the swarm knows (network listings).
    Member,
    /// Root on a manager, or a node the swarm knows as a manager.
    Manager,
    /// Root on any node, or a manager relaying to the task's node (exec).
    ManagerOrRoot,
    /// A node the swarm knows as a manager, over 2377 (Raft).
    ManagerNode,
    /// The node the request is about, speaking for itself, or a manager relaying for it
    /// (heartbeats, certificate renewal).
    Itself(&'a str),
}

impl Swarm {
    /// Refuses the call unless `caller` has what `needs` asks.
    pub(super) async fn authorize(&self, caller: &Caller, needs: Needs<'_>) -> Result<(), Error> {
        match (caller, needs) {
            (Caller::Root, Needs::Manager) => self.require_manager().await,
            (Caller::Root, Needs::ManagerNode | Needs::Itself(_)) => Err(no_certificate()),
            (Caller::Root, _) => Ok(()),
            (Caller::Anonymous, _) => Err(no_certificate()),
            (Caller::Node(_), Needs::LocalRoot) => Err(Error::denied(
                "this call is only available on the node's local socket",
            )),
            (Caller::Node(peer), needs) => {
                let role = match self.known_role(&peer.node_id).await {
                    Some(role) => role,
                    // A manager whose store holds no swarm yet (just joined or promoted, its
                    // Raft catching up) knows nobody, and must still take Raft from the
                    // managers: until its store says otherwise, the certificate vouches for
                    // the role, for Raft alone.
                    None if matches!(needs, Needs::ManagerNode) && self.catching_up().await => {
                        peer.role
                    }
                    None => return Err(Error::UnknownNode(peer.node_id.clone())),
                };
                let allowed = match needs {
                    Needs::Member => true,
                    Needs::Itself(node_id) => node_id == peer.node_id || role == Role::Manager,
                    _ => role == Role::Manager,
                };
                if allowed {
                    Ok(())
                } else {
                    Err(Error::denied(format!(
                        "node {} is not a manager: this call needs a manager",
                        peer.node_id
                    )))
                }
            }
        }
    }

    /// The role the swarm gives `node_id` now, as this node knows it: from the store on a
    /// manager; on a worker, manager for the managers the leader last named, else unknown.
    async fn known_role(&self, node_id: &str) -> Option<Role> {
        let active = self.active().await.ok()?;
        match &active.manager {
            Some(manager) => manager
                .state_machine
                .read(|state| state.nodes.get(node_id).map(|n| n.role)),
            None => active
                .manager_ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|id| id == node_id)
                .then_some(Role::Manager),
        }
    }

    /// Whether this node is a manager whose store has not learned of the swarm yet.
    async fn catching_up(&self) -> bool {
        let Ok(active) = self.active().await else {
            return false;
        };
        active
            .manager
            .as_ref()
            .is_some_and(|manager| manager.state_machine.read(|state| state.cluster.is_none()))
    }

    /// Refuses the call unless this node is a manager (Docker's words otherwise).
    pub(super) async fn require_manager(&self) -> Result<(), Error> {
        let active = self.active().await?;
        if active.role() != Role::Manager {
            return Err(Error::NotAManager);
        }
        Ok(())
    }
}

/// The removed nodes of a manager's store, which its 2377 server refuses at the handshake.
#[derive(Debug)]
pub(super) struct StoreRevocations(pub StateReader);

impl Revocations for StoreRevocations {
    fn is_revoked(&self, node_id: &str) -> bool {
        self.0.read(|state| state.revoked.contains_key(node_id))
    }
}

fn no_certificate() -> Error {
    Error::Unauthenticated("this call needs a cluster certificate")
}
