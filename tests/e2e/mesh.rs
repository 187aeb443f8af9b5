//! Published ports end to end, on 3 nodes with the outside client on the underlay and the
//! Swarm tutorial's `--replicas 2 -p 8080:80` with `shoal whoami`: every node's address
//! serves the port (the node with no task too), new connections spread evenly over the tasks,
//! UDP, host mode on a global service, scaling (to 0: refused), a node's death,
//! `--publish-add/--publish-rm`, and published ports kept through an agent SIGKILL.

use std::{
    collections::BTreeSet,
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use shoal_tests::{
    Cluster, Cut,
    task_net::{http_from, http_get, tcp_connect, udp_echo_from},
    wait_until,
};

use crate::support::{
    Placed, create_whoami, ids, metric, new_connections, new_datagrams, ok, remote_socket, running,
    served_by, tally,
};

/// What whoami says the connection came from.
fn remote_addr(report: &str) -> Ipv4Addr {
    match remote_socket(report).ip() {
        std::net::IpAddr::V4(v4) => v4,
        other => panic!("IPv6 peer {other}"),
    }
}

fn node_addr(cluster: &Cluster, i: usize, port: u16) -> SocketAddr {
    SocketAddr::new(cluster.nodes[i].address.into(), port)
}

/// Who answers `count` new TCP connections from the outside client to `to`, in order.
fn from_client(cluster: &Cluster, to: SocketAddr, count: usize) -> Result<Vec<String>, String> {
    new_connections(Path::new(&cluster.client_ns().path()), to, count)
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
    create_whoami(
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

    // --- 2. what the task sees: the client's own address and port (shoal's default, beyond
    // Swarm), through every node: the one without a task answers through the tasks' nodes,
    // whose answers it gets back over `ingress`
    let netns = cluster.client_ns().path();
    for i in 0..3 {
        let mut stream = tcp_connect(Path::new(&netns), node_addr(&cluster, i, 8080)).unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip(), std::net::IpAddr::from(cluster.client_address()));
        for _ in 0..2 {
            let report = http_get(&mut stream, "/").unwrap();
            assert_eq!(remote_socket(&report), local, "node{}: {report}", i + 1);
        }
    }
    assert!(
        metric(&cluster, 2, "shoal_mesh_events_total{event=\"forwarded\"}") >= 300,
        "node3 forwarded its connections"
    );
    for task in &web {
        assert!(
            metric(
                &cluster,
                task.node,
                "shoal_mesh_events_total{event=\"returned\"}"
            ) > 0,
            "node{} sent answers back to the nodes that received their flows",
            task.node + 1
        );
    }

    // --- 3. every node has its endpoint on `ingress`, as Docker shows it, tasks or not
    for i in 0..3 {
        let inspect: Vec<serde_json::Value> =
            serde_json::from_str(&ok(&cluster, i, &["network", "inspect", "ingress"])).unwrap();
        let sbox = &inspect[0]["Containers"]["ingress-sbox"];
        assert_eq!(
            sbox["Name"],
            "ingress-endpoint",
            "node{}: {inspect:?}",
            i + 1
        );
        assert!(
            sbox["IPv4Address"].as_str().unwrap().starts_with("10.255."),
            "{sbox}"
        );
    }
}

/// Whether a new connection from the client to `to` is refused (what a port nobody serves
/// answers: the kernel's reset).
fn refused(cluster: &Cluster, to: SocketAddr) -> Result<(), String> {
    let netns = cluster.client_ns().path();
    match tcp_connect(Path::new(&netns), to) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!("{to}: {e}, not refused")),
        Ok(_) => Err(format!("{to} accepted a connection")),
    }
}

