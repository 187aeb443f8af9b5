//! [`LoadBalancer`]: the userspace side of service VIP load balancing. It keeps the maps of
//! `shoal_common::lb` equal to a desired table (VIP -> backend addresses), changing only what
//! differs, in the order that lets the tc programs read the maps at any moment (see the
//! consistency rules in `shoal_common::lb`), and reads the counters.
//!
//! The maps are pinned, so they outlive the agent: [`LoadBalancer::adopt`] rebuilds the ID
//! assignments from them, and the next [`LoadBalancer::apply`] keeps every backend that stays
//! under the ID its flows name. That is what lets established flows survive an agent restart.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use shoal_common::lb::{
    BACKEND_STATS_MAP, BACKENDS_MAP, Backend, CURSORS_MAP, EVENTS_MAP, FLOW_FORWARD, FLOWS_MAP,
    FlowKey, FlowState, LbCounters, LbEvent, MAX_BACKENDS, MAX_SERVICES, SERVICE_STATS_MAP,
    SLOTS_MAP, SlotKey, VIPS_MAP, VipService,
};

// Part of this module's API since before the flow rules had a module of their own.
pub use crate::flow_lifetime::{CLOSED_FLOW_LINGER, UDP_FLOW_IDLE, monotonic_now_ns};
use crate::{
    error::Error,
    flow_lifetime::{flow_is_over, partner, quiet_for},
    maps::{addr, map_error, octets, per_cpu_zeros, sum, take},
};

/// What the data path should balance: each VIP and the addresses of its backends (on the
/// VIP's network). Slot order is address order, so every node builds the same rotation.
pub type LbTable = BTreeMap<Ipv4Addr, BTreeSet<Ipv4Addr>>;

/// A VIP as it is in the maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServiceEntry {
    id: u32,
    /// In slot order: (backend ID, address).
    backends: Vec<(u32, Ipv4Addr)>,
    /// Backends that take no new flow (in no slot) but whose entries stay, so the flows they
    /// have go on: tasks withdrawn from their service and draining before their stop signal.
    draining: BTreeMap<Ipv4Addr, u32>,
}

/// What one [`LoadBalancer::apply`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub vips_added: usize,
    pub vips_removed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
}

/// Traffic counters of one VIP, or one backend of it, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipCounters {
    pub vip: Ipv4Addr,
    /// `None` for the VIP's own totals.
    pub backend: Option<Ipv4Addr>,
    pub counters: LbCounters,
}

/// The load balancer's maps and the ID assignments behind them.
pub struct LoadBalancer {
    vips: HashMap<MapData, u32, VipService>,
    slots: HashMap<MapData, SlotKey, u32>,
    backends: Array<MapData, Backend>,
    cursors: Array<MapData, u64>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    service_stats: PerCpuArray<MapData, LbCounters>,
    backend_stats: PerCpuArray<MapData, LbCounters>,
    events: PerCpuArray<MapData, u64>,
    /// What the maps hold, by VIP.
    services: BTreeMap<Ipv4Addr, ServiceEntry>,
    service_ids: IdPool,
    backend_ids: IdPool,
}

impl LoadBalancer {
    /// Takes the load balancer's maps out of the loaded object and reads back what they hold
    /// (pinned maps of an earlier agent, or empty ones).
    pub fn adopt(ebpf: &mut aya::Ebpf) -> Result<Self, Error> {
        let mut lb = LoadBalancer {
            vips: HashMap::try_from(take(ebpf, VIPS_MAP)?).map_err(map_error(VIPS_MAP))?,
            slots: HashMap::try_from(take(ebpf, SLOTS_MAP)?).map_err(map_error(SLOTS_MAP))?,
            backends: Array::try_from(take(ebpf, BACKENDS_MAP)?)
                .map_err(map_error(BACKENDS_MAP))?,
            cursors: Array::try_from(take(ebpf, CURSORS_MAP)?).map_err(map_error(CURSORS_MAP))?,
            flows: HashMap::try_from(take(ebpf, FLOWS_MAP)?).map_err(map_error(FLOWS_MAP))?,
            service_stats: PerCpuArray::try_from(take(ebpf, SERVICE_STATS_MAP)?)
                .map_err(map_error(SERVICE_STATS_MAP))?,
            backend_stats: PerCpuArray::try_from(take(ebpf, BACKEND_STATS_MAP)?)
                .map_err(map_error(BACKEND_STATS_MAP))?,
            events: PerCpuArray::try_from(take(ebpf, EVENTS_MAP)?)
                .map_err(map_error(EVENTS_MAP))?,
            services: BTreeMap::new(),
            service_ids: IdPool::new(MAX_SERVICES),
            backend_ids: IdPool::new(MAX_BACKENDS),
        };
        lb.read_back()?;
        Ok(lb)
    }

