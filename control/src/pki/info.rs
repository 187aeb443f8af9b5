//! What a node certificate says about its lifetime ([`CertInfo`]: serial, validity, a
//! fingerprint to name it by), when it is due for renewal ([`renewal_delay`]), and whether a
//! certificate chain leads to a set of roots ([`verify_chain`]).

use std::{sync::Arc, time::Duration};

use rustls::{
    client::{WebPkiServerVerifier, danger::ServerCertVerifier},
    pki_types::{ServerName, UnixTime},
};
use sha2::{Digest, Sha256};
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use super::{PkiError, TLS_SERVER_NAME, pem};

/// A node renews its certificate at a random point of this share of its lifetime, at the
/// earliest (swarmkit's `CertLowerRotationRange`)...
const RENEW_FROM: f64 = 0.5;
/// ... and at the latest (`CertUpperRotationRange`): random, so that nodes issued together do
/// not all come back at once.
const RENEW_UNTIL: f64 = 0.8;

/// The lifetime of a certificate and what names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number, hexadecimal.
    pub serial: String,
    /// SHA-256 of the certificate's DER, hexadecimal: what a node reports to say which
    /// certificate it uses.
    pub fingerprint: String,
    /// Unix seconds.
    pub not_before: u64,
    /// Unix seconds.
    pub not_after: u64,
}

/// The first certificate of `cert_pem` (a node's certificate, maybe followed by intermediates).
pub fn cert_info(cert_pem: &str) -> Result<CertInfo, PkiError> {
    let der = pem::cert_der(cert_pem, "the node certificate")?;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|source| PkiError::X509 {
        what: "the node certificate",
        source,
    })?;
    let validity = cert.validity();
    Ok(CertInfo {
        serial: cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        fingerprint: Sha256::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        not_before: u64::try_from(validity.not_before.timestamp()).unwrap_or(0),
        not_after: u64::try_from(validity.not_after.timestamp()).unwrap_or(0),
    })
}

/// A Unix time as RFC 2822 (`Tue, 21 Jan 2025 10:00:00 +0000`), as in messages about a
/// certificate's dates; the number itself if it is out of range.
pub fn time_text(unix_secs: u64) -> String {
    i64::try_from(unix_secs)
        .ok()
        .and_then(|t| x509_parser::time::ASN1Time::from_timestamp(t).ok())
        .and_then(|t| t.to_rfc2822().ok())
        .unwrap_or_else(|| format!("{unix_secs} (Unix time)"))
}

/// How long from `now` (Unix seconds) until a certificate valid from `not_before` to
/// `not_after` is renewed: at `share` (clamped to 50-80 %) of its lifetime, which the caller
/// draws at random, as swarmkit does; zero once that point has passed.
pub fn renewal_delay(not_before: u64, not_after: u64, now: f64, share: f64) -> Duration {
    let lifetime = not_after.saturating_sub(not_before) as f64;
    let at = not_before as f64 + lifetime * share.clamp(RENEW_FROM, RENEW_UNTIL);
    Duration::try_from_secs_f64(at - now).unwrap_or(Duration::ZERO)
}

/// A share of a lifetime drawn uniformly from 50-80 %, for [`renewal_delay`].
pub fn random_renewal_share() -> f64 {
    use rand::Rng as _;
    rand::rng().random_range(RENEW_FROM..RENEW_UNTIL)
}

/// Whether the PEM bundle `bundle_pem` holds the certificate `cert_pem` (compared as DER).
pub fn bundle_holds(bundle_pem: &str, cert_pem: &str) -> bool {
    match (
        pem::certs_der(bundle_pem, "the bundle"),
        pem::cert_der(cert_pem, "the certificate"),
    ) {
        (Ok(bundle), Ok(cert)) => bundle.contains(&cert),
        _ => false,
    }
}

