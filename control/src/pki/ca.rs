//! The cluster CA: creating it at `swarm init` (and its successor at `swarm ca --rotate`,
//! cross-signed by it), its digest (the first part of join tokens), and issuing node
//! certificates that carry a node's ID and role.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{NodeCredentials, PkiError, TLS_SERVER_NAME, pem};
use crate::cluster::Role;

/// Common name of the CA certificate, as in Swarm.
pub const CA_COMMON_NAME: &str = "swarm-ca";
/// Organizational unit of a manager's certificate, as in Swarm.
pub const OU_MANAGER: &str = "swarm-manager";
/// Organizational unit of a worker's certificate, as in Swarm.
pub const OU_WORKER: &str = "swarm-worker";
/// Length of a CA digest in a join token: SHA-256 in base 36 needs at most 50 digits.
pub const CA_DIGEST_LEN: usize = 50;

/// 20 years, counting leap days.
const CA_VALIDITY: Duration = Duration::from_secs((20 * 365 + 5) * 24 * 3600);
/// How long a node certificate is valid unless the swarm says otherwise (`--cert-expiry`):
/// 90 days, Docker's default.
pub const DEFAULT_NODE_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);
/// swarmkit's shortest node certificate lifetime (`MinNodeCertExpiration`, 1 hour): shorter
/// ones are accepted by shoal (see [`MIN_NODE_CERT_EXPIRY`]) with a warning.
pub const DOCKER_MIN_NODE_CERT_EXPIRY: Duration = Duration::from_secs(3600);
/// The shortest node certificate lifetime shoal accepts. Lower than Docker's hour on purpose:
/// renewal (and what a swarm does through it) can then be watched in a test or a demo within
/// minutes. Each node renews at 50-80 % of the lifetime, so 30 s still leaves a node 6 s or
/// more of heartbeats to get its next certificate.
pub const MIN_NODE_CERT_EXPIRY: Duration = Duration::from_secs(30);
/// Certificates start being valid a little in the past, so a node whose clock is a bit behind
/// the manager's still accepts a certificate issued a second ago: an hour, or a tenth of a
/// short lifetime (a 40 s certificate backdated by an hour would be due for renewal at once:
/// nodes renew at a share of `notAfter - notBefore`).
const BACKDATE: Duration = Duration::from_secs(3600);

/// The cluster CA: its certificate and private key, PEM. The key lives only in the managers'
/// Raft store (see [`crate::cluster::ClusterInfo`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

// Hand-written so that a stray `{:?}` never prints the CA's private key.
impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// Who issues node certificates now: the root, or during a root rotation the new CA, whose
/// certificates go out followed by its certificate cross-signed by the root (`chain`, so a
/// node trusting only the old root accepts them); nodes trust both roots (`roots`). The
/// leader's signing and a manager's re-issue of its own certificate both choose here.
pub struct IssuingCa {
    pub ca: ClusterCa,
    pub chain: String,
    pub roots: String,
}

impl IssuingCa {
    pub fn of(cluster: &crate::cluster::ClusterInfo, ca: &crate::cluster::certs::CaState) -> Self {
        match &ca.rotation {
            None => IssuingCa {
                ca: ClusterCa {
                    cert_pem: cluster.ca_cert_pem.clone(),
                    key_pem: cluster.ca_key_pem.clone(),
                },
                chain: String::new(),
                roots: cluster.ca_cert_pem.clone(),
            },
            Some(rotation) => IssuingCa {
                ca: ClusterCa {
                    cert_pem: rotation.ca_cert_pem.clone(),
                    key_pem: rotation.ca_key_pem.clone(),
                },
                chain: rotation.cross_signed_pem.clone(),
                roots: format!("{}{}", cluster.ca_cert_pem, rotation.ca_cert_pem),
            },
        }
    }
}

