//! [`LoadBalancer`]: the userspace side of service VIP load balancing. It keeps the maps of
//! `shoal_common::lb` equal to what it is told, in the order that lets the tc programs read the
//! maps at any moment (see the consistency rules in `shoal_common::lb`), and reads the counters.
//!
//! It remembers what it programmed, per VIP, so a change costs only the service it touches:
//! [`LoadBalancer::apply_service`] and [`LoadBalancer::remove_service`] write that service's
//! entries and look at no other. [`LoadBalancer::apply`] makes the maps hold a whole table (on
//! start and re-adoption), and [`LoadBalancer::check`] compares the maps with what was
//! programmed, a few VIPs at a time, and rewrites what differs (a low-priority repair).
//! Writes are gathered and issued in batches (`writes`, `batch`).
//!
//! The maps are pinned, so they outlive the agent: [`LoadBalancer::adopt`] rebuilds the ID
//! assignments from them, and the next [`LoadBalancer::apply`] keeps every backend that stays
//! under the ID its flows name. That is what lets established flows survive an agent restart.
//!
//! # Layout
//! - this file: [`LoadBalancer`], adoption and the changes.
//! - `writes`: the map writes of one change, in their order.
//! - `batch`: `BPF_MAP_UPDATE_BATCH` / `BPF_MAP_DELETE_BATCH`.
//! - `check`: comparing the maps with what was programmed, and their raw contents.
//! - `ids`: service and backend ID pools.

mod batch;
mod check;
mod hints;
mod ids;
mod writes;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use shoal_common::lb::{
    BACKEND_STATS_MAP, BACKENDS_MAP, Backend, CURSORS_MAP, EVENTS_MAP, FLOW_FORWARD, FLOWS_MAP,
    FlowKey, FlowState, LbCounters, LbEvent, MAX_BACKENDS, MAX_SERVICES, SERVICE_STATS_MAP,
    SLOTS_MAP, SlotKey, VIP_HINTS_MAP, VIPS_MAP, VipService,
};

pub use self::check::{CheckReport, LbMapContents};
// Part of this module's API since before the flow rules had a module of their own.
use self::{hints::VipHints, ids::IdPool, writes::Writes};
use crate::{
    error::Error,
    flow_clock::FlowClock,
    flow_lifetime::{LeftInPlace, flow_is_over, partner, quiet_for},
    maps::{add_to_event, addr, event_total, map_error, octets, sum, take},
};
pub use crate::{
    flow_clock::monotonic_now_ns,
    flow_lifetime::{CLOSED_FLOW_LINGER, UDP_FLOW_IDLE},
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
    /// The maps may not hold what this entry says (read back from maps with a slot missing):
    /// the next change of this VIP rewrites all of its entries, not only those that differ.
    suspect: bool,
}

/// What one change ([`LoadBalancer::apply`], [`LoadBalancer::apply_service`], ...) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub vips_added: usize,
    pub vips_removed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
}

impl ApplyReport {
    /// Adds another change's counts to these.
    pub fn add(&mut self, other: ApplyReport) {
        self.vips_added += other.vips_added;
        self.vips_removed += other.vips_removed;
        self.backends_added += other.backends_added;
        self.backends_removed += other.backends_removed;
    }
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
    hints: VipHints,
    /// What the maps hold, by VIP: what a change is compared with, so it costs only its VIP.
    services: BTreeMap<Ipv4Addr, ServiceEntry>,
    service_ids: IdPool,
    backend_ids: IdPool,
    /// The writes of the change being made; kept so its buffers are allocated once.
    writes: Writes,
    /// Converts the flow entries' stamps (jiffies) for the expiry rules.
    clock: FlowClock,
    /// Possible CPUs: the kernel sizes per-CPU values by it.
    cpus: usize,
    /// VIPs [`LoadBalancer::check`] found differing from what was programmed, and rewrote.
    repairs: u64,
    /// Writes go in batches (one syscall per map and step); off: one entry per syscall.
    batched: bool,
    /// The flow entries the last expiry round left in place: what is gone at the next round
    /// without the programs or the expiry removing it, the LRU took.
    left_in_place: Option<LeftInPlace>,
}

