//! [`StateMachineStore`]: the [`ClusterState`] the log builds, its snapshots, and the shared
//! handle the rest of the manager reads the state through.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, SnapshotMeta, StoredMembership,
};
use redb::{Database, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{
    APPLIED, Codec, DbError, SM, SNAPSHOT, StorageError, event_log::EventLog, get, get_sized, put,
    write,
};
use crate::cluster::{
    ClusterState, Command, CommandResponse, events, mesh::RoutingMesh, touched::Touched,
};
use crate::format;
use crate::raft::TypeConfig;

/// A read handle on the replicated [`ClusterState`], shared with the [`StateMachineStore`] it
/// came from: it sees every entry applied so far, including a snapshot installed. Cloning is
/// cheap.
///
/// The lock is a std one, so reads need no runtime, and the state machine holds it for writing
/// only while it applies entries in memory, never across IO.
///
/// It also carries the [`EventLog`] of what was applied, for `docker events`, and the
/// state's [`Generations`] (see [`StateReader::read_versioned`]).
#[derive(Clone, Debug)]
pub struct StateReader {
    state: Arc<RwLock<ClusterState>>,
    events: Arc<EventLog>,
    /// Counts the applied commands that changed the state and the snapshots installed.
    generation: Arc<AtomicU64>,
    /// Counts the applied commands that may have changed the routing mesh
    /// ([`RoutingMesh::may_change_with`]) and the snapshots installed.
    mesh_generation: Arc<AtomicU64>,
    /// The services the commands applied may have changed for the orchestrator, since it last
    /// took them ([`StateReader::read_touched`]); written under the state's write lock.
    touched: Arc<Mutex<Touched>>,
}

/// How far the state in memory has moved; both counters are written under the state's write
/// lock, so a reader holding the read lock sees those of its state. Equal generations of a
/// kind, the same state for what that kind covers, so what was computed from it still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generations {
    /// Any change to the state.
    pub state: u64,
    /// A change that may give a node another routing mesh.
    pub mesh: u64,
}

impl StateReader {
    /// A copy of the current state.
    pub fn cluster_state(&self) -> ClusterState {
        self.read(ClusterState::clone)
    }

