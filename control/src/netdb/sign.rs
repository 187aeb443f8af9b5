//! Entry signatures: every record is signed by its owner with the node's TLS key (issued and
//! certified by the cluster CA), and receivers check it against the owner's public key as the
//! managers distribute it (`GossipConfig::node_keys`). The gossip key only keeps strangers out;
//! with signatures, a member holding it still cannot forge another node's endpoints (its VIP
//! backends, DNS records and FDB entries).
//!
//! What is signed: a domain tag, the endpoint (the payload, its network and endpoint IDs are the
//! key), the owner, the Lamport clock and the tombstone flag, postcard-encoded. Node keys are
//! Ed25519 (ed25519-dalek; 64-byte signatures); a node whose certificate was issued before that
//! still has an ECDSA P-256 key and signs with it (ring; SHA-256, fixed 64-byte signatures)
//! until its certificate is renewed. Receivers tell the two apart by the public key: 32 bytes
//! is Ed25519, 65 (an uncompressed SEC1 point) is P-256.
//!
//! Many records at once (push-pull) are checked with [`verify_entries`]: Ed25519 signatures in
//! batches, each failed batch again one by one, so exactly the bad records are found.

use std::sync::Arc;

use ed25519_dalek::pkcs8::{ObjectIdentifier, PrivateKeyInfo};
use ed25519_dalek::{Signer, Verifier, VerifyingKey};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair, UnparsedPublicKey,
};
use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
use serde::Serialize;

use super::record::{Endpoint, Record};

/// Separates these signatures from anything else the node key signs (TLS handshakes).
const DOMAIN: &[u8] = b"shoal-netdb-entry-v1";

/// PKCS#8 algorithm of EC keys (id-ecPublicKey); ring checks that the curve is P-256.
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// Ed25519 signatures verified together: a push-pull brings a whole table's worth. Past a few
/// dozen the cost per signature barely drops (measured: 16-17 µs at 16-64, 32-37 µs alone),
/// while a failed batch costs its whole size again, one by one.
const BATCH: usize = 64;

/// Why a signing key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("reading the node key (PEM)")]
    Pem(#[source] rustls::pki_types::pem::Error),
    #[error("the node key is not a PKCS#8 key")]
    NotPkcs8,
    #[error("reading the node key (PKCS#8)")]
    Pkcs8(#[source] ed25519_dalek::pkcs8::Error),
    #[error("the node key is neither Ed25519 nor ECDSA (algorithm {oid})")]
    Unsupported { oid: ObjectIdentifier },
    #[error("the node key is not a valid Ed25519 key")]
    Ed25519(#[source] ed25519_dalek::pkcs8::Error),
    #[error("the node key is not an ECDSA P-256 key")]
    Rejected(#[source] ring::error::KeyRejected),
    #[error("generating a key")]
    Generate(#[source] ring::error::Unspecified),
}

/// This node's key for signing its records: the private key of its TLS certificate.
#[derive(Clone)]
pub struct SigningKey {
    private: Arc<Private>,
    /// Ours, parsed as receivers parse it (our own records are checked when they come back).
    public: PublicKey,
}

enum Private {
    Ed25519(ed25519_dalek::SigningKey),
    /// Keys of certificates issued before node keys were Ed25519.
    P256 {
        pair: EcdsaKeyPair,
        rng: SystemRandom,
    },
}

// Hand-written so that a stray `{:?}` never prints the private key.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
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

    /// An Ed25519 or ECDSA P-256 key, PKCS#8 DER (v1, or v2 with the public key, as ring and
    /// rcgen write Ed25519 keys).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, SigningKeyError> {
        let info = PrivateKeyInfo::try_from(der).map_err(SigningKeyError::Pkcs8)?;
        let oid = info.algorithm.oid;
        let private = if oid == ed25519_dalek::pkcs8::ALGORITHM_OID {
            Private::Ed25519(
                ed25519_dalek::SigningKey::try_from(info).map_err(SigningKeyError::Ed25519)?,
            )
        } else if oid == EC_PUBLIC_KEY {
            let rng = SystemRandom::new();
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                .map_err(SigningKeyError::Rejected)?;
            Private::P256 { pair, rng }
        } else {
            return Err(SigningKeyError::Unsupported { oid });
        };
        let public = match &private {
            Private::Ed25519(key) => PublicKey::from_bytes(key.verifying_key().as_bytes()),
            Private::P256 { pair, .. } => PublicKey::from_bytes(pair.public_key().as_ref()),
        };
        Ok(SigningKey {
            private: Arc::new(private),
            public,
        })
    }

    /// A fresh Ed25519 key, as the CA now issues (tests and benchmarks; nodes use the key
    /// their certificate certifies).
    pub fn generate() -> Result<SigningKey, SigningKeyError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(SigningKeyError::Generate)?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    /// A fresh ECDSA P-256 key, as certificates issued before Ed25519 have (tests and
    /// benchmarks).
    pub fn generate_p256() -> Result<SigningKey, SigningKeyError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(SigningKeyError::Generate)?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    /// "Ed25519" or "ECDSA P-256".
    pub fn algorithm(&self) -> &'static str {
        self.public.algorithm()
    }

    /// The public key as the certificate carries it: 32 bytes (Ed25519) or the uncompressed
    /// SEC1 point (P-256).
    pub fn public_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    /// The public key, parsed for verifying (what receivers keep for each node).
    pub fn verifying_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `rec` as it stands (its `signature` is ignored). Empty only if the system RNG
    /// fails (P-256), which receivers then drop like any bad signature.
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
        let message = signed_bytes(endpoint, owner, clock, deleted);
        match &*self.private {
            // ed25519-dalek rather than ring: 18 µs against 23 µs a signature here.
            Private::Ed25519(key) => key.sign(&message).to_bytes().to_vec(),
            Private::P256 { pair, rng } => pair
                .sign(rng, &message)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
        }
    }
}

