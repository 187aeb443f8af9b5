//! Node-local clients of published ports: a process on a node (outside any task) reaches a
//! published port at `localhost:P`, `127.0.0.1:P` and the node's own address, balanced over
//! the service's tasks on every node, through the socket-level balancer (`shoal_connect4` on
//! the cgroup v2 root, acting in the node's own network namespace only); its socket's peer
//! stays the address it asked for (`shoal_getpeername4`).

use std::{collections::BTreeSet, time::Duration};

use shoal_tests::{Cluster, wait_until};

use crate::support::{create_whoami, ids, running, served_by};

/// `curl http://{host}:8080/` from node `i`'s own network namespace (no task's).
fn curl_from_node(cluster: &Cluster, i: usize, host: &str) -> Result<String, String> {
    let url = format!("http://{host}:8080/");
    let out = cluster.exec(i, "curl", &["-s", "--max-time", "5", &url]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("curl {url}: {}", out.status))
    }
}

#[test]
fn a_node_reaches_its_published_ports_at_localhost_and_its_own_address() {
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);
    create_whoami(
        &cluster,
        "web",
        80,
        &[
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            "-p",
            "8080:80",
        ],
    );
    let web = running(&cluster, "web", 2);
    let node1 = cluster.nodes[0].address.to_string();
    for host in ["127.0.0.1", "localhost", node1.as_str()] {
        wait_until(
            Duration::from_secs(10),
            &format!("{host}:8080 from node1"),
            || curl_from_node(&cluster, 0, host).map(|_| ()),
        );
        // Round robin over both tasks, the one on node1 and the one on node2.
        let seen: BTreeSet<String> = (0..6)
            .map(|_| served_by(&curl_from_node(&cluster, 0, host).unwrap()))
            .collect();
        assert_eq!(seen, ids(&web), "{host}:8080 from node1");
    }
    // The balanced socket's peer is what it connected to, not the task it reached.
    let peer = cluster.exec(
        0,
        "python3",
        &[
            "-c",
            "import socket\n\
             s = socket.create_connection(('127.0.0.1', 8080), 5)\n\
             print(s.getpeername())",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&peer.stdout).trim(),
        "('127.0.0.1', 8080)",
        "{}",
        String::from_utf8_lossy(&peer.stderr)
    );
    // A port nothing publishes stays the node's own business: refused there.
    let out = cluster.exec(
        0,
        "curl",
        &["-s", "--max-time", "5", "http://127.0.0.1:8081/"],
    );
    assert!(!out.status.success(), "nothing listens on 8081");
}
