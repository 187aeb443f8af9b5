//! Socket-level balancing (`shoal_connect4`, `shoal_sendmsg4`, `shoal_recvmsg4`,
//! `shoal_getpeername4` on the cgroup v2 root):
//! - node-local clients of published ports: a process on a node (outside any task) reaches a
//!   published port at `localhost:P`, `127.0.0.1:P` and the node's own address, TCP and UDP,
//!   balanced over the service's tasks on every node; its socket's peer, and the source of
//!   the datagrams it receives, stay the address it asked for. Another node's address is left
//!   to the wire and that node's XDP (not balanced at the socket);
//! - a task's connections and datagrams to a VIP go straight to a backend, with no flow in the
//!   VIP flow table (no packet NAT), and the task still sees the VIP as its peer; a process in
//!   the task's network namespace but outside its cgroup is left to the tc path;
//! - a task's connection balanced at the socket to a backend that is then removed is destroyed
//!   by the agent (its read fails) instead of hanging; the task's direct connection to the
//!   same address is left alone.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Read as _},
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use shoal_dataplane::{bpffs, sock_lb::pinned_vip_flows};
use shoal_tests::{Cluster, Cut, wait_until};

use crate::support::{create_whoami, ids, metric, new_datagrams, ok, running, served_by, stderr};

/// `curl http://{host}:8080/` from node `i`'s own network namespace (no task's).
fn curl_from_node(cluster: &Cluster, i: usize, host: &str) -> Result<String, String> {
    let url = format!("http://{host}:8080/");
    let out = cluster.exec(i, "curl", &["-s", "--max-time", "5", &url]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("curl {url}: {}", out.status))
    }
}

/// Python run as `python3 -c UDP_CLIENT HOST PORT`: six datagrams from six unconnected
/// sockets (six flows), four from one socket, and one from a `connect()`ed socket; for each,
/// where the answer came from (and the connected socket's peer) and the answer. One JSON line.
const UDP_CLIENT: &str = r#"
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    return s
out = {"flows": [], "one_socket": []}
kept = []
for _ in range(6):
    s = udp()
    s.sendto(b"hi", (host, port))
    data, addr = s.recvfrom(4096)
    kept.append(s)
    out["flows"].append({"from": list(addr), "answer": data.decode()})
s = udp()
for _ in range(4):
    s.sendto(b"hi", (host, port))
    data, addr = s.recvfrom(4096)
    out["one_socket"].append({"from": list(addr), "answer": data.decode()})
s = udp()
s.connect((host, port))
s.send(b"hi")
data, addr = s.recvfrom(4096)
out["connected"] = {"from": list(addr), "peer": list(s.getpeername()), "answer": data.decode()}
print(json.dumps(out))
"#;