#[test]
fn udp_ports_and_host_mode_ports() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);

    // --- 1. UDP in ingress mode: 100 new flows to the node without a task spread 50/50
    // (not on 53: the task's embedded DNS has 127.0.0.11:53)
    create_whoami(
        &cluster,
        "echo",
        7000,
        &[
            "--replicas",
            "2",
            "--constraint",
            "node.hostname!=node3",
            "--publish",
            "published=5353,target=7000,protocol=udp",
        ],
    );
    let echo = running(&cluster, "echo", 2);
    let to = node_addr(&cluster, 2, 5353);
    wait_until(Duration::from_secs(10), "UDP 5353 to be served", || {
        let netns = cluster.client_ns().path();
        udp_echo_from(Path::new(&netns), to, "hi")
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let client = cluster.client_ns().path();
    let counts = tally(&new_datagrams(Path::new(&client), to, 100).unwrap());
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), ids(&echo));
    for (task, n) in &counts {
        assert!((49..=51).contains(n), "{task} took {n} of 100: {counts:?}");
    }
    // TCP on that port is not published: refused by node3's kernel.
    refused(&cluster, to).unwrap();
    // Path MTU discovery through the mesh: a datagram bigger than the ingress overlay takes
    // (1468 bytes over 1450, the underlay's 1500 minus VXLAN) is answered with ICMP
    // fragmentation needed, so the client's kernel learns the path MTU: its next send that
    // large fails with EMSGSIZE (IP_PMTUDISC_DO), and IP_MTU says 1450.
    let pmtud = format!(
        "import socket, time, errno\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO\n\
         s.connect(('{}', {}))\n\
         s.send(b'x' * 1440)\n\
         for _ in range(50):\n\
         \x20   time.sleep(0.1)\n\
         \x20   try:\n\
         \x20       s.send(b'x' * 1440)\n\
         \x20   except OSError as e:\n\
         \x20       print('EMSGSIZE' if e.errno == errno.EMSGSIZE else e)\n\
         \x20       break\n\
         print(s.getsockopt(socket.IPPROTO_IP, 14))  # IP_MTU\n",
        to.ip(),
        to.port()
    );
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            cluster.client_ns().name(),
            "python3",
            "-c",
            &pmtud,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        ["EMSGSIZE", "1450"],
        "{said}"
    );

    // --- 2. host mode on a global service kept off node3: each node answers with its own
    // task, and the task sees the client's own address.
    create_whoami(
        &cluster,
        "edge",
        81,
        &[
            "--mode",
            "global",
            "--constraint",
            "node.hostname!=node3",
            "--publish",
            "published=8090,target=81,mode=host",
        ],
    );
    let edge = running(&cluster, "edge", 2);
    for task in &edge {
        let to = node_addr(&cluster, task.node, 8090);
        wait_until(
            Duration::from_secs(10),
            &format!("{to} in host mode"),
            || from_client(&cluster, to, 1).map(|_| ()),
        );
        let netns = cluster.client_ns().path();
        for _ in 0..20 {
            let report = http_from(Path::new(&netns), to).unwrap();
            assert_eq!(
                served_by(&report),
                task.id,
                "{to} answered by another node's task"
            );
            assert_eq!(
                remote_addr(&report),
                cluster.client_address(),
                "source kept"
            );
        }
    }
    // --- 3. a node without a task of the service does not answer its port.
    refused(&cluster, node_addr(&cluster, 2, 8090)).unwrap();
}

