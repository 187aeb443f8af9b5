//! Zero-downtime service changes: how many requests fail while a service is rolled
//! (start-first, stop-first), scaled down, drained off a node, or grows tasks that bind late,
//! with shoal's stop order (withdraw, let it spread, drain the connections, then signal)
//! against an instant withdraw-and-kill, the "before" row: `SHOAL_INSTANT_STOP=1` in every
//! agent of a second, identical cluster, started in the same run. Scenario by scenario, each
//! runs on one cluster, then on the other.
//!
//! Each cluster: 3 nodes (1 manager), overlay network `zd_net`, a `client` task on node1 on
//! it. Each scenario creates a service of `shoal whoami --port 80` on `zd_net`, published on a
//! port of its own (nothing a scenario leaves behind can touch the next), waits until every
//! client target reaches every task, then runs clients through the change:
//! - from the outside client to every node's published port (the routing mesh), and from the
//!   client task to the service's VIP;
//! - each target twice: a new connection per request (`Connection: close`), and keep-alive
//!   connections that reconnect every [`KEEP_ALIVE_REQUESTS`] requests.
//!
//! The service always has a running replica, so every error is a failed request: connect
//! refused or timed out, reset, closed early, read timeout, non-200. A change is timed from
//! its (detached) command until the service's tasks have converged: the expected number
//! running, and every task they replace exited (not merely told to stop).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use shoal_tests::{Cluster, agent::shoal_bin, task_net::task_netns};

use crate::support::{cli, create_whoami, network_id, running, vip};

mod clients;
use clients::{Load, Tally, Target};

const NETWORK: &str = "zd_net";
const TARGET: u16 = 80;
/// Connect, read and write timeout of every request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests on a keep-alive connection before the client opens a new one (so a withdrawn
/// task's connections end by themselves, as a real client's do).
const KEEP_ALIVE_REQUESTS: u32 = 100;
/// Clients run this long before the change, and after it has converged.
const LEAD: Duration = Duration::from_secs(1);
const TAIL: Duration = Duration::from_secs(1);
/// Bound on a change converging, and on every target reaching every task.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
const REACH_TIMEOUT: Duration = Duration::from_secs(30);
/// Default pause between two requests of one client thread (`SHOAL_BENCH_ZD_PAUSE_MS`).
const PAUSE_MS: u64 = 10;
/// An answered request that took this long counts as slow: a SYN was retransmitted, or the
/// request stalled.
const SLOW: Duration = Duration::from_secs(1);
/// Failures shown per row, the earliest.
const SHOWN_ERRORS: usize = 5;
/// Task states after which a task holds nothing any more.
const TERMINAL: [&str; 5] = ["complete", "shutdown", "failed", "rejected", "orphaned"];
/// The node drained in the drain scenario.
const DRAINED: &str = "node3";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    StartFirst,
    StopFirst,
    Scale,
    Drain,
    SlowBinder,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::StartFirst,
        Scenario::StopFirst,
        Scenario::Scale,
        Scenario::Drain,
        Scenario::SlowBinder,
    ];

    /// Its name in `SHOAL_BENCH_ZD_SCENARIOS`, and its service's name.
    fn name(self) -> &'static str {
        match self {
            Scenario::StartFirst => "start-first",
            Scenario::StopFirst => "stop-first",
            Scenario::Scale => "scale",
            Scenario::Drain => "drain",
            Scenario::SlowBinder => "slow-binder",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Scenario::StartFirst => {
                "rolling update --force, 3 replicas, start-first, parallelism 1"
            }
            Scenario::StopFirst => "rolling update --force, 3 replicas, stop-first, parallelism 1",
            Scenario::Scale => "scale 3 -> 6, then 6 -> 2",
            Scenario::Drain => "node update --availability drain node3, 6 replicas (2 per node)",
            Scenario::SlowBinder => {
                "scale 1 -> 4 of a task that listens 2 s after it starts (sleep 2; exec whoami)"
            }
        }
    }

    /// The published port of its service: one per scenario.
    fn port(self) -> u16 {
        8081 + Scenario::ALL.iter().position(|s| *s == self).unwrap_or(0) as u16
    }

    fn replicas(self) -> usize {
        match self {
            Scenario::StartFirst | Scenario::StopFirst | Scenario::Scale => 3,
            Scenario::Drain => 6,
            Scenario::SlowBinder => 1,
        }
    }
}

