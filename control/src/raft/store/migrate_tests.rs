//! The schema version and the migrations, on real redb files in a temp dir.

use std::path::Path;

use openraft::{Entry, LogId, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::super::tests::{check_the_store, write_a_store};
use super::{CURRENT, Migration, SCHEMA, STORE_META, run};
use crate::format;
use crate::raft::TypeConfig;
use crate::raft::seal::SealKey;
use crate::raft::store::state_machine::{SmImage, StoredSnapshot};
use crate::raft::store::{
    APPLIED, COMMITTED, Codec, DbError, FORMAT, LAST_PURGED, LOG, META, SM, SNAPSHOT, StoreError,
    VOTE, open,
};

fn schema(path: &Path) -> Option<u64> {
    let db = Database::create(path).expect("open redb");
    let txn = db.begin_read().expect("read");
    let table = txn.open_table(STORE_META).ok()?;
    table.get(SCHEMA).expect("get").map(|v| v.value())
}

fn first_bytes(path: &Path) -> Vec<u8> {
    let db = Database::create(path).expect("open redb");
    let txn = db.begin_read().expect("read");
    let mut out = Vec::new();
    for table in [META, SM] {
        let table = txn.open_table(table).expect("table");
        for row in table.iter().expect("iter") {
            let (key, value) = row.expect("row");
            if key.value() != FORMAT {
                out.push(value.value()[0]);
            }
        }
    }
    let log = txn.open_table(LOG).expect("log");
    for row in log.iter().expect("iter") {
        out.push(row.expect("row").1.value()[0]);
    }
    out
}

fn has_format_marker(path: &Path) -> bool {
    let db = Database::create(path).expect("open redb");
    let txn = db.begin_read().expect("read");
    let meta = txn.open_table(META).expect("meta");
    meta.get(FORMAT).expect("get").is_some()
}

/// Rewrites a store of this version (schema 2) as the previous version (schema 1) kept it:
/// postcard values sealed behind `[1]`, the snapshot's data postcard too, the `"format"`
/// marker, no `store_meta`. The same model types encode both, as the migration assumes.
fn make_schema_1(path: &Path, dek: &SealKey) {
    let codec = Codec { dek: dek.clone() };
    let postcard = |bytes: Vec<u8>| {
        let sealed = dek.seal(&bytes).expect("seal");
        [&[format::POSTCARD_SEALED][..], &sealed].concat()
    };
    let db = Database::create(path).expect("open redb");
    let txn = db.begin_write().expect("write");
    {
        let mut log = txn.open_table(LOG).expect("log");
        let rows: Vec<(u64, Vec<u8>)> = log
            .iter()
            .expect("iter")
            .map(|r| r.expect("row"))
            .map(|(k, v)| (k.value(), v.value().to_vec()))
            .collect();
        for (index, value) in rows {
            let entry: Entry<TypeConfig> = codec.decode(&value).expect("decode");
            let value = postcard(schema_1_postcard(&entry).expect("encode"));
            log.insert(index, value.as_slice()).expect("insert");
        }
        let mut meta = txn.open_table(META).expect("meta");
        for (key, value) in string_rows(&meta) {
            let plain = match key.as_str() {
                VOTE => schema_1_postcard(&codec.decode::<Vote<u64>>(&value).expect("vote")),
                COMMITTED => schema_1_postcard(
                    &codec
                        .decode::<Option<LogId<u64>>>(&value)
                        .expect("committed"),
                ),
                LAST_PURGED => {
                    schema_1_postcard(&codec.decode::<LogId<u64>>(&value).expect("purged"))
                }
                other => panic!("unexpected key {other}"),
            }
            .expect("encode");
            meta.insert(key.as_str(), postcard(plain).as_slice())
                .expect("insert");
        }
        meta.insert(FORMAT, &[1u8][..]).expect("marker");
        let mut sm = txn.open_table(SM).expect("sm");
        for (key, value) in string_rows(&sm) {
            let plain = match key.as_str() {
                APPLIED => schema_1_postcard(&codec.decode::<SmImage>(&value).expect("image")),
                SNAPSHOT => {
                    let mut snapshot: StoredSnapshot = codec.decode(&value).expect("snapshot");
                    let image: SmImage = format::decode(&snapshot.data).expect("data");
                    snapshot.data = schema_1_postcard(&image).expect("encode");
                    schema_1_postcard(&snapshot)
                }
                other => panic!("unexpected key {other}"),
            }
            .expect("encode");
            sm.insert(key.as_str(), postcard(plain).as_slice())
                .expect("insert");
        }
    }
    txn.delete_table(STORE_META).expect("drop store_meta");
    txn.commit().expect("commit");
}

/// Postcard as the previous version's types wrote it: without the fields added since.
fn schema_1_postcard<T: serde::Serialize>(value: &T) -> postcard::Result<Vec<u8>> {
    format::as_schema_1(|| postcard::to_stdvec(value))
}

fn string_rows(table: &redb::Table<&str, &[u8]>) -> Vec<(String, Vec<u8>)> {
    table
        .iter()
        .expect("iter")
        .map(|r| r.expect("row"))
        .map(|(k, v)| (k.value().to_string(), v.value().to_vec()))
        .collect()
}

/// Rewrites a schema-1 store as schema 0 kept it: bare postcard, no marker.
fn make_schema_0(path: &Path, dek: &SealKey) {
    let bare = |v: &[u8]| {
        assert_eq!(v[0], format::POSTCARD_SEALED);
        dek.open(&v[1..]).expect("open a value")
    };
    let db = Database::create(path).expect("open redb");
    let txn = db.begin_write().expect("write");
    {
        for table in [META, SM] {
            let mut table = txn.open_table(table).expect("table");
            table.remove(FORMAT).expect("remove the marker");
            for (k, v) in string_rows(&table) {
                table
                    .insert(k.as_str(), bare(&v).as_slice())
                    .expect("insert");
            }
        }
        let mut log = txn.open_table(LOG).expect("log");
        let rows: Vec<(u64, Vec<u8>)> = log
            .iter()
            .expect("iter")
            .map(|r| r.expect("row"))
            .map(|(k, v)| (k.value(), bare(v.value())))
            .collect();
        for (k, v) in rows {
            log.insert(k, v.as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

#[tokio::test]
async fn a_new_store_records_this_schema_and_opens_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let dek = SealKey::generate();
    drop(open(&path, dek.clone()).expect("create"));
    assert_eq!(schema(&path), Some(CURRENT));
    let written = write_a_store(&path, dek.clone()).await;
    assert_eq!(schema(&path), Some(CURRENT));
    assert!(
        first_bytes(&path).iter().all(|&b| b == format::CBOR_SEALED),
        "{:?}",
        first_bytes(&path)
    );
    check_the_store(&path, dek, &written).await;
}

#[tokio::test]
async fn the_previous_postcard_store_is_migrated_to_cbor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let dek = SealKey::generate();
    let written = write_a_store(&path, dek.clone()).await;
    make_schema_1(&path, &dek);
    assert_eq!(schema(&path), None);
    assert!(has_format_marker(&path));
    assert!(
        first_bytes(&path)
            .iter()
            .all(|&b| b == format::POSTCARD_SEALED)
    );

    check_the_store(&path, dek.clone(), &written).await;
    assert_eq!(schema(&path), Some(CURRENT));
    assert!(!has_format_marker(&path), "schema 1's marker stays");
    assert!(
        first_bytes(&path).iter().all(|&b| b == format::CBOR_SEALED),
        "{:?}",
        first_bytes(&path)
    );
    // The snapshot's data was migrated too: it installs on a follower of this version.
    let (_, mut sm) = open(&path, dek).expect("reopen");
    let snapshot = openraft::storage::RaftStateMachine::get_current_snapshot(&mut sm)
        .await
        .expect("read")
        .expect("a snapshot");
    let data = snapshot.snapshot.into_inner();
    assert_eq!(data[0], format::CBOR);
    let follower = dir.path().join("follower.redb");
    let (_, mut other) = open(&follower, SealKey::generate()).expect("follower");
    openraft::storage::RaftStateMachine::install_snapshot(
        &mut other,
        &snapshot.meta,
        Box::new(std::io::Cursor::new(data)),
    )
    .await
    .expect("install");
    assert_eq!(other.cluster_state(), written.state);
}

#[tokio::test]
async fn a_store_from_before_the_format_byte_is_sealed_and_migrated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let dek = SealKey::generate();
    let written = write_a_store(&path, dek.clone()).await;
    make_schema_1(&path, &dek);
    make_schema_0(&path, &dek);
    // Any data key: the values were in the clear.
    let new_dek = SealKey::generate();
    check_the_store(&path, new_dek.clone(), &written).await;
    assert_eq!(schema(&path), Some(CURRENT));
    assert!(
        first_bytes(&path).iter().all(|&b| b == format::CBOR_SEALED),
        "{:?}",
        first_bytes(&path)
    );
    check_the_store(&path, new_dek, &written).await;
}

#[tokio::test]
async fn a_store_of_a_newer_schema_is_refused_in_one_line_and_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let dek = SealKey::generate();
    let written = write_a_store(&path, dek.clone()).await;
    {
        let db = Database::create(&path).expect("open redb");
        let txn = db.begin_write().expect("write");
        txn.open_table(STORE_META)
            .expect("table")
            .insert(SCHEMA, CURRENT + 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let before = first_bytes(&path);
    let err = open(&path, dek.clone())
        .err()
        .expect("a newer store opened");
    assert!(matches!(err, StoreError::NewerSchema { schema, .. } if schema == CURRENT + 1));
    let line = crate::error_chain::chain(&err);
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains(&format!(
            "was written by a newer shoal (schema {}",
            CURRENT + 1
        )) && line.contains("run that version or newer"),
        "{line}"
    );
    assert_eq!(schema(&path), Some(CURRENT + 1));
    assert_eq!(first_bytes(&path), before);
    // Put back, it opens: nothing was changed.
    {
        let db = Database::create(&path).expect("open redb");
        let txn = db.begin_write().expect("write");
        txn.open_table(STORE_META)
            .expect("table")
            .insert(SCHEMA, CURRENT)
            .expect("insert");
        txn.commit().expect("commit");
    }
    check_the_store(&path, dek, &written).await;
}

#[tokio::test]
async fn a_store_that_does_not_decode_is_refused_in_one_line_and_left_as_it_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let dek = SealKey::generate();
    write_a_store(&path, dek.clone()).await;
    make_schema_1(&path, &dek);
    // The last entry as a build whose model differs would have written it: postcard that
    // this build's types do not read.
    {
        let db = Database::create(&path).expect("open redb");
        let txn = db.begin_write().expect("write");
        let sealed = dek.seal(&[9, 9, 9]).expect("seal");
        let value = [&[format::POSTCARD_SEALED][..], &sealed].concat();
        txn.open_table(LOG)
            .expect("log")
            .insert(4, value.as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let before = first_bytes(&path);
    let err = open(&path, dek.clone()).err().expect("opened");
    let line = crate::error_chain::chain(&err);
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains("migrate the store from schema 1 to 2")
            && line.contains("log entry")
            && line.contains("left as it was"),
        "{line}"
    );
    // Not half-migrated: the entries before the bad one are still postcard.
    assert_eq!(first_bytes(&path), before);
    assert!(
        before.iter().all(|&b| b == format::POSTCARD_SEALED),
        "{before:?}"
    );
    assert_eq!(schema(&path), None);
    assert!(has_format_marker(&path));
    // A schema-0 store that is not even postcard: the same, one line.
    let path = dir.path().join("junk.redb");
    {
        let db = Database::create(&path).expect("open redb");
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert(VOTE, &b"\xff\xff\xff"[..])
            .expect("insert");
        txn.commit().expect("commit");
    }
    let line = crate::error_chain::chain(&open(&path, dek).err().expect("opened junk"));
    assert!(line.contains("does not decode"), "{line}");
    assert_eq!(
        schema(&path),
        Some(1),
        "the 0 -> 1 step is whole on its own"
    );
}

/// A step that counts its runs in `raft_meta` (raw bytes: these tests' own layout).
fn count_step(txn: &WriteTransaction, key: &str) -> Result<(), DbError> {
    let mut meta = txn.open_table(META)?;
    let runs = meta.get(key)?.map_or(0, |v| v.value()[0]);
    meta.insert(key, &[runs + 1][..])?;
    Ok(())
}

#[test]
fn migrations_run_in_order_from_the_recorded_schema_each_in_one_transaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let codec = Codec {
        dek: SealKey::generate(),
    };
    let db = Database::create(&path).expect("create");
    // A store at schema 0 (something in it, nothing recorded).
    {
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert("data", &[0u8][..])
            .expect("insert");
        txn.commit().expect("commit");
    }
    let fails: Migration = Migration {
        op: "step 2",
        run: |txn, _| {
            count_step(txn, "step2")?;
            Err(DbError::Unmigratable("step 2 fails".into()))
        },
    };
    let steps = [
        Migration {
            op: "step 0",
            run: |txn, _| count_step(txn, "step0"),
        },
        Migration {
            op: "step 1",
            run: |txn, _| count_step(txn, "step1"),
        },
    ];
    let runs = |db: &Database, key: &str| {
        let txn = db.begin_read().expect("read");
        let meta = txn.open_table(META).expect("meta");
        meta.get(key).expect("get").map_or(0, |v| v.value()[0])
    };
    let schema = |db: &Database| {
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(STORE_META).expect("store_meta");
        table.get(SCHEMA).expect("get").map(|v| v.value())
    };

    let err = run(
        &db,
        &codec,
        &path,
        &[steps[0].clone(), steps[1].clone(), fails.clone()],
    )
    .expect_err("step 2 failed");
    assert!(
        crate::error_chain::chain(&err).contains("cannot step 2"),
        "{}",
        crate::error_chain::chain(&err)
    );
    assert_eq!(schema(&db), Some(2), "steps 0 and 1 committed");
    assert_eq!((runs(&db, "step0"), runs(&db, "step1")), (1, 1));
    assert_eq!(runs(&db, "step2"), 0, "the failed step left nothing");

    // Again with step 2 fixed: only step 2 runs.
    let fixed = Migration {
        op: "step 2",
        run: |txn, _| count_step(txn, "step2"),
    };
    run(
        &db,
        &codec,
        &path,
        &[steps[0].clone(), steps[1].clone(), fixed],
    )
    .expect("migrated");
    assert_eq!(schema(&db), Some(3));
    assert_eq!(
        (runs(&db, "step0"), runs(&db, "step1"), runs(&db, "step2")),
        (1, 1, 1)
    );
    // Same schema: nothing runs; a shorter list (an older build) refuses.
    run(
        &db,
        &codec,
        &path,
        &[steps[0].clone(), steps[1].clone(), fails.clone()],
    )
    .expect("nothing to do");
    assert!(matches!(
        run(&db, &codec, &path, &steps),
        Err(StoreError::NewerSchema {
            schema: 3,
            known: 2,
            ..
        })
    ));
}
