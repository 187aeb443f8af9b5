use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftSnapshotBuilder, Vote,
};
use tempfile::TempDir;

use super::{LogStore, StateMachineStore, StorageError, open};
use crate::cluster::{Availability, ClusterInfo, Command, CommandResponse, NodeRecord, Role};
use crate::raft::TypeConfig;
use crate::raft::seal::SealKey;

struct TempStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) =
            open(&dir.path().join("raft.redb"), SealKey::generate()).expect("open the store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(TempStore).expect("openraft storage suite");
}

pub(super) fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(3, 7), index)
}

fn node(id: &str, role: Role) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        hostname: format!("host-{id}"),
        role,
        availability: Availability::Active,
        labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        addr: "10.0.0.1:2377".parse().expect("addr"),
        data_path_addr: "10.0.0.1".parse().expect("ip"),
        created_at: 1_700_000_000,
        resources: Default::default(),
    }
}

/// What [`write_a_store`] wrote.
pub(super) struct Written {
    cluster: ClusterInfo,
    membership: Membership<u64, BasicNode>,
    entries: Vec<Entry<TypeConfig>>,
    vote: Vote<u64>,
    snapshot_meta: openraft::SnapshotMeta<u64, BasicNode>,
    pub(super) state: crate::cluster::ClusterState,
}

const CA_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n";

/// The swarm of the stores written here.
fn cluster_info() -> ClusterInfo {
    ClusterInfo {
        id: "c".repeat(25),
        ca_cert_pem: "cert".into(),
        ca_key_pem: CA_KEY.into(),
        worker_secret: "w".into(),
        manager_secret: "m".into(),
        default_addr_pools: vec!["10.0.0.0/8".into()],
        subnet_size: 24,
        heartbeat_period_ms: 5000,
        created_at: 1_700_000_000,
        gossip_keys: Vec::new(),
        unlock_key: None,
        version: 1,
        updated_at_ms: 0,
    }
}

/// A store at `path` with a vote, four entries committed and applied, and a snapshot.
pub(super) async fn write_a_store(path: &std::path::Path, dek: SealKey) -> Written {
    let cluster = cluster_info();
    let membership = Membership::new(
        vec![BTreeSet::from([7])],
        BTreeMap::from([(7, BasicNode::new("10.0.0.1:2377"))]),
    );
    let entries: Vec<Entry<TypeConfig>> = vec![
        Entry {
            log_id: log_id(1),
            payload: EntryPayload::Membership(membership.clone()),
        },
        Entry {
            log_id: log_id(2),
            payload: EntryPayload::Normal(Command::Init {
                cluster: cluster.clone(),
                node: node("a", Role::Manager),
            }),
        },
        Entry {
            log_id: log_id(3),
            payload: EntryPayload::Normal(Command::AddNode(node("b", Role::Worker))),
        },
        Entry {
            log_id: log_id(4),
            payload: EntryPayload::Normal(Command::RemoveNode {
                id: "zz".into(),
                removed_at: 0,
                revoked_until: 0,
            }),
        },
    ];
    let vote = Vote::new_committed(3, 7);

    let (snapshot_meta, state) = {
        let (mut log, mut sm) = open(path, dek).expect("open");
        log.save_vote(&vote).await.expect("save vote");
        log.blocking_append(entries.clone()).await.expect("append");
        log.save_committed(Some(log_id(4))).await.expect("commit");
        let responses = sm.apply(entries.clone()).await.expect("apply");
        assert_eq!(responses[..3], vec![CommandResponse::Ok; 3]);
        assert!(matches!(responses[3], CommandResponse::Rejected(_)));
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");
        (snapshot.meta, sm.cluster_state())
    };
    Written {
        cluster,
        membership,
        entries,
        vote,
        snapshot_meta,
        state,
    }
}

