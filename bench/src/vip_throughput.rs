//! Connections and requests per second through a service VIP from a client task, against two
//! peers doing the same job on the same topology in the same run: nftables DNAT the way
//! kube-proxy's nftables mode does it (`nft_lb`), and HAProxy (TCP mode, round robin); against
//! the physical limit, the same wrk straight to the backends with no load balancer; and the
//! machine's CPU time per 1,000 requests of each, minus the direct one's: what each load
//! balancer itself costs.
//!
//! A 3-node swarm (the netns fixture) runs `web`, 3 `shoal whoami` tasks (one per node), and
//! `client`, 5 more tasks pinned to node1, one per peer: every peer sends from a task netns of
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
//! - shoal, socket LB: wrk in client 4 to `VIP:8080`, from inside a cgroup v2 directory of its
//!   own (`shoal-bench-vip-<pid>` under the hierarchy's root) that the bench's own copy of the
//!   socket-level balancer serves as a node's task subtree (`Dataplane::attach_socket_lb` on
//!   the root, `serve_tasks_at_socket` on the directory, the VIP and its backends programmed
//!   with `LoadBalancer::apply`): `shoal_connect4` rewrites each connect() to a backend, and
//!   the tc programs see plain task-to-task traffic (checked: node1's flow table holds no
//!   entry of client 4's). The agent's own socket balancer serves only its tasks' cgroups,
//!   which wrk is not in.
//! - direct: wrk in client 5 straight to the three backends' addresses, no load balancer,
//!   spread over them as round robin would (`WrkPeer::wrk`: with keep-alive one wrk whose
//!   thread `i` connects to backend `i` modulo 3; with `Connection: close` the bench's own
//!   client, `connect_loop`, whose every thread sends its consecutive connections to the
//!   backends in turn). Every peer's client has the same shape (`WrkShape`: 15 threads of
//!   one connection), so the direct row is the others' load without the balancer.
//!
//! One client task per peer, not one for all: an nftables NAT table turns conntrack on for
//! every packet of its netns, which would tax the other peers too; and shoal's flow entries
//! outlive closed connections, so the reply entry of an earlier VIP connection would rewrite
//! the replies of a later direct (nftables- or HAProxy-made) connection to the same backend
//! that reuses its client port.
//!
//! Requests/s: wrk on keep-alive connections. Connections/s: `connect_loop`, every request
//! on a new TCP connection (connect, GET with `Connection: close`, close), the load
//! balancer's new-flow path each time.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use shoal_dataplane::{Dataplane, LbTable, bpffs, sock_lb};
use shoal_tests::{Cluster, task_net::task_netns};

use crate::{
    nft_lb,
    support::{
        Haproxy, Placed, WrkPeer, WrkShape, cli, create_whoami, haproxy_config, load_average,
        machine_busy, network_id, nsenter, output, print_wrk_table, running, vip, wrk_conditions,
        wrk_rounds,
    },
};

