//! The Raft storage of a manager: the log, the vote and the state machine, kept in one redb file
//! (`<state-dir>/swarm/raft.redb`) that [`LogStore`] and [`StateMachineStore`] share.
//!
//! # Tables
//! Every value is kept as `[format u8][bytes]` (`crate::format`): this version writes
//! [`format::CBOR_SEALED`], a CBOR document (maps keyed by field name, so the model can gain
//! fields) sealed with the manager's data key ([`SealKey`], see `dek.rs`).
//! - `raft_log`: log index (u64) -> `Entry<TypeConfig>`
//! - `raft_meta`: `"vote"` -> `Vote<u64>`
//! - `raft_meta`: `"committed"` -> `Option<LogId<u64>>`
//! - `raft_meta`: `"last_purged"` -> `LogId<u64>`
//! - `raft_sm`: `"applied"` -> the state machine (last applied, membership,
//!   [`ClusterState`](crate::cluster::ClusterState)) as of an applied entry at most
//!   [`image_interval`] entries back, or the last snapshot's
//! - `raft_sm`: `"snapshot"` -> the current snapshot (its meta and its data, itself a framed
//!   CBOR document of the state machine)
//! - `store_meta`: `"schema"` -> the store's schema version (u64, not sealed): how the tables
//!   above are laid out and encoded. On open, an older schema is migrated forward (`migrate`),
//!   a newer one refused.
//!
//! Every write commits with redb's default `Durability::Immediate`: openraft requires the log
//! and the vote on disk before it acts on them. The state machine is saved every
//! [`image_interval`] entries (more for a larger image, so a write pays a bounded share of it)
//! and with each snapshot, not after each applied batch (it is the whole state: megabytes at
//! 10,000 services): a restarted manager starts from it and openraft replays the committed
//! entries after it from the log, which keeps them (see [`IMAGE_EVERY`]).
//!
//! The redb calls block; they run on the caller's task all the same, because writes are rare
//! (membership and node changes), small, and openraft serializes storage IO anyway.
//!
//! # Layout
//! - `log`: [`LogStore`].
//! - `state_machine`: [`StateMachineStore`] and its snapshot builder.
//! - `migrate`: the schema version and the forward migrations run on open.
//! - `event_log`: [`EventLog`], the swarm events the state machine applied (in memory).

mod event_log;
mod log;
mod migrate;
mod state_machine;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::seal::{SealError, SealKey};
use crate::cluster::ClusterState;
use crate::format::{self, FormatError};

pub use event_log::{EventLog, Subscription};
pub use log::LogStore;
pub use state_machine::{
    Generations, IMAGE_BYTES_PER_ENTRY, IMAGE_EVERY, LOGS_KEPT_AFTER_SNAPSHOT, SNAPSHOT_EVERY,
    SmSnapshotBuilder, StateMachineStore, StateReader, image_interval,
};

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
/// Schema 1's marker in `raft_meta` (every value has its format byte); dropped by schema 2.
const FORMAT: &str = "format";

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
        source: FormatError,
    },
    #[error(
        "cannot {op} in the Raft store {}: a value of an earlier version does not decode",
        path.display()
    )]
    Legacy {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("cannot {op} in the Raft store {}: a stored value does not open", path.display())]
    Seal {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: SealError,
    },
    #[error(
        "cannot {op} in the Raft store {}: a stored value has the unknown format {version}",
        path.display()
    )]
    Version {
        path: PathBuf,
        op: &'static str,
        version: u8,
    },
    #[error(
        "the state in {} was written by a newer shoal (schema {schema}, this one knows up to \
         {known}); run that version or newer",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        schema: u64,
        known: u64,
    },
    #[error(
        "cannot {op} in the Raft store {}: {what} (the store was left as it was)",
        path.display()
    )]
    Unmigratable {
        path: PathBuf,
        op: &'static str,
        what: String,
    },
    #[error("cannot replay the committed entries of the Raft store {}", path.display())]
    Replay {
        path: PathBuf,
        #[source]
        source: Box<StorageError>,
    },
}

/// How values are kept: CBOR, sealed with the manager's data key. Cheap to clone.
#[derive(Clone)]
pub(super) struct Codec {
    dek: SealKey,
}

