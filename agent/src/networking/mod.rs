//! Overlay networking on this node: the agent's side of issue "overlay networks". It turns the
//! networks of the tasks the executor runs into sandboxes, veths and gateway interfaces (through
//! `shoal_dataplane::overlay`), publishes the tasks' endpoints in the network DB, and programs
//! the endpoints other nodes publish as static FDB and neighbour entries.
//!
//! Desired state comes from the tasks themselves (each carries its networks and addresses), so
//! the data path keeps following local changes while every manager is down; the network DB
//! needs no manager either once it runs.
//!
//! # Layout
//! - `mod.rs`: [`NodeNetworking`], what the executor calls to attach and detach a task.
//! - `gossip`: starting the network DB from the keys and peers the leader sends, key rotation.
//! - `remote`: following the network DB into FDB and neighbour entries in the sandboxes.
//! - `visible`: the endpoints this node sees, kept change by change; what DNS, the VIPs and
//!   the published ports follow.
//! - `egress`: the gateway bridge and each task's address on it.
//! - `dns`: the embedded DNS server in each task, and its records.
//! - `vip`: the eBPF load balancer: programs on each task's veth, VIP -> backends table.
//! - `mesh`: published ports: the node's ingress endpoint, the mesh's maps, host mode.

mod dns;
mod egress;
pub mod gateway_subnet;
mod gossip;
mod mesh;
mod remote;
mod vip;
mod visible;

pub use mesh::INGRESS_SANDBOX_KEY;
pub use vip::ServiceDataplane;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock},
};

use anyhow::Context as _;
use shoal_control::{
    cluster::{Task, network::Network},
    error_chain::Chain,
    netdb::{Endpoint, NetDb},
};
use shoal_dataplane::overlay::{
    GATEWAY_MTU, OverlaySpec, Sandbox, attach_task, detach_task, ensure_sandbox,
    loose_reverse_path_filter, mac_for_ip, remove_sandbox,
};
use tracing::{info, warn};

use crate::executor::TaskNetwork;
use visible::{Dirty, EndpointChange, EndpointKey, Visible};

/// How this node takes part in overlay networks.
#[derive(Clone, Debug)]
pub struct NetworkingConfig {
    pub node_id: String,
    /// The node's own network namespace (the agent's).
    pub node_netns: PathBuf,
    /// Where sandboxes are mounted (`net-<network id>`), shared with the executor's tasks.
    pub netns_dir: PathBuf,
    /// Where the gateway leases are kept.
    pub state_dir: PathBuf,
    /// VXLAN outer source address; `None` when the agent could not tell (then tasks on
    /// overlay networks fail with a clear error).
    pub data_path_addr: Option<Ipv4Addr>,
    pub data_path_port: u16,
    /// MTU of overlay networks' interfaces (the underlay's minus VXLAN's 50 bytes), for the
    /// networks created without `--opt com.docker.network.driver.mtu` ([`Self::network_mtu`]).
    pub overlay_mtu: u32,
    /// The gateway bridge's subnet ([`gateway_subnet`]).
    pub gateway_subnet: ipnet::Ipv4Net,
    /// The interface with the data-path address: where ports are published, and where the
    /// answers of published-port flows leave.
    pub underlay_interface: Option<String>,
    /// UDP and TCP address of the network DB.
    pub gossip_addr: Option<SocketAddr>,
    /// Where the embedded DNS forwards names that are not the cluster's.
    pub dns_upstreams: Vec<SocketAddr>,
    /// What each task's /etc/resolv.conf says.
    pub task_resolv_conf: String,
}

impl NetworkingConfig {
    /// The MTU of `network`'s interfaces on this node (bridge, VXLAN, tasks'): its MTU option,
    /// else the underlay-derived default.
    pub fn network_mtu(&self, network: &Network) -> u32 {
        network.mtu_option().unwrap_or(self.overlay_mtu)
    }
}

/// Overlay networking on this node. Cheap to share.
pub struct NodeNetworking {
    config: NetworkingConfig,
    local: Mutex<Local>,
    /// The endpoints the last refresh saw (see `visible`).
    visible: Mutex<Visible>,
    /// Held through a refresh: one at a time, so what a refresh read is never recorded over
    /// what a later one read.
    refreshing: Mutex<()>,
    egress: egress::Egress,
    dns: dns::EmbeddedDns,
    vips: vip::Vips,
    mesh: mesh::MeshState,
    /// Set while the network DB runs (from the first gossip keys the leader sends until the
    /// node leaves the swarm).
    netdb: RwLock<Option<Arc<NetDb>>>,
    gossip: gossip::GossipState,
    /// What the sandboxes' background check repaired.
    remote_repairs: remote::RemoteRepairs,
    runtime: tokio::runtime::Handle,
}

