//! Connections and requests per second from an outside client to a published port (the
//! ingress routing mesh), against two peers doing the same job on the same node, topology and
//! tasks in the same run: nftables DNAT + masquerade, and HAProxy (TCP mode, round robin);
//! against the limit, wrk on node1 straight to the tasks with no load balancer; and the
//! machine's CPU time per 1,000 requests of each, minus the direct one's: what each load
//! balancer itself costs.
//!
//! A 3-node swarm (the netns fixture) runs `web`, 2 `shoal whoami --port 80` tasks kept off
//! node1 and published `-p 8080:80`. Every peer receives on node1, the node with no task, so
//! every request crosses the `ingress` overlay to a task on node2 or node3, and wrk runs in
//! the fixture's outside client (on the underlay, not in the swarm):
//!
//! - shoal: wrk to `node1:8080`, in ingress mode's default (the client's address kept): the
//!   XDP program on node1's underlay interface balances each new connection, NATs its
//!   destination to `task:80` and sends it in VXLAN to the task's node; the task's answers
//!   leave by its gateway bridge, where the reply program steers them back over `ingress` to
//!   node1, whose reply program puts `node1:8080` back and sends them straight out of the
//!   underlay. (More work than a source NAT: the task sees the client.)
//! - nftables: wrk to `node1:8081`; a table in node1's netns DNATs it in prerouting (`numgen
//!   inc mod 2`) to a task's ingress address and masquerades it in postrouting (so the task
//!   answers node1, as with shoal); node1 routes it out of `shoal_ingress` onto the same
//!   overlay, and conntrack undoes both on the answers.
//! - HAProxy: wrk to `node1:8082`, HAProxy in node1's netns, a connection of its own to a
//!   task's ingress address per client connection (also from node1's ingress address).
//! - direct: wrk in node1's netns straight to the tasks' ingress addresses, port 80, over the
//!   same overlay, no load balancer, spread over the tasks as round robin would
//!   (`WrkPeer::wrk`). The outside client has no route to the tasks, so this is the path every peer's
//!   requests take from node1 on, without the client -> node1 hop: a little above the
//!   physical limit of what any load balancer on node1 can reach.
//!
//! 8081 and 8082 are not published, so shoal's programs pass that traffic (and the reply
//! program passes answers that are no mesh flow's). What one peer leaves behind must not touch
//! another's traffic:
//! - Ports. A task sees the other peers' connections come from node1's ingress address and
//!   shoal's from the client's, and what tells them apart on the client's side is the port.
//!   shoal's flow entries outlive closed connections, keyed by the client's port: a task's
//!   answer to that port is taken by the reply program whenever a shoal flow from it is still
//!   known. And a task's TIME_WAIT socket for a port accepts a new connection's SYN
//!   only with a newer TCP timestamp than the last connection's, which holds for connections
//!   from one host (the client) but not across hosts (the client's, then HAProxy's on node1):
//!   a refused SYN costs a 1 s retransmit. So each peer's connections reach the tasks from
//!   ports of their own: shoal's from the client's ports 1024-25499, nftables' from the
//!   client's 25500-49999 (its `ip_local_port_range`, set before each run; the masquerade keeps
//!   them, restricted to the same range), HAProxy's and direct's from node1's 50000-60999
//!   (one host's connections, its TCP timestamps only grow).
//! - The client's TIME_WAIT sockets (the client closes first) hold its ports for 60 s: at thousands
//!   of connections per second, the client would soon spend its time searching for a free port. The
//!   client reuses them after 1 s (`tcp_tw_reuse=1`, what a load generator is given), for
//!   every peer alike; so does node1, where the direct peer's wrk runs (and HAProxy connects).
//! - An nftables NAT table turns conntrack on for every packet of its netns, which would tax
//!   shoal's and HAProxy's traffic too: the table is loaded for nftables' runs only (and its
//!   balance check), and deleted after each.
//!
//! Requests/s: wrk on keep-alive connections. Connections/s: the bench's own client
//! (`connect_loop`, of the same shape; its direct row's threads send their consecutive
//! connections to the tasks in turn, as round robin does), every request on a new TCP
//! connection (connect, GET with `Connection: close`, close), the new-flow path each time.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, ensure};
use shoal_tests::Cluster;

use crate::{
    nft_lb,
    support::{
        Haproxy, Mode, Placed, Run, WrkPeer, WrkShape, create_whoami, haproxy_config, load_average,
        machine_busy, nsenter, output, print_wrk_table, running, wrk_conditions, wrk_rounds,
    },
};

