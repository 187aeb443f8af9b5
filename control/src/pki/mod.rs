//! The cluster PKI: the CA created at `swarm init`, node certificates carrying a node's ID and
//! role, join tokens that pin the CA, and the mutual-TLS configuration of the 2377 gRPC API.
//!
//! # Layout
//! - [`ca`]: [`ClusterCa`] — generating the CA (and its cross-signed successor), its digest,
//!   issuing node certificates.
//! - [`creds`]: [`NodeCredentials`] — a node's CA, certificate and key, saved in the state dir.
//! - [`info`]: [`CertInfo`] — a certificate's serial, lifetime and fingerprint; when it is due
//!   for renewal; [`verify_chain`].
//! - [`live`]: [`LiveTls`] — the node's TLS material now, replaced in place on renewal, and
//!   the clients and server that use it.
//! - [`peer`]: [`peer_identity`] — the node ID and role of a (TLS-verified) peer certificate;
//!   [`certified_key`] — the public key a node certificate certifies.
//! - [`token`]: [`JoinToken`] — `SWMTKN-1-<CA digest>-<secret>`, parsing and checking.
//! - [`tls`]: [`client_config`] and [`connect_for_join`] (joining without trust on first use).
//! - [`tls_server`]: [`server_config`] (client certificates checked against the CA and the
//!   swarm's [`Revocations`]) and [`handshakes`], which the 2377 server runs itself.
//! - `error`: [`PkiError`]; `pem`: PEM helpers.

pub mod ca;
pub mod creds;
mod error;
pub mod info;
pub mod live;
pub mod peer;
mod pem;
pub mod tls;
pub mod tls_server;
pub mod token;

pub use ca::{
    ClusterCa, DEFAULT_NODE_CERT_EXPIRY, DOCKER_MIN_NODE_CERT_EXPIRY, IssuingCa,
    MIN_NODE_CERT_EXPIRY,
};
pub use creds::NodeCredentials;
pub use error::PkiError;
pub use info::{
    CertInfo, bundle_holds, cert_info, random_renewal_share, renewal_delay, time_text, verify_chain,
};
pub use live::{LiveTls, TlsSet};
pub use peer::{PeerIdentity, certified_key, identity_of, peer_identity};
pub use tls::{TLS_SERVER_NAME, client_config, connect_for_join};
pub use tls_server::{NoRevocations, Revocations, handshakes, server_config};
pub use token::{JoinToken, generate_secret};