impl ClusterCa {
    /// A new self-signed CA (ECDSA P-256): CN `swarm-ca`, O = the cluster ID, valid 20 years.
    pub fn generate(cluster_id: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err("the CA key"))?;
        let cert = ca_params(cluster_id)
            .self_signed(&key)
            .map_err(gen_err("the CA certificate"))?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA that replaces this one in a root rotation (`swarm ca --rotate`): a new key and
    /// certificate with the same name, and that certificate cross-signed by this CA (same
    /// subject and key, issued by this one). Nodes that trust only this CA accept a node
    /// certificate of the new one presented with the cross-signed certificate, so the swarm
    /// keeps talking while nodes move over (swarmkit's `RootRotation.CrossSignedCACert`).
    pub fn successor(&self, cluster_id: &str) -> Result<(ClusterCa, String), PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err("the CA key"))?;
        let params = ca_params(cluster_id);
        let cert = params
            .self_signed(&key)
            .map_err(gen_err("the new CA certificate"))?;
        let old_key = KeyPair::from_pem(&self.key_pem).map_err(gen_err("the CA key (parsing)"))?;
        let old =
            Issuer::from_ca_cert_pem(&self.cert_pem, old_key).map_err(gen_err("the CA issuer"))?;
        // Its own serial: it has the new CA's issuer name (both CAs are named alike) but is
        // another certificate.
        let mut cross = params;
        cross.serial_number = Some(random_serial());
        let cross_signed = cross
            .signed_by(&key, &old)
            .map_err(gen_err("the cross-signed CA certificate"))?;
        Ok((
            ClusterCa {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            },
            cross_signed.pem(),
        ))
    }

    /// The CA digest of join tokens: SHA-256 of the certificate's DER, in base 36, lowercase,
    /// zero-padded to 50 characters (Docker's format).
    pub fn digest(&self) -> Result<String, PkiError> {
        Ok(digest_of_der(
            pem::cert_der(&self.cert_pem, "the CA certificate")?.as_ref(),
        ))
    }

    /// A certificate for a node, signed by this CA, valid for the default lifetime; with the
    /// CA as the only root to trust. See [`ClusterCa::issue_leaf`].
    pub fn issue(
        &self,
        node_id: &str,
        role: Role,
        cluster_id: &str,
    ) -> Result<NodeCredentials, PkiError> {
        let (cert_pem, key_pem) =
            self.issue_leaf(node_id, role, cluster_id, DEFAULT_NODE_CERT_EXPIRY)?;
        Ok(NodeCredentials {
            ca_cert_pem: self.cert_pem.clone(),
            cert_pem,
            key_pem,
        })
    }

    /// A certificate for a node and its new key (PEM both), signed by this CA: CN = node ID,
    /// OU = `swarm-manager` or `swarm-worker`, O = cluster ID, DNS names `shoal-node` (the name
    /// every node is reached by in TLS, since nodes are addressed by IP) and the node ID, a
    /// random serial, valid for `validity` (`--cert-expiry`), usable as TLS client and server.
    ///
    /// The node's key pair is generated here, on the manager, rather than on the node with a
    /// CSR: the credentials travel back to the node inside the TLS connection of its Join call
    /// (whose server it has authenticated against the token's CA digest) or of its renewal
    /// (mutual TLS), so the key is never exposed in clear, and each protocol stays one round
    /// trip. Every certificate comes with a new key: a renewal replaces the key too.
    ///
    /// Node keys are Ed25519 (the CA's own stays P-256): every network DB entry is signed with
    /// the node key and verified by every other member, and Ed25519 verifies faster than
    /// P-256 (measured 32-37 against 53 µs alone, 16-17 µs each in batches). rustls (ring)
    /// takes it for the TLS handshake as well. Certificates issued before keep their P-256 key
    /// until renewed.
    pub fn issue_leaf(
        &self,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        validity: Duration,
    ) -> Result<(String, String), PkiError> {
        let node_key = KeyPair::generate_for(&PKCS_ED25519).map_err(gen_err("the node key"))?;
        let cert_pem = self.sign_leaf(&node_key, node_id, role, cluster_id, validity)?;
        Ok((cert_pem, node_key.serialize_pem()))
    }

    /// A new certificate for the key the node already has (`key_pem`), otherwise as
    /// [`ClusterCa::issue_leaf`]: a manager re-issuing its own expired certificate from the CA
    /// in its store keeps its key, which the swarm already knows (the network DB checks the
    /// node's entries against it).
    pub fn reissue_leaf(
        &self,
        key_pem: &str,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let node_key = KeyPair::from_pem(key_pem).map_err(gen_err("the node key (parsing)"))?;
        self.sign_leaf(&node_key, node_id, role, cluster_id, validity)
    }

    /// The node certificate of `node_key`, signed by this CA, PEM.
    fn sign_leaf(
        &self,
        node_key: &KeyPair,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(gen_err("the CA key (parsing)"))?;
        let issuer =
            Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(gen_err("the CA issuer"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, role_ou(role));
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::DnsName(
                TLS_SERVER_NAME
                    .try_into()
                    .map_err(gen_err("the node certificate's DNS name"))?,
            ),
            SanType::DnsName(
                node_id
                    .try_into()
                    .map_err(gen_err("the node certificate's node ID name"))?,
            ),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        // An Ed25519 key only signs: RFC 8410 allows no keyEncipherment beside it.
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        set_validity(&mut params, validity, BACKDATE.min(validity / 10));
        let cert = params
            .signed_by(node_key, &issuer)
            .map_err(gen_err("the node certificate"))?;
        Ok(cert.pem())
    }
}

