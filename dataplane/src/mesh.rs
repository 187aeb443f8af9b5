//! [`Mesh`]: the userspace side of published ports. It keeps the maps of `shoal_common::mesh`
//! equal to a desired [`MeshTable`] (this node's settings and addresses, the published ports,
//! the ingress backends' VTEPs), reads the events and forgets flows that are over, in both
//! flow tables (confirmed, and unconfirmed: what a SYN flood fills), counting what its expiry
//! removed and what the LRU took.
//!
//! Which tasks serve a port is not here: a port's frontend is an entry of the VIP load
//! balancer ([`crate::LoadBalancer`]), whose backends and round robin it shares.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use shoal_common::{
    lb::{FLOW_FORWARD, FlowKey, FlowState},
    mesh::{
        ADDRS_MAP, CONFIG_MAP, EVENTS_MAP, FLOWS_MAP, INGRESS_IF_MAP, MeshConfig, MeshEvent,
        MeshFlow, PORTS_MAP, PortKey, PublishedPort, RETURNS_MAP, ReturnPath, UNCONFIRMED_MAP,
        VTEPS_MAP,
    },
};
use tracing::warn;

pub use crate::flow_lifetime::{UNCONFIRMED_TCP_IDLE, UNCONFIRMED_UDP_IDLE};
use crate::{
    error::Error,
    flow_clock::{FlowClock, FlowTime},
    flow_lifetime::{CLOSED_FLOW_LINGER, LeftInPlace, flow_is_over, unconfirmed_is_over},
    maps::{add_to_event, addr, event_total, map_error, octets, take},
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
    /// The node's ingress interface (where answers of client-kept flows go back to their
    /// receiving node); 0: none.
    pub ingress_ifindex: u32,
}

/// The mesh's maps.
pub struct Mesh {
    config: Array<MapData, MeshConfig>,
    addrs: HashMap<MapData, u32, u32>,
    /// Indexed by [`PortKey::index`]; an all-zero entry is a port not published.
    ports: Array<MapData, PublishedPort>,
    vteps: HashMap<MapData, u32, u32>,
    ingress_if: Array<MapData, u32>,
    /// On this node's tasks' side: answers of client-kept flows -> their receiving node.
    returns: HashMap<MapData, FlowKey, ReturnPath>,
    /// Confirmed flows.
    flows: HashMap<MapData, FlowKey, MeshFlow>,
    /// New flows not confirmed by their client yet.
    unconfirmed: HashMap<MapData, FlowKey, MeshFlow>,
    events: PerCpuArray<MapData, u64>,
    /// What the last expiry round left in both flow tables: what is gone at the next round
    /// without the programs or the expiry removing it, the LRU took.
    left_in_place: Option<LeftInPlace>,
    /// What the maps hold since the last [`Mesh::apply`]; `None` until then (or after a
    /// failed one): the next apply reads the maps.
    programmed: Option<MeshTable>,
    /// Converts the flow entries' stamps (jiffies) for the expiry rules.
    clock: FlowClock,
}

impl Mesh {
    /// Takes the mesh's maps out of the loaded object (pinned maps of an earlier agent keep
    /// their contents until the next [`Mesh::apply`]).
    pub fn adopt(ebpf: &mut aya::Ebpf, clock: FlowClock) -> Result<Self, Error> {
        Ok(Mesh {
            config: Array::try_from(take(ebpf, CONFIG_MAP)?).map_err(map_error(CONFIG_MAP))?,
            addrs: HashMap::try_from(take(ebpf, ADDRS_MAP)?).map_err(map_error(ADDRS_MAP))?,
            ports: Array::try_from(take(ebpf, PORTS_MAP)?).map_err(map_error(PORTS_MAP))?,
            vteps: HashMap::try_from(take(ebpf, VTEPS_MAP)?).map_err(map_error(VTEPS_MAP))?,
            ingress_if: Array::try_from(take(ebpf, INGRESS_IF_MAP)?)
                .map_err(map_error(INGRESS_IF_MAP))?,
            returns: HashMap::try_from(take(ebpf, RETURNS_MAP)?).map_err(map_error(RETURNS_MAP))?,
            flows: HashMap::try_from(take(ebpf, FLOWS_MAP)?).map_err(map_error(FLOWS_MAP))?,
            unconfirmed: HashMap::try_from(take(ebpf, UNCONFIRMED_MAP)?)
                .map_err(map_error(UNCONFIRMED_MAP))?,
            events: PerCpuArray::try_from(take(ebpf, EVENTS_MAP)?)
                .map_err(map_error(EVENTS_MAP))?,
            left_in_place: None,
            programmed: None,
            clock,
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
            ports: self.published_ports()?,
            vteps: entries(&self.vteps, VTEPS_MAP)?
                .into_iter()
                .map(|(k, v)| (addr(k), addr(v)))
                .collect(),
            ingress_ifindex: self
                .ingress_if
                .get(&0, 0)
                .map_err(map_error(INGRESS_IF_MAP))?,
        })
    }

