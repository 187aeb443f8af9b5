//! The store's schema version (`store_meta`: `"schema"`) and the forward migrations run when
//! the store is opened, before anything reads it.
//!
//! - Schema 0 (no marker; before the values had a format byte): bare postcard, unsealed.
//! - Schema 1 (`raft_meta`: `"format"` -> `[1]`, no `store_meta`): `[0|1][postcard]`, sealed.
//! - Schema 2: `[3][sealed CBOR]`, and the schema recorded in `store_meta`.
//!
//! Each migration goes from schema N to N+1 in one write transaction that also records N+1, so
//! a crash or a value that does not decode leaves the store whole at N (redb drops an
//! uncommitted transaction). A store newer than this build is refused before anything is
//! written to it. A migration decodes with this build's model types, the fields added since
//! schema 1 left out (`format::since_schema_2`): a store whose postcard values these types
//! no longer read (a field added since, postcard being positional) is
//! refused with one line, left as it was.

use std::path::Path;

use openraft::{Entry, LogId, Vote};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError,
    WriteTransaction,
};
use tracing::info;

use super::state_machine::{SmImage, StoredSnapshot};
use super::{
    APPLIED, COMMITTED, Codec, DbError, FORMAT, LAST_PURGED, LOG, META, SM, SNAPSHOT, StoreError,
    VOTE, write,
};
use crate::format;
use crate::raft::TypeConfig;

/// `store_meta`: `"schema"` -> the schema version. Not sealed: it must be read before anything
/// else, and says nothing about the swarm.
const STORE_META: TableDefinition<&str, u64> = TableDefinition::new("store_meta");
const SCHEMA: &str = "schema";

/// One step: rewrites a store of schema N (its index in the list) as N+1, within `txn`.
#[derive(Clone)]
pub(super) struct Migration {
    /// What it does, as the error says it: "migrate the store from schema N to N+1".
    pub op: &'static str,
    pub run: fn(&WriteTransaction, &Codec) -> Result<(), DbError>,
}

/// `MIGRATIONS[n]` takes schema n to n+1; the schema this build writes is their count.
const MIGRATIONS: &[Migration] = &[
    Migration {
        op: "migrate the store from schema 0 to 1",
        run: seal_bare_values,
    },
    Migration {
        op: "migrate the store from schema 1 to 2",
        run: postcard_to_cbor,
    },
];

/// The schema this build writes.
#[cfg(test)]
pub(super) const CURRENT: u64 = MIGRATIONS.len() as u64;

/// Brings the store at `path` to [`CURRENT`], or refuses it.
pub(super) fn to_current(db: &Database, codec: &Codec, path: &Path) -> Result<(), StoreError> {
    run(db, codec, path, MIGRATIONS)
}

/// What an opened file holds.
#[derive(Debug, PartialEq)]
enum Found {
    /// Nothing yet: a new store.
    Fresh,
    /// A store of this schema (recorded, or recognized from before the schema was recorded).
    Schema(u64),
}

/// Brings the store to the schema `migrations` reach (their count), one transaction per step.
pub(super) fn run(
    db: &Database,
    codec: &Codec,
    path: &Path,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let target = migrations.len() as u64;
    let from = match found(db).map_err(|e| e.at(path, "read the store's schema version"))? {
        Found::Schema(schema) if schema > target => {
            return Err(StoreError::NewerSchema {
                path: path.to_owned(),
                schema,
                known: target,
            });
        }
        Found::Schema(schema) => schema,
        Found::Fresh => {
            return write(db, |txn| {
                create_tables(txn)?;
                set_schema(txn, target)
            })
            .map_err(|e| e.at(path, "create the tables"));
        }
    };
    for (step, migration) in migrations.iter().enumerate().skip(from as usize) {
        write(db, |txn| {
            create_tables(txn)?;
            (migration.run)(txn, codec)?;
            set_schema(txn, step as u64 + 1)
        })
        .map_err(|e| e.at(path, migration.op))?;
        info!(store = %path.display(), schema = step + 1, "migrated the Raft store");
    }
    Ok(())
}

/// redb refuses to open a missing table in a read transaction; creating all of them lets every
/// reader assume they exist.
fn create_tables(txn: &WriteTransaction) -> Result<(), DbError> {
    txn.open_table(LOG)?;
    txn.open_table(META)?;
    txn.open_table(SM)?;
    txn.open_table(STORE_META)?;
    Ok(())
}

fn set_schema(txn: &WriteTransaction, schema: u64) -> Result<(), DbError> {
    txn.open_table(STORE_META)?.insert(SCHEMA, schema)?;
    Ok(())
}

