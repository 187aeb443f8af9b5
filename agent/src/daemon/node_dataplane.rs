//! The eBPF data path as this node runs it: maps pinned under the node's bpffs directory, the
//! XDP program on the underlay interface, the tc programs on task veths and the VIP maps (for
//! the networking, through [`ServiceDataplane`]).

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use anyhow::Context as _;
use shoal_common::{lb::LbEvent, mesh::MeshEvent};
use shoal_control::{
    api::{DataplaneInfo, FlowTableInfo, HookCounters},
    error_chain::Chain,
    identity::NodeId,
};
use shoal_dataplane::{
    Dataplane, Error as DataplaneError, LbTable, MeshTable, TableSizes, XdpAttachMode, bpffs,
    lb::{ApplyReport, CheckReport, VipCounters},
    netns::run_in,
    sock_destroy::Destroyed,
};
use tracing::{info, warn};

use super::xdp_mode;
use crate::{cli::XdpModeArg, networking::ServiceDataplane};

/// Shared by the API, the metrics and the networking; the daemon takes the data path out at
/// shutdown to detach it.
#[derive(Clone)]
pub struct SharedDataplane(Arc<Mutex<Option<NodeDataplane>>>);

impl SharedDataplane {
    pub fn new(dataplane: NodeDataplane) -> Self {
        SharedDataplane(Arc::new(Mutex::new(Some(dataplane))))
    }

    pub fn lock(&self) -> MutexGuard<'_, Option<NodeDataplane>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

const STOPPED: &str = "the data path is stopped";

impl ServiceDataplane for SharedDataplane {
    fn attach_task_veth(&self, netns: &Path, interface: &str) -> anyhow::Result<()> {
        let mut guard = self.lock();
        let dp = guard.as_mut().context(STOPPED)?;
        run_in(netns, || dp.dataplane.attach_task_veth(interface))
            .and_then(|attached| attached)
            .with_context(|| format!("attaching the load balancer to {interface}"))
    }

    fn attach_mesh_reply(&self, netns: &Path, interface: &str) -> anyhow::Result<()> {
        let mut guard = self.lock();
        let dp = guard.as_mut().context(STOPPED)?;
        run_in(netns, || dp.dataplane.attach_mesh_reply(interface))
            .and_then(|attached| attached)
            .with_context(|| format!("attaching the published ports' reply program to {interface}"))
    }

    fn apply_mesh(&self, table: &MeshTable) -> anyhow::Result<()> {
        let mut guard = self.lock();
        let dp = guard.as_mut().context(STOPPED)?;
        Ok(dp.dataplane.mesh_mut().apply(table)?)
    }

    fn set_mesh_vtep(&self, ip: Ipv4Addr, vtep: Option<Ipv4Addr>) -> anyhow::Result<()> {
        let mut guard = self.lock();
        let dp = guard.as_mut().context(STOPPED)?;
        Ok(dp.dataplane.mesh_mut().set_vtep(ip, vtep)?)
    }

    fn apply(&self, table: &LbTable, draining: &LbTable) -> anyhow::Result<ApplyReport> {
        let mut guard = self.lock();
        let dp = guard.as_mut().context(STOPPED)?;
        Ok(dp.dataplane.lb_mut().apply_draining(table, draining)?)
    }

    fn apply_service(
        &self,
        vip: Ipv4Addr,
        backends: &BTreeSet<Ipv4Addr>,
        draining: &BTreeSet<Ipv4Addr>,
    ) -> anyhow::Result<ApplyReport> {
        let mut guard = self.lock();
        let dp = guard.as_mut().context(STOPPED)?;
        Ok(dp
            .dataplane
            .lb_mut()
            .apply_service(vip, backends, draining)?)
    }

    fn remove_service(&self, vip: Ipv4Addr) -> anyhow::Result<ApplyReport> {
        let mut guard = self.lock();
        let dp = guard.as_mut().context(STOPPED)?;
        Ok(dp.dataplane.lb_mut().remove_service(vip)?)
    }

    fn check_vips(&self, after: Option<Ipv4Addr>, budget: usize) -> anyhow::Result<CheckReport> {
        let mut guard = self.lock();
        let dp = guard.as_mut().context(STOPPED)?;
        Ok(dp.dataplane.lb_mut().check(after, budget)?)
    }

