//! A manager re-issuing its own certificate from the cluster CA in its Raft store, as
//! swarmkit's managers do: when the whole swarm (or this manager) was off for longer than the
//! certificates live, no manager would take another's expired certificate, so none could
//! renew and the swarm could never come back. A manager holds the CA key (in its store, sealed
//! under autolock: only once unlocked), so on start, and when renewal finds no leader before
//! its certificate runs out, it signs a new one for itself: its own node ID, the manager role
//! (as both `swarm.json` and its store say), from the CA that issues now (a root rotation's
//! new CA, with the cross-signed certificate after it), for the swarm's `--cert-expiry`, and
//! for the key it already has (the swarm knows that key: the network DB checks its entries
//! against it). Workers hold no CA key: theirs stays expired, and they are told to join again.
//!
//! The leader records the certificates it issues (`ClusterState::node_certs`, for a root
//! rotation's progress and a removed node's revocation); this one was not, so once a leader
//! answers, the renewal loop replaces it with one the leader issues and records (see
//! [`Swarm::unrecorded_for`]).

use std::time::Duration;

use tracing::{error, info, warn};

use crate::{
    cluster::{ClusterState, Role},
    error_chain::Chain,
    pki::{self, NodeCredentials},
    raft::store,
    swarm::{Active, Swarm, autolock::AtRest, error::Error, persist},
};

/// A new certificate for `node_id`, with `role` (what this node's `swarm.json` says), from
/// the CA in `state` that issues now, valid for the swarm's `--cert-expiry`, for the key of
/// `current` (this node's credentials). Only a manager's own: the store must know `node_id`
/// as a manager, and `current` must be `node_id`'s.
pub(in crate::swarm) fn own_certificate(
    state: &ClusterState,
    node_id: &str,
    role: Role,
    current: &NodeCredentials,
) -> Result<NodeCredentials, Error> {
    if role != Role::Manager {
        return Err(Error::refused(
            "only a manager holds the cluster CA: a worker cannot re-issue its certificate",
        ));
    }
    let holder =
        pki::identity_of(&current.cert_pem).map_err(Error::pki("reading the node certificate"))?;
    if holder.node_id != node_id {
        return Err(Error::denied(format!(
            "the saved certificate is node {}'s, not this node's ({node_id})",
            holder.node_id
        )));
    }
    let cluster = state
        .cluster
        .as_ref()
        .ok_or_else(|| Error::unavailable("this manager's store holds no swarm yet"))?;
    match state.nodes.get(node_id) {
        Some(node) if node.role == Role::Manager => {}
        Some(_) => {
            return Err(Error::denied(format!(
                "the store knows node {node_id} as a worker"
            )));
        }
        None => {
            return Err(Error::denied(format!(
                "the store knows no node {node_id} (removed?)"
            )));
        }
    }
    // The CA that issues now, as the leader chooses it.
    let pki::IssuingCa { ca, chain, roots } = pki::IssuingCa::of(cluster, &state.ca);
    let expiry = state.ca.cert_expiry(pki::DEFAULT_NODE_CERT_EXPIRY);
    let cert_pem = ca
        .reissue_leaf(
            &current.key_pem,
            node_id,
            Role::Manager,
            &cluster.id,
            expiry,
        )
        .map_err(Error::pki("re-issuing this manager's certificate"))?;
    Ok(NodeCredentials {
        ca_cert_pem: roots,
        cert_pem: format!("{cert_pem}{chain}"),
        key_pem: current.key_pem.clone(),
    })
}

impl Swarm {
    /// After a restart (or `swarm unlock`): the credentials to resume with. A certificate that
    /// expired while the node was off is re-issued from the CA in the store on a manager
    /// (`at_rest` opens the store), saved, and said in one line; on a worker, or if that
    /// fails, the node says in one line that it must join again, remembers it, and this
    /// returns that error.
    pub(in crate::swarm) fn resumable_credentials(
        &self,
        creds: NodeCredentials,
        role: Role,
        at_rest: Option<&AtRest>,
    ) -> Result<NodeCredentials, Error> {
        let cert =
            pki::cert_info(&creds.cert_pem).map_err(Error::pki("reading the certificate"))?;
        if cert.not_after > crate::clock::now_secs() {
            return Ok(creds);
        }
        if let (Role::Manager, Some(at_rest)) = (role, at_rest) {
            match self.reissue_from_store(&creds, at_rest) {
                Ok(fresh) => {
                    let new = pki::cert_info(&fresh.cert_pem)
                        .map_err(Error::pki("reading the certificate"))?;
                    info!(expired = %pki::time_text(cert.not_after),
                        expires = %pki::time_text(new.not_after), serial = %new.serial,
                        "node certificate expired; re-issued from the cluster CA in this \
                         manager's store");
                    return Ok(fresh);
                }
                Err(e) => {
                    warn!(cause = %Chain(&e), "cannot re-issue this manager's expired certificate")
                }
            }
        }
        self.check_not_expired(&creds)?;
        Ok(creds)
    }

