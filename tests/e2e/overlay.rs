//! Overlay networks end to end, on 3 nodes and the outside client: tasks of a 3-replica service
//! on network A talk over VXLAN (checked on the wire), networks are isolated from each other,
//! tasks reach the outside through the gateway bridge unless their network is internal, a cut
//! node's endpoints are withdrawn and come back without stale entries, established TCP
//! survives agent restarts, and removal leaves nothing behind.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use shoal_tests::{
    Cluster, Cut,
    agent::shoal_bin,
    task_net::{http_from, http_get, tcp_connect, udp_echo_from},
    wait_until,
};

use crate::support::{Placed, fdb, mac_of, metric, network_id, ok, running, stderr};

const PORT: u16 = 8080;

fn create_service(cluster: &Cluster, name: &str, replicas: &str, network: &str) {
    let bin = shoal_bin().display().to_string();
    let port = PORT.to_string();
    ok(
        cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--replicas",
            replicas,
            "--network",
            network,
            "--",
            &bin,
            "whoami",
            "--port",
            &port,
        ],
    );
}

/// What node `observer` should have in its FDB: every running task on another node, if it
/// runs a task on the network itself (else it has no sandbox at all).
fn expected_fdb(
    cluster: &Cluster,
    tasks: &[Placed],
    observer: usize,
) -> BTreeSet<(String, String)> {
    if tasks.iter().all(|t| t.node != observer) {
        return BTreeSet::new();
    }
    tasks
        .iter()
        .filter(|t| t.node != observer)
        .map(|t| (mac_of(t.ip), cluster.nodes[t.node].address.to_string()))
        .collect()
}

/// Sends raw datagrams from the outside client's namespace.
fn send_from_client(cluster: &Cluster, to: SocketAddr, datagrams: &[&[u8]]) {
    let socket =
        shoal_tests::task_net::in_netns(std::path::Path::new(&cluster.client_ns().path()), || {
            std::net::UdpSocket::bind("0.0.0.0:0")
        })
        .unwrap();
    for d in datagrams {
        socket.send_to(d, to).unwrap();
    }
}

/// `shoal whoami` in the outside client's namespace: the "internet" tasks egress to.
struct OutsideServer(Child);

