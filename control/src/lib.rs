//! shoal's control plane: the cluster model, node identity and the gRPC API.
//!
//! This crate knows nothing of aya, netlink or sockets inside namespaces; it publishes desired
//! state and the agent's reconcile loops apply it.
//!
//! # Layout
//! - [`api`]: the gRPC API (generated from `proto/shoal.proto`), served on the local socket and
//!   on 2377.
//! - [`clock`]: wall-clock time as the cluster model stores it.
//! - [`error_chain`]: an error with its causes on one line, the workspace's one formatter.
//! - [`identity`]: a node's ID, created once and kept in the state directory.
//! - [`local_client`]: connecting to an agent's local API socket.
//! - [`cluster`]: the cluster model kept in Raft, and the commands that change it.
//! - [`allocator`]: subnets, gateways, VNIs, task addresses, VIPs and published ports,
//!   allocated by the leader.
//! - [`orchestrator`]: the pure function from the cluster state to the commands that move tasks
//!   toward the services' desired state.
//! - [`raft`]: Raft among managers (openraft), its log and state machine on redb.
//! - [`pki`]: the cluster CA, node certificates, join tokens and TLS configuration.
//! - [`netdb`]: the gossiped endpoint table on 7946 (SWIM via foca, TCP push-pull, AES-GCM).
//! - [`wire_limits`]: the message bounds of every gRPC channel, client and server.
//! - [`format`]: the field-keyed encoding (CBOR, framed with a format byte) of everything kept
//!   in Raft and sent between nodes.
//! - [`version`]: the API version between nodes, and the check of every caller on 2377.
//! - [`swarm`]: the node's membership at run time: init, join, leave, Raft, heartbeats, and the
//!   `Cluster` API service.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod clock;
pub mod cluster;
pub mod error_chain;
pub mod format;
pub mod identity;
pub mod local_client;
pub mod netdb;
pub mod orchestrator;
pub mod pki;
pub mod raft;
pub mod swarm;
pub mod version;
pub mod wire_limits;

/// The cluster API's TCP port (Docker's 2377), used when an address names no port.
pub const MANAGER_PORT: u16 = 2377;

/// The gRPC API, generated from `proto/shoal.proto`.
pub mod api {
    #![allow(clippy::all, reason = "generated code")]
    tonic::include_proto!("shoal.v1");

    mod redacted;
}