pub fn run() -> anyhow::Result<()> {
    let scenarios = selected()?;
    let pause = Duration::from_millis(match std::env::var("SHOAL_BENCH_ZD_PAUSE_MS") {
        Ok(v) => v.parse().context("SHOAL_BENCH_ZD_PAUSE_MS")?,
        Err(_) => PAUSE_MS,
    });
    let load_before = loadavg();
    let sides = [
        Side::start("shoal", &[])?,
        Side::start("before (instant stop)", &[("SHOAL_INSTANT_STOP", "1")])?,
    ];
    println!(
        "zero-downtime: 2 clusters of 3 nodes (1 manager) side by side, the second with \
         SHOAL_INSTANT_STOP=1; clients: a new connection per request and keep-alive ({} \
         requests a connection) to every node's published port from outside and to the VIP \
         from a task on node1, 8 threads, {} ms between requests each, {} s timeout; {} CPUs, \
         load average {load_before}",
        KEEP_ALIVE_REQUESTS,
        pause.as_millis(),
        REQUEST_TIMEOUT.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for scenario in scenarios {
        let mut rows = Vec::new();
        for side in &sides {
            eprintln!("zero-downtime: {} on {}", scenario.name(), side.label);
            let row = side.run(scenario, pause).map_err(|e| {
                let e = e.context(format!("{} on {}", scenario.name(), side.label));
                match keep_logs(&sides) {
                    Ok(dir) => e.context(format!("agent logs copied to {}", dir.display())),
                    Err(copying) => e.context(format!("copying the agent logs: {copying:#}")),
                }
            })?;
            rows.push((side.label, row));
        }
        print_scenario(scenario, &rows);
    }
    drop(sides);
    println!("load average at the end: {}", loadavg());
    Ok(())
}

/// The scenarios `SHOAL_BENCH_ZD_SCENARIOS` names (comma separated), all by default.
fn selected() -> anyhow::Result<Vec<Scenario>> {
    let Ok(names) = std::env::var("SHOAL_BENCH_ZD_SCENARIOS") else {
        return Ok(Scenario::ALL.to_vec());
    };
    names
        .split(',')
        .map(|name| {
            Scenario::ALL
                .into_iter()
                .find(|s| s.name() == name.trim())
                .with_context(|| {
                    let all: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                    format!("unknown scenario {name:?}; scenarios: {}", all.join(","))
                })
        })
        .collect()
}

/// Copies every agent's log to a directory of its own (the clusters delete theirs when they
/// drop), for a failed run.
fn keep_logs(sides: &[Side]) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("shoal-bench-zd-{}", std::process::id()));
    for (i, side) in sides.iter().enumerate() {
        let to = dir.join(format!("cluster{}", i + 1));
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        for node in &side.cluster.nodes {
            let file = to.join(format!("{}.log", node.name));
            std::fs::copy(node.log_path(), &file)
                .with_context(|| format!("copying to {}", file.display()))?;
        }
    }
    Ok(dir)
}