    /// Rebuilds `services` and the ID pools from the maps. A backend entry no slot names is
    /// draining if its VIP is there (the next apply keeps it only if it still is), and cleared
    /// otherwise.
    fn read_back(&mut self) -> Result<(), Error> {
        let vips: Vec<(u32, VipService)> = self
            .vips
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(VIPS_MAP))?;
        let mut named = BTreeSet::new();
        for (raw_vip, service) in vips {
            let mut entry = ServiceEntry {
                id: service.service_id,
                backends: Vec::new(),
                draining: BTreeMap::new(),
            };
            for slot in 0..service.backend_count {
                let key = SlotKey {
                    service_id: service.service_id,
                    slot,
                };
                let Ok(id) = self.slots.get(&key, 0) else {
                    continue;
                };
                let backend = self.backends.get(&id, 0).map_err(map_error(BACKENDS_MAP))?;
                if backend.ip != 0 && backend.service_id == service.service_id {
                    entry.backends.push((id, addr(backend.ip)));
                    named.insert(id);
                    self.backend_ids.mark_used(id);
                }
            }
            self.service_ids.mark_used(service.service_id);
            self.services.insert(addr(raw_vip), entry);
        }
        for id in 1..MAX_BACKENDS {
            let backend = self.backends.get(&id, 0).map_err(map_error(BACKENDS_MAP))?;
            if backend.ip == 0 || named.contains(&id) {
                continue;
            }
            // Of a VIP the maps hold: draining (the next apply says whether it still is).
            if let Some(entry) = self
                .services
                .values_mut()
                .find(|e| e.id == backend.service_id)
            {
                entry.draining.insert(addr(backend.ip), id);
                self.backend_ids.mark_used(id);
                continue;
            }
            self.backends
                .set(id, Backend::default(), 0)
                .map_err(map_error(BACKENDS_MAP))?;
        }
        Ok(())
    }

    /// The VIPs and backends the maps hold now.
    pub fn table(&self) -> LbTable {
        self.services
            .iter()
            .map(|(vip, e)| (*vip, e.backends.iter().map(|(_, ip)| *ip).collect()))
            .collect()
    }

    /// Makes the maps hold exactly `desired`, with nothing draining: [`LoadBalancer::apply_draining`].
    pub fn apply(&mut self, desired: &LbTable) -> Result<ApplyReport, Error> {
        self.apply_draining(desired, &LbTable::new())
    }

    /// Makes the maps hold exactly `desired`. Backends that stay keep their IDs (their flows
    /// go on); a backend of `draining` (per VIP) that the VIP had leaves the round robin but
    /// keeps its entry, so its flows go on until it is removed; other removed backends' flows
    /// fail fast; a VIP that goes stops answering ARP. Every VIP is applied on its own, so one
    /// that cannot be (the node's capacity is reached) does not stop the others; the first
    /// error is returned after all were tried.
    pub fn apply_draining(
        &mut self,
        desired: &LbTable,
        draining: &LbTable,
    ) -> Result<ApplyReport, Error> {
        let mut report = ApplyReport::default();
        let mut first_error = None;
        let gone: Vec<Ipv4Addr> = self
            .services
            .keys()
            .filter(|vip| !desired.contains_key(vip))
            .copied()
            .collect();
        for vip in gone {
            if let Err(e) = self.remove_vip(vip, &mut report) {
                first_error.get_or_insert(e);
            }
        }
        let none = BTreeSet::new();
        for (vip, backends) in desired {
            let draining = draining.get(vip).unwrap_or(&none);
            let unchanged = self.services.get(vip).is_some_and(|e| {
                e.backends.len() == backends.len()
                    && e.backends.iter().map(|(_, ip)| ip).eq(backends.iter())
                    // What stays draining: of those asked, the ones it has and no longer serves.
                    && e.draining.keys().eq(draining
                        .iter()
                        .filter(|ip| !backends.contains(ip) && e.draining.contains_key(ip)))
            });
            if unchanged {
                continue;
            }
            if let Err(e) = self.set_vip(*vip, backends, draining, &mut report) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Writes one VIP's backends, in the order the programs can read at any moment: new
    /// backend entries, then the slots, then the count, then the slots and entries that go.
    /// Of `draining`, only backends the VIP has now stay (a new one would have no flow).
    fn set_vip(
        &mut self,
        vip: Ipv4Addr,
        wanted: &BTreeSet<Ipv4Addr>,
        draining: &BTreeSet<Ipv4Addr>,
        report: &mut ApplyReport,
    ) -> Result<(), Error> {
        let mut entry = match self.services.get(&vip) {
            Some(entry) => entry.clone(),
            None => {
                let id = self.service_ids.take().ok_or(Error::LbCapacity {
                    what: "VIPs",
                    max: MAX_SERVICES - 1,
                })?;
                self.reset_service_slot(id)?;
                report.vips_added += 1;
                ServiceEntry {
                    id,
                    backends: Vec::new(),
                    draining: BTreeMap::new(),
                }
            }
        };
        // Every backend the VIP has, serving or draining: a draining one that serves again
        // keeps its ID too.
        let old: BTreeMap<Ipv4Addr, u32> = entry
            .backends
            .iter()
            .map(|(id, ip)| (*ip, *id))
            .chain(entry.draining.iter().map(|(ip, id)| (*ip, *id)))
            .collect();
        let mut new_backends = Vec::with_capacity(wanted.len());
        for ip in wanted {
            let id = match old.get(ip) {
                Some(id) => *id,
                None => {
                    let Some(id) = self.backend_ids.take() else {
                        // Give back what this call took; the VIP keeps its old backends.
                        for (id, ip) in &new_backends {
                            if !old.contains_key(ip) {
                                self.backend_ids.give_back(*id);
                            }
                        }
                        return Err(Error::LbCapacity {
                            what: "backends",
                            max: MAX_BACKENDS - 1,
                        });
                    };
                    self.reset_backend_slot(id)?;
                    self.backends
                        .set(
                            id,
                            Backend {
                                ip: octets(*ip),
                                service_id: entry.id,
                            },
                            0,
                        )
                        .map_err(map_error(BACKENDS_MAP))?;
                    report.backends_added += 1;
                    id
                }
            };
            new_backends.push((id, *ip));
        }
        for (slot, (id, _)) in new_backends.iter().enumerate() {
            let key = SlotKey {
                service_id: entry.id,
                slot: slot as u32,
            };
            self.slots
                .insert(key, id, 0)
                .map_err(map_error(SLOTS_MAP))?;
        }
        let service = VipService {
            service_id: entry.id,
            backend_count: new_backends.len() as u32,
        };
        self.vips
            .insert(octets(vip), service, 0)
            .map_err(map_error(VIPS_MAP))?;
        for slot in new_backends.len()..entry.backends.len() {
            let key = SlotKey {
                service_id: entry.id,
                slot: slot as u32,
            };
            let _ = self.slots.remove(&key);
        }
        let new_draining: BTreeMap<Ipv4Addr, u32> = draining
            .iter()
            .filter(|ip| !wanted.contains(ip))
            .filter_map(|ip| old.get(ip).map(|id| (*ip, *id)))
            .collect();
        let kept: BTreeSet<u32> = new_backends
            .iter()
            .map(|(id, _)| *id)
            .chain(new_draining.values().copied())
            .collect();
        for id in old.values() {
            if !kept.contains(id) {
                self.clear_backend(*id)?;
                report.backends_removed += 1;
            }
        }
        entry.backends = new_backends;
        entry.draining = new_draining;
        self.services.insert(vip, entry);
        Ok(())
    }

    fn remove_vip(&mut self, vip: Ipv4Addr, report: &mut ApplyReport) -> Result<(), Error> {
        let Some(entry) = self.services.get(&vip).cloned() else {
            return Ok(());
        };
        // The VIP first: from now on the programs leave its traffic alone.
        match self.vips.remove(&octets(vip)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_error(VIPS_MAP)(e)),
        }
        for slot in 0..entry.backends.len() {
            let key = SlotKey {
                service_id: entry.id,
                slot: slot as u32,
            };
            let _ = self.slots.remove(&key);
        }
        for id in entry
            .backends
            .iter()
            .map(|(id, _)| id)
            .chain(entry.draining.values())
        {
            self.clear_backend(*id)?;
            report.backends_removed += 1;
        }
        self.service_ids.give_back(entry.id);
        self.services.remove(&vip);
        report.vips_removed += 1;
        Ok(())
    }

    /// Zeroes a backend entry (its flows fail fast from now on) and frees its ID.
    fn clear_backend(&mut self, id: u32) -> Result<(), Error> {
        self.backends
            .set(id, Backend::default(), 0)
            .map_err(map_error(BACKENDS_MAP))?;
        self.backend_ids.give_back(id);
        Ok(())
    }

    /// A reused service ID starts with its cursor and counters at zero.
    fn reset_service_slot(&mut self, id: u32) -> Result<(), Error> {
        self.cursors.set(id, 0, 0).map_err(map_error(CURSORS_MAP))?;
        let zeros = per_cpu_zeros()?;
        self.service_stats
            .set(id, zeros, 0)
            .map_err(map_error(SERVICE_STATS_MAP))
    }

    /// A reused backend ID starts with its counters at zero.
    fn reset_backend_slot(&mut self, id: u32) -> Result<(), Error> {
        let zeros = per_cpu_zeros()?;
        self.backend_stats
            .set(id, zeros, 0)
            .map_err(map_error(BACKEND_STATS_MAP))
    }

    /// Each VIP's counters, then each of its backends', summed over CPUs.
    pub fn counters(&self) -> Result<Vec<VipCounters>, Error> {
        let mut out = Vec::new();
        for (vip, entry) in &self.services {
            out.push(VipCounters {
                vip: *vip,
                backend: None,
                counters: sum(&self.service_stats, entry.id, SERVICE_STATS_MAP)?,
            });
            for (id, ip) in &entry.backends {
                out.push(VipCounters {
                    vip: *vip,
                    backend: Some(*ip),
                    counters: sum(&self.backend_stats, *id, BACKEND_STATS_MAP)?,
                });
            }
        }
        Ok(out)
    }

    /// How often each [`LbEvent`] happened, summed over CPUs.
    pub fn events(&self) -> Result<Vec<(LbEvent, u64)>, Error> {
        LbEvent::ALL
            .into_iter()
            .map(|event| {
                let per_cpu = self
                    .events
                    .get(&(event as u32), 0)
                    .map_err(map_error(EVENTS_MAP))?;
                Ok((event, per_cpu.iter().copied().fold(0u64, u64::wrapping_add)))
            })
            .collect()
    }

    /// Removes the entries of flows that are over: TCP flows closed (FIN both ways, or a RST)
    /// and quiet for [`CLOSED_FLOW_LINGER`], UDP flows quiet for [`UDP_FLOW_IDLE`], and reply
    /// entries left without their forward entry for as long. Open TCP flows are never removed,
    /// however quiet. `now_ns` is CLOCK_MONOTONIC, the programs' clock ([`monotonic_now_ns`]).
    /// Returns how many entries were removed.
    pub fn expire_flows(&mut self, now_ns: u64) -> Result<usize, Error> {
        let entries: std::collections::HashMap<FlowKey, FlowState> =
            self.flow_entries()?.into_iter().collect();
        let mut expired = Vec::new();
        for (key, state) in &entries {
            let partner_key = partner(key, state);
            let partner = entries.get(&partner_key);
            let over = if key.direction == FLOW_FORWARD {
                flow_is_over(key.proto, state, partner, now_ns)
            } else {
                // A reply entry is looked at from its forward entry; alone, it only lingers.
                partner.is_none() && quiet_for(state, None, now_ns) >= CLOSED_FLOW_LINGER
            };
            if over {
                expired.push(*key);
                if partner.is_some() && key.direction == FLOW_FORWARD {
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

    /// Flow entries now in the conntrack map (both directions), for tests and `inspect`.
    pub fn flow_entries(&self) -> Result<Vec<(FlowKey, FlowState)>, Error> {
        self.flows
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(FLOWS_MAP))
    }
}

/// IDs `1..max` (0 means "none" in the maps), lowest free first.
struct IdPool {
    used: Vec<bool>,
    /// Where the search for a free ID starts: below it, every ID is used.
    next: usize,
}

impl IdPool {
    fn new(max: u32) -> Self {
        let mut used = vec![false; max as usize];
        used[0] = true;
        IdPool { used, next: 1 }
    }

    fn mark_used(&mut self, id: u32) {
        if let Some(slot) = self.used.get_mut(id as usize) {
            *slot = true;
        }
    }

    fn take(&mut self) -> Option<u32> {
        let id = (self.next..self.used.len()).find(|i| !self.used[*i])?;
        self.used[id] = true;
        self.next = id + 1;
        Some(id as u32)
    }

    fn give_back(&mut self, id: u32) {
        if let Some(slot) = self.used.get_mut(id as usize)
            && id != 0
        {
            *slot = false;
            self.next = self.next.min(id as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdPool;

    #[test]
    fn ids_start_at_one_and_are_reused_lowest_first() {
        let mut pool = IdPool::new(4);
        assert_eq!(
            [pool.take(), pool.take(), pool.take()],
            [Some(1), Some(2), Some(3)]
        );
        assert_eq!(
            pool.take(),
            None,
            "0 is never handed out and 4 is the limit"
        );
        pool.give_back(2);
        pool.give_back(0);
        assert_eq!(pool.take(), Some(2));
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn marked_ids_are_skipped() {
        let mut pool = IdPool::new(5);
        pool.mark_used(1);
        pool.mark_used(3);
        pool.mark_used(99);
        assert_eq!(
            [pool.take(), pool.take(), pool.take()],
            [Some(2), Some(4), None]
        );
    }
}
