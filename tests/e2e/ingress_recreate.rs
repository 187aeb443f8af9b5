//! The routing-mesh network removed and created again, as Docker allows: `network rm ingress`
//! refused while a service publishes in ingress mode and done once none does (every node's
//! ingress endpoint and sandbox go), ingress-mode ports refused while there is no ingress
//! network, `network create --ingress` (any name, one at most, never attachable), and the new
//! network serving published ports on every node with no agent restart; the same through the
//! docker CLI on the Engine API.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Output,
    time::Duration,
};

use shoal_tests::{Cluster, task_net::sandbox_netns, wait_until};

use crate::support::{
    create_whoami, docker, docker_ok, ids, network_id, new_connections, ok, running, stderr,
};

/// A failure with exactly one stderr line containing `needle`.
fn refused_with(out: &Output, needle: &str) {
    let text = stderr(out);
    assert!(!out.status.success(), "succeeded; expected {needle:?}");
    assert_eq!(text.lines().count(), 1, "not one line: {text:?}");
    assert!(text.contains(needle), "{needle:?} not in {text:?}");
}

fn network_names(cluster: &Cluster) -> BTreeSet<String> {
    let ls: Vec<serde_json::Value> =
        serde_json::from_str(&ok(cluster, 0, &["network", "ls", "--format", "json"])).unwrap();
    ls.iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until no node has a sandbox of `network_id` or a `shoal_ingress` interface left.
fn wait_for_no_ingress_endpoint(cluster: &Cluster, network_id: &str) {
    for (i, node) in cluster.nodes.iter().enumerate() {
        let sandbox = sandbox_netns(&node.state_dir(), network_id);
        wait_until(
            Duration::from_secs(20),
            &format!("node{} to take its ingress endpoint down", i + 1),
            || {
                let link = cluster.exec(i, "ip", &["link", "show", "shoal_ingress"]);
                match (sandbox.exists(), link.status.success()) {
                    (false, false) => Ok(()),
                    state => Err(format!("(sandbox, shoal_ingress) still there: {state:?}")),
                }
            },
        );
    }
}

#[test]
fn the_ingress_network_is_removed_and_created_again() {
    // --- 1. a 2-node swarm with a service published in ingress mode
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);
    let old_id = network_id(&cluster, "ingress");
    create_whoami(&cluster, "web", 80, &["--replicas", "2", "-p", "8080:80"]);

    // --- 2. `network rm ingress` is refused while the service depends on it
    refused_with(
        &cluster.nodes[0].cli(&["network", "rm", "ingress"]),
        "ingress network cannot be removed because service web depends on it",
    );
    assert!(network_names(&cluster).contains("ingress"));

    // --- 3. once the service is gone it is removed, and every node's endpoint goes with it
    ok(&cluster, 0, &["service", "rm", "web"]);
    assert_eq!(ok(&cluster, 0, &["network", "rm", "ingress"]), "ingress");
    assert!(!network_names(&cluster).contains("ingress"));
    wait_for_no_ingress_endpoint(&cluster, &old_id);

    // --- 4. an ingress-mode port needs an ingress network: refused, nothing created
    let bin = shoal_tests::agent::shoal_bin().display().to_string();
    let create_web = [
        "service",
        "create",
        "--detach",
        "--name",
        "web2",
        "--replicas",
        "2",
        "-p",
        "8081:80",
        "--",
        &bin,
        "whoami",
        "--port",
        "80",
    ];
    refused_with(
        &cluster.nodes[0].cli(&create_web),
        "service needs ingress network, but no ingress network is present",
    );
    assert_eq!(ok(&cluster, 0, &["service", "ls", "-q"]), "");

    // --- 5. a new one, with another name and subnet; only one, never attachable
    ok(
        &cluster,
        0,
        &[
            "network",
            "create",
            "--ingress",
            "--subnet",
            "10.11.0.0/16",
            "--gateway",
            "10.11.0.2",
            "my-ingress",
        ],
    );
    let new_id = network_id(&cluster, "my-ingress");
    refused_with(
        &cluster.nodes[0].cli(&["network", "create", "--ingress", "other"]),
        &format!("ingress network ({new_id}) is already present"),
    );
    refused_with(
        &cluster.nodes[0].cli(&["network", "create", "--ingress", "--attachable", "other"]),
        "ingress network cannot be attachable",
    );
    assert_eq!(
        network_names(&cluster),
        BTreeSet::from(["my-ingress".to_string()])
    );

    // --- 6. a service published on 8081 is served on every node over the new network, from
    // the outside client, and its tasks' ingress addresses are in 10.11.0.0/16
    ok(&cluster, 0, &create_web);
    let web2 = running(&cluster, "web2", 2);
    // 10.11.0.0/16
    let in_subnet = |ip: Ipv4Addr| ip.octets()[..2] == [10, 11];
    for task in &web2 {
        assert!(in_subnet(task.ip), "{task:?} not in 10.11.0.0/16");
    }
    let expected = ids(&web2);
    let client = cluster.client_ns().path();
    for i in 0..cluster.nodes.len() {
        let to = SocketAddr::new(cluster.nodes[i].address.into(), 8081);
        wait_until(
            Duration::from_secs(20),
            &format!("{to} to serve {expected:?}"),
            || {
                let seen: BTreeSet<String> = new_connections(Path::new(&client), to, 4)?
                    .into_iter()
                    .collect();
                if seen == expected {
                    Ok(())
                } else {
                    Err(format!("answered by {seen:?}"))
                }
            },
        );
        let inspect: Vec<serde_json::Value> =
            serde_json::from_str(&ok(&cluster, i, &["network", "inspect", "my-ingress"])).unwrap();
        let sbox = &inspect[0]["Containers"]["ingress-sbox"]["IPv4Address"];
        let addr: Ipv4Addr = sbox
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(in_subnet(addr), "node{}: {sbox}", i + 1);
    }

    // --- 7. the docker CLI: a second ingress refused; after removal, one created with Docker's
    // own flags, shown as the ingress network
    let out = docker(
        &cluster,
        0,
        &["network", "create", "--ingress", "--driver", "overlay", "x"],
    );
    assert!(
        !out.status.success(),
        "a second ingress network was created"
    );
    assert!(
        stderr(&out).contains("is already present"),
        "{}",
        stderr(&out)
    );
    ok(&cluster, 0, &["service", "rm", "web2"]);
    ok(&cluster, 0, &["network", "rm", "my-ingress"]);
    wait_for_no_ingress_endpoint(&cluster, &new_id);
    docker_ok(
        &cluster,
        0,
        &[
            "network",
            "create",
            "--ingress",
            "--driver",
            "overlay",
            "--subnet",
            "10.12.0.0/16",
            "docker-ingress",
        ],
    );
    let inspect: Vec<serde_json::Value> = serde_json::from_str(&docker_ok(
        &cluster,
        0,
        &["network", "inspect", "docker-ingress"],
    ))
    .unwrap();
    assert_eq!(inspect[0]["Ingress"], true, "{inspect:?}");
    assert_eq!(
        inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.12.0.0/16",
        "{inspect:?}"
    );
}