/// A node's public key, parsed once (the table keeps one per node): the algorithm follows from
/// its length. A key that is neither (or a weak Ed25519 key) verifies nothing.
#[derive(Clone)]
pub struct PublicKey {
    bytes: Arc<[u8]>,
    kind: KeyKind,
}

#[derive(Clone, Copy)]
enum KeyKind {
    /// Decompressed once: that costs about a tenth of a verification.
    Ed25519(VerifyingKey),
    /// ring parses the point on each verification (a small part of its cost).
    P256,
    Unusable,
}

/// An Ed25519 public key: the compressed point.
const ED25519_KEY_LEN: usize = 32;
/// A P-256 public key: 0x04, then x and y.
const P256_KEY_LEN: usize = 65;

impl PublicKey {
    pub fn from_bytes(bytes: &[u8]) -> PublicKey {
        let kind = match bytes.len() {
            ED25519_KEY_LEN => <&[u8; ED25519_KEY_LEN]>::try_from(bytes)
                .ok()
                .and_then(|b| VerifyingKey::from_bytes(b).ok())
                // A small-order key would verify one signature for many messages (what
                // `verify_strict` refuses on every call): refused once, here.
                .filter(|k| !k.is_weak())
                .map_or(KeyKind::Unusable, KeyKind::Ed25519),
            P256_KEY_LEN if bytes.first() == Some(&4) => KeyKind::P256,
            _ => KeyKind::Unusable,
        };
        PublicKey {
            bytes: bytes.into(),
            kind,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// "Ed25519", "ECDSA P-256", or "unusable".
    pub fn algorithm(&self) -> &'static str {
        match self.kind {
            KeyKind::Ed25519(_) => "Ed25519",
            KeyKind::P256 => "ECDSA P-256",
            KeyKind::Unusable => "unusable",
        }
    }

    /// Whether it can verify anything at all.
    pub fn is_usable(&self) -> bool {
        !matches!(self.kind, KeyKind::Unusable)
    }

    /// [`verify_entry`] with this key.
    pub fn verify_entry(
        &self,
        endpoint: &Endpoint,
        owner: &str,
        clock: u64,
        deleted: bool,
        signature: &[u8],
    ) -> bool {
        self.entry(endpoint, owner, clock, deleted, signature)
            .verify()
    }

    /// One signed version of an entry to check with this key, for [`verify_entries`].
    pub fn entry<'a>(
        &'a self,
        endpoint: &Endpoint,
        owner: &str,
        clock: u64,
        deleted: bool,
        signature: &'a [u8],
    ) -> EntrySignature<'a> {
        EntrySignature {
            key: self,
            message: signed_bytes(endpoint, owner, clock, deleted),
            signature,
        }
    }

    pub(crate) fn record<'a>(&'a self, rec: &'a Record) -> EntrySignature<'a> {
        self.entry(
            &rec.endpoint,
            &rec.owner,
            rec.clock,
            rec.deleted,
            &rec.signature,
        )
    }

    fn verify_message(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.kind {
            KeyKind::Ed25519(key) => {
                ed25519_signature(signature).is_some_and(|sig| verify_ed25519(key, message, &sig))
            }
            KeyKind::P256 => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &*self.bytes)
                .verify(message, signature)
                .is_ok(),
            KeyKind::Unusable => false,
        }
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PublicKey").field(&self.algorithm()).finish()
    }
}

/// One signed version of an entry and the key to check it with ([`PublicKey::entry`]).
pub struct EntrySignature<'a> {
    key: &'a PublicKey,
    /// What the owner signed (`signed_bytes`).
    message: Vec<u8>,
    signature: &'a [u8],
}

impl EntrySignature<'_> {
    fn verify(&self) -> bool {
        self.key.verify_message(&self.message, self.signature)
    }
}

