//! Service VIPs, end to end on 3 nodes with `shoal whoami` backends: round robin per new flow
//! (TCP and UDP) across tasks on every node, long-lived flows kept on their backend, scales and
//! a dead node reaching the maps, orphaned flows reset, flows surviving an agent SIGKILL, and
//! dnsrr services reached without a VIP.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use shoal_tests::{
    Cluster, Cut,
    task_net::{http_from, http_get, tcp_connect},
    wait_until,
};

use crate::support::{
    Placed, create_whoami, ids, metric, new_connections, new_datagrams, ok, running, served_by,
    tally,
};

const PORT: u16 = 8080;

fn create_service(cluster: &Cluster, name: &str, extra: &[&str]) {
    create_whoami(cluster, name, PORT, extra);
}

/// The service's VIP on its first network, from `service inspect`.
fn vip_of(cluster: &Cluster, service: &str) -> Ipv4Addr {
    let inspect: Vec<serde_json::Value> =
        serde_json::from_str(&ok(cluster, 0, &["service", "inspect", service])).unwrap();
    let addr = inspect[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .unwrap_or_else(|| panic!("{service} has no VIP: {inspect:?}"));
    addr.split('/').next().unwrap().parse().unwrap()
}

/// Waits (at most `within`) until `n` new connections are answered by exactly `expected`.
fn wait_for_backends(netns: &Path, vip: SocketAddr, expected: &BTreeSet<String>, within: Duration) {
    wait_until(
        within,
        &format!("the VIP to balance over {expected:?}"),
        || {
            let answers = new_connections(netns, vip, expected.len() * 2)?;
            let seen: BTreeSet<String> = answers.into_iter().collect();
            if &seen == expected {
                Ok(())
            } else {
                Err(format!("answered by {seen:?}"))
            }
        },
    );
}

struct Scenario {
    cluster: Cluster,
    vip: SocketAddr,
    web: Vec<Placed>,
    client: PathBuf,
}

/// 3 nodes, network `ngx_net`, a 3-replica vip service `web` (spread over the nodes) and a
/// client task on node1, with the VIP balancing over all three. `web_flags` go to its creation.
fn scenario(web_flags: &[&str]) -> Scenario {
    let mut cluster = Cluster::build(3);
    for node in &mut cluster.nodes {
        node.start();
    }
    cluster.form_swarm(1);
    ok(
        &cluster,
        0,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.10.19.0/24",
            "ngx_net",
        ],
    );
    let web_flags = [&["--replicas", "3", "--network", "ngx_net"], web_flags].concat();
    create_service(&cluster, "web", &web_flags);
    create_service(
        &cluster,
        "client",
        &[
            "--network",
            "ngx_net",
            "--constraint",
            "node.hostname==node1",
        ],
    );
    let web = running(&cluster, "web", 3);
    let client = running(&cluster, "client", 1).remove(0).netns(&cluster);
    let vip = SocketAddr::new(vip_of(&cluster, "web").into(), PORT);
    wait_for_backends(&client, vip, &ids(&web), Duration::from_secs(5));
    Scenario {
        cluster,
        vip,
        web,
        client,
    }
}

