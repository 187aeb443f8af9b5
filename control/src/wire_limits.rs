//! The bounds of every gRPC channel shoal opens or serves: the local socket, 2377 between
//! nodes, Raft among managers. One place, so a client never refuses what a server may send.
//!
//! tonic's default is 4 MiB to decode and no bound to encode. The largest messages are a node's
//! assignments (up to [`crate::cluster::limits::MAX_REPLICAS`] tasks, each with a spec of at
//! most [`crate::cluster::limits::MAX_SPEC_BYTES`]) and Raft batches; 64 MiB holds both with
//! room, while a peer can make this process allocate no more than that per message.

use tonic::transport::Channel;

use crate::api::{
    agent_client::AgentClient, agent_server::AgentServer, cluster_client::ClusterClient,
    cluster_server::ClusterServer,
};

/// The largest gRPC message shoal sends or accepts, either way.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A `Cluster` client with shoal's message bounds.
pub fn cluster_client(channel: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// An `Agent` client with shoal's message bounds.
pub fn agent_client(channel: Channel) -> AgentClient<Channel> {
    AgentClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A `Cluster` server with shoal's message bounds.
pub fn cluster_server<S: crate::api::cluster_server::Cluster>(service: S) -> ClusterServer<S> {
    ClusterServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// An `Agent` server with shoal's message bounds.
pub fn agent_server<S: crate::api::agent_server::Agent>(service: S) -> AgentServer<S> {
    AgentServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
