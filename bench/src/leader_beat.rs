//! What the leader pays per heartbeat, and per applied Raft write, as the swarm grows: 100
//! nodes and 100 vs 10,000 services (each with a VIP on an overlay network, two tasks Running,
//! every fourth publishing a port on `ingress`). In process: the state is built with the
//! leader's own allocator and orchestrator, the beat is answered with the leader's own
//! [`answer_beat`]; no Raft, no sockets.
//!
//! Rows (medians): a copy of the whole state (what each `Leader::state()` costs; the beat made
//! three before the answer was built under the read lock), the answer when the node's routing
//! mesh is kept (every beat but the first after a change), the first answer after a change
//! (the mesh built, encoded and digested), the first beats of all 100 nodes after a change,
//! and the whole state encoded as the state machine saves it after each applied batch. The
//! ratio column is 10,000 / 100 services: 1.0 is a cost that does not grow with the swarm.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use shoal_control::{
    api::HeartbeatRequest,
    cluster::{
        ClusterState, Command, CommandResponse, PortConfig, PortProtocol, PublishMode, TaskState,
        network::Network,
    },
    format,
    orchestrator::{Inputs, reconcile},
    swarm::{MeshCache, answer_beat},
};

use crate::scheduler::{new_service, node, spec};

const NODES: usize = 100;
const SIZES: [usize; 2] = [100, 10_000];
const ROUNDS: usize = 20;

pub fn run() -> anyhow::Result<()> {
    println!(
        "leader-beat: {NODES} nodes, services with a VIP and 2 tasks each, every 4th publishing"
    );
    let mut rows: Vec<(&str, Vec<Duration>)> = Vec::new();
    let mut sizes = Vec::new();
    for services in SIZES {
        let started = Instant::now();
        let state = swarm(services)?;
        println!(
            "built {services} services, {} tasks in {:.1} s",
            state.tasks.len(),
            started.elapsed().as_secs_f64()
        );
        let measured = measure(&state)?;
        sizes.push(measured.encoded_bytes);
        for (i, (label, time)) in measured.rows.into_iter().enumerate() {
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
    println!("whole state encoded: {} / {} bytes", sizes[0], sizes[1]);
    Ok(())
}

struct Measured {
    rows: Vec<(&'static str, Duration)>,
    encoded_bytes: usize,
}

fn measure(state: &ClusterState) -> anyhow::Result<Measured> {
    let beat = |node: usize, digest: Vec<u8>| HeartbeatRequest {
        node_id: node_id(node),
        routing_mesh_digest: digest,
        ..Default::default()
    };
    let meshes = MeshCache::default();
    let answer = |generation: u64, request: &HeartbeatRequest| {
        answer_beat(
            state,
            generation,
            &meshes,
            request,
            "127.0.0.1:2377".to_string(),
        )
        .context("answering a beat")
    };

    let clone = median(ROUNDS, || {
        let started = Instant::now();
        let copy = state.clone();
        let took = started.elapsed();
        drop(copy);
        Ok(took)
    })?;

    // The node follows the mesh already: the answer names it and leaves it out.
    let digest = answer(0, &beat(1, Vec::new()))?.routing_mesh_digest;
    let kept = median(ROUNDS * 10, || {
        let started = Instant::now();
        let reply = answer(0, &beat(1, digest.clone()))?;
        let took = started.elapsed();
        if !reply.routing_mesh.is_empty() || reply.assigned_tasks.is_empty() {
            bail!("a beat with the mesh kept carried it, or no task");
        }
        Ok(took)
    })?;

    // A change: the first beat builds the mesh again (the shared part and this node's).
    let mut generation = 0;
    let changed = median(ROUNDS, || {
        generation += 1;
        let started = Instant::now();
        let reply = answer(generation, &beat(1, digest.clone()))?;
        let took = started.elapsed();
        if reply.routing_mesh_digest != digest {
            bail!("the same state gave another mesh");
        }
        Ok(took)
    })?;

    // ... and every node's first beat after it.
    let all_nodes = median(5, || {
        generation += 1;
        let started = Instant::now();
        for node in 0..NODES {
            answer(generation, &beat(node, Vec::new()))?;
        }
        Ok(started.elapsed())
    })?;

    let mut encoded_bytes = 0;
    let encode = median(5, || {
        let started = Instant::now();
        let encoded = format::to_cbor(state).context("encoding the state")?;
        let took = started.elapsed();
        encoded_bytes = encoded.len();
        Ok(took)
    })?;

    Ok(Measured {
        rows: vec![
            (
                "state copied (each Leader::state(), 3 per beat before)",
                clone,
            ),
            ("beat answered, mesh kept", kept),
            ("beat answered, first after a change (mesh built)", changed),
            ("first beats of all 100 nodes after a change", all_nodes),
            ("whole state encoded (each applied Raft batch)", encode),
        ],
        encoded_bytes,
    })
}

/// A swarm of `services` services on an overlay network, placed and Running.
fn swarm(services: usize) -> anyhow::Result<ClusterState> {
    let mut state = ClusterState::default();
    for i in 0..NODES {
        let node = node(&node_id(i), i == 0)?;
        state.nodes.insert(node.id.clone(), node);
    }
    apply(
        &mut state,
        &Command::CreateNetwork(network("ingress", 0, true)?),
    )?;
    apply(
        &mut state,
        &Command::CreateNetwork(network("app", 1, false)?),
    )?;
    for i in 0..services {
        let mut spec = spec(&format!("svc{i:05}"), 2);
        spec.networks = vec!["app".to_string()];
        if i % 4 == 0 {
            spec.ports = vec![PortConfig {
                protocol: PortProtocol::Tcp,
                target: 80,
                published: 0,
                mode: PublishMode::Ingress,
                source: Default::default(),
            }];
        }
        apply(
            &mut state,
            &Command::CreateService(new_service(&format!("svc{i:05}"), spec)),
        )?;
    }
    let mut next_id = 0u64;
    for _ in 0..10 {
        let is_ready = |_: &str| true;
        let inputs = Inputs {
            state: &state,
            is_ready: &is_ready,
            now_ms: 1_000_000,
        };
        let commands = reconcile(&inputs, &mut || {
            next_id += 1;
            format!("task{next_id:06}")
        });
        if commands.is_empty() {
            break;
        }
        for command in &commands {
            apply(&mut state, command)?;
        }
        for task in state.tasks.values_mut() {
            if task.status.state == TaskState::Assigned {
                task.status.state = TaskState::Running;
            }
        }
    }
    let running = state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Running)
        .count();
    if running != services * 2 {
        bail!("{running} tasks running, expected {}", services * 2);
    }
    Ok(state)
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

fn apply(state: &mut ClusterState, command: &Command) -> anyhow::Result<()> {
    match state.apply(command) {
        CommandResponse::Ok => Ok(()),
        other => bail!("command refused: {other:?}"),
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
