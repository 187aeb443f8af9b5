//! What the leader pays per heartbeat, and a manager per applied Raft write, as the swarm
//! grows: 100 nodes and 100 vs 10,000 services (each with a VIP on an overlay network, two
//! tasks Running, every fourth publishing a port on `ingress`). In process, no Raft consensus
//! and no sockets: the swarm is built by applying the leader's own commands (allocator,
//! orchestrator) to a real state-machine store (redb in a temporary directory, sealed, as a
//! manager keeps it), and each beat is answered with the leader's own [`answer_beat`] under
//! the store's read lock, as `Leader::heartbeat` does.
//!
//! Rows (medians): a copy of the whole state (the snapshot builder's; the beat made three
//! before the answer was built under the read lock, and API calls one); the answer when the node's
//! routing mesh is kept (every beat but the first after a change), with the node's tasks
//! sent whole, and with them kept too (a steady beat: the node names the ones it has); the
//! first answer after a change (the mesh built, encoded and digested); the first beats of all
//! 100 nodes after a change, each getting the whole mesh; the orchestrator's pass on the
//! steady swarm (what the leader's tick ran every 250 ms); the tick when nothing was written
//! since (no pass), after one task report (a pass over that task's service) and after a
//! node's labels change (a pass over its tasks' services); one task report applied by the
//! store (its median and its mean, which carries the whole-state image the store saves now
//! and then) and the longest a reader waited for the read lock during those writes;
//! `service ls` answered; a service created (its VIP and published port allocated by the
//! store) and the orchestrator's tick that follows (its tasks placed and addressed); the
//! beats of all 100 nodes after a service create, each getting the mesh's change; and a
//! manager's restart: the store opened (its image loaded) and the entries after the image
//! replayed from the log. The ratio
//! column is 10,000 / 100 services: 1.0 is a cost that does not grow with the swarm.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::executor::block_on;
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageHelper,
    storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine},
};
use shoal_control::{
    allocator::address_tasks,
    api::HeartbeatRequest,
    cluster::{
        ClusterInfo, ClusterState, Command, CommandResponse, PortConfig, PortProtocol, PublishMode,
        TaskState, TaskStatus, network::Network,
    },
    orchestrator::Passes,
    raft::{
        TypeConfig,
        seal::SealKey,
        store::{self, StateMachineStore},
    },
    swarm::{MeshCache, answer_beat, service_to_api},
};

use crate::scheduler::{new_service, node, pass, spec};

const NODES: usize = 100;
const SIZES: [usize; 2] = [100, 10_000];
const ROUNDS: usize = 20;
/// Task reports applied one entry at a time, as a busy swarm's beats bring them (at least:
/// see the image interval where they are made).
const WRITES: usize = 512;
/// Entries per `apply` while the swarm is built (openraft applies up to 64 at a time).
const BATCH: usize = 64;

pub fn run() -> anyhow::Result<()> {
    println!(
        "leader-beat: {NODES} nodes, services with a VIP and 2 tasks each, every 4th publishing"
    );
    let mut rows: Vec<(&str, Vec<Duration>)> = Vec::new();
    for services in SIZES {
        let dir = ScratchDir::new()?;
        let started = Instant::now();
        let mut swarm = Swarm::new(&dir)?;
        swarm.build(services)?;
        println!(
            "built {services} services, {} tasks in {:.1} s",
            swarm.read(|state| state.tasks.len()),
            started.elapsed().as_secs_f64()
        );
        let mut measured = measure(&mut swarm)?;
        measured.extend(swarm.restart()?);
        for (i, (label, time)) in measured.into_iter().enumerate() {
            if rows.len() <= i {
                rows.push((label, Vec::new()));
            }
            rows[i].1.push(time);
        }
    }
    println!(
        "{:<58} {:>12} {:>12} {:>9}",
        "per beat / per write", "100 svcs", "10,000 svcs", "ratio"
    );
    for (label, times) in rows {
        println!(
            "{label:<58} {:>12} {:>12} {:>8.1}x",
            show(times[0]),
            show(times[1]),
            times[1].as_secs_f64() / times[0].as_secs_f64().max(1e-12)
        );
    }
    Ok(())
}

