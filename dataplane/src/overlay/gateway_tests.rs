//! The gateway bridge against real kernel objects: a "node" netns joined to an "outside" netns
//! by a veth, tasks attached to the node's gateway bridge, traffic from a task to the outside
//! masqueraded behind the node's address and answered. Needs root and the `nft` binary.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use super::*;
use crate::netns::run_in;

const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// br_netfilter's switch (per netns) for passing bridged IPv4 through the ip hooks.
const BR_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command inside a netns given by path.
fn in_ns(netns: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(cmd)
        .args(args)
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "{cmd} {args:?} in {}: {}",
        netns.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes every netns the test made (and with them every link and nft table inside), even
/// when the test panics half-way.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: &str) -> PathBuf {
        ip(&["netns", "add", name]);
        self.0.push(name.to_string());
        PathBuf::from("/run/netns").join(name)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
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

fn nft_tables(netns: &Path) -> String {
    in_ns(netns, "nft", &["list", "tables"])
}

fn udp_in(netns: &Path, addr: SocketAddr) -> UdpSocket {
    let socket = run_in(netns, move || UdpSocket::bind(addr))
        .expect("enter netns")
        .expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    socket
}

/// Sends `payload` from `from` to `to_addr` every 100 ms until `to` receives it (the first
/// datagrams can be lost to ARP resolution) or `within` passes; returns the source address the
/// receiver saw.
fn deliver(
    from: &UdpSocket,
    to: &UdpSocket,
    to_addr: SocketAddr,
    payload: &[u8],
    within: Duration,
) -> Option<SocketAddr> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        from.send_to(payload, to_addr).expect("send");
        if let Ok((n, source)) = to.recv_from(&mut buf)
            && &buf[..n] == payload
        {
            return Some(source);
        }
    }
    None
}

fn ip_forward(netns: &Path) -> String {
    in_ns(netns, "cat", &["/proc/sys/net/ipv4/ip_forward"])
        .trim()
        .to_string()
}