    /// Re-issues this manager's certificate from the state its Raft store kept (opened, read
    /// and closed again before Raft starts), and saves it as `at_rest` says (sealed under
    /// autolock).
    fn reissue_from_store(
        &self,
        creds: &NodeCredentials,
        at_rest: &AtRest,
    ) -> Result<NodeCredentials, Error> {
        let state_dir = &self.inner.config.state_dir;
        let state = store::committed_state(&persist::raft_path(state_dir), at_rest.dek.clone())
            .map_err(Error::internal("reading the raft store"))?;
        let fresh = own_certificate(&state, self.node_id(), Role::Manager, creds)?;
        let seal = at_rest.is_sealed().then_some(&at_rest.dek);
        fresh
            .save_sealed(&persist::swarm_dir(state_dir), seal)
            .map_err(Error::pki("saving the node credentials"))?;
        Ok(fresh)
    }

    /// While running: a manager whose certificate expired, or is about to with no leader to
    /// renew it, re-issues it from its store and uses it. `false` (said in a line): it cannot.
    pub(in crate::swarm) async fn reissue_running(&self, active: &std::sync::Arc<Active>) -> bool {
        let Some(manager) = &active.manager else {
            return false;
        };
        let current = active.tls.creds();
        let fresh = match manager
            .read(|state| own_certificate(state, self.node_id(), active.role(), &current))
        {
            Ok(fresh) => fresh,
            Err(e) => {
                warn!(cause = %Chain(&e), "cannot re-issue this manager's certificate");
                return false;
            }
        };
        let old = active.tls.current().cert.not_after;
        match self.install_credentials(active, fresh).await {
            Ok(()) => {
                let new = active.tls.current().cert.clone();
                info!(was_valid_until = %pki::time_text(old),
                    expires = %pki::time_text(new.not_after), serial = %new.serial,
                    "no leader renewed the node certificate in time; re-issued from the \
                     cluster CA in this manager's store");
                true
            }
            Err(e) => {
                error!(cause = %Chain(&e), "cannot use the re-issued certificate");
                false
            }
        }
    }