/// Checks that the store at `path`, opened with `dek`, holds what [`write_a_store`] wrote.
pub(super) async fn check_the_store(path: &std::path::Path, dek: SealKey, written: &Written) {
    let Written {
        membership,
        entries,
        vote,
        snapshot_meta,
        state: expected,
        ..
    } = written;
    let (mut log, mut sm) = open(path, dek).expect("reopen");
    assert_eq!(log.read_vote().await.expect("vote"), Some(*vote));
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(4))
    );
    assert_eq!(&log.try_get_log_entries(..).await.expect("log"), entries);
    assert_eq!(
        log.get_log_state().await.expect("log state").last_log_id,
        Some(log_id(4))
    );
    let (last_applied, stored_membership) = sm.applied_state().await.expect("applied");
    assert_eq!(last_applied, Some(log_id(4)));
    assert_eq!(stored_membership.log_id(), &Some(log_id(1)));
    assert_eq!(stored_membership.membership(), membership);
    assert_eq!(&sm.reader().cluster_state(), expected);
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read snapshot")
        .expect("a snapshot");
    assert_eq!(&current.meta, snapshot_meta);
}

#[tokio::test]
async fn survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let dek = SealKey::generate();
    let written = write_a_store(&path, dek.clone()).await;
    assert_eq!(written.state.cluster.as_ref(), Some(&written.cluster));
    assert_eq!(
        written.state.nodes.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "{:?}",
        written.state
    );
    check_the_store(&path, dek, &written).await;
}

pub(super) fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn values_are_sealed_and_open_with_their_data_key_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let dek = SealKey::generate();
    write_a_store(&path, dek).await;
    let bytes = std::fs::read(&path).expect("read the store file");
    assert!(
        !contains(&bytes, "PRIVATE KEY"),
        "the CA key is in the clear"
    );
    assert!(
        !contains(&bytes, "MIGHAgEAMBMGByqGSM49"),
        "the CA key is in the clear"
    );
    assert!(!contains(&bytes, "host-a"), "a node record is in the clear");
    let err = open(&path, SealKey::generate())
        .err()
        .expect("another data key opened the store");
    let text = crate::error_chain::chain(&err);
    assert!(text.contains("does not open"), "{text}");
}

#[tokio::test]
async fn a_secrets_data_is_sealed_in_the_log_the_state_and_the_snapshots() {
    use crate::cluster::objects::{FileData, FileObject, ObjectCommand, ObjectKind};

    const SECRET: &str = "pa55-w0rd-never-in-the-clear";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let dek = SealKey::generate();
    let written = write_a_store(&path, dek.clone()).await;
    let secret = FileObject {
        id: "s".repeat(25),
        name: "db-password".into(),
        labels: BTreeMap::new(),
        data: FileData::new(SECRET.as_bytes().to_vec()),
        created_at_ms: 1,
        updated_at_ms: 1,
        version: 1,
    };
    let entry = Entry {
        log_id: log_id(5),
        payload: EntryPayload::Normal(Command::Objects(ObjectCommand::Create {
            kind: ObjectKind::Secret,
            object: secret,
        })),
    };
    let (mut log, mut sm) = open(&path, dek.clone()).expect("open");
    log.blocking_append(vec![entry.clone()])
        .await
        .expect("append");
    log.save_committed(Some(log_id(5))).await.expect("commit");
    assert_eq!(
        sm.apply(vec![entry]).await.expect("apply"),
        [CommandResponse::Ok]
    );
    // A snapshot taken here, and one installed as a follower gets it from the leader.
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    let data = snapshot.snapshot.into_inner();
    // The data is in CBOR an array of numbers, so the name (a text string) is what shows.
    assert!(
        contains(&data, "db-password"),
        "the snapshot's data is the state, in memory"
    );
    let follower_path = dir.path().join("follower.redb");
    let (_, mut follower) = open(&follower_path, SealKey::generate()).expect("open the follower");
    follower
        .install_snapshot(&snapshot.meta, Box::new(std::io::Cursor::new(data)))
        .await
        .expect("install the snapshot");
    assert_eq!(
        follower.cluster_state().secrets.len(),
        1,
        "{:?}",
        written.state
    );
    drop((log, sm, follower));
    for file in [&path, &follower_path] {
        let bytes = std::fs::read(file).expect("read the store file");
        assert!(
            !contains(&bytes, SECRET),
            "a secret is in the clear in {}",
            file.display()
        );
        assert!(
            !contains(&bytes, "db-password"),
            "a secret's name is in the clear in {}",
            file.display()
        );
    }
}

