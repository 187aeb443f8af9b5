//! Framing and encryption of everything that goes on the wire (UDP datagrams and TCP frames):
//!
//! `[version u8][key id u8][nonce 12][AES-256-GCM ciphertext + 16-byte tag]`
//!
//! The key id is the first byte of SHA-256(key), not an index into the key list, so it stays
//! stable while keys are added, reordered and removed during rotation. The two header bytes are
//! authenticated as associated data so a forged version or key id fails the tag.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

/// The only framing version so far.
pub(crate) const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// version + key id + nonce.
pub(crate) const HEADER_LEN: usize = 2 + NONCE_LEN;
/// Bytes added to every plaintext.
pub(crate) const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Why an incoming packet was dropped; maps one-to-one onto the stats counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Shorter than the header plus the tag.
    #[error("truncated")]
    Truncated,
    /// No key with its id opens it (wrong key, or forged).
    #[error("undecryptable")]
    Undecryptable,
    /// An unknown framing version.
    #[error("malformed")]
    Malformed,
}

/// The keys we accept, and which one we send with.
#[derive(Clone)]
pub(crate) struct Keyring {
    keys: Vec<(u8, Aes256Gcm)>,
    primary: usize,
}

impl Keyring {
    /// `primary` is clamped so a bad index can never make sending panic.
    pub(crate) fn new(keys: &[[u8; 32]], primary: usize) -> Keyring {
        let keys: Vec<(u8, Aes256Gcm)> = keys
            .iter()
            .map(|k| (key_id(k), Aes256Gcm::new(k.into())))
            .collect();
        let primary = primary.min(keys.len().saturating_sub(1));
        Keyring { keys, primary }
    }

    /// Encrypts with the primary key; `None` only if the ring is empty.
    pub(crate) fn seal(&self, plaintext: &[u8]) -> Option<Vec<u8>> {
        let (id, cipher) = self.keys.get(self.primary)?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = [VERSION, *id];
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.extend_from_slice(&aad);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Some(out)
    }

    /// Decrypts with any key whose id matches (ids are one byte, so several may).
    pub(crate) fn open(&self, packet: &[u8]) -> Result<Vec<u8>, DropReason> {
        if packet.len() < OVERHEAD {
            return Err(DropReason::Truncated);
        }
        if packet[0] != VERSION {
            return Err(DropReason::Malformed);
        }
        let id = packet[1];
        let nonce = Nonce::from_slice(&packet[2..HEADER_LEN]);
        let aad = [packet[0], id];
        self.keys
            .iter()
            .filter(|(kid, _)| *kid == id)
            .find_map(|(_, cipher)| {
                cipher
                    .decrypt(
                        nonce,
                        Payload {
                            msg: &packet[HEADER_LEN..],
                            aad: &aad,
                        },
                    )
                    .ok()
            })
            .ok_or(DropReason::Undecryptable)
    }
}

fn key_id(key: &[u8; 32]) -> u8 {
    Sha256::digest(key)[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_rotation_and_rejects() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let old = Keyring::new(&[a], 0);
        let both = Keyring::new(&[a, b], 1);
        let new = Keyring::new(&[b], 0);
        let p = old.seal(b"hello").unwrap();
        assert_eq!(both.open(&p).unwrap(), b"hello");
        assert_eq!(new.open(&p), Err(DropReason::Undecryptable));
        assert_eq!(new.open(&both.seal(b"x").unwrap()).unwrap(), b"x");
        assert_eq!(old.open(&p[..10]), Err(DropReason::Truncated));
        let mut forged = p.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(old.open(&forged), Err(DropReason::Undecryptable));
        let mut badver = p;
        badver[0] = 9;
        assert_eq!(old.open(&badver), Err(DropReason::Malformed));
    }
}
