//! Raft among managers (openraft 0.9, storage-v2), with the log and the state machine kept in
//! redb under the state dir.
//!
//! # Layout
//! - [`TypeConfig`]: the openraft type parameters.
//! - `store`: [`store::LogStore`] and [`store::StateMachineStore`] on redb.

pub mod store;

use std::io::Cursor;

use crate::cluster::{Command, CommandResponse};

openraft::declare_raft_types!(
    /// Raft types of shoal's cluster store: log entries are [`Command`]s, members are
    /// identified by [`crate::cluster::raft_id`] and reached at their 2377 address.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle managers use.
pub type Raft = openraft::Raft<TypeConfig>;
