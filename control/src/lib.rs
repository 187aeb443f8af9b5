//! shoal's control plane: the cluster model, node identity and the gRPC API.
//!
//! This crate knows nothing of aya, netlink or sockets inside namespaces; it publishes desired
//! state and the agent's reconcile loops apply it.
//!
//! # Layout
//! - [`api`]: the gRPC API (generated from `proto/shoal.proto`), served on the local socket and
//!   on 2377.
//! - [`identity`]: a node's ID, created once and kept in the state directory.
//! - [`local_client`]: connecting to an agent's local API socket.
//! - [`cluster`]: the cluster model kept in Raft, and the commands that change it.
//! - [`allocator`]: overlay subnets, gateways and VNIs, allocated by the leader.
//! - [`raft`]: Raft among managers (openraft), its log and state machine on redb.
//! - [`pki`]: the cluster CA, node certificates, join tokens and TLS configuration.
//! - [`netdb`]: the gossiped endpoint table on 7946 (SWIM via foca, TCP push-pull, AES-GCM).
//! - [`swarm`]: the node's membership at run time: init, join, leave, Raft, heartbeats, and the
//!   `Cluster` API service.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod cluster;
pub mod identity;
pub mod local_client;
pub mod netdb;
pub mod orchestrator;
pub mod pki;
pub mod raft;
pub mod swarm;

/// The gRPC API, generated from `proto/shoal.proto`.
pub mod api {
    #![allow(clippy::all, reason = "generated code")]
    tonic::include_proto!("shoal.v1");
}
