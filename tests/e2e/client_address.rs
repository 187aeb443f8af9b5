//! The client's own address through the routing mesh (moby#25526), on 3 nodes with the
//! outside client on the underlay: a task behind an ingress-mode port sees the client's
//! address and port whichever node the client asked, and the answers come from that node;
//! `source=snat` keeps Swarm's behaviour per port; the node the client asked, cut off
//! mid-connection, takes that connection with it while every other node goes on serving.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use shoal_tests::{
    Cluster, Cut,
    task_net::{http_from, http_get, in_netns, retry_interrupted, tcp_connect},
    wait_until,
};

use crate::support::{create_whoami, ok, remote_socket, running, served_by, stderr};

fn node_addr(cluster: &Cluster, i: usize, port: u16) -> SocketAddr {
    SocketAddr::new(cluster.nodes[i].address.into(), port)
}

/// Waits (at most 10 s) until node `i` serves `port` to the client.
fn wait_served(cluster: &Cluster, i: usize, port: u16) {
    let netns = cluster.client_ns().path();
    let to = node_addr(cluster, i, port);
    wait_until(Duration::from_secs(10), &format!("{to} served"), || {
        http_from(Path::new(&netns), to)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}

#[test]
fn tasks_see_the_client_unless_the_port_asks_for_source_nat() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    create_whoami(
        &cluster,
        "kept",
        80,
        &["-p", "8080:80", "-p", "8080:80/udp"],
    );
    create_whoami(
        &cluster,
        "natted",
        80,
        &["--publish", "published=8081,target=80,source=snat"],
    );
    let kept = running(&cluster, "kept", 1).remove(0);
    running(&cluster, "natted", 1);
    let netns = cluster.client_ns().path();
    let client = IpAddr::from(cluster.client_address());

    // --- 1. every node, the task's own and the two without it: the task sees the client's
    // address and port, over several requests of one connection (whose handshake and answers
    // came from the node the client asked, or it would not be open)
    for i in 0..3 {
        wait_served(&cluster, i, 8080);
        let mut stream = tcp_connect(Path::new(&netns), node_addr(&cluster, i, 8080)).unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip(), client);
        for _ in 0..3 {
            let report = http_get(&mut stream, "/").unwrap();
            assert_eq!(served_by(&report), kept.id);
            assert_eq!(remote_socket(&report), local, "node{}: {report}", i + 1);
        }
    }

    // --- 1b. UDP alike, from a server socket bound to 0.0.0.0 (which answers from its route's
    // address): the answer comes from the node asked, and the task saw the client's socket
    for i in 0..3 {
        let to = node_addr(&cluster, i, 8080);
        let socket = in_netns(Path::new(&netns), || UdpSocket::bind("0.0.0.0:0")).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let local = socket.local_addr().unwrap().port();
        let mut buf = [0u8; 2048];
        let (n, from) = wait_until(Duration::from_secs(10), &format!("UDP {to}"), || {
            socket.send_to(b"hi", to).map_err(|e| e.to_string())?;
            retry_interrupted(|| socket.recv_from(&mut buf)).map_err(|e| e.to_string())
        });
        assert_eq!(from, to, "node{}: the answer's source", i + 1);
        let report = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(
            remote_socket(&report),
            SocketAddr::new(client, local),
            "node{}: {report}",
            i + 1
        );
    }

    // --- 2. `source=snat`: the receiving node's ingress address, as Swarm does
    for i in 0..3 {
        wait_served(&cluster, i, 8081);
        let report = http_from(Path::new(&netns), node_addr(&cluster, i, 8081)).unwrap();
        let peer = remote_socket(&report).ip();
        assert_ne!(peer, client, "node{}: {report}", i + 1);
        assert!(
            matches!(peer, IpAddr::V4(v4) if v4.octets()[..2] == [10, 255]),
            "node{}: the task sees an ingress address, got {peer}",
            i + 1
        );
    }

    // --- 3. shown where the spec is, and refused where it cannot apply
    let inspect: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&cluster, 0, &["service", "inspect", "natted"])).unwrap();
    let ports = &inspect[0]["Spec"]["EndpointSpec"]["Ports"];
    assert_eq!(ports[0]["Source"], "snat", "{ports}");
    let inspect: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&cluster, 0, &["service", "inspect", "kept"])).unwrap();
    let ports = &inspect[0]["Spec"]["EndpointSpec"]["Ports"];
    assert!(ports[0].get("Source").is_none(), "the default: {ports}");
    for (publish, why) in [
        (
            "published=8082,target=80,mode=host,source=snat",
            "host mode always keeps",
        ),
        ("published=8082,target=80,source=dsr", "client or snat"),
    ] {
        let out = cluster.nodes[0].cli(&[
            "service",
            "create",
            "--detach",
            "--name",
            "bad",
            "--publish",
            publish,
            "--",
            "/bin/true",
        ]);
        assert!(!out.status.success(), "{publish} accepted");
        assert!(stderr(&out).contains(why), "{publish}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}

#[test]
fn the_node_the_client_asked_takes_its_connections_when_cut() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    create_whoami(&cluster, "kept", 80, &["-p", "8080:80"]);
    let task = running(&cluster, "kept", 1).remove(0);
    // The receiving node: one without the task, not the manager when there is a choice.
    let receiving = (1..3).find(|i| *i != task.node).unwrap();
    let other = (0..3).find(|i| *i != task.node && *i != receiving).unwrap();
    for i in 0..3 {
        wait_served(&cluster, i, 8080);
    }
    let netns = cluster.client_ns().path();
    let mut held = tcp_connect(Path::new(&netns), node_addr(&cluster, receiving, 8080)).unwrap();
    let local = held.local_addr().unwrap();
    assert_eq!(remote_socket(&http_get(&mut held, "/").unwrap()), local);

    // --- 1. cut off: the held connection's peer is that node, so it ends with it (no answer
    // on it), as with Swarm's source NAT. Every other node goes on serving, the client's
    // address kept.
    cluster.cut(receiving, Cut::LinkDown);
    assert!(
        http_get(&mut held, "/").is_err(),
        "a connection through a cut-off node answered"
    );
    for i in [task.node, other] {
        let mut stream = tcp_connect(Path::new(&netns), node_addr(&cluster, i, 8080)).unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(
            remote_socket(&http_get(&mut stream, "/").unwrap()),
            local,
            "node{}",
            i + 1
        );
    }

    // --- 2. back: it serves again, the client's address kept
    cluster.heal(receiving, Cut::LinkDown);
    wait_served(&cluster, receiving, 8080);
    let mut stream = tcp_connect(Path::new(&netns), node_addr(&cluster, receiving, 8080)).unwrap();
    let local = stream.local_addr().unwrap();
    assert_eq!(remote_socket(&http_get(&mut stream, "/").unwrap()), local);
}

/// A task answering its first datagram and then closing its UDP socket: every later datagram
/// gets its kernel's ICMP port unreachable.
const ANSWER_ONCE: &str = "import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 9999))
data, peer = s.recvfrom(100)
s.sendto(b'bye', peer)
s.close()
time.sleep(3600)
";

#[test]
fn a_tasks_port_unreachable_reaches_the_client_from_the_node_it_asked() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    for (name, publish) in [
        ("kept", "published=8085,target=9999,protocol=udp"),
        (
            "natted",
            "published=8086,target=9999,protocol=udp,source=snat",
        ),
    ] {
        ok(
            &cluster,
            0,
            &[
                "service",
                "create",
                "--detach",
                "--name",
                name,
                "--publish",
                publish,
                "--",
                "/usr/bin/python3",
                "-c",
                ANSWER_ONCE,
            ],
        );
        running(&cluster, name, 1);
    }
    let netns = cluster.client_ns().path();
    for port in [8085, 8086] {
        // The one answer, through node1, once the port is served.
        let first = node_addr(&cluster, 0, port);
        let socket = in_netns(Path::new(&netns), || UdpSocket::bind("0.0.0.0:0")).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 64];
        wait_until(Duration::from_secs(10), &format!("{first} answers"), || {
            socket.send_to(b"hi", first).map_err(|e| e.to_string())?;
            retry_interrupted(|| socket.recv_from(&mut buf)).map_err(|e| e.to_string())
        });
        // Then nothing listens, once the task has closed its socket after answering (a
        // datagram that came before that waits in the socket, unanswered): a connected socket
        // learns it at once, through every node (the task's error translated: from node:P,
        // about the client's own datagram).
        let refused = |to: SocketAddr, timeout: Duration| -> Result<(), String> {
            let socket = in_netns(Path::new(&netns), || UdpSocket::bind("0.0.0.0:0"))
                .map_err(|e| e.to_string())?;
            socket.connect(to).map_err(|e| e.to_string())?;
            socket
                .set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            socket.send(b"hi").map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            match retry_interrupted(|| socket.recv(&mut buf)) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
                other => Err(format!("{to}: {other:?}")),
            }
        };
        wait_until(Duration::from_secs(10), "the task's socket closed", || {
            refused(first, Duration::from_millis(500))
        });
        for i in 0..3 {
            refused(node_addr(&cluster, i, port), Duration::from_secs(2)).unwrap();
        }
    }
}