/// Single Ed25519 verification: `verify`, not `verify_strict`. What strict adds is refusing a
/// small-order public key (refused once, when the key is parsed: [`PublicKey::from_bytes`]) and a
/// small-order R in the signature, which only the key's owner can produce, for messages it can
/// sign anyway: it would not stop a forgery. Batch verification cannot make that R check, so
/// leaving it out keeps a record's fate the same whether it came alone or in a push-pull, and
/// saves the decompression of R (~5 µs, an eighth of a verification). Both refuse a
/// non-canonical `s` (the malleability that matters).
fn verify_ed25519(
    key: &VerifyingKey,
    message: &[u8],
    signature: &ed25519_dalek::Signature,
) -> bool {
    key.verify(message, signature).is_ok()
}

fn ed25519_signature(signature: &[u8]) -> Option<ed25519_dalek::Signature> {
    ed25519_dalek::Signature::from_slice(signature).ok()
}

/// Checks many signed entries, in order: Ed25519 ones [`BATCH`] at a time
/// (`ed25519_dalek::verify_batch`), and the signatures of a batch that fails again one by one,
/// so exactly the bad ones are `false`; P-256 ones one by one.
pub fn verify_entries(entries: &[EntrySignature<'_>]) -> Vec<bool> {
    let mut valid = vec![false; entries.len()];
    let mut batched = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        match (&e.key.kind, ed25519_signature(e.signature)) {
            (KeyKind::Ed25519(key), Some(sig)) => batched.push((i, *key, sig)),
            _ => valid[i] = e.verify(),
        }
    }
    for chunk in batched.chunks(BATCH) {
        let together = chunk.len() > 1 && {
            let messages: Vec<&[u8]> = chunk
                .iter()
                .map(|(i, ..)| entries[*i].message.as_slice())
                .collect();
            let signatures: Vec<_> = chunk.iter().map(|(_, _, sig)| *sig).collect();
            let keys: Vec<VerifyingKey> = chunk.iter().map(|(_, key, _)| *key).collect();
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        };
        for (i, key, sig) in chunk {
            valid[*i] = together || verify_ed25519(key, &entries[*i].message, sig);
        }
    }
    valid
}

/// Whether `rec.signature` is its owner's, given the owner's public key.
pub(crate) fn verify(key: &PublicKey, rec: &Record) -> bool {
    key.record(rec).verify()
}