/// `/proc/loadavg`'s first three numbers, for the report.
fn loadavg() -> String {
    let all = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    all.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// One of the two clusters.
struct Side {
    label: &'static str,
    cluster: Cluster,
    /// The client task's network namespace, where the VIP clients run.
    client: PathBuf,
    /// `zd_net`'s ID, to find the services' VIPs on it.
    network: String,
}

impl Side {
    fn start(label: &'static str, env: &[(&str, &str)]) -> anyhow::Result<Side> {
        let cluster = Cluster::start_with_env(3, env);
        cluster.form_swarm(1);
        cli(&cluster, 0, &["network", "create", NETWORK])?;
        let node1 = format!("node.hostname=={}", cluster.nodes[0].name);
        create_whoami(
            &cluster,
            Some(NETWORK),
            "client",
            1,
            "81",
            &["--constraint", &node1],
        )?;
        let task = running(&cluster, "client", 1)?.remove(0);
        let client = task_netns(&cluster.nodes[task.node].state_dir(), &task.id);
        let network = network_id(&cluster, NETWORK)?;
        Ok(Side {
            label,
            cluster,
            client,
            network,
        })
    }

    /// One scenario: its service created, the clients run through its changes, the service
    /// removed again.
    fn run(&self, scenario: Scenario, pause: Duration) -> anyhow::Result<Row> {
        let cluster = &self.cluster;
        let service = scenario.name();
        let port = scenario.port();
        self.create(scenario)?;
        let initial = converge(cluster, service, &Goal::count(scenario.replicas()))?;
        if scenario == Scenario::Drain {
            let mut per_node = BTreeMap::<&str, usize>::new();
            for t in &initial {
                *per_node.entry(t.node.as_str()).or_default() += 1;
            }
            ensure!(
                per_node.len() == 3 && per_node.values().all(|n| *n == 2),
                "{service}'s tasks are not 2 per node: {per_node:?}"
            );
        }
        let targets = self.targets(service, port)?;
        let names: BTreeSet<String> = initial.iter().map(|t| t.name.clone()).collect();
        for target in &targets {
            target.wait_reaches(&names).map_err(|e| {
                let states = tasks(cluster, service).map(|all| {
                    let states: Vec<String> = all.iter().map(Task::describe).collect();
                    states.join(", ")
                });
                e.context(format!("{service}'s tasks: {states:?}"))
            })?;
        }

        let steps = steps(scenario, &initial);
        let mut load = Load::start(&targets, pause);
        std::thread::sleep(LEAD);
        let mut took = Vec::new();
        for step in steps {
            let (started, at) = (Instant::now(), load.epoch.elapsed());
            let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
            cli(cluster, 0, &args)?;
            converge(cluster, service, &step.goal)
                .with_context(|| format!("after {}", step.label))?;
            took.push((step.label, started.elapsed(), at));
        }
        std::thread::sleep(TAIL);
        let tally = load.finish()?;

        if scenario == Scenario::Drain {
            cli(
                cluster,
                0,
                &["node", "update", "--availability", "active", DRAINED],
            )?;
        }
        cli(cluster, 0, &["service", "rm", service])?;
        Ok(Row { tally, took })
    }

    fn create(&self, scenario: Scenario) -> anyhow::Result<()> {
        let publish = format!("{}:{TARGET}", scenario.port());
        if scenario != Scenario::SlowBinder {
            let port = TARGET.to_string();
            let extra = ["-p", &publish];
            let replicas = scenario.replicas();
            return create_whoami(
                &self.cluster,
                Some(NETWORK),
                scenario.name(),
                replicas,
                &port,
                &extra,
            );
        }
        let script = format!(
            "sleep 2; exec {} whoami --port {TARGET}",
            shoal_bin().display()
        );
        let args = [
            "service",
            "create",
            "--detach",
            "--name",
            scenario.name(),
            "--replicas",
            "1",
            "--network",
            NETWORK,
            "-p",
            &publish,
            "--",
            "sh",
            "-c",
            &script,
        ];
        cli(&self.cluster, 0, &args).map(drop)
    }

    /// Every node's published port from the outside client, and the VIP from the client task.
    fn targets(&self, service: &str, port: u16) -> anyhow::Result<Vec<Target>> {
        let outside = PathBuf::from(self.cluster.client_ns().path());
        let mut targets: Vec<Target> = self
            .cluster
            .nodes
            .iter()
            .map(|node| Target {
                label: format!("{}:{port}", node.name),
                netns: outside.clone(),
                addr: SocketAddr::new(node.address.into(), port),
            })
            .collect();
        let vip = vip(&self.cluster, service, &self.network)?;
        targets.push(Target {
            label: "VIP".into(),
            netns: self.client.clone(),
            addr: SocketAddr::new(vip.into(), TARGET),
        });
        Ok(targets)
    }
}

/// A change: the CLI command, and the state it must reach.
struct Step {
    label: &'static str,
    args: Vec<String>,
    goal: Goal,
}

fn steps(scenario: Scenario, tasks: &[Task]) -> Vec<Step> {
    let service = scenario.name().to_string();
    let owned = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let scale = |n: usize| owned(&["service", "scale", "--detach", &format!("{service}={n}")]);
    let update = |order: &str| {
        let mut args = owned(&["service", "update", "--detach", "--force"]);
        args.extend(owned(&[
            "--update-order",
            order,
            "--update-parallelism",
            "1",
        ]));
        args.push(service.clone());
        args
    };
    let replaced = Goal {
        replaced: tasks.iter().map(|t| t.id.clone()).collect(),
        ..Goal::count(3)
    };
    match scenario {
        Scenario::StartFirst => vec![Step {
            label: "update",
            args: update("start-first"),
            goal: replaced,
        }],
        Scenario::StopFirst => vec![Step {
            label: "update",
            args: update("stop-first"),
            goal: replaced,
        }],
        Scenario::Scale => vec![
            Step {
                label: "3->6",
                args: scale(6),
                goal: Goal::count(6),
            },
            Step {
                label: "6->2",
                args: scale(2),
                goal: Goal::count(2),
            },
        ],
        Scenario::Drain => vec![Step {
            label: "drain",
            args: owned(&["node", "update", "--availability", "drain", DRAINED]),
            goal: Goal {
                off_node: Some(DRAINED),
                ..Goal::count(6)
            },
        }],
        Scenario::SlowBinder => vec![Step {
            label: "1->4",
            args: scale(4),
            goal: Goal::count(4),
        }],
    }
}

/// A task as `service ps --format json` shows it.
struct Task {
    id: String,
    /// `<service>.<slot>.<id>`, whoami's `Name:`.
    name: String,
    /// Its node's hostname.
    node: String,
    state: String,
    desired: String,
    /// Its addresses, for errors.
    addresses: String,
}

impl Task {
    /// `<name> <state>/<desired> on <node> <address>`, for errors.
    fn describe(&self) -> String {
        format!(
            "{} {}/{} on {} {}",
            self.name, self.state, self.desired, self.node, self.addresses
        )
    }
}

fn tasks(cluster: &Cluster, service: &str) -> anyhow::Result<Vec<Task>> {
    let out = cli(cluster, 0, &["service", "ps", "--format", "json", service])?;
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).context("parsing service ps")?;
    let field = |t: &serde_json::Value, key: &str| t[key].as_str().unwrap_or_default().to_string();
    Ok(all
        .iter()
        .map(|t| Task {
            id: field(t, "id"),
            name: field(t, "name"),
            node: field(t, "node_hostname"),
            state: field(t, "state"),
            desired: field(t, "desired_state"),
            addresses: t["networks"].as_array().map_or(String::new(), |networks| {
                let all: Vec<&str> = networks.iter().filter_map(|n| n["addr"].as_str()).collect();
                all.join(" ")
            }),
        })
        .collect())
}