    /// Runs `f` on the current state, under the read lock: keep it short, the state machine
    /// waits for it to apply entries.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        // Poisoning takes a panic inside `ClusterState::apply`, which has no panicking path;
        // serving the state on beats taking the manager down over it.
        f(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// [`StateReader::read`], with the state's generations.
    pub fn read_versioned<T>(&self, f: impl FnOnce(&ClusterState, Generations) -> T) -> T {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let generations = Generations {
            state: self.generation.load(Ordering::Relaxed),
            mesh: self.mesh_generation.load(Ordering::Relaxed),
        };
        f(&state, generations)
    }

    /// [`StateReader::read_versioned`], with the services changed since the last call (the
    /// leader's orchestrator is the one caller), taken under the read lock: exactly those of
    /// the state `f` reads.
    pub fn read_touched<T>(&self, f: impl FnOnce(&ClusterState, Generations, Touched) -> T) -> T {
        self.read_versioned(|state, generations| {
            let touched = self
                .touched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            f(state, generations, touched)
        })
    }

    /// The swarm events applied here.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    fn write(&self) -> RwLockWriteGuard<'_, ClusterState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Under the write lock, before `command` applies to `state`: notes the services it may
    /// change (whether it is then accepted or not: a refused one costs a pass at most).
    fn note(&self, command: &Command, state: &ClusterState) {
        self.touched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(command, state);
    }

    /// Under the write lock: the state changed by `command` (`None`: replaced whole).
    fn changed(&self, command: Option<&Command>) {
        if command.is_none() {
            self.touched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .note_all();
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
        if command.is_none_or(RoutingMesh::may_change_with) {
            self.mesh_generation.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Membership = StoredMembership<u64, BasicNode>;

/// The state machine as saved in redb (`"applied"`: a CBOR document, sealed) and as carried
/// in snapshot data (a framed CBOR document, `format::encode`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct SmImage {
    last_applied: Option<LogId<u64>>,
    membership: Membership,
    state: ClusterState,
}

/// [`SmImage`] by reference, to encode without cloning the state; same fields, same names.
#[derive(Serialize)]
struct SmImageRef<'a> {
    last_applied: &'a Option<LogId<u64>>,
    membership: &'a Membership,
    state: &'a ClusterState,
}

impl SmImageRef<'_> {
    /// The bare CBOR document that `"applied"` seals.
    fn encode(&self) -> Result<Vec<u8>, DbError> {
        Ok(format::to_cbor(self)?)
    }

    /// Snapshot data: the framed document, which says its format to whoever installs it.
    fn snapshot_data(&self) -> Result<Vec<u8>, DbError> {
        Ok(format::encode(self)?)
    }
}

/// The current snapshot, as saved in redb (`"snapshot"`).
#[derive(Serialize, Deserialize)]
pub(super) struct StoredSnapshot {
    pub(super) meta: SnapshotMeta<u64, BasicNode>,
    /// A byte string in CBOR, not an array of numbers (half the size).
    #[serde(serialize_with = "format::as_bytes")]
    pub(super) data: Vec<u8>,
}

impl StoredSnapshot {
    fn into_snapshot(self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta,
            snapshot: Box::new(Cursor::new(self.data)),
        }
    }
}

/// The Raft state machine of a manager: the [`ClusterState`] in memory (read it through
/// [`StateMachineStore::reader`]), saved to redb every [`image_interval`] entries and with each
/// snapshot.
pub struct StateMachineStore {
    db: Arc<Database>,
    codec: Codec,
    state: StateReader,
    last_applied: Option<LogId<u64>>,
    membership: Membership,
    saved: SavedImage,
}

/// The fewest entries the saved image (`"applied"`) may lag behind the state in memory. The
/// image is the whole state, so saving it after every applied batch made each Raft write cost
/// the swarm's size (at 10,000 services a 27 MB document encoded, sealed and written for one
/// task report); a restarted manager replays the entries after its image from the log (openraft
/// re-applies every committed entry past `applied_state()` before it starts), which holds them
/// until a snapshot covers them.
///
/// Why they are always still there: openraft purges the log only after a snapshot (built, or
/// installed from the leader), and never past the snapshot's last entry (it keeps
/// [`LOGS_KEPT_AFTER_SNAPSHOT`] before it); both save the image with the snapshot (never an
/// older one than saved). So the image is never older than the log's first entry, however far
/// it lags the state in memory.
pub const IMAGE_EVERY: u64 = 256;

/// The image's bytes each entry pays for: the image is saved after [`image_interval`] entries,
/// at least [`IMAGE_EVERY`], more for a larger image, so that saving it costs a write at most
/// this many bytes encoded, sealed and written, amortized, at any swarm size (a fixed interval
/// made the mean write grow with the swarm: 0.7 ms at 10,000 services, one 27 MB image every
/// 256 writes). A large swarm's image then comes mostly with the snapshots, which openraft
/// builds every [`SNAPSHOT_EVERY`] entries beside the state machine, not in a write's way. What it costs: a
/// restarted manager replays more entries (at most the interval, or the entries since the last
/// snapshot), each a write's work in memory.
pub const IMAGE_BYTES_PER_ENTRY: u64 = 4096;

/// How many entries the saved image may lag behind the state in memory, for an image of
/// `image_bytes` (the last one saved).
pub fn image_interval(image_bytes: u64) -> u64 {
    IMAGE_EVERY.max(image_bytes / IMAGE_BYTES_PER_ENTRY)
}

/// The managers' Raft snapshot policy: a snapshot every this many entries (openraft's default,
/// made explicit: the image of a large swarm comes mostly with them, see
/// [`IMAGE_BYTES_PER_ENTRY`]).
pub const SNAPSHOT_EVERY: u64 = 5000;

/// `max_in_snapshot_log_to_keep` of the managers' Raft: entries kept in the log before the
/// last snapshot (openraft's default, made explicit: a follower a little behind gets entries,
/// not a snapshot).
pub const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1000;

/// What the saved image (`"applied"`) holds: the last entry it includes and its size (sealed).
#[derive(Clone, Copy, Debug, Default)]
struct SavedAt {
    at: Option<LogId<u64>>,
    bytes: u64,
}

/// The saved image, shared by the store and its snapshot builders (which run beside it): held
/// while an image is written, so a builder's older copy never replaces a newer image.
type SavedImage = Arc<Mutex<SavedAt>>;

impl StateMachineStore {
    /// Loads the state machine saved in `db`, or an empty one.
    pub(super) fn load(db: Arc<Database>, codec: Codec) -> Result<Self, DbError> {
        let (image, bytes): (SmImage, u64) =
            get_sized(&db, &codec, SM, APPLIED)?.unwrap_or_default();
        Ok(Self {
            db,
            codec,
            state: StateReader {
                state: Arc::new(RwLock::new(image.state)),
                events: Arc::default(),
                generation: Arc::default(),
                mesh_generation: Arc::default(),
                touched: Arc::default(),
            },
            last_applied: image.last_applied,
            membership: image.membership,
            saved: Arc::new(Mutex::new(SavedAt {
                at: image.last_applied,
                bytes,
            })),
        })
    }

