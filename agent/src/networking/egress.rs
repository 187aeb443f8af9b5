//! Egress to the outside world: the node's gateway bridge (like docker_gwbridge, with
//! masquerade) and each task's address on it.
//!
//! Addresses on the bridge are this node's business alone (the bridge never leaves the node),
//! so they are leased here rather than by the leader, and kept in `<state>/gateway-leases.json`
//! so a restarted agent re-attaches every re-adopted task with the address it already has.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError},
};

use shoal_control::{cluster::Task, error_chain::Chain};
use shoal_dataplane::overlay::{
    GatewaySpec, attach_task_gateway, detach_task_gateway, ensure_gateway_bridge,
    remove_gateway_bridge,
};
use tracing::warn;

pub struct Egress {
    spec: GatewaySpec,
    node_netns: PathBuf,
    leases_file: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The bridge and masquerade were set up by this agent.
    ready: bool,
    /// Task ID -> address on the bridge.
    leases: BTreeMap<String, Ipv4Addr>,
}

/// The gateway-side end of a task's veth (at most 15 characters).
fn bridge_side_name(task_id: &str) -> String {
    format!("g{}", &task_id[..task_id.len().min(12)])
}

impl Egress {
    pub fn new(state_dir: &Path, node_netns: &Path, subnet: ipnet::Ipv4Net) -> Egress {
        let leases_file = state_dir.join("gateway-leases.json");
        let leases = match std::fs::read(&leases_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(file = %leases_file.display(), error = %Chain(&e), "unreadable gateway leases: starting afresh");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Egress {
            spec: GatewaySpec::with_subnet(subnet),
            node_netns: node_netns.to_path_buf(),
            leases_file,
            state: Mutex::new(State {
                ready: false,
                leases,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects the task to the gateway bridge as `eth<index>` with MTU `mtu`, with the
    /// default route. Returns its address there and its bridge port (in the node's netns).
    pub fn attach(
        &self,
        task: &Task,
        netns: &Path,
        index: usize,
        mtu: u32,
    ) -> anyhow::Result<(Ipv4Addr, String)> {
        let mut state = self.lock();
        if !state.ready {
            ensure_gateway_bridge(&self.node_netns, &self.spec)?;
            state.ready = true;
        }
        let ip = match state.leases.get(&task.id) {
            Some(ip) => *ip,
            None => {
                let ip = self.free_address(&state)?;
                state.leases.insert(task.id.clone(), ip);
                self.save(&state);
                ip
            }
        };
        let port = bridge_side_name(&task.id);
        attach_task_gateway(
            &self.node_netns,
            &self.spec,
            netns,
            &format!("eth{index}"),
            ip,
            &port,
            mtu,
        )?;
        Ok((ip, port))
    }

    /// Removes the task's veth (if any) and frees its address.
    pub fn detach(&self, task: &Task) {
        let mut state = self.lock();
        if state.leases.remove(&task.id).is_none() {
            return;
        }
        self.save(&state);
        if let Err(e) =
            detach_task_gateway(&self.node_netns, &self.spec, &bridge_side_name(&task.id))
        {
            warn!(task = %task.id, error = %Chain(&e), "detaching a task from the gateway bridge");
        }
    }

    /// Removes the bridge and the masquerade (the node leaves the swarm).
    pub fn remove(&self) {
        let mut state = self.lock();
        state.ready = false;
        if let Err(e) = remove_gateway_bridge(&self.node_netns, &self.spec) {
            warn!(error = %Chain(&e), "removing the gateway bridge");
        }
    }

    fn free_address(&self, state: &State) -> anyhow::Result<Ipv4Addr> {
        let used: std::collections::HashSet<&Ipv4Addr> = state.leases.values().collect();
        self.spec
            .subnet
            .hosts()
            .find(|ip| *ip != self.spec.gateway && !used.contains(ip))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no address left on the gateway bridge ({})",
                    self.spec.subnet
                )
            })
    }

    fn save(&self, state: &State) {
        let write = || -> std::io::Result<()> {
            let tmp = self.leases_file.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&state.leases)?)?;
            std::fs::rename(&tmp, &self.leases_file)
        };
        if let Err(e) = write() {
            warn!(file = %self.leases_file.display(), error = %Chain(&e), "saving gateway leases");
        }
    }
}