/// CBOR against the postcard it replaced, on a realistic state (100 services of 10 tasks on 25
/// nodes, IDs of Docker's 25 characters): both round trip, and the sizes are printed. The
/// measurement at scale (10,000 tasks, with times) is in ARCHITECTURE.md, "Versions and
/// upgrades".
#[test]
fn a_large_state_round_trips_in_cbor() {
    use crate::orchestrator::fixture::{Sim, replicated};

    let mut sim = Sim::new(0);
    for n in 0..25 {
        let role = if n < 3 { Role::Manager } else { Role::Worker };
        sim.add_node(&format!("{n:0>25}"), role);
    }
    for s in 0..100 {
        let mut spec = replicated(&format!("service-{s:04}"), 10);
        spec.env = vec![
            ("SERVICE_INDEX".into(), s.to_string()),
            ("MODE".into(), "production".into()),
        ];
        spec.command = vec![
            "shoal".into(),
            "whoami".into(),
            "--port".into(),
            "80".into(),
        ];
        spec.resources.limit_memory_bytes = 64 << 20;
        sim.create(&format!("{s:0>25}"), spec);
    }
    sim.settle();
    let state = sim.state.clone();
    assert_eq!(state.tasks.len(), 1_000);
    let postcard = postcard::to_stdvec(&state).expect("postcard");
    let cbor = crate::format::to_cbor(&state).expect("cbor");
    let ratio = |a: f64, b: f64| b / a;
    println!(
        "state, 100 services / 1,000 tasks: postcard {} B, CBOR {} B ({:.2}x)",
        postcard.len(),
        cbor.len(),
        ratio(postcard.len() as f64, cbor.len() as f64)
    );
    let back: crate::cluster::ClusterState = crate::format::from_cbor(&cbor).expect("decode");
    assert_eq!(back, state);
    let again: crate::cluster::ClusterState = postcard::from_bytes(&postcard).expect("decode");
    assert_eq!(again, state);
    // One node's assignments as a heartbeat answer carries them (400 tasks).
    let node = format!("{:0>25}", 7);
    let tasks: Vec<_> = state
        .tasks
        .values()
        .filter(|t| t.node_id == node)
        .cloned()
        .collect();
    let p = postcard::to_stdvec(&tasks).expect("postcard");
    let c = crate::format::encode(&tasks).expect("cbor");
    println!(
        "one node's assignments ({} tasks): postcard {} B, CBOR {} B ({:.2}x)",
        tasks.len(),
        p.len(),
        c.len(),
        ratio(p.len() as f64, c.len() as f64)
    );
}

/// Entries `first..=last`: nodes added, one each.
fn more_nodes(first: u64, last: u64) -> Vec<Entry<TypeConfig>> {
    (first..=last)
        .map(|index| Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(Command::AddNode(node(
                &format!("n{index:04}"),
                Role::Worker,
            ))),
        })
        .collect()
}

/// A log as openraft starts one: the membership at index 0, the swarm at 1.
fn a_new_swarm() -> Vec<Entry<TypeConfig>> {
    let membership = Membership::new(
        vec![BTreeSet::from([7])],
        BTreeMap::from([(7, BasicNode::new("10.0.0.1:2377"))]),
    );
    vec![
        Entry {
            log_id: log_id(0),
            payload: EntryPayload::Membership(membership),
        },
        Entry {
            log_id: log_id(1),
            payload: EntryPayload::Normal(Command::Init {
                cluster: cluster_info(),
                node: node("a", Role::Manager),
            }),
        },
    ]
}

