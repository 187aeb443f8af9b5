//! Secrets at rest: [`SealKey`] (AES-256-GCM, a random nonce per value) seals a manager's Raft
//! data with its data key (DEK) and the DEK with the swarm's unlock key (KEK), and
//! [`UnlockKey`] is the KEK in Docker's text form, `SWMKEY-1-<base64 of 32 bytes>`.
//!
//! Sealed bytes are `[nonce 12][ciphertext + 16-byte tag]`; who stores them adds its own
//! version byte.

use std::{fmt, str::FromStr};

use aes_gcm::{Aes256Gcm, KeyInit, Nonce, aead::Aead};

/// Length of every key here: AES-256.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Docker's prefix of a swarm unlock key.
const UNLOCK_KEY_PREFIX: &str = "SWMKEY-1-";

/// Why sealed bytes did not open, or plaintext did not seal.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the sealed value is truncated")]
    Truncated,
    /// The tag did not verify: another key, or damaged bytes.
    #[error("the sealed value does not open with this key")]
    WrongKey,
    #[error("the value is too large to seal")]
    TooLarge,
    #[error("a key must be {KEY_LEN} bytes, not {0}")]
    KeyLength(usize),
}

/// An AES-256-GCM key. Cloning is cheap enough (the key schedule is copied).
#[derive(Clone)]
pub struct SealKey {
    bytes: [u8; KEY_LEN],
    /// Boxed: the key schedule is about a kilobyte, and keys travel in enums and structs.
    cipher: Box<Aes256Gcm>,
}

// Hand-written so that a stray `{:?}` never prints the key.
impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey([redacted])")
    }
}

impl PartialEq for SealKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl SealKey {
    /// A new random key.
    pub fn generate() -> SealKey {
        SealKey::from_array(rand::random())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SealKey, SealError> {
        let array: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| SealError::KeyLength(bytes.len()))?;
        Ok(SealKey::from_array(array))
    }

    fn from_array(bytes: [u8; KEY_LEN]) -> SealKey {
        SealKey {
            cipher: Box::new(Aes256Gcm::new(&bytes.into())),
            bytes,
        }
    }

    /// The raw key, to be stored (sealed, or where the clear is meant).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// `[nonce][ciphertext + tag]` of `plain`.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain)
            .map_err(|_| SealError::TooLarge)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// The plaintext of what [`SealKey::seal`] made with this key.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Truncated);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SealError::WrongKey)
    }
}

/// The swarm's unlock key: the key that seals each manager's DEK when autolock is on.
#[derive(Clone, Debug, PartialEq)]
pub struct UnlockKey(SealKey);

/// Text that is not an unlock key.
#[derive(Debug, thiserror::Error)]
#[error("not of the form {UNLOCK_KEY_PREFIX}<base64 of {KEY_LEN} bytes>")]
pub struct BadUnlockKey;

impl UnlockKey {
    pub fn generate() -> UnlockKey {
        UnlockKey(SealKey::generate())
    }

    pub fn key(&self) -> &SealKey {
        &self.0
    }
}

impl fmt::Display for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{UNLOCK_KEY_PREFIX}{}",
            base64_encode(self.0.as_bytes(), false)
        )
    }
}

impl FromStr for UnlockKey {
    type Err = BadUnlockKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s
            .trim()
            .strip_prefix(UNLOCK_KEY_PREFIX)
            .ok_or(BadUnlockKey)?;
        let bytes = base64_decode(body).ok_or(BadUnlockKey)?;
        SealKey::from_bytes(&bytes)
            .map(UnlockKey)
            .map_err(|_| BadUnlockKey)
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64, padded or not (Docker's unlock keys are unpadded).
pub fn base64_encode(bytes: &[u8], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64, padded or not; `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|&a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_their_key_only() {
        let key = SealKey::generate();
        let sealed = key.seal(b"-----BEGIN PRIVATE KEY-----").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"PRIVATE KEY"));
        assert_eq!(key.open(&sealed).unwrap(), b"-----BEGIN PRIVATE KEY-----");
        assert!(matches!(
            SealKey::generate().open(&sealed),
            Err(SealError::WrongKey)
        ));
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(matches!(key.open(&damaged), Err(SealError::WrongKey)));
        assert!(matches!(key.open(&sealed[..20]), Err(SealError::Truncated)));
    }

    #[test]
    fn unlock_keys_round_trip_in_dockers_form() {
        let key = UnlockKey::generate();
        let text = key.to_string();
        assert!(text.starts_with("SWMKEY-1-"), "{text}");
        assert_eq!(text.len(), "SWMKEY-1-".len() + 43, "{text}");
        assert_eq!(text.parse::<UnlockKey>().unwrap(), key);
        assert_eq!(format!(" {text}\n").parse::<UnlockKey>().unwrap(), key);
        for bad in [
            "",
            "SWMKEY-1-",
            "SWMKEY-2-abc",
            &text[..text.len() - 2],
            "SWMKEY-1-!!!!",
        ] {
            assert!(bad.parse::<UnlockKey>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn base64_matches_the_standard() {
        for (plain, encoded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\xfe\xfd", "//79"),
        ] {
            assert_eq!(base64_encode(plain, true), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain);
            assert_eq!(base64_decode(encoded.trim_end_matches('=')).unwrap(), plain);
        }
        assert!(base64_decode("Zm9vY").is_none());
    }
}