#[test]
fn vip_round_robin_follows_the_service() {
    // --- 1. the tutorial's topology: 3 backends on 3 nodes, a client on node1
    let Scenario {
        cluster,
        vip,
        web,
        client,
    } = scenario(&[]);

    // --- 2. 300 new TCP connections spread evenly (±1) over the 3 backends; a ping answered
    let tcp = tally(&new_connections(&client, vip, 300).unwrap());
    assert_eq!(tcp.keys().cloned().collect::<BTreeSet<_>>(), ids(&web));
    for (task, n) in &tcp {
        assert!(
            (99..=101).contains(n),
            "TCP: {task} got {n} of 300: {tcp:?}"
        );
    }
    // A ping to the VIP is answered (by the client's own node, as IPVS's node answers it),
    // with a reply from the VIP.
    let ping = std::process::Command::new("nsenter")
        .arg(format!("--net={}", client.display()))
        .args(["--", "ping", "-n", "-c", "2", "-W", "3"])
        .arg(vip.ip().to_string())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.status.success(), "ping {}: {said}", vip.ip());
    assert!(
        said.contains(&format!("bytes from {}:", vip.ip())),
        "{said}"
    );
    assert!(said.contains("2 received"), "{said}");
    // A datagram to a port no backend listens on: the backend's port unreachable reaches the
    // client's connected socket (ECONNREFUSED) as if the VIP had sent it.
    let refused = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(5)\n\
         s.connect(('{}', 9999))\n\
         s.send(b'x')\n\
         try:\n\
         \x20   s.recv(100)\n\
         \x20   print('answered')\n\
         except ConnectionRefusedError:\n\
         \x20   print('refused')\n\
         except socket.timeout:\n\
         \x20   print('timeout')\n",
        vip.ip()
    );
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", client.display()))
        .args(["--", "python3", "-c", &refused])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.trim(),
        "refused",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same for UDP, one new flow per datagram.
    let udp = tally(&new_datagrams(&client, vip, 300).unwrap());
    assert_eq!(udp.keys().cloned().collect::<BTreeSet<_>>(), ids(&web));
    for (task, n) in &udp {
        assert!(
            (99..=101).contains(n),
            "UDP: {task} got {n} of 300: {udp:?}"
        );
    }
    // The client's node counted them.
    assert!(
        metric(
            &cluster,
            0,
            &format!("shoal_lb_vip_flows_total{{vip=\"{}\"}}", vip.ip())
        ) >= 600
    );

    // --- 3. a long-lived connection stays on its backend while new flows rotate
    let mut long_lived = tcp_connect(&client, vip).unwrap();
    let first = served_by(&http_get(&mut long_lived, "/").unwrap());
    for _ in 0..20 {
        new_connections(&client, vip, 1).unwrap();
        assert_eq!(served_by(&http_get(&mut long_lived, "/").unwrap()), first);
    }

    // --- 4. scale 3 -> 6: within 1 s of the tasks running, all six answer
    ok(&cluster, 0, &["service", "scale", "--detach", "web=6"]);
    let six = running(&cluster, "web", 6);
    wait_for_backends(&client, vip, &ids(&six), Duration::from_secs(1));

    // --- 5. scale 6 -> 2: within 1 s only the two left answer; flows of removed backends
    // are reset at once, flows of the ones that stay go on
    let mut per_backend: BTreeMap<String, TcpStream> = BTreeMap::new();
    while per_backend.len() < 6 {
        let mut stream = tcp_connect(&client, vip).unwrap();
        let who = served_by(&http_get(&mut stream, "/").unwrap());
        per_backend.entry(who).or_insert(stream);
    }
    ok(&cluster, 0, &["service", "scale", "--detach", "web=2"]);
    let two = running(&cluster, "web", 2);
    wait_for_stopped(&cluster, "web", 2);
    wait_for_backends(&client, vip, &ids(&two), Duration::from_secs(1));
    for (who, stream) in &mut per_backend {
        let answer = http_get(stream, "/");
        if ids(&two).contains(who) {
            assert_eq!(served_by(&answer.unwrap()), *who, "a kept backend's flow");
        } else {
            let err = answer.expect_err("a removed backend's flow must fail");
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe
                ),
                "a removed backend's flow must be reset, not hang: {err:?}"
            );
        }
    }
}

/// Waits until only `count` tasks of `service` still run (the others' processes are gone,
/// not just told to stop).
fn wait_for_stopped(cluster: &Cluster, service: &str, count: usize) {
    wait_until(
        Duration::from_secs(20),
        &format!("{service} down to {count} processes"),
        || {
            let out = ok(cluster, 0, &["service", "ps", "--format", "json", service]);
            let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
            let alive = tasks.iter().filter(|t| t["state"] == "running").count();
            if alive == count {
                Ok(())
            } else {
                Err(format!("{alive} running"))
            }
        },
    );
}

