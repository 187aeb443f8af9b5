//! The node side of heartbeats: every period, tell the leader this node is alive (and which
//! certificate it uses), and learn from the answer where the leader and the managers are, the
//! period, this node's role (a promoted or demoted node follows it), and the swarm's roots (a
//! root rotation reaches the node this way).

use std::{
    net::SocketAddr,
    sync::{
        Arc, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;
use tracing::{debug, warn};

use super::runner::{TaskReports, TaskRunner};
use crate::{
    api::{HeartbeatRequest, HeartbeatResponse},
    cluster::{Task, mesh::RoutingMesh, objects::TaskFiles},
    error_chain::Chain,
    swarm::{
        Active, Swarm,
        codec::{
            CodecError, decode_files, decode_gossip, decode_mesh, decode_mesh_delta, decode_tasks,
            encode_mesh, encode_reports, mesh_digest,
        },
        convert::parse_role,
        error::Error,
        leader::Leader,
    },
};

/// How soon a node beats again when its tasks have news.
const SOON: Duration = Duration::from_millis(100);

/// Boxed because the loop may switch the node's role, which starts a new loop: the future
/// would otherwise contain itself.
pub fn run(
    swarm: Swarm,
    active: Arc<Active>,
    stop: watch::Receiver<bool>,
) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(beat(swarm, active, stop))
}

/// The beats, and beside them the following of what they bring: starting a task (a network
/// namespace, interfaces, programs, a fork) can take a while on a loaded host, and must never
/// hold back the next beat, or the leader would take the node for Down (three periods of
/// silence) and move its tasks. A beat hands its assignments over and goes on.
async fn beat(swarm: Swarm, active: Arc<Active>, stop: watch::Receiver<bool>) {
    let handoff = Handoff::default();
    let runner = Arc::clone(&swarm.inner.runner);
    tokio::select! {
        () = beat_loop(&swarm, &active, stop.clone(), &handoff) => {}
        () = follow_loop(&runner, &handoff, stop) => {}
    }
}

/// Assignments on their way from the beats to the task runner: only the latest matters (each
/// names every task of the node), and word back when following them gave news to report.
#[derive(Default)]
struct Handoff {
    latest: std::sync::Mutex<Option<(Vec<Task>, TaskFiles)>>,
    handed: tokio::sync::Notify,
    news: tokio::sync::Notify,
}

impl Handoff {
    fn hand(&self, assigned: Vec<Task>, files: TaskFiles) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some((assigned, files));
        self.handed.notify_one();
    }

    fn take(&self) -> Option<(Vec<Task>, TaskFiles)> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Makes the runner follow the latest assignments handed over, one reconcile at a time.
async fn follow_loop(
    runner: &Arc<dyn TaskRunner>,
    handoff: &Handoff,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = handoff.handed.notified() => {}
        }
        if let Some((assigned, files)) = handoff.take()
            && follow(runner, assigned, files).await
        {
            handoff.news.notify_one();
        }
    }
}

