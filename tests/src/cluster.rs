//! [`Cluster`]: N node namespaces and an outside client on one underlay bridge, with a real
//! `shoal agent` in every node.
//!
//! ```text
//!   <prefix>-ul:  br0 ── n1 ─┐ ── n2 ─┐ ... ── cl ─┐          (the underlay "switch")
//!   <prefix>-n1:  eth0 <─────┘  192.168.S.11/24
//!   <prefix>-n2:  eth0 <───────────────┘ 192.168.S.12/24
//!   <prefix>-cl:  eth0 <──────────────────────────┘ 192.168.S.100/24   (outside client)
//! ```
//! Each fixture's underlay lives in namespaces of its own, so fixtures run in parallel.

use std::{net::Ipv4Addr, path::PathBuf, process::Output};

use crate::{
    agent::Agent,
    names::{
        kill_tasks_under, remove_pins_under, remove_task_cgroups_under, sweep_stale, unique_prefix,
        unmount_under, work_dir,
    },
    netns::Netns,
};

/// How a node is cut off the underlay.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    /// Its bridge port goes down: no carrier, like a pulled cable.
    LinkDown,
    /// nftables in the node drops everything on eth0, in and out: the link stays up.
    NftDrop,
}

/// The client's host number on the underlay subnet.
const CLIENT_HOST: u8 = 100;
/// Node i (0-based) gets host number `NODE_HOST_BASE + i + 1`.
const NODE_HOST_BASE: u8 = 10;

pub struct Cluster {
    prefix: String,
    /// Agents, dropped (stopped) before the namespaces they run in.
    pub nodes: Vec<Agent>,
    node_ns: Vec<Netns>,
    /// The outside client: on the underlay, running no agent.
    pub client: Netns,
    /// The XDP floor on every underlay port (see [`pass_xdp_frames`]); dropped (detached)
    /// before the namespaces go.
    _underlay_xdp: shoal_dataplane::Dataplane,
    underlay: Netns,
    subnet: [u8; 3],
}

