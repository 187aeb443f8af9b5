//! Overlay network management on a swarm: the ingress network from init, create with a chosen
//! or an allocated subnet, Docker's inspect shape, and refusals.

use shoal_tests::Cluster;

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
    let out = cluster.nodes[0].cli(&["network", "rm", "ingress"]);
    assert!(
        stderr(&out).contains("ingress network cannot be removed"),
        "{}",
        stderr(&out)
    );

    // --- 4. rm, then the name and subnet are free again
    let out = cluster.nodes[0].cli(&["network", "rm", "ngx_net"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ls = cluster.nodes[0].cli(&["network", "ls", "--format", "json"]);
    let names: Vec<serde_json::Value> = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(names.len(), 2, "{names:?}");
    let out = cluster.nodes[0].cli(&["network", "create", "--subnet", "10.10.19.0/24", "ngx_net"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
