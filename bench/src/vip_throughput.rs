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
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{Context as _, ensure};
use shoal_dataplane::LbTable;
use shoal_tests::{Cluster, task_net::task_netns};

use crate::{
    nft_lb,
    support::{
        Haproxy, Placed, WrkPeer, cli, create_whoami, haproxy_config, network_id, nsenter, output,
        print_wrk_table, running, vip, wrk_conditions, wrk_rounds,
    },
};

const NETWORK: &str = "bench_net";
const PORT: u16 = 8080;
const BACKENDS: usize = 3;
/// The address the nftables peer balances: TEST-NET-2 (RFC 2544), which no task has.
const NFT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const HAPROXY_PORT: u16 = 8081;

pub fn run() -> anyhow::Result<()> {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);
    cli(&cluster, 0, &["network", "create", NETWORK])?;
    let port = PORT.to_string();
    create_whoami(&cluster, Some(NETWORK), "web", BACKENDS, &port, &[])?;
    let web = running(&cluster, "web", BACKENDS)?;
    let nodes: BTreeSet<usize> = web.iter().map(|t| t.node).collect();
    ensure!(
        nodes.len() == BACKENDS,
        "web's tasks are not one per node: {web:?}"
    );
    let constraint = format!("node.hostname=={}", cluster.nodes[0].name);
    create_whoami(
        &cluster,
        Some(NETWORK),
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
        peer.wait_balanced("Name: ", &names)
            .map_err(|e| peers.explain(e))
            .with_context(|| format!("checking {}", peer.name))?;
    }
    let results = wrk_rounds(peers.peers.len(), |p, mode, seconds| {
        peers.peers[p].wrk(mode, seconds)
    })
    .map_err(|e| peers.explain(e))?;
    let conditions = wrk_conditions();
    let names: Vec<&'static str> = peers.peers.iter().map(|p| p.name).collect();
    drop(peers);
    drop(cluster);

    println!(
        "vip-throughput: {BACKENDS} x shoal whoami (one per node) behind each peer, client tasks \
         on node1; {conditions}"
    );
    print_wrk_table(&names, &results, &[(1, "nftables"), (2, "haproxy")]);
    Ok(())
}

/// The three peers, and what the nftables and HAProxy ones need; dropping it (also on error or
/// panic) stops HAProxy, removes the nftables table and the route, and the scratch directory.
struct Peers {
    peers: Vec<WrkPeer>,
    haproxy: Option<Haproxy>,
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
                WrkPeer {
                    name: "shoal VIP (eBPF tc DNAT)",
                    netns: shoal,
                    target: SocketAddr::new(vip.into(), PORT),
                },
                WrkPeer {
                    name: "nftables DNAT (numgen inc, conntrack)",
                    netns: nft.clone(),
                    target: SocketAddr::new(NFT_VIP.into(), PORT),
                },
                WrkPeer {
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

        // HAProxy, listening on loopback in the client, a connection to a backend for each.
        let listening = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), HAPROXY_PORT);
        let servers: Vec<SocketAddr> = backends
            .iter()
            .map(|b| SocketAddr::new((*b).into(), PORT))
            .collect();
        let config = haproxy_config(listening, &servers);
        peers.haproxy = Some(Haproxy::start(&haproxy, &dir, &config, listening)?);
        Ok(peers)
    }

    /// Adds HAProxy's log to an error.
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        Haproxy::explain_any(self.haproxy.as_ref(), e)
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        drop(self.haproxy.take());
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