impl Cluster {
    /// Builds the topology and starts an agent on each of `n` nodes, waiting until every one
    /// answers `shoal info`.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with_env(n, &[])
    }

    /// [`Cluster::start`], with `env` added to every agent's environment (e.g.
    /// `[("SHOAL_INSTANT_STOP", "1")]`).
    pub fn start_with_env(n: usize, env: &[(&str, &str)]) -> Cluster {
        let mut cluster = Cluster::build(n);
        for agent in &mut cluster.nodes {
            agent
                .extra_env
                .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            agent.start();
        }
        cluster
    }

    /// Builds the topology without starting agents.
    pub fn build(n: usize) -> Cluster {
        assert!((1..=50).contains(&n), "a cluster has 1 to 50 nodes");
        sweep_stale();
        let prefix = unique_prefix();
        let work = work_dir(&prefix);
        std::fs::create_dir_all(&work).unwrap();
        // A subnet per fixture; they cannot clash anyway, as each underlay is its own netns.
        let third = (std::process::id() as u8).wrapping_add(prefix.len() as u8) % 250 + 1;
        let subnet = [192, 168, third];

        let underlay = Netns::create(&format!("{prefix}-ul"));
        underlay.ip(&["link", "add", "br0", "type", "bridge"]);
        underlay.ip(&["link", "set", "br0", "up"]);

        let client = Netns::create(&format!("{prefix}-cl"));
        plug(&underlay, &client, "cl", host(subnet, CLIENT_HOST));
        // The client stands for a host on a real wire, whose frames carry full checksums: a
        // veth from a local socket would leave them partial for the receiver's offload, which
        // only the kernel (not an XDP program that rewrites the frame) can finish.
        ethtool(&client, &["-K", "eth0", "tx", "off"]);

        let mut node_ns = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("node{}", i + 1);
            let ns = Netns::create(&format!("{prefix}-n{}", i + 1));
            let address = host(subnet, NODE_HOST_BASE + i as u8 + 1);
            plug(&underlay, &ns, &port_name(i), address);
            nodes.push(Agent::new(&name, address, &ns.path(), work.join(&name)));
            node_ns.push(ns);
        }
        let mut ports: Vec<String> = (0..n).map(port_name).collect();
        ports.push("cl".into());
        Cluster {
            prefix,
            nodes,
            node_ns,
            client,
            _underlay_xdp: pass_xdp_frames(&underlay, &ports),
            underlay,
            subnet,
        }
    }

    /// The prefix every resource of this fixture is named with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Work directory: node state dirs, sockets and logs.
    pub fn work_dir(&self) -> PathBuf {
        work_dir(&self.prefix)
    }

    /// Node `i`'s namespace (0-based).
    pub fn node_ns(&self, i: usize) -> &Netns {
        &self.node_ns[i]
    }

    /// Every namespace of the fixture.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut all = vec![self.underlay.name(), self.client.name()];
        all.extend(self.node_ns.iter().map(Netns::name));
        all
    }

    /// The outside client's namespace (on the underlay, not in the swarm).
    pub fn client_ns(&self) -> &Netns {
        &self.client
    }

    pub fn client_address(&self) -> Ipv4Addr {
        host(self.subnet, CLIENT_HOST)
    }

    /// Another host on the underlay (a router, a second client): namespace `<prefix>-<name>`
    /// with `eth0` on the underlay at host number `n` (not one of the nodes' or the client's),
    /// full checksums on what it sends, as the client. Deleted when the returned value drops.
    pub fn add_host(&self, name: &str, n: u8) -> Netns {
        assert!(
            n != CLIENT_HOST && !(NODE_HOST_BASE..=NODE_HOST_BASE + 50).contains(&n),
            "host number {n} is taken"
        );
        let ns = Netns::create(&format!("{}-{name}", self.prefix));
        plug(&self.underlay, &ns, name, host(self.subnet, n));
        ethtool(&ns, &["-K", "eth0", "tx", "off"]);
        ns
    }

    /// The address of host number `n` on the underlay (see [`Cluster::add_host`]).
    pub fn underlay_address(&self, n: u8) -> Ipv4Addr {
        host(self.subnet, n)
    }

    /// Runs a command in node `i`'s namespace.
    pub fn exec(&self, i: usize, program: &str, args: &[&str]) -> Output {
        self.node_ns[i].exec(program, args)
    }

    /// Cuts node `i` off the underlay.
    pub fn cut(&self, i: usize, how: Cut) {
        match how {
            Cut::LinkDown => {
                self.underlay.ip(&["link", "set", &port_name(i), "down"]);
            }
            Cut::NftDrop => {
                let ns = &self.node_ns[i];
                for cmd in [
                    "add table inet shoal_cut",
                    "add chain inet shoal_cut in { type filter hook input priority -300 ; }",
                    "add chain inet shoal_cut out { type filter hook output priority -300 ; }",
                    "add rule inet shoal_cut in iifname eth0 drop",
                    "add rule inet shoal_cut out oifname eth0 drop",
                ] {
                    let out = ns.exec("nft", &[cmd]);
                    assert!(
                        out.status.success(),
                        "nft {cmd}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
    }

    /// Undoes [`Cluster::cut`].
    pub fn heal(&self, i: usize, how: Cut) {
        match how {
            Cut::LinkDown => {
                self.underlay.ip(&["link", "set", &port_name(i), "up"]);
            }
            Cut::NftDrop => {
                let out = self.node_ns[i].exec("nft", &["delete table inet shoal_cut"]);
                assert!(out.status.success(), "nft delete table: {out:?}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stop agents first; their pinned data path (maps, XDP link) goes with the pins below.
        self.nodes.clear();
        let work = work_dir(&self.prefix);
        kill_tasks_under(&work);
        remove_task_cgroups_under(&work);
        unmount_under(&work);
        remove_pins_under(&work);
        if std::thread::panicking() {
            eprintln!(
                "cluster {}: agent logs kept in {}",
                self.prefix,
                work.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&work);
        }
        // The namespaces (and every link in them) go when the fields drop, after this.
    }
}

fn host(subnet: [u8; 3], n: u8) -> Ipv4Addr {
    Ipv4Addr::new(subnet[0], subnet[1], subnet[2], n)
}

fn port_name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// Puts the XDP floor (pass everything) on the underlay's bridge ports. A node's XDP program
/// answers with `XDP_TX` out of its eth0, and a veth hands such frames to its peer only when
/// the peer runs an XDP program too (with GRO alone they wait in the ring for the next
/// ordinary packet); a real NIC just sends them.
fn pass_xdp_frames(underlay: &Netns, ports: &[String]) -> shoal_dataplane::Dataplane {
    let mut dp = shoal_dataplane::Dataplane::load(None).expect("loading the XDP floor");
    let path = underlay.path();
    shoal_dataplane::netns::run_in(std::path::Path::new(&path), || {
        for port in ports {
            dp.attach_xdp_floor(port)
                .unwrap_or_else(|e| panic!("XDP floor on {port}: {e}"));
        }
    })
    .expect("entering the underlay netns");
    dp
}

/// Runs `ethtool` in `ns`, which must succeed.
fn ethtool(ns: &Netns, args: &[&str]) {
    let out = ns.exec("ethtool", args);
    assert!(
        out.status.success(),
        "ethtool {args:?} in {}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects `ns` to the underlay bridge with a veth: `port` on the bridge, `eth0` in `ns`.
fn plug(underlay: &Netns, ns: &Netns, port: &str, address: Ipv4Addr) {
    underlay.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns.name(),
    ]);
    underlay.ip(&["link", "set", port, "master", "br0", "up"]);
    ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
}