const TASKS: usize = 2;
const PUBLISHED: u16 = 8080;
const TARGET: u16 = 80;
const NFT_PORT: u16 = 8081;
const HAPROXY_PORT: u16 = 8082;
const NFT_TABLE: &str = "shoal_bench_mesh";
/// Ports each peer's connections reach the tasks from (see the module's notes): the client's
/// for shoal (its NAT ports) and nftables (kept by the masquerade), node1's for HAProxy.
const SHOAL_PORTS: (u16, u16) = (1024, 25499);
const NFT_PORTS: (u16, u16) = (25500, 49999);
const HAPROXY_PORTS: (u16, u16) = (50000, 60999);
/// Indexes into [`Peers::peers`].
const NFT: usize = 1;
const DIRECT: usize = 3;
/// The peers' short names, for the ratios.
const SHORTS: [&str; 4] = ["shoal", "nftables", "haproxy", "direct"];

pub fn run() -> anyhow::Result<()> {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    let node1 = &cluster.nodes[0];
    let constraint = format!("node.hostname!={}", node1.name);
    let publish = format!("{PUBLISHED}:{TARGET}");
    let extra = ["-p", &publish, "--constraint", &constraint];
    create_whoami(&cluster, None, "web", TASKS, &TARGET.to_string(), &extra)?;
    let web = running(&cluster, "web", TASKS)?;
    ensure!(
        web.iter()
            .all(|t| t.node != 0 && t.ip.octets()[..2] == [10, 255]),
        "web's tasks are not on ingress, off node1: {web:?}"
    );
    let ids: BTreeSet<String> = web.iter().map(|t| t.id.clone()).collect();

    let mut peers = Peers::start(&cluster, &web)?;
    // Every peer must reach both tasks before anything is measured (node1 learns the tasks'
    // endpoints by gossip, so shoal's may take a moment).
    for p in 0..peers.peers.len() {
        peers
            .with(p, |peer| peer.wait_balanced("Hostname: ", &ids))
            .map_err(|e| peers.explain(e))
            .with_context(|| format!("checking {}", peers.peers[p].name))?;
    }
    let idle = machine_busy(std::time::Duration::from_secs(2))?;
    let results = wrk_rounds(peers.peers.len(), |p, mode, seconds| {
        peers.wrk(p, mode, seconds)
    })
    .map_err(|e| peers.explain(e))?;
    let load_after = load_average();
    let conditions = wrk_conditions(peers.peers[0].shape);
    let names: Vec<&'static str> = peers.peers.iter().map(|p| p.name).collect();
    drop(peers);
    drop(cluster);

    println!(
        "mesh-throughput: {TASKS} x shoal whoami on node2 and node3, every peer on node1 (no \
         task) from the outside client; {conditions}"
    );
    println!("machine before the rounds: {idle}; load average after: {load_after}");
    print_wrk_table(
        &names,
        &SHORTS,
        &results,
        DIRECT,
        &[(0, DIRECT), (0, NFT), (0, 2)],
    );
    Ok(())
}

/// The four peers, and what the nftables and HAProxy ones need; dropping it (also on error or
/// panic) stops HAProxy, removes the nftables table if loaded, and the scratch directory.
struct Peers {
    peers: Vec<WrkPeer>,
    haproxy: Option<Haproxy>,
    /// node1's netns, where nftables and HAProxy run.
    node: PathBuf,
    nft_script: String,
    nft_loaded: bool,
    /// HAProxy's config and log.
    dir: PathBuf,
}

