//! Two "nodes" (netns joined by a veth underlay), one sandbox and one task per node, traffic
//! between the tasks over VXLAN through static FDB/neighbour entries only. Needs root.

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use super::*;
use crate::netns::run_in;

const VNI: u32 = 4097;

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command inside a netns given by path (sandboxes are not under /run/netns).
fn in_ns(netns: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(cmd)
        .args(args)
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes every netns and sandbox the test made, even when it panics half-way.
struct Topology {
    netns: Vec<String>,
    /// The directory sandbox netns are mounted in (a mount point of its own once used).
    sandbox_dir: PathBuf,
    sandboxes: Vec<PathBuf>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for path in &self.sandboxes {
            let _ = remove_sandbox(path);
        }
        let _ = nix::mount::umount2(&self.sandbox_dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.sandbox_dir);
        for name in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn run_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn spec(vtep: Ipv4Addr) -> OverlaySpec {
    OverlaySpec {
        vni: VNI,
        subnet: "10.0.1.0/24".parse().expect("subnet"),
        gateway: Ipv4Addr::new(10, 0, 1, 1),
        vxlan_port: DEFAULT_VXLAN_PORT,
        local_vtep: vtep,
        mtu: DEFAULT_MTU,
    }
}

fn udp_in(netns: &Path, addr: &str) -> UdpSocket {
    let addr = addr.to_string();
    let socket = run_in(netns, move || UdpSocket::bind(addr))
        .expect("enter netns")
        .expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    socket
}

/// Sends `payload` from `from` to `to_addr` every 100 ms until `to` receives it or `deadline`
/// passes (the first datagrams can be lost to ARP resolution).
fn delivered(
    from: &UdpSocket,
    to: &UdpSocket,
    to_addr: &str,
    payload: &[u8],
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        from.send_to(payload, to_addr).expect("send");
        if let Ok((n, _)) = to.recv_from(&mut buf)
            && &buf[..n] == payload
        {
            return true;
        }
    }
    false
}

fn link_names(netns: &Path) -> Vec<String> {
    let mut names: Vec<String> = in_ns(netns, "ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
        })
        .collect();
    names.sort();
    names
}