    /// A read handle on the replicated cluster state, which stays current as entries apply.
    pub fn reader(&self) -> StateReader {
        self.state.clone()
    }

    /// A copy of the current cluster state.
    pub fn cluster_state(&self) -> ClusterState {
        self.state.cluster_state()
    }

    /// The state machine with `state`, encoded as saved under `"applied"`.
    fn encode(&self, state: &ClusterState) -> Result<Vec<u8>, DbError> {
        SmImageRef {
            last_applied: &self.last_applied,
            membership: &self.membership,
            state,
        }
        .encode()
    }

    /// Whether the image is [`image_interval`] entries or more behind the state in memory.
    fn image_due(&self) -> bool {
        let index = |id: Option<LogId<u64>>| id.map_or(0, |id| id.index + 1);
        let saved = *self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        index(self.last_applied).saturating_sub(index(saved.at)) >= image_interval(saved.bytes)
    }
}

/// The state machine encoded for `"applied"` (a bare CBOR document), as of the entry `at`;
/// `force`: written even if the saved image is newer (a snapshot installed replaced the state).
struct Image<'a> {
    encoded: &'a [u8],
    at: Option<LogId<u64>>,
    force: bool,
}

/// Saves `image` unless the saved one is newer, and runs `also` in the same transaction.
fn save_image(
    db: &Database,
    codec: &Codec,
    saved: &SavedImage,
    image: Image<'_>,
    also: impl FnOnce(&WriteTransaction) -> Result<(), DbError>,
) -> Result<(), DbError> {
    let mut saved = saved.lock().unwrap_or_else(PoisonError::into_inner);
    let newer = image.force || image.at > saved.at;
    let sealed = if newer {
        Some(codec.seal(image.encoded)?)
    } else {
        None
    };
    write(db, |txn| {
        if let Some(sealed) = &sealed {
            txn.open_table(SM)?.insert(APPLIED, sealed.as_slice())?;
        }
        also(txn)
    })?;
    if let Some(sealed) = sealed {
        *saved = SavedAt {
            at: image.at,
            bytes: sealed.len() as u64,
        };
    }
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SmSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, Membership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut applied = Vec::new();
        let image_due = {
            let mut state = self.state.write();
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                responses.push(match entry.payload {
                    EntryPayload::Blank => CommandResponse::Ok,
                    EntryPayload::Normal(command) => {
                        let events = events::of(&command, &state);
                        self.state.note(&command, &state);
                        let response = state.apply(&command);
                        if response == CommandResponse::Ok {
                            applied.extend(events);
                            self.state.changed(Some(&command));
                        }
                        response
                    }
                    EntryPayload::Membership(membership) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), membership);
                        CommandResponse::Ok
                    }
                });
            }
            // The image only every IMAGE_EVERY entries: it is the whole state.
            self.image_due()
        };
        // Published once the batch is in memory, as readers see it.
        self.state.events().record(applied);
        // Encoded under the read lock, which readers share (beats, the orchestrator): under
        // the write lock they waited for it, tens of milliseconds at 10,000 services. Nothing
        // changes the state meanwhile: this is its only writer.
        let image = image_due.then(|| self.state.read(|state| self.encode(state)));
        // Written after the read lock is released too: readers need not wait for the disk.
        if let Some(image) = image {
            image
                .and_then(|encoded| {
                    let image = Image {
                        encoded: &encoded,
                        at: self.last_applied,
                        force: false,
                    };
                    save_image(&self.db, &self.codec, &self.saved, image, |_| Ok(()))
                })
                .map_err(|e| e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Write))?;
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // A copy (the state is small) freezes the view: entries applied while the snapshot is
        // built stay out of it, as they are out of `last_applied`.
        SmSnapshotBuilder {
            db: self.db.clone(),
            codec: self.codec.clone(),
            saved: Arc::clone(&self.saved),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            state: self.state.cluster_state(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let image: SmImage = format::decode(&data)
            .map_err(|e| DbError::from(e).into_storage(subject(), ErrorVerb::Read))?;
        // The ids come from the meta, which openraft checked; the data carries the same ones, as
        // `build_snapshot` wrote both.
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let encoded = self.encode(&image.state);
        {
            let mut state = self.state.write();
            *state = image.state;
            self.state.changed(None);
        }
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        // Forced: the state in memory is the snapshot's now, whatever image was saved.
        encoded
            .and_then(|encoded| {
                let image = Image {
                    encoded: &encoded,
                    at: self.last_applied,
                    force: true,
                };
                save_image(&self.db, &self.codec, &self.saved, image, |txn| {
                    put(txn, &self.codec, SM, SNAPSHOT, &stored)
                })
            })
            .map_err(|e| e.into_storage(subject(), ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored: Option<StoredSnapshot> = get(&self.db, &self.codec, SM, SNAPSHOT)
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(stored.map(StoredSnapshot::into_snapshot))
    }
}

/// Builds a snapshot of the state machine as it was when openraft asked for the builder.
pub struct SmSnapshotBuilder {
    db: Arc<Database>,
    codec: Codec,
    saved: SavedImage,
    last_applied: Option<LogId<u64>>,
    membership: Membership,
    state: ClusterState,
}

impl RaftSnapshotBuilder<TypeConfig> for SmSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let this = SmImageRef {
            last_applied: &self.last_applied,
            membership: &self.membership,
            state: &self.state,
        };
        let (data, encoded) = this
            .snapshot_data()
            .and_then(|data| Ok((data, this.encode()?)))
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        // Unique even for two snapshots at the same log id, as openraft asks; a clock before
        // 1970 only costs that uniqueness.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let last = self
            .last_applied
            .map_or_else(|| "none".to_string(), |id| id.to_string());
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{last}-{nanos}"),
        };
        let stored = StoredSnapshot { meta, data };
        let signature = stored.meta.signature();
        // The image with it (if the saved one is older): once openraft purges the log up to
        // the snapshot, the entries before it can no longer be replayed onto an older image.
        let image = Image {
            encoded: &encoded,
            at: self.last_applied,
            force: false,
        };
        save_image(&self.db, &self.codec, &self.saved, image, |txn| {
            // This builder runs beside the state machine: a snapshot installed meanwhile is
            // newer, and must stay the current one.
            let current: Option<StoredSnapshot> = {
                let table = txn.open_table(SM)?;
                let value = redb::ReadableTable::get(&table, SNAPSHOT)?;
                value.map(|v| self.codec.decode(v.value())).transpose()?
            };
            if current.is_none_or(|c| c.meta.last_log_id <= stored.meta.last_log_id) {
                put(txn, &self.codec, SM, SNAPSHOT, &stored)?;
            }
            Ok(())
        })
        .map_err(|e| e.into_storage(ErrorSubject::Snapshot(Some(signature)), ErrorVerb::Write))?;
        Ok(stored.into_snapshot())
    }
}