const NETWORK: &str = "bench_net";
const PORT: u16 = 8080;
const BACKENDS: usize = 3;
/// The address the nftables peer balances: TEST-NET-2 (RFC 2544), which no task has.
const NFT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const HAPROXY_PORT: u16 = 8081;
/// Client tasks: one per peer.
const CLIENTS: usize = 5;
/// Indexes into [`Peers::peers`].
const SOCKET_LB: usize = 3;
const DIRECT: usize = 4;
/// The peers' short names, for the ratios.
const SHORTS: [&str; CLIENTS] = ["shoal", "nftables", "haproxy", "shoal socket LB", "direct"];

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
        CLIENTS,
        &port,
        &["--constraint", &constraint],
    )?;
    let clients = running(&cluster, "client", CLIENTS)?;
    let network = network_id(&cluster, NETWORK)?;
    let vip = vip(&cluster, "web", &network)?;
    let netns = |t: &Placed| task_netns(&cluster.nodes[t.node].state_dir(), &t.id);
    let backends: BTreeSet<Ipv4Addr> = web.iter().map(|t| t.ip).collect();
    let names: BTreeSet<String> = web.iter().map(|t| t.name.clone()).collect();

    let netnses: [PathBuf; CLIENTS] = std::array::from_fn(|i| netns(&clients[i]));
    let peers = Peers::start(netnses, vip, &backends)?;
    // Every peer must reach all three backends before anything is measured (the VIP's
    // backends reach node1 by gossip, so shoal's may take a moment).
    for peer in &peers.peers {
        peer.wait_balanced("Name: ", &names)
            .map_err(|e| peers.explain(e))
            .with_context(|| format!("checking {}", peer.name))?;
    }
    // The socket LB peer's connections must have gone to the backends at connect(): node1's
    // tc programs then made no flow entry for them.
    let pin_dir = bpffs::node_pin_dir(Path::new(bpffs::DEFAULT_ROOT), &cluster.nodes[0].node_id());
    let socket_client = clients[SOCKET_LB].ip;
    let check_no_nat = || -> anyhow::Result<()> {
        let entries = flow_entries_of(&pin_dir, socket_client)?;
        ensure!(
            entries == 0,
            "the socket LB peer's connections were NAT-ed by tc: {entries} flow entries of \
             {socket_client} on node1"
        );
        Ok(())
    };
    check_no_nat()?;
    let idle = machine_busy(Duration::from_secs(2))?;
    let results = wrk_rounds(peers.peers.len(), |p, mode, seconds| {
        peers.peers[p].wrk(mode, seconds)
    })
    .map_err(|e| peers.explain(e))?;
    let load_after = load_average();
    // (Entries could have been evicted by the tc peer's since: this one can only miss.)
    check_no_nat()?;
    let conditions = wrk_conditions(peers.peers[0].shape);
    let names: Vec<&'static str> = peers.peers.iter().map(|p| p.name).collect();
    drop(peers);
    drop(cluster);

    println!(
        "vip-throughput: {BACKENDS} x shoal whoami (one per node) behind each peer, client tasks \
         on node1; {conditions}"
    );
    println!("machine before the rounds: {idle}; load average after: {load_after}");
    print_wrk_table(
        &names,
        &SHORTS,
        &results,
        DIRECT,
        &[
            (0, DIRECT),
            (0, 1),
            (0, 2),
            (SOCKET_LB, DIRECT),
            (SOCKET_LB, 1),
            (SOCKET_LB, 2),
            (SOCKET_LB, 0),
        ],
    );
    Ok(())
}

/// How many entries of the VIP flow table pinned in `pin_dir` are `client`'s (forward entries
/// from it, reply entries to it).
fn flow_entries_of(pin_dir: &Path, client: Ipv4Addr) -> anyhow::Result<usize> {
    let client = u32::from_ne_bytes(client.octets());
    let flows = sock_lb::pinned_vip_flows(pin_dir)
        .with_context(|| format!("reading the VIP flow table in {}", pin_dir.display()))?;
    Ok(flows
        .iter()
        .filter(|(key, _)| key.src_ip == client || key.dst_ip == client)
        .count())
}

/// The socket LB peer's balancer: the bench's own copy of shoal's programs, its socket-level
/// programs attached to the cgroup v2 root, serving the cgroup `cgroup` (wrk's) as a node's
/// task subtree. Dropping it (also on error or panic) detaches them (the links are the
/// [`Dataplane`]'s) and removes the cgroup.
struct SocketLb {
    dataplane: Option<Dataplane>,
    cgroup: PathBuf,
}

