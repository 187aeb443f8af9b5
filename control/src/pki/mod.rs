//! The cluster PKI: the CA created at `swarm init`, node certificates carrying a node's ID and
//! role, join tokens that pin the CA, and the mutual-TLS configuration of the 2377 gRPC API.
//!
//! # Layout
//! - [`ca`]: [`ClusterCa`] — generating the CA, its digest, issuing node certificates.
//! - [`creds`]: [`NodeCredentials`] — a node's CA, certificate and key, saved in the state dir.
//! - [`peer`]: [`peer_identity`] — the node ID and role of a (TLS-verified) peer certificate;
//!   [`certified_key`] — the public key a node certificate certifies.
//! - [`token`]: [`JoinToken`] — `SWMTKN-1-<CA digest>-<secret>`, parsing and checking.
//! - [`tls`]: [`server_tls`], [`client_tls`] and [`connect_for_join`] (joining without trust
//!   on first use).
//! - `error`: [`PkiError`]; `pem`: PEM helpers.

pub mod ca;
pub mod creds;
mod error;
pub mod peer;
mod pem;
pub mod tls;
pub mod token;

pub use ca::ClusterCa;
pub use creds::NodeCredentials;
pub use error::PkiError;
pub use peer::{PeerIdentity, certified_key, peer_identity};
pub use tls::{TLS_SERVER_NAME, client_tls, connect_for_join, server_tls};
pub use token::{JoinToken, generate_secret};
