//! The cluster PKI: the CA created at `swarm init`, node certificates carrying a node's ID and
//! role, join tokens that pin the CA, and the mutual-TLS configuration of the 2377 gRPC API.
//!
//! # Layout
//! - [`ca`]: [`ClusterCa`] — generating the CA, its digest, issuing node certificates.
//! - [`creds`]: [`NodeCredentials`] — a node's CA, certificate and key, saved in the state dir.
//! - [`peer`]: [`peer_identity`] — the node ID and role of a (TLS-verified) peer certificate;
//!   [`certified_key`] — the public key a node certificate certifies.
//! - [`token`]: [`JoinToken`] — `SWMTKN-1-<CA digest>-<secret>`, parsing and checking.
//! - [`tls`]: [`client_tls`] and [`connect_for_join`] (joining without trust on first use).
//! - [`tls_server`]: [`server_config`] (client certificates checked against the CA and the
//!   swarm's [`Revocations`]) and [`handshakes`], which the 2377 server runs itself.
//! - `error`: [`PkiError`]; `pem`: PEM helpers.

pub mod ca;
pub mod creds;
mod error;
pub mod peer;
mod pem;
pub mod tls;
pub mod tls_server;
pub mod token;

pub use ca::{ClusterCa, NODE_VALIDITY};
pub use creds::NodeCredentials;
pub use error::PkiError;
pub use peer::{PeerIdentity, certified_key, peer_identity};
pub use tls::{TLS_SERVER_NAME, client_tls, connect_for_join};
pub use tls_server::{NoRevocations, Revocations, handshakes, server_config};
pub use token::{JoinToken, generate_secret};