impl Drop for OutsideServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tasks_talk_over_vxlan_networks_are_isolated_and_egress_is_masqueraded() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    ok(
        &cluster,
        0,
        &["network", "create", "--subnet", "10.31.0.0/24", "alpha"],
    );
    ok(&cluster, 0, &["network", "create", "beta"]);
    ok(&cluster, 0, &["network", "create", "--internal", "gamma"]);
    create_service(&cluster, "web", "3", "alpha");
    let web = running(&cluster, "web", 3);
    let nodes: BTreeSet<usize> = web.iter().map(|t| t.node).collect();
    assert_eq!(nodes.len(), 3, "one task per node: {web:?}");
    for t in &web {
        assert_eq!(t.ip.octets()[..3], [10, 31, 0], "{t:?}");
    }

    // --- every task reaches every other, over TCP and UDP (endpoints gossiped within 10 s)
    for from in &web {
        for to in web.iter().filter(|t| t.id != from.id) {
            let body = wait_until(
                Duration::from_secs(10),
                &format!("TCP {} -> {}", from.ip, to.ip),
                || http_from(&from.netns(&cluster), to.addr(PORT)).map_err(|e| e.to_string()),
            );
            assert!(body.contains(&format!("Hostname: {}", to.id)), "{body}");
            assert!(
                body.contains(&format!("RemoteAddr: {}:", from.ip)),
                "{body}"
            );
            let echo = udp_echo_from(&from.netns(&cluster), to.addr(PORT), "ping").unwrap();
            assert!(echo.contains("Echo: ping"), "{echo}");
            assert!(
                echo.contains(&format!("RemoteAddr: {}:", from.ip)),
                "{echo}"
            );
        }
    }
    // The interface is eth0 with Docker's MAC and the overlay MTU.
    let link = Command::new("nsenter")
        .arg(format!("--net={}", web[0].netns(&cluster).display()))
        .args(["--", "ip", "-o", "link", "show", "eth0"])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(link.contains(&mac_of(web[0].ip)), "{link}");

    // --- on the wire: UDP/4789 with alpha's VNI between the two nodes' addresses
    let vni = {
        let out = ok(&cluster, 0, &["network", "inspect", "alpha"]);
        let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        all[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (&web[0], &web[1]);
    let capture = cluster
        .node_ns(a.node)
        .command("timeout")
        .args([
            "10", "tcpdump", "-i", "any", "-nn", "-v", "-c", "2", "udp", "port", "4789",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // tcpdump needs a moment to open its socket: keep sending until it has seen two packets.
    let from_a = cluster.nodes[a.node].address.to_string();
    let to_b = format!("{}.4789", cluster.nodes[b.node].address);
    let mut capture = Some(capture);
    let seen = wait_until(Duration::from_secs(10), "a VXLAN capture", || {
        let _ = udp_echo_from(&a.netns(&cluster), b.addr(PORT), "on the wire");
        let child = capture.as_mut().unwrap();
        match child.try_wait().unwrap() {
            Some(_) => Ok(capture.take().unwrap().wait_with_output().unwrap()),
            None => Err("capturing".into()),
        }
    });
    let seen = String::from_utf8_lossy(&seen.stdout);
    assert!(seen.contains(&format!("vni {vni}")), "{seen}");
    assert!(
        seen.contains(&format!("{from_a}.")) && seen.contains(&to_b),
        "{from_a} -> {to_b}: {seen}"
    );

    // --- network B cannot reach network A
    create_service(&cluster, "other", "1", "beta");
    let other = running(&cluster, "other", 1).remove(0);
    for t in &web {
        assert!(
            http_from(&other.netns(&cluster), t.addr(PORT)).is_err(),
            "beta reached alpha's {}",
            t.ip
        );
    }

    // --- egress through the gateway bridge, masqueraded to the node's address
    let outside_port = 9090u16;
    let _outside = OutsideServer(
        cluster
            .client_ns()
            .command(&shoal_bin().display().to_string())
            .args(["whoami", "--port", &outside_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let outside = SocketAddr::new(cluster.client_address().into(), outside_port);
    let body = wait_until(Duration::from_secs(10), "egress to the client", || {
        http_from(&web[0].netns(&cluster), outside).map_err(|e| e.to_string())
    });
    let node_ip = cluster.nodes[web[0].node].address;
    assert!(body.contains(&format!("RemoteAddr: {node_ip}:")), "{body}");

    // --- an internal network has no way out
    create_service(&cluster, "sealed", "1", "gamma");
    let sealed = running(&cluster, "sealed", 1).remove(0);
    assert!(
        http_from(&sealed.netns(&cluster), outside).is_err(),
        "a task on an internal network reached the outside"
    );

    // --- key rotation without a gap: no node ever drops a packet it cannot decrypt
    let undecryptable = |i: usize| {
        metric(
            &cluster,
            i,
            "shoal_gossip_dropped_packets_total{reason=\"undecryptable\"}",
        )
    };
    let before: Vec<u64> = (0..3).map(undecryptable).collect();
    for keys in [2, 3] {
        ok(&cluster, 0, &["swarm", "update", "--rotate-gossip-key"]);
        for i in 0..3 {
            wait_until(
                Duration::from_secs(10),
                "the new key on every node",
                || match metric(&cluster, i, "shoal_gossip_keys") {
                    k if k == keys => Ok(()),
                    k => Err(format!("node {i} holds {k} keys")),
                },
            );
        }
    }
    // Gossip under the rotated key still carries a new endpoint to everyone.
    ok(
        &cluster,
        0,
        &["service", "update", "--detach", "--replicas", "4", "web"],
    );
    let web4 = running(&cluster, "web", 4);
    let newest = web4
        .iter()
        .find(|t| web.iter().all(|o| o.id != t.id))
        .unwrap();
    for from in &web {
        wait_until(Duration::from_secs(10), "TCP to the new task", || {
            http_from(&from.netns(&cluster), newest.addr(PORT)).map_err(|e| e.to_string())
        });
    }
    let after: Vec<u64> = (0..3).map(undecryptable).collect();
    assert_eq!(before, after, "undecryptable gossip during rotation");

    // --- bad gossip packets: counted and dropped, the node carries on
    let gossip = SocketAddr::new(cluster.nodes[0].address.into(), 7946);
    let truncated = metric(
        &cluster,
        0,
        "shoal_gossip_dropped_packets_total{reason=\"truncated\"}",
    );
    let mut forged = vec![1u8, 0x5a];
    forged.extend((0..60u8).map(|i| i.wrapping_mul(37)));
    send_from_client(&cluster, gossip, &[&[1, 0, 1, 2, 3][..], &forged[..]]);
    wait_until(Duration::from_secs(5), "bad packets counted", || {
        let t = metric(
            &cluster,
            0,
            "shoal_gossip_dropped_packets_total{reason=\"truncated\"}",
        );
        let u = undecryptable(0);
        if t > truncated && u > after[0] {
            Ok(())
        } else {
            Err(format!("truncated {t}, undecryptable {u}"))
        }
    });
    cluster.nodes[0].info();
    http_from(&web[1].netns(&cluster), web[0].addr(PORT)).expect("the overlay still works");

    // --- bad network references: one line, nothing created
    let bin = shoal_bin().display().to_string();
    for (network, needle) in [
        ("nosuch", "network nosuch not found"),
        (
            "ingress",
            "cannot be explicitly attached to the ingress network",
        ),
    ] {
        let out = cluster.nodes[0].cli(&[
            "service",
            "create",
            "--detach",
            "--name",
            "bad",
            "--network",
            network,
            "--",
            &bin,
            "whoami",
        ]);
        assert!(!out.status.success(), "--network {network} accepted");
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    // By the NAME column: a random ID may well contain "bad".
    let ls = ok(&cluster, 0, &["service", "ls"]);
    assert!(
        !ls.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("bad")),
        "{ls}"
    );

    // --- a network in use cannot be removed
    let out = cluster.nodes[0].cli(&["network", "rm", "alpha"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("in use by service web"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn cut_nodes_are_withdrawn_and_restored_flows_survive_restarts_and_rm_cleans_up() {
    let mut cluster = Cluster::start(3);
    cluster.form_swarm(1);
    ok(&cluster, 0, &["network", "create", "alpha"]);
    let alpha = network_id(&cluster, "alpha");
    create_service(&cluster, "web", "3", "alpha");
    let web = running(&cluster, "web", 3);
    let on = |node: usize| web.iter().find(|t| t.node == node).unwrap().clone();
    let (t1, t2) = (on(1), on(2));

    // --- an established connection survives SIGKILL + restart of both ends' agents
    let mut stream = wait_until(Duration::from_secs(10), "TCP 1 -> 2", || {
        let mut s = tcp_connect(&t1.netns(&cluster), t2.addr(PORT)).map_err(|e| e.to_string())?;
        http_get(&mut s, "/first").map_err(|e| e.to_string())?;
        Ok(s)
    });
    for i in [1, 2] {
        cluster.nodes[i].kill();
        cluster.nodes[i].start();
    }
    let body = http_get(&mut stream, "/second").expect("the connection survived the restarts");
    assert!(body.contains("GET /second"), "{body}");
    drop(stream);

    // --- the data path needs no manager: with the only manager's agent dead, tasks still talk
    cluster.nodes[0].kill();
    let body = http_from(&t1.netns(&cluster), t2.addr(PORT)).expect("overlay without managers");
    assert!(body.contains(&format!("Hostname: {}", t2.id)), "{body}");
    // ... and an agent restarted meanwhile gossips again from its saved keys and peers.
    cluster.nodes[2].kill();
    cluster.nodes[2].start();
    wait_until(Duration::from_secs(5), "node 2 gossiping again", || {
        let out = cluster.exec(2, "curl", &["-sf", "http://127.0.0.1:9323/metrics"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let sent = text
            .lines()
            .find_map(|l| l.strip_prefix("shoal_gossip_sent_packets_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if sent > 0 { Ok(()) } else { Err(text) }
    });
    let body = http_from(&t1.netns(&cluster), t2.addr(PORT)).expect("overlay after the restart");
    assert!(body.contains(&format!("Hostname: {}", t2.id)), "{body}");
    cluster.nodes[0].start();

    // --- every node holds exactly the other nodes' endpoints
    for observer in 0..3 {
        let expected = expected_fdb(&cluster, &web, observer);
        wait_until(Duration::from_secs(10), "FDB after restarts", || {
            let now = fdb(&cluster, observer, &alpha);
            if now == expected {
                Ok(())
            } else {
                Err(format!("node {observer}: {now:?} != {expected:?}"))
            }
        });
    }

    // --- entries changed behind the agent's back: one endpoint's FDB entry deleted, a stray
    // one added; the background check (every 5 s) puts both right, and counts them
    let sandbox = shoal_tests::task_net::sandbox_netns(&cluster.nodes[0].state_dir(), &alpha);
    let bridge_fdb = |args: &[&str]| {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", sandbox.display()))
            .args(["--", "bridge", "fdb"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "bridge fdb {args:?}: {out:?}");
    };
    let (deleted_mac, deleted_vtep) = expected_fdb(&cluster, &web, 0).pop_first().unwrap();
    let stray = ("02:42:0a:00:09:63".to_string(), "10.99.0.9".to_string());
    bridge_fdb(&["del", &deleted_mac, "dev", "vxlan0", "dst", &deleted_vtep]);
    bridge_fdb(&[
        "add",
        &stray.0,
        "dev",
        "vxlan0",
        "dst",
        &stray.1,
        "self",
        "permanent",
    ]);
    assert!(fdb(&cluster, 0, &alpha).contains(&stray));
    let expected = expected_fdb(&cluster, &web, 0);
    wait_until(Duration::from_secs(15), "FDB repaired", || {
        let now = fdb(&cluster, 0, &alpha);
        if now == expected {
            Ok(())
        } else {
            Err(format!("{now:?} != {expected:?}"))
        }
    });
    let repairs = |kind: &str| {
        let series = format!("shoal_overlay_endpoint_repairs_total{{kind=\"{kind}\"}}");
        metric(&cluster, 0, &series)
    };
    assert!(repairs("stale") >= 1, "the stray entry counted");
    assert!(repairs("missing") >= 1, "the deleted entry counted");

    // --- node 2 cut off: its endpoint leaves node 0's FDB once SWIM's down drain is over
    // (netdb::DOWN_DRAIN, 15 s: its connections keep their entries meanwhile), within 20 s
    // of it being Down
    cluster.cut(2, Cut::LinkDown);
    let node2 = cluster.nodes[2].node_id();
    wait_until(Duration::from_secs(15), "node 2 Down", || {
        let nodes = cluster.node_ls(0)?;
        let down = nodes
            .iter()
            .any(|n| n["id"].as_str() == Some(node2.as_str()) && n["status"] == "down");
        if down {
            Ok(())
        } else {
            Err(format!("{nodes:?}"))
        }
    });
    let gone = (mac_of(t2.ip), cluster.nodes[2].address.to_string());
    wait_until(
        Duration::from_secs(20),
        "node 2's endpoint withdrawn",
        || {
            let now = fdb(&cluster, 0, &alpha);
            if now.contains(&gone) {
                Err(format!("{now:?}"))
            } else {
                Ok(())
            }
        },
    );

    // --- healed: no stale entry anywhere; the FDB follows the tasks running now
    cluster.heal(2, Cut::LinkDown);
    for observer in 0..3 {
        wait_until(Duration::from_secs(20), "FDB after healing", || {
            let tasks = running(&cluster, "web", 3);
            let expected = expected_fdb(&cluster, &tasks, observer);
            let now = fdb(&cluster, observer, &alpha);
            if now == expected {
                Ok(())
            } else {
                Err(format!("node {observer}: {now:?} != {expected:?}"))
            }
        });
    }

    // --- removing the service, then the network, leaves no namespace on any node but the
    // `ingress` sandbox, which every node keeps for the routing mesh
    ok(&cluster, 0, &["service", "rm", "web"]);
    ok(&cluster, 0, &["network", "rm", "alpha"]);
    let ingress = format!("net-{}", network_id(&cluster, "ingress"));
    for i in 0..3 {
        let dir = cluster.nodes[i].state_dir().join("netns");
        wait_until(Duration::from_secs(15), "namespaces removed", || {
            let left: Vec<String> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|name| *name != ingress)
                        .collect()
                })
                .unwrap_or_default();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("node {i}: {left:?}"))
            }
        });
    }
}

/// The MTU of every link in `netns` but loopback, by name.
fn link_mtus(netns: &std::path::Path) -> Vec<(String, u32)> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-o", "link", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "2: eth0@if7: <...> mtu 1350 qdisc ..."
            let name = line
                .split(':')
                .nth(1)?
                .trim()
                .split('@')
                .next()?
                .to_string();
            let mtu = line
                .split(" mtu ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            (name != "lo").then_some((name, mtu))
        })
        .collect()
}

#[test]
fn the_overlay_mtu_is_the_underlays_minus_vxlan() {
    // An underlay below 1500 (a cloud's or a tunnel's): Docker's fixed 1450 would not fit.
    let mut cluster = Cluster::build(1);
    cluster
        .node_ns(0)
        .ip(&["link", "set", "eth0", "mtu", "1400"]);
    cluster.nodes[0].start();
    cluster.form_swarm(1);
    ok(
        &cluster,
        0,
        &["network", "create", "-d", "overlay", "small"],
    );
    let bin = shoal_bin().display().to_string();
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "m",
            "--network",
            "small",
            "--",
            &bin,
            "whoami",
            "--port",
            "80",
        ],
    );
    let task = &running(&cluster, "m", 1)[0];
    // eth0 is on the overlay; eth1 on the gateway bridge keeps 1500 (the node routes it to the
    // underlay, and answers a too-big packet with ICMP as any router).
    let in_task = link_mtus(&task.netns(&cluster));
    assert!(in_task.contains(&("eth0".to_string(), 1350)), "{in_task:?}");
    let state = cluster.nodes[0].state_dir();
    let sandbox = shoal_tests::task_net::sandbox_netns(&state, &network_id(&cluster, "small"));
    let links = link_mtus(&sandbox);
    for name in ["br0", "vxlan0"] {
        assert!(
            links.iter().any(|(n, mtu)| n == name && *mtu == 1350),
            "{name} in {links:?}"
        );
    }
}