    fn expire_flows(&self) -> anyhow::Result<usize> {
        let mut guard = self.lock();
        let dp = guard.as_mut().context(STOPPED)?;
        // A flow table resized at this start: what the last run's programs still put in
        // the old one, copied over first.
        dp.dataplane.carry_over();
        let now = shoal_dataplane::lb::monotonic_now_ns();
        let vip_flows = dp.dataplane.lb_mut().expire_flows(now);
        let mesh_flows = dp.dataplane.mesh_mut().expire_flows(now);
        Ok(vip_flows? + mesh_flows?)
    }

    fn destroy_balanced_sockets(
        &self,
        netns: &[PathBuf],
        backends: &BTreeSet<Ipv4Addr>,
    ) -> anyhow::Result<Destroyed> {
        let mut guard = self.lock();
        let dp = guard.as_mut().context(STOPPED)?;
        let mut destroyed = Destroyed::default();
        for path in netns {
            match dp.dataplane.destroy_balanced_sockets(path, backends) {
                Ok(d) => destroyed.add(d),
                // A task that stopped since its namespace was listed.
                Err(DataplaneError::EnterNetns { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(netns = %path.display(), error = %Chain(&e),
                    "destroying the sockets balanced to removed backends"),
            }
        }
        dp.sockets_destroyed.add(destroyed);
        Ok(destroyed)
    }

    fn table(&self) -> LbTable {
        self.lock()
            .as_ref()
            .map(|dp| dp.dataplane.lb().table())
            .unwrap_or_default()
    }

    fn mesh_table(&self) -> MeshTable {
        let guard = self.lock();
        let Some(dp) = guard.as_ref() else {
            return MeshTable::default();
        };
        dp.dataplane.mesh().table().unwrap_or_else(|e| {
            warn!(error = %Chain(&e), "reading the published ports' maps");
            MeshTable::default()
        })
    }
}

pub struct NodeDataplane {
    dataplane: Dataplane,
    /// The interface carrying the data-path address, when there is one.
    underlay_interface: Option<String>,
    /// Whether the socket-level balancer is attached.
    socket_lb: bool,
    /// Sockets balanced to a backend that was then removed, destroyed since the agent started.
    sockets_destroyed: Destroyed,
}

impl NodeDataplane {
    /// Loads the programs (re-adopting this node's pinned maps) and attaches XDP to the
    /// underlay interface, if the node has a data-path address.
    pub fn start(
        node_id: &NodeId,
        underlay_interface: Option<&str>,
        xdp_mode: XdpModeArg,
        sizes: TableSizes,
    ) -> anyhow::Result<Self> {
        let root = Path::new(bpffs::DEFAULT_ROOT);
        bpffs::ensure_mounted(root).with_context(|| {
            format!(
                "bpffs is not mounted at {} and cannot be (mount it with `mount -t bpf bpf {0}`)",
                root.display()
            )
        })?;
        let pin_dir = bpffs::node_pin_dir(root, node_id.as_str());
        let mut dataplane =
            Dataplane::load_sized(Some(&pin_dir), sizes).context("starting the data path")?;
        match underlay_interface {
            Some(interface) => attach_underlay(&mut dataplane, interface, xdp_mode)?,
            None => warn!("no data-path address: the underlay XDP program is not attached"),
        }
        // Node-local clients of published ports (`localhost:P`, the node's own addresses),
        // balanced at the socket. Without it the rest of the data path works as before.
        let socket_lb = match shoal_dataplane::sock_lb::cgroup2_root() {
            Some(cgroup) => match dataplane.attach_socket_lb(&cgroup) {
                Ok(()) => {
                    info!(cgroup = %cgroup.display(), "published ports served to node-local clients");
                    true
                }
                Err(e) => {
                    warn!(error = %Chain(&e), "node-local clients of published ports are not served");
                    false
                }
            },
            None => {
                warn!(
                    "no cgroup v2 hierarchy: node-local clients of published ports are not served"
                );
                false
            }
        };
        Ok(NodeDataplane {
            dataplane,
            underlay_interface: underlay_interface.map(str::to_string),
            socket_lb,
            sockets_destroyed: Destroyed::default(),
        })
    }

    /// Balances the VIP connections of the tasks below `subtree` (the node's task cgroup
    /// subtree in the cgroup v2 hierarchy) at the socket; without it (or without the socket
    /// balancer) their traffic to VIPs takes the tc path, as it works on its own.
    pub fn serve_tasks_at_socket(&mut self, subtree: Option<&Path>) {
        if !self.socket_lb {
            return;
        }
        let Some(subtree) = subtree else {
            warn!("tasks have no cgroup v2 subtree: their VIP traffic is balanced per packet (tc)");
            return;
        };
        match self.dataplane.serve_tasks_at_socket(subtree) {
            Ok(id) => {
                info!(cgroup = %subtree.display(), id, "tasks' VIP connections balanced at the socket")
            }
            Err(e) => {
                warn!(error = %Chain(&e), "tasks' VIP traffic is balanced per packet (tc) only")
            }
        }
    }

    /// The load balancer's per-VIP and per-backend counters, and its events, read now.
    pub fn lb_counters(&self) -> (Vec<VipCounters>, Vec<(LbEvent, u64)>) {
        let lb = self.dataplane.lb();
        let read = lb.counters().and_then(|c| Ok((c, lb.events()?)));
        read.unwrap_or_else(|e| {
            warn!(error = %Chain(&e), "reading the load balancer's counters");
            Default::default()
        })
    }

    /// VIPs whose map entries the background check rewrote, since the agent started.
    pub fn lb_repairs(&self) -> u64 {
        self.dataplane.lb().repairs()
    }

    /// Sockets balanced to a backend that was then removed, destroyed since the agent started
    /// (see `ServiceDataplane::destroy_balanced_sockets`).
    pub fn sockets_destroyed(&self) -> Destroyed {
        self.sockets_destroyed
    }

    /// How often each published-port event happened, read now.
    pub fn mesh_events(&self) -> Vec<(MeshEvent, u64)> {
        self.dataplane.mesh().events().unwrap_or_else(|e| {
            warn!(error = %Chain(&e), "reading the published ports' counters");
            Vec::new()
        })
    }

    /// The API's view of the data path, counters read now.
    pub fn info(&self) -> DataplaneInfo {
        let (counters, error) = match self.dataplane.counters() {
            Ok(counters) => (
                counters
                    .iter()
                    .map(|(slot, c)| HookCounters {
                        hook: slot.name().to_string(),
                        packets: c.packets,
                        bytes: c.bytes,
                    })
                    .collect(),
                String::new(),
            ),
            Err(e) => (Vec::new(), format!("reading counters: {}", Chain(&e))),
        };
        let flow_tables = match self.dataplane.flow_tables() {
            Ok(tables) => tables
                .into_iter()
                .map(|t| FlowTableInfo {
                    name: t.name.to_string(),
                    entries: t.entries as u64,
                    capacity: t.capacity.into(),
                    memory_bytes: t.memory_bytes.unwrap_or(0),
                })
                .collect(),
            Err(e) => {
                warn!(error = %Chain(&e), "reading the flow tables");
                Vec::new()
            }
        };
        DataplaneInfo {
            underlay_interface: self.underlay_interface.clone().unwrap_or_default(),
            xdp_attached: self.underlay_interface.is_some(),
            pin_dir: self
                .dataplane
                .pin_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            counters,
            error,
            flow_tables,
        }
    }
}

/// Attaches the underlay XDP program in the mode asked for. `auto` is native, and generic
/// (with one line saying why) where native cannot work: a veth whose peer runs no XDP program
/// (see `xdp_mode`), or a driver that refuses native XDP.
fn attach_underlay(
    dataplane: &mut Dataplane,
    interface: &str,
    mode: XdpModeArg,
) -> anyhow::Result<()> {
    let mode = match mode {
        XdpModeArg::Native => XdpAttachMode::Native,
        XdpModeArg::Generic => XdpAttachMode::Generic,
        XdpModeArg::Auto => match xdp_mode::native_blocker(interface) {
            Some(reason) => {
                warn!(interface, reason = %reason, "--xdp-mode auto: XDP in generic mode");
                XdpAttachMode::Generic
            }
            None => match dataplane.attach_underlay_xdp(interface, XdpAttachMode::Native) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    warn!(interface, reason = %Chain(&e), "--xdp-mode auto: native XDP refused, XDP in generic mode");
                    XdpAttachMode::Generic
                }
            },
        },
    };
    Ok(dataplane.attach_underlay_xdp(interface, mode)?)
}
