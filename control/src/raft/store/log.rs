//! [`LogStore`]: the Raft log, the vote, and the committed and last purged log ids.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, Vote};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::{
    COMMITTED, Codec, DbError, LAST_PURGED, LOG, META, StorageError, VOTE, get, put, write,
};
use crate::raft::TypeConfig;

/// The Raft log of a manager, in redb. Cloning is cheap (the database is shared): the clones are
/// openraft's log readers.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    codec: Codec,
}

impl LogStore {
    pub(super) fn new(db: Arc<Database>, codec: Codec) -> Self {
        Self { db, codec }
    }

    /// Entries from `start` (inclusive) to `end` (exclusive, `None`: to the last one).
    fn read_entries(
        &self,
        start: u64,
        end: Option<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let mut entries = Vec::new();
        for item in table.range(start..)? {
            let (index, bytes) = item?;
            if end.is_some_and(|end| index.value() >= end) {
                break;
            }
            entries.push(self.codec.decode(bytes.value())?);
        }
        Ok(entries)
    }

    fn last_log_id(&self) -> Result<Option<LogId<u64>>, DbError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let Some((_, bytes)) = table.last()? else {
            return Ok(None);
        };
        let entry: Entry<TypeConfig> = self.codec.decode(bytes.value())?;
        Ok(Some(entry.log_id))
    }
}

/// `range` as a start index and an exclusive end, or `None` if it holds no index at all.
fn index_bounds(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        // `..=u64::MAX` has no exclusive end in u64: it runs to the last entry.
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if end <= start => None,
        _ => Some((start, end)),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let Some((start, end)) = index_bounds(&range) else {
            return Ok(Vec::new());
        };
        self.read_entries(start, end)
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = || -> Result<_, DbError> {
            let last_purged_log_id: Option<LogId<u64>> =
                get(&self.db, &self.codec, META, LAST_PURGED)?;
            let last_log_id = self.last_log_id()?.or(last_purged_log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        };
        read().map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        write(&self.db, |txn| put(txn, &self.codec, META, VOTE, vote))
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        get(&self.db, &self.codec, META, VOTE)
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        write(&self.db, |txn| {
            put(txn, &self.codec, META, COMMITTED, &committed)
        })
        .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        get::<Option<LogId<u64>>>(&self.db, &self.codec, META, COMMITTED)
            .map(Option::flatten)
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        write(&self.db, |txn| {
            let mut table = txn.open_table(LOG)?;
            for entry in entries {
                let bytes = self.codec.encode(&entry)?;
                table.insert(entry.log_id.index, bytes.as_slice())?;
            }
            Ok(())
        })
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))?;
        // The commit was `Durability::Immediate`: the entries are on disk.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        write(&self.db, |txn| {
            txn.open_table(LOG)?
                .retain_in(log_id.index.., |_, _| false)?;
            Ok(())
        })
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        // One transaction: after a crash, either both the entries are gone and `last_purged`
        // says so, or neither, so `get_log_state` never sees a hole.
        write(&self.db, |txn| {
            put(txn, &self.codec, META, LAST_PURGED, &log_id)?;
            txn.open_table(LOG)?
                .retain_in(..=log_id.index, |_, _| false)?;
            Ok(())
        })
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}
