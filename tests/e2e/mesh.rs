//! Published ports end to end, on 3 nodes with the outside client on the underlay and the
//! Swarm tutorial's `--replicas 2 -p 8080:80` with `shoal whoami`: every node's address
//! serves the port (the node with no task too), new connections spread evenly over the tasks,
//! UDP, host mode on a global service, scaling, a node's death, `--publish-add/--publish-rm`,
//! and published ports kept through an agent SIGKILL.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use shoal_tests::{
    Cluster, Cut,
    agent::shoal_bin,
    task_net::{http_from, udp_echo_from},
    wait_until,
};

use crate::support::{Placed, metric, ok, running, stderr};

/// Who answered: whoami's `Hostname:` line, which is the task ID.
fn served_by(report: &str) -> String {
    report
        .lines()
        .find_map(|l| l.strip_prefix("Hostname: "))
        .unwrap_or_else(|| panic!("no Hostname in {report:?}"))
        .to_string()
}

/// What whoami says the connection came from (`RemoteAddr: ip:port`).
fn remote_addr(report: &str) -> Ipv4Addr {
    let addr = report
        .lines()
        .find_map(|l| l.strip_prefix("RemoteAddr: "))
        .unwrap_or_else(|| panic!("no RemoteAddr in {report:?}"));
    addr.parse::<SocketAddr>()
        .map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => v4,
            other => panic!("IPv6 peer {other}"),
        })
        .unwrap_or_else(|e| panic!("bad RemoteAddr {addr:?}: {e}"))
}

fn create(cluster: &Cluster, name: &str, whoami_port: u16, extra: &[&str]) {
    let bin = shoal_bin().display().to_string();
    let port = whoami_port.to_string();
    let mut argv = vec!["service", "create", "--detach", "--name", name];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&["--", &bin, "whoami", "--port", &port]);
    ok(cluster, 0, &argv);
}

fn node_addr(cluster: &Cluster, i: usize, port: u16) -> SocketAddr {
    SocketAddr::new(cluster.nodes[i].address.into(), port)
}

/// Who answers `count` new TCP connections from the outside client to `to`, in order.
fn from_client(cluster: &Cluster, to: SocketAddr, count: usize) -> Result<Vec<String>, String> {
    let netns = cluster.client_ns().path();
    (0..count)
        .map(|i| {
            http_from(Path::new(&netns), to)
                .map(|r| served_by(&r))
                .map_err(|e| format!("connection {i} to {to}: {e}"))
        })
        .collect()
}

fn tally(answers: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts.entry(a.clone()).or_default() += 1;
    }
    counts
}

fn ids(tasks: &[Placed]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

/// Waits (at most `within`) until every node's port is answered by exactly `expected`.
fn wait_for_tasks(cluster: &Cluster, port: u16, expected: &BTreeSet<String>, within: Duration) {
    for i in 0..cluster.nodes.len() {
        let to = node_addr(cluster, i, port);
        wait_until(within, &format!("{to} to serve {expected:?}"), || {
            let seen: BTreeSet<String> = from_client(cluster, to, expected.len() * 2)?
                .into_iter()
                .collect();
            if &seen == expected {
                Ok(())
            } else {
                Err(format!("answered by {seen:?}"))
            }
        });
    }
}

/// A 3-node swarm (one manager) running the tutorial's `my-web`: 2 replicas, `-p 8080:80`.
fn tutorial() -> (Cluster, Vec<Placed>) {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    create(
        &cluster,
        "my-web",
        80,
        &["--replicas", "2", "-p", "8080:80"],
    );
    let web = running(&cluster, "my-web", 2);
    wait_for_tasks(&cluster, 8080, &ids(&web), Duration::from_secs(10));
    (cluster, web)
}

#[test]
fn every_node_serves_the_port_round_robin_over_the_tasks() {
    let (cluster, web) = tutorial();
    let nodes_with_tasks: BTreeSet<usize> = web.iter().map(|t| t.node).collect();
    assert_eq!(nodes_with_tasks.len(), 2, "one replica per node: {web:?}");

    // --- 1. 300 new connections to each node's 8080, the node without a task included:
    // all answered, evenly spread over the two tasks.
    for i in 0..3 {
        let to = node_addr(&cluster, i, 8080);
        let answers = from_client(&cluster, to, 300).unwrap_or_else(|e| panic!("{e}"));
        let counts = tally(&answers);
        assert_eq!(
            counts.keys().cloned().collect::<BTreeSet<_>>(),
            ids(&web),
            "{to}"
        );
        for (task, n) in &counts {
            assert!(
                (149..=151).contains(n),
                "{to}: {task} took {n} of 300: {counts:?}"
            );
        }
    }

    // --- 2. what the task sees: the receiving node's ingress address (Swarm's behaviour)
    let netns = cluster.client_ns().path();
    let report = http_from(Path::new(&netns), node_addr(&cluster, 2, 8080)).unwrap();
    let peer = remote_addr(&report);
    assert_eq!(
        peer.octets()[..2],
        [10, 255],
        "the backend sees an ingress address, got {peer}"
    );
    assert!(
        metric(&cluster, 2, "shoal_mesh_events_total{event=\"forwarded\"}") >= 300,
        "node3 forwarded its connections"
    );
}