fn measure(swarm: &mut Swarm) -> anyhow::Result<Vec<(&'static str, Duration)>> {
    let clone = median(ROUNDS, || {
        let started = Instant::now();
        let copy = swarm.read(ClusterState::clone);
        let took = started.elapsed();
        drop(copy);
        Ok(took)
    })?;

    let meshes = MeshCache::default();
    let reader = swarm.store.reader();
    let answer = |generation: Option<u64>, node: usize, digest: Vec<u8>, token: Vec<u8>| {
        let request = HeartbeatRequest {
            node_id: node_id(node),
            routing_mesh_digest: digest,
            assignments_token: token,
            accepts_mesh_delta: true,
            ..Default::default()
        };
        reader.read_versioned(|state, current| {
            answer_beat(
                state,
                generation.unwrap_or(current.mesh),
                &meshes,
                &request,
                "127.0.0.1:2377".to_string(),
            )
            .context("answering a beat")
        })
    };

    // The node follows the mesh already: the answer names it and leaves it out. Its tasks
    // are sent whole: the node names no assignments (its first beat to this leader, or its
    // tasks changed since the last).
    let first = answer(None, 1, Vec::new(), Vec::new())?;
    let (digest, token) = (first.routing_mesh_digest, first.assignments_token);
    let kept = median(ROUNDS * 10, || {
        let started = Instant::now();
        let reply = answer(None, 1, digest.clone(), Vec::new())?;
        let took = started.elapsed();
        if !reply.routing_mesh.is_empty() || reply.assigned_tasks.is_empty() {
            bail!("a beat with the mesh kept carried it, or no task");
        }
        Ok(took)
    })?;
    // ... and the steady beat: the node names the assignments it has, none changed.
    let all_kept = median(ROUNDS * 10, || {
        let started = Instant::now();
        let reply = answer(None, 1, digest.clone(), token.clone())?;
        let took = started.elapsed();
        if !reply.routing_mesh.is_empty() || !reply.assignments_kept {
            bail!("a steady beat carried the mesh, or did not keep the assignments");
        }
        if !reply.assigned_tasks.is_empty() {
            bail!("kept assignments were sent");
        }
        Ok(took)
    })?;

    // A change (a generation the cache has not seen): the first beat builds the mesh again,
    // the shared part and this node's.
    let mut generation = u64::MAX / 2;
    let changed = median(ROUNDS, || {
        generation += 1;
        let started = Instant::now();
        let reply = answer(Some(generation), 1, digest.clone(), token.clone())?;
        let took = started.elapsed();
        if reply.routing_mesh_digest != digest {
            bail!("the first beat after a change named another mesh: the state did not change");
        }
        Ok(took)
    })?;

    // ... and every node's first beat after it: each node has its tasks (names them), and
    // gets the new mesh whole.
    let tokens = (0..NODES)
        .map(|node| Ok(answer(None, node, Vec::new(), Vec::new())?.assignments_token))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mesh_bytes = answer(None, 1, Vec::new(), Vec::new())?.routing_mesh.len();
    let all_nodes = median(5, || {
        generation += 1;
        let started = Instant::now();
        for (node, token) in tokens.iter().enumerate() {
            let reply = answer(Some(generation), node, Vec::new(), token.clone())?;
            if !reply.assignments_kept || reply.routing_mesh.is_empty() {
                bail!("a node's first beat after a change did not keep its tasks or got no mesh");
            }
        }
        Ok(started.elapsed())
    })?;

    // The orchestrator's tick (every 250 ms on the leader) on the steady swarm.
    let steady_pass = median(ROUNDS, || {
        let started = Instant::now();
        let commands = swarm.read(|state| pass(state, &mut 0));
        let took = started.elapsed();
        if !commands.is_empty() {
            bail!("the swarm is not steady: {} commands", commands.len());
        }
        Ok(took)
    })?;

    // The leader's tick as it runs now: a pass over the services the writes since the last
    // touched, none when nothing moved.
    let mut passes = Passes::default();
    let reader = swarm.store.reader();
    let tick = |passes: &mut Passes, new_id: &mut dyn FnMut() -> String| {
        reader.read_touched(|state, generations, touched| {
            // The leader asks each node's liveness; here every node is up.
            let down: BTreeSet<&str> = state
                .nodes
                .keys()
                .map(String::as_str)
                .filter(|_| false)
                .collect();
            let commands = passes.tick(state, generations.state, touched, &down, 1_000_000, new_id);
            addressed(state, commands)
        })
    };
    let mut no_new_task = || unreachable!("the swarm is steady: no task to create");
    if !tick(&mut passes, &mut no_new_task)?.is_empty() {
        bail!("the swarm is not steady");
    }
    let idle_tick = median(ROUNDS * 10, || {
        let started = Instant::now();
        let commands = tick(&mut passes, &mut no_new_task)?;
        let took = started.elapsed();
        if !commands.is_empty() {
            bail!("an idle tick had {} commands", commands.len());
        }
        Ok(took)
    })?;
    if passes.run() != 1 {
        bail!("{} passes ran, expected only the first", passes.run());
    }
    // One task reports (its state again): the next tick passes over its service alone.
    let some_tasks: Vec<(String, String, TaskStatus)> = swarm.read(|state| {
        state
            .tasks
            .values()
            .take(ROUNDS * 5)
            .map(|t| (t.node_id.clone(), t.id.clone(), t.status.clone()))
            .collect()
    });
    let mut reported = some_tasks.into_iter();
    let tick_after_report = median(ROUNDS * 5, || {
        let (node_id, id, status) = reported.next().context("tasks to report")?;
        let reports = vec![(id, status)];
        swarm.apply(vec![Command::ReportTasks { node_id, reports }])?;
        let started = Instant::now();
        let commands = tick(&mut passes, &mut no_new_task)?;
        let took = started.elapsed();
        if !commands.is_empty() || passes.passed() != 1 {
            bail!(
                "a report's tick passed over {} services, with {} commands",
                passes.passed(),
                commands.len()
            );
        }
        Ok(took)
    })?;

    // A node's labels change (`node update --label-add`): the next tick passes over the
    // services with tasks on that node (no constraint reads the label: nothing to do).
    let on_node = swarm.read(|state| {
        let services: BTreeSet<&String> = state
            .tasks
            .on_node(&node_id(1))
            .map(|t| &t.service_id)
            .collect();
        services.len()
    });
    let mut relabelled = 0;
    let tick_after_node_change = median(ROUNDS, || {
        relabelled += 1;
        swarm.apply(vec![Command::UpdateNode {
            id: node_id(1),
            availability: None,
            labels_add: vec![("bench".to_string(), relabelled.to_string())],
            labels_rm: Vec::new(),
        }])?;
        let started = Instant::now();
        let commands = tick(&mut passes, &mut no_new_task)?;
        let took = started.elapsed();
        if !commands.is_empty() || passes.passed() != on_node {
            bail!(
                "a node change's tick passed over {} services (expected the {on_node} with \
                 tasks on it), with {} commands",
                passes.passed(),
                commands.len()
            );
        }
        Ok(took)
    })?;

    // Task reports, one entry per apply: each task reports Running again (applied, a no-op
    // on the state, the cost of the write itself). As many as the store lets its image lag at
    // this size, so that the mean carries one image save per interval, as a long run's does.
    let image_bytes = swarm.read(|state| shoal_control::format::to_cbor(state).map(|c| c.len()))?;
    let interval = store::image_interval(image_bytes as u64) as usize;
    println!(
        "the state's image: {} KiB, saved every {interval} writes (snapshots every {}, besides)",
        image_bytes / 1024,
        store::SNAPSHOT_EVERY
    );
    let reports: Vec<Command> = swarm.read(|state| {
        state
            .tasks
            .values()
            .cycle()
            .take(WRITES.max(interval))
            .map(|task| Command::ReportTasks {
                node_id: task.node_id.clone(),
                reports: vec![(task.id.clone(), task.status.clone())],
            })
            .collect()
    });
    // Meanwhile a reader (a beat, the orchestrator) takes the read lock again and again: the
    // longest it waited is what a write made readers wait (the image's saves included).
    let writing = std::sync::atomic::AtomicBool::new(true);
    let reader = swarm.store.reader();
    let (writes, longest_read_wait) = std::thread::scope(|scope| {
        let waits = scope.spawn(|| {
            let mut longest = Duration::ZERO;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = Instant::now();
                reader.read(|_| ());
                longest = longest.max(asked.elapsed());
                std::thread::sleep(Duration::from_micros(100));
            }
            longest
        });
        let mut writes = Vec::with_capacity(reports.len());
        for report in reports {
            let started = Instant::now();
            if let Err(e) = swarm.apply(vec![report]) {
                writing.store(false, std::sync::atomic::Ordering::Relaxed);
                return Err(e);
            }
            writes.push(started.elapsed());
        }
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
        let longest = waits
            .join()
            .map_err(|_| anyhow::anyhow!("the reader panicked"))?;
        Ok((writes, longest))
    })?;
    let mut writes = writes;
    let mean = writes.iter().sum::<Duration>() / writes.len() as u32;
    writes.sort();

    // `service ls`: every service as the API shows it, with its running and desired tasks.
    let service_ls = median(ROUNDS, || {
        let started = Instant::now();
        let listed = swarm.read(|state| {
            state
                .services
                .values()
                .map(|s| service_to_api(s, state, 0))
                .filter(|info| info.running_tasks == 2)
                .count()
        });
        let took = started.elapsed();
        let services = swarm.read(|state| state.services.len());
        if listed != services {
            bail!("{listed} of {services} services listed with their 2 tasks running");
        }
        Ok(took)
    })?;

    // A service created: the store checks its name and allocates its published port and VIP.
    let mut created = 0;
    let create_service = median(ROUNDS, || {
        created += 1;
        let command = create(&format!("new{created:03}"), true);
        let started = Instant::now();
        swarm.apply(vec![command])?;
        Ok(started.elapsed())
    })?;

    // Those services' tasks placed and Running (not timed); then each new service's first
    // tick: its two tasks placed and given addresses on `app` and `ingress`.
    let mut next_task = 0u64;
    let mut new_task = || {
        next_task += 1;
        format!("placed{next_task:06}")
    };
    // Applies a tick's commands, the nodes' reports that the tasks run, and ticks until a
    // tick decides nothing: the next tick passes over what is written after this alone.
    let settle = |swarm: &mut Swarm,
                  passes: &mut Passes,
                  new_task: &mut dyn FnMut() -> String,
                  mut commands: Vec<Command>| {
        for _ in 0..5 {
            if commands.is_empty() {
                return Ok(());
            }
            swarm.apply(commands)?;
            let reports = swarm.read(running_reports);
            swarm.apply(reports)?;
            commands = tick(passes, new_task)?;
        }
        bail!("the orchestrator did not settle in 5 ticks")
    };
    let placements = tick(&mut passes, &mut new_task)?;
    settle(swarm, &mut passes, &mut new_task, placements)?;
    let tick_after_create = median(ROUNDS, || {
        created += 1;
        swarm.apply(vec![create(&format!("new{created:03}"), true)])?;
        let started = Instant::now();
        let commands = tick(&mut passes, &mut new_task)?;
        let took = started.elapsed();
        let addressed = placed_tasks(&commands)
            .filter(|t| t.networks.len() == 2 && !t.node_id.is_empty())
            .count();
        if addressed != 2 || passes.passed() != 1 {
            bail!(
                "a new service's tick passed over {} services and placed {addressed} tasks \
                 with both addresses, expected 1 and 2",
                passes.passed()
            );
        }
        settle(swarm, &mut passes, &mut new_task, commands)?;
        Ok(took)
    })?;

    // A change to the mesh for real: a service created that publishes a port (applied, not
    // timed); every node names the mesh and the tasks it has, and gets the change.
    let mut change_bytes = 0;
    let mesh_change = median(5, || {
        // What each node has now (the rows before placed tasks: its tasks' token moved).
        let told = (0..NODES)
            .map(|node| {
                let reply = answer(None, node, Vec::new(), Vec::new())?;
                Ok((reply.routing_mesh_digest, reply.assignments_token))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        created += 1;
        swarm.apply(vec![create(&format!("new{created:03}"), true)])?;
        let started = Instant::now();
        for (node, (digest, token)) in told.into_iter().enumerate() {
            let reply = answer(None, node, digest, token)?;
            if !reply.routing_mesh.is_empty() || reply.routing_mesh_delta.is_empty() {
                bail!("a node with the last mesh was not sent the change alone");
            }
            if !reply.assignments_kept {
                bail!("a node's tasks changed with a service created and not placed");
            }
            change_bytes = reply.routing_mesh_delta.len();
        }
        Ok(started.elapsed())
    })?;
    println!(
        "a service created: the change as a node gets it: {change_bytes} bytes (the whole \
         mesh: {} KiB)",
        mesh_bytes / 1024
    );

    Ok(vec![
        (
            "state copied (the snapshot builder's; API calls' before)",
            clone,
        ),
        ("beat answered, mesh kept, tasks sent", kept),
        ("beat answered, mesh and tasks kept", all_kept),
        ("beat answered, first after a change (mesh built)", changed),
        (
            "first beats of all 100 nodes after a change (whole mesh)",
            all_nodes,
        ),
        (
            "orchestrator pass, nothing to do (each 250 ms tick before)",
            steady_pass,
        ),
        (
            "orchestrator tick, nothing changed (pass skipped)",
            idle_tick,
        ),
        (
            "orchestrator tick after a task report (its service passed)",
            tick_after_report,
        ),
        (
            "orchestrator tick after a node's labels change",
            tick_after_node_change,
        ),
        (
            "task report applied by the store, median",
            writes[writes.len() / 2],
        ),
        ("task report applied by the store, mean", mean),
        (
            "longest read-lock wait of a reader during those writes",
            longest_read_wait,
        ),
        (
            "service ls answered (every service with its tasks)",
            service_ls,
        ),
        (
            "service created by the store (VIP and published port allocated)",
            create_service,
        ),
        (
            "orchestrator tick after a service create (2 tasks placed)",
            tick_after_create,
        ),
        (
            "beats of all 100 nodes after a service create (the change)",
            mesh_change,
        ),
    ])
}

/// `commands` with the tasks they create given their addresses, as the leader's tick does
/// after each pass; every one must get them.
fn addressed(state: &ClusterState, mut commands: Vec<Command>) -> anyhow::Result<Vec<Command>> {
    for command in &mut commands {
        if let Command::PutTasks(tasks) = command
            && let Some((id, error)) = address_tasks(state, tasks).first()
        {
            bail!("task {id} got no address: {error}");
        }
    }
    Ok(commands)
}

/// The tasks `commands` put in the store.
fn placed_tasks(commands: &[Command]) -> impl Iterator<Item = &shoal_control::cluster::Task> {
    commands.iter().flat_map(|c| match c {
        Command::PutTasks(tasks) => tasks.as_slice(),
        _ => &[],
    })
}

/// `service create` of `name` with two replicas and a VIP on `app`; `publish`: port 80
/// published on the routing mesh too (a port the allocator picks).
fn create(name: &str, publish: bool) -> Command {
    let mut spec = spec(name, 2);
    spec.networks = vec!["app".to_string()];
    if publish {
        spec.ports = vec![PortConfig {
            protocol: PortProtocol::Tcp,
            target: 80,
            published: 0,
            mode: PublishMode::Ingress,
            source: Default::default(),
        }];
    }
    Command::CreateService(new_service(name, spec))
}

/// A swarm in a manager's state-machine store, written through its `apply`.
struct Swarm {
    store: StateMachineStore,
    next_index: u64,
    /// Every entry applied, for the log a restart replays ([`Swarm::restart`]).
    applied: Vec<Entry<TypeConfig>>,
    path: PathBuf,
    dek: SealKey,
}

impl Swarm {
    fn new(dir: &ScratchDir) -> anyhow::Result<Swarm> {
        let path = dir.0.join("raft.redb");
        let dek = SealKey::generate();
        let (_log, store) = store::open(&path, dek.clone())?;
        Ok(Swarm {
            store,
            next_index: 1,
            applied: Vec::new(),
            path,
            dek,
        })
    }

    /// A manager restarted: its store opened (the saved image read, opened and decoded), and
    /// then Raft's start (the committed entries after the image read from the log and
    /// applied). The log is given the entries after the image first, as a manager's holds
    /// them (not timed). Consumes the swarm: its store is closed first.
    fn restart(self) -> anyhow::Result<Vec<(&'static str, Duration)>> {
        let Swarm {
            store,
            applied,
            path,
            dek,
            ..
        } = self;
        let before = store.cluster_state();
        drop(store);
        let replayed = {
            let (mut log, mut sm) = store::open(&path, dek.clone())?;
            let (image_at, _) = block_on(sm.applied_state())?;
            let after: Vec<Entry<TypeConfig>> = applied
                .into_iter()
                .filter(|entry| Some(entry.log_id) > image_at)
                .collect();
            let last = after.last().map(|entry| entry.log_id);
            block_on(log.blocking_append(after.iter().cloned()))?;
            block_on(log.save_committed(last))?;
            // Raft purges the log only up to a snapshot, which saved the image too (here: a
            // snapshot of the image itself, then the log purged up to it).
            if let Some(image_at) = image_at {
                let mut builder = block_on(sm.get_snapshot_builder());
                block_on(builder.build_snapshot())?;
                block_on(log.purge(image_at))?;
            }
            after.len()
        };
        let started = Instant::now();
        let (mut log, mut sm) = store::open(&path, dek)?;
        let opened = started.elapsed();
        let state = block_on(StorageHelper::new(&mut log, &mut sm).get_initial_state())?;
        let started_raft = started.elapsed();
        let (applied_to, _) = block_on(sm.applied_state())?;
        if applied_to != state.committed || sm.cluster_state() != before {
            bail!("the restart did not replay to the state before it");
        }
        println!("a restart: {replayed} entries after the saved image replayed");
        Ok(vec![
            ("restart: store opened (the image loaded)", opened),
            (
                "restart: and the entries after the image replayed",
                started_raft,
            ),
        ])
    }

    fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        self.store.reader().read(f)
    }

    /// Applies `commands` as one batch of entries; every one must be accepted.
    fn apply(&mut self, commands: Vec<Command>) -> anyhow::Result<()> {
        let entries: Vec<Entry<TypeConfig>> = commands
            .into_iter()
            .map(|command| {
                self.next_index += 1;
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), self.next_index),
                    payload: EntryPayload::Normal(command),
                }
            })
            .collect();
        self.applied.extend(entries.iter().cloned());
        for response in block_on(self.store.apply(entries))? {
            if response != CommandResponse::Ok {
                bail!("command refused: {response:?}");
            }
        }
        Ok(())
    }

    fn apply_batched(&mut self, commands: Vec<Command>) -> anyhow::Result<()> {
        for batch in commands.chunks(BATCH) {
            self.apply(batch.to_vec())?;
        }
        Ok(())
    }

    /// `services` services on an overlay network, placed by the orchestrator and Running.
    fn build(&mut self, services: usize) -> anyhow::Result<()> {
        self.apply(vec![Command::Init {
            cluster: ClusterInfo {
                id: "c".repeat(25),
                ca_cert_pem: String::new(),
                ca_key_pem: String::new(),
                worker_secret: "w".to_string(),
                manager_secret: "m".to_string(),
                default_addr_pools: vec!["10.0.0.0/8".to_string()],
                subnet_size: 24,
                heartbeat_period_ms: 5_000,
                created_at: 1_700_000_000,
                gossip_keys: Vec::new(),
                unlock_key: None,
                version: 1,
                updated_at_ms: 0,
            },
            node: node(&node_id(0), true)?,
        }])?;
        let nodes = (1..NODES)
            .map(|i| node(&node_id(i), false).map(Command::AddNode))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.apply_batched(nodes)?;
        self.apply(vec![
            Command::CreateNetwork(network("ingress", 0, true)?),
            Command::CreateNetwork(network("app", 1, false)?),
        ])?;
        let creates = (0..services)
            .map(|i| create(&format!("svc{i:05}"), i % 4 == 0))
            .collect();
        self.apply_batched(creates)?;
        let mut next_id = 0u64;
        for _ in 0..10 {
            let commands = self.read(|state| addressed(state, pass(state, &mut next_id)))?;
            if commands.is_empty() {
                break;
            }
            self.apply_batched(commands)?;
            let reports = self.read(running_reports);
            self.apply_batched(reports)?;
        }
        let running = self.read(|state| {
            state
                .tasks
                .values()
                .filter(|t| t.status.state == TaskState::Running)
                .count()
        });
        if running != services * 2 {
            bail!("{running} tasks running, expected {}", services * 2);
        }
        Ok(())
    }
}

