//! Published ports on this node: the agent's side of the ingress routing mesh and host mode.
//!
//! What the leader sends with each heartbeat ([`RoutingMesh`]: the `ingress` network, this
//! node's address on it, every service's published ports) is kept in
//! `<state>/routing-mesh.json`, so ports keep being served with every manager down and across
//! agent restarts. From it:
//! - the node's ingress endpoint: the `ingress` sandbox exists on every node (tasks or not),
//!   with a veth into the node's netns (`shoal_ingress`, the node's ingress address) whose
//!   tc ingress runs the reply program, and the endpoint is published in the network DB so
//!   every node's tasks can answer it. It follows the network the leader names: when the
//!   ingress network is removed (`network rm ingress`) it is taken down, and when one is
//!   created again (`network create --ingress`) it is built on the new one;
//! - the mesh's maps ([`MeshTable`]): settings, the underlay's addresses, each published port
//!   and its frontend, and the VTEP of every task on `ingress` (from the network DB);
//! - host-mode frontends in the load balancer's table: each host-mode port's backends are
//!   this node's tasks of the service, at their gateway-bridge addresses, whose bridge ports
//!   run the reply program too.
//!
//! Which tasks serve an ingress-mode port comes with the VIP table (`vip.rs`): the service's
//! VIP on `ingress` and its backends, from the same endpoints.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use shoal_common::mesh::{
    MODE_HOST, MODE_INGRESS, MODE_INGRESS_CLIENT, MeshConfig, PortKey, PublishedPort, host_frontend,
};
use shoal_control::{
    cluster::{PortProtocol, PortSource, PublishMode, Task, mesh::RoutingMesh, network::Network},
    error_chain::Chain,
    netdb::Endpoint,
};
use shoal_dataplane::{
    LbTable, MeshTable,
    overlay::{attach_task, detach_task, mac_for_ip},
};
use tracing::{debug, info, warn};

use super::{
    NodeNetworking,
    vip::Settle,
    visible::{Dirty, EndpointChange},
};

/// The node end of the ingress endpoint's veth, in the node's netns.
pub const NODE_INGRESS_INTERFACE: &str = "shoal_ingress";
/// Its sandbox end, on the `ingress` bridge.
const SANDBOX_SIDE: &str = "vnode-ingress";
/// The node's endpoint's name in `network inspect ingress`, and its key there (Docker's).
pub const INGRESS_ENDPOINT_NAME: &str = "ingress-endpoint";
pub const INGRESS_SANDBOX_KEY: &str = "ingress-sbox";
/// The member name that keeps the `ingress` sandbox while no local task uses it.
pub(super) const NODE_ENDPOINT_MEMBER: &str = "node-ingress-endpoint";

/// What this node knows of the routing mesh.
#[derive(Default)]
pub struct MeshState {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The leader's last word (or the saved one).
    mesh: Option<RoutingMesh>,
    /// The (network ID, address) the ingress endpoint was built for.
    endpoint: Option<(String, Ipv4Addr)>,
    /// Why it could not be built, last time.
    endpoint_error: Option<String>,
    /// Host-mode tasks on this node: task ID -> (service name, gateway-bridge address).
    host_tasks: BTreeMap<String, HostTask>,
    /// Remote VTEPs, and when a datagram was last sent to each (see [`knock`]).
    knocked: BTreeMap<Ipv4Addr, Instant>,
    /// From `mesh`: the leader's VIPs -> their network.
    known_vips: BTreeMap<Ipv4Addr, String>,
    /// From `mesh`: host-mode frontends (see [`host_frontend`]) -> the services publishing
    /// that port.
    host_frontends: BTreeMap<Ipv4Addr, BTreeSet<String>>,
    /// What the mesh's maps were last made whole for; `None`: the next refresh hands over the
    /// whole table (see [`NodeNetworking::refresh_mesh`]).
    applied: Option<MeshFrame>,
}

impl Inner {
    /// Indexes what the leader said (`mesh`) again, and says which of the load balancer's
    /// keys that changed: VIPs that came, went or moved to another network, and host-mode
    /// frontends whose services changed.
    fn reindex(&mut self) -> BTreeSet<Ipv4Addr> {
        let old_vips = std::mem::take(&mut self.known_vips);
        let old_frontends = std::mem::take(&mut self.host_frontends);
        self.index();
        let mut changed = differing_keys(&old_vips, &self.known_vips);
        changed.extend(differing_keys(&old_frontends, &self.host_frontends));
        changed
    }

