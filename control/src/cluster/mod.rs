//! The cluster model kept in Raft: what the cluster is, which nodes belong to it, and the
//! commands that change it. Applying a command is deterministic, so every manager's state
//! machine reaches the same state from the same log.
//!
//! # Layout
//! - `model`: the objects (cluster, nodes) and their enums.
//! - `command`: [`Command`], [`CommandResponse`] and [`ClusterState::apply`].

mod command;
mod model;

pub use command::{Command, CommandResponse};
pub use model::{Availability, ClusterInfo, ClusterState, NodeRecord, Role, raft_id};