    /// Makes the maps hold exactly `desired`: VTEPs and addresses before the ports that need
    /// them, ports that go before the VTEPs they used. Only what differs from what the maps
    /// hold is written; what they hold is remembered from the last apply (read from the maps
    /// once, at the first apply after adoption: the full reconcile), so a change costs the
    /// writes it needs and one in-memory comparison, no map reads.
    pub fn apply(&mut self, desired: &MeshTable) -> Result<(), Error> {
        let current = match self.programmed.take() {
            Some(table) => table,
            None => self.table()?,
        };
        // Not remembered after a failure: the next apply reads the maps again.
        self.write_difference(&current, desired)?;
        self.programmed = Some(desired.clone());
        Ok(())
    }

    /// Publishes `key` as `port`, or withdraws it (`None`): one map write, whatever else is
    /// published (the frontend and the VTEPs it needs must be there already).
    pub fn set_port(&mut self, key: PortKey, port: Option<PublishedPort>) -> Result<(), Error> {
        self.write_port(key, port.as_ref())?;
        if let Some(table) = &mut self.programmed {
            match port {
                Some(p) => table.ports.insert(key, p),
                None => table.ports.remove(&key),
            };
        }
        Ok(())
    }

    /// Sets the VTEP of the ingress backend `ip` (`None`: forgets it): one map write, whatever
    /// else is published (a port whose frontend still sends to `ip` must be withdrawn first).
    pub fn set_vtep(&mut self, ip: Ipv4Addr, vtep: Option<Ipv4Addr>) -> Result<(), Error> {
        match vtep {
            Some(v) => self
                .vteps
                .insert(octets(ip), octets(v), 0)
                .map_err(map_error(VTEPS_MAP))?,
            None => remove_entry(&mut self.vteps, &octets(ip), VTEPS_MAP)?,
        }
        if let Some(table) = &mut self.programmed {
            match vtep {
                Some(v) => table.vteps.insert(ip, v),
                None => table.vteps.remove(&ip),
            };
        }
        Ok(())
    }