/// Checks a signature from [`SigningKey::sign_entry`] against a public key as certificates
/// carry it (parsed on each call; the network DB keeps its keys parsed).
pub fn verify_entry(
    public_key: &[u8],
    endpoint: &Endpoint,
    owner: &str,
    clock: u64,
    deleted: bool,
    signature: &[u8],
) -> bool {
    PublicKey::from_bytes(public_key).verify_entry(endpoint, owner, clock, deleted, signature)
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
                draining: false,
            },
            owner: "a".into(),
            clock: 3,
            deleted: false,
            signature: Vec::new(),
        }
    }

    /// What a certificate issued before node keys were Ed25519 carries: a P-256 key, PEM.
    fn p256_key_pem() -> String {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem()
    }

    /// Checks that `key` signs what `public` verifies, and nothing tampered with.
    fn signs_what_it_verifies(key: &SigningKey, public: &[u8]) {
        assert_eq!(key.public_key(), public);
        let public = PublicKey::from_bytes(public);
        assert!(public.is_usable());
        let mut rec = record();
        rec.signature = key.sign(&rec);
        assert_eq!(rec.signature.len(), 64);
        assert!(verify(&public, &rec));
        assert!(verify_entry(
            public.as_bytes(),
            &rec.endpoint,
            &rec.owner,
            rec.clock,
            rec.deleted,
            &rec.signature
        ));
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
        let mut flipped = rec.clone();
        flipped.signature[10] ^= 1;
        assert!(!verify(&public, &flipped));
        // Another node's key does not verify it, of either kind.
        for other in [SigningKey::generate(), SigningKey::generate_p256()] {
            assert!(!verify(other.unwrap().verifying_key(), &rec));
        }
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn the_node_key_signs_what_its_certificate_verifies() {
        let ca = ClusterCa::generate("c1").unwrap();
        let creds = ca.issue("a", Role::Worker, "c1").unwrap();
        let key = SigningKey::from_pem(&creds.key_pem).unwrap();
        assert_eq!(key.algorithm(), "Ed25519");
        let public = certified_key(&creds.cert_pem).unwrap();
        assert_eq!(public.len(), ED25519_KEY_LEN);
        signs_what_it_verifies(&key, &public);
    }

    #[test]
    fn a_p256_node_key_from_before_ed25519_still_signs() {
        let key = SigningKey::from_pem(&p256_key_pem()).unwrap();
        assert_eq!(key.algorithm(), "ECDSA P-256");
        assert_eq!(key.public_key().len(), P256_KEY_LEN);
        signs_what_it_verifies(&key, key.public_key());
        let generated = SigningKey::generate_p256().unwrap();
        signs_what_it_verifies(&generated, generated.public_key());
    }

    #[test]
    fn a_signature_of_one_algorithm_never_verifies_under_the_other() {
        let ed = SigningKey::generate().unwrap();
        let p256 = SigningKey::generate_p256().unwrap();
        let rec = record();
        // Both are 64 bytes: only the key says which algorithm to use.
        let by_ed = Record {
            signature: ed.sign(&rec),
            ..rec.clone()
        };
        let by_p256 = Record {
            signature: p256.sign(&rec),
            ..rec.clone()
        };
        assert_eq!(by_ed.signature.len(), by_p256.signature.len());
        assert!(verify(ed.verifying_key(), &by_ed));
        assert!(verify(p256.verifying_key(), &by_p256));
        assert!(!verify(ed.verifying_key(), &by_p256));
        assert!(!verify(p256.verifying_key(), &by_ed));
        let batch = [
            ed.verifying_key().record(&by_p256),
            p256.verifying_key().record(&by_ed),
        ];
        assert_eq!(verify_entries(&batch), [false, false]);
    }

    #[test]
    fn keys_that_are_neither_verify_nothing() {
        let rec = Record {
            signature: vec![0; 64],
            ..record()
        };
        // The identity point: a small-order ("weak") Ed25519 key, for which an all-zero-ish
        // signature can verify under ed25519's plain equation.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for bytes in [&identity[..], &[], &[4; 33], &[3; 65], &[1; 64]] {
            let key = PublicKey::from_bytes(bytes);
            assert!(!key.is_usable(), "{bytes:?}");
            assert!(!verify(&key, &rec));
        }
        // A PKCS#8 key of another algorithm (X25519, by openssl) is refused by name.
        let x25519 = "-----BEGIN PRIVATE KEY-----\n\
                      MC4CAQAwBQYDK2VuBCIEIGB1EiUbRp3OR04GQmX03aSdCji4NmBNCr967ASl8gV8\n\
                      -----END PRIVATE KEY-----\n";
        assert!(matches!(
            SigningKey::from_pem(x25519),
            Err(SigningKeyError::Unsupported { oid }) if oid.to_string() == "1.3.101.110"
        ));
        assert!(matches!(
            SigningKey::from_pem("not a key"),
            Err(SigningKeyError::NotPkcs8 | SigningKeyError::Pem(_))
        ));
    }

    /// `n` records, each signed by its own key (every third P-256 when `mixed`).
    fn signed_records(n: usize, mixed: bool) -> Vec<(PublicKey, Record)> {
        (0..n)
            .map(|i| {
                let key = if mixed && i % 3 == 0 {
                    SigningKey::generate_p256()
                } else {
                    SigningKey::generate()
                }
                .unwrap();
                let mut rec = record();
                rec.owner = format!("node-{i}");
                rec.clock = i as u64;
                rec.endpoint.endpoint_id = format!("t{i}");
                rec.signature = key.sign(&rec);
                (key.verifying_key().clone(), rec)
            })
            .collect()
    }

    fn verify_all(recs: &[(PublicKey, Record)]) -> Vec<bool> {
        let entries: Vec<EntrySignature<'_>> =
            recs.iter().map(|(key, rec)| key.record(rec)).collect();
        verify_entries(&entries)
    }

    #[test]
    fn a_batch_of_valid_records_all_pass() {
        for n in [0, 1, 2, BATCH, BATCH + 7, 2 * BATCH + 1] {
            assert!(
                verify_all(&signed_records(n, false)).iter().all(|v| *v),
                "n = {n}"
            );
        }
        assert!(
            verify_all(&signed_records(BATCH + 5, true))
                .iter()
                .all(|v| *v)
        );
    }

    #[test]
    fn a_forged_record_in_a_batch_drops_exactly_that_one() {
        for mixed in [false, true] {
            let mut recs = signed_records(2 * BATCH + 3, mixed);
            // In the first batch: a record changed after signing, one signed by another node,
            // and a garbage signature; in the last (short) one, a P-256 key's record moved.
            recs[5].1.clock += 1;
            let other = recs[8].1.signature.clone();
            recs[7].1.signature = other;
            recs[11].1.signature = vec![0xff; 64];
            let last = recs.len() - 2;
            recs[last].1.endpoint.ip = Ipv4Addr::new(10, 9, 9, 9);
            let forged = [5, 7, 11, last];
            let valid = verify_all(&recs);
            for (i, v) in valid.iter().enumerate() {
                assert_eq!(*v, !forged.contains(&i), "record {i} (mixed: {mixed})");
            }
        }
    }
}