/// A CA certificate's parameters: CN `swarm-ca`, O = the cluster ID, a random serial, valid
/// 20 years, for signing certificates.
fn ca_params(cluster_id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    set_validity(&mut params, CA_VALIDITY, BACKDATE);
    params
}

/// 16 random bytes, positive. rcgen's default serial is a hash of the certificate's key, which
/// a CA and its cross-signed certificate share.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    bytes[0] &= 0x7f;
    // A leading zero byte would be dropped by the DER encoding: keep 16 significant bytes.
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The OU a role is written as in node certificates.
pub(crate) fn role_ou(role: Role) -> &'static str {
    match role {
        Role::Manager => OU_MANAGER,
        Role::Worker => OU_WORKER,
    }
}

/// SHA-256 of `der` in base 36, zero-padded to [`CA_DIGEST_LEN`] (what Docker's
/// `big.Int.Text(36)` with `%050s` gives).
pub(crate) fn digest_of_der(der: &[u8]) -> String {
    base36_padded(&Sha256::digest(der))
}

/// A big-endian unsigned number in base 36, lowercase, zero-padded to [`CA_DIGEST_LEN`].
fn base36_padded(big_endian: &[u8]) -> String {
    let mut n = big_endian.to_vec();
    let mut digits = Vec::with_capacity(CA_DIGEST_LEN);
    // Schoolbook division of the big-endian number by 36 until it is zero.
    while n.iter().any(|&b| b != 0) {
        let mut rem: u32 = 0;
        for byte in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*byte);
            *byte = (cur / 36) as u8;
            rem = cur % 36;
        }
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[rem as usize]);
    }
    while digits.len() < CA_DIGEST_LEN {
        digits.push(b'0');
    }
    digits.iter().rev().map(|&d| d as char).collect()
}

/// Sets `params` valid from `backdate` ago until `length` from now. rcgen re-exports no "now"
/// (nor its time crate), so the dates are the Unix epoch plus the system clock.
fn set_validity(params: &mut CertificateParams, length: Duration, backdate: Duration) {
    // A clock before 1970 is not worth an error: the certificate then starts at the epoch.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(backdate);
    params.not_after = epoch + (now + length);
}

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
}

#[cfg(test)]
mod tests {
    use x509_parser::{certificate::X509Certificate, prelude::FromDer};

