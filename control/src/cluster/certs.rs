//! The cluster CA's settings and state in the store: how long node certificates live
//! (`--cert-expiry`), a root rotation under way (`swarm ca --rotate`), and what was issued to
//! each node, so the leader can tell when every node has moved to a new root.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Docker's `CAConfig` (the part shoal has) and `RootRotation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// How long node certificates are valid, seconds (`--cert-expiry`); 0: the default.
    #[serde(default)]
    pub cert_expiry_secs: u64,
    /// A root rotation under way: the CA certificates are issued from until it completes.
    #[serde(default)]
    pub rotation: Option<RootRotation>,
}

/// The CA a root rotation moves the swarm to. While it lasts, nodes trust both roots, every
/// certificate is issued by the new CA and presented with `cross_signed_pem` (so a node that
/// trusts only the old root still accepts it), and the join tokens still name the old root.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRotation {
    pub ca_cert_pem: String,
    /// In the managers' store only, like the root's own key.
    pub ca_key_pem: String,
    /// The new CA's certificate, issued by the old one.
    pub cross_signed_pem: String,
    /// Unix seconds.
    pub started_at: u64,
}

// Hand-written so that a stray `{:?}` never prints the new CA's private key.
impl std::fmt::Debug for RootRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootRotation")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("ca_key_pem", &"[redacted]")
            .field("cross_signed_pem", &self.cross_signed_pem)
            .field("started_at", &self.started_at)
            .finish()
    }
}

/// The last certificate the managers issued to a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// SHA-256 of its DER, hex: nodes report the fingerprint of the certificate they use.
    pub fingerprint: String,
    /// Unix seconds.
    pub not_after: u64,
    /// The digest (as in join tokens) of the CA that issued it.
    pub issuer: String,
}

