//! Raft among managers (openraft 0.9, storage-v2), with the log and the state machine kept in
//! redb under the state dir.
//!
//! # Layout
//! - [`TypeConfig`]: the openraft type parameters.
//! - `store`: [`store::LogStore`] and [`store::StateMachineStore`] on redb, every value sealed
//!   with the manager's data key.
//! - `seal`: AES-256-GCM sealing, the data key and the swarm's unlock key.
//! - `dek`: the data key's file beside the store, in the clear or sealed with the unlock key.

pub mod dek;
pub mod seal;
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
