//! The cluster CA on the leader: issuing node certificates (admission, renewal, role changes)
//! for the swarm's `--cert-expiry`, `swarm update --cert-expiry`, and root rotation
//! (`swarm ca --rotate`), as swarmkit does it:
//!
//! 1. a new CA, its certificate cross-signed by the current root, goes into the store;
//! 2. from then on every certificate comes from the new CA, presented with the cross-signed
//!    one (nodes that still trust only the old root accept it), and every heartbeat answer
//!    names both roots and asks the node for a new certificate until it reports using one;
//! 3. once every node does, the new CA becomes the root: the old one is dropped, and so are
//!    the join tokens, which name the root (new secrets too, as swarmkit).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use tracing::{info, warn};

use super::{Leader, nodes::cluster_of};
use crate::{
    api::{RootCaRequest, RootCaResponse},
    clock::now_secs,
    cluster::{
        ClusterState, Command, Role,
        certs::{IssuedCert, RootRotation},
    },
    error_chain::Chain,
    pki::{self, ClusterCa, NodeCredentials},
    swarm::error::Error,
};

/// On the leader: the certificate (fingerprint) each node said it uses with its last beat.
#[derive(Default)]
pub struct CertReports(Mutex<HashMap<String, String>>);

impl CertReports {
    fn record(&self, node_id: &str, fingerprint: &str) {
        if fingerprint.is_empty() {
            return;
        }
        self.lock()
            .insert(node_id.to_string(), fingerprint.to_string());
    }

    fn snapshot(&self) -> HashMap<String, String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Who issues certificates now.
struct Issuing {
    ca: ClusterCa,
    /// The CA's digest (as in join tokens).
    digest: String,
    /// What follows each certificate: during a rotation, the new CA cross-signed by the root.
    chain: String,
    /// The roots nodes trust: the root, then the rotation's CA.
    roots: String,
}

fn issuing(state: &ClusterState) -> Result<Issuing, Error> {
    let cluster = cluster_of(state)?;
    let pki::IssuingCa { ca, chain, roots } = pki::IssuingCa::of(cluster, &state.ca);
    Ok(Issuing {
        digest: ca.digest().map_err(Error::pki("digesting the CA"))?,
        ca,
        chain,
        roots,
    })
}

/// The roots every node trusts now.
fn roots(state: &ClusterState) -> String {
    match (&state.cluster, &state.ca.rotation) {
        (Some(cluster), None) => cluster.ca_cert_pem.clone(),
        (Some(cluster), Some(rotation)) => {
            format!("{}{}", cluster.ca_cert_pem, rotation.ca_cert_pem)
        }
        (None, _) => String::new(),
    }
}

/// What a heartbeat answer says about certificates to `node_id`, which uses the one with
/// `fingerprint`: the roots to trust, and whether a root rotation needs it to renew now.
pub(super) fn certificate_answer(
    state: &ClusterState,
    node_id: &str,
    fingerprint: &str,
) -> (String, bool) {
    let renew = state.ca.rotation.is_some()
        && issuing(state).is_ok_and(|issuing| {
            !state.holds_cert_from(node_id, Some(fingerprint), &issuing.digest)
        });
    (roots(state), renew)
}

/// Refuses a `--cert-expiry` shoal does not take, and warns below Docker's minimum.
pub(in crate::swarm) fn check_cert_expiry(secs: u64) -> Result<(), Error> {
    if secs < pki::MIN_NODE_CERT_EXPIRY.as_secs() {
        return Err(Error::invalid(format!(
            "invalid --cert-expiry {secs}s: node certificates must be valid for at least {}s",
            pki::MIN_NODE_CERT_EXPIRY.as_secs()
        )));
    }
    if secs < pki::DOCKER_MIN_NODE_CERT_EXPIRY.as_secs() {
        warn!(
            secs,
            "node certificates valid for less than an hour (Docker's minimum): for tests and \
             demos; every node renews at 50-80 % of that"
        );
    }
    Ok(())
}

impl Leader {
    /// A certificate and key for `node_id` with `role`, from the CA that issues now, valid for
    /// the swarm's `--cert-expiry`; recorded (its public key, for the network DB, and its
    /// fingerprint, for a root rotation) before the node gets it.
    pub(super) async fn issue_credentials(
        &self,
        node_id: &str,
        role: Role,
    ) -> Result<NodeCredentials, Error> {
        let (cluster_id, issuing, expiry) = self.read(|state| {
            Ok::<_, Error>((
                cluster_of(state)?.id.clone(),
                issuing(state)?,
                state.ca.cert_expiry(pki::DEFAULT_NODE_CERT_EXPIRY),
            ))
        })?;
        let (cert_pem, key_pem) = issuing
            .ca
            .issue_leaf(node_id, role, &cluster_id, expiry)
            .map_err(Error::pki("issuing the node certificate"))?;
        self.record_issued(node_id, &cert_pem, issuing.digest)
            .await?;
        Ok(NodeCredentials {
            ca_cert_pem: issuing.roots,
            cert_pem: format!("{cert_pem}{}", issuing.chain),
            key_pem,
        })
    }