impl Codec {
    /// `[CBOR_SEALED][sealed cbor]` of a CBOR document.
    fn seal(&self, cbor: &[u8]) -> Result<Vec<u8>, DbError> {
        let sealed = self.dek.seal(cbor)?;
        let mut out = Vec::with_capacity(1 + sealed.len());
        out.push(format::CBOR_SEALED);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, DbError> {
        self.seal(&format::to_cbor(value)?)
    }

    fn decode<T: DeserializeOwned>(&self, stored: &[u8]) -> Result<T, DbError> {
        match stored.split_first() {
            Some((&format::CBOR_SEALED, sealed)) => Ok(format::from_cbor(&self.dek.open(sealed)?)?),
            Some((&format::CBOR, cbor)) => Ok(format::from_cbor(cbor)?),
            Some((&version, _)) => Err(DbError::Version(version)),
            None => Err(DbError::Version(0)),
        }
    }

    /// A value of schema 1: postcard, as is or sealed (read by the migration only).
    fn decode_postcard<T: DeserializeOwned>(&self, stored: &[u8]) -> Result<T, DbError> {
        match stored.split_first() {
            Some((&format::POSTCARD, postcard)) => Ok(postcard::from_bytes(postcard)?),
            Some((&format::POSTCARD_SEALED, sealed)) => {
                Ok(postcard::from_bytes(&self.dek.open(sealed)?)?)
            }
            Some((&version, _)) => Err(DbError::Version(version)),
            None => Err(DbError::Version(0)),
        }
    }
}

/// Opens the Raft store at `path` (creating it if missing), whose values are sealed with `dek`,
/// and returns its two halves, which share the database. A store of an older schema is
/// migrated first; one of a newer schema is refused. The state machine comes back as its
/// saved image holds it, up to [`image_interval`] entries behind the last one applied: Raft
/// replays the rest when it starts ([`committed_state`] without Raft).
pub fn open(path: &Path, dek: SealKey) -> Result<(LogStore, StateMachineStore), StoreError> {
    let codec = Codec { dek };
    let db = Database::create(path).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    migrate::to_current(&db, &codec, path)?;
    let db = Arc::new(db);
    let sm = StateMachineStore::load(db.clone(), codec.clone())
        .map_err(|e| e.at(path, "load the state machine"))?;
    Ok((LogStore::new(db, codec), sm))
}

/// A failed redb operation or a value that does not decode; turned into a [`StoreError`] or an
/// openraft [`StorageError`] where the context is known.
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error(transparent)]
    Redb(#[from] redb::Error),
    #[error("format: {0}")]
    Format(#[from] FormatError),
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("sealing: {0}")]
    Seal(#[from] SealError),
    #[error("unknown value format {0}")]
    Version(u8),
    /// A store this build cannot migrate, and why (one line).
    #[error("{0}")]
    Unmigratable(String),
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
            DbError::Format(source) => StoreError::Decode { path, op, source },
            DbError::Postcard(source) => StoreError::Legacy { path, op, source },
            DbError::Seal(source) => StoreError::Seal { path, op, source },
            DbError::Version(version) => StoreError::Version { path, op, version },
            DbError::Unmigratable(what) => StoreError::Unmigratable { path, op, what },
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
    codec: &Codec,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, DbError> {
    Ok(get_sized(db, codec, table, key)?.map(|(value, _)| value))
}

/// [`get`], with the size of the stored value in bytes.
fn get_sized<T: DeserializeOwned>(
    db: &Database,
    codec: &Codec,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<(T, u64)>, DbError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(table)?;
    let value = table.get(key)?;
    value
        .map(|v| Ok((codec.decode(v.value())?, v.value().len() as u64)))
        .transpose()
}

/// Encodes and stores `value` at `key` of a string-keyed table, within `txn`.
fn put<T: Serialize + ?Sized>(
    txn: &WriteTransaction,
    codec: &Codec,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), DbError> {
    let bytes = codec.encode(value)?;
    txn.open_table(table)?.insert(key, bytes.as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests;

/// The cluster state the store at `path` holds as of its last committed entry, for a reader
/// that opens the store without starting Raft: the committed entries after the saved image are
/// applied as openraft applies them when Raft starts (`StorageHelper::get_initial_state`).
pub fn committed_state(path: &Path, dek: SealKey) -> Result<ClusterState, StoreError> {
    let (mut log, mut sm) = open(path, dek)?;
    // The storage calls are synchronous underneath (redb): no runtime is needed to drive them.
    futures::executor::block_on(
        openraft::StorageHelper::new(&mut log, &mut sm).get_initial_state(),
    )
    .map_err(|source| StoreError::Replay {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    Ok(sm.cluster_state())
}