/// Appends, commits and applies `entries` in openraft's batches of 64.
async fn commit_and_apply(
    log: &mut LogStore,
    sm: &mut StateMachineStore,
    entries: Vec<Entry<TypeConfig>>,
) {
    let last = entries.last().expect("entries").log_id;
    log.blocking_append(entries.clone()).await.expect("append");
    log.save_committed(Some(last)).await.expect("commit");
    for batch in entries.chunks(64) {
        let responses = sm.apply(batch.to_vec()).await.expect("apply");
        assert!(
            responses.iter().all(|r| *r == CommandResponse::Ok),
            "{responses:?}"
        );
    }
}

/// The image of the state machine is saved every `IMAGE_EVERY` entries, not after each batch;
/// a restarted manager gets the entries after it from the log, as openraft replays them on
/// start (`StorageHelper::get_initial_state`, what `Raft::new` runs).
#[tokio::test]
async fn a_restart_replays_the_entries_after_the_saved_image() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let dek = SealKey::generate();
    let last = super::IMAGE_EVERY + 10;
    let before = {
        let (mut log, mut sm) = open(&path, dek.clone()).expect("open");
        let mut entries = a_new_swarm();
        entries.extend(more_nodes(2, last));
        commit_and_apply(&mut log, &mut sm, entries).await;
        sm.cluster_state()
    };
    assert_eq!(before.nodes.len(), last as usize);

    {
        let (_, mut sm) = open(&path, dek.clone()).expect("reopen");
        let (image_at, _) = sm.applied_state().await.expect("applied");
        let image_at = image_at.expect("an image").index;
        assert!(
            image_at < last && last - image_at < super::IMAGE_EVERY,
            "the image is at {image_at}, the log at {last}"
        );
        assert_ne!(sm.cluster_state(), before, "the image lags");
    }
    // Read without Raft (a manager re-issuing its certificate before Raft starts) ...
    let read = super::committed_state(&path, dek.clone()).expect("the committed state");
    assert_eq!(read, before);
    // ... and as Raft starts.
    let (mut log, mut sm) = open(&path, dek).expect("reopen");
    let state = openraft::StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .expect("openraft's start");
    assert_eq!(state.committed, Some(log_id(last)));
    assert_eq!(
        sm.cluster_state(),
        before,
        "replayed to the last committed entry"
    );
}

/// A larger image lags more entries (one per `IMAGE_BYTES_PER_ENTRY` of it), so that saving
/// it costs a write a bounded share at any swarm size; the entries after it still replay.
#[tokio::test]
async fn a_large_image_is_saved_less_often() {
    use crate::cluster::objects::{FileData, FileObject, ObjectCommand, ObjectKind};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let dek = SealKey::generate();
    // Three configs of 400 KB (distinct bytes, as sealing makes them) make an image of over
    // 1.2 MB: an interval of about 290 entries, over IMAGE_EVERY's 256.
    let config = |index: u64| Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Command::Objects(ObjectCommand::Create {
            kind: ObjectKind::Config,
            object: FileObject {
                id: format!("c{index:024}"),
                name: format!("big-{index}"),
                labels: BTreeMap::new(),
                data: FileData::new((0..400_000u32).map(|i| (i * index as u32) as u8).collect()),
                created_at_ms: 1,
                updated_at_ms: 1,
                version: 1,
            },
        })),
    };
    let first_image = super::IMAGE_EVERY - 1;
    let last = 2 * super::IMAGE_EVERY + 10;
    let before = {
        let (mut log, mut sm) = open(&path, dek.clone()).expect("open");
        let mut entries = a_new_swarm();
        entries.extend((2..5).map(config));
        entries.extend(more_nodes(5, last));
        commit_and_apply(&mut log, &mut sm, entries).await;
        sm.cluster_state()
    };
    let (_, bytes): (super::state_machine::SmImage, u64) = {
        let db = redb::Database::open(&path).expect("open the file");
        let codec = super::Codec { dek: dek.clone() };
        super::get_sized(&db, &codec, super::SM, super::APPLIED)
            .expect("read")
            .expect("an image")
    };
    let interval = super::image_interval(bytes);
    assert!(interval > last - first_image, "{bytes} bytes: {interval}");
    let (mut log, mut sm) = open(&path, dek).expect("reopen");
    let (image_at, _) = sm.applied_state().await.expect("applied");
    assert_eq!(
        image_at.map(|id| id.index),
        Some(first_image),
        "saved once, after the first IMAGE_EVERY entries, not again ({last} applied)"
    );
    openraft::StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .expect("openraft's start");
    assert_eq!(sm.cluster_state(), before, "replayed to the last entry");
}

