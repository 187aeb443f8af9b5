//! A service with no task to take its connections refuses them at once, as a closed port
//! would, on its VIP (from a task) and on its published ports (from outside): TCP is refused
//! (a reset), UDP gets a port unreachable (a connected socket's `ECONNREFUSED`), each counted
//! as `no_backend`; nothing is left to time out. The VIP stays while its service exists.

use std::{
    io::ErrorKind,
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use shoal_tests::{
    Cluster,
    task_net::{in_netns, tcp_connect},
    wait_until,
};

use crate::support::{create_whoami, metric, new_connections, new_datagrams, ok, running, vip_of};

const PORT: u16 = 8080;
/// The published TCP and UDP ports, both to whoami's `PORT`.
const TCP_PORT: u16 = 8180;
const UDP_PORT: u16 = 8181;

fn create(cluster: &Cluster, name: &str, extra: &[&str]) {
    create_whoami(cluster, name, PORT, extra);
}

/// A new TCP connection from `netns` to `to` must be refused (not time out, not succeed).
fn tcp_refused(netns: &Path, to: SocketAddr) -> Result<(), String> {
    match tcp_connect(netns, to) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!("TCP {to}: {e}, not refused")),
        Ok(_) => Err(format!("TCP {to}: connected")),
    }
}

/// A datagram from a connected UDP socket in `netns` to `to` must come back as
/// `ECONNREFUSED` (the port unreachable), not time out, not be answered.
fn udp_refused(netns: &Path, to: SocketAddr) -> Result<(), String> {
    let socket = in_netns(netns, || UdpSocket::bind("0.0.0.0:0")).map_err(|e| e.to_string())?;
    socket.connect(to).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    socket.send(b"hi").map_err(|e| format!("UDP {to}: {e}"))?;
    let mut buf = [0u8; 2048];
    match socket.recv(&mut buf) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!("UDP {to}: {e}, not refused")),
        Ok(n) => Err(format!("UDP {to}: answered {n} bytes")),
    }
}

#[test]
fn a_service_scaled_to_zero_refuses_its_vip_and_published_ports_at_once() {
    // --- 1. two nodes, `web` (2 replicas, TCP and UDP published) and a client task on node1
    let cluster = Cluster::start(2);
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
            "10.10.29.0/24",
            "refuse_net",
        ],
    );
    let tcp_publish = format!("published={TCP_PORT},target={PORT}");
    let udp_publish = format!("published={UDP_PORT},target={PORT},protocol=udp");
    create(
        &cluster,
        "web",
        &[
            "--replicas",
            "2",
            "--network",
            "refuse_net",
            "--publish",
            &tcp_publish,
            "--publish",
            &udp_publish,
        ],
    );
    create(
        &cluster,
        "client",
        &[
            "--network",
            "refuse_net",
            "--constraint",
            "node.hostname==node1",
        ],
    );
    running(&cluster, "web", 2);
    let client = running(&cluster, "client", 1).remove(0).netns(&cluster);
    let vip = vip_of(&cluster, "web", "refuse_net");
    let outside = cluster.client_ns().path();
    let outside = Path::new(&outside);
    let node_addr = |i: usize, port| SocketAddr::new(cluster.nodes[i].address.into(), port);
    let vip_tcp = SocketAddr::new(vip.into(), PORT);
    wait_until(Duration::from_secs(10), "web to be served", || {
        new_connections(&client, vip_tcp, 2)?;
        new_datagrams(&client, vip_tcp, 2)?;
        new_connections(outside, node_addr(0, TCP_PORT), 2)?;
        new_datagrams(outside, node_addr(1, UDP_PORT), 2)?;
        Ok(())
    });

    // --- 2. scaled to 0: the VIP (from the task) and every node's published ports (from
    // outside) refuse TCP and UDP at once.
    ok(&cluster, 0, &["service", "scale", "--detach", "web=0"]);
    running(&cluster, "web", 0);
    wait_until(
        Duration::from_secs(10),
        "the VIP to refuse TCP and UDP",
        || {
            tcp_refused(&client, vip_tcp)?;
            udp_refused(&client, vip_tcp)
        },
    );
    for i in 0..2 {
        wait_until(
            Duration::from_secs(10),
            &format!("node{}'s published ports to refuse", i + 1),
            || {
                tcp_refused(outside, node_addr(i, TCP_PORT))?;
                udp_refused(outside, node_addr(i, UDP_PORT))
            },
        );
    }

    // --- 3. counted: the VIP's refusals on the client's node, the ports' on each node
    let lb = metric(&cluster, 0, "shoal_lb_events_total{event=\"no_backend\"}");
    assert!(lb >= 2, "node1 counted {lb} refusals on the VIP");
    for i in 0..2 {
        let mesh = metric(&cluster, i, "shoal_mesh_events_total{event=\"no_backend\"}");
        assert!(mesh >= 2, "node{} counted {mesh} refused packets", i + 1);
    }

    // --- 4. scaled back up: the same VIP and ports serve again
    ok(&cluster, 0, &["service", "scale", "--detach", "web=1"]);
    running(&cluster, "web", 1);
    wait_until(Duration::from_secs(10), "web to be served again", || {
        new_connections(&client, vip_tcp, 1)?;
        new_datagrams(&client, vip_tcp, 1)?;
        new_connections(outside, node_addr(1, TCP_PORT), 1)?;
        new_datagrams(outside, node_addr(0, UDP_PORT), 1)?;
        Ok(())
    });
}