/// Python run as `python3 -c TCP_CLIENT HOST PORT COUNT`: COUNT new connections, each one
/// `GET /`, with the socket's peer and the answer. One JSON line.
const TCP_CLIENT: &str = r#"
import json, socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for _ in range(count):
    s = socket.create_connection((host, port), 5)
    peer = s.getpeername()
    s.sendall(b"GET / HTTP/1.0\r\nHost: shoal\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    out.append({"peer": list(peer), "answer": data.decode(errors="replace")})
print(json.dumps(out))
"#;

/// An address as Python prints it in JSON: `[host, port]`.
fn pair(ip: &str, port: u16) -> serde_json::Value {
    serde_json::json!([ip, port])
}

/// The JSON line a client script printed, or why there is none.
fn parse(out: &std::process::Output, what: &str) -> Result<serde_json::Value, String> {
    if !out.status.success() {
        return Err(format!("{what}: {}: {}", out.status, stderr(out)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{what}: {e}: {out:?}"))
}

/// Who answered each entry of a client script's list.
fn answered_by(entries: &serde_json::Value) -> Vec<String> {
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| served_by(e["answer"].as_str().unwrap()))
        .collect()
}

/// The UDP client's checks against `host:port` (what the answers must come from: `from`):
/// new flows reach every task of `expected`, one socket's datagrams stay on one task, and
/// every answer, also on the connected socket, comes from `from`.
fn check_udp(report: &serde_json::Value, from: &serde_json::Value, expected: &BTreeSet<String>) {
    let flows: BTreeSet<String> = answered_by(&report["flows"]).into_iter().collect();
    assert_eq!(&flows, expected, "new UDP flows: {report}");
    let one: BTreeSet<String> = answered_by(&report["one_socket"]).into_iter().collect();
    assert_eq!(one.len(), 1, "one socket's datagrams on one task: {report}");
    for entry in report["flows"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["one_socket"].as_array().unwrap())
        .chain([&report["connected"]])
    {
        assert_eq!(&entry["from"], from, "recvfrom's source: {report}");
    }
    assert_eq!(
        &report["connected"]["peer"], from,
        "connected peer: {report}"
    );
    served_by(report["connected"]["answer"].as_str().unwrap());
}

#[test]
fn a_node_reaches_its_published_ports_at_localhost_and_its_own_address() {
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);
    create_whoami(
        &cluster,
        "web",
        80,
        &[
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            "-p",
            "8080:80",
            "--publish",
            "published=5353,target=80,protocol=udp",
        ],
    );
    let web = running(&cluster, "web", 2);
    let node1 = cluster.nodes[0].address.to_string();
    for host in ["127.0.0.1", "localhost", node1.as_str()] {
        wait_until(
            Duration::from_secs(10),
            &format!("{host}:8080 from node1"),
            || curl_from_node(&cluster, 0, host).map(|_| ()),
        );
        // Round robin over both tasks, the one on node1 and the one on node2.
        let seen: BTreeSet<String> = (0..6)
            .map(|_| served_by(&curl_from_node(&cluster, 0, host).unwrap()))
            .collect();
        assert_eq!(seen, ids(&web), "{host}:8080 from node1");
    }
    // The balanced socket's peer is what it connected to, not the task it reached.
    let peer = cluster.exec(
        0,
        "python3",
        &[
            "-c",
            "import socket\n\
             s = socket.create_connection(('127.0.0.1', 8080), 5)\n\
             print(s.getpeername())",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&peer.stdout).trim(),
        "('127.0.0.1', 8080)",
        "{}",
        String::from_utf8_lossy(&peer.stderr)
    );
    // UDP: unconnected (sendmsg4/recvmsg4) and connected (connect4) sockets; the answers
    // come from the address the datagrams were sent to.
    for host in ["127.0.0.1", node1.as_str()] {
        let run = || {
            let out = cluster.exec(0, "python3", &["-c", UDP_CLIENT, host, "5353"]);
            parse(&out, &format!("UDP to {host}:5353 from node1"))
        };
        wait_until(
            Duration::from_secs(10),
            &format!("UDP {host}:5353 from node1"),
            || run().map(|_| ()),
        );
        check_udp(&run().unwrap(), &pair(host, 5353), &ids(&web));
    }
    // A port nothing publishes stays the node's own business: refused there.
    let out = cluster.exec(
        0,
        "curl",
        &["-s", "--max-time", "5", "http://127.0.0.1:8081/"],
    );
    assert!(!out.status.success(), "nothing listens on 8081");
}

/// Another node's address is not balanced at the socket (as in Cilium): the connection goes
/// over the underlay to that node, whose XDP program balances it like any client's, over the
/// tasks on every node, the client's own node's included. Both ingress modes: the client's
/// address kept (the default: the task answers the node it runs on, and the answer must still
/// go back through the node asked), and Swarm's source NAT.
#[test]
fn a_node_reaches_published_ports_at_another_nodes_address() {
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);
    // node1 is the client here: what it sends must carry full checksums, as on a real wire
    // (a veth leaves a local socket's partial; node2's XDP rewrites them incrementally, and a
    // task on node1 would drop them), as the fixture's own client does.
    let out = cluster.exec(0, "ethtool", &["-K", "eth0", "tx", "off"]);
    assert!(out.status.success(), "{out:?}");
    for (name, port, source) in [("kept", 8080, "client"), ("snat", 8090, "snat")] {
        let tcp = format!("published={port},target=80,source={source}");
        let udp = format!("published={port},target=80,protocol=udp,source={source}");
        create_whoami(
            &cluster,
            name,
            80,
            &[
                "--replicas",
                "2",
                "--replicas-max-per-node",
                "1",
                "--publish",
                &tcp,
                "--publish",
                &udp,
            ],
        );
    }
    let node2 = cluster.nodes[1].address.to_string();
    for (name, port) in [("snat", 8090), ("kept", 8080)] {
        let tasks = ids(&running(&cluster, name, 2));
        let url = format!("http://{node2}:{port}/");
        let curl = || {
            let out = cluster.exec(0, "curl", &["-s", "--max-time", "5", &url]);
            if out.status.success() {
                Ok(served_by(&String::from_utf8_lossy(&out.stdout)))
            } else {
                Err(format!("curl {url} from node1: {}", out.status))
            }
        };
        wait_until(Duration::from_secs(10), &url, || curl().map(|_| ()));
        let answers: Vec<Result<String, String>> = (0..6).map(|_| curl()).collect();
        let seen: BTreeSet<String> = answers.iter().flatten().cloned().collect();
        assert_eq!(seen, tasks, "{url} from node1, source={name}: {answers:?}");
        assert!(answers.iter().all(Result::is_ok), "{url}: {answers:?}");
        let out = cluster.exec(0, "python3", &["-c", UDP_CLIENT, &node2, &port.to_string()]);
        let report = parse(
            &out,
            &format!("UDP to {node2}:{port} from node1, source={name}"),
        );
        check_udp(&report.unwrap(), &pair(&node2, port), &tasks);
    }
}

/// The entries of node `i`'s VIP flow table that belong to flows to `vip` (forward entries
/// keyed to it, reply entries translating back to it).
fn vip_flow_entries(cluster: &Cluster, i: usize, vip: Ipv4Addr) -> usize {
    let pin_dir = bpffs::node_pin_dir(Path::new(bpffs::DEFAULT_ROOT), &cluster.nodes[i].node_id());
    let vip = u32::from_ne_bytes(vip.octets());
    pinned_vip_flows(&pin_dir)
        .unwrap()
        .iter()
        .filter(|(key, state)| key.dst_ip == vip || state.nat_ip == vip)
        .count()
}

#[test]
fn a_tasks_vip_connections_are_balanced_at_the_socket_without_packet_nat() {
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
            "sock_net",
        ],
    );
    create_whoami(
        &cluster,
        "web",
        80,
        &[
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            "--network",
            "sock_net",
        ],
    );
    let bin = shoal_tests::agent::shoal_bin().display().to_string();
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "client",
            "--network",
            "sock_net",
            "--constraint",
            "node.hostname==node1",
            "--",
            &bin,
            "whoami",
            "--port",
            "9000",
        ],
    );
    let web = running(&cluster, "web", 2);
    let client = running(&cluster, "client", 1).remove(0);
    let vip = crate::support::vip_of(&cluster, "web", "sock_net");
    let vip_text = vip.to_string();
    // In the client task: its cgroup and namespaces (`shoal exec`), as the task itself.
    let in_task = |script: &str, args: &[&str]| {
        let mut argv = vec!["exec", &client.id, "--", "python3", "-c", script];
        argv.extend_from_slice(args);
        cluster.nodes[0].cli(&argv)
    };
    let tcp = || {
        parse(
            &in_task(TCP_CLIENT, &[&vip_text, "80", "6"]),
            "TCP to the VIP",
        )
    };
    wait_until(
        Duration::from_secs(20),
        "the VIP to answer the client task",
        || tcp().map(|_| ()),
    );
    // TCP: new connections go round robin over both tasks, and each socket's peer is the VIP.
    let report = tcp().unwrap();
    let seen: BTreeSet<String> = answered_by(&report).into_iter().collect();
    assert_eq!(seen, ids(&web), "{report}");
    for entry in report.as_array().unwrap() {
        assert_eq!(entry["peer"], pair(&vip_text, 80), "getpeername: {report}");
    }
    // UDP: the answers come from the VIP.
    let udp = parse(&in_task(UDP_CLIENT, &[&vip_text, "80"]), "UDP to the VIP").unwrap();
    check_udp(&udp, &pair(&vip_text, 80), &ids(&web));
    // No packet was NAT-ed: node1's VIP flow table holds nothing for the VIP, and its load
    // balancer never counted a flow to it.
    assert_eq!(vip_flow_entries(&cluster, 0, vip), 0, "VIP flow entries");
    let flows_series = format!("shoal_lb_vip_flows_total{{vip=\"{vip}\"}}");
    assert_eq!(metric(&cluster, 0, &flows_series), 0, "{flows_series}");

    // The scope: a process in the task's network namespace but not in its cgroup (the test
    // itself) is not the node's task; its datagrams take the tc path, which NATs and keeps
    // flows (UDP flows stay for minutes of idleness).
    let answers = new_datagrams(&client.netns(&cluster), SocketAddr::new(vip.into(), 80), 4)
        .expect("datagrams to the VIP from the task's namespace");
    assert_eq!(answers.len(), 4);
    assert!(
        vip_flow_entries(&cluster, 0, vip) > 0,
        "the tc path keeps flows for the VIP"
    );
    assert!(metric(&cluster, 0, &flows_series) > 0, "{flows_series}");
}

