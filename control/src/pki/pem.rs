//! PEM helpers: reading certificates and keys out of PEM text, and writing a certificate back
//! as PEM in exactly the form rcgen writes it (so PEM strings from either can be compared).

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::PkiError;

/// The first certificate of a PEM document.
pub(crate) fn cert_der(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|source| PkiError::Pem { what, source })
}

/// Every certificate of a PEM document, in order (a certificate followed by its intermediates,
/// or a bundle of roots); at least one.
pub(crate) fn certs_der(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PkiError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(PkiError::Pem {
            what,
            source: rustls::pki_types::pem::Error::NoItemsFound,
        });
    }
    Ok(certs)
}

/// The private key of a PEM document (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn key_der(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|source| PkiError::Pem { what, source })
}

/// A certificate DER as PEM: 64-character base64 lines, LF line endings — the layout of the
/// `pem` crate with rcgen's Unix settings, so a re-encoded CA equals the CA's stored PEM.
pub(crate) fn encode_cert(der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Standard base64 with padding (RFC 4648 §4). Small enough to not warrant a dependency.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn encode_parse_round_trip() {
        let der: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let pem = encode_cert(&der);
        let back = cert_der(&pem, "test").unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
    }

    #[test]
    fn every_certificate_of_a_bundle_is_read_in_order() {
        let a: Vec<u8> = (0..=255u8).take(90).collect();
        let b: Vec<u8> = (0..=255u8).rev().take(70).collect();
        let bundle = format!("{}{}", encode_cert(&a), encode_cert(&b));
        let certs = certs_der(&bundle, "test").unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), a.as_slice());
        assert_eq!(certs[1].as_ref(), b.as_slice());
        assert_eq!(cert_der(&bundle, "test").unwrap().as_ref(), a.as_slice());
        assert!(certs_der("", "test").is_err());
    }

    #[test]
    fn empty_pem_is_an_error() {
        assert!(cert_der("", "test").is_err());
        assert!(cert_der("nothing here", "test").is_err());
        assert!(key_der("", "test").is_err());
    }
}
