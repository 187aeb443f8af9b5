//! docker-py (PyPI `docker`, installed by `scripts/setup.sh`) driving a 3-node swarm through
//! node1's `docker.sock`: swarm, nodes, networks, secrets, configs, services and tasks, each
//! answer checked against the shoal CLI and the published port (tests/docker_py/
//! drive_swarm.py, which this test runs with the cluster's sockets and addresses).

use std::{path::Path, process::Command};

use shoal_tests::{Cluster, agent::shoal_bin};

use crate::support::{docker_sock, stderr};

#[test]
fn docker_py_drives_a_shoal_swarm() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker_py/drive_swarm.py");
    let addresses: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.address.to_string())
        .collect();
    let out = Command::new("python3")
        .arg(&script)
        .env("SHOAL_DOCKER_SOCK", docker_sock(&cluster, 0))
        .env("SHOAL_WORKER_SOCK", docker_sock(&cluster, 2))
        .env("SHOAL_BIN", shoal_bin())
        .env("SHOAL_API_SOCK", cluster.nodes[0].socket())
        .env("SHOAL_CLIENT_NETNS", cluster.client_ns().path())
        .env("SHOAL_NODE_ADDRS", addresses.join(","))
        .output()
        .unwrap_or_else(|e| panic!("running python3 {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        stderr(&out),
        cluster.nodes[0].log_tail()
    );
    assert!(stdout.contains("docker-py: all steps passed"), "{stdout}");
}