#[test]
fn vip_flows_survive_an_agent_sigkill_and_a_dead_node_leaves_the_backends() {
    let Scenario {
        mut cluster,
        vip,
        web,
        client,
    } = scenario(&[
        // One per node by rule, not by the spread alone: node3's task is cut below, and a node
        // whose heartbeat came late on a loaded machine would otherwise get none.
        "--replicas-max-per-node",
        "1",
    ]);
    let nodes: BTreeSet<usize> = web.iter().map(|t| t.node).collect();
    assert_eq!(nodes.len(), 3, "one web task per node: {web:?}");

    // --- 1. a connection open through the VIP
    let mut conn = tcp_connect(&client, vip).unwrap();
    let backend = served_by(&http_get(&mut conn, "/").unwrap());

    // --- 2. SIGKILL the client node's agent: the programs and maps stay, the flow goes on,
    // and new flows are still balanced
    cluster.nodes[0].kill();
    assert_eq!(served_by(&http_get(&mut conn, "/").unwrap()), backend);
    let while_down: BTreeSet<String> = new_connections(&client, vip, 6)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(while_down, ids(&web), "balancing with the agent down");

    // --- 3. restart it with a VIP flow table of another size: it re-adopts the other maps,
    // makes the new table with the old one's flows carried over, and swaps its programs in;
    // the flow goes on (without the carry-over its entries would be lost, and its next
    // segment reset)
    cluster.nodes[0].extra_args = ["--lb-flows", "65536", "--mesh-flows", "8192"]
        .map(String::from)
        .to_vec();
    cluster.nodes[0].start();
    wait_until(Duration::from_secs(10), "node1's agent to answer", || {
        cluster.nodes[0].try_info().map(|_| ())
    });
    let info = cluster.nodes[0].info();
    let capacities: Vec<(&str, u64)> = info["dataplane"]["flow_tables"]
        .as_array()
        .expect("flow tables")
        .iter()
        .filter_map(|t| Some((t["name"].as_str()?, t["capacity"].as_u64()?)))
        .collect();
    assert_eq!(
        capacities,
        [
            ("SHOAL_LB_FLOWS", 65_536),
            ("SHOAL_MESH_FLOWS", 8192),
            ("SHOAL_MESH_UNCONFIRMED", 65_536),
            ("SHOAL_MESH_RETURNS", 4096)
        ],
        "{info}"
    );
    // Spread over the new agent's start-up (re-attaching every task's programs), paced by
    // new connections rather than sleeps.
    for _ in 0..5 {
        assert_eq!(served_by(&http_get(&mut conn, "/").unwrap()), backend);
        let _ = new_connections(&client, vip, 3);
    }
    wait_for_backends(&client, vip, &ids(&web), Duration::from_secs(10));
    assert_eq!(served_by(&http_get(&mut conn, "/").unwrap()), backend);
    // Once the last run's programs are all swapped out, the old tables go (the three
    // resized: the VIP flows, the mesh's flows and its answers').
    wait_until(
        Duration::from_secs(15),
        "node1's old flow tables to be released",
        || {
            let log = std::fs::read_to_string(cluster.nodes[0].log_path()).unwrap();
            match log
                .matches("the old table is no longer used, released")
                .count()
            {
                3 => Ok(()),
                n => Err(format!("{n} of 3 released")),
            }
        },
    );
    assert_eq!(served_by(&http_get(&mut conn, "/").unwrap()), backend);

    // --- 4. node3 dies (its link cut): its task leaves the round robin within seconds
    // (draining: the node may only be restarting its agent), every new connection still
    // succeeds, and once the drain is over (netdb::DOWN_DRAIN, 15 s) a connection to it is
    // reset by the load balancer (node3 itself can send nothing any more) instead of hanging
    let dead = web.iter().find(|t| t.node == 2).unwrap().id.clone();
    let mut to_dead = loop {
        let mut stream = tcp_connect(&client, vip).unwrap();
        if served_by(&http_get(&mut stream, "/").unwrap()) == dead {
            break stream;
        }
    };
    cluster.cut(2, Cut::LinkDown);
    wait_until(
        Duration::from_secs(15),
        "node3's task to leave the VIP",
        || {
            let answers = new_connections(&client, vip, 6)?;
            if answers.contains(&dead) {
                Err(format!("still answered by {dead}"))
            } else {
                Ok(())
            }
        },
    );
    // The request is retransmitted to the dead node until the drain ends; the first
    // retransmission after it meets the reset.
    to_dead
        .set_read_timeout(Some(Duration::from_secs(45)))
        .unwrap();
    let err = http_get(&mut to_dead, "/").expect_err("the dead backend's flow must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err:?}");
}

#[test]
fn a_dnsrr_service_has_no_vip_and_is_reached_directly() {
    let mut cluster = Cluster::build(2);
    for node in &mut cluster.nodes {
        node.start();
    }
    cluster.form_swarm(1);
    ok(
        &cluster,
        0,
        &["network", "create", "-d", "overlay", "rr_net"],
    );
    create_service(
        &cluster,
        "rr",
        &[
            "--replicas",
            "2",
            "--endpoint-mode",
            "dnsrr",
            "--network",
            "rr_net",
        ],
    );
    create_service(
        &cluster,
        "client",
        &[
            "--network",
            "rr_net",
            "--constraint",
            "node.hostname==node1",
        ],
    );
    let rr = running(&cluster, "rr", 2);
    let client = running(&cluster, "client", 1).remove(0);
    let inspect: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&cluster, 0, &["service", "inspect", "rr"])).unwrap();
    assert_eq!(inspect[0]["Endpoint"]["VirtualIPs"], serde_json::json!([]));
    // The name resolves to the task addresses, and each answers as itself.
    let resolved: BTreeSet<Ipv4Addr> = ok(
        &cluster,
        0,
        &["exec", &client.id, "--", "getent", "ahosts", "rr"],
    )
    .lines()
    .filter_map(|l| l.split_whitespace().next()?.parse().ok())
    .collect();
    let addresses: BTreeSet<Ipv4Addr> = rr.iter().map(|t| t.ip).collect();
    assert_eq!(resolved, addresses);
    for task in &rr {
        let answer = http_from(&client.netns(&cluster), task.addr(PORT)).unwrap();
        assert_eq!(served_by(&answer), task.id);
    }
    // The only VIP in node1's load balancer is the (vip-mode) client's own.
    let scrape = cluster.exec(0, "curl", &["-sf", "http://127.0.0.1:9323/metrics"]);
    let text = String::from_utf8_lossy(&scrape.stdout);
    let balanced: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("shoal_lb_vip_flows_total{vip=\""))
        .filter_map(|l| Some(l.split_once('"')?.0.to_string()))
        .collect();
    let client_vip = vip_of(&cluster, "client").to_string();
    assert_eq!(balanced, BTreeSet::from([client_vip]), "{text}");
}