#[test]
fn task_reaches_outside_through_masquerading_gateway() {
    let pid = std::process::id();
    let mut namespaces = Namespaces(Vec::new());
    let names = ["node", "out", "t1", "t2"].map(|n| format!("shoal-gwt-{pid}-{n}"));
    let [node, outside, task1, task2] = names.each_ref().map(|n| namespaces.add(n));
    let [node_name, outside_name, _, _] = &names;
    let own_forwarding = ip_forward(Path::new("/proc/self/ns/net"));

    // --- 1. underlay: node 192.168.77.1/24 <-> outside 192.168.77.2/24, nothing else.
    // The outside has no route to the gateway subnet: replies only come back if the node
    // masqueraded the requests.
    ip(&[
        "link",
        "add",
        "gwt-up",
        "netns",
        node_name,
        "type",
        "veth",
        "peer",
        "gwt-out",
        "netns",
        outside_name,
    ]);
    for (ns, dev, addr) in [
        (node_name, "gwt-up", "192.168.77.1/24"),
        (outside_name, "gwt-out", "192.168.77.2/24"),
    ] {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let node_links = link_names(&node);

    // --- 2. gateway bridge, twice: same bridge, one copy of the rules.
    let spec = GatewaySpec::default();
    ensure_gateway_bridge(&node, &spec).expect("ensure gateway bridge");
    let bridge_index = ifindex(&node, &spec.bridge);
    ensure_gateway_bridge(&node, &spec).expect("ensure gateway bridge again");
    assert_eq!(
        ifindex(&node, &spec.bridge),
        bridge_index,
        "re-ensure recreated the bridge"
    );
    let bridge = in_ns(&node, "ip", &["-d", "addr", "show", &spec.bridge]);
    assert!(
        bridge.contains("inet 172.18.0.1/16") && bridge.contains("mtu 1500"),
        "{bridge}"
    );
    assert!(
        bridge.contains("state UP") || bridge.contains(",UP"),
        "{bridge}"
    );
    assert!(
        nft_tables(&node).contains("table ip shoal_gw"),
        "{}",
        nft_tables(&node)
    );
    let rules = in_ns(&node, "nft", &["list", "table", "ip", GATEWAY_NFT_TABLE]);
    assert_eq!(rules.matches("masquerade").count(), 1, "{rules}");
    assert!(
        rules.contains("ip saddr 172.18.0.0/16 oifname != \"shoal_gwbridge\" masquerade"),
        "{rules}"
    );
    assert_eq!(ip_forward(&node), "1", "forwarding off in the node netns");
    assert_eq!(
        ip_forward(Path::new("/proc/self/ns/net")),
        own_forwarding,
        "ip_forward changed outside the node netns"
    );
    assert!(
        !nft_tables(&outside).contains("shoal_gw"),
        "rules leaked into another netns"
    );

    // --- 3. bad input is an error, and creates nothing.
    let outside_subnet = GatewaySpec {
        gateway: Ipv4Addr::new(10, 0, 0, 1),
        ..GatewaySpec::default()
    };
    let err = ensure_gateway_bridge(&node, &outside_subnet).expect_err("gateway outside subnet");
    assert!(matches!(err, OverlayError::Invalid(_)), "{err}");
    let foreign = GatewaySpec {
        bridge: "gwt-up".to_string(),
        ..GatewaySpec::default()
    };
    let err = ensure_gateway_bridge(&node, &foreign).expect_err("bridge name of a veth");
    assert!(matches!(err, OverlayError::Invalid(_)), "{err}");
    let ip1 = Ipv4Addr::new(172, 18, 0, 2);
    let err = attach_task_gateway(
        &node,
        &spec,
        &task1,
        "eth1-much-too-long",
        ip1,
        "gw-t1",
        GATEWAY_MTU,
    )
    .expect_err("ifname too long");
    assert!(matches!(err, OverlayError::Invalid(_)), "{err}");
    let err = attach_task_gateway(
        &node,
        &spec,
        &task1,
        "eth1",
        NODE_ADDR,
        "gw-t1",
        GATEWAY_MTU,
    )
    .expect_err("task address outside subnet");
    assert!(matches!(err, OverlayError::Invalid(_)), "{err}");
    let err = attach_task_gateway(
        &node,
        &spec,
        &task1,
        "eth1",
        spec.gateway,
        "gw-t1",
        GATEWAY_MTU,
    )
    .expect_err("task address = gateway");
    assert!(matches!(err, OverlayError::Invalid(_)), "{err}");
    assert_eq!(
        link_names(&task1),
        ["lo"],
        "a rejected attach created links"
    );
    let mut with_bridge = node_links.clone();
    with_bridge.push(spec.bridge.clone());
    with_bridge.sort();
    assert_eq!(link_names(&node), with_bridge);

    // --- 4. two tasks on the gateway bridge.
    let ip2 = Ipv4Addr::new(172, 18, 0, 3);
    attach_task_gateway(&node, &spec, &task1, "eth1", ip1, "gw-t1", GATEWAY_MTU)
        .expect("attach task 1");
    attach_task_gateway(&node, &spec, &task2, "eth1", ip2, "gw-t2", GATEWAY_MTU)
        .expect("attach task 2");
    let eth1 = in_ns(&task1, "ip", &["-d", "addr", "show", "eth1"]);
    for want in ["02:42:ac:12:00:02", "mtu 1500", "inet 172.18.0.2/16", "UP"] {
        assert!(eth1.contains(want), "no {want:?} in {eth1}");
    }
    let lo = in_ns(&task1, "ip", &["link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    let routes = in_ns(&task1, "ip", &["route", "show"]);
    assert!(
        routes.contains("default via 172.18.0.1 dev eth1"),
        "{routes}"
    );
    let port = in_ns(&node, "ip", &["-d", "link", "show", "gw-t1"]);
    for want in ["master shoal_gwbridge", "isolated on", "mtu 1500"] {
        assert!(port.contains(want), "no {want:?} in {port}");
    }

    // --- 5. task -> outside, masqueraded, and the reply comes back.
    let task_sock = udp_in(&task1, (Ipv4Addr::UNSPECIFIED, 0).into());
    let server = udp_in(&outside, (OUTSIDE_ADDR, 0).into());
    let server_addr = server.local_addr().expect("server address");
    let seen = deliver(
        &task_sock,
        &server,
        server_addr,
        b"out",
        Duration::from_secs(5),
    )
    .expect("task 1 -> outside: nothing arrived");
    assert_eq!(
        seen.ip(),
        NODE_ADDR,
        "outside saw {seen}, not the node's address"
    );
    let back = deliver(&server, &task_sock, seen, b"back", Duration::from_secs(5))
        .expect("outside -> task 1: reply did not come back");
    assert_eq!(back, server_addr);

    // --- 6. no task-to-task path across the gateway bridge, neither switched (isolated ports)
    // nor routed back through the gateway (nft forward drop). With br_netfilter loaded, switched
    // IPv4 also meets the nft forward chain, so it is switched off in the node netns for the
    // second try: then only the port flag stands between the tasks.
    let task2_sock = udp_in(&task2, (ip2, 0).into());
    let task2_addr = task2_sock.local_addr().expect("task 2 address");
    let assert_no_leak = |how: &str| {
        let leaked = deliver(
            &task_sock,
            &task2_sock,
            task2_addr,
            b"leak",
            Duration::from_secs(1),
        );
        assert!(
            leaked.is_none(),
            "task 1 reached task 2 through the gateway bridge ({how})"
        );
    };
    assert_no_leak("switched");
    if Path::new(BR_NF_CALL_IPTABLES).exists() {
        in_ns(
            &node,
            "sh",
            &["-c", &format!("echo 0 > {BR_NF_CALL_IPTABLES}")],
        );
        assert_no_leak("switched, br_netfilter off");
    }
    let via_gateway = [
        "route",
        "add",
        "172.18.0.3/32",
        "via",
        "172.18.0.1",
        "dev",
        "eth1",
    ];
    in_ns(&task1, "ip", &via_gateway);
    assert_no_leak("routed through the gateway");
    in_ns(&task1, "ip", &["route", "del", "172.18.0.3/32"]);

    // --- 7. re-attach keeps the pair; a damaged pair is rebuilt.
    let before = (ifindex(&task1, "eth1"), ifindex(&node, "gw-t1"));
    attach_task_gateway(&node, &spec, &task1, "eth1", ip1, "gw-t1", GATEWAY_MTU)
        .expect("attach again");
    assert_eq!(
        (ifindex(&task1, "eth1"), ifindex(&node, "gw-t1")),
        before,
        "re-attach recreated the veth"
    );
    assert!(
        deliver(
            &task_sock,
            &server,
            server_addr,
            b"again",
            Duration::from_secs(5)
        )
        .is_some(),
        "task 1 -> outside after re-attach"
    );
    in_ns(
        &task2,
        "ip",
        &["link", "set", "eth1", "address", "02:00:00:00:00:01"],
    );
    let damaged = ifindex(&node, "gw-t2");
    attach_task_gateway(&node, &spec, &task2, "eth1", ip2, "gw-t2", GATEWAY_MTU)
        .expect("repair task 2");
    assert_ne!(ifindex(&node, "gw-t2"), damaged, "damaged pair kept");
    let eth1 = in_ns(&task2, "ip", &["-d", "link", "show", "eth1"]);
    assert!(eth1.contains("02:42:ac:12:00:03"), "{eth1}");

    // --- 8. teardown: detach and remove are idempotent, never touch links that are not ours,
    // and leave the node as it was. Task 2 is still attached when the bridge goes.
    detach_task_gateway(&node, &spec, "gw-t1").expect("detach task 1");
    detach_task_gateway(&node, &spec, "gw-t1").expect("detach task 1 twice");
    assert_eq!(link_names(&task1), ["lo"], "eth1 left in task 1");
    let err = detach_task_gateway(&node, &spec, "gwt-up").expect_err("detach of a foreign veth");
    assert!(matches!(err, OverlayError::Invalid(_)), "{err}");
    let err = attach_task_gateway(&node, &spec, &task1, "eth1", ip1, "gwt-up", GATEWAY_MTU)
        .expect_err("attach over a foreign veth");
    assert!(matches!(err, OverlayError::Invalid(_)), "{err}");
    assert!(
        link_names(&node).iter().any(|l| l == "gwt-up"),
        "the underlay veth was deleted"
    );
    remove_gateway_bridge(&node, &spec).expect("remove gateway bridge");
    remove_gateway_bridge(&node, &spec).expect("remove gateway bridge twice");
    detach_task_gateway(&node, &spec, "gw-t2").expect("detach after removal");
    assert_eq!(link_names(&node), node_links, "node links changed");
    assert_eq!(link_names(&task2), ["lo"], "eth1 left in task 2");
    let tables = nft_tables(&node);
    assert!(!tables.contains("shoal_gw"), "{tables}");
    assert_eq!(ip_forward(&node), "1", "remove turned forwarding off");
    drop(namespaces);
}

#[test]
fn a_strict_reverse_path_filter_is_loosened_and_a_loose_one_left_alone() {
    let pid = std::process::id();
    let mut namespaces = Namespaces(Vec::new());
    let task = namespaces.add(&format!("shoal-gwt-{pid}-rp"));
    let read = |which: &str| {
        in_ns(
            &task,
            "cat",
            &[&format!("/proc/sys/net/ipv4/conf/{which}/rp_filter")],
        )
        .trim()
        .to_string()
    };
    let set = |which: &str, value: &str| {
        in_ns(
            &task,
            "sysctl",
            &["-qw", &format!("net.ipv4.conf.{which}.rp_filter={value}")],
        );
    };
    // Off: nothing is written.
    set("all", "0");
    set("default", "0");
    loose_reverse_path_filter(&task).expect("off");
    assert_eq!((read("all"), read("default")), ("0".into(), "0".into()));
    // Strict in `default` (what an interface starts with) or in `all`: `all` becomes loose.
    set("default", "1");
    loose_reverse_path_filter(&task).expect("default strict");
    assert_eq!(read("all"), "2");
    set("all", "1");
    set("default", "0");
    loose_reverse_path_filter(&task).expect("all strict");
    assert_eq!(read("all"), "2");
}
