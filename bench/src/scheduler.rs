//! The orchestrator's cost: placing a 1,000-replica service on 100 simulated nodes, and one
//! reconcile pass on the converged state (what the leader pays every 250 ms when nothing
//! changes). In-process and deterministic: no agents, no Raft; node reports are simulated by
//! marking assigned tasks Running.
//!
//! The floor: the same run with a constraint that every node satisfies, against a label
//! constraint only half the nodes satisfy (same placements, half the candidates): the ratio
//! says what filtering costs relative to choosing.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shoal_control::{
    cluster::{
        Availability, ClusterState, Command, CommandResponse, FailureAction, NodeRecord,
        RestartCondition, RestartPolicy, Role, Service, ServiceMode, ServiceSpec, TaskState,
        UpdateConfig, UpdateOrder,
    },
    orchestrator::{Inputs, parse_constraint, reconcile},
};

const NODES: usize = 100;
const REPLICAS: u64 = 1_000;
/// Runs per configuration; the median is reported.
const RUNS: usize = 5;
const STEADY_PASSES: usize = 200;

pub fn run() -> anyhow::Result<()> {
    println!("scheduler: {NODES} nodes, one service of {REPLICAS} replicas, spread placement");
    println!(
        "{:<28} {:>7} {:>7} {:>14} {:>14} {:>12}",
        "constraint", "placed", "passes", "in reconcile", "decisions/s", "converge"
    );
    let mut results = Vec::new();
    for (label, constraint) in [
        ("none", None),
        ("every node (floor)", Some("node.labels.bench==yes")),
        ("half the nodes (label)", Some("node.labels.half==yes")),
    ] {
        let mut runs = (0..RUNS)
            .map(|_| converge(constraint))
            .collect::<anyhow::Result<Vec<_>>>()?;
        runs.sort_by_key(|r| r.in_reconcile);
        let median = runs.swap_remove(RUNS / 2);
        println!(
            "{label:<28} {:>7} {:>7} {:>14} {:>14.0} {:>12}",
            median.placed,
            median.passes,
            format!("{:.2} ms", ms(median.in_reconcile)),
            median.decisions_per_second(),
            format!("{:.2} ms", ms(median.converge)),
        );
        results.push(median);
    }
    let (all, half) = (&results[1], &results[2]);
    println!(
        "half / every node, decisions/s: {:.2}",
        half.decisions_per_second() / all.decisions_per_second()
    );

    let (state, _) = converged_state(None)?;
    let mut next_id = u64::MAX / 2;
    let mut times = Vec::with_capacity(STEADY_PASSES);
    for _ in 0..STEADY_PASSES {
        let started = Instant::now();
        let commands = pass(&state, &mut next_id);
        times.push(started.elapsed());
        if !commands.is_empty() {
            bail!(
                "the converged state is not steady: {} commands",
                commands.len()
            );
        }
    }
    times.sort();
    println!(
        "steady-state pass ({} tasks, no changes): median {:.3} ms, p99 {:.3} ms",
        state.tasks.len(),
        ms(times[STEADY_PASSES / 2]),
        ms(times[STEADY_PASSES * 99 / 100]),
    );
    Ok(())
}

struct Converged {
    placed: usize,
    passes: usize,
    /// Time spent inside `reconcile` only.
    in_reconcile: Duration,
    /// Wall time of the whole loop: passes, applying commands, simulated node reports.
    converge: Duration,
}

impl Converged {
    fn decisions_per_second(&self) -> f64 {
        self.placed as f64 / self.in_reconcile.as_secs_f64().max(1e-9)
    }
}

fn converge(constraint: Option<&str>) -> anyhow::Result<Converged> {
    converged_state(constraint).map(|(_, result)| result)
}