/// Each node's report that its Assigned tasks run.
fn running_reports(state: &ClusterState) -> Vec<Command> {
    let mut by_node: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for task in state.tasks.values() {
        if task.status.state == TaskState::Assigned {
            let mut status = task.status.clone();
            status.state = TaskState::Running;
            by_node
                .entry(&task.node_id)
                .or_default()
                .push((task.id.clone(), status));
        }
    }
    by_node
        .into_iter()
        .map(|(node_id, reports)| Command::ReportTasks {
            node_id: node_id.to_string(),
            reports,
        })
        .collect()
}

fn network(id: &str, index: u8, ingress: bool) -> anyhow::Result<Network> {
    Ok(Network {
        id: id.to_string(),
        name: id.to_string(),
        driver: "overlay".to_string(),
        // A /14 holds 10,000 VIPs and 20,000 task addresses.
        subnet: format!("10.{}.0.0/14", 4 + 4 * index).parse()?,
        gateway: Ipv4Addr::new(10, 4 + 4 * index, 0, 1),
        vni: 4096 + u32::from(index),
        attachable: false,
        internal: false,
        ingress,
        created_at_ms: 1_000_000,
        labels: Default::default(),
        options: Default::default(),
    })
}

/// A directory of this run's, removed with everything in it when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<ScratchDir> {
        let path =
            std::env::temp_dir().join(format!("shoal-bench-leader-beat-{}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node_id(i: usize) -> String {
    format!("node{i:03}")
}

fn median(
    rounds: usize,
    mut once: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<Duration> {
    let mut times = (0..rounds)
        .map(|_| once())
        .collect::<anyhow::Result<Vec<_>>>()?;
    times.sort();
    Ok(times[rounds / 2])
}

fn show(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} us", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}
