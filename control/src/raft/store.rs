//! The Raft storage of a manager: the log, the vote and the state machine, kept in one redb file
//! (`<state-dir>/swarm/raft.redb`) that [`LogStore`] and [`StateMachineStore`] share.
//!
//! # Tables
//! Every value is postcard-encoded, then kept as `[version u8][bytes]`: version 0 is the
//! postcard itself, version 1 is it sealed with the manager's data key ([`SealKey`], see
//! `dek.rs`), which is what this version writes. A store of an earlier version (values without
//! the version byte, no `"format"` marker) is rewritten sealed when it is first opened.
//! - `raft_log`: log index (u64) -> `Entry<TypeConfig>`
//! - `raft_meta`: `"vote"` -> `Vote<u64>`
//! - `raft_meta`: `"committed"` -> `Option<LogId<u64>>`
//! - `raft_meta`: `"last_purged"` -> `LogId<u64>`
//! - `raft_sm`: `"applied"` -> the state machine (last applied, membership,
//!   [`ClusterState`](crate::cluster::ClusterState))
//!   as of the last applied entry
//! - `raft_sm`: `"snapshot"` -> the current snapshot (its meta and its data)
//! - `raft_meta`: `"format"` -> `[1]`, not versioned: every value has its version byte
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
//! - `event_log`: [`EventLog`], the swarm events the state machine applied (in memory).

mod event_log;
mod log;
mod state_machine;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::seal::{SealError, SealKey};

pub use event_log::{EventLog, Subscription};
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
const FORMAT: &str = "format";
/// The `"format"` marker's value: every value starts with its version byte.
const FORMAT_VERSIONED: &[u8] = &[1];

/// Version byte of a value: postcard as is.
const PLAIN: u8 = 0;
/// Version byte of a value: postcard sealed with the data key.
const SEALED: u8 = 1;

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
    #[error("cannot {op} in the Raft store {}: a stored value does not open", path.display())]
    Seal {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: SealError,
    },
    #[error(
        "cannot {op} in the Raft store {}: a stored value has the unknown version {version}",
        path.display()
    )]
    Version {
        path: PathBuf,
        op: &'static str,
        version: u8,
    },
}

/// How values are kept: postcard, sealed with the manager's data key. Cheap to clone.
#[derive(Clone)]
pub(super) struct Codec {
    dek: SealKey,
}

impl Codec {
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, DbError> {
        let sealed = self.dek.seal(plain)?;
        let mut out = Vec::with_capacity(1 + sealed.len());
        out.push(SEALED);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, DbError> {
        self.seal(&postcard::to_stdvec(value)?)
    }

    fn decode<T: DeserializeOwned>(&self, stored: &[u8]) -> Result<T, DbError> {
        match stored.split_first() {
            Some((&PLAIN, postcard)) => Ok(postcard::from_bytes(postcard)?),
            Some((&SEALED, sealed)) => Ok(postcard::from_bytes(&self.dek.open(sealed)?)?),
            Some((&version, _)) => Err(DbError::Version(version)),
            None => Err(DbError::Version(0)),
        }
    }
}

/// Opens the Raft store at `path` (creating it if missing), whose values are sealed with `dek`,
/// and returns its two halves, which share the database. The state machine comes back as it
/// was after the last applied entry.
pub fn open(path: &Path, dek: SealKey) -> Result<(LogStore, StateMachineStore), StoreError> {
    let codec = Codec { dek };
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
    upgrade(&db, &codec).map_err(|e| e.at(path, "seal the values of an earlier version"))?;
    let db = Arc::new(db);
    let sm = StateMachineStore::load(db.clone(), codec.clone())
        .map_err(|e| e.at(path, "load the state machine"))?;
    Ok((LogStore::new(db, codec), sm))
}

/// Gives the values of a store written by an earlier version (bare postcard, no `"format"`
/// marker) their version byte, sealed, in one transaction: after a crash the store is either
/// all old or all new. The old plaintext stays in redb's free pages until they are reused.
fn upgrade(db: &Database, codec: &Codec) -> Result<(), DbError> {
    write(db, |txn| {
        if redb::ReadableTable::get(&txn.open_table(META)?, FORMAT)?.is_some() {
            return Ok(());
        }
        for table in [META, SM] {
            let mut table = txn.open_table(table)?;
            let rows: Vec<(String, Vec<u8>)> = redb::ReadableTable::iter(&table)?
                .map(|row| row.map(|(k, v)| (k.value().to_string(), v.value().to_vec())))
                .collect::<Result<_, _>>()?;
            for (key, value) in rows {
                table.insert(key.as_str(), codec.seal(&value)?.as_slice())?;
            }
        }
        let mut log = txn.open_table(LOG)?;
        let rows: Vec<(u64, Vec<u8>)> = redb::ReadableTable::iter(&log)?
            .map(|row| row.map(|(k, v)| (k.value(), v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        for (index, value) in rows {
            log.insert(index, codec.seal(&value)?.as_slice())?;
        }
        drop(log);
        txn.open_table(META)?.insert(FORMAT, FORMAT_VERSIONED)?;
        Ok(())
    })
}

/// A failed redb operation or a value that does not decode; turned into a [`StoreError`] or an
/// openraft [`StorageError`] where the context is known.
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error(transparent)]
    Redb(#[from] redb::Error),
    #[error("postcard: {0}")]
    Codec(#[from] postcard::Error),
    #[error("sealing: {0}")]
    Seal(#[from] SealError),
    #[error("unknown value version {0}")]
    Version(u8),
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
            DbError::Seal(source) => StoreError::Seal { path, op, source },
            DbError::Version(version) => StoreError::Version { path, op, version },
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
    let txn = db.begin_read()?;
    let table = txn.open_table(table)?;
    let value = table.get(key)?;
    value.map(|v| codec.decode(v.value())).transpose()
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