    /// Indexes what the leader said (`mesh`): the VIPs it lists and the host-mode frontends.
    fn index(&mut self) {
        self.known_vips.clear();
        self.host_frontends.clear();
        let Some(mesh) = &self.mesh else { return };
        for v in &mesh.vips {
            self.known_vips.insert(v.addr, v.network_id.clone());
        }
        for service in &mesh.services {
            for port in service.ports.iter().filter(|p| p.mode == PublishMode::Host) {
                let key =
                    Ipv4Addr::from(host_frontend(port.published, proto_number(port.protocol)));
                self.host_frontends
                    .entry(key)
                    .or_default()
                    .insert(service.name.clone());
            }
        }
    }

    /// The host-mode frontends `service` publishes.
    fn frontends_of(&self, service: &str) -> Vec<Ipv4Addr> {
        self.host_frontends
            .iter()
            .filter(|(_, services)| services.contains(service))
            .map(|(key, _)| *key)
            .collect()
    }
}

/// The keys whose values differ between `old` and `new`, or that only one holds.
fn differing_keys<V: PartialEq>(
    old: &BTreeMap<Ipv4Addr, V>,
    new: &BTreeMap<Ipv4Addr, V>,
) -> BTreeSet<Ipv4Addr> {
    let gone_or_changed = old.iter().filter(|(k, v)| new.get(k) != Some(v));
    let came = new.iter().filter(|(k, _)| !old.contains_key(k));
    gone_or_changed.chain(came).map(|(k, _)| *k).collect()
}

/// The mesh's table but its ports and VTEPs: what is compared every refresh, and decides
/// whether the whole table is handed over again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MeshFrame {
    config: MeshConfig,
    addrs: BTreeSet<Ipv4Addr>,
    ingress_ifindex: u32,
    /// The `ingress` network whose tasks' VTEPs the table holds; `None`: nothing published.
    ingress: Option<String>,
}

/// A host-mode task: it serves its service's host-mode ports on this node.
struct HostTask {
    service: String,
    gateway_ip: Ipv4Addr,
    /// Withdrawn before its stop: its connections go on, new ones go to no one.
    draining: bool,
}

/// How often a remote VTEP is knocked at again.
const KNOCK_EVERY: Duration = Duration::from_secs(60);

/// Sends one empty datagram to `vtep`'s discard port, from the node's netns (the agent's), so
/// the kernel resolves the neighbour entry the XDP program's `bpf_fib_lookup` needs to send
/// to it. XDP cannot resolve a neighbour itself: without the entry its frames are dropped
/// (counted `no_route`). Gossip usually resolves it already, unless the data-path address is
/// not the advertise address. The remote kernel answers port unreachable, or nothing.
fn knock(vtep: Ipv4Addr) {
    let sent = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|socket| socket.send_to(&[], (vtep, 9)));
    if let Err(e) = sent {
        debug!(%vtep, error = %Chain(&e), "knocking at a VTEP");
    }
}

impl MeshState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Does the task publish a port in host mode?
pub fn publishes_host_ports(task: &Task) -> bool {
    task.spec.ports.iter().any(|p| p.mode == PublishMode::Host)
}

/// Does the task publish an ingress-mode port that keeps the client's address? Its answers
/// to clients leave by the gateway bridge and must be steered back to the node that received
/// each flow (see `shoal_common::mesh`).
pub fn keeps_client_addresses(task: &Task) -> bool {
    task.spec
        .ports
        .iter()
        .any(|p| p.mode == PublishMode::Ingress && p.source == PortSource::Client)
}

fn proto_number(p: PortProtocol) -> u8 {
    match p {
        PortProtocol::Tcp => 6,
        PortProtocol::Udp => 17,
    }
}