    async fn record_issued(
        &self,
        node_id: &str,
        cert_pem: &str,
        issuer: String,
    ) -> Result<(), Error> {
        let what = "reading the issued certificate";
        let info = pki::cert_info(cert_pem).map_err(Error::pki(what))?;
        let public_key = pki::certified_key(cert_pem).map_err(Error::pki(what))?;
        self.propose(Command::CertIssued {
            id: node_id.to_string(),
            public_key,
            cert: IssuedCert {
                fingerprint: info.fingerprint,
                not_after: info.not_after,
                issuer,
            },
        })
        .await
    }

    /// The first manager's certificate was issued before the swarm existed (`swarm init`),
    /// and a store of an earlier version knows no certificate: the leader records its own
    /// when the store has none for it.
    pub(super) async fn record_own_cert_if_unknown(&self) -> Result<(), Error> {
        let me = self.node_id();
        let unknown = self.read(|state| {
            if state.node_certs.contains_key(me) {
                return Ok(None);
            }
            Ok::<_, Error>(Some(cluster_of(state)?.ca_cert_pem.clone()))
        })?;
        let Some(ca_cert_pem) = unknown else {
            return Ok(());
        };
        let root = ClusterCa {
            cert_pem: ca_cert_pem,
            key_pem: String::new(),
        };
        let issuer = root.digest().map_err(Error::pki("digesting the CA"))?;
        let cert_pem = self.active.tls.creds().cert_pem;
        self.record_issued(me, &cert_pem, issuer).await
    }

    /// Notes which certificate `node_id` uses (it says so on each beat), for `swarm ca`.
    pub(in crate::swarm) fn note_cert(&self, node_id: &str, fingerprint: &str) {
        self.active.cert_reports.record(node_id, fingerprint);
    }

    /// `swarm ca [--rotate]`: starts a root rotation if asked, then says where it stands.
    pub async fn root_ca(&self, request: RootCaRequest) -> Result<RootCaResponse, Error> {
        if request.rotate {
            self.start_root_rotation().await?;
        }
        let reports = self.active.cert_reports.snapshot();
        self.read(|state| {
            let cluster = cluster_of(state)?;
            let nodes = state.nodes.len() as u32;
            let (desired, rotated) = match &state.ca.rotation {
                None => (String::new(), nodes),
                Some(rotation) => {
                    let issuer = issuing(state)?.digest;
                    let rotated = state
                        .nodes
                        .keys()
                        .filter(|id| {
                            state.holds_cert_from(id, reports.get(*id).map(String::as_str), &issuer)
                        })
                        .count() as u32;
                    (rotation.ca_cert_pem.clone(), rotated)
                }
            };
            Ok(RootCaResponse {
                ca_cert_pem: cluster.ca_cert_pem.clone(),
                desired_ca_cert_pem: desired,
                nodes,
                nodes_rotated: rotated,
            })
        })
    }

