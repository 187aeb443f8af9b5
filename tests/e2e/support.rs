//! Helpers the end-to-end modules share: CLI calls that must succeed, a service's running
//! tasks, a sandbox's FDB, metrics, who of `shoal whoami`'s tasks answers, the docker CLI
//! on a node's `docker.sock`, and a throwaway pin directory for a data path's maps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use shoal_dataplane::bpffs;
use shoal_tests::{
    Cluster,
    names::{BPFFS_ROOT, unique_prefix},
    task_net::{http_from, in_netns, retry_interrupted, sandbox_netns, task_netns},
    wait_until,
};

/// A node's pin directory on bpffs, removed with its pins on drop (also on panic).
pub struct Pins {
    node: String,
}

impl Pins {
    pub fn new() -> Self {
        Pins {
            node: unique_prefix(),
        }
    }

    pub fn dir(&self) -> PathBuf {
        bpffs::node_pin_dir(Path::new(BPFFS_ROOT), &self.node)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = bpffs::remove_node_pins(Path::new(BPFFS_ROOT), &self.node);
    }
}

/// `service create --detach --name NAME EXTRA... -- shoal whoami --port WHOAMI_PORT` on node1.
pub fn create_whoami(cluster: &Cluster, name: &str, whoami_port: u16, extra: &[&str]) {
    let bin = shoal_tests::agent::shoal_bin().display().to_string();
    let port = whoami_port.to_string();
    let mut argv = vec!["service", "create", "--detach", "--name", name];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&["--", &bin, "whoami", "--port", &port]);
    ok(cluster, 0, &argv);
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

pub fn ok(cluster: &Cluster, i: usize, args: &[&str]) -> String {
    let out = cluster.nodes[i].cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        stderr(&out),
        cluster.nodes[i].log_tail()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running task: the node it runs on, its ID and its address on its first network
/// (unspecified when it has none).
#[derive(Clone, Debug)]
pub struct Placed {
    pub node: usize,
    pub id: String,
    pub ip: Ipv4Addr,
}

impl Placed {
    pub fn netns(&self, cluster: &Cluster) -> PathBuf {
        task_netns(&cluster.nodes[self.node].state_dir(), &self.id)
    }
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip.into(), port)
    }
}

/// The service's running tasks, once `count` of them run, each with an address.
pub fn running(cluster: &Cluster, service: &str, count: usize) -> Vec<Placed> {
    wait_until(
        Duration::from_secs(20),
        &format!("{count} running tasks of {service}"),
        || {
            let out = ok(cluster, 0, &["service", "ps", "--format", "json", service]);
            let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
            let placed: Vec<Placed> = tasks
                .iter()
                .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
                .map(|t| {
                    let host = t["node_hostname"].as_str().unwrap();
                    // A task on no network (host-mode publishing alone) has no address.
                    let ip = t["networks"][0]["addr"]
                        .as_str()
                        .map_or(Ipv4Addr::UNSPECIFIED, |a| {
                            a.split('/').next().unwrap().parse().unwrap()
                        });
                    Placed {
                        node: cluster.nodes.iter().position(|n| n.name == host).unwrap(),
                        id: t["id"].as_str().unwrap().to_string(),
                        ip,
                    }
                })
                .collect();
            if placed.len() == count {
                Ok(placed)
            } else {
                Err(format!("{tasks:?}"))
            }
        },
    )
}

/// The service's VIP on the network named `network`, from `service inspect`.
pub fn vip_of(cluster: &Cluster, service: &str, network: &str) -> Ipv4Addr {
    let inspect: Vec<serde_json::Value> =
        serde_json::from_str(&ok(cluster, 0, &["service", "inspect", service])).unwrap();
    let vips = inspect[0]["Endpoint"]["VirtualIPs"].as_array().unwrap();
    let network_id = network_id(cluster, network);
    let addr = vips
        .iter()
        .find(|v| v["NetworkID"] == network_id.as_str())
        .and_then(|v| v["Addr"].as_str())
        .unwrap_or_else(|| panic!("{service} has no VIP on {network}: {inspect:?}"));
    addr.split('/').next().unwrap().parse().unwrap()
}