    /// Writes `key`'s entry of the port index: `port`, or all zero (not published).
    fn write_port(&mut self, key: PortKey, port: Option<&PublishedPort>) -> Result<(), Error> {
        let index = key.index().ok_or_else(|| Error::Io {
            what: "publishing a port: only TCP and UDP have ports",
            path: PORTS_MAP.into(),
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        self.ports
            .set(index, port.copied().unwrap_or_default(), 0)
            .map_err(map_error(PORTS_MAP))
    }

    /// The published ports, read from the whole index (131,072 entries: at the first apply
    /// after adoption, and for tests).
    fn published_ports(&self) -> Result<BTreeMap<PortKey, PublishedPort>, Error> {
        let mut ports = BTreeMap::new();
        for (index, entry) in self.ports.iter().enumerate() {
            let port = entry.map_err(map_error(PORTS_MAP))?;
            if port.mode != 0 {
                let (number, proto) = match index {
                    i if i < 65_536 => (i as u16, 6),
                    i => ((i - 65_536) as u16, 17),
                };
                ports.insert(PortKey::new(number, proto), port);
            }
        }
        Ok(ports)
    }

    fn write_difference(&mut self, current: &MeshTable, desired: &MeshTable) -> Result<(), Error> {
        if current.config != desired.config {
            self.config
                .set(0, desired.config, 0)
                .map_err(map_error(CONFIG_MAP))?;
        }
        if current.ingress_ifindex != desired.ingress_ifindex {
            self.ingress_if
                .set(0, desired.ingress_ifindex, 0)
                .map_err(map_error(INGRESS_IF_MAP))?;
        }
        for (ip, vtep) in &desired.vteps {
            if current.vteps.get(ip) != Some(vtep) {
                self.vteps
                    .insert(octets(*ip), octets(*vtep), 0)
                    .map_err(map_error(VTEPS_MAP))?;
            }
        }
        for a in desired.addrs.difference(&current.addrs) {
            self.addrs
                .insert(octets(*a), 1, 0)
                .map_err(map_error(ADDRS_MAP))?;
        }
        for (key, port) in &desired.ports {
            if current.ports.get(key) != Some(port) {
                self.write_port(*key, Some(port))?;
            }
        }
        for key in current.ports.keys() {
            if !desired.ports.contains_key(key) {
                self.write_port(*key, None)?;
            }
        }
        for a in current.addrs.difference(&desired.addrs) {
            remove_entry(&mut self.addrs, &octets(*a), ADDRS_MAP)?;
        }
        for ip in current.vteps.keys() {
            if !desired.vteps.contains_key(ip) {
                remove_entry(&mut self.vteps, &octets(*ip), VTEPS_MAP)?;
            }
        }
        Ok(())
    }

    /// How often each event happened, summed over CPUs (the agent's counts included).
    pub fn events(&self) -> Result<Vec<(MeshEvent, u64)>, Error> {
        MeshEvent::ALL
            .iter()
            .map(|event| Ok((*event, self.event(*event)?)))
            .collect()
    }

    fn event(&self, event: MeshEvent) -> Result<u64, Error> {
        event_total(&self.events, event as u32, EVENTS_MAP)
    }

    /// Adds `n` to one of the events the agent counts ([`MeshEvent::Expired`] and the three
    /// after it).
    fn count(&mut self, event: MeshEvent, n: u64) -> Result<(), Error> {
        add_to_event(&mut self.events, event as u32, n, EVENTS_MAP)
    }

    /// The answers this node's tasks send back to other nodes (client-kept flows): answer key
    /// (no source address) -> where and as whom. For tests and diagnostics.
    pub fn return_entries(&self) -> Result<Vec<(FlowKey, ReturnPath)>, Error> {
        self.returns
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(RETURNS_MAP))
    }

    /// Confirmed flow entries now in the map (both directions), for tests and diagnostics.
    pub fn flow_entries(&self) -> Result<Vec<(FlowKey, MeshFlow)>, Error> {
        list(&self.flows, FLOWS_MAP)
    }

    /// Unconfirmed flow entries now in the map (both directions), for tests and diagnostics.
    pub fn unconfirmed_flow_entries(&self) -> Result<Vec<(FlowKey, MeshFlow)>, Error> {
        list(&self.unconfirmed, UNCONFIRMED_MAP)
    }

    /// Forgets the flows that are over: confirmed ones by the VIP flows' rules (closed TCP
    /// after a linger, UDP after minutes of quiet; open TCP never), unconfirmed ones once
    /// their client has been quiet for seconds (see `flow_lifetime`). Counts what went
    /// ([`MeshEvent::Expired`], [`MeshEvent::UnconfirmedExpired`]) and what the LRU took since
    /// the last round ([`MeshEvent::Evicted`], [`MeshEvent::UnconfirmedEvicted`]). Returns how
    /// many entries went.
    pub fn expire_flows(&mut self, now_ns: u64) -> Result<usize, Error> {
        let now = self.clock.at(now_ns);
        let forgotten = self.event(MeshEvent::Forgotten)?;
        let confirmed: std::collections::HashMap<FlowKey, MeshFlow> =
            self.flow_entries()?.into_iter().collect();
        let unconfirmed: std::collections::HashMap<FlowKey, MeshFlow> =
            self.unconfirmed_flow_entries()?.into_iter().collect();
        let evicted = self
            .left_in_place
            .as_ref()
            .map(|left| left.evicted_since(&confirmed, &unconfirmed, forgotten))
            .unwrap_or_default();
        let expired = remove(&mut self.flows, expired_confirmed(&confirmed, now));
        let expired_unconfirmed = remove(
            &mut self.unconfirmed,
            expired_unconfirmed(&unconfirmed, now),
        );
        self.left_in_place = Some(LeftInPlace {
            confirmed: confirmed
                .into_keys()
                .filter(|k| !expired.contains(k))
                .collect(),
            unconfirmed: unconfirmed
                .into_keys()
                .filter(|k| !expired_unconfirmed.contains(k))
                .collect(),
            forgotten,
        });
        for (event, n) in [
            (MeshEvent::Expired, expired.len()),
            (MeshEvent::UnconfirmedExpired, expired_unconfirmed.len()),
            (MeshEvent::Evicted, evicted.confirmed as usize),
            (MeshEvent::UnconfirmedEvicted, evicted.unconfirmed as usize),
        ] {
            // Counting never stands in the way of forgetting flows.
            if let Err(e) = self.count(event, n as u64) {
                warn!(event = event.name(), error = ?e, "counting flow expiry");
            }
        }
        Ok(expired.len() + expired_unconfirmed.len())
    }
}

/// The reply entries whose forward entry is in `entries`.
fn partnered_replies(
    entries: &std::collections::HashMap<FlowKey, MeshFlow>,
) -> std::collections::HashSet<FlowKey> {
    entries
        .iter()
        .filter(|(k, _)| k.direction == FLOW_FORWARD)
        .map(|(k, f)| reply_key(k.proto, f))
        .collect()
}

/// The confirmed entries that are over: both entries of a flow that is over, and reply
/// entries left alone (their forward entry gone) for [`CLOSED_FLOW_LINGER`].
fn expired_confirmed(
    entries: &std::collections::HashMap<FlowKey, MeshFlow>,
    now: FlowTime,
) -> Vec<FlowKey> {
    let partnered = partnered_replies(entries);
    let mut expired = Vec::new();
    for (key, flow) in entries {
        if key.direction != FLOW_FORWARD {
            // A reply entry is looked at from its forward entry; alone, it only lingers.
            let alone = !partnered.contains(key);
            if alone && now.since(flow.last_seen) >= CLOSED_FLOW_LINGER {
                expired.push(*key);
            }
            continue;
        }
        let partner_key = reply_key(key.proto, flow);
        let partner = entries.get(&partner_key).map(as_flow_state);
        if flow_is_over(key.proto, &as_flow_state(flow), partner.as_ref(), now) {
            expired.push(*key);
            if partner.is_some() {
                expired.push(partner_key);
            }
        }
    }
    expired
}

/// The unconfirmed entries that are over: both entries of a flow whose client has been quiet
/// too long, and reply entries whose forward entry is gone, as long after their last answer.
fn expired_unconfirmed(
    entries: &std::collections::HashMap<FlowKey, MeshFlow>,
    now: FlowTime,
) -> Vec<FlowKey> {
    let partnered = partnered_replies(entries);
    let mut expired = Vec::new();
    for (key, flow) in entries {
        if key.direction == FLOW_FORWARD {
            if unconfirmed_is_over(key.proto, flow.last_seen, now) {
                expired.push(*key);
                let partner_key = reply_key(key.proto, flow);
                if entries.contains_key(&partner_key) {
                    expired.push(partner_key);
                }
            }
        } else if !partnered.contains(key) && unconfirmed_is_over(key.proto, flow.last_seen, now) {
            expired.push(*key);
        }
    }
    expired
}

/// Removes `keys` from `map`; returns those that were there.
fn remove(
    map: &mut HashMap<MapData, FlowKey, MeshFlow>,
    keys: Vec<FlowKey>,
) -> std::collections::HashSet<FlowKey> {
    keys.into_iter()
        .filter(|key| map.remove(key).is_ok())
        .collect()
}

fn list(
    map: &HashMap<MapData, FlowKey, MeshFlow>,
    name: &'static str,
) -> Result<Vec<(FlowKey, MeshFlow)>, Error> {
    map.iter()
        .collect::<Result<_, _>>()
        .map_err(map_error(name))
}

/// A node's flow tables as pinned under `pin_dir`, read from outside the agent (tests,
/// diagnostics): its confirmed and its unconfirmed entries.
pub fn pinned_flow_entries(pin_dir: &Path) -> Result<PinnedFlows, Error> {
    let open = |name: &'static str| -> Result<Vec<(FlowKey, MeshFlow)>, Error> {
        let data = MapData::from_pin(pin_dir.join(name)).map_err(map_error(name))?;
        let map = HashMap::try_from(Map::from_map_data(data).map_err(map_error(name))?)
            .map_err(map_error(name))?;
        list(&map, name)
    };
    Ok(PinnedFlows {
        confirmed: open(FLOWS_MAP)?,
        unconfirmed: open(UNCONFIRMED_MAP)?,
    })
}

/// What [`pinned_flow_entries`] read.
#[derive(Clone, Debug, Default)]
pub struct PinnedFlows {
    pub confirmed: Vec<(FlowKey, MeshFlow)>,
    pub unconfirmed: Vec<(FlowKey, MeshFlow)>,
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
        last_seen: flow.last_seen,
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
/// Removes `key` from `map` (missing already is fine).
fn remove_entry<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<(), Error> {
    match map.remove(key) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_error(name)(e)),
    }
}