/// The schema of the store in `db`, read without writing anything.
fn found(db: &Database) -> Result<Found, DbError> {
    let txn = db.begin_read()?;
    match txn.open_table(STORE_META) {
        Ok(table) => {
            if let Some(schema) = table.get(SCHEMA)? {
                return Ok(Found::Schema(schema.value()));
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let meta = match txn.open_table(META) {
        Ok(meta) => Some(meta),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(meta) = &meta
        && meta.get(FORMAT)?.is_some()
    {
        return Ok(Found::Schema(1));
    }
    let mut empty = meta.map_or(Ok(true), |t| t.is_empty())?;
    match txn.open_table(SM) {
        Ok(t) => empty &= t.is_empty()?,
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match txn.open_table(LOG) {
        Ok(t) => empty &= t.is_empty()?,
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(if empty {
        Found::Fresh
    } else {
        Found::Schema(0)
    })
}

/// Every row of a string-keyed table.
fn rows(table: &redb::Table<&str, &[u8]>) -> Result<Vec<(String, Vec<u8>)>, DbError> {
    Ok(table
        .iter()?
        .map(|row| row.map(|(k, v)| (k.value().to_string(), v.value().to_vec())))
        .collect::<Result<_, _>>()?)
}

/// Every row of the log.
fn log_rows(table: &redb::Table<u64, &[u8]>) -> Result<Vec<(u64, Vec<u8>)>, DbError> {
    Ok(table
        .iter()?
        .map(|row| row.map(|(k, v)| (k.value(), v.value().to_vec())))
        .collect::<Result<_, _>>()?)
}

/// 0 -> 1: gives every value its format byte, sealed. The old plaintext stays in redb's free
/// pages until they are reused.
fn seal_bare_values(txn: &WriteTransaction, codec: &Codec) -> Result<(), DbError> {
    let seal = |bare: &[u8]| -> Result<Vec<u8>, DbError> {
        let sealed = codec.dek.seal(bare)?;
        Ok([&[format::POSTCARD_SEALED][..], &sealed].concat())
    };
    for table in [META, SM] {
        let mut table = txn.open_table(table)?;
        for (key, value) in rows(&table)? {
            table.insert(key.as_str(), seal(&value)?.as_slice())?;
        }
    }
    let mut log = txn.open_table(LOG)?;
    for (index, value) in log_rows(&log)? {
        log.insert(index, seal(&value)?.as_slice())?;
    }
    txn.open_table(META)?.insert(FORMAT, &[1u8][..])?;
    Ok(())
}

/// Decodes a schema-1 value with this build's types, saying which value failed.
fn legacy<T: serde::de::DeserializeOwned>(
    codec: &Codec,
    what: &str,
    stored: &[u8],
) -> Result<T, DbError> {
    format::as_schema_1(|| codec.decode_postcard(stored)).map_err(|e| match e {
        DbError::Postcard(cause) => DbError::Unmigratable(format!(
            "its {what} (postcard, schema 1) does not decode with this build's model: {cause}; \
             run the shoal that wrote it, or leave the swarm on this node and join again"
        )),
        other => other,
    })
}

/// 1 -> 2: every value decoded from postcard and written again as sealed CBOR; the snapshot's
/// data (a postcard state machine) becomes a CBOR document too. The `"format"` marker goes.
fn postcard_to_cbor(txn: &WriteTransaction, codec: &Codec) -> Result<(), DbError> {
    let mut log = txn.open_table(LOG)?;
    for (index, value) in log_rows(&log)? {
        let entry: Entry<TypeConfig> = legacy(codec, "log entry", &value)?;
        log.insert(index, codec.encode(&entry)?.as_slice())?;
    }
    drop(log);
    let mut meta = txn.open_table(META)?;
    for (key, value) in rows(&meta)? {
        let encoded = match key.as_str() {
            VOTE => codec.encode(&legacy::<Vote<u64>>(codec, "vote", &value)?)?,
            COMMITTED => codec.encode(&legacy::<Option<LogId<u64>>>(
                codec,
                "committed log id",
                &value,
            )?)?,
            LAST_PURGED => {
                codec.encode(&legacy::<LogId<u64>>(codec, "last purged log id", &value)?)?
            }
            FORMAT => {
                meta.remove(FORMAT)?;
                continue;
            }
            other => {
                return Err(DbError::Unmigratable(format!(
                    "it holds the unknown key {other:?} in raft_meta"
                )));
            }
        };
        meta.insert(key.as_str(), encoded.as_slice())?;
    }
    drop(meta);
    let mut sm = txn.open_table(SM)?;
    for (key, value) in rows(&sm)? {
        let encoded = match key.as_str() {
            APPLIED => codec.encode(&legacy::<SmImage>(codec, "state machine", &value)?)?,
            SNAPSHOT => {
                let mut snapshot: StoredSnapshot = legacy(codec, "snapshot", &value)?;
                let image: SmImage = format::as_schema_1(|| postcard::from_bytes(&snapshot.data))
                    .map_err(|e| {
                    DbError::Unmigratable(format!(
                        "its snapshot's data (postcard, schema 1) does not decode with this \
                         build's model: {e}"
                    ))
                })?;
                snapshot.data = format::encode(&image)?;
                codec.encode(&snapshot)?
            }
            other => {
                return Err(DbError::Unmigratable(format!(
                    "it holds the unknown key {other:?} in raft_sm"
                )));
            }
        };
        sm.insert(key.as_str(), encoded.as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;
