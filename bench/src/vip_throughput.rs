//! Connections and requests per second through a service VIP from a client task, against two
//! peers doing the same job on the same topology in the same run: nftables DNAT the way
//! kube-proxy's nftables mode does it (`nft_lb`), and HAProxy (TCP mode, round robin).
//!
//! A 3-node swarm (the netns fixture) runs `web`, 3 `shoal whoami` tasks (one per node), and
//! `client`, 3 more tasks pinned to node1, one per peer: every peer sends from a task netns of
//! its own over the same veth, bridge and VXLAN path to the same three backends (one on
//! node1, two across the overlay), and no peer's state can touch another's:
//!
//! - shoal: wrk in client 1 to `VIP:8080`; the tc programs on its veth balance each new flow.
//! - nftables: wrk in client 2 to `198.18.0.1:8080`, an address nobody has, routed out of
//!   `eth0`; the client's own nftables table DNATs it (`numgen inc mod 3`) to a backend in the
//!   output hook, and conntrack undoes it on replies. shoal's programs see plain task-to-task
//!   traffic (no VIP) and pass it.
//! - HAProxy: in client 3's netns (a sidecar: the only place on node1 from where it can reach
//!   the overlay), listening on 127.0.0.1:8081; wrk there connects over loopback and HAProxy
//!   opens its own connection to a backend per client connection.
//!
//! One client task per peer, not one for all: an nftables NAT table turns conntrack on for
//! every packet of its netns, which would tax the other peers too; and shoal's flow entries
//! outlive closed connections, so the reply entry of an earlier VIP connection would rewrite
//! the replies of a later direct (nftables- or HAProxy-made) connection to the same backend
//! that reuses its client port.
//!
//! Requests/s: wrk on keep-alive connections. Connections/s: the same wrk with
//! `Connection: close`, so every request is a new TCP connection (connect, GET, close), the
//! load balancer's new-flow path each time.