async fn beat_loop(
    swarm: &Swarm,
    active: &Arc<Active>,
    mut stop: watch::Receiver<bool>,
    handoff: &Handoff,
) {
    let runner = Arc::clone(&swarm.inner.runner);
    let mut period = swarm.config().heartbeat_period;
    // The first beat at once: a restarted agent is Down for the leader after three periods of
    // silence, counted from its last beat before the restart.
    let mut next = Duration::ZERO;
    // The routing mesh the runner follows, with its digest as the leader last named it (or
    // this node, leading, built it): the leader then sends the mesh, or its change, only
    // when it changed.
    let mut mesh = FollowedMesh::default();
    // The assignments the leader last sent, with its token for them: it then sends them only
    // when they changed.
    let mut assignments: Option<Assignments> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(next) => {}
            // The runner has news (a task started): the next beat comes soon, so that the
            // leader sees it within ~100 ms instead of a period later.
            () = handoff.news.notified() => {
                next = SOON.min(period);
                continue;
            }
        }
        next = period;
        let reports = runner.take_reports();
        if let Some(leader) = Leader::of(swarm, active) {
            // The leader beats for itself without a round trip.
            active.liveness.record(swarm.node_id());
            let ours = active.tls.current();
            match leader
                .own_beat(reports.clone(), &ours.cert.fingerprint)
                .await
            {
                Ok(beat) => {
                    active
                        .certs
                        .follow(&ours.creds, &beat.roots, beat.renew_certificate, period);
                    runner.gossip(&beat.gossip);
                    if beat.mesh.digest != mesh.digest {
                        let own = beat.mesh.mesh();
                        runner.routing_mesh(&own);
                        mesh.follow(own, beat.mesh.digest.clone());
                    }
                    handoff.hand(beat.assigned, beat.files);
                }
                Err(e) => {
                    debug!(cause = %Chain(&e), "local dispatch failed");
                    runner.requeue(reports);
                }
            }
            continue;
        }
        let Some(leader) = active.leader_addr() else {
            debug!("no leader known; heartbeat skipped");
            runner.requeue(reports);
            continue;
        };
        let beat = Beat {
            reports: &reports,
            mesh_digest: &mesh.digest,
            assignments_token: assignments.as_ref().map_or(&[], |a| &a.token),
            agent_stopping: false,
        };
        let reply = match send(active, leader, swarm.node_id(), beat).await {
            Ok(reply) => reply,
            Err(e) => {
                debug!(%leader, cause = %Chain(&e), "heartbeat failed");
                runner.requeue(reports);
                active.forget_leader(leader);
                continue;
            }
        };
        period = Duration::from_millis(reply.period_ms.max(50));
        active.learn_managers(reply.leader_addr.parse().ok(), &reply.manager_addrs, swarm);
        active.certs.follow(
            &active.tls.creds(),
            &reply.ca_certs_pem,
            reply.renew_certificate,
            period,
        );
        *active
            .manager_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reply.manager_ids.clone();
        let followed = follow_reply(
            runner.as_ref(),
            &reply,
            &mut mesh,
            &mut assignments,
            &swarm.inner.mesh_updates,
        );
        if let Some((assigned, files)) = followed {
            handoff.hand(assigned, files);
        }
        if let Ok(role) = parse_role(&reply.role)
            && role != active.role()
        {
            // The switch restarts this membership (and this loop): run it elsewhere.
            let swarm = swarm.clone();
            tokio::spawn(async move {
                if let Err(e) = swarm.switch_role(role).await {
                    warn!(cause = %Chain(&e), "cannot switch role");
                }
            });
            return;
        }
    }
}

/// What a heartbeat carries besides the node's identity.
struct Beat<'a> {
    /// What this node's tasks did since the last beat.
    reports: &'a TaskReports,
    /// The digest of the routing mesh the node follows (empty: none from a leader).
    mesh_digest: &'a [u8],
    /// The leader's token for the assignments the node has (empty: none).
    assignments_token: &'a [u8],
    /// The agent stops and leaves its tasks running.
    agent_stopping: bool,
}

/// One heartbeat to the manager at `to` (the leader, or one that forwards it there).
async fn send(
    active: &Active,
    to: SocketAddr,
    node_id: &str,
    beat: Beat<'_>,
) -> Result<HeartbeatResponse, Error> {
    let request = HeartbeatRequest {
        node_id: node_id.to_string(),
        task_reports: encode_reports(beat.reports)?,
        cert_fingerprint: active.tls.current().cert.fingerprint.clone(),
        agent_stopping: beat.agent_stopping,
        routing_mesh_digest: beat.mesh_digest.to_vec(),
        assignments_token: beat.assignments_token.to_vec(),
        accepts_mesh_delta: true,
    };
    let reply = active.peers.client(to)?.heartbeat(request).await?;
    Ok(reply.into_inner())
}

/// How long a stopping agent waits for the managers to take its last word.
const STOPPING_NOTICE_TIMEOUT: Duration = Duration::from_secs(1);

