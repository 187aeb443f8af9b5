//! Path MTU discovery through the routing mesh in the direction that carries a download: the
//! client sits behind a router whose link toward it takes 1400 bytes, while the task, on the
//! 1450-byte `ingress` overlay, sends full-sized segments. The router answers each with an
//! ICMP fragmentation needed to the node the client asked (the answers' source); that node's
//! XDP program translates it into the task's view of the flow and sends it on to the task,
//! which lowers its path MTU and resends. Without that, the transfer stalls (a black hole):
//! the test's 300 KB arrive only if PMTUD works, through every node, with the client's
//! address kept and with source NAT.

use std::{
    io::Read as _,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use shoal_tests::{
    Cluster,
    netns::Netns,
    task_net::{retry_interrupted, tcp_connect},
    wait_until,
};

use crate::support::{metric, ok, running};

/// What the task sends on every connection before closing it.
const TRANSFER: usize = 300_000;
/// The far client's network, behind the router.
const FAR_NET: &str = "10.77.0.0/24";
const FAR_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The router's host number on the underlay.
const ROUTER_HOST: u8 = 200;

/// A task that sends [`TRANSFER`] bytes to whoever connects to `port`, then closes.
fn create_sender(cluster: &Cluster, name: &str, publish: &str, port: u16) {
    let script = format!(
        "import socket\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', {port}))\n\
         s.listen(64)\n\
         data = b'x' * {TRANSFER}\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   try:\n\
         \x20       c.sendall(data)\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         \x20   c.close()\n"
    );
    ok(
        cluster,
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
            &script,
        ],
    );
}

/// Everything one connection from the far client to `to` receives (5 s without a byte ends
/// it: a black hole).
fn download(far: &Path, to: SocketAddr) -> Result<usize, String> {
    let mut stream = tcp_connect(far, to).map_err(|e| format!("connect {to}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    let mut total = 0;
    loop {
        match retry_interrupted(|| stream.read(&mut buf)) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) => return Err(format!("{to}: {e} after {total} bytes")),
        }
    }
}

#[test]
fn a_download_through_a_smaller_mtu_completes_on_every_node() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    // --- the router: on the underlay, and toward the far client over a 1400-byte link (the
    // client's own end takes 1500, so it advertises a full-size MSS)
    let router = cluster.add_host("rt", ROUTER_HOST);
    let far = Netns::create(&format!("{}-far", cluster.prefix()));
    router.ip(&[
        "link",
        "add",
        "to-far",
        "mtu",
        "1400",
        "type",
        "veth",
        "peer",
        "name",
        "far0",
        "netns",
        far.name(),
    ]);
    router.ip(&["addr", "add", "10.77.0.1/24", "dev", "to-far"]);
    router.ip(&["link", "set", "to-far", "up"]);
    let out = router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    assert!(out.status.success(), "{out:?}");
    far.ip(&["addr", "add", &format!("{FAR_CLIENT}/24"), "dev", "far0"]);
    far.ip(&["link", "set", "far0", "up"]);
    far.ip(&["route", "add", "default", "via", "10.77.0.1"]);
    let out = far.exec("ethtool", &["-K", "far0", "tx", "off"]);
    assert!(out.status.success(), "{out:?}");
    let via = cluster.underlay_address(ROUTER_HOST).to_string();
    for i in 0..3 {
        cluster
            .node_ns(i)
            .ip(&["route", "add", FAR_NET, "via", &via]);
    }

    create_sender(&cluster, "kept", "published=8090,target=8090", 8090);
    create_sender(
        &cluster,
        "natted",
        "published=8091,target=8091,source=snat",
        8091,
    );
    running(&cluster, "kept", 1);
    running(&cluster, "natted", 1);

    let far_path = far.path();
    for port in [8090, 8091] {
        for i in 0..3 {
            let to = SocketAddr::new(cluster.nodes[i].address.into(), port);
            // The first attempt may meet a port not served yet; a stall is a failure.
            wait_until(
                Duration::from_secs(10),
                &format!("{to} served"),
                || match download(Path::new(&far_path), to) {
                    Err(e) if e.starts_with("connect") => Err(e),
                    Err(e) => panic!("a black hole: {e}"),
                    Ok(n) => Ok(n),
                },
            );
            assert_eq!(
                download(Path::new(&far_path), to).unwrap(),
                TRANSFER,
                "{to}: the whole transfer"
            );
        }
    }
    // The router did speak, and the mesh passed it on.
    let translated: u64 = (0..3)
        .map(|i| metric(&cluster, i, "shoal_mesh_events_total{event=\"icmp_error\"}"))
        .sum();
    assert!(translated > 0, "no ICMP error was translated");
}