fn ifindex(netns: &Path, link: &str) -> String {
    in_ns(netns, "ip", &["-o", "link", "show", link])
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn mac_is_docker_style() {
    assert_eq!(
        mac_for_ip(Ipv4Addr::new(10, 0, 1, 2)),
        [0x02, 0x42, 10, 0, 1, 2]
    );
    assert_eq!(
        mac_for_ip(Ipv4Addr::new(192, 168, 255, 254)),
        [0x02, 0x42, 192, 168, 255, 254]
    );
}

#[test]
fn two_nodes_talk_over_vxlan() {
    let pid = std::process::id();
    let [node_a, node_b, task_a, task_b] =
        ["na", "nb", "ta", "tb"].map(|n| format!("shoal-ov-{n}-{pid}"));
    let sandbox_dir = PathBuf::from(format!("/run/shoal/test-overlay-{pid}"));
    let (sbox_a, sbox_b) = (sandbox_dir.join("ovA"), sandbox_dir.join("ovB"));
    let mut topo = Topology {
        netns: Vec::new(),
        sandbox_dir: sandbox_dir.clone(),
        sandboxes: vec![sbox_a.clone(), sbox_b.clone()],
    };
    for name in [&node_a, &node_b, &task_a, &task_b] {
        ip(&["netns", "add", name]);
        topo.netns.push(name.clone());
    }
    // Underlay: a veth between the two nodes.
    ip(&[
        "link", "add", "ula", "netns", &node_a, "type", "veth", "peer", "ulb", "netns", &node_b,
    ]);
    for (node, dev, addr) in [
        (&node_a, "ula", "192.168.77.1/24"),
        (&node_b, "ulb", "192.168.77.2/24"),
    ] {
        ip(&["-n", node, "addr", "add", addr, "dev", dev]);
        ip(&["-n", node, "link", "set", dev, "up"]);
        ip(&["-n", node, "link", "set", "lo", "up"]);
    }
    let (na, nb, ta, tb) = (
        run_path(&node_a),
        run_path(&node_b),
        run_path(&task_a),
        run_path(&task_b),
    );
    let node_a_links = link_names(&na);
    let (vtep_a, vtep_b) = (
        Ipv4Addr::new(192, 168, 77, 1),
        Ipv4Addr::new(192, 168, 77, 2),
    );
    let (ip_a, ip_b) = (Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3));

    // Sandboxes, requested from a thread inside each node netns (as the agent would run).
    let (spec_a, spec_b) = (spec(vtep_a), spec(vtep_b));
    let sandbox_a = run_in(&na, || ensure_sandbox(&na, &sbox_a, &spec_a))
        .expect("enter node A")
        .expect("sandbox A");
    let sandbox_b = run_in(&nb, || ensure_sandbox(&nb, &sbox_b, &spec_b))
        .expect("enter node B")
        .expect("sandbox B");
    assert_eq!(sandbox_a.path, sbox_a);

    attach_task(
        &sandbox_a,
        &ta,
        "eth0",
        "10.0.1.2/24".parse().expect("ip"),
        true,
        "veth-ta",
    )
    .expect("attach A");
    attach_task(
        &sandbox_b,
        &tb,
        "eth0",
        "10.0.1.3/24".parse().expect("ip"),
        true,
        "veth-tb",
    )
    .expect("attach B");
    add_remote_endpoint(&sandbox_a, ip_b, mac_for_ip(ip_b), vtep_b).expect("endpoint on A");
    add_remote_endpoint(&sandbox_b, ip_a, mac_for_ip(ip_a), vtep_a).expect("endpoint on B");

    // Kernel state as the tools see it.
    let vx = in_ns(&sandbox_a.path, "ip", &["-d", "link", "show", "vxlan0"]);
    assert!(vx.contains("vxlan id 4097"), "{vx}");
    assert!(vx.contains("dstport 4789"), "{vx}");
    assert!(vx.contains("nolearning"), "{vx}");
    assert!(vx.contains("master br0"), "{vx}");
    let fdb = in_ns(&sandbox_a.path, "bridge", &["fdb", "show", "dev", "vxlan0"]);
    assert!(fdb.contains("02:42:0a:00:01:03 dst 192.168.77.2"), "{fdb}");
    let eth0 = in_ns(&ta, "ip", &["-d", "link", "show", "eth0"]);
    assert!(
        eth0.contains("02:42:0a:00:01:02") && eth0.contains("mtu 1450"),
        "{eth0}"
    );
    let routes = in_ns(&ta, "ip", &["route", "show"]);
    assert!(routes.contains("default via 10.0.1.1 dev eth0"), "{routes}");

    // Traffic both ways.
    let sock_a = udp_in(&ta, "10.0.1.2:5000");
    let sock_b = udp_in(&tb, "10.0.1.3:5000");
    assert!(
        delivered(
            &sock_a,
            &sock_b,
            "10.0.1.3:5000",
            b"ping",
            Duration::from_secs(5)
        ),
        "A -> B"
    );
    assert!(
        delivered(
            &sock_b,
            &sock_a,
            "10.0.1.2:5000",
            b"pong",
            Duration::from_secs(5)
        ),
        "B -> A"
    );

    // Re-adoption: calling everything again changes nothing and succeeds.
    let before = (
        ifindex(&sandbox_a.path, "vxlan0"),
        ifindex(&sandbox_a.path, "br0"),
        ifindex(&ta, "eth0"),
    );
    let again = run_in(&na, || ensure_sandbox(&na, &sbox_a, &spec_a))
        .expect("enter node A")
        .expect("sandbox A again");
    assert_eq!(again, sandbox_a);
    attach_task(
        &sandbox_a,
        &ta,
        "eth0",
        "10.0.1.2/24".parse().expect("ip"),
        true,
        "veth-ta",
    )
    .expect("attach A again");
    add_remote_endpoint(&sandbox_a, ip_b, mac_for_ip(ip_b), vtep_b).expect("endpoint again");
    let after = (
        ifindex(&sandbox_a.path, "vxlan0"),
        ifindex(&sandbox_a.path, "br0"),
        ifindex(&ta, "eth0"),
    );
    assert_eq!(before, after, "re-ensure recreated links");
    assert!(delivered(
        &sock_a,
        &sock_b,
        "10.0.1.3:5000",
        b"again",
        Duration::from_secs(5)
    ));

    // Removing the endpoint on A: frames for B's MAC have nowhere to go (no flooding).
    assert_eq!(
        remote_endpoints(&sandbox_a).expect("list endpoints"),
        vec![(ip_b, mac_for_ip(ip_b), vtep_b)]
    );
    remove_remote_endpoint(&sandbox_a, ip_b, mac_for_ip(ip_b), vtep_b).expect("remove endpoint");
    assert!(
        remote_endpoints(&sandbox_a)
            .expect("list endpoints")
            .is_empty()
    );
    remove_remote_endpoint(&sandbox_a, ip_b, mac_for_ip(ip_b), vtep_b).expect("remove twice");
    let fdb = in_ns(&sandbox_a.path, "bridge", &["fdb", "show", "dev", "vxlan0"]);
    // The bridge may still hold a learned (master) entry for the port; the VXLAN device's own
    // entry, the one with a destination VTEP, must be gone.
    assert!(!fdb.contains("02:42:0a:00:01:03 dst"), "{fdb}");
    let neigh = in_ns(&sandbox_a.path, "ip", &["neigh", "show", "10.0.1.3"]);
    assert!(!neigh.contains("PERMANENT"), "{neigh}");
    assert!(!delivered(
        &sock_a,
        &sock_b,
        "10.0.1.3:5000",
        b"gone",
        Duration::from_secs(1)
    ));

    // Detach, then tear the sandboxes down.
    detach_task(&sandbox_a, "veth-ta").expect("detach");
    detach_task(&sandbox_a, "veth-ta").expect("detach twice");
    assert!(!link_names(&ta).iter().any(|l| l == "eth0"));
    remove_sandbox(&sbox_a).expect("remove sandbox A");
    remove_sandbox(&sbox_a).expect("remove sandbox A twice");
    assert!(!sandbox_a.path.exists());
    assert_eq!(link_names(&na), node_a_links, "node A links changed");
    drop(topo);
}