/// The agent is stopping and leaves its tasks running: tells every other manager it knows (each
/// records it and forwards it to the leader), so that whichever leads gives this node the
/// longer grace before Down (`leader/liveness.rs`). Best effort: a manager that does not answer
/// within a second counts three periods as for any silent node.
pub(in crate::swarm) async fn say_stopping(swarm: &Swarm, active: &Active) {
    let own = active.file().addr;
    let mut managers = active.managers_leader_first();
    managers.sort();
    managers.dedup();
    managers.retain(|m| *m != own);
    let notices = managers.iter().map(|&to| async move {
        let beat = Beat {
            reports: &Vec::new(),
            mesh_digest: &[],
            assignments_token: &[],
            agent_stopping: true,
        };
        if let Err(e) = send(active, to, swarm.node_id(), beat).await {
            debug!(%to, cause = %Chain(&e), "telling a manager this agent stops");
        }
    });
    let all = futures::future::join_all(notices);
    if tokio::time::timeout(STOPPING_NOTICE_TIMEOUT, all)
        .await
        .is_err()
    {
        debug!("not every manager heard that this agent stops");
    }
}

/// Hands the keys and routing mesh of a heartbeat answer to the runner, and returns the tasks
/// it assigns with their files. Each payload that does not decode is logged and skipped: above
/// all the assignments (and their files, without which new tasks would fail), since following
/// an unreadable one could stop every task the node runs. `mesh`: the mesh the runner
/// follows, updated; an answer without a mesh whose digest is that one's leaves the runner's
/// as it is. `assignments`: what the leader last sent, updated; an answer that keeps them
/// gives them again.
fn follow_reply(
    runner: &dyn TaskRunner,
    reply: &HeartbeatResponse,
    mesh: &mut FollowedMesh,
    assignments: &mut Option<Assignments>,
    updates: &MeshUpdates,
) -> Option<(Vec<Task>, TaskFiles)> {
    match decode_gossip(&reply.gossip) {
        Ok(config) => runner.gossip(&config),
        Err(e) => warn!(cause = %Chain(&e), "bad gossip config from the leader"),
    }
    let unchanged = reply.routing_mesh.is_empty()
        && reply.routing_mesh_delta.is_empty()
        && !reply.routing_mesh_digest.is_empty()
        && reply.routing_mesh_digest == mesh.digest;
    if !unchanged {
        let as_change = !reply.routing_mesh_delta.is_empty();
        match mesh.next(reply) {
            Ok(next) => {
                runner.routing_mesh(&next);
                mesh.follow(next, reply.routing_mesh_digest.clone());
                let counter = if as_change {
                    &updates.changes
                } else {
                    &updates.whole
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // The next beat names no mesh: the leader sends it whole.
                *mesh = FollowedMesh::default();
                updates.refused.fetch_add(1, Ordering::Relaxed);
                warn!(cause = %e, "bad routing mesh from the leader");
            }
        }
    }
    let files = match decode_files(&reply.task_files) {
        Ok(files) => files,
        Err(e) => {
            warn!(cause = %Chain(&e), "bad task files from the leader; the node's tasks are left as they are");
            return None;
        }
    };
    if reply.assignments_kept {
        return match assignments {
            Some(kept) if kept.token == reply.assignments_token => {
                Some((kept.tasks.clone(), files))
            }
            _ => {
                // Not those this node has: the next beat asks for them whole.
                *assignments = None;
                warn!(
                    "the leader kept assignments this node does not have; the node's tasks are left as they are"
                );
                None
            }
        };
    }
    match decode_tasks(&reply.assigned_tasks) {
        Ok(assigned) => {
            *assignments = Some(Assignments {
                token: reply.assignments_token.clone(),
                tasks: assigned.clone(),
            });
            Some((assigned, files))
        }
        Err(e) => {
            *assignments = None;
            warn!(cause = %Chain(&e), "bad task assignments from the leader; the node's tasks are left as they are");
            None
        }
    }
}

/// How the routing meshes a node followed came.
#[derive(Debug, Default)]
pub struct MeshUpdates {
    whole: AtomicU64,
    changes: AtomicU64,
    refused: AtomicU64,
}

/// [`MeshUpdates`] read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshUpdateCounts {
    /// Meshes sent whole.
    pub whole: u64,
    /// Meshes sent as the change from the node's.
    pub changes: u64,
    /// Meshes not followed: undecodable, or a change that did not give the mesh named.
    pub refused: u64,
}

