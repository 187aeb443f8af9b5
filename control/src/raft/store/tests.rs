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

struct TempStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = open(&dir.path().join("raft.redb")).expect("open the store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(TempStore).expect("openraft storage suite");
}

fn log_id(index: u64) -> LogId<u64> {
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
    }
}

#[tokio::test]
async fn survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft.redb");
    let cluster = ClusterInfo {
        id: "c".repeat(25),
        ca_cert_pem: "cert".into(),
        ca_key_pem: "key".into(),
        worker_secret: "w".into(),
        manager_secret: "m".into(),
        default_addr_pools: vec!["10.0.0.0/8".into()],
        subnet_size: 24,
        heartbeat_period_ms: 5000,
        created_at: 1_700_000_000,
        gossip_keys: Vec::new(),
    };
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
            payload: EntryPayload::Normal(Command::RemoveNode { id: "zz".into() }),
        },
    ];
    let vote = Vote::new_committed(3, 7);

    let (snapshot_meta, expected) = {
        let (mut log, mut sm) = open(&path).expect("open");
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
    assert_eq!(expected.cluster.as_ref(), Some(&cluster));
    assert_eq!(
        expected.nodes.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "{expected:?}"
    );

    let (mut log, mut sm) = open(&path).expect("reopen");
    assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(4))
    );
    assert_eq!(log.try_get_log_entries(..).await.expect("log"), entries);
    assert_eq!(
        log.get_log_state().await.expect("log state").last_log_id,
        Some(log_id(4))
    );
    let (last_applied, stored_membership) = sm.applied_state().await.expect("applied");
    assert_eq!(last_applied, Some(log_id(4)));
    assert_eq!(stored_membership.log_id(), &Some(log_id(1)));
    assert_eq!(stored_membership.membership(), &membership);
    assert_eq!(sm.reader().cluster_state(), expected);
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read snapshot")
        .expect("a snapshot");
    assert_eq!(current.meta, snapshot_meta);
}
