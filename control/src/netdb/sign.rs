//! Entry signatures: every record is signed by its owner with the node's TLS key (ECDSA P-256,
//! issued and certified by the cluster CA), and receivers check it against the owner's public
//! key as the managers distribute it (`GossipConfig::node_keys`). The gossip key only keeps
//! strangers out; with signatures, a member holding it still cannot forge another node's
//! endpoints (its VIP backends, DNS records and FDB entries).
//!
//! What is signed: a domain tag, the endpoint (the payload, its network and endpoint IDs are the
//! key), the owner, the Lamport clock and the tombstone flag, postcard-encoded. The signature is
//! ECDSA P-256 with SHA-256, fixed-size (64 bytes).

use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
use serde::Serialize;

use super::record::{Endpoint, Record};

/// Separates these signatures from anything else the node key signs (TLS handshakes).
const DOMAIN: &[u8] = b"shoal-netdb-entry-v1";

/// Why a signing key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("reading the node key (PEM)")]
    Pem(#[source] rustls::pki_types::pem::Error),
    #[error("the node key is not a PKCS#8 key")]
    NotPkcs8,
    #[error("the node key is not an ECDSA P-256 key")]
    Rejected(#[source] ring::error::KeyRejected),
    #[error("generating a key")]
    Generate(#[source] ring::error::Unspecified),
}

/// This node's key for signing its records: the private key of its TLS certificate.
#[derive(Clone)]
pub struct SigningKey {
    pair: Arc<EcdsaKeyPair>,
    rng: SystemRandom,
}

// Hand-written so that a stray `{:?}` never prints the private key.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The node key as the CA issued it (`NodeCredentials::key_pem`, PKCS#8 PEM).
    pub fn from_pem(pem: &str) -> Result<SigningKey, SigningKeyError> {
        match PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(SigningKeyError::Pem)? {
            PrivateKeyDer::Pkcs8(der) => SigningKey::from_pkcs8(der.secret_pkcs8_der()),
            _ => Err(SigningKeyError::NotPkcs8),
        }
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, SigningKeyError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(SigningKeyError::Rejected)?;
        Ok(SigningKey {
            pair: Arc::new(pair),
            rng,
        })
    }

    /// A fresh key (tests and benchmarks; nodes use the key their certificate certifies).
    pub fn generate() -> Result<SigningKey, SigningKeyError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(SigningKeyError::Generate)?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    /// The public key (uncompressed SEC1 point), as the certificate carries it.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Signs `rec` as it stands (its `signature` is ignored). Empty only if the system RNG
    /// fails, which receivers then drop like any bad signature.
    pub(crate) fn sign(&self, rec: &Record) -> Vec<u8> {
        self.sign_entry(&rec.endpoint, &rec.owner, rec.clock, rec.deleted)
    }

    /// Signs one version of an entry exactly as the network DB does (for benchmarks; the DB
    /// signs its own records).
    pub fn sign_entry(
        &self,
        endpoint: &Endpoint,
        owner: &str,
        clock: u64,
        deleted: bool,
    ) -> Vec<u8> {
        self.pair
            .sign(&self.rng, &signed_bytes(endpoint, owner, clock, deleted))
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default()
    }
}

/// Whether `rec.signature` is its owner's, given the owner's public key.
pub(crate) fn verify(public_key: &[u8], rec: &Record) -> bool {
    verify_entry(
        public_key,
        &rec.endpoint,
        &rec.owner,
        rec.clock,
        rec.deleted,
        &rec.signature,
    )
}

/// Checks a signature from [`SigningKey::sign_entry`] as the network DB does on receipt.
pub fn verify_entry(
    public_key: &[u8],
    endpoint: &Endpoint,
    owner: &str,
    clock: u64,
    deleted: bool,
    signature: &[u8],
) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key)
        .verify(&signed_bytes(endpoint, owner, clock, deleted), signature)
        .is_ok()
}

#[derive(Serialize)]
struct Signed<'a> {
    domain: &'a [u8],
    endpoint: &'a Endpoint,
    owner: &'a str,
    clock: u64,
    deleted: bool,
}

fn signed_bytes(endpoint: &Endpoint, owner: &str, clock: u64, deleted: bool) -> Vec<u8> {
    // Encoding borrowed, plain data into a Vec cannot fail; an empty message would only make
    // the signature fail to verify.
    postcard::to_allocvec(&Signed {
        domain: DOMAIN,
        endpoint,
        owner,
        clock,
        deleted,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::cluster::Role;
    use crate::pki::{ClusterCa, certified_key};

    fn record() -> Record {
        Record {
            endpoint: Endpoint {
                network_id: "n".into(),
                endpoint_id: "t".into(),
                node_id: "a".into(),
                ip: Ipv4Addr::new(10, 0, 0, 2),
                mac: [2, 0, 0, 0, 0, 2],
                vtep: Ipv4Addr::LOCALHOST,
                service: "web".into(),
                vip: None,
                aliases: vec![],
                service_aliases: vec![],
            },
            owner: "a".into(),
            clock: 3,
            deleted: false,
            signature: Vec::new(),
        }
    }

    #[test]
    fn the_node_key_signs_what_its_certificate_verifies() {
        let ca = ClusterCa::generate("c1").unwrap();
        let creds = ca.issue("a", Role::Worker, "c1").unwrap();
        let key = SigningKey::from_pem(&creds.key_pem).unwrap();
        let public = certified_key(&creds.cert_pem).unwrap();
        assert_eq!(key.public_key(), public.as_slice());
        let mut rec = record();
        rec.signature = key.sign(&rec);
        assert!(verify(&public, &rec));
        // Each signed part matters.
        let tampered = [
            Record {
                clock: 4,
                ..rec.clone()
            },
            Record {
                deleted: true,
                ..rec.clone()
            },
            Record {
                owner: "b".into(),
                ..rec.clone()
            },
        ];
        for t in tampered {
            assert!(!verify(&public, &t), "{t:?}");
        }
        let mut moved = rec.clone();
        moved.endpoint.ip = Ipv4Addr::new(10, 0, 0, 66);
        assert!(!verify(&public, &moved));
        // Another node's key does not verify it.
        let other = SigningKey::generate().unwrap();
        assert!(!verify(other.public_key(), &rec));
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }
}