/// Checks that `cert_pem` (a node certificate followed by its intermediates, if any) leads to
/// one of the roots in `roots_pem` and is valid now, as a node's TLS peers will check it.
pub fn verify_chain(cert_pem: &str, roots_pem: &str) -> Result<(), PkiError> {
    let chain = pem::certs_der(cert_pem, "the node certificate")?;
    let mut roots = rustls::RootCertStore::empty();
    for root in pem::certs_der(roots_pem, "the CA certificates")? {
        roots.add(root).map_err(|source| PkiError::Tls { source })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| PkiError::Tls {
            source: rustls::Error::General(format!("chain verifier: {e}")),
        })?;
    let name = ServerName::try_from(TLS_SERVER_NAME).map_err(|e| PkiError::Tls {
        source: rustls::Error::General(format!("{TLS_SERVER_NAME}: {e}")),
    })?;
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .map(drop)
        .map_err(|source| PkiError::Tls { source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cluster::Role, pki::ClusterCa};

    #[test]
    fn renewal_falls_between_half_and_four_fifths_of_the_lifetime() {
        // 40 s, backdated 4 s: renewed 16 to 28 s after issue (20-32 s of the 44 s span).
        let (from, until) = (1_000, 1_044);
        let now = 1_004.0;
        assert_eq!(
            renewal_delay(from, until, now, 0.5),
            Duration::from_secs(18)
        );
        assert_eq!(
            renewal_delay(from, until, now, 0.8).as_secs_f64().round(),
            31.0
        );
        // Out-of-range shares are clamped; past the point, at once.
        assert_eq!(
            renewal_delay(from, until, now, 0.0),
            Duration::from_secs(18)
        );
        assert_eq!(renewal_delay(from, until, 1_040.0, 0.6), Duration::ZERO);
        for _ in 0..100 {
            let share = random_renewal_share();
            assert!((0.5..0.8).contains(&share), "{share}");
        }
    }

    #[test]
    fn times_read_as_dates() {
        assert_eq!(time_text(1_737_453_600), "Tue, 21 Jan 2025 10:00:00 +0000");
    }

    #[test]
    fn info_reads_serial_dates_and_fingerprint() {
        let ca = ClusterCa::generate("c1").unwrap();
        let (cert, _) = ca
            .issue_leaf("node1", Role::Worker, "c1", Duration::from_secs(3600))
            .unwrap();
        let info = cert_info(&cert).unwrap();
        assert_eq!(info.not_after - info.not_before, 3600 + 360);
        assert_eq!(info.fingerprint.len(), 64);
        assert_eq!(info.serial.len(), 32);
        let again = cert_info(&cert).unwrap();
        assert_eq!(info, again);
    }

    #[test]
    fn chains_are_verified_against_the_roots_given() {
        let old = ClusterCa::generate("c1").unwrap();
        let (new, cross) = old.successor("c1").unwrap();
        let (leaf, _) = new
            .issue_leaf("node1", Role::Worker, "c1", Duration::from_secs(3600))
            .unwrap();
        let with_cross = format!("{leaf}{cross}");
        // Directly to the new root; to the old one only through the cross-signed certificate.
        verify_chain(&leaf, &new.cert_pem).unwrap();
        verify_chain(&with_cross, &new.cert_pem).unwrap();
        verify_chain(&with_cross, &old.cert_pem).unwrap();
        assert!(verify_chain(&leaf, &old.cert_pem).is_err());
        verify_chain(&leaf, &format!("{}{}", old.cert_pem, new.cert_pem)).unwrap();
        // Another swarm's CA proves nothing.
        let other = ClusterCa::generate("c1").unwrap();
        assert!(verify_chain(&with_cross, &other.cert_pem).is_err());
        let both = format!("{}{}", old.cert_pem, new.cert_pem);
        assert!(bundle_holds(&both, &old.cert_pem) && bundle_holds(&both, &new.cert_pem));
        assert!(!bundle_holds(&both, &other.cert_pem));
        assert!(!bundle_holds("garbage", &old.cert_pem));
    }
}
