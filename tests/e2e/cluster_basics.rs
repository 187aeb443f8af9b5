//! A 3-node cluster of real agents: they come up, keep their identity across SIGKILL, shut
//! down cleanly, and the fixture leaves nothing behind.

use std::{
    collections::HashSet, net::UdpSocket, os::unix::fs::PermissionsExt as _, path::Path,
    process::Command, time::Duration,
};

use shoal_dataplane::netns::run_in;
use shoal_tests::{Cluster, names::BPFFS_ROOT, wait_until};

fn pin_dir(node_id: &str) -> std::path::PathBuf {
    Path::new(BPFFS_ROOT).join("shoal").join(node_id)
}

fn xdp_rx_packets(info: &serde_json::Value) -> u64 {
    info["dataplane"]["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["hook"] == "xdp_underlay_rx")
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or(0)
}

#[test]
fn three_agents_come_up_and_answer_info() {
    let cluster = Cluster::start(3);
    let mut ids = HashSet::new();
    for node in &cluster.nodes {
        let info = node.info();
        assert_eq!(info["hostname"], node.name.as_str(), "{info}");
        // Only root talks to the agent: the socket is born 0600.
        let mode = std::fs::metadata(node.socket())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", node.socket().display());
        assert_eq!(info["swarm_state"], "inactive", "{info}");
        assert_eq!(
            info["advertise_addr"],
            format!("{}:2377", node.address),
            "{info}"
        );
        assert_eq!(info["data_path_addr"], node.address.to_string(), "{info}");
        let dataplane = &info["dataplane"];
        assert_eq!(dataplane["underlay_interface"], "eth0", "{info}");
        assert_eq!(dataplane["xdp_attached"], true, "{info}");
        // The flow tables: how full, at most, and what the kernel charges for them.
        let tables = dataplane["flow_tables"].as_array().expect("flow tables");
        let names: Vec<&str> = tables.iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                "SHOAL_LB_FLOWS",
                "SHOAL_MESH_FLOWS",
                "SHOAL_MESH_UNCONFIRMED",
                "SHOAL_MESH_RETURNS"
            ],
            "{info}"
        );
        assert_eq!(tables[0]["capacity"], 131_072, "{info}");
        for t in tables {
            assert!(
                t["memory_bytes"].as_u64().unwrap_or(0) > 0,
                "{t}: memory unknown"
            );
        }
        let id = info["node_id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 25, "node id {id}");
        assert!(
            pin_dir(&id).join("SHOAL_STATS").exists(),
            "map not pinned for {id}"
        );
        ids.insert(id);

        // The program really is on the node's underlay interface.
        let link = cluster.exec(
            cluster
                .nodes
                .iter()
                .position(|n| n.name == node.name)
                .unwrap(),
            "ip",
            &["link", "show", "eth0"],
        );
        let link = String::from_utf8_lossy(&link.stdout);
        assert!(link.contains("prog/xdp"), "{}: {link}", node.name);
    }
    assert_eq!(ids.len(), 3, "node IDs must be distinct: {ids:?}");

    // Each agent serves Prometheus metrics on its own 127.0.0.1:9323, from the live maps.
    let out = cluster.exec(0, "curl", &["-sf", "http://127.0.0.1:9323/metrics"]);
    assert!(out.status.success(), "metrics endpoint: {out:?}");
    let metrics = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "shoal_dataplane_packets_total{hook=\"xdp_underlay_rx\"}",
        "shoal_dataplane_bytes_total{hook=\"tc_egress\"} 0",
        "shoal_swarm_active 0",
    ] {
        assert!(metrics.contains(expected), "{expected} not in:\n{metrics}");
    }
}

#[test]
fn sigkilled_agent_restarts_as_the_same_node_and_keeps_its_counters() {
    let mut cluster = Cluster::start(2);
    let id_before = cluster.nodes[1].node_id();

    // --- 1. traffic from the outside client reaches node2's XDP counter
    let target = (cluster.nodes[1].address, 9);
    let client = cluster.client.path();
    run_in(Path::new(&client), || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..10 {
            socket.send_to(b"count me", target).unwrap();
        }
    })
    .unwrap();
    let counted = wait_until(Duration::from_secs(5), "node2 to count 10 frames", || {
        let n = xdp_rx_packets(&cluster.nodes[1].info());
        if n >= 10 {
            Ok(n)
        } else {
            Err(format!("{n} packets"))
        }
    });

    // --- 2. SIGKILL: the API goes away, the socket file and the pins stay
    cluster.nodes[1].kill();
    assert!(
        cluster.nodes[1].try_info().is_err(),
        "a killed agent still answers"
    );
    assert!(
        cluster.nodes[1].socket().exists(),
        "SIGKILL cannot remove the socket"
    );
    assert!(pin_dir(&id_before).exists(), "pins must survive the agent");

    // --- 3. restart: same node ID, stale socket replaced, pinned counters re-adopted
    cluster.nodes[1].start();
    let info = cluster.nodes[1].info();
    assert_eq!(
        info["node_id"],
        id_before.as_str(),
        "node ID changed across restart"
    );
    assert!(
        xdp_rx_packets(&info) >= counted,
        "counters were reset: {} < {counted}",
        xdp_rx_packets(&info)
    );
    // node1 was not disturbed.
    assert!(cluster.nodes[0].try_info().is_ok());
}

