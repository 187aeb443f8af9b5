//! [`PkiError`]: everything that can go wrong in the PKI, each variant saying what was being done.

use std::{io, net::SocketAddr, path::PathBuf};

/// An error of the cluster PKI: creating or using the CA, node credentials, join tokens, TLS.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen could not build a key or certificate.
    #[error("generating {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// A PEM document held no usable certificate or key.
    #[error("reading {what} (PEM)")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate's DER could not be parsed.
    #[error("parsing {what}")]
    X509 {
        what: &'static str,
        #[source]
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    /// A certificate lacks a field shoal puts in every certificate it issues.
    #[error("the certificate has no {field}")]
    MissingField { field: &'static str },
    /// The certificate's OU is not one of the roles shoal issues.
    #[error("the certificate's organizational unit {0:?} is not swarm-manager or swarm-worker")]
    UnknownRole(String),
    /// Reading or writing credential files.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Some credential files are present and some are not (`save` was interrupted, or someone
    /// deleted files): refuse to guess.
    #[error("incomplete node credentials in {dir}: {missing} is missing")]
    IncompleteCredentials { dir: PathBuf, missing: &'static str },
    /// A malformed join token. The message starts like Docker's ("invalid join token").
    #[error("invalid join token: {reason}")]
    InvalidToken { reason: &'static str },
    /// Building a rustls configuration.
    #[error("building the TLS configuration")]
    Tls {
        #[source]
        source: rustls::Error,
    },
    /// Connecting to a manager failed (TCP, TLS or HTTP/2).
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    /// The manager's TLS chain holds no CA certificate with the digest of the join token: the
    /// token belongs to another swarm, or someone is in the middle.
    #[error(
        "the manager at {addr} presented a CA that does not match the join token \
         (expected CA digest {expected}, the manager sent {found:?})"
    )]
    CaMismatch {
        addr: SocketAddr,
        expected: String,
        found: Vec<String>,
    },
}
