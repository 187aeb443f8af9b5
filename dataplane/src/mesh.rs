//! [`Mesh`]: the userspace side of published ports. It keeps the maps of `shoal_common::mesh`
//! equal to a desired [`MeshTable`] (this node's settings and addresses, the published ports,
//! the ingress backends' VTEPs), reads the events and forgets flows that are over.
//!
//! Which tasks serve a port is not here: a port's frontend is an entry of the VIP load
//! balancer ([`crate::LoadBalancer`]), whose backends and round robin it shares.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use shoal_common::{
    lb::{FLOW_FORWARD, FlowKey, FlowState},
    mesh::{
        ADDRS_MAP, CONFIG_MAP, EVENTS_MAP, FLOWS_MAP, MeshConfig, MeshEvent, MeshFlow, PORTS_MAP,
        PortKey, PublishedPort, VTEPS_MAP,
    },
};

use crate::{
    error::Error,
    flow_lifetime::{CLOSED_FLOW_LINGER, flow_is_over},
    maps::{addr, map_error, octets, take},
};

/// What the mesh should do on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshTable {
    /// All zero: nothing is published (every packet passes).
    pub config: MeshConfig,
    /// The node's addresses the ports are published on.
    pub addrs: BTreeSet<Ipv4Addr>,
    pub ports: BTreeMap<PortKey, PublishedPort>,
    /// Ingress backend (task address on `ingress`) -> its node's VTEP.
    pub vteps: BTreeMap<Ipv4Addr, Ipv4Addr>,
}

/// The mesh's maps.
pub struct Mesh {
    config: Array<MapData, MeshConfig>,
    addrs: HashMap<MapData, u32, u32>,
    ports: HashMap<MapData, PortKey, PublishedPort>,
    vteps: HashMap<MapData, u32, u32>,
    flows: HashMap<MapData, FlowKey, MeshFlow>,
    events: PerCpuArray<MapData, u64>,
}

impl Mesh {
    /// Takes the mesh's maps out of the loaded object (pinned maps of an earlier agent keep
    /// their contents until the next [`Mesh::apply`]).
    pub fn adopt(ebpf: &mut aya::Ebpf) -> Result<Self, Error> {
        Ok(Mesh {
            config: Array::try_from(take(ebpf, CONFIG_MAP)?).map_err(map_error(CONFIG_MAP))?,
            addrs: HashMap::try_from(take(ebpf, ADDRS_MAP)?).map_err(map_error(ADDRS_MAP))?,
            ports: HashMap::try_from(take(ebpf, PORTS_MAP)?).map_err(map_error(PORTS_MAP))?,
            vteps: HashMap::try_from(take(ebpf, VTEPS_MAP)?).map_err(map_error(VTEPS_MAP))?,
            flows: HashMap::try_from(take(ebpf, FLOWS_MAP)?).map_err(map_error(FLOWS_MAP))?,
            events: PerCpuArray::try_from(take(ebpf, EVENTS_MAP)?)
                .map_err(map_error(EVENTS_MAP))?,
        })
    }

    /// What the maps hold now.
    pub fn table(&self) -> Result<MeshTable, Error> {
        Ok(MeshTable {
            config: self.config.get(&0, 0).map_err(map_error(CONFIG_MAP))?,
            addrs: keys(&self.addrs, ADDRS_MAP)?
                .into_iter()
                .map(addr)
                .collect(),
            ports: entries(&self.ports, PORTS_MAP)?,
            vteps: entries(&self.vteps, VTEPS_MAP)?
                .into_iter()
                .map(|(k, v)| (addr(k), addr(v)))
                .collect(),
        })
    }

    /// Makes the maps hold exactly `desired`: VTEPs and addresses before the ports that need
    /// them, ports that go before the VTEPs they used.
    pub fn apply(&mut self, desired: &MeshTable) -> Result<(), Error> {
        // Each map is read once; what differs is written.
        let config = self.config.get(&0, 0).map_err(map_error(CONFIG_MAP))?;
        let current_vteps = entries(&self.vteps, VTEPS_MAP)?;
        let current_addrs = entries(&self.addrs, ADDRS_MAP)?;
        let current_ports = entries(&self.ports, PORTS_MAP)?;
        let vteps: BTreeMap<u32, u32> = desired
            .vteps
            .iter()
            .map(|(k, v)| (octets(*k), octets(*v)))
            .collect();
        let addrs: BTreeMap<u32, u32> = desired.addrs.iter().map(|a| (octets(*a), 1)).collect();
        if config != desired.config {
            self.config
                .set(0, desired.config, 0)
                .map_err(map_error(CONFIG_MAP))?;
        }
        add_changed(&mut self.vteps, &current_vteps, &vteps, VTEPS_MAP)?;
        add_changed(&mut self.addrs, &current_addrs, &addrs, ADDRS_MAP)?;
        add_changed(&mut self.ports, &current_ports, &desired.ports, PORTS_MAP)?;
        remove_others(&mut self.ports, &current_ports, &desired.ports, PORTS_MAP)?;
        remove_others(&mut self.addrs, &current_addrs, &addrs, ADDRS_MAP)?;
        remove_others(&mut self.vteps, &current_vteps, &vteps, VTEPS_MAP)?;
        Ok(())
    }