#[test]
fn sigterm_removes_the_socket_and_keeps_the_data_path_for_the_next_agent() {
    let mut cluster = Cluster::start(1);
    let id = cluster.nodes[0].node_id();
    let xdp = |cluster: &Cluster| {
        let link = cluster.exec(0, "ip", &["link", "show", "eth0"]);
        String::from_utf8_lossy(&link.stdout)
            .matches("prog/xdp")
            .count()
    };
    let status = cluster.nodes[0].stop().unwrap();
    assert!(status.success(), "agent exited with {status} on SIGTERM");
    assert!(!cluster.nodes[0].socket().exists(), "socket left behind");
    // The data path stays on purpose (published ports are served while the agent is down):
    // the pinned maps and the pinned XDP link, which a restarted agent swaps its program into.
    assert!(pin_dir(&id).exists());
    assert!(pin_dir(&id).join("xdp_link").exists());
    assert_eq!(xdp(&cluster), 1, "XDP stays attached");
    cluster.nodes[0].start();
    assert_eq!(
        xdp(&cluster),
        1,
        "the restarted agent's program replaced the old one"
    );
    // Removing the node's pins (as the fixture's teardown and `demo.sh down` do) detaches it.
    cluster.nodes[0].stop().unwrap();
    std::fs::remove_dir_all(pin_dir(&id)).unwrap();
    wait_until(Duration::from_secs(5), "XDP detached with its pin", || {
        if xdp(&cluster) == 0 {
            Ok(())
        } else {
            Err("still attached".to_string())
        }
    });
}

#[test]
fn a_second_agent_on_the_same_state_dir_is_refused() {
    let cluster = Cluster::start(1);
    let node = &cluster.nodes[0];
    let out = cluster
        .node_ns(0)
        .command(shoal_tests::agent::shoal_bin().to_str().unwrap())
        .arg("agent")
        .arg("--state-dir")
        .arg(node.state_dir())
        .arg("--socket")
        .arg(cluster.work_dir().join("other.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another shoal agent is already using state dir"),
        "{stderr}"
    );
    // The running agent is untouched.
    assert!(node.try_info().is_ok());
}

#[test]
fn teardown_leaves_nothing_behind() {
    let links_before = root_links();
    let cluster = Cluster::start(3);
    let prefix = cluster.prefix().to_string();
    let namespaces: Vec<String> = cluster.namespaces().iter().map(|s| s.to_string()).collect();
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.node_id()).collect();
    let pids: Vec<u32> = cluster.nodes.iter().filter_map(|n| n.pid()).collect();
    let work = cluster.work_dir();
    for id in &ids {
        assert!(pin_dir(id).exists());
    }

    drop(cluster);

    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for ns in &namespaces {
        assert!(!listed.contains(ns.as_str()), "namespace {ns} left behind");
    }
    assert!(!listed.contains(&format!("{prefix}-")), "{listed}");
    for id in &ids {
        assert!(!pin_dir(id).exists(), "pins of {id} left behind");
    }
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "agent {pid} still running"
        );
    }
    assert!(!work.exists(), "{} left behind", work.display());
    assert_eq!(
        root_links(),
        links_before,
        "links in the root namespace changed"
    );
}

/// Names of the links in the test's own (root) namespace.
fn root_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
        })
        .filter(|n| n.starts_with("shoal") || n.starts_with("veth") || n.starts_with("br"))
        .collect();
    names.sort();
    names
}

#[test]
fn version_shows_the_client_and_the_agent_build() {
    let mut cluster = Cluster::start(1);
    let out = cluster.nodes[0].cli(&["version", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The same binary on both sides: the same build.
    for field in ["Version", "GitCommit", "ApiVersion"] {
        assert_eq!(v["Client"][field], v["Server"][field], "{field}: {v}");
    }
    let commit = v["Server"]["GitCommit"].as_str().unwrap();
    assert!(commit == "unknown" || commit.len() >= 12, "{commit}");
    assert_eq!(v["Server"]["NodeID"], cluster.nodes[0].node_id().as_str());
    let table = String::from_utf8(cluster.nodes[0].cli(&["version"]).stdout).unwrap();
    assert!(table.starts_with("Client:\n Version:"), "{table}");
    assert!(table.contains("\nServer:\n Agent:\n  Version:"), "{table}");
    assert!(table.contains("(minimum version "), "{table}");

    // No agent: the client's part, then one error line, exit status 1.
    cluster.nodes[0].kill();
    let out = cluster.nodes[0].cli(&["version"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Client:\n"), "{stdout}");
    assert!(!stdout.contains("Server:"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach the shoal agent"), "{stderr}");
}