impl MeshUpdates {
    pub(in crate::swarm) fn counts(&self) -> MeshUpdateCounts {
        MeshUpdateCounts {
            whole: self.whole.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// The routing mesh a node follows, and its digest (empty: none yet).
#[derive(Default)]
struct FollowedMesh {
    digest: Vec<u8>,
    mesh: Option<RoutingMesh>,
}

impl FollowedMesh {
    fn follow(&mut self, mesh: RoutingMesh, digest: Vec<u8>) {
        self.mesh = Some(mesh);
        self.digest = digest;
    }

    /// The mesh `reply` gives: whole, or the change from this one, which must come out as the
    /// mesh the reply names (its encoding's digest).
    fn next(&self, reply: &HeartbeatResponse) -> Result<RoutingMesh, String> {
        let bad = |e: CodecError| Chain(&e).to_string();
        if reply.routing_mesh_delta.is_empty() {
            return decode_mesh(&reply.routing_mesh).map_err(bad);
        }
        let delta = decode_mesh_delta(&reply.routing_mesh_delta).map_err(bad)?;
        let current = self
            .mesh
            .as_ref()
            .ok_or("a change to a routing mesh this node does not have")?;
        let next = delta.apply(current);
        if mesh_digest(&encode_mesh(&next).map_err(bad)?) != reply.routing_mesh_digest {
            return Err(
                "a routing mesh change that does not give the mesh the leader named".into(),
            );
        }
        Ok(next)
    }
}

/// The assignments a leader sent, and its token for them.
struct Assignments {
    token: Vec<u8>,
    tasks: Vec<Task>,
}

/// Hands the assignments to the task runner, which forks: not on an async worker.
/// Returns whether the runner has news to report: then the next beat should come soon, so a
/// task that just started is seen Running within ~100 ms instead of a period later.
async fn follow(runner: &Arc<dyn TaskRunner>, assigned: Vec<Task>, files: TaskFiles) -> bool {
    let runner = Arc::clone(runner);
    match tokio::task::spawn_blocking(move || {
        runner.reconcile(&assigned, &files);
        let pending = runner.take_reports();
        let news = !pending.is_empty();
        runner.requeue(pending);
        news
    })
    .await
    {
        Ok(news) => news,
        Err(e) => {
            warn!(cause = %e, "the task runner failed");
            false
        }
    }
}

impl Active {
    /// Remembers the leader and managers a heartbeat answer named, persisting a changed list
    /// so a restarted worker can find the swarm again.
    fn learn_managers(
        &self,
        leader: Option<std::net::SocketAddr>,
        managers: &[String],
        swarm: &Swarm,
    ) {
        *self
            .leader_hint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = leader;
        let managers: Vec<std::net::SocketAddr> =
            managers.iter().filter_map(|m| m.parse().ok()).collect();
        if managers.is_empty() {
            return;
        }
        let changed = {
            let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            (file.manager_addrs != managers).then(|| {
                file.manager_addrs = managers;
                file.clone()
            })
        };
        if let Some(file) = changed
            && let Err(e) = crate::swarm::persist::save(&swarm.config().state_dir, &file)
        {
            warn!(cause = %e, "cannot save the manager list");
        }
    }

    /// After a failed heartbeat: try the next manager next time.
    fn forget_leader(&self, failed: std::net::SocketAddr) {
        let managers = self.file().manager_addrs;
        let next = managers
            .iter()
            .position(|m| *m == failed)
            .map_or(0, |i| (i + 1) % managers.len().max(1));
        *self
            .leader_hint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = managers.get(next).copied();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        path::PathBuf,
        process::Command,
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::{
        cluster::gossip::GossipConfig,
        swarm::{
            codec::{encode_files, encode_gossip, encode_tasks},
            node::runner::RunnerError,
        },
    };

    /// A runner that records what the heartbeat hands it.
    #[derive(Default)]
    struct Recorder {
        reconciled: Mutex<Vec<Vec<Task>>>,
        gossip: Mutex<usize>,
        meshes: Mutex<usize>,
    }

    impl TaskRunner for Recorder {
        fn reconcile(&self, assigned: &[Task], _: &TaskFiles) {
            self.reconciled.lock().unwrap().push(assigned.to_vec());
        }
        fn take_reports(&self) -> TaskReports {
            Vec::new()
        }
        fn requeue(&self, _: TaskReports) {}
        fn stop_all(&self) {}
        fn log_paths(&self, _: &str) -> Option<(PathBuf, PathBuf)> {
            None
        }
        fn exec_command(&self, _: &str, _: &[String]) -> Result<Command, RunnerError> {
            Err("not in this test".into())
        }
        fn gossip(&self, _: &GossipConfig) {
            *self.gossip.lock().unwrap() += 1;
        }
        fn routing_mesh(&self, _: &RoutingMesh) {
            *self.meshes.lock().unwrap() += 1;
        }
    }

    /// Log lines, captured.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn reply(assigned_tasks: Vec<u8>) -> HeartbeatResponse {
        HeartbeatResponse {
            assigned_tasks,
            gossip: encode_gossip(&GossipConfig::default()).unwrap(),
            routing_mesh: encode_mesh(&RoutingMesh::default()).unwrap(),
            task_files: encode_files(&TaskFiles::default()).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn an_undecodable_assignment_leaves_the_nodes_tasks_running_and_is_logged() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let runner = Recorder::default();
        tracing::subscriber::with_default(subscriber, || {
            for mangled in [Vec::new(), vec![0xff; 7]] {
                assert!(
                    follow_reply(
                        &runner,
                        &reply(mangled),
                        &mut FollowedMesh::default(),
                        &mut None,
                        &MeshUpdates::default(),
                    )
                    .is_none()
                );
            }
        });
        assert!(
            runner.reconciled.lock().unwrap().is_empty(),
            "the runner was told to follow an assignment nobody could read"
        );
        assert_eq!(
            *runner.gossip.lock().unwrap(),
            2,
            "the other payloads still count"
        );
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            logs.matches("bad task assignments from the leader").count(),
            2,
            "{logs}"
        );
        assert!(logs.contains("undecodable task assignments"), "{logs}");
    }

    #[test]
    fn an_assignment_of_no_tasks_is_followed() {
        let runner = Recorder::default();
        let assigned = follow_reply(
            &runner,
            &reply(encode_tasks(&[]).unwrap()),
            &mut FollowedMesh::default(),
            &mut None,
            &MeshUpdates::default(),
        );
        assert_eq!(assigned, Some((Vec::new(), TaskFiles::default())));
    }

    #[test]
    fn a_routing_mesh_is_followed_when_it_comes_and_kept_when_only_its_digest_does() {
        let runner = Recorder::default();
        let mesh = encode_mesh(&RoutingMesh::default()).unwrap();
        let with_mesh = HeartbeatResponse {
            routing_mesh_digest: mesh_digest(&mesh),
            ..reply(encode_tasks(&[]).unwrap())
        };
        let mut followed = FollowedMesh::default();
        assert!(
            follow_reply(
                &runner,
                &with_mesh,
                &mut followed,
                &mut None,
                &MeshUpdates::default()
            )
            .is_some()
        );
        assert_eq!(*runner.meshes.lock().unwrap(), 1);
        assert_eq!(
            followed.digest,
            mesh_digest(&mesh),
            "the digest of the mesh followed"
        );
        // The leader left it out: the same mesh, the runner is not told again.
        let without = HeartbeatResponse {
            routing_mesh: Vec::new(),
            ..with_mesh.clone()
        };
        assert!(
            follow_reply(
                &runner,
                &without,
                &mut followed,
                &mut None,
                &MeshUpdates::default()
            )
            .is_some()
        );
        assert_eq!(*runner.meshes.lock().unwrap(), 1);
        // Left out under another digest (never sent so): nothing to follow, and the next
        // beat asks for it whole.
        let other = HeartbeatResponse {
            routing_mesh_digest: vec![1; 32],
            ..without
        };
        assert!(
            follow_reply(
                &runner,
                &other,
                &mut followed,
                &mut None,
                &MeshUpdates::default()
            )
            .is_some()
        );
        assert_eq!(*runner.meshes.lock().unwrap(), 1);
        assert!(followed.digest.is_empty() && followed.mesh.is_none());
    }

    #[test]
    fn assignments_are_kept_when_the_leader_says_so_under_their_token() {
        let runner = Recorder::default();
        let mut task = crate::orchestrator::fixture::Sim::new(1);
        task.create("web", crate::orchestrator::fixture::replicated("web", 1));
        task.settle();
        let tasks: Vec<Task> = task.state.tasks.values().cloned().collect();
        let full = HeartbeatResponse {
            assignments_token: vec![7; 16],
            ..reply(encode_tasks(&tasks).unwrap())
        };
        let mut kept = None;
        let first = follow_reply(
            &runner,
            &full,
            &mut FollowedMesh::default(),
            &mut kept,
            &MeshUpdates::default(),
        );
        assert_eq!(first.map(|(t, _)| t), Some(tasks.clone()));
        assert_eq!(kept.as_ref().map(|k| k.token.clone()), Some(vec![7; 16]));
        // Kept: no tasks on the wire, the node's own again (the files as sent now).
        let same = HeartbeatResponse {
            assigned_tasks: Vec::new(),
            assignments_kept: true,
            ..full.clone()
        };
        let again = follow_reply(
            &runner,
            &same,
            &mut FollowedMesh::default(),
            &mut kept,
            &MeshUpdates::default(),
        );
        assert_eq!(again, Some((tasks, TaskFiles::default())));
        // Kept under a token the node does not have: nothing followed, and the next beat
        // names none, so the leader sends them whole.
        let other = HeartbeatResponse {
            assignments_token: vec![8; 16],
            ..same
        };
        assert_eq!(
            follow_reply(
                &runner,
                &other,
                &mut FollowedMesh::default(),
                &mut kept,
                &MeshUpdates::default()
            ),
            None
        );
        assert!(kept.is_none());
    }

    #[test]
    fn a_routing_mesh_change_is_applied_to_the_mesh_followed_and_checked() {
        use crate::cluster::{mesh::ServiceVip, mesh_delta::MeshDelta};
        use crate::swarm::codec::encode_mesh_delta;
        let runner = Recorder::default();
        let updates = MeshUpdates::default();
        let old = RoutingMesh::default();
        let new = RoutingMesh {
            vips: vec![ServiceVip {
                network_id: "ingress".into(),
                addr: [10, 255, 0, 5].into(),
            }],
            node_addr: Some([10, 255, 0, 2].into()),
            ..RoutingMesh::default()
        };
        let digest = |m: &RoutingMesh| mesh_digest(&encode_mesh(m).unwrap());
        let mut followed = FollowedMesh::default();
        followed.follow(old.clone(), digest(&old));
        let change = HeartbeatResponse {
            routing_mesh: Vec::new(),
            routing_mesh_delta: encode_mesh_delta(&MeshDelta::between(&old, &new)).unwrap(),
            routing_mesh_digest: digest(&new),
            ..reply(encode_tasks(&[]).unwrap())
        };
        assert!(follow_reply(&runner, &change, &mut followed, &mut None, &updates).is_some());
        assert_eq!(followed.mesh.as_ref(), Some(&new));
        assert_eq!(followed.digest, digest(&new));
        assert_eq!(*runner.meshes.lock().unwrap(), 1);
        // A change that does not come out as the mesh named: not followed, and the next beat
        // names no mesh (the leader sends it whole).
        let mut again = FollowedMesh::default();
        again.follow(old.clone(), digest(&old));
        let wrong = HeartbeatResponse {
            routing_mesh_digest: vec![1; 32],
            ..change.clone()
        };
        assert!(follow_reply(&runner, &wrong, &mut again, &mut None, &updates).is_some());
        assert!(again.digest.is_empty() && again.mesh.is_none());
        // A change to no mesh at all: the same.
        let mut none = FollowedMesh::default();
        assert!(follow_reply(&runner, &change, &mut none, &mut None, &updates).is_some());
        assert!(none.digest.is_empty());
        assert_eq!(*runner.meshes.lock().unwrap(), 1, "neither was followed");
        let counts = updates.counts();
        assert_eq!((counts.whole, counts.changes, counts.refused), (0, 1, 2));
    }

    #[test]
    fn assignments_whose_files_do_not_decode_are_not_followed() {
        let runner = Recorder::default();
        let mut mangled = reply(encode_tasks(&[]).unwrap());
        mangled.task_files = Vec::new();
        assert_eq!(
            follow_reply(
                &runner,
                &mangled,
                &mut FollowedMesh::default(),
                &mut None,
                &MeshUpdates::default()
            ),
            None
        );
    }
}
