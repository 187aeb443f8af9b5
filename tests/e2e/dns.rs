//! The embedded DNS at 127.0.0.11, end to end, in the classic Swarm tutorial scenario: network
//! `ngx_net` (10.10.19.0/24), a 5-replica vip service `my-test`, a 3-replica dnsrr service, a
//! service on another network, and dnsmasq in the outside client's namespace as the nodes'
//! upstream resolver. Queries come from inside a task, with the task's own /etc/resolv.conf:
//! glibc (`getent`) and `dig`.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use shoal_tests::{Cluster, Cut, agent::shoal_bin, task_net::in_netns, wait_until};

use crate::support::{Placed, fdb, metric, network_id, ok, running};

/// What dnsmasq (the upstream) answers for the external name.
const EXTERNAL_NAME: &str = "external.test";
const EXTERNAL_IP: &str = "203.0.113.7";

/// dnsmasq in the outside client's namespace, killed on drop.
struct Upstream(Child);

impl Upstream {
    fn start(cluster: &Cluster) -> Upstream {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", cluster.client_ns().path()))
            .args([
                "--",
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
            ])
            .args(["--bind-interfaces", "--user=root", "--pid-file"])
            .arg(format!("--listen-address={}", cluster.client_address()))
            .arg(format!("--address=/{EXTERNAL_NAME}/{EXTERNAL_IP}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dnsmasq");
        let upstream = Upstream(child);
        let server = format!("@{}", cluster.client_address());
        wait_until(Duration::from_secs(5), "dnsmasq to answer", || {
            let out = cluster
                .client_ns()
                .exec("dig", &[&server, "+short", "+tries=1", EXTERNAL_NAME]);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if text == EXTERNAL_IP {
                Ok(())
            } else {
                Err(text)
            }
        });
        upstream
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `dig @127.0.0.11 ARGS` run inside `task` (its namespaces, its resolv.conf).
fn dig(cluster: &Cluster, task: &Placed, args: &[&str]) -> String {
    let mut argv = vec![
        "exec",
        &task.id,
        "--",
        "dig",
        "@127.0.0.11",
        "+tries=1",
        "+timeout=5",
    ];
    argv.extend_from_slice(args);
    ok(cluster, 0, &argv)
}

/// The addresses of a `dig +short` answer, in answer order.
fn dig_short(cluster: &Cluster, task: &Placed, name: &str) -> Vec<String> {
    dig(cluster, task, &["+short", name])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The status of a full `dig` answer (NOERROR, NXDOMAIN, SERVFAIL, ...).
fn dig_status(cluster: &Cluster, task: &Placed, args: &[&str]) -> String {
    let out = dig(cluster, task, args);
    out.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig's answer:\n{out}"))
        .to_string()
}

fn set(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

fn ips(tasks: &[Placed]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.ip.to_string()).collect()
}

fn create_service(cluster: &Cluster, name: &str, extra: &[&str]) {
    let bin = shoal_bin().display().to_string();
    let mut argv = vec!["service", "create", "--detach", "--name", name];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&["--", &bin, "whoami", "--port", "8080"]);
    ok(cluster, 0, &argv);
}

/// A DNS query for `name` (type A unless `qtype` says otherwise), built by hand.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Sends each datagram from inside `netns` to the embedded server, and returns the answers
/// that came back within `wait` (one receive per datagram, in any order).
fn exchange(netns: &Path, datagrams: &[Vec<u8>], wait: Duration) -> Vec<Vec<u8>> {
    in_netns(netns, || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(wait)).unwrap();
        let server = SocketAddr::from(([127, 0, 0, 11], 53));
        for d in datagrams {
            socket.send_to(d, server).unwrap();
        }
        let mut answers = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            answers.push(buf[..n].to_vec());
        }
        answers
    })
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn embedded_dns_answers_from_the_cluster_and_forwards_the_rest() {
    // --- 1. three nodes whose embedded DNS forwards to dnsmasq on the outside client
    let mut cluster = Cluster::build(3);
    let upstream_ip = cluster.client_address().to_string();
    for node in &mut cluster.nodes {
        node.extra_args = vec!["--dns".into(), upstream_ip.clone()];
        node.start();
    }
    cluster.form_swarm(1);
    let mut upstream = Upstream::start(&cluster);

    // --- 2. the tutorial's network and services, and a client task pinned to node1
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
    ok(
        &cluster,
        0,
        &["network", "create", "-d", "overlay", "other_net"],
    );
    create_service(
        &cluster,
        "my-test",
        &["--replicas", "5", "--network", "ngx_net"],
    );
    create_service(
        &cluster,
        "rr",
        &[
            "--replicas",
            "3",
            "--endpoint-mode",
            "dnsrr",
            "--network",
            "ngx_net",
        ],
    );
    create_service(
        &cluster,
        "hidden",
        &["--replicas", "1", "--network", "other_net"],
    );
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
    let my_test = running(&cluster, "my-test", 5);
    let rr = running(&cluster, "rr", 3);
    running(&cluster, "hidden", 1);
    let client = running(&cluster, "client", 1).remove(0);
    assert_eq!(client.node, 0);
    let inspect: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&cluster, 0, &["service", "inspect", "my-test"])).unwrap();
    let vips = &inspect[0]["Endpoint"]["VirtualIPs"];
    assert_eq!(vips.as_array().map(Vec::len), Some(1), "{inspect:?}");
    assert_eq!(vips[0]["NetworkID"], network_id(&cluster, "ngx_net"));
    let vip = vips[0]["Addr"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(vip.starts_with("10.10.19."), "VIP {vip} outside ngx_net");
    assert!(
        !ips(&my_test).contains(&vip),
        "the VIP is not a task address"
    );
    let rr_inspect: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&cluster, 0, &["service", "inspect", "rr"])).unwrap();
    assert_eq!(
        rr_inspect[0]["Endpoint"]["VirtualIPs"],
        serde_json::json!([])
    );
    assert_eq!(rr_inspect[0]["Spec"]["EndpointSpec"]["Mode"], "dnsrr");

    // --- 3. the task's resolv.conf points at the embedded server, keeping search and options
    let resolv = ok(
        &cluster,
        0,
        &["exec", &client.id, "--", "cat", "/etc/resolv.conf"],
    );
    assert!(resolv.starts_with("nameserver 127.0.0.11"), "{resolv}");
    assert_eq!(resolv.matches("nameserver").count(), 1, "{resolv}");
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for line in host
        .lines()
        .filter(|l| l.starts_with("search") || l.starts_with("options"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            resolv.contains(&words[1..].join(" ")),
            "{line:?} not kept in:\n{resolv}"
        );
    }

    // --- 4. glibc: the service name gives the VIP, tasks.<service> every task
    let hosts = ok(
        &cluster,
        0,
        &["exec", &client.id, "--", "getent", "hosts", "my-test"],
    );
    assert_eq!(
        hosts.split_whitespace().next(),
        Some(vip.as_str()),
        "{hosts}"
    );
    let ahosts = ok(
        &cluster,
        0,
        &[
            "exec",
            &client.id,
            "--",
            "getent",
            "ahosts",
            "tasks.my-test",
        ],
    );
    let got = set(ahosts
        .lines()
        .filter_map(|l| Some(l.split_whitespace().next()?.to_string())));
    assert_eq!(got, ips(&my_test), "getent ahosts tasks.my-test");

    // --- 5. dig: dnsrr order varies, names with a network suffix, task names, AAAA, PTR, TCP
    let mut orders = BTreeSet::new();
    for _ in 0..12 {
        let answer = dig_short(&cluster, &client, "rr");
        assert_eq!(set(answer.clone()), ips(&rr), "rr resolves to its task IPs");
        orders.insert(answer);
    }
    assert!(
        orders.len() > 1,
        "12 answers for rr came in one order: {orders:?}"
    );
    assert_eq!(
        dig_short(&cluster, &client, "my-test.ngx_net"),
        std::slice::from_ref(&vip)
    );
    assert_eq!(
        set(dig_short(&cluster, &client, "tasks.my-test.ngx_net")),
        ips(&my_test)
    );
    assert_eq!(
        dig_short(&cluster, &client, "MY-TEST."),
        std::slice::from_ref(&vip),
        "case, trailing dot"
    );
    let first = &my_test[0];
    let slot: Vec<serde_json::Value> = serde_json::from_str(&ok(
        &cluster,
        0,
        &["service", "ps", "--format", "json", "my-test"],
    ))
    .unwrap();
    let slot = slot.iter().find(|t| t["id"] == first.id.as_str()).unwrap()["slot"].clone();
    let full_name = format!("my-test.{slot}.{}", first.id);
    assert_eq!(
        dig_short(&cluster, &client, &full_name),
        [first.ip.to_string()]
    );
    assert_eq!(
        dig_short(&cluster, &client, &format!("my-test.{slot}")),
        [first.ip.to_string()]
    );
    assert_eq!(
        dig_status(&cluster, &client, &["AAAA", "my-test"]),
        "NOERROR"
    );
    let aaaa = dig(&cluster, &client, &["+short", "-t", "AAAA", "my-test"]);
    assert!(aaaa.is_empty(), "no AAAA on a v4 network: {aaaa}");
    let ptr = dig(&cluster, &client, &["+short", "-x", &first.ip.to_string()]);
    assert_eq!(
        ptr.trim(),
        format!("{full_name}.ngx_net."),
        "PTR of a task IP"
    );
    let ptr = dig(&cluster, &client, &["+short", "-x", &vip]);
    assert_eq!(ptr.trim(), "my-test.ngx_net.", "PTR of the VIP");
    assert_eq!(
        dig(&cluster, &client, &["+tcp", "+short", "my-test"]).trim(),
        vip,
        "over TCP"
    );
    let ttl = dig(&cluster, &client, &["+noall", "+answer", "my-test"]);
    assert_eq!(ttl.split_whitespace().nth(1), Some("600"), "TTL: {ttl}");

    // --- 6. a service on a network the task is not on does not exist for it
    assert_eq!(dig_status(&cluster, &client, &["hidden"]), "NXDOMAIN");
    assert_eq!(dig_status(&cluster, &client, &["tasks.hidden"]), "NXDOMAIN");
    assert_eq!(
        dig_status(&cluster, &client, &["hidden.ngx_net"]),
        "NXDOMAIN"
    );

    // --- 7. other names go to the upstream (glibc and dig)
    assert_eq!(dig_short(&cluster, &client, EXTERNAL_NAME), [EXTERNAL_IP]);
    let hosts = ok(
        &cluster,
        0,
        &["exec", &client.id, "--", "getent", "hosts", EXTERNAL_NAME],
    );
    assert_eq!(
        hosts.split_whitespace().next(),
        Some(EXTERNAL_IP),
        "{hosts}"
    );

    // --- 8. scaling changes the answers
    ok(&cluster, 0, &["service", "scale", "--detach", "my-test=2"]);
    let scaled = running(&cluster, "my-test", 2);
    wait_until(
        Duration::from_secs(10),
        "tasks.my-test to show 2 tasks",
        || {
            let got = set(dig_short(&cluster, &client, "tasks.my-test"));
            if got == ips(&scaled) {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    );

    // --- 9. a node dies: its tasks leave the answers once SWIM declares it down (its
    // endpoints then drain: out of DNS at once, their FDB entries kept for the connections
    // until the drain is over, netdb::DOWN_DRAIN, 15 s)
    let ngx = network_id(&cluster, "ngx_net");
    let dead = 2;
    let dead_vtep = cluster.nodes[dead].address.to_string();
    let dead_ips: BTreeSet<String> = ips(&rr
        .iter()
        .filter(|t| t.node == dead)
        .cloned()
        .collect::<Vec<_>>());
    assert!(!dead_ips.is_empty(), "rr runs on every node: {rr:?}");
    let on_dead_node =
        |entries: &BTreeSet<(String, String)>| entries.iter().any(|(_, vtep)| *vtep == dead_vtep);
    assert!(on_dead_node(&fdb(&cluster, 0, &ngx)));
    let cut = Instant::now();
    cluster.cut(dead, Cut::LinkDown);
    wait_until(Duration::from_secs(15), "DNS to drop node3's tasks", || {
        let got = set(dig_short(&cluster, &client, "tasks.rr"));
        if got.is_disjoint(&dead_ips) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    println!(
        "dns: node3's tasks left the answers {:?} after the cut",
        cut.elapsed()
    );
    assert!(
        on_dead_node(&fdb(&cluster, 0, &ngx)),
        "draining endpoints keep their FDB entries"
    );
    wait_until(
        Duration::from_secs(25),
        "node3's FDB entries to go from node1 once the drain is over",
        || {
            let entries = fdb(&cluster, 0, &ngx);
            if on_dead_node(&entries) {
                Err(format!("{entries:?}"))
            } else {
                Ok(())
            }
        },
    );

    // --- 10. bad input is answered or counted, never a crash; a flood stays bounded
    let task_ns = client.netns(&cluster);
    let long_name = vec!["a".repeat(63); 5].join(".");
    let mut header_only = query(7, "x", 1);
    header_only.truncate(12);
    let mut response = query(8, "my-test", 1);
    response[2] |= 0x80;
    let garbage: Vec<Vec<u8>> = vec![
        vec![0xde, 0xad, 0xbe],
        header_only,
        query(9, &long_name, 1),
        response,
        (0..200u8).map(|b| b.wrapping_mul(37)).collect(),
    ];
    let malformed_before = metric(
        &cluster,
        0,
        "shoal_dns_responses_total{outcome=\"malformed\"}",
    );
    exchange(&task_ns, &garbage, Duration::from_millis(300));
    let malformed = metric(
        &cluster,
        0,
        "shoal_dns_responses_total{outcome=\"malformed\"}",
    );
    assert!(
        malformed >= malformed_before + 3,
        "malformed input not counted: {malformed_before} -> {malformed}"
    );
    let unknown_type = exchange(
        &task_ns,
        &[query(10, "my-test", 65_400)],
        Duration::from_secs(2),
    );
    assert_eq!(unknown_type.len(), 1, "an unknown type is answered");
    assert_eq!(
        unknown_type[0][3] & 0x0f,
        0,
        "NOERROR for an unknown type of a known name"
    );

    // A flood of names only the upstream knows, with the upstream dead: bounded, then SERVFAIL.
    upstream.stop();
    let agent_pid = cluster.nodes[0].pid().unwrap();
    let rss_before = rss_kib(agent_pid);
    // Forwarded queries over the limit are refused at once; the rest wait for the timeout.
    let flood: Vec<Vec<u8>> = (0..3000u16)
        .map(|i| query(i, &format!("n{i}.flood.test"), 1))
        .collect();
    exchange(&task_ns, &flood, Duration::from_secs(3));
    let rss_after = rss_kib(agent_pid);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "agent memory grew from {rss_before} to {rss_after} KiB under a query flood"
    );
    let answered = exchange(&task_ns, &[query(11, "my-test", 1)], Duration::from_secs(2));
    assert_eq!(answered.len(), 1, "the server answers after the flood");
    let vip_octets = vip.parse::<Ipv4Addr>().unwrap().octets();
    assert_eq!(
        answered[0][answered[0].len() - 4..],
        vip_octets,
        "the VIP, last in the answer"
    );
    let refused = metric(
        &cluster,
        0,
        "shoal_dns_responses_total{outcome=\"refused\"}",
    );
    assert!(
        refused > 0,
        "a flood beyond the forwarding limit is refused and counted"
    );

    // --- 11. a dead upstream: SERVFAIL within the forwarding timeout (dig waits 5 s)
    assert_eq!(dig_status(&cluster, &client, &["gone.test"]), "SERVFAIL");
}