/// What exists on this node.
#[derive(Default)]
struct Local {
    /// Sandboxes by network ID.
    networks: HashMap<String, LocalNetwork>,
    /// Endpoints of local tasks by (network ID, task ID): what this node publishes.
    endpoints: HashMap<(String, String), Endpoint>,
    /// Local tasks attached but not ready yet (see the executor's `readiness`), by task ID:
    /// what they will publish.
    pending: HashMap<String, Pending>,
    /// What changed since the last refresh.
    dirty: Dirty,
}

impl Local {
    /// The endpoint `key` as this node sees it now: its own, else the network DB's on a
    /// network it has a sandbox for.
    fn visible_endpoint(&self, key: &EndpointKey, db: Option<&NetDb>) -> Option<Endpoint> {
        if let Some(own) = self.endpoints.get(key) {
            return Some(own.clone());
        }
        if !self.networks.contains_key(&key.0) {
            return None;
        }
        db?.endpoint(&key.0, &key.1)
    }
}

/// What a task publishes once it is ready.
struct Pending {
    endpoints: Vec<Endpoint>,
    /// Its gateway-bridge address, when it has host-mode ports.
    host_port_addr: Option<Ipv4Addr>,
}

struct LocalNetwork {
    sandbox: Sandbox,
    network: Network,
    /// Local tasks attached to it; the sandbox goes with the last one.
    tasks: HashSet<String>,
}

impl NodeNetworking {
    /// Must be called inside the agent's tokio runtime (the network DB and the follower of
    /// remote endpoints run on it). Without `dataplane`, service VIPs are not balanced and
    /// ports not published.
    pub fn new(
        config: NetworkingConfig,
        dataplane: Option<Arc<dyn ServiceDataplane>>,
    ) -> std::io::Result<Arc<NodeNetworking>> {
        let networking = Arc::new(NodeNetworking {
            egress: egress::Egress::new(
                &config.state_dir,
                &config.node_netns,
                config.gateway_subnet,
            ),
            dns: dns::EmbeddedDns::new(
                config.dns_upstreams.clone(),
                config.task_resolv_conf.clone(),
            )?,
            vips: vip::Vips::new(dataplane),
            mesh: mesh::MeshState::default(),
            config,
            // The first refresh reads everything: the full reconcile of a start.
            local: Mutex::new(Local {
                dirty: Dirty {
                    all: true,
                    ..Dirty::default()
                },
                ..Local::default()
            }),
            visible: Mutex::default(),
            refreshing: Mutex::default(),
            netdb: RwLock::new(None),
            gossip: gossip::GossipState::default(),
            remote_repairs: remote::RemoteRepairs::default(),
            runtime: tokio::runtime::Handle::current(),
        });
        tokio::spawn(vip::refresh_periodically(networking.clone()));
        Ok(networking)
    }

    /// The endpoints of every network this node has a sandbox for: its own, and every other
    /// node's from the network DB (which already hides those of nodes that are down), each
    /// under the key [`Local::visible_endpoint`] reads it back by: what a full reconcile
    /// of `visible` starts from.
    fn visible_endpoints(&self) -> BTreeMap<EndpointKey, Endpoint> {
        let local = self.local();
        // Keyed by (network, task): the DB's copy of a local endpoint and ours are the same.
        let mut endpoints: BTreeMap<(String, String), Endpoint> = local
            .endpoints
            .iter()
            .map(|(key, e)| (key.clone(), e.clone()))
            .collect();
        if let Some(db) = self.db() {
            for id in local.networks.keys() {
                for e in db.endpoints(id) {
                    endpoints
                        .entry((e.network_id.clone(), e.endpoint_id.clone()))
                        .or_insert(e);
                }
            }
        }
        endpoints
    }

    /// Brings what follows the endpoints up to date with what changed since the last
    /// refresh: the DNS records, the VIP backends and the published ports. Cheap when
    /// nothing did (it runs every second, and after every change).
    fn refresh_services(&self) {
        let _one_at_a_time = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let settle = self.settle();
        if settle.newly {
            // The refresh that may remove backends reads every endpoint from the DB itself,
            // not through the follower of its changes, which may not have caught up with the
            // table the first push-pull brought.
            self.mark_dirty(|d| d.all = true);
        }
        let (dirty, changes) = self.take_changes();
        self.refresh_dns(&changes, dirty.all);
        self.refresh_vips(&changes, &dirty, settle);
        self.refresh_mesh(&changes, &dirty, settle);
    }