/// Runs passes until one returns no command, applying them and starting assigned tasks.
fn converged_state(constraint: Option<&str>) -> anyhow::Result<(ClusterState, Converged)> {
    let mut state = cluster(constraint)?;
    let mut next_id = 0;
    let mut result = Converged {
        placed: 0,
        passes: 0,
        in_reconcile: Duration::ZERO,
        converge: Duration::ZERO,
    };
    let started = Instant::now();
    loop {
        let pass_started = Instant::now();
        let commands = pass(&state, &mut next_id);
        result.in_reconcile += pass_started.elapsed();
        result.passes += 1;
        if commands.is_empty() {
            break;
        }
        if result.passes > 20 {
            bail!("no convergence after 20 passes");
        }
        for command in &commands {
            if let Command::PutTasks(tasks) = command {
                result.placed += tasks
                    .iter()
                    .filter(|t| !t.node_id.is_empty() && !state.tasks.contains_key(&t.id))
                    .count();
            }
            if let CommandResponse::Rejected(why) = state.apply(command) {
                bail!("command rejected: {why}");
            }
        }
        state.tasks.update_each(|task| {
            if task.status.state == TaskState::Assigned {
                task.status.state = TaskState::Running;
            }
        });
    }
    result.converge = started.elapsed();
    let running = state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Running)
        .count();
    if running as u64 != REPLICAS {
        bail!("converged with {running} running tasks, expected {REPLICAS}");
    }
    Ok((state, result))
}

/// One reconcile pass (every node ready); task IDs continue from `next_id`.
pub fn pass(state: &ClusterState, next_id: &mut u64) -> Vec<Command> {
    let is_ready = |_: &str| true;
    let inputs = Inputs {
        state,
        is_ready: &is_ready,
        now_ms: 1_000_000,
    };
    let mut new_id = || {
        *next_id += 1;
        format!("task{next_id:06}")
    };
    reconcile(&inputs, &mut new_id).commands
}

fn cluster(constraint: Option<&str>) -> anyhow::Result<ClusterState> {
    let mut state = ClusterState::default();
    for i in 0..NODES {
        let mut node = node(&format!("node{i:03}"), i == 0)?;
        node.labels.insert("bench".to_string(), "yes".to_string());
        if i % 2 == 0 {
            node.labels.insert("half".to_string(), "yes".to_string());
        }
        state.nodes.insert(node.id.clone(), node);
    }
    let mut spec = spec("bench", REPLICAS);
    spec.constraints = constraint
        .map(parse_constraint)
        .transpose()
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .collect();
    let service = new_service("bench", spec);
    if let CommandResponse::Rejected(why) = state.apply(&Command::CreateService(service)) {
        bail!("service not created: {why}");
    }
    Ok(state)
}

/// A node of the simulated clusters (Ready and Active; the first a manager).
pub fn node(id: &str, manager: bool) -> anyhow::Result<NodeRecord> {
    Ok(NodeRecord {
        hostname: id.to_string(),
        id: id.to_string(),
        role: if manager { Role::Manager } else { Role::Worker },
        availability: Availability::Active,
        labels: Default::default(),
        addr: "127.0.0.1:2377".parse().context("address")?,
        data_path_addr: "127.0.0.1".parse().context("address")?,
        created_at: 0,
        resources: Default::default(),
    })
}

/// A replicated service's spec running `sleep infinity`, Swarm's defaults otherwise.
pub fn spec(name: &str, replicas: u64) -> ServiceSpec {
    let update = UpdateConfig {
        parallelism: 1,
        delay_ms: 0,
        failure_action: FailureAction::Pause,
        monitor_ms: 5_000,
        max_failure_ratio_milli: 0,
        order: UpdateOrder::StopFirst,
    };
    ServiceSpec {
        name: name.to_string(),
        command: vec!["sleep".to_string(), "infinity".to_string()],
        env: Vec::new(),
        mounts: Vec::new(),
        mode: ServiceMode::Replicated { replicas },
        constraints: Vec::new(),
        networks: Vec::new(),
        endpoint_mode: Default::default(),
        restart: RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 0,
            max_attempts: 0,
            window_ms: 0,
        },
        update,
        rollback: update,
        stop_grace_ms: 10_000,
        force_update: 0,
        ports: Vec::new(),
        labels: Default::default(),
        network_aliases: Default::default(),
        workdir: String::new(),
        user: String::new(),
        hostname: String::new(),
        stop_signal: String::new(),
        max_replicas_per_node: 0,
        secrets: Vec::new(),
        configs: Vec::new(),
        healthcheck: None,
        command_shape: None,
        resources: Default::default(),
    }
}

/// A service of `spec` as `service create` makes it (version 1, nothing allocated yet).
pub fn new_service(id: &str, spec: ServiceSpec) -> Service {
    Service {
        id: id.to_string(),
        spec,
        version: 1,
        previous_spec: None,
        update_status: None,
        virtual_ips: Vec::new(),
        endpoint_ports: Vec::new(),
        created_at_ms: 1_000_000,
        updated_at_ms: 1_000_000,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}