pub fn network_id(cluster: &Cluster, name: &str) -> String {
    let out = ok(cluster, 0, &["network", "inspect", name]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    all[0]["Id"].as_str().unwrap().to_string()
}

/// `MAC -> VTEP` of the static FDB entries on node `i`'s sandbox of `network_id`.
pub fn fdb(cluster: &Cluster, i: usize, network_id: &str) -> BTreeSet<(String, String)> {
    let sandbox = sandbox_netns(&cluster.nodes[i].state_dir(), network_id);
    let out = Command::new("nsenter")
        .arg(format!("--net={}", sandbox.display()))
        .args(["--", "bridge", "fdb", "show", "dev", "vxlan0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let dst = words.iter().position(|w| *w == "dst")?;
            Some((words[0].to_string(), words.get(dst + 1)?.to_string()))
        })
        .collect()
}

pub fn mac_of(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// A value from node `i`'s /metrics (0 when absent).
pub fn metric(cluster: &Cluster, i: usize, series: &str) -> u64 {
    let out = cluster.exec(i, "curl", &["-sf", "http://127.0.0.1:9323/metrics"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Who answered: whoami's `Hostname:` line, which is the task ID.
pub fn served_by(report: &str) -> String {
    report
        .lines()
        .find_map(|l| l.strip_prefix("Hostname: "))
        .unwrap_or_else(|| panic!("no Hostname in {report:?}"))
        .to_string()
}

/// The IDs of `tasks`.
pub fn ids(tasks: &[Placed]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

/// Who answers `count` new TCP connections from `netns` to `to`, in order.
pub fn new_connections(netns: &Path, to: SocketAddr, count: usize) -> Result<Vec<String>, String> {
    (0..count)
        .map(|i| {
            http_from(netns, to)
                .map(|r| served_by(&r))
                .map_err(|e| format!("connection {i} to {to}: {e}"))
        })
        .collect()
}

/// Who answers `count` datagrams to `to`, each from a new socket (a new flow), from `netns`.
pub fn new_datagrams(netns: &Path, to: SocketAddr, count: usize) -> Result<Vec<String>, String> {
    // Every socket stays open until the last answer: the kernel cannot hand a source port out
    // twice, so each datagram is a new flow for the load balancer (a reused port would find the
    // flow of an earlier datagram and its backend, and skew a round-robin count).
    let mut open = Vec::with_capacity(count);
    (0..count)
        .map(|i| {
            let answer = (|| {
                let socket = in_netns(netns, || std::net::UdpSocket::bind("0.0.0.0:0"))?;
                socket.set_read_timeout(Some(Duration::from_secs(2)))?;
                socket.send_to(b"hi", to)?;
                let mut buf = [0u8; 2048];
                let (n, _) = retry_interrupted(|| socket.recv_from(&mut buf))?;
                open.push(socket);
                Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
            })();
            answer
                .map(|r| served_by(&r))
                .map_err(|e| format!("datagram {i} to {to}: {e}"))
        })
        .collect()
}

/// How many answers each task gave.
pub fn tally(answers: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts.entry(a.clone()).or_default() += 1;
    }
    counts
}

/// The ICMP port unreachable a closed port answers `datagram` (an Ethernet/IPv4/UDP frame
/// without IP options) with, as shoal's programs must send it back: from the address and MAC
/// it was sent to, TOS 0xc0 and no DF as Linux sends ICMP errors, quoting the datagram's IP
/// header and its first 8 bytes.
pub fn port_unreachable_for(datagram: &[u8]) -> Vec<u8> {
    unreachable_for(datagram, etherparse::icmpv4::DestUnreachableHeader::Port)
}

/// The ICMP "fragmentation needed" (next-hop MTU `mtu`) for `packet` (Ethernet/IPv4/TCP or
/// UDP, no IP options), built as [`port_unreachable_for`] builds its answer.
pub fn frag_needed_for(packet: &[u8], mtu: u16) -> Vec<u8> {
    use etherparse::icmpv4::DestUnreachableHeader;
    unreachable_for(
        packet,
        DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
    )
}

fn unreachable_for(datagram: &[u8], why: etherparse::icmpv4::DestUnreachableHeader) -> Vec<u8> {
    use etherparse::{Icmpv4Type, IpDscp, IpHeaders, IpNumber, Ipv4Header, PacketBuilder};
    let quoted = &datagram[14..14 + 28];
    let mut ip = Ipv4Header::new(
        0,
        64,
        IpNumber::ICMP,
        datagram[30..34].try_into().unwrap(),
        datagram[26..30].try_into().unwrap(),
    )
    .unwrap();
    ip.dont_fragment = false;
    ip.dscp = IpDscp::CS6;
    let builder = PacketBuilder::ethernet2(
        datagram[0..6].try_into().unwrap(),
        datagram[6..12].try_into().unwrap(),
    )
    .ip(IpHeaders::Ipv4(ip, Default::default()))
    .icmpv4(Icmpv4Type::DestinationUnreachable(why));
    let mut frame = Vec::new();
    builder.write(&mut frame, quoted).unwrap();
    frame
}

pub fn docker_sock(cluster: &Cluster, i: usize) -> PathBuf {
    cluster.nodes[i].socket().with_file_name("docker.sock")
}

/// `docker -H unix://<node i's docker.sock> ARGS...`, with a config dir of the test's own.
pub fn docker(cluster: &Cluster, i: usize, args: &[&str]) -> Output {
    Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", docker_sock(cluster, i).display()))
        .args(args)
        .env("DOCKER_CONFIG", cluster.work_dir().join("docker-config"))
        .env("DOCKER_CLI_HINTS", "false")
        .output()
        .unwrap_or_else(|e| panic!("running docker (is the docker CLI installed?): {e}"))
}

/// `docker ARGS...` on node `i`, which must succeed; its stdout.
pub fn docker_ok(cluster: &Cluster, i: usize, args: &[&str]) -> String {
    let out = docker(cluster, i, args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}\n{}",
        stderr(&out),
        cluster.nodes[i].log_tail()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What whoami says the connection came from (`RemoteAddr: ip:port`).
pub fn remote_socket(report: &str) -> SocketAddr {
    let addr = report
        .lines()
        .find_map(|l| l.strip_prefix("RemoteAddr: "))
        .unwrap_or_else(|| panic!("no RemoteAddr in {report:?}"));
    addr.parse()
        .unwrap_or_else(|e| panic!("bad RemoteAddr {addr:?}: {e}"))
}