#[test]
fn scaling_a_dead_node_and_publish_updates_reach_every_node() {
    let (cluster, _) = tutorial();

    // --- 1. scale to 3: every node's port serves the new set
    ok(&cluster, 0, &["service", "scale", "--detach", "my-web=3"]);
    let web = running(&cluster, "my-web", 3);
    wait_for_tasks(&cluster, 8080, &ids(&web), Duration::from_secs(5));

    // --- 2. node3 dies (its link cut): within seconds its task stops being picked, and
    // every connection to the live nodes succeeds
    let dead = web
        .iter()
        .find(|t| t.node == 2)
        .expect("a task on node3")
        .id
        .clone();
    cluster.cut(2, Cut::LinkDown);
    for i in 0..2 {
        let to = node_addr(&cluster, i, 8080);
        wait_until(
            Duration::from_secs(10),
            &format!("{to} to drop node3's task"),
            || {
                let answers = from_client(&cluster, to, 6)?;
                if answers.contains(&dead) {
                    Err(format!("node3's task still answers: {answers:?}"))
                } else {
                    Ok(())
                }
            },
        );
    }
    cluster.heal(2, Cut::LinkDown);

    // --- 3. --publish-add: a second port, without recreating the service
    ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--detach",
            "--publish-add",
            "8081:80",
            "my-web",
        ],
    );
    let to = node_addr(&cluster, 1, 8081);
    wait_until(Duration::from_secs(10), "8081 to be served", || {
        from_client(&cluster, to, 2).map(|_| ())
    });
    // The workers had the mesh: the leader sent them its changes, not the whole mesh again,
    // and each change gave the mesh the leader named (none refused).
    for i in 1..3 {
        let updates = |how: &str| {
            metric(
                &cluster,
                i,
                &format!("shoal_routing_mesh_updates_total{{how=\"{how}\"}}"),
            )
        };
        assert!(updates("change") > 0, "node{} got no change", i + 1);
        assert_eq!(updates("refused"), 0, "node{}", i + 1);
        assert!(
            updates("whole") > 0,
            "node{}: its first mesh came whole",
            i + 1
        );
    }

    // --- 4. scaled to 0: the port is still published, and with no task to take it the XDP
    // program refuses connections at once (a reset) instead of letting them hang
    ok(&cluster, 0, &["service", "scale", "--detach", "my-web=0"]);
    let to = node_addr(&cluster, 1, 8081);
    let no_backend = "shoal_mesh_events_total{event=\"no_backend\"}";
    // (A task still stopping refuses too, with its own kernel's reset: wait for the mesh's.)
    wait_until(
        Duration::from_secs(10),
        &format!("{to} refused by XDP"),
        || {
            refused(&cluster, to)?;
            match metric(&cluster, 1, no_backend) {
                0 => Err("refused, but not for lack of a task yet".to_string()),
                _ => Ok(()),
            }
        },
    );

    // --- 5. --publish-rm 80 (by target port, as Docker): 8080 and 8081 stop being served
    ok(
        &cluster,
        0,
        &[
            "service",
            "update",
            "--detach",
            "--publish-rm",
            "80",
            "my-web",
        ],
    );
    // (Refused by the node's kernel now: the mesh no longer counts them.)
    for (i, port) in [(0, 8080), (1, 8081)] {
        let to = node_addr(&cluster, i, port);
        wait_until(
            Duration::from_secs(10),
            &format!("{to} unpublished"),
            || {
                let before = metric(&cluster, i, no_backend);
                refused(&cluster, to)?;
                if metric(&cluster, i, no_backend) > before {
                    Err("still refused by the mesh".to_string())
                } else {
                    Ok(())
                }
            },
        );
    }
}

#[test]
fn published_ports_keep_working_while_the_manager_agent_is_killed() {
    let (mut cluster, web) = tutorial();
    // A connection held open across the kill.
    let netns = cluster.client_ns().path();
    let mut held = tcp_connect(Path::new(&netns), node_addr(&cluster, 0, 8080)).unwrap();
    let first = served_by(&http_get(&mut held, "/").unwrap());

    // --- 1. node1's agent (the only manager) SIGKILLed: its XDP link is pinned, so every
    // node's port is still served, node1's included, and the open connection goes on
    cluster.nodes[0].kill();
    for i in 0..3 {
        let answers = from_client(&cluster, node_addr(&cluster, i, 8080), 20)
            .unwrap_or_else(|e| panic!("managers down: {e}"));
        assert_eq!(answers.into_iter().collect::<BTreeSet<_>>(), ids(&web));
    }
    assert_eq!(served_by(&http_get(&mut held, "/").unwrap()), first);

    // --- 2. restarted: same again, from the pinned maps and the saved routing mesh
    cluster.nodes[0].start();
    for i in 0..3 {
        let answers = from_client(&cluster, node_addr(&cluster, i, 8080), 20)
            .unwrap_or_else(|e| panic!("after restart: {e}"));
        assert_eq!(answers.into_iter().collect::<BTreeSet<_>>(), ids(&web));
    }
    assert_eq!(served_by(&http_get(&mut held, "/").unwrap()), first);
    let link = cluster.exec(0, "ip", &["link", "show", "eth0"]);
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    assert_eq!(
        link.matches("prog/xdp").count(),
        1,
        "one XDP program: {link}"
    );
}