/// Python run in a task as `python3 -c HELD_CLIENT VIP PORT DEAD DEAD_IP`: holds a TCP
/// connection through the VIP to task DEAD and one to another task, a connected UDP socket to
/// the VIP answered by DEAD, and a direct connection (no VIP) to DEAD_IP:PORT; prints `ready`,
/// then waits (at most 30 s) for the held connection to DEAD to end, and prints one JSON line:
/// how it ended (`timeout` if it did not) and the state of the others, and who answers a new
/// connection to the VIP. Outcomes: `eof`, `timeout`, an errno name, or who answered.
const HELD_CLIENT: &str = r#"
import errno, json, socket, sys
vip, port, dead, dead_ip = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def who(data):
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("Hostname: "):
            return line[len("Hostname: "):]
    raise RuntimeError("no Hostname in %r" % data)

def recv(s):
    chunk = s.recv(4096)
    if not chunk:
        raise EOFError()
    return chunk

def get(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: shoal\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += recv(s)
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.decode().split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    while len(body) < length:
        body += recv(s)
    return who(body)

def outcome(op):
    try:
        return op()
    except socket.timeout:
        return "timeout"
    except EOFError:
        return "eof"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

held = {}
for _ in range(20):
    s = socket.create_connection((vip, port), 5)
    key = "dead" if get(s) == dead else "alive"
    if key in held:
        s.close()
    else:
        held[key] = s
    if len(held) == 2:
        break
udp = []
for _ in range(20):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    u.connect((vip, port))
    u.send(b"hi")
    udp.append(u)
    if who(u.recv(4096)) == dead:
        break
direct = socket.create_connection((dead_ip, port), 5)
direct_answer = get(direct)
print("ready", flush=True)

held["dead"].settimeout(30)
out = {"dead": outcome(lambda: recv(held["dead"]) and "data")}
udp[-1].settimeout(5)
out["udp"] = outcome(lambda: who(udp[-1].recv(4096)))
out["alive"] = outcome(lambda: get(held["alive"]))
direct.setblocking(False)
out["direct"] = outcome(lambda: recv(direct) and "data")
out["direct_answer"] = direct_answer
out["new"] = outcome(lambda: get(socket.create_connection((vip, port), 5)))
print(json.dumps(out), flush=True)
"#;

/// Cilium destroys the sockets it balanced to a backend that went; so does the agent (from
/// userspace, `SOCK_DESTROY`): node2 dies (its link cut, so its task never closes anything),
/// its task leaves the VIP on node1 (once SWIM's down drain is over, netdb::DOWN_DRAIN), and
/// the client task's connection and connected UDP socket balanced to it then fail with
/// `ECONNABORTED` instead of hanging until a timeout
/// (nothing per packet sees them: the tc path's reset cannot happen). What the task reached
/// directly, even at the same address and port, is left alone, and so is its connection to
/// the other backend; a new connection to the VIP goes to the one that is left.
#[test]
fn a_removed_backends_socket_balanced_connections_are_destroyed() {
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
            "10.10.31.0/24",
            "gone_net",
        ],
    );
    create_whoami(
        &cluster,
        "web",
        80,
        &[
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            "--network",
            "gone_net",
        ],
    );
    let bin = shoal_tests::agent::shoal_bin();
    let bin_text = bin.display().to_string();
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "client",
            "--network",
            "gone_net",
            "--constraint",
            "node.hostname==node1",
            "--",
            &bin_text,
            "whoami",
            "--port",
            "9000",
        ],
    );
    let web = running(&cluster, "web", 2);
    let client = running(&cluster, "client", 1).remove(0);
    let dead = web.iter().find(|t| t.node == 1).unwrap().clone();
    let alive = web.iter().find(|t| t.node == 0).unwrap().id.clone();
    let vip = crate::support::vip_of(&cluster, "web", "gone_net").to_string();
    wait_until(
        Duration::from_secs(20),
        "the VIP to answer the client task over both backends",
        || {
            let out = cluster.nodes[0].cli(&[
                "exec", &client.id, "--", "python3", "-c", TCP_CLIENT, &vip, "80", "4",
            ]);
            let seen: BTreeSet<String> = answered_by(&parse(&out, "TCP to the VIP")?)
                .into_iter()
                .collect();
            if seen == ids(&web) {
                Ok(())
            } else {
                Err(format!("answered by {seen:?}"))
            }
        },
    );

    // In the client task (its cgroup: `shoal exec`), so the VIP is balanced at the socket.
    let dead_ip = dead.ip.to_string();
    let mut held = Command::new(&bin)
        .arg("-H")
        .arg(format!("unix://{}", cluster.nodes[0].socket().display()))
        .args(["exec", &client.id, "--", "python3", "-c", HELD_CLIENT])
        .args([vip.as_str(), "80", &dead.id, &dead_ip])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The script bounds every step itself (connect and read timeouts).
    let mut lines = BufReader::new(held.stdout.take().unwrap()).lines();
    let mut next_line = || lines.next().and_then(Result::ok).unwrap_or_default();
    let ready = next_line();
    if ready != "ready" {
        let _ = held.wait();
        let mut err = String::new();
        let _ = held.stderr.take().unwrap().read_to_string(&mut err);
        panic!("the client script: {ready:?}: {err}");
    }
    cluster.cut(1, Cut::LinkDown);
    let line = next_line();
    let status = held.wait().unwrap();
    let report: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the client script ({status}): {e}: {line:?}"));

    assert_eq!(
        report["dead"],
        "ECONNABORTED",
        "the connection balanced to the removed backend: {report}\n{}",
        cluster.nodes[0].log_tail()
    );
    assert_eq!(
        report["udp"], "ECONNABORTED",
        "the connected UDP socket: {report}"
    );
    assert_eq!(
        report["alive"],
        alive.as_str(),
        "the other backend's: {report}"
    );
    // Still open (nothing to read yet), not aborted.
    assert_eq!(
        report["direct"], "EAGAIN",
        "the direct connection: {report}"
    );
    assert_eq!(report["direct_answer"], dead.id.as_str(), "{report}");
    assert_eq!(report["new"], alive.as_str(), "a new connection: {report}");
    for protocol in ["tcp", "udp"] {
        let series = format!("shoal_lb_sockets_destroyed_total{{protocol=\"{protocol}\"}}");
        assert!(metric(&cluster, 0, &series) >= 1, "{series}");
    }
}