    async fn start_root_rotation(&self) -> Result<(), Error> {
        let cluster = self.cluster()?;
        // Always cross-signed by the root: nodes of a rotation this one replaces trust it.
        let root = ClusterCa {
            cert_pem: cluster.ca_cert_pem.clone(),
            key_pem: cluster.ca_key_pem.clone(),
        };
        let (next, cross_signed_pem) = root
            .successor(&cluster.id)
            .map_err(Error::pki("creating the new root CA"))?;
        let digest = next
            .digest()
            .map_err(Error::pki("digesting the new root CA"))?;
        let rotation = RootRotation {
            ca_cert_pem: next.cert_pem.clone(),
            ca_key_pem: next.key_pem,
            cross_signed_pem,
            started_at: now_secs(),
        };
        self.propose_setting(Command::StartCaRotation(rotation), None)
            .await?;
        info!(%digest, "root CA rotation started");
        Ok(())
    }

    /// On the leader, from the orchestrator's loop: ends a root rotation once every node
    /// reports using a certificate of the new CA.
    pub(super) async fn finish_root_rotation_if_done(&self) {
        let done = self.read(|state| {
            let rotation = state.ca.rotation.as_ref()?;
            let issuing = issuing(state).ok()?;
            let reports = self.active.cert_reports.snapshot();
            let done = state.nodes.keys().all(|id| {
                state.holds_cert_from(id, reports.get(id).map(String::as_str), &issuing.digest)
            });
            done.then(|| (rotation.ca_cert_pem.clone(), issuing))
        });
        let Some((ca_cert_pem, issuing)) = done else {
            return;
        };
        let command = Command::FinishCaRotation {
            ca_cert_pem,
            worker_secret: pki::generate_secret(),
            manager_secret: pki::generate_secret(),
        };
        match self.propose_setting(command, None).await {
            Ok(()) => {
                info!(digest = %issuing.digest, "root CA rotation complete: join tokens changed")
            }
            Err(e) => warn!(cause = %Chain(&e), "cannot complete the root CA rotation"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterInfo;

    fn state_with(root: &ClusterCa) -> ClusterState {
        ClusterState {
            cluster: Some(ClusterInfo {
                id: "c1".into(),
                ca_cert_pem: root.cert_pem.clone(),
                ca_key_pem: root.key_pem.clone(),
                worker_secret: String::new(),
                manager_secret: String::new(),
                default_addr_pools: Vec::new(),
                subnet_size: 24,
                heartbeat_period_ms: 1000,
                created_at: 0,
                gossip_keys: Vec::new(),
                unlock_key: None,
                version: 1,
                updated_at_ms: 0,
            }),
            ..ClusterState::default()
        }
    }

    #[test]
    fn the_root_issues_until_a_rotation_and_its_ca_with_the_cross_signed_one_during() {
        let root = ClusterCa::generate("c1").unwrap();
        let mut state = state_with(&root);
        let now = issuing(&state).unwrap();
        assert_eq!(now.digest, root.digest().unwrap());
        assert!(now.chain.is_empty());
        assert_eq!(now.roots, root.cert_pem);
        assert_eq!(roots(&state), root.cert_pem);

        let (next, cross) = root.successor("c1").unwrap();
        state.ca.rotation = Some(RootRotation {
            ca_cert_pem: next.cert_pem.clone(),
            ca_key_pem: next.key_pem.clone(),
            cross_signed_pem: cross.clone(),
            started_at: 0,
        });
        let during = issuing(&state).unwrap();
        assert_eq!(during.digest, next.digest().unwrap());
        assert_eq!(during.chain, cross);
        let both = format!("{}{}", root.cert_pem, next.cert_pem);
        assert_eq!(
            (during.roots.as_str(), roots(&state).as_str()),
            (both.as_str(), both.as_str())
        );
        // What it issues leads to both roots, the old one through the cross-signed certificate.
        let (leaf, _) = during
            .ca
            .issue_leaf("n1", Role::Worker, "c1", pki::DEFAULT_NODE_CERT_EXPIRY)
            .unwrap();
        let presented = format!("{leaf}{}", during.chain);
        pki::verify_chain(&presented, &root.cert_pem).unwrap();
        pki::verify_chain(&presented, &next.cert_pem).unwrap();
    }

    #[test]
    fn cert_expiry_below_30_seconds_is_refused() {
        assert!(check_cert_expiry(29).is_err());
        check_cert_expiry(30).unwrap();
        check_cert_expiry(90 * 24 * 3600).unwrap();
    }
}