impl CaState {
    /// The lifetime of the node certificates issued now.
    pub fn cert_expiry(&self, default: Duration) -> Duration {
        match self.cert_expiry_secs {
            0 => default,
            secs => Duration::from_secs(secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{
        Availability, ClusterInfo, ClusterState, Command, CommandResponse, NodeRecord, Role,
    };

    fn swarm() -> ClusterState {
        let mut state = ClusterState::default();
        let init = Command::Init {
            cluster: ClusterInfo {
                id: "c1".into(),
                ca_cert_pem: "old cert".into(),
                ca_key_pem: "old key".into(),
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
            },
            node: NodeRecord {
                id: "n1".into(),
                hostname: "node1".into(),
                role: Role::Manager,
                availability: Availability::Active,
                labels: Default::default(),
                addr: "192.0.2.1:2377".parse().unwrap(),
                data_path_addr: "192.0.2.1".parse().unwrap(),
                created_at: 0,
                resources: Default::default(),
            },
        };
        assert_eq!(state.apply(&init), CommandResponse::Ok);
        state
    }

    fn rotation(cert: &str) -> RootRotation {
        RootRotation {
            ca_cert_pem: cert.into(),
            ca_key_pem: format!("{cert} key"),
            cross_signed_pem: format!("{cert} cross"),
            started_at: 1,
        }
    }

    #[test]
    fn a_rotation_finishes_only_as_started_and_moves_root_and_tokens() {
        let mut state = swarm();
        let finish = |cert: &str| Command::FinishCaRotation {
            ca_cert_pem: cert.into(),
            worker_secret: "w2".into(),
            manager_secret: "m2".into(),
        };
        assert!(matches!(
            state.apply(&finish("new")),
            CommandResponse::Rejected(_)
        ));
        assert_eq!(
            state.apply(&Command::StartCaRotation(rotation("new"))),
            CommandResponse::Ok
        );
        // A second rotation replaces the first: the first can no longer finish.
        assert_eq!(
            state.apply(&Command::StartCaRotation(rotation("newer"))),
            CommandResponse::Ok
        );
        assert!(matches!(
            state.apply(&finish("new")),
            CommandResponse::Rejected(_)
        ));
        assert_eq!(state.cluster.as_ref().unwrap().ca_cert_pem, "old cert");
        assert_eq!(state.apply(&finish("newer")), CommandResponse::Ok);
        let cluster = state.cluster.as_ref().unwrap();
        assert_eq!(
            (
                cluster.ca_cert_pem.as_str(),
                cluster.ca_key_pem.as_str(),
                cluster.worker_secret.as_str(),
                cluster.manager_secret.as_str()
            ),
            ("newer", "newer key", "w2", "m2")
        );
        assert!(state.ca.rotation.is_none());
    }

    #[test]
    fn issued_certificates_and_expiry_are_recorded() {
        let mut state = swarm();
        let issued = |id: &str| Command::CertIssued {
            id: id.into(),
            public_key: vec![7; 32],
            cert: IssuedCert {
                fingerprint: "f".into(),
                not_after: 5,
                issuer: "old".into(),
            },
        };
        assert_eq!(state.apply(&issued("n1")), CommandResponse::Ok);
        assert_eq!(state.node_keys["n1"], vec![7; 32]);
        assert_eq!(state.node_certs["n1"].fingerprint, "f");
        assert!(matches!(
            state.apply(&issued("nobody")),
            CommandResponse::Rejected(_)
        ));
        for (secs, ok) in [(29, false), (30, true), (0, true), (7_776_000, true)] {
            let got = state.apply(&Command::SetCertExpiry { secs });
            assert_eq!(got == CommandResponse::Ok, ok, "{secs}: {got:?}");
        }
        assert_eq!(state.ca.cert_expiry_secs, 7_776_000);
    }

    #[test]
    fn the_rotations_key_is_not_printed() {
        let rotation = RootRotation {
            ca_cert_pem: "cert".into(),
            ca_key_pem: "PRIVATE".into(),
            cross_signed_pem: "cross".into(),
            started_at: 1,
        };
        assert!(!format!("{rotation:?}").contains("PRIVATE"));
    }

    #[test]
    fn expiry_defaults_until_set() {
        let mut ca = CaState::default();
        let day = Duration::from_secs(86_400);
        assert_eq!(ca.cert_expiry(day), day);
        ca.cert_expiry_secs = 40;
        assert_eq!(ca.cert_expiry(day), Duration::from_secs(40));
    }

    #[test]
    fn a_node_holds_a_certificate_once_it_reports_the_one_issued() {
        let mut state = ClusterState::default();
        state.node_certs.insert(
            "n1".into(),
            IssuedCert {
                fingerprint: "f1".into(),
                not_after: 9,
                issuer: "new".into(),
            },
        );
        assert!(state.holds_cert_from("n1", Some("f1"), "new"));
        assert!(
            !state.holds_cert_from("n1", Some("f0"), "new"),
            "an older one"
        );
        assert!(!state.holds_cert_from("n1", None, "new"), "not heard of");
        assert!(!state.holds_cert_from("n1", Some("f1"), "old"));
        assert!(!state.holds_cert_from("n2", Some("f1"), "new"));
    }

    #[test]
    fn a_settings_change_bumps_the_version_and_a_stale_one_changes_nothing() {
        let mut state = swarm();
        let expiry = |secs, expected| Command::Settings {
            change: Box::new(Command::SetCertExpiry { secs }),
            expected_version: expected,
            at_ms: 7_000,
        };
        assert_eq!(state.apply(&expiry(3600, Some(1))), CommandResponse::Ok);
        let cluster = state.cluster.clone().unwrap();
        assert_eq!((cluster.version, cluster.updated_at_ms), (2, 7_000));
        assert_eq!(state.ca.cert_expiry_secs, 3600);
        // Quoting the version before that change: refused, nothing changes.
        let before = state.clone();
        assert_eq!(
            state.apply(&expiry(7200, Some(1))),
            CommandResponse::OutOfSequence
        );
        assert_eq!(state, before);
        // Without a version (the leader's own changes), always applied.
        let rotate = Command::Settings {
            change: Box::new(Command::RotateSecret {
                role: Role::Worker,
                secret: "w2".into(),
            }),
            expected_version: None,
            at_ms: 8_000,
        };
        assert_eq!(state.apply(&rotate), CommandResponse::Ok);
        assert_eq!(state.cluster.as_ref().unwrap().version, 3);
        // Only settings travel in one: anything else would bump the version for nothing.
        let node = Command::Settings {
            change: Box::new(Command::SetRole {
                id: "n1".into(),
                role: Role::Worker,
            }),
            expected_version: None,
            at_ms: 9_000,
        };
        assert!(matches!(state.apply(&node), CommandResponse::Rejected(_)));
        // A rejected change does not bump the version either.
        assert!(matches!(
            state.apply(&expiry(5, Some(3))),
            CommandResponse::Rejected(_)
        ));
        assert_eq!(state.cluster.as_ref().unwrap().version, 3);
    }
}