    /// Takes what is dirty and reads the dirty endpoints back from their sources (all of
    /// them for a full reconcile): what changed since the last refresh.
    fn take_changes(&self) -> (Dirty, Vec<EndpointChange>) {
        let mut dirty = self.local().dirty.take();
        if dirty.all {
            let all = self.visible_endpoints();
            return (dirty, self.visible().replace(all));
        }
        // The endpoints of a network left are read back like the others: gone, unless the
        // network was joined again meanwhile.
        {
            let visible = self.visible();
            for network_id in &dirty.networks_left {
                dirty.keys.extend(visible.keys_on(network_id));
            }
        }
        if dirty.keys.is_empty() {
            return (dirty, Vec::new());
        }
        let db = self.db();
        let now: Vec<(EndpointKey, Option<Endpoint>)> = {
            let local = self.local();
            dirty
                .keys
                .iter()
                .map(|key| (key.clone(), local.visible_endpoint(key, db.as_deref())))
                .collect()
        };
        (dirty, self.visible().update(now))
    }

    /// Marks what may have changed for the next refresh.
    fn mark_dirty(&self, mark: impl FnOnce(&mut Dirty)) {
        mark(&mut self.local().dirty);
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn visible(&self) -> MutexGuard<'_, Visible> {
        self.visible.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The network DB, while it runs.
    fn db(&self) -> Option<Arc<NetDb>> {
        self.netdb
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn sandbox_path(&self, network_id: &str) -> PathBuf {
        self.config.netns_dir.join(format!("net-{network_id}"))
    }

    /// This node's endpoints on `network_id`, with the subnet's prefix length (for `network
    /// inspect`'s Containers).
    pub fn local_endpoints(&self, network_id: &str) -> Vec<(Endpoint, u8)> {
        let local = self.local();
        let Some(net) = local.networks.get(network_id) else {
            return Vec::new();
        };
        let prefix = net.network.subnet.prefix_len();
        let mut endpoints: Vec<(Endpoint, u8)> = local
            .endpoints
            .values()
            .filter(|e| e.network_id == network_id)
            .map(|e| (e.clone(), prefix))
            .collect();
        endpoints.sort_by_key(|(e, _)| e.ip);
        endpoints
    }

    /// The embedded DNS servers' counters (all tasks of this node).
    pub fn dns_counters(&self) -> shoal_dns::DnsCounters {
        self.dns.counters()
    }

    /// The network DB's packet counters, while it runs.
    pub fn gossip_stats(&self) -> Option<shoal_control::netdb::NetDbStats> {
        self.db().map(|db| db.stats())
    }

    /// Remote endpoints the sandboxes' background check found stale and missing, and
    /// repaired, since the agent started.
    pub fn remote_endpoint_repairs(&self) -> (u64, u64) {
        self.remote_repairs.counts()
    }

    /// Node IDs and gossip addresses of the network DB members this node sees alive.
    pub fn gossip_members(&self) -> Vec<(String, SocketAddr)> {
        self.db().map_or_else(Vec::new, |db| {
            db.members()
                .into_iter()
                .filter(|(_, _, alive)| *alive)
                .map(|(id, addr, _)| (id, addr))
                .collect()
        })
    }

    /// The sandbox of `network`, created (with the remote endpoints already known) if this is
    /// the first local task on it.
    fn ensure_network(&self, local: &mut Local, network: &Network) -> anyhow::Result<Sandbox> {
        if let Some(existing) = local.networks.get(&network.id) {
            return Ok(existing.sandbox.clone());
        }
        let vtep = self.config.data_path_addr.context(
            "this node has no IPv4 data-path address: start the agent with --data-path-addr",
        )?;
        let spec = OverlaySpec {
            vni: network.vni,
            subnet: network.subnet,
            gateway: network.gateway,
            vxlan_port: self.config.data_path_port,
            local_vtep: vtep,
            mtu: self.config.network_mtu(network),
        };
        let sandbox = ensure_sandbox(
            &self.config.node_netns,
            &self.sandbox_path(&network.id),
            &spec,
        )
        .with_context(|| format!("network {}", network.name))?;
        info!(network = %network.name, vni = network.vni, mtu = spec.mtu, "overlay sandbox ready");
        if let Some(db) = self.db() {
            db.join_network(&network.id);
            let endpoints = db.endpoints(&network.id);
            remote::program_all(&self.config.node_id, &sandbox, &endpoints);
            for e in &endpoints {
                local.dirty.mark(&e.network_id, &e.endpoint_id);
            }
        }
        // Its VIPs that the leader lists are kept from now on, backends or not.
        local.dirty.all_vips = true;
        local.networks.insert(
            network.id.clone(),
            LocalNetwork {
                sandbox: sandbox.clone(),
                network: network.clone(),
                tasks: HashSet::new(),
            },
        );
        Ok(sandbox)
    }

    /// Drops `task_id` from the network; removes the sandbox when it was the last local task.
    fn release_network(&self, local: &mut Local, network_id: &str, task_id: &str) {
        let Some(net) = local.networks.get_mut(network_id) else {
            return;
        };
        net.tasks.remove(task_id);
        if !net.tasks.is_empty() {
            return;
        }
        let Some(net) = local.networks.remove(network_id) else {
            return;
        };
        local.dirty.networks_left.push(network_id.to_string());
        local.dirty.all_vips = true;
        if let Some(db) = self.db() {
            db.leave_network(network_id);
        }
        match remove_sandbox(&net.sandbox.path) {
            Ok(()) => {
                info!(network = %net.network.name, "overlay sandbox removed (no local task left)")
            }
            Err(e) => warn!(network = %net.network.name, error = %Chain(&e), "removing a sandbox"),
        }
    }

    /// Removes sandboxes no local task uses (left by an agent that died before cleaning up).
    /// Called once the executor has re-adopted its tasks.
    pub fn remove_stale_sandboxes(&self) {
        let local = self.local();
        let Ok(entries) = std::fs::read_dir(&self.config.netns_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(network_id) = name.strip_prefix("net-") else {
                continue;
            };
            if !local.networks.contains_key(network_id) {
                info!(network = network_id, "removing a stale overlay sandbox");
                if let Err(e) = remove_sandbox(&entry.path()) {
                    warn!(network = network_id, error = %Chain(&e), "removing a stale sandbox");
                }
            }
        }
    }

    /// The node leaves the swarm: stop gossiping and remove the gateway bridge. Tasks were
    /// stopped (and detached) before.
    pub fn leave(&self) {
        self.stop_gossip();
        self.forget_routing_mesh();
        self.egress.remove();
    }
}

/// The name of a task's veth end in a sandbox (at most 15 characters).
fn sandbox_side_name(task_id: &str, index: usize) -> String {
    format!("v{}{index}", &task_id[..task_id.len().min(11)])
}

impl TaskNetwork for NodeNetworking {
    fn attach(&self, task: &Task, netns: &Path) -> anyhow::Result<()> {
        let mut local = self.local();
        let mut endpoints = Vec::with_capacity(task.networks.len());
        let mut host_port_addr = None;
        for (index, attachment) in task.networks.iter().enumerate() {
            let network = &attachment.network;
            let sandbox = self.ensure_network(&mut local, network)?;
            if let Some(net) = local.networks.get_mut(&network.id) {
                net.tasks.insert(task.id.clone());
            }
            let veth = sandbox_side_name(&task.id, index);
            attach_task(
                &sandbox,
                netns,
                &format!("eth{index}"),
                attachment.addr,
                false,
                &veth,
            )
            .with_context(|| format!("network {}", network.name))?;
            self.vips
                .attach(&sandbox.path, &veth)
                .with_context(|| format!("network {}", network.name))?;
            let ip = attachment.addr.addr();
            let endpoint = Endpoint {
                network_id: network.id.clone(),
                endpoint_id: task.id.clone(),
                node_id: self.config.node_id.clone(),
                ip,
                mac: mac_for_ip(ip),
                vtep: sandbox.spec.local_vtep,
                service: task.spec.name.clone(),
                vip: attachment.vip,
                aliases: task.dns_names(),
                service_aliases: task
                    .spec
                    .network_aliases
                    .get(&network.id)
                    .cloned()
                    .unwrap_or_default(),
                draining: false,
            };
            endpoints.push(endpoint);
        }
        drop(local);
        // Like Docker: egress through the gateway bridge unless every network is internal
        // (a task on no network at all still reaches the outside world).
        let internal_only =
            task.networks.iter().all(|a| a.network.internal) && !task.networks.is_empty();
        if !internal_only {
            // A task keeping its clients' addresses answers them by the gateway bridge, but
            // the answers travel back on `ingress` (see `mesh`): its gateway interface takes
            // the overlay's MTU, so its TCP segments and UDP fragments fit there.
            let keeps_clients = mesh::keeps_client_addresses(task);
            let ingress = task
                .networks
                .iter()
                .find(|a| a.network.ingress)
                .filter(|_| keeps_clients);
            let mtu = ingress.map_or(GATEWAY_MTU, |a| {
                self.config.network_mtu(&a.network).min(GATEWAY_MTU)
            });
            let (gateway_ip, bridge_port) = self
                .egress
                .attach(task, netns, task.networks.len(), mtu)
                .context("gateway bridge")?;
            // Not fatal: the task still serves, but a strict filter drops the clients whose
            // address it keeps (source NAT, `source=snat`, does not need it).
            if ingress.is_some()
                && let Err(e) = loose_reverse_path_filter(netns)
            {
                warn!(task = %task.id, error = %Chain(&e),
                    "clients of its published ports may be dropped: set net.ipv4.conf.all.rp_filter=2 (or 0) on the host, or publish with source=snat");
            }
            if mesh::publishes_host_ports(task) || ingress.is_some() {
                self.attach_host_task(&bridge_port)
                    .context("published ports")?;
            }
            if mesh::publishes_host_ports(task) {
                host_port_addr = Some(gateway_ip);
            }
        }
        // Published when the executor finds the task ready (`publish`), not now: a task that
        // has not bound its port yet would be sent connections it cannot take.
        self.local().pending.insert(
            task.id.clone(),
            Pending {
                endpoints,
                host_port_addr,
            },
        );
        self.refresh_services();
        self.dns.serve(task, netns)
    }

    fn publish(&self, task: &Task) {
        let mut local = self.local();
        let Some(pending) = local.pending.remove(&task.id) else {
            return;
        };
        let db = self.db();
        for endpoint in pending.endpoints {
            if let Some(db) = &db {
                db.put_endpoint(endpoint.clone());
            }
            local.dirty.mark(&endpoint.network_id, &task.id);
            local
                .endpoints
                .insert((endpoint.network_id.clone(), task.id.clone()), endpoint);
        }
        drop(local);
        if let Some(gateway_ip) = pending.host_port_addr {
            self.add_host_task(task, gateway_ip);
        }
        self.refresh_services();
    }

    fn withdraw(&self, task: &Task) -> bool {
        let mut guard = self.local();
        let local = &mut *guard;
        local.pending.remove(&task.id);
        let mut withdrawn = false;
        let db = self.db();
        for attachment in &task.networks {
            let key = (attachment.network.id.clone(), task.id.clone());
            // Draining, not deleted: every node drops it from DNS and from new flows but
            // keeps its flows, FDB and ARP entries until `detach` deletes it.
            if let Some(endpoint) = local.endpoints.get_mut(&key)
                && !endpoint.draining
            {
                endpoint.draining = true;
                local.dirty.keys.insert(key.clone());
                withdrawn = true;
                if let Some(db) = &db {
                    db.put_endpoint(endpoint.clone());
                }
            }
        }
        drop(guard);
        self.drain_host_task(&task.id);
        if withdrawn {
            info!(task = %task.id, "task endpoints withdrawn");
        }
        self.refresh_services();
        withdrawn
    }

    fn detach(&self, task: &Task, _netns: &Path) {
        self.dns.stop(&task.id);
        self.remove_host_task(&task.id);
        self.egress.detach(task);
        let mut local = self.local();
        local.pending.remove(&task.id);
        for (index, attachment) in task.networks.iter().enumerate() {
            let network_id = &attachment.network.id;
            local
                .endpoints
                .remove(&(network_id.clone(), task.id.clone()));
            local.dirty.mark(network_id, &task.id);
            if let Some(db) = self.db() {
                db.delete_endpoint(network_id, &task.id);
            }
            if let Some(net) = local.networks.get(network_id)
                && let Err(e) = detach_task(&net.sandbox, &sandbox_side_name(&task.id, index))
            {
                warn!(task = %task.id, error = %Chain(&e), "detaching a task from its sandbox");
            }
            self.release_network(&mut local, network_id, &task.id);
        }
        drop(local);
        self.refresh_services();
    }

    fn resolv_conf(&self) -> Option<String> {
        Some(self.dns.task_resolv_conf())
    }
}

/// Re-exported for the agent's wiring: where the netns directory of a state dir is.
pub fn netns_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("netns")
}