    /// On a manager: `Some(wait)` when its store records another certificate for it than the
    /// one it uses (one it issued itself): after `wait` (the store has had a few heartbeats to
    /// catch up with a renewal), it asks the leader for one, which the leader records.
    pub(in crate::swarm) fn unrecorded_for(
        &self,
        active: &Active,
        installed_for: Duration,
        settle: Duration,
    ) -> Option<Duration> {
        let manager = active.manager.as_ref()?;
        let fingerprint = &active.tls.current().cert.fingerprint;
        let uses_recorded = manager.read(|state| {
            state
                .node_certs
                .get(self.node_id())
                .map(|c| &c.fingerprint == fingerprint)
        })?;
        if uses_recorded {
            return None;
        }
        Some(settle.saturating_sub(installed_for))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{
        Availability, ClusterInfo, NodeRecord,
        certs::{CaState, RootRotation},
    };
    use crate::pki::ClusterCa;

    const CLUSTER: &str = "cluster1";

    fn node(id: &str, role: Role) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            hostname: id.into(),
            role,
            availability: Availability::Active,
            labels: Default::default(),
            addr: "192.0.2.1:2377".parse().unwrap(),
            data_path_addr: "192.0.2.1".parse().unwrap(),
            created_at: 0,
            resources: Default::default(),
        }
    }

    /// A swarm whose CA issued `m1` (manager) and `w1` (worker) certificates of 40 s, with
    /// the expiry now 60 s.
    fn swarm() -> (ClusterState, ClusterCa, NodeCredentials, NodeCredentials) {
        let ca = ClusterCa::generate(CLUSTER).unwrap();
        let issue = |id: &str, role: Role| {
            let (cert_pem, key_pem) = ca
                .issue_leaf(id, role, CLUSTER, Duration::from_secs(40))
                .unwrap();
            NodeCredentials {
                ca_cert_pem: ca.cert_pem.clone(),
                cert_pem,
                key_pem,
            }
        };
        let (m1, w1) = (issue("m1", Role::Manager), issue("w1", Role::Worker));
        let mut state = ClusterState {
            cluster: Some(ClusterInfo {
                id: CLUSTER.into(),
                ca_cert_pem: ca.cert_pem.clone(),
                ca_key_pem: ca.key_pem.clone(),
                worker_secret: "w".into(),
                manager_secret: "m".into(),
                default_addr_pools: vec!["10.0.0.0/8".into()],
                subnet_size: 24,
                heartbeat_period_ms: 1000,
                created_at: 0,
                gossip_keys: Vec::new(),
                unlock_key: None,
                version: 1,
                updated_at_ms: 0,
            }),
            ca: CaState {
                cert_expiry_secs: 60,
                rotation: None,
            },
            ..ClusterState::default()
        };
        state.nodes.insert("m1".into(), node("m1", Role::Manager));
        state.nodes.insert("w1".into(), node("w1", Role::Worker));
        (state, ca, m1, w1)
    }

    #[test]
    fn a_manager_gets_its_own_certificate_from_the_root_for_the_configured_expiry() {
        let (state, ca, m1, _) = swarm();
        let fresh = own_certificate(&state, "m1", Role::Manager, &m1).unwrap();
        let who = pki::identity_of(&fresh.cert_pem).unwrap();
        assert_eq!((who.node_id.as_str(), who.role), ("m1", Role::Manager));
        assert_eq!(fresh.ca_cert_pem, ca.cert_pem);
        pki::verify_chain(&fresh.cert_pem, &ca.cert_pem).unwrap();
        // The same key, a new certificate: 60 s, backdated by a tenth.
        assert_eq!(fresh.key_pem, m1.key_pem);
        let (old, new) = (
            pki::cert_info(&m1.cert_pem).unwrap(),
            pki::cert_info(&fresh.cert_pem).unwrap(),
        );
        assert_ne!(new.fingerprint, old.fingerprint);
        assert_eq!(new.not_after - new.not_before, 66);
    }

    #[test]
    fn only_its_own_id_and_the_manager_role() {
        let (mut state, _, m1, w1) = swarm();
        // A worker, by its swarm.json or by the store, gets nothing.
        assert!(own_certificate(&state, "w1", Role::Worker, &w1).is_err());
        assert!(own_certificate(&state, "w1", Role::Manager, &w1).is_err());
        assert!(own_certificate(&state, "m1", Role::Worker, &m1).is_err());
        // Another node's ID with this node's credentials.
        assert!(own_certificate(&state, "w1", Role::Manager, &m1).is_err());
        assert!(own_certificate(&state, "m2", Role::Manager, &m1).is_err());
        // Demoted or removed meanwhile, as the store says.
        state.nodes.insert("m1".into(), node("m1", Role::Worker));
        assert!(own_certificate(&state, "m1", Role::Manager, &m1).is_err());
        state.nodes.remove("m1");
        assert!(own_certificate(&state, "m1", Role::Manager, &m1).is_err());
        // A store that holds no swarm yet.
        assert!(own_certificate(&ClusterState::default(), "m1", Role::Manager, &m1).is_err());
    }

    #[test]
    fn during_a_root_rotation_the_new_ca_issues_with_the_cross_signed_certificate() {
        let (mut state, root, m1, _) = swarm();
        let (next, cross_signed_pem) = root.successor(CLUSTER).unwrap();
        state.ca.rotation = Some(RootRotation {
            ca_cert_pem: next.cert_pem.clone(),
            ca_key_pem: next.key_pem.clone(),
            cross_signed_pem: cross_signed_pem.clone(),
            started_at: 1,
        });
        let fresh = own_certificate(&state, "m1", Role::Manager, &m1).unwrap();
        assert!(fresh.cert_pem.ends_with(&cross_signed_pem));
        assert_eq!(
            fresh.ca_cert_pem,
            format!("{}{}", root.cert_pem, next.cert_pem)
        );
        // Nodes that trust only the old root, or only the new one, take it.
        pki::verify_chain(&fresh.cert_pem, &root.cert_pem).unwrap();
        pki::verify_chain(&fresh.cert_pem, &next.cert_pem).unwrap();
    }
}