/// What a converged service looks like: exactly `count` tasks not yet terminal, all running
/// and meant to, none of `replaced` and none on `off_node`.
struct Goal {
    count: usize,
    replaced: BTreeSet<String>,
    off_node: Option<&'static str>,
}

impl Goal {
    fn count(count: usize) -> Goal {
        Goal {
            count,
            replaced: BTreeSet::new(),
            off_node: None,
        }
    }

    fn reached(&self, tasks: &[Task]) -> bool {
        let live: Vec<&Task> = tasks
            .iter()
            .filter(|t| !TERMINAL.contains(&t.state.as_str()))
            .collect();
        live.len() == self.count
            && live.iter().all(|t| {
                t.state == "running"
                    && t.desired == "running"
                    && !self.replaced.contains(&t.id)
                    && self.off_node != Some(t.node.as_str())
            })
    }
}

/// Polls `service ps` until `goal` holds; the live tasks then.
fn converge(cluster: &Cluster, service: &str, goal: &Goal) -> anyhow::Result<Vec<Task>> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let all = tasks(cluster, service)?;
        if goal.reached(&all) {
            return Ok(all.into_iter().filter(|t| t.state == "running").collect());
        }
        if Instant::now() > deadline {
            let states: Vec<String> = all.iter().map(Task::describe).collect();
            bail!("{service} not converged after {CONVERGE_TIMEOUT:?}: {states:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One scenario on one cluster.
struct Row {
    tally: Tally,
    /// Per change: its label, how long it took, and when it started (since the load did).
    took: Vec<(&'static str, Duration, Duration)>,
}

fn print_scenario(scenario: Scenario, rows: &[(&str, Row)]) {
    println!();
    println!("{}: {}", scenario.name(), scenario.title());
    println!(
        "{:<24} {:>7} {:>6} {:>7} {:>5} {:>7} {:>6}  change took",
        "", "sent", "req/s", "failed", "slow", "longest", "tasks"
    );
    for (label, row) in rows {
        let took: Vec<String> = row
            .took
            .iter()
            .map(|(step, took, _)| format!("{step} {:.1} s", took.as_secs_f64()))
            .collect();
        println!(
            "{label:<24} {:>7} {:>6.0} {:>7} {:>5} {:>5.0}ms {:>6}  {}",
            row.tally.sent,
            row.tally.sent as f64 / row.tally.ran.as_secs_f64(),
            row.tally.failed,
            row.tally.slow,
            row.tally.longest.as_secs_f64() * 1000.0,
            row.tally.served.len(),
            took.join(", ")
        );
    }
    if let [(_, shoal), (_, before)] = rows {
        let took: Vec<String> = shoal
            .took
            .iter()
            .zip(&before.took)
            .map(|((step, a, _), (_, b, _))| {
                format!("{step} {:+.1} s", a.as_secs_f64() - b.as_secs_f64())
            })
            .collect();
        println!(
            "{:<24} {:>7} {:>6} {:>7} {:>5} {:>7} {:>6}  {}",
            "shoal - before",
            "",
            "",
            shoal.tally.failed as i64 - before.tally.failed as i64,
            shoal.tally.slow as i64 - before.tally.slow as i64,
            "",
            "",
            took.join(", ")
        );
    }
    for (label, row) in rows {
        let starts: Vec<String> = row
            .took
            .iter()
            .map(|(step, _, at)| format!("{step} at +{:.1} s", at.as_secs_f64()))
            .collect();
        let clients: Vec<String> = row
            .tally
            .clients
            .iter()
            .map(|(client, sent, failed)| format!("{client} {failed}/{sent}"))
            .collect();
        println!(
            "  {label}: {}; failed/sent: {}",
            starts.join(", "),
            clients.join(", ")
        );
        if row.tally.failed > 0 {
            let kinds: Vec<String> = row
                .tally
                .kinds
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            println!("    failures: {}", kinds.join(", "));
            for (at, what) in &row.tally.first {
                println!("    +{:.2} s {what}", at.as_secs_f64());
            }
        }
    }
}