    use super::*;
    use crate::pki::peer_identity;

    #[test]
    fn ca_digest_is_50_base36_chars_and_stable() {
        let ca = ClusterCa::generate("cluster1").unwrap();
        let digest = ca.digest().unwrap();
        assert_eq!(digest.len(), CA_DIGEST_LEN);
        assert!(
            digest
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        assert_eq!(ca.digest().unwrap(), digest);
        // A CA that went through serde (as in the Raft store) has the same digest.
        let copy = ClusterCa {
            cert_pem: ca.cert_pem.clone(),
            key_pem: ca.key_pem.clone(),
        };
        assert_eq!(copy.digest().unwrap(), digest);
        assert_ne!(
            ClusterCa::generate("cluster1").unwrap().digest().unwrap(),
            digest
        );
    }

    #[test]
    fn base36_matches_known_values() {
        // SHA-256("") in base 36, computed independently (Python's int(hex, 16) in base 36).
        assert_eq!(
            digest_of_der(b""),
            "5oaq0bjhj6un82wg98mgigso5q7qlhc63je4gw7ivixqqhkd3p"
        );
    }

    #[test]
    fn base36_pads_with_zeros() {
        assert_eq!(base36_padded(&[0; 32]), "0".repeat(50));
        let mut one = [0u8; 32];
        one[31] = 37;
        assert_eq!(base36_padded(&one), format!("{}11", "0".repeat(48)));
        assert_eq!(base36_padded(&[0xff; 32]).len(), 50);
    }

    #[test]
    fn ca_certificate_fields() {
        let ca = ClusterCa::generate("cluster1").unwrap();
        let der = pem::cert_der(&ca.cert_pem, "ca").unwrap();
        let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
        assert!(cert.is_ca());
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), CA_COMMON_NAME);
        let o = cert.subject().iter_organization().next().unwrap();
        assert_eq!(o.as_str().unwrap(), "cluster1");
        let years = (cert.validity().not_after.timestamp()
            - cert.validity().not_before.timestamp())
            / (365 * 24 * 3600);
        assert_eq!(years, 20);
        // Re-encoding the DER gives back the stored PEM (connect_for_join relies on it).
        assert_eq!(pem::encode_cert(der.as_ref()), ca.cert_pem);
    }

    #[test]
    fn issued_certificates_carry_node_id_and_role() {
        let ca = ClusterCa::generate("cluster1").unwrap();
        for (node_id, role) in [
            ("manager0000000000000000001", Role::Manager),
            ("worker00000000000000000002", Role::Worker),
        ] {
            let creds = ca.issue(node_id, role, "cluster1").unwrap();
            assert_eq!(creds.ca_cert_pem, ca.cert_pem);
            let der = pem::cert_der(&creds.cert_pem, "node").unwrap();
            let id = peer_identity(der.as_ref()).unwrap();
            assert_eq!(id.node_id, node_id);
            assert_eq!(id.role, role);

            let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
            assert!(!cert.is_ca());
            let ou = cert.subject().iter_organizational_unit().next().unwrap();
            assert_eq!(ou.as_str().unwrap(), role_ou(role));
            let o = cert.subject().iter_organization().next().unwrap();
            assert_eq!(o.as_str().unwrap(), "cluster1");
            // An Ed25519 node key, used only to sign.
            assert_eq!(
                cert.public_key().algorithm.algorithm.to_id_string(),
                "1.3.101.112"
            );
            let ku = cert.key_usage().unwrap().unwrap().value;
            assert!(ku.digital_signature() && !ku.key_encipherment());
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && eku.client_auth);
            let san = cert.subject_alternative_name().unwrap().unwrap().value;
            let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
            assert_eq!(
                names,
                [
                    format!("DNSName({TLS_SERVER_NAME})"),
                    format!("DNSName({node_id})")
                ]
            );
            let days = (cert.validity().not_after.timestamp()
                - cert.validity().not_before.timestamp())
                / (24 * 3600);
            assert_eq!(days, 90);
            assert_eq!(
                cert.issuer().to_string(),
                X509Certificate::from_der(pem::cert_der(&ca.cert_pem, "ca").unwrap().as_ref())
                    .unwrap()
                    .1
                    .subject()
                    .to_string()
            );
        }
    }

    #[test]
    fn serials_are_random_and_lifetimes_follow_the_request() {
        let ca = ClusterCa::generate("cluster1").unwrap();
        let mut serials = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let (cert, _) = ca
                .issue_leaf("node1", Role::Worker, "cluster1", Duration::from_secs(40))
                .unwrap();
            let der = pem::cert_der(&cert, "node").unwrap();
            let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
            serials.insert(cert.raw_serial().to_vec());
            // 40 s ahead, backdated by a tenth of it.
            let v = cert.validity();
            assert_eq!(v.not_after.timestamp() - v.not_before.timestamp(), 44);
        }
        assert_eq!(serials.len(), 4, "{serials:?}");
    }

    #[test]
    fn a_reissued_certificate_keeps_the_key_and_gets_a_new_serial() {
        let ca = ClusterCa::generate("cluster1").unwrap();
        let (first, key) = ca
            .issue_leaf("node1", Role::Manager, "cluster1", Duration::from_secs(40))
            .unwrap();
        let again = ca
            .reissue_leaf(
                &key,
                "node1",
                Role::Manager,
                "cluster1",
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(
            crate::pki::certified_key(&again).unwrap(),
            crate::pki::certified_key(&first).unwrap()
        );
        let der = pem::cert_der(&again, "node").unwrap();
        let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
        let first_der = pem::cert_der(&first, "node").unwrap();
        let (_, first_cert) = X509Certificate::from_der(first_der.as_ref()).unwrap();
        assert_ne!(cert.raw_serial(), first_cert.raw_serial());
        let v = cert.validity();
        assert_eq!(v.not_after.timestamp() - v.not_before.timestamp(), 66);
        assert!(
            ca.reissue_leaf(
                "not a key",
                "node1",
                Role::Manager,
                "c",
                Duration::from_secs(40)
            )
            .is_err()
        );
    }

    #[test]
    fn a_successor_is_cross_signed_by_its_predecessor() {
        let old = ClusterCa::generate("cluster1").unwrap();
        let (new, cross) = old.successor("cluster1").unwrap();
        assert_ne!(new.digest().unwrap(), old.digest().unwrap());
        let parse = |pem_text: &str| pem::cert_der(pem_text, "ca").unwrap();
        let (new_der, cross_der, old_der) =
            (parse(&new.cert_pem), parse(&cross), parse(&old.cert_pem));
        let (_, new_cert) = X509Certificate::from_der(new_der.as_ref()).unwrap();
        let (_, cross_cert) = X509Certificate::from_der(cross_der.as_ref()).unwrap();
        let (_, old_cert) = X509Certificate::from_der(old_der.as_ref()).unwrap();
        // Same subject and key as the new CA, issued by the old one, a CA itself.
        assert_eq!(cross_cert.subject(), new_cert.subject());
        assert_eq!(cross_cert.public_key().raw, new_cert.public_key().raw);
        assert_eq!(cross_cert.issuer(), old_cert.subject());
        assert!(cross_cert.is_ca());
        assert_ne!(cross_cert.raw_serial(), new_cert.raw_serial());
        assert_ne!(new_cert.public_key().raw, old_cert.public_key().raw);
    }

    #[test]
    fn broken_ca_is_an_error() {
        let ca = ClusterCa {
            cert_pem: "not a certificate".into(),
            key_pem: "not a key".into(),
        };
        assert!(ca.digest().is_err());
        assert!(ca.issue("node", Role::Worker, "cluster1").is_err());
    }
}