/// A snapshot builder copies the state when openraft asks for it and may finish after the
/// store saved a newer image: the older copy does not replace it.
#[tokio::test]
async fn a_snapshot_never_replaces_a_newer_image() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let dek = SealKey::generate();
    write_a_store(&path, dek.clone()).await;
    let last = 4 + super::IMAGE_EVERY;
    {
        let (mut log, mut sm) = open(&path, dek.clone()).expect("open");
        commit_and_apply(&mut log, &mut sm, more_nodes(5, 6)).await;
        let mut builder = sm.get_snapshot_builder().await;
        commit_and_apply(&mut log, &mut sm, more_nodes(7, last)).await;
        let snapshot = builder.build_snapshot().await.expect("snapshot");
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(6)));
    }
    let (_, mut sm) = open(&path, dek).expect("reopen");
    let (image_at, _) = sm.applied_state().await.expect("applied");
    assert_eq!(image_at, Some(log_id(last)), "the newer image stays");
}

/// What readers keep computed from the state follows its generations: any change moves the
/// state's, only one that may give a node another routing mesh moves the mesh's, and a command
/// the state refuses moves neither.
#[tokio::test]
async fn applied_changes_move_the_generations_readers_follow() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, mut sm) = open(&dir.path().join("raft.redb"), SealKey::generate()).expect("open");
    let reader = sm.reader();
    let generations = || reader.read_versioned(|_, g| g);
    commit_and_apply(&mut log, &mut sm, a_new_swarm()).await;
    let swarm = generations();
    assert_eq!((swarm.state, swarm.mesh), (1, 1), "the swarm created");

    let entry = |index: u64, command: Command| Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(command),
    };
    let key = entry(
        2,
        Command::SetNodeKey {
            id: "a".into(),
            public_key: vec![1; 32],
        },
    );
    commit_and_apply(&mut log, &mut sm, vec![key]).await;
    let keyed = generations();
    assert_eq!((keyed.state, keyed.mesh), (2, 1), "a node's key: no mesh");

    let refused = entry(
        3,
        Command::SetNodeKey {
            id: "nobody".into(),
            public_key: vec![1; 32],
        },
    );
    let responses = sm.apply(vec![refused]).await.expect("apply");
    assert_ne!(responses, [CommandResponse::Ok]);
    assert_eq!(generations(), keyed, "refused: nothing changed");

    commit_and_apply(&mut log, &mut sm, more_nodes(4, 4)).await;
    let joined = generations();
    assert_eq!((joined.state, joined.mesh), (3, 2), "a node joined");

    // What the orchestrator passes over next: a node joined, so every service; once taken,
    // nothing until the next change.
    let touched = reader.read_touched(|_, g, touched| {
        assert_eq!(g, joined);
        touched
    });
    assert!(touched.all, "{touched:?}");
    let again = reader.read_touched(|_, _, touched| touched);
    assert_eq!(again, crate::cluster::touched::Touched::default());
}