    /// How often each event happened, summed over CPUs.
    pub fn events(&self) -> Result<Vec<(MeshEvent, u64)>, Error> {
        MeshEvent::ALL
            .iter()
            .map(|event| {
                let per_cpu = self
                    .events
                    .get(&(*event as u32), 0)
                    .map_err(map_error(EVENTS_MAP))?;
                Ok((*event, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Flow entries now in the map (both directions), for tests and diagnostics.
    pub fn flow_entries(&self) -> Result<Vec<(FlowKey, MeshFlow)>, Error> {
        self.flows
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(FLOWS_MAP))
    }

    /// Forgets the flows that are over, by the VIP flows' rules (closed TCP after a linger,
    /// UDP after minutes of quiet; open TCP never). Returns how many entries went.
    pub fn expire_flows(&mut self, now_ns: u64) -> Result<usize, Error> {
        let entries: std::collections::HashMap<FlowKey, MeshFlow> =
            self.flow_entries()?.into_iter().collect();
        let partnered: std::collections::HashSet<FlowKey> = entries
            .iter()
            .filter(|(k, _)| k.direction == FLOW_FORWARD)
            .map(|(k, f)| reply_key(k.proto, f))
            .collect();
        let mut expired = Vec::new();
        for (key, flow) in &entries {
            if key.direction != FLOW_FORWARD {
                // A reply entry is looked at from its forward entry; alone, it only lingers.
                let alone = !partnered.contains(key);
                if alone && now_ns.saturating_sub(flow.last_seen_ns) >= CLOSED_FLOW_LINGER {
                    expired.push(*key);
                }
                continue;
            }
            let partner_key = reply_key(key.proto, flow);
            let partner = entries.get(&partner_key).map(as_flow_state);
            if flow_is_over(key.proto, &as_flow_state(flow), partner.as_ref(), now_ns) {
                expired.push(*key);
                if partner.is_some() {
                    expired.push(partner_key);
                }
            }
        }
        let mut removed = 0;
        for key in expired {
            if self.flows.remove(&key).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The reply entry's key of a forward entry: what the task sends back, `task:target ->
/// local_ip:local_port` (the NAT address in ingress mode, the client in host mode).
pub fn reply_key(proto: u8, forward: &MeshFlow) -> FlowKey {
    FlowKey {
        src_ip: forward.peer_ip,
        dst_ip: forward.local_ip,
        src_port: forward.peer_port,
        dst_port: forward.local_port,
        proto,
        direction: shoal_common::lb::FLOW_REPLY,
        pad: [0; 2],
    }
}

/// The parts of a mesh flow the expiry rules look at, in the VIP flows' shape.
fn as_flow_state(flow: &MeshFlow) -> FlowState {
    FlowState {
        last_seen_ns: flow.last_seen_ns,
        flags: flow.flags,
        ..FlowState::default()
    }
}

fn keys<K: aya::Pod + Ord, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<Vec<K>, Error> {
    map.keys()
        .collect::<Result<_, _>>()
        .map_err(map_error(name))
}

fn entries<K: aya::Pod + Ord, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<BTreeMap<K, V>, Error> {
    map.iter()
        .collect::<Result<_, _>>()
        .map_err(map_error(name))
}

/// Writes the entries of `desired` that `current` (the map's contents) lacks or has otherwise.
fn add_changed<K: aya::Pod + Ord, V: aya::Pod + PartialEq>(
    map: &mut HashMap<MapData, K, V>,
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
    name: &'static str,
) -> Result<(), Error> {
    for (k, v) in desired {
        if current.get(k) != Some(v) {
            map.insert(k, v, 0).map_err(map_error(name))?;
        }
    }
    Ok(())
}

/// Removes the entries of `current` (the map's contents) that `desired` does not have.
fn remove_others<K: aya::Pod + Ord, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
    name: &'static str,
) -> Result<(), Error> {
    for k in current.keys().filter(|k| !desired.contains_key(k)) {
        match map.remove(k) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_error(name)(e)),
        }
    }
    Ok(())
}