use std::{
    collections::BTreeSet,
    fs::File,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use shoal_dataplane::LbTable;
use shoal_tests::{
    Cluster,
    task_net::{http_from, in_netns, task_netns},
};

use crate::{
    nft_lb,
    support::{
        Placed, cli, create_whoami, median, network_id, nsenter, output, running, version, vip,
    },
};

const NETWORK: &str = "bench_net";
const PORT: u16 = 8080;
const BACKENDS: usize = 3;
/// The address the nftables peer balances: TEST-NET-2 (RFC 2544), which no task has.
const NFT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const HAPROXY_PORT: u16 = 8081;
/// wrk: threads, connections, and seconds per run.
const THREADS: u32 = 1;
const CONNECTIONS: u32 = 16;
const SECONDS: u32 = 4;
const WARMUP_SECONDS: u32 = 1;
/// Rounds of every peer and mode back to back; the median is shown.
const ROUNDS: usize = 5;

pub fn run() -> anyhow::Result<()> {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    cli(&cluster, 0, &["network", "create", NETWORK])?;
    let port = PORT.to_string();
    create_whoami(&cluster, NETWORK, "web", BACKENDS, &port, &[])?;
    let web = running(&cluster, "web", BACKENDS)?;
    let nodes: BTreeSet<usize> = web.iter().map(|t| t.node).collect();
    ensure!(
        nodes.len() == BACKENDS,
        "web's tasks are not one per node: {web:?}"
    );
    let constraint = format!("node.hostname=={}", cluster.nodes[0].name);
    create_whoami(
        &cluster,
        NETWORK,
        "client",
        3,
        &port,
        &["--constraint", &constraint],
    )?;
    let clients = running(&cluster, "client", 3)?;
    let network = network_id(&cluster, NETWORK)?;
    let vip = vip(&cluster, "web", &network)?;
    let netns = |t: &Placed| task_netns(&cluster.nodes[t.node].state_dir(), &t.id);
    let backends: BTreeSet<Ipv4Addr> = web.iter().map(|t| t.ip).collect();
    let names: BTreeSet<String> = web.iter().map(|t| t.name.clone()).collect();

    let peers = Peers::start(
        [netns(&clients[0]), netns(&clients[1]), netns(&clients[2])],
        vip,
        &backends,
    )?;
    // Every peer must reach all three backends before anything is measured (the VIP's
    // backends reach node1 by gossip, so shoal's may take a moment).
    for peer in &peers.peers {
        peer.wait_balanced(&names)
            .map_err(|e| peers.explain(e))
            .with_context(|| format!("checking {}", peer.name))?;
    }
    for peer in &peers.peers {
        for mode in Mode::ALL {
            wrk(peer, mode, WARMUP_SECONDS).map_err(|e| peers.explain(e))?;
        }
    }
    let mut results: Vec<[Vec<Run>; 2]> = peers.peers.iter().map(|_| Default::default()).collect();
    // Peers interleaved run by run, starting with another one each round, so drift on the
    // machine (and what one run leaves behind, such as TIME_WAIT sockets) hits all alike.
    let count = peers.peers.len();
    for round in 0..ROUNDS {
        for (m, mode) in Mode::ALL.into_iter().enumerate() {
            for p in (0..count).map(|i| (i + round) % count) {
                let run = wrk(&peers.peers[p], mode, SECONDS).map_err(|e| peers.explain(e))?;
                results[p][m].push(run);
            }
        }
    }
    let haproxy = version("haproxy", "-v");
    let wrk_version = version("wrk", "--version");
    let names: Vec<&'static str> = peers.peers.iter().map(|p| p.name).collect();
    drop(peers);
    drop(cluster);

    println!(
        "vip-throughput: {BACKENDS} x shoal whoami (one per node) behind each peer, client tasks \
         on node1; {wrk_version} -t{THREADS} -c{CONNECTIONS}, median of {ROUNDS} rounds of \
         {SECONDS} s; {haproxy}"
    );
    println!(
        "{:<44} {:>12} {:>8} {:>12} {:>8}",
        "peer", "requests/s", "errors", "conns/s", "errors"
    );
    let medians: Vec<[f64; 2]> = results
        .iter()
        .map(|r| {
            r.clone()
                .map(|runs| median(runs.iter().map(|r| r.rate).collect()))
        })
        .collect();
    for ((name, result), m) in names.iter().zip(&results).zip(&medians) {
        let errors = |runs: &[Run]| runs.iter().map(|r| r.errors).sum::<u64>();
        println!(
            "{name:<44} {:>12.0} {:>8} {:>12.0} {:>8}",
            m[0],
            errors(&result[0]),
            m[1],
            errors(&result[1])
        );
    }
    for (i, peer) in [(1, "nftables"), (2, "haproxy")] {
        println!(
            "{:<44} {:>12.2} {:>8} {:>12.2}",
            format!("shoal / {peer}"),
            medians[0][0] / medians[i][0],
            "",
            medians[0][1] / medians[i][1]
        );
    }
    println!("per round (requests/s, conns/s):");
    for (name, result) in names.iter().zip(&results) {
        let rounds: Vec<String> = (0..ROUNDS)
            .map(|i| format!("{:.0} {:.0}", result[0][i].rate, result[1][i].rate))
            .collect();
        println!("  {name:<42} {}", rounds.join(" | "));
    }
    Ok(())
}

/// How wrk drives a peer.
#[derive(Clone, Copy)]
enum Mode {
    /// Keep-alive connections: requests per second.
    KeepAlive,
    /// `Connection: close`: every request on a new connection.
    Close,
}

impl Mode {
    const ALL: [Mode; 2] = [Mode::KeepAlive, Mode::Close];
}

/// One wrk run: requests per second, and socket errors plus non-2xx answers.
#[derive(Clone, Copy, Debug)]
struct Run {
    rate: f64,
    errors: u64,
}

/// A way of reaching the backends from a client task.
struct Peer {
    name: &'static str,
    /// The client task's netns, where wrk runs.
    netns: PathBuf,
    /// Where wrk sends its requests.
    target: SocketAddr,
}

impl Peer {
    /// Waits (bounded) until new connections through the peer reach every backend.
    fn wait_balanced(&self, backends: &BTreeSet<String>) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = BTreeSet::new();
        let mut last_error = String::new();
        while Instant::now() < deadline {
            match http_from(&self.netns, self.target) {
                Ok(body) => {
                    let name = body
                        .lines()
                        .find_map(|l| l.strip_prefix("Name: "))
                        .unwrap_or_default();
                    ensure!(
                        backends.contains(name),
                        "{} answered from {name:?}, not a web task:\n{body}",
                        self.target
                    );
                    seen.insert(name.to_string());
                    if seen == *backends {
                        return Ok(());
                    }
                }
                Err(e) => {
                    last_error = e.to_string();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        bail!(
            "{} reached {seen:?} of {backends:?} in 30 s (last error: {last_error})",
            self.target
        )
    }
}

/// The three peers, and what the nftables and HAProxy ones need; dropping it (also on error or
/// panic) stops HAProxy, removes the nftables table and the route, and the scratch directory.
struct Peers {
    peers: Vec<Peer>,
    haproxy: Option<Child>,
    /// Config and log of HAProxy.
    dir: PathBuf,
    nft_netns: PathBuf,
    nft_loaded: bool,
    route_added: bool,
}

impl Peers {
    fn start(
        [shoal, nft, haproxy]: [PathBuf; 3],
        vip: Ipv4Addr,
        backends: &BTreeSet<Ipv4Addr>,
    ) -> anyhow::Result<Peers> {
        let dir = std::env::temp_dir().join(format!("shoal-bench-vip-{}", std::process::id()));
        let mut peers = Peers {
            peers: vec![
                Peer {
                    name: "shoal VIP (eBPF tc DNAT)",
                    netns: shoal,
                    target: SocketAddr::new(vip.into(), PORT),
                },
                Peer {
                    name: "nftables DNAT (numgen inc, conntrack)",
                    netns: nft.clone(),
                    target: SocketAddr::new(NFT_VIP.into(), PORT),
                },
                Peer {
                    name: "HAProxy (tcp, roundrobin, in the client)",
                    netns: haproxy.clone(),
                    target: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), HAPROXY_PORT),
                },
            ],
            haproxy: None,
            dir: dir.clone(),
            nft_netns: nft.clone(),
            nft_loaded: false,
            route_added: false,
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

        // nftables: the address routed out of eth0 (so the source is the task's overlay
        // address), then the table.
        let nft_vip = format!("{NFT_VIP}/32");
        output(nsenter(&nft, "ip").args(["route", "add", &nft_vip, "dev", "eth0"]))?;
        peers.route_added = true;
        let table: LbTable = [(NFT_VIP, backends.clone())].into();
        nft_lb::apply(&nft, &nft_lb::ruleset(&table)).context("loading the nftables peer")?;
        peers.nft_loaded = true;

        // HAProxy, in the foreground (-db), logging its own errors to a file.
        let config = dir.join("haproxy.cfg");
        std::fs::write(&config, haproxy_config(backends)).context("writing haproxy.cfg")?;
        let log = File::create(dir.join("haproxy.log")).context("creating haproxy.log")?;
        let child = nsenter(&haproxy, "haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting haproxy (is it installed? run scripts/setup.sh)")?;
        peers.haproxy = Some(child);
        let listening = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), HAPROXY_PORT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while in_netns(&haproxy, || {
            std::net::TcpStream::connect_timeout(&listening, Duration::from_millis(200))
        })
        .is_err()
        {
            if let Some(status) = peers.haproxy.as_mut().and_then(|c| c.try_wait().ok()?) {
                let e = anyhow::anyhow!("haproxy exited: {status}");
                return Err(peers.explain(e));
            }
            if Instant::now() > deadline {
                let e = anyhow::anyhow!("haproxy not listening on {listening} after 5 s");
                return Err(peers.explain(e));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(peers)
    }

    /// Adds HAProxy's log to an error.
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let log = std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default();
        if log.trim().is_empty() {
            e
        } else {
            e.context(format!("haproxy's log:\n{}", log.trim()))
        }
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        if let Some(child) = &mut self.haproxy {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.nft_loaded
            && let Err(e) = nft_lb::apply(&self.nft_netns, &nft_lb::delete())
        {
            eprintln!("vip-throughput: removing the nftables table: {e:#}");
        }
        if self.route_added {
            let _ = nsenter(&self.nft_netns, "ip")
                .args(["route", "del", &format!("{NFT_VIP}/32"), "dev", "eth0"])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// HAProxy's configuration: a TCP listener balancing round robin over the backends, no health
/// checks (shoal and nftables have none either), no logging.
fn haproxy_config(backends: &BTreeSet<Ipv4Addr>) -> String {
    let mut config = format!(
        "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
         timeout client 30s\n    timeout server 30s\n\nlisten vip\n    bind \
         127.0.0.1:{HAPROXY_PORT}\n    balance roundrobin\n"
    );
    for (i, backend) in backends.iter().enumerate() {
        config.push_str(&format!("    server web{i} {backend}:{PORT}\n"));
    }
    config
}

/// One wrk run through `peer`.
fn wrk(peer: &Peer, mode: Mode, seconds: u32) -> anyhow::Result<Run> {
    let mut command = nsenter(&peer.netns, "wrk");
    command
        .arg(format!("-t{THREADS}"))
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "2s"]);
    if let Mode::Close = mode {
        command.args(["-H", "Connection: close"]);
    }
    command.arg(format!("http://{}/", peer.target));
    let out = output(command.stdin(Stdio::null())).context("running wrk")?;
    let report = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&report).with_context(|| format!("{}: unexpected wrk output:\n{report}", peer.name))
}

/// Requests/sec, and the socket errors and non-2xx/3xx answers wrk reports.
fn parse_wrk(report: &str) -> anyhow::Result<Run> {
    let rate = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Requests/sec")?;
    let mut errors = 0;
    for line in report.lines().map(str::trim) {
        if let Some(counts) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += counts
                .split(',')
                .filter_map(|c| c.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok(Run { rate, errors })
}
