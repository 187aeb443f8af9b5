//! Overlay network management on a swarm: the ingress network from init, create with a chosen
//! or an allocated subnet, Docker's inspect shape, and refusals.

use std::process::Command;

use shoal_tests::Cluster;

use crate::support::{create_whoami, ok, running};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn inspect(cluster: &Cluster, name: &str) -> serde_json::Value {
    let out = cluster.nodes[1].cli(&["network", "inspect", name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter().next().unwrap()
}

#[test]
fn networks_are_created_allocated_inspected_and_removed() {
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);

    // --- 1. ingress exists from init: 10.255.0.0/16, VNI 4096
    let ingress = inspect(&cluster, "ingress");
    assert_eq!(ingress["Ingress"], true);
    assert_eq!(ingress["IPAM"]["Config"][0]["Subnet"], "10.255.0.0/16");
    assert_eq!(
        ingress["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "4096"
    );

    // --- 2. the Swarm tutorial's network, with its subnet; and one from the default pool
    let out = cluster.nodes[0].cli(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.10.19.0/24",
        "ngx_net",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.nodes[0].cli(&["network", "create", "--attachable", "backend"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ngx = inspect(&cluster, "ngx_net");
    assert_eq!(ngx["Scope"], "swarm");
    assert_eq!(ngx["Driver"], "overlay");
    assert_eq!(ngx["IPAM"]["Config"][0]["Subnet"], "10.10.19.0/24");
    assert_eq!(ngx["IPAM"]["Config"][0]["Gateway"], "10.10.19.1");
    let backend = inspect(&cluster, "backend");
    assert_eq!(backend["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");
    assert_eq!(backend["Attachable"], true);
    let vnis = [
        ngx["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
            .as_str()
            .unwrap()
            .to_string(),
        backend["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    assert_eq!(vnis, ["4097".to_string(), "4098".to_string()]);

    let ls = cluster.nodes[1].cli(&["network", "ls"]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    for name in ["ingress", "ngx_net", "backend"] {
        assert!(
            ls.lines()
                .any(|l| l.contains(name) && l.contains("overlay") && l.contains("swarm")),
            "{ls}"
        );
    }

    // --- 3. refusals: one line, non-zero, nothing created
    for (args, needle) in [
        (vec!["--subnet", "10.10.19.0/25", "overlapping"], "overlaps"),
        (
            vec![
                "--subnet",
                "10.20.0.0/24",
                "--gateway",
                "10.21.0.1",
                "badgw",
            ],
            "no matching subnet for gateway",
        ),
        (
            vec!["--subnet", "10.20.0.0/33", "badcidr"],
            "invalid subnet",
        ),
        (vec!["ngx_net"], "already exists"),
        (vec!["-d", "bridge", "local"], "not supported"),
    ] {
        let mut full = vec!["network", "create"];
        full.extend_from_slice(&args);
        let out = cluster.nodes[0].cli(&full);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    // (`network rm ingress`, refused only while a service publishes in ingress mode:
    // `ingress_recreate.rs`.)

    // --- 4. rm, then the name and subnet are free again
    let out = cluster.nodes[0].cli(&["network", "rm", "ngx_net"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ls = cluster.nodes[0].cli(&["network", "ls", "--format", "json"]);
    let names: Vec<serde_json::Value> = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(names.len(), 2, "{names:?}");
    let out = cluster.nodes[0].cli(&["network", "create", "--subnet", "10.10.19.0/24", "ngx_net"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Every IPv4 address (with its prefix) in the network namespace at `netns`.
fn ipv4_addresses(netns: &std::path::Path) -> Vec<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-o", "-4", "addr", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split(" inet ")
                .nth(1)?
                .split(' ')
                .next()
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn the_gateway_bridge_takes_a_subnet_that_is_free_on_the_host() {
    let mut cluster = Cluster::build(2);
    // node1's host already has Docker's docker_gwbridge on 172.18.0.0/16.
    let host = cluster.node_ns(0);
    host.ip(&[
        "link", "add", "dgw", "type", "veth", "peer", "name", "dgw-peer",
    ]);
    host.ip(&["addr", "add", "172.18.0.1/16", "dev", "dgw"]);
    host.ip(&["link", "set", "dgw", "up"]);
    let host_netns = std::path::PathBuf::from(host.path());
    // node2's operator chose one.
    cluster.nodes[1]
        .extra_env
        .push(("SHOAL_GATEWAY_SUBNET".into(), "10.200.0.0/24".into()));
    for node in &mut cluster.nodes {
        node.start();
    }
    cluster.form_swarm(1);
    ok(&cluster, 0, &["network", "create", "-d", "overlay", "app"]);
    create_whoami(
        &cluster,
        "gw",
        80,
        &["--mode", "global", "--network", "app"],
    );
    let tasks = running(&cluster, "gw", 2);
    for (node, prefix, subnet) in [
        (0, "172.19.", "172.19.0.0/16"),
        (1, "10.200.0.", "10.200.0.0/24"),
    ] {
        let task = tasks.iter().find(|t| t.node == node).unwrap();
        let addresses = ipv4_addresses(&task.netns(&cluster));
        assert!(
            addresses.iter().any(|a| a.starts_with(prefix)),
            "node{}: {addresses:?}",
            node + 1
        );
        let recorded =
            std::fs::read_to_string(cluster.nodes[node].state_dir().join("gateway-subnet"))
                .unwrap();
        assert_eq!(recorded.trim(), subnet);
    }
    // Docker's bridge on node1 is untouched.
    assert!(ipv4_addresses(&host_netns).contains(&"172.18.0.1/16".to_string()));
}