impl SocketLb {
    fn start(vip: Ipv4Addr, backends: &BTreeSet<Ipv4Addr>) -> anyhow::Result<SocketLb> {
        let root = sock_lb::cgroup2_root().context("no cgroup v2 hierarchy is mounted")?;
        let cgroup = root.join(format!("shoal-bench-vip-{}", std::process::id()));
        std::fs::create_dir(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;
        let mut socket_lb = SocketLb {
            dataplane: None,
            cgroup,
        };
        let dataplane = socket_lb
            .dataplane
            .insert(Dataplane::load(None).context("loading the eBPF programs")?);
        let table: LbTable = [(vip, backends.clone())].into();
        dataplane
            .lb_mut()
            .apply(&table)
            .context("programming the VIP")?;
        dataplane
            .attach_socket_lb(&root)
            .context("attaching the socket-level balancer")?;
        dataplane
            .serve_tasks_at_socket(&socket_lb.cgroup)
            .context("serving wrk's cgroup")?;
        Ok(socket_lb)
    }
}

impl Drop for SocketLb {
    fn drop(&mut self) {
        drop(self.dataplane.take());
        // wrk has been waited for, so the cgroup is empty; its last process may take a moment
        // to leave it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Err(e) = std::fs::remove_dir(&self.cgroup) {
            if e.kind() == std::io::ErrorKind::NotFound {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("vip-throughput: removing {}: {e}", self.cgroup.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The five peers, and what the nftables, HAProxy and socket LB ones need; dropping it (also on
/// error or panic) stops HAProxy, removes the nftables table and the route, the socket LB's
/// programs and cgroup, and the scratch directory.
struct Peers {
    peers: Vec<WrkPeer>,
    haproxy: Option<Haproxy>,
    socket_lb: Option<SocketLb>,
    /// Config and log of HAProxy.
    dir: PathBuf,
    nft_netns: PathBuf,
    nft_loaded: bool,
    route_added: bool,
}

impl Peers {
    fn start(
        [shoal, nft, haproxy, socket, direct]: [PathBuf; CLIENTS],
        vip: Ipv4Addr,
        backends: &BTreeSet<Ipv4Addr>,
    ) -> anyhow::Result<Peers> {
        let dir = std::env::temp_dir().join(format!("shoal-bench-vip-{}", std::process::id()));
        let servers: Vec<SocketAddr> = backends
            .iter()
            .map(|b| SocketAddr::new((*b).into(), PORT))
            .collect();
        let shape = WrkShape::over(servers.len());
        let peer = |name, netns, target| WrkPeer::new(name, netns, target, shape);
        let mut peers = Peers {
            peers: vec![
                peer(
                    "shoal VIP (eBPF tc DNAT)",
                    shoal,
                    SocketAddr::new(vip.into(), PORT),
                ),
                peer(
                    "nftables DNAT (numgen inc, conntrack)",
                    nft.clone(),
                    SocketAddr::new(NFT_VIP.into(), PORT),
                ),
                peer(
                    "HAProxy (tcp, roundrobin, in the client)",
                    haproxy.clone(),
                    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), HAPROXY_PORT),
                ),
                peer(
                    "shoal VIP, socket LB (cgroup connect4)",
                    socket,
                    SocketAddr::new(vip.into(), PORT),
                ),
                WrkPeer {
                    also: servers[1..].to_vec(),
                    ..peer("direct: wrk to each backend, no LB", direct, servers[0])
                },
            ],
            haproxy: None,
            socket_lb: None,
            dir: dir.clone(),
            nft_netns: nft.clone(),
            nft_loaded: false,
            route_added: false,
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

        // Every client reuses its TIME_WAIT ports after a second (what a load generator is
        // given; the client closes first). Without it a peer with one destination (the VIP,
        // nftables' address) runs out of ports to it, 28,232 in the default range against
        // about 26,000 connections a run, while the direct and socket LB peers, whose
        // connections go to three addresses, have three times the room: rounds of the first
        // fell to 55-65% with the CPU per connection up by half (connect() searching).
        for netns in peers.peers.iter().map(|p| &p.netns) {
            output(nsenter(netns, "sysctl").args(["-q", "-w", "net.ipv4.tcp_tw_reuse=1"]))?;
        }

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
        let config = haproxy_config(listening, &servers);
        peers.haproxy = Some(Haproxy::start(&haproxy, &dir, &config, listening)?);

        // The socket LB: wrk in a cgroup of its own, which the bench's balancer serves.
        let socket_lb = peers
            .socket_lb
            .insert(SocketLb::start(vip, backends).context("starting the socket LB peer")?);
        peers.peers[SOCKET_LB].cgroup = Some(socket_lb.cgroup.clone());
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
        drop(self.socket_lb.take());
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
