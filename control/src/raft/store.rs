//! The Raft storage of a manager: the log, the vote and the state machine, kept in one redb file
//! (`<state-dir>/swarm/raft.redb`) that [`LogStore`] and [`StateMachineStore`] share.
//!
//! # Tables
//! Every value is postcard-encoded.
//! - `raft_log`: log index (u64) -> `Entry<TypeConfig>`
//! - `raft_meta`: `"vote"` -> `Vote<u64>`
//! - `raft_meta`: `"committed"` -> `Option<LogId<u64>>`
//! - `raft_meta`: `"last_purged"` -> `LogId<u64>`
//! - `raft_sm`: `"applied"` -> the state machine (last applied, membership,
//!   [`ClusterState`](crate::cluster::ClusterState))
//!   as of the last applied entry
//! - `raft_sm`: `"snapshot"` -> the current snapshot (its meta and its data)
//!
//! Every write commits with redb's default `Durability::Immediate`: openraft requires the log
//! and the vote on disk before it acts on them, and the state machine is saved after each
//! applied batch so a restarted manager starts from it instead of replaying the log.
//!
//! The redb calls block; they run on the caller's task all the same, because writes are rare
//! (membership and node changes), small, and openraft serializes storage IO anyway.
//!
//! # Layout
//! - `log`: [`LogStore`].
//! - `state_machine`: [`StateMachineStore`] and its snapshot builder.

mod log;
mod state_machine;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use log::LogStore;
pub use state_machine::{SmSnapshotBuilder, StateMachineStore, StateReader};

/// The openraft storage error of shoal's [`super::TypeConfig`].
pub type StorageError = openraft::StorageError<u64>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const SM: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_sm");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const APPLIED: &str = "applied";
const SNAPSHOT: &str = "snapshot";

/// Why the Raft store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the Raft store {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("cannot {op} in the Raft store {}", path.display())]
    Db {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("cannot {op} in the Raft store {}: a stored value does not decode", path.display())]
    Decode {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: postcard::Error,
    },
}

/// Opens the Raft store at `path` (creating it if missing), and returns its two halves, which
/// share the database. The state machine comes back as it was after the last applied entry.
pub fn open(path: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = Database::create(path).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    // redb refuses to open a missing table in a read transaction; creating all of them now lets
    // every reader assume they exist.
    write(&db, |txn| {
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.open_table(SM)?;
        Ok(())
    })
    .map_err(|e| e.at(path, "create the tables"))?;
    let db = Arc::new(db);
    let sm =
        StateMachineStore::load(db.clone()).map_err(|e| e.at(path, "load the state machine"))?;
    Ok((LogStore::new(db), sm))
}

/// A failed redb operation or a value that does not decode; turned into a [`StoreError`] or an
/// openraft [`StorageError`] where the context is known.
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error(transparent)]
    Redb(#[from] redb::Error),
    #[error("postcard: {0}")]
    Codec(#[from] postcard::Error),
}

// redb's per-operation errors all fold into `redb::Error`; these let `?` do it in one step.
macro_rules! from_redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(e.into())
            }
        }
    )*};
}
from_redb_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl DbError {
    fn at(self, path: &Path, op: &'static str) -> StoreError {
        let path = path.to_owned();
        match self {
            DbError::Redb(source) => StoreError::Db {
                path,
                op,
                source: Box::new(source),
            },
            DbError::Codec(source) => StoreError::Decode { path, op, source },
        }
    }

    fn into_storage(self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// Runs `f` in a write transaction and commits it; on error the transaction is dropped, which
/// aborts it.
fn write(
    db: &Database,
    f: impl FnOnce(&WriteTransaction) -> Result<(), DbError>,
) -> Result<(), DbError> {
    let txn = db.begin_write()?;
    f(&txn)?;
    txn.commit()?;
    Ok(())
}

/// Reads and decodes `key` of a string-keyed table (`META` or `SM`).
fn get<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, DbError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(table)?;
    let value = table.get(key)?;
    Ok(value.map(|v| postcard::from_bytes(v.value())).transpose()?)
}

/// Encodes and stores `value` at `key` of a string-keyed table, within `txn`.
fn put<T: Serialize + ?Sized>(
    txn: &WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), DbError> {
    let bytes = postcard::to_stdvec(value)?;
    txn.open_table(table)?.insert(key, bytes.as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests;
