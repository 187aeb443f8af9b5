//! Join tokens, in Docker's format: `SWMTKN-1-<CA digest>-<secret>`. The digest pins the
//! cluster CA (so a joining node trusts nothing on first use); the secret admits the node, and
//! which secret it matches (worker or manager) decides its role.

use std::{fmt, str::FromStr};

use rand::Rng;

use super::{PkiError, ca::CA_DIGEST_LEN};

/// First part of every join token.
pub const TOKEN_PREFIX: &str = "SWMTKN";
/// Token format version.
pub const TOKEN_VERSION: &str = "1";
/// Length of a token secret.
pub const SECRET_LEN: usize = 25;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A fresh token secret: 25 characters of `[a-z0-9]` (about 129 bits) from the thread-local
/// CSPRNG.
pub fn generate_secret() -> String {
    let mut rng = rand::rng();
    (0..SECRET_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The CA digest: SHA-256 of the CA certificate's DER, base 36, 50 characters.
    pub ca_digest: String,
    /// The secret: 25 characters of `[a-z0-9]`.
    pub secret: String,
}

// Hand-written so that logging a token never prints its secret.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl JoinToken {
    pub fn new(ca_digest: impl Into<String>, secret: impl Into<String>) -> Self {
        JoinToken {
            ca_digest: ca_digest.into(),
            secret: secret.into(),
        }
    }

    /// Whether this token names the CA with digest `ca_digest` and carries `secret`. The
    /// secret is compared in constant time (the digest is public: it is in every token).
    pub fn matches(&self, ca_digest: &str, secret: &str) -> bool {
        // `&`, not `&&`: always run the secret comparison.
        (self.ca_digest == ca_digest) & constant_time_eq(self.secret.as_bytes(), secret.as_bytes())
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}-{TOKEN_VERSION}-{}-{}",
            self.ca_digest, self.secret
        )
    }
}

impl FromStr for JoinToken {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, PkiError> {
        let invalid = |reason| PkiError::InvalidToken { reason };
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        let parts: Vec<&str> = s.split('-').collect();
        if parts.len() != 4 {
            return Err(invalid("expected SWMTKN-1-<CA digest>-<secret>"));
        }
        if parts[0] != TOKEN_PREFIX {
            return Err(invalid("it does not start with SWMTKN"));
        }
        if parts[1] != TOKEN_VERSION {
            return Err(invalid("unsupported token version"));
        }
        let (digest, secret) = (parts[2], parts[3]);
        if digest.len() != CA_DIGEST_LEN || !is_base36(digest) {
            return Err(invalid("the CA digest is not 50 characters of [a-z0-9]"));
        }
        if secret.len() != SECRET_LEN || !is_base36(secret) {
            return Err(invalid("the secret is not 25 characters of [a-z0-9]"));
        }
        Ok(JoinToken::new(digest, secret))
    }
}

fn is_base36(s: &str) -> bool {
    s.bytes().all(|b| ALPHABET.contains(&b))
}

/// Equality whose time does not depend on where the inputs first differ. Lengths are not
/// hidden (every secret has the same length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimizer from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcd";

    #[test]
    fn secret_shape() {
        let a = generate_secret();
        assert_eq!(a.len(), SECRET_LEN);
        assert!(is_base36(&a));
        assert_ne!(a, generate_secret());
    }

    #[test]
    fn format_parse_round_trip() {
        assert_eq!(DIGEST.len(), CA_DIGEST_LEN);
        let token = JoinToken::new(DIGEST, generate_secret());
        let text = token.to_string();
        assert!(text.starts_with("SWMTKN-1-"));
        assert_eq!(text.parse::<JoinToken>().unwrap(), token);
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let secret = generate_secret();
        let bad = [
            String::new(),
            format!("SWMTKN-2-{DIGEST}-{secret}"),
            format!("XXMTKN-1-{DIGEST}-{secret}"),
            format!("swmtkn-1-{DIGEST}-{secret}"),
            format!("SWMTKN-1-{}-{secret}", &DIGEST[1..]),
            format!("SWMTKN-1-{DIGEST}0-{secret}"),
            format!("SWMTKN-1-{}-{secret}", DIGEST.to_uppercase()),
            format!("SWMTKN-1-{DIGEST}-{}", &secret[1..]),
            format!("SWMTKN-1-{DIGEST}"),
            format!("SWMTKN-1-{DIGEST}-"),
            format!("SWMTKN-1-{DIGEST}-{secret}-extra"),
            "SWMTKN".to_string(),
            "garbage".to_string(),
        ];
        for token in bad {
            let err = token.parse::<JoinToken>().unwrap_err();
            assert!(
                err.to_string().starts_with("invalid join token"),
                "{token:?}: {err}"
            );
        }
    }

    #[test]
    fn matches_checks_digest_and_secret() {
        let secret = generate_secret();
        let token = JoinToken::new(DIGEST, secret.clone());
        assert!(token.matches(DIGEST, &secret));
        assert!(!token.matches(DIGEST, &generate_secret()));
        assert!(!token.matches(&DIGEST.replace('0', "1"), &secret));
        assert!(!token.matches(DIGEST, ""));
    }

    #[test]
    fn debug_hides_the_secret() {
        let secret = generate_secret();
        let token = JoinToken::new(DIGEST, secret.clone());
        assert!(!format!("{token:?}").contains(&secret));
    }
}
