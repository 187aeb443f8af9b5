//! [`PeerIdentity`]: who is on the other end of a mutual-TLS connection, read from the
//! certificate it presented; and [`certified_key`], the public key a node certificate
//! certifies (what the network DB checks a node's entries against).

use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use super::{
    PkiError,
    ca::{OU_MANAGER, OU_WORKER},
};
use crate::cluster::Role;

/// The node ID and role a node certificate was issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node_id: String,
    pub role: Role,
}

/// Reads the node ID (CN) and role (OU) of a node certificate.
///
/// This does NOT verify the certificate: call it only on a certificate that TLS has already
/// verified against the cluster CA (a client certificate from `request.peer_certs()` on the
/// 2377 server, whose client verifier trusts only the CA).
pub fn peer_identity(cert_der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|source| PkiError::X509 {
        what: "the peer certificate",
        source,
    })?;
    let subject = cert.subject();
    let node_id = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or(PkiError::MissingField {
            field: "common name (node ID)",
        })?
        .to_string();
    let ou = subject
        .iter_organizational_unit()
        .next()
        .and_then(|ou| ou.as_str().ok())
        .ok_or(PkiError::MissingField {
            field: "organizational unit (role)",
        })?;
    let role = match ou {
        OU_MANAGER => Role::Manager,
        OU_WORKER => Role::Worker,
        other => return Err(PkiError::UnknownRole(other.to_string())),
    };
    Ok(PeerIdentity { node_id, role })
}

/// [`peer_identity`] of the first certificate of a PEM document (a node's own certificate).
pub fn identity_of(cert_pem: &str) -> Result<PeerIdentity, PkiError> {
    peer_identity(super::pem::cert_der(cert_pem, "the node certificate")?.as_ref())
}

/// The public key of a node certificate (PEM): the SubjectPublicKeyInfo's key, for Ed25519
/// its 32 bytes, for ECDSA P-256 (certificates issued before node keys were Ed25519) the
/// uncompressed point. The managers record it when they issue the certificate.
pub fn certified_key(cert_pem: &str) -> Result<Vec<u8>, PkiError> {
    let der = super::pem::cert_der(cert_pem, "the node certificate")?;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|source| PkiError::X509 {
        what: "the node certificate",
        source,
    })?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair};

    use super::*;
    use crate::pki::{ClusterCa, pem};

    #[test]
    fn reads_node_id_and_role() {
        let ca = ClusterCa::generate("c1").unwrap();
        let creds = ca.issue("nodeabc", Role::Manager, "c1").unwrap();
        let der = pem::cert_der(&creds.cert_pem, "node").unwrap();
        assert_eq!(
            peer_identity(der.as_ref()).unwrap(),
            PeerIdentity {
                node_id: "nodeabc".into(),
                role: Role::Manager
            }
        );
    }

    #[test]
    fn rejects_certificates_shoal_did_not_issue() {
        // The CA certificate has a CN but no OU.
        let ca = ClusterCa::generate("c1").unwrap();
        let der = pem::cert_der(&ca.cert_pem, "ca").unwrap();
        assert!(matches!(
            peer_identity(der.as_ref()),
            Err(PkiError::MissingField { .. })
        ));

        // An OU that is not a swarm role.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "swarm-admin");
        let cert = params.self_signed(&key).unwrap();
        assert!(matches!(
            peer_identity(cert.der().as_ref()),
            Err(PkiError::UnknownRole(ou)) if ou == "swarm-admin"
        ));

        assert!(matches!(
            peer_identity(b"not DER"),
            Err(PkiError::X509 { .. })
        ));
    }
}