impl LoadBalancer {
    /// Takes the load balancer's maps out of the loaded object and reads back what they hold
    /// (pinned maps of an earlier agent, or empty ones).
    pub fn adopt(ebpf: &mut aya::Ebpf, clock: FlowClock) -> Result<Self, Error> {
        let cpus = aya::util::nr_cpus().map_err(|(what, source)| Error::Io {
            what: "counting CPUs",
            path: what.into(),
            source,
        })?;
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
            hints: VipHints::new(
                Array::try_from(take(ebpf, VIP_HINTS_MAP)?).map_err(map_error(VIP_HINTS_MAP))?,
            ),
            services: BTreeMap::new(),
            service_ids: IdPool::new(MAX_SERVICES),
            backend_ids: IdPool::new(MAX_BACKENDS),
            writes: Writes::default(),
            clock,
            cpus,
            repairs: 0,
            batched: true,
            left_in_place: None,
        };
        lb.read_back()?;
        Ok(lb)
    }

    /// Writes in batches (the default), or one entry per syscall: what the benchmark compares
    /// batching with.
    pub fn set_batched(&mut self, batched: bool) {
        self.batched = batched;
    }

    /// Forgets what this load balancer believed and reads it back from the maps: after a
    /// write failed part way.
    fn resync(&mut self) -> Result<(), Error> {
        self.services.clear();
        self.service_ids = IdPool::new(MAX_SERVICES);
        self.backend_ids = IdPool::new(MAX_BACKENDS);
        self.read_back()
    }

    /// Rebuilds `services` and the ID pools from the maps. A backend entry no slot names is
    /// draining if its VIP is there (the next apply keeps it only if it still is), and cleared
    /// otherwise. A VIP with a slot missing or naming no backend of its own is `suspect`.
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
                ..ServiceEntry::default()
            };
            for slot in 0..service.backend_count {
                let key = SlotKey {
                    service_id: service.service_id,
                    slot,
                };
                let Ok(id) = self.slots.get(&key, 0) else {
                    entry.suspect = true;
                    continue;
                };
                let Ok(backend) = self.backends.get(&id, 0) else {
                    entry.suspect = true;
                    continue;
                };
                if backend.ip != 0 && backend.service_id == service.service_id {
                    entry.backends.push((id, addr(backend.ip)));
                    named.insert(id);
                    self.backend_ids.mark_used(id);
                } else {
                    entry.suspect = true;
                }
            }
            self.service_ids.mark_used(service.service_id);
            self.services.insert(addr(raw_vip), entry);
        }
        let by_service: std::collections::HashMap<u32, Ipv4Addr> =
            self.services.iter().map(|(vip, e)| (e.id, *vip)).collect();
        for id in 1..MAX_BACKENDS {
            let backend = self.backends.get(&id, 0).map_err(map_error(BACKENDS_MAP))?;
            if backend.ip == 0 || named.contains(&id) {
                continue;
            }
            // Of a VIP the maps hold: draining (the next apply says whether it still is).
            if let Some(entry) = by_service
                .get(&backend.service_id)
                .and_then(|vip| self.services.get_mut(vip))
            {
                entry.draining.insert(addr(backend.ip), id);
                self.backend_ids.mark_used(id);
                continue;
            }
            self.backends
                .set(id, Backend::default(), 0)
                .map_err(map_error(BACKENDS_MAP))?;
        }
        let vips: Vec<u32> = self.services.keys().map(|vip| octets(*vip)).collect();
        self.hints.reset(vips, self.batched)
    }

    /// The VIP hints as the map holds them: index -> count, non-zero entries only.
    pub fn vip_hints(&self) -> Result<std::collections::HashMap<u32, u32>, Error> {
        self.hints.read()
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

    /// Makes the maps hold exactly `desired` (a full reconcile: on start and re-adoption; a
    /// change of one service is [`LoadBalancer::apply_service`]). Backends that stay keep
    /// their IDs (their flows go on); a backend of `draining` (per VIP) that the VIP had
    /// leaves the round robin but keeps its entry, so its flows go on until it is removed;
    /// other removed backends' flows fail fast; a VIP that goes stops answering ARP. Every
    /// VIP is planned on its own, so one that cannot be (the node's capacity is reached) does
    /// not stop the others; the first error is returned after all were tried. The writes go
    /// in two rounds of batches: the VIPs that go (so their IDs are free), then the rest.
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
            self.plan_removal(vip, &mut report);
        }
        self.flush()?;
        let none = BTreeSet::new();
        for (vip, backends) in desired {
            let draining = draining.get(vip).unwrap_or(&none);
            if let Err(e) = self.plan_vip(*vip, backends, draining, &mut report) {
                first_error.get_or_insert(e);
            }
        }
        self.flush()?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Makes the maps hold `backends` for `vip` (added if new), with the backends of
    /// `draining` it had kept for their flows but out of the round robin; no other VIP's
    /// entries are read or written. Nothing is written when the VIP already is so.
    pub fn apply_service(
        &mut self,
        vip: Ipv4Addr,
        backends: &BTreeSet<Ipv4Addr>,
        draining: &BTreeSet<Ipv4Addr>,
    ) -> Result<ApplyReport, Error> {
        let mut report = ApplyReport::default();
        let planned = self.plan_vip(vip, backends, draining, &mut report);
        self.flush()?;
        planned.map(|()| report)
    }

    /// Removes `vip` and every entry of its backends (their flows fail fast); no other VIP's
    /// entries are read or written. A VIP the maps do not hold is fine.
    pub fn remove_service(&mut self, vip: Ipv4Addr) -> Result<ApplyReport, Error> {
        let mut report = ApplyReport::default();
        self.plan_removal(vip, &mut report);
        self.flush()?;
        Ok(report)
    }

    /// Plans one VIP's writes into `self.writes` and records the VIP as planned: new backend
    /// entries, the slots that change, the count if it changes, then the slots and entries
    /// that go. Of `draining`, only backends the VIP has now stay (a new one would have no
    /// flow). Nothing is planned when the VIP already is so.
    fn plan_vip(
        &mut self,
        vip: Ipv4Addr,
        wanted: &BTreeSet<Ipv4Addr>,
        draining: &BTreeSet<Ipv4Addr>,
        report: &mut ApplyReport,
    ) -> Result<(), Error> {
        let new_service = !self.services.contains_key(&vip);
        if let Some(e) = self.services.get(&vip)
            && !e.suspect
            && e.backends.len() == wanted.len()
            && e.backends.iter().map(|(_, ip)| ip).eq(wanted.iter())
            // What stays draining: of those asked, the ones it has and no longer serves.
            && e.draining.keys().eq(draining
                .iter()
                .filter(|ip| !wanted.contains(ip) && e.draining.contains_key(ip)))
        {
            return Ok(());
        }
        let mut entry = match self.services.remove(&vip) {
            Some(entry) => entry,
            None => {
                let id = self.service_ids.take().ok_or(Error::LbCapacity {
                    what: "VIPs",
                    max: MAX_SERVICES - 1,
                })?;
                ServiceEntry {
                    id,
                    ..ServiceEntry::default()
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
        let w = &mut self.writes;
        let (new_backends_len, backends_len) = (w.new_backends.len(), w.backends.len());
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
                        w.new_backends.truncate(new_backends_len);
                        w.backends.truncate(backends_len);
                        if new_service {
                            self.service_ids.give_back(entry.id);
                        } else {
                            self.services.insert(vip, entry);
                        }
                        return Err(Error::LbCapacity {
                            what: "backends",
                            max: MAX_BACKENDS - 1,
                        });
                    };
                    w.new_backends.push(id);
                    w.backends.push(
                        id,
                        Backend {
                            ip: octets(*ip),
                            service_id: entry.id,
                        },
                    );
                    report.backends_added += 1;
                    id
                }
            };
            new_backends.push((id, *ip));
        }
        if new_service {
            w.new_services.push(entry.id);
            report.vips_added += 1;
        }
        for (slot, (id, _)) in new_backends.iter().enumerate() {
            if !entry.suspect && entry.backends.get(slot).is_some_and(|(old, _)| old == id) {
                continue;
            }
            let key = SlotKey {
                service_id: entry.id,
                slot: slot as u32,
            };
            w.slots.push(key, *id);
        }
        if new_service || entry.suspect || new_backends.len() != entry.backends.len() {
            let service = VipService {
                service_id: entry.id,
                backend_count: new_backends.len() as u32,
            };
            w.vips.push(octets(vip), service);
        }
        for slot in new_backends.len()..entry.backends.len() {
            w.stale_slots.push(SlotKey {
                service_id: entry.id,
                slot: slot as u32,
            });
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
                w.cleared_backends.push(*id, Backend::default());
                w.freed_backends.push(*id);
                report.backends_removed += 1;
            }
        }
        entry.backends = new_backends;
        entry.draining = new_draining;
        entry.suspect = false;
        self.services.insert(vip, entry);
        Ok(())
    }

    /// Plans the removal of `vip`: its VIP entry first (from then on the programs leave its
    /// traffic alone), then its slots and backend entries.
    fn plan_removal(&mut self, vip: Ipv4Addr, report: &mut ApplyReport) {
        let Some(entry) = self.services.remove(&vip) else {
            return;
        };
        let w = &mut self.writes;
        w.gone_vips.push(octets(vip));
        for slot in 0..entry.backends.len() {
            w.stale_slots.push(SlotKey {
                service_id: entry.id,
                slot: slot as u32,
            });
        }
        for id in entry
            .backends
            .iter()
            .map(|(id, _)| id)
            .chain(entry.draining.values())
        {
            w.cleared_backends.push(*id, Backend::default());
            w.freed_backends.push(*id);
            report.backends_removed += 1;
        }
        w.freed_services.push(entry.id);
        report.vips_removed += 1;
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

    /// How often each [`LbEvent`] happened, summed over CPUs (0 for an event the map, pinned
    /// by an older agent with fewer events, has no entry for).
    pub fn events(&self) -> Result<Vec<(LbEvent, u64)>, Error> {
        LbEvent::ALL
            .into_iter()
            .map(|event| Ok((event, event_total(&self.events, event as u32, EVENTS_MAP)?)))
            .collect()
    }

    /// Removes the entries of flows that are over: TCP flows closed (FIN both ways, or a RST)
    /// and quiet for [`CLOSED_FLOW_LINGER`], UDP flows quiet for [`UDP_FLOW_IDLE`], and reply
    /// entries left without their forward entry for as long. Open TCP flows are never removed,
    /// however quiet. `now_ns` is CLOCK_MONOTONIC ([`monotonic_now_ns`]; the entries' stamps
    /// are converted, see `flow_clock`).
    /// Counts what it removed ([`LbEvent::Expired`]) and what the LRU took since the last
    /// round ([`LbEvent::Evicted`]). Returns how many entries were removed.
    pub fn expire_flows(&mut self, now_ns: u64) -> Result<usize, Error> {
        let now = self.clock.at(now_ns);
        let forgotten = event_total(&self.events, LbEvent::Forgotten as u32, EVENTS_MAP)?;
        let entries: std::collections::HashMap<FlowKey, FlowState> =
            self.flow_entries()?.into_iter().collect();
        let evicted = self
            .left_in_place
            .as_ref()
            .map(|left| left.evicted_since(&entries, &Default::default(), forgotten))
            .unwrap_or_default();
        let mut expired = Vec::new();
        for (key, state) in &entries {
            let partner_key = partner(key, state);
            let partner = entries.get(&partner_key);
            let over = if key.direction == FLOW_FORWARD {
                flow_is_over(key.proto, state, partner, now)
            } else {
                // A reply entry is looked at from its forward entry; alone, it only lingers.
                partner.is_none() && quiet_for(state, None, now) >= CLOSED_FLOW_LINGER
            };
            if over {
                expired.push(*key);
                if partner.is_some() && key.direction == FLOW_FORWARD {
                    expired.push(partner_key);
                }
            }
        }
        let mut removed = std::collections::HashSet::new();
        for key in expired {
            if self.flows.remove(&key).is_ok() {
                removed.insert(key);
            }
        }
        self.left_in_place = Some(LeftInPlace {
            confirmed: entries
                .into_keys()
                .filter(|k| !removed.contains(k))
                .collect(),
            unconfirmed: Default::default(),
            forgotten,
        });
        for (event, n) in [
            (LbEvent::Expired, removed.len() as u64),
            (LbEvent::Evicted, evicted.confirmed),
        ] {
            add_to_event(&mut self.events, event as u32, n, EVENTS_MAP)?;
        }
        Ok(removed.len())
    }

    /// Flow entries now in the conntrack map (both directions), for tests and `inspect`.
    pub fn flow_entries(&self) -> Result<Vec<(FlowKey, FlowState)>, Error> {
        self.flows
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(FLOWS_MAP))
    }
}