impl Peers {
    fn start(cluster: &Cluster, tasks: &[Placed]) -> anyhow::Result<Peers> {
        let client = PathBuf::from(cluster.client_ns().path());
        let node = PathBuf::from(cluster.node_ns(0).path());
        let address = cluster.nodes[0].address;
        let dir = std::env::temp_dir().join(format!("shoal-bench-mesh-{}", std::process::id()));
        let to = |port| SocketAddr::new(address.into(), port);
        let servers: Vec<SocketAddr> = tasks
            .iter()
            .map(|t| SocketAddr::new(t.ip.into(), TARGET))
            .collect();
        let shape = WrkShape::over(servers.len());
        let peer = |name, netns, target| WrkPeer::new(name, netns, target, shape);
        let mut peers = Peers {
            peers: vec![
                peer(
                    "shoal routing mesh (XDP, VXLAN)",
                    client.clone(),
                    to(PUBLISHED),
                ),
                peer(
                    "nftables DNAT + masquerade (conntrack)",
                    client.clone(),
                    to(NFT_PORT),
                ),
                peer(
                    "HAProxy (tcp, roundrobin, on node1)",
                    client.clone(),
                    to(HAPROXY_PORT),
                ),
                WrkPeer {
                    also: servers[1..].to_vec(),
                    ..peer(
                        "direct: wrk on node1 to each task, no LB",
                        node.clone(),
                        servers[0],
                    )
                },
            ],
            haproxy: None,
            node: node.clone(),
            nft_script: nft_ruleset(address, tasks),
            nft_loaded: false,
            dir: dir.clone(),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

        set_port_range(&node, HAPROXY_PORTS)?;
        for netns in [&client, &node] {
            output(nsenter(netns, "sysctl").args(["-q", "-w", "net.ipv4.tcp_tw_reuse=1"]))?;
        }
        // Check the table once (it is loaded for nftables' runs only).
        peers.set_nft(true).context("loading the nftables peer")?;
        peers.set_nft(false)?;

        let listening = to(HAPROXY_PORT);
        let config = haproxy_config(listening, &servers);
        peers.haproxy = Some(Haproxy::start(&node, &dir, &config, listening)?);
        Ok(peers)
    }

    /// Runs `f` on peer `p`: with the client's ports set for `p` (node1's for the direct
    /// peer, HAProxy's range), and with the nftables table loaded around it if `p` is
    /// nftables.
    fn with<T>(
        &mut self,
        p: usize,
        f: impl FnOnce(&WrkPeer) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let ports = match p {
            NFT => NFT_PORTS,
            DIRECT => HAPROXY_PORTS,
            _ => SHOAL_PORTS,
        };
        set_port_range(&self.peers[p].netns, ports)?;
        if p == NFT {
            self.set_nft(true)?;
        }
        let result = f(&self.peers[p]);
        if p == NFT {
            self.set_nft(false)?;
        }
        result
    }

    fn wrk(&mut self, p: usize, mode: Mode, seconds: u32) -> anyhow::Result<Run> {
        self.with(p, |peer| peer.wrk(mode, seconds))
    }

    fn set_nft(&mut self, on: bool) -> anyhow::Result<()> {
        if on == self.nft_loaded {
            return Ok(());
        }
        let script = if on {
            self.nft_script.clone()
        } else {
            format!("delete table ip {NFT_TABLE}\n")
        };
        nft_lb::apply(&self.node, &script)?;
        self.nft_loaded = on;
        Ok(())
    }

    /// Adds HAProxy's log to an error.
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        Haproxy::explain_any(self.haproxy.as_ref(), e)
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        drop(self.haproxy.take());
        if let Err(e) = self.set_nft(false) {
            eprintln!("mesh-throughput: removing the nftables table: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// node1's nftables peer: `node1:8081` DNAT-ed round robin to the tasks' ingress addresses,
/// port 80, and masqueraded behind node1's ingress address, keeping the client's port (from
/// `NFT_PORTS`).
fn nft_ruleset(node: Ipv4Addr, tasks: &[Placed]) -> String {
    let t = NFT_TABLE;
    let mut s = String::new();
    let _ = writeln!(s, "add table ip {t}");
    let _ = writeln!(
        s,
        "add chain ip {t} prerouting {{ type nat hook prerouting priority -100 ; policy accept ; }}"
    );
    let _ = writeln!(
        s,
        "add chain ip {t} postrouting {{ type nat hook postrouting priority 100 ; policy accept ; }}"
    );
    let map: Vec<String> = tasks
        .iter()
        .enumerate()
        .map(|(i, task)| format!("{i} : {}", task.ip))
        .collect();
    let _ = writeln!(
        s,
        "add rule ip {t} prerouting ip daddr {node} tcp dport {NFT_PORT} dnat to numgen inc mod \
         {} map {{ {} }} : {TARGET}",
        tasks.len(),
        map.join(", ")
    );
    let addrs: Vec<String> = tasks.iter().map(|task| task.ip.to_string()).collect();
    let _ = writeln!(
        s,
        "add rule ip {t} postrouting ip daddr {{ {} }} tcp dport {TARGET} masquerade to :{}-{}",
        addrs.join(", "),
        NFT_PORTS.0,
        NFT_PORTS.1
    );
    s
}

/// Sets the `ip_local_port_range` of the netns at `netns` (for connections made from then on),
/// and checks it took.
fn set_port_range(netns: &Path, (low, high): (u16, u16)) -> anyhow::Result<()> {
    let setting = format!("net.ipv4.ip_local_port_range={low} {high}");
    output(nsenter(netns, "sysctl").args(["-q", "-w", &setting]))?;
    let out = output(nsenter(netns, "sysctl").args(["-n", "net.ipv4.ip_local_port_range"]))?;
    let now: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    ensure!(
        now == [low.to_string(), high.to_string()],
        "ip_local_port_range is {now:?}, not {low} {high}"
    );
    Ok(())
}