fn raw(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

impl NodeNetworking {
    /// What the leader says about published ports, with each heartbeat.
    pub fn on_routing_mesh(&self, mesh: &RoutingMesh) {
        let changed = {
            let mut state = self.mesh.lock();
            if state.mesh.as_ref() == Some(mesh) {
                return;
            }
            let had_mesh = state.mesh.is_some();
            state.mesh = Some(mesh.clone());
            let changed = state.reindex();
            had_mesh.then_some(changed)
        };
        // The load balancer computes again only the VIPs and host-mode frontends whose entry
        // in the leader's word changed (a service created or removed costs its own VIPs, not
        // every one); the first word is a full reconcile. What is published goes to the mesh's
        // maps whole (compared with what they hold).
        self.mark_dirty(|d| {
            match changed {
                Some(keys) => d.vips.extend(keys),
                None => d.all_vips = true,
            }
            d.mesh = true;
        });
        self.save_routing_mesh(mesh);
        self.ensure_ingress_endpoint();
        self.refresh_services();
    }

    /// Serves the ports the previous agent served, from its saved copy, until the leader
    /// speaks.
    pub fn resume_routing_mesh(&self) {
        let path = self.routing_mesh_path();
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        match serde_json::from_slice::<RoutingMesh>(&bytes) {
            Ok(mesh) => {
                info!("published ports resumed from the saved routing mesh");
                self.on_routing_mesh(&mesh);
            }
            Err(e) => {
                warn!(file = %path.display(), error = %Chain(&e), "unreadable saved routing mesh")
            }
        }
    }

    fn routing_mesh_path(&self) -> std::path::PathBuf {
        self.config.state_dir.join("routing-mesh.json")
    }

    fn save_routing_mesh(&self, mesh: &RoutingMesh) {
        let path = self.routing_mesh_path();
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            std::fs::write(&tmp, serde_json::to_vec(mesh)?)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            warn!(file = %path.display(), error = %Chain(&e), "saving the routing mesh");
        }
    }

    /// Forgets the routing mesh (the node leaves the swarm): the saved copy, the node's
    /// ingress endpoint (and with it the `ingress` sandbox, unless a task still uses it), and
    /// what the maps hold.
    pub(super) fn forget_routing_mesh(&self) {
        let _ = std::fs::remove_file(self.routing_mesh_path());
        let endpoint = {
            let mut state = self.mesh.lock();
            state.mesh = None;
            state.index();
            state.applied = None;
            state.endpoint.take()
        };
        self.mark_dirty(|d| d.all_vips = true);
        if let Some((network_id, _)) = endpoint {
            self.remove_ingress_endpoint(&network_id);
        }
        if let Err(e) = self.vips.apply_mesh(&MeshTable::default()) {
            warn!(error = %Chain(e.as_ref()), "clearing the published ports");
        }
    }

    /// Builds the node's endpoint on `ingress` (see the module docs) if it is not there yet
    /// for the current network and address. Cheap when it is; also called every second, so
    /// an attempt that failed is retried. An endpoint built for another network or address
    /// (the ingress network was removed, or removed and created again) is taken down first.
    pub(super) fn ensure_ingress_endpoint(&self) {
        let (wanted, stale) = {
            let mut state = self.mesh.lock();
            let Some(mesh) = &state.mesh else { return };
            let wanted = mesh.ingress.clone().zip(mesh.node_addr);
            let current = wanted.as_ref().map(|(n, addr)| (n.id.clone(), *addr));
            if state.endpoint == current {
                return;
            }
            (wanted, state.endpoint.take())
        };
        if let Some((network_id, _)) = stale {
            self.remove_ingress_endpoint(&network_id);
            info!(network = %network_id, "ingress endpoint removed: the routing mesh moved");
        }
        let Some((network, addr)) = wanted else {
            return;
        };
        let mut local = self.local();
        let built = (|| -> anyhow::Result<()> {
            let sandbox = self.ensure_network(&mut local, &network)?;
            if let Some(net) = local.networks.get_mut(&network.id) {
                net.tasks.insert(NODE_ENDPOINT_MEMBER.to_string());
            }
            let prefix = network.subnet.prefix_len();
            let ip = ipnet::Ipv4Net::new(addr, prefix)?;
            attach_task(
                &sandbox,
                &self.config.node_netns,
                NODE_INGRESS_INTERFACE,
                ip,
                false,
                SANDBOX_SIDE,
            )
            .context("the node's ingress endpoint")?;
            self.vips
                .attach_mesh_reply(&self.config.node_netns, NODE_INGRESS_INTERFACE)?;
            shoal_dataplane::overlay::enable_ip_forwarding(&self.config.node_netns)?;
            Ok(())
        })();
        if let Err(e) = built {
            drop(local);
            // Retried every second: said once per distinct failure.
            let e = Chain(e.as_ref()).to_string();
            let mut state = self.mesh.lock();
            if state.endpoint_error.as_ref() != Some(&e) {
                warn!(error = %e, "published ports are not served on this node");
                state.endpoint_error = Some(e);
            }
            return;
        }
        let endpoint = Endpoint {
            network_id: network.id.clone(),
            endpoint_id: format!("ingress-{}", self.config.node_id),
            node_id: self.config.node_id.clone(),
            ip: addr,
            mac: mac_for_ip(addr),
            vtep: self.config.data_path_addr.unwrap_or(Ipv4Addr::UNSPECIFIED),
            service: String::new(),
            vip: None,
            // What `network inspect ingress` calls it, as Docker does.
            aliases: vec![INGRESS_ENDPOINT_NAME.to_string()],
            service_aliases: Vec::new(),
            draining: false,
        };
        if let Some(db) = self.db() {
            db.put_endpoint(endpoint.clone());
        }
        local.endpoints.insert(
            (network.id.clone(), NODE_ENDPOINT_MEMBER.to_string()),
            endpoint,
        );
        local.dirty.mark(&network.id, NODE_ENDPOINT_MEMBER);
        drop(local);
        info!(address = %addr, "ingress endpoint ready: published ports are served here");
        let mut state = self.mesh.lock();
        state.endpoint = Some((network.id, addr));
        state.endpoint_error = None;
        drop(state);
        self.mark_dirty(|d| d.mesh = true);
    }

    /// Takes the node's endpoint off the ingress network `network_id`: withdrawn from the
    /// network DB, its veth deleted (freeing `shoal_ingress` for the next one), and the
    /// sandbox removed unless a local task still uses it (one still stopping).
    fn remove_ingress_endpoint(&self, network_id: &str) {
        let mut local = self.local();
        local
            .endpoints
            .remove(&(network_id.to_string(), NODE_ENDPOINT_MEMBER.to_string()));
        local.dirty.mark(network_id, NODE_ENDPOINT_MEMBER);
        if let Some(db) = self.db() {
            db.delete_endpoint(network_id, &format!("ingress-{}", self.config.node_id));
        }
        if let Some(net) = local.networks.get(network_id)
            && let Err(e) = detach_task(&net.sandbox, SANDBOX_SIDE)
        {
            warn!(network = %network_id, error = %Chain(&e), "removing the ingress endpoint");
        }
        self.release_network(&mut local, network_id, NODE_ENDPOINT_MEMBER);
    }

    /// A task publishing host-mode ports, or ingress-mode ports that keep the client's address,
    /// came up on the gateway bridge (its bridge port is `bridge_port` in the node's netns): its
    /// answers go through the reply program.
    pub(super) fn attach_host_task(&self, bridge_port: &str) -> anyhow::Result<()> {
        self.vips
            .attach_mesh_reply(&self.config.node_netns, bridge_port)
    }

    /// A host-mode task at `gateway_ip` is ready: this node's port balances onto it.
    pub(super) fn add_host_task(&self, task: &Task, gateway_ip: Ipv4Addr) {
        let host_task = HostTask {
            service: task.spec.name.clone(),
            gateway_ip,
            draining: false,
        };
        let mut state = self.mesh.lock();
        state.host_tasks.insert(task.id.clone(), host_task);
        let frontends = state.frontends_of(&task.spec.name);
        drop(state);
        self.host_frontends_changed(frontends);
    }

    /// The task takes no new connection on its host-mode ports; its own go on.
    pub(super) fn drain_host_task(&self, task_id: &str) {
        let mut state = self.mesh.lock();
        let Some(task) = state.host_tasks.get_mut(task_id) else {
            return;
        };
        task.draining = true;
        let service = task.service.clone();
        let frontends = state.frontends_of(&service);
        drop(state);
        self.host_frontends_changed(frontends);
    }

    pub(super) fn remove_host_task(&self, task_id: &str) {
        let mut state = self.mesh.lock();
        let Some(task) = state.host_tasks.remove(task_id) else {
            return;
        };
        let frontends = state.frontends_of(&task.service);
        drop(state);
        self.host_frontends_changed(frontends);
    }

    /// A host-mode task came, drained or went: its service's frontends are computed again,
    /// and which host-mode ports this node publishes may have changed.
    fn host_frontends_changed(&self, frontends: Vec<Ipv4Addr>) {
        self.mark_dirty(|d| {
            d.vips.extend(frontends);
            d.mesh = true;
        });
    }

    /// The VIPs the leader says exist (see [`RoutingMesh::vips`]) on the networks this node
    /// has joined, among `among` (all of them: `None`): kept in the load balancer's table
    /// even with no backend.
    pub(super) fn known_vips(&self, among: Option<&BTreeSet<Ipv4Addr>>) -> Vec<Ipv4Addr> {
        let vips: Vec<(Ipv4Addr, String)> = {
            let state = self.mesh.lock();
            match among {
                None => state
                    .known_vips
                    .iter()
                    .map(|(vip, network)| (*vip, network.clone()))
                    .collect(),
                Some(among) => among
                    .iter()
                    .filter_map(|vip| state.known_vips.get(vip).map(|n| (*vip, n.clone())))
                    .collect(),
            }
        };
        let local = self.local();
        vips.into_iter()
            .filter(|(_, network_id)| local.networks.contains_key(network_id))
            .map(|(vip, _)| vip)
            .collect()
    }

    /// Adds the host-mode frontends (see the module docs) among `among` (all: `None`) to the
    /// load balancer's table, and their draining tasks to `draining`.
    pub(super) fn add_host_frontends(
        &self,
        table: &mut LbTable,
        draining: &mut LbTable,
        among: Option<&BTreeSet<Ipv4Addr>>,
    ) {
        let state = self.mesh.lock();
        let frontends: Vec<(&Ipv4Addr, &BTreeSet<String>)> = match among {
            None => state.host_frontends.iter().collect(),
            Some(among) => among
                .iter()
                .filter_map(|key| state.host_frontends.get_key_value(key))
                .collect(),
        };
        for (key, services) in frontends {
            let backends = table.entry(*key).or_default();
            for task in state.host_tasks.values() {
                if !services.contains(&task.service) {
                    continue;
                }
                if task.draining {
                    draining.entry(*key).or_default().insert(task.gateway_ip);
                } else {
                    backends.insert(task.gateway_ip);
                }
            }
        }
    }

    /// Brings the mesh's maps up to date: the whole table (written where it differs from
    /// what the maps hold) on a full reconcile, when the leader's word, this node's host-mode
    /// tasks or the ingress endpoint changed, when the network DB settled, or when the
    /// settings or the node's addresses moved (compared every refresh); otherwise only the
    /// VTEPs of the ingress endpoints `changes` touched, one map write each.
    pub(super) fn refresh_mesh(&self, changes: &[EndpointChange], dirty: &Dirty, settle: Settle) {
        let Some(frame) = self.mesh_frame() else {
            return;
        };
        let whole = dirty.all
            || dirty.mesh
            || settle.newly
            || self.mesh.lock().applied.as_ref() != Some(&frame);
        if whole {
            let table = self.mesh_table(&frame, settle.settled);
            let applied = match self.vips.apply_mesh(&table) {
                Ok(()) => Some(frame),
                Err(e) => {
                    warn!(error = %Chain(e.as_ref()), "updating the published ports");
                    None
                }
            };
            self.mesh.lock().applied = applied;
            self.knock_at_vteps(table.vteps.values().copied(), true);
            return;
        }
        let Some(network_id) = &frame.ingress else {
            return;
        };
        let vtep_of = |e: &Option<Endpoint>| {
            e.as_ref()
                .filter(|e| e.vtep != Ipv4Addr::UNSPECIFIED)
                .map(|e| (e.ip, e.vtep))
        };
        let mut added = Vec::new();
        for change in changes.iter().filter(|c| &c.key.0 == network_id) {
            let (old, new) = (vtep_of(&change.old), vtep_of(&change.new));
            if old == new {
                continue;
            }
            let mut result = Ok(());
            if let Some((ip, vtep)) = new {
                result = self.vips.set_mesh_vtep(ip, Some(vtep));
                added.push(vtep);
            }
            // After a restart, VTEPs are removed only once the network DB settled (as the
            // VIPs' backends are).
            if let Some((ip, _)) = old
                && new.is_none_or(|(new_ip, _)| new_ip != ip)
                && settle.settled
            {
                result = result.and(self.vips.set_mesh_vtep(ip, None));
            }
            if let Err(e) = result {
                warn!(error = %Chain(e.as_ref()), "updating the published ports' VTEPs");
                // Made whole at the next refresh.
                self.mesh.lock().applied = None;
            }
        }
        self.knock_at_vteps(added, false);
    }

    /// Knocks at the remote ones among `vteps` and the others known that were not knocked at
    /// lately; `all`: `vteps` are all the table sends to (the others are forgotten).
    fn knock_at_vteps(&self, vteps: impl IntoIterator<Item = Ipv4Addr>, all: bool) {
        let own = self.config.data_path_addr;
        let remote: BTreeSet<Ipv4Addr> = vteps.into_iter().filter(|v| Some(*v) != own).collect();
        let due: Vec<Ipv4Addr> = {
            let mut state = self.mesh.lock();
            if all {
                state.knocked.retain(|vtep, _| remote.contains(vtep));
            }
            let known: Vec<Ipv4Addr> = state.knocked.keys().copied().collect();
            let due: BTreeSet<Ipv4Addr> = remote
                .into_iter()
                .chain(known)
                .filter(|v| {
                    state
                        .knocked
                        .get(v)
                        .is_none_or(|t| t.elapsed() >= KNOCK_EVERY)
                })
                .collect();
            for vtep in &due {
                state.knocked.insert(*vtep, Instant::now());
            }
            due.into_iter().collect()
        };
        for vtep in due {
            knock(vtep);
        }
    }

    /// What the mesh's table is made of beyond its ports and VTEPs; `None` while this agent
    /// has not heard of the routing mesh (from the leader or its saved copy): then the maps
    /// are left as they are, so a restarting agent does not stop serving what the previous
    /// one set up.
    fn mesh_frame(&self) -> Option<MeshFrame> {
        // Until the ingress endpoint is there nothing is published, host mode included: the
        // programs take an all-zero setting for "not configured".
        let (network, ingress_addr) = {
            let state = self.mesh.lock();
            match (&state.mesh, &state.endpoint) {
                (None, _) => return None,
                (Some(mesh), Some((_, addr))) => (mesh.ingress.clone(), *addr),
                (Some(_), None) => return Some(MeshFrame::default()),
            }
        };
        let Some(network) = network else {
            return Some(MeshFrame::default());
        };
        let Some(config) = self.mesh_config(ingress_addr, &network) else {
            return Some(MeshFrame::default());
        };
        Some(MeshFrame {
            config,
            addrs: self.underlay_addrs(),
            ingress_ifindex: nix::net::if_::if_nametoindex(NODE_INGRESS_INTERFACE).unwrap_or(0),
            ingress: Some(network.id),
        })
    }

    /// The mesh's maps as they should be now, around `frame`.
    fn mesh_table(&self, frame: &MeshFrame, settled: bool) -> MeshTable {
        let mut table = MeshTable {
            config: frame.config,
            addrs: frame.addrs.clone(),
            ingress_ifindex: frame.ingress_ifindex,
            ..MeshTable::default()
        };
        let Some(network_id) = &frame.ingress else {
            return table;
        };
        {
            let state = self.mesh.lock();
            let Some(mesh) = &state.mesh else {
                return table;
            };
            let host_services: BTreeSet<&str> = state
                .host_tasks
                .values()
                .map(|t| t.service.as_str())
                .collect();
            for service in &mesh.services {
                for port in &service.ports {
                    let proto = proto_number(port.protocol);
                    let (frontend, mode) = match port.mode {
                        PublishMode::Ingress => match (service.ingress_vip, port.source) {
                            (Some(vip), PortSource::Client) => (vip, MODE_INGRESS_CLIENT),
                            (Some(vip), PortSource::Snat) => (vip, MODE_INGRESS),
                            (None, _) => continue,
                        },
                        // Only where a task of the service runs: elsewhere the port is the
                        // node's own business (nothing listens: the kernel refuses), as in
                        // Docker.
                        PublishMode::Host if !host_services.contains(service.name.as_str()) => {
                            continue;
                        }
                        PublishMode::Host => (
                            Ipv4Addr::from(host_frontend(port.published, proto)),
                            MODE_HOST,
                        ),
                    };
                    table.ports.insert(
                        PortKey::new(port.published, proto),
                        PublishedPort::new(frontend.octets(), port.target, mode),
                    );
                }
            }
        }
        for e in self.visible().on_network(network_id) {
            if e.vtep != Ipv4Addr::UNSPECIFIED {
                table.vteps.insert(e.ip, e.vtep);
            }
        }
        if !settled {
            // After a restart the network DB starts empty while the VIP maps keep their
            // backends: keep their VTEPs too until it has settled (see `vip.rs`).
            for (ip, vtep) in self.vips.mesh_table().vteps {
                table.vteps.entry(ip).or_insert(vtep);
            }
        }
        table
    }

    /// The settings of the mesh's programs, if this node has what they need.
    fn mesh_config(&self, ingress_addr: Ipv4Addr, ingress: &Network) -> Option<MeshConfig> {
        let vtep = self.config.data_path_addr?;
        let interface = self.config.underlay_interface.as_deref()?;
        let ifindex = nix::net::if_::if_nametoindex(interface).ok()?;
        Some(MeshConfig {
            ingress_ip: raw(ingress_addr),
            vtep_ip: raw(vtep),
            underlay_ifindex: ifindex,
            vni: ingress.vni,
            vxlan_port: self.config.data_path_port.to_be(),
            // What the ingress sandbox's interfaces were given (`ensure_network`); above
            // 65535 cannot happen (the option is bounded, and so is an underlay's MTU).
            ingress_mtu: u16::try_from(self.config.network_mtu(ingress)).unwrap_or(u16::MAX),
        })
    }

    /// The IPv4 addresses of the underlay interface: where ports are published.
    fn underlay_addrs(&self) -> std::collections::BTreeSet<Ipv4Addr> {
        let Some(interface) = self.config.underlay_interface.as_deref() else {
            return Default::default();
        };
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return Default::default();
        };
        addrs
            .filter(|a| a.interface_name == interface)
            .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use shoal_control::cluster::{
        PortConfig,
        mesh::{PublishedService, ServiceVip},
    };

    use super::*;

    fn word(vips: &[(&str, [u8; 4])], host_ports: &[(&str, u16)]) -> RoutingMesh {
        RoutingMesh {
            ingress: None,
            node_addr: None,
            services: host_ports
                .iter()
                .map(|(name, port)| PublishedService {
                    name: name.to_string(),
                    ingress_vip: None,
                    ports: vec![PortConfig {
                        protocol: PortProtocol::Tcp,
                        target: 80,
                        published: *port,
                        mode: PublishMode::Host,
                        source: PortSource::default(),
                    }],
                })
                .collect(),
            vips: vips
                .iter()
                .map(|(network, addr)| ServiceVip {
                    network_id: network.to_string(),
                    addr: Ipv4Addr::from(*addr),
                })
                .collect(),
        }
    }

    fn reindexed(old: RoutingMesh, new: RoutingMesh) -> BTreeSet<Ipv4Addr> {
        let mut inner = Inner {
            mesh: Some(old),
            ..Inner::default()
        };
        inner.index();
        inner.mesh = Some(new);
        inner.reindex()
    }

    #[test]
    fn a_changed_word_names_only_the_keys_that_changed() {
        let a = ("net-a", [10, 0, 0, 2]);
        let b = ("net-a", [10, 0, 0, 3]);
        let c = ("net-b", [10, 1, 0, 2]);
        let frontend = |port| Ipv4Addr::from(host_frontend(port, 6));
        // Nothing changed: nothing to compute again.
        let same = word(&[a, b], &[("web", 8080)]);
        assert_eq!(reindexed(same.clone(), same), BTreeSet::new());
        // A service created (its VIP), another removed, one VIP moved to another network.
        let changed = reindexed(word(&[a, b], &[]), word(&[("net-b", a.1), c], &[]));
        assert_eq!(
            changed,
            [a.1, b.1, c.1].map(Ipv4Addr::from).into(),
            "a moved, b went, c came"
        );
        // A host-mode port published, another's services changed, one left alone.
        let changed = reindexed(
            word(&[a], &[("web", 8080), ("api", 9090)]),
            word(
                &[a],
                &[("web", 8080), ("api", 9090), ("db", 9090), ("new", 7070)],
            ),
        );
        assert_eq!(changed, [frontend(9090), frontend(7070)].into());
    }
}
