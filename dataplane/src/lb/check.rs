//! Comparing the maps with what the load balancer programmed ([`LoadBalancer::check`]), a few
//! VIPs at a time so a low-priority caller never holds the data path for long, and rewriting
//! the entries of a VIP that differs; and the maps' raw contents ([`LbMapContents`]), for
//! tests and inspection.
//!
//! What can make them differ: anything else writing the pinned maps (another process, a
//! hand-run `bpftool`), or a write this process believes done that was not. What a check does
//! not look at: backend entries that no slot and no draining backend names (the programs only
//! reach a backend through a slot or a flow's ID, and a restart's read-back clears them).

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    ops::Bound::{Excluded, Unbounded},
};

use aya::maps::MapError;
use shoal_common::lb::{
    BACKENDS_MAP, Backend, MAX_BACKENDS, SLOTS_MAP, SlotKey, VIPS_MAP, VipService,
};

use super::LoadBalancer;
use crate::{
    error::Error,
    maps::{addr, map_error, octets},
};

/// What one [`LoadBalancer::check`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// VIPs whose entries were compared with the maps.
    pub checked: usize,
    /// VIPs whose entries differed and were rewritten, and VIP entries of no VIP this load
    /// balancer holds, removed.
    pub repaired: usize,
    /// Where the next check starts (after this VIP); `None` when this one reached the end.
    pub next: Option<Ipv4Addr>,
}

/// The load balancer's maps as the kernel holds them now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbMapContents {
    /// `LB_VIPS`, by VIP.
    pub vips: BTreeMap<Ipv4Addr, VipService>,
    /// `LB_SLOTS`, by (service ID, slot).
    pub slots: BTreeMap<(u32, u32), u32>,
    /// `LB_BACKENDS`, the entries that are not zero, by backend ID.
    pub backends: BTreeMap<u32, Backend>,
}

impl LbMapContents {
    /// Each VIP's backend addresses in slot order, as the programs would resolve them
    /// (`None` for a slot that is missing or names an entry not of its service).
    pub fn resolved(&self) -> BTreeMap<Ipv4Addr, Vec<Option<Ipv4Addr>>> {
        self.vips
            .iter()
            .map(|(vip, service)| {
                let backends = (0..service.backend_count)
                    .map(|slot| {
                        let id = self.slots.get(&(service.service_id, slot))?;
                        let backend = self.backends.get(id)?;
                        (backend.service_id == service.service_id).then(|| addr(backend.ip))
                    })
                    .collect();
                (*vip, backends)
            })
            .collect()
    }
}

impl LoadBalancer {
    /// Compares the entries of up to `budget` VIPs, from the first after `after` (from the
    /// start with `None`), with what this load balancer programmed, and rewrites every entry
    /// of a VIP that differs. A check from the start also removes VIP entries of VIPs this
    /// load balancer does not hold. Repairs are counted in [`LoadBalancer::repairs`].
    pub fn check(&mut self, after: Option<Ipv4Addr>, budget: usize) -> Result<CheckReport, Error> {
        let mut report = CheckReport::default();
        if after.is_none() {
            let strays: Vec<u32> = self
                .vips
                .keys()
                .collect::<Result<Vec<u32>, _>>()
                .map_err(map_error(VIPS_MAP))?
                .into_iter()
                .filter(|raw| !self.services.contains_key(&addr(*raw)))
                .collect();
            report.repaired += strays.len();
            self.writes.gone_vips.extend(strays);
        }
        let range = match after {
            Some(vip) => self.services.range((Excluded(vip), Unbounded)),
            None => self.services.range(..),
        };
        let vips: Vec<Ipv4Addr> = range.take(budget).map(|(vip, _)| *vip).collect();
        for vip in &vips {
            report.checked += 1;
            if !self.programmed_as_believed(*vip)? {
                self.plan_rewrite(*vip);
                report.repaired += 1;
            }
        }
        self.flush()?;
        report.next = if vips.len() == budget {
            vips.last().copied()
        } else {
            None
        };
        self.repairs += report.repaired as u64;
        Ok(report)
    }

    /// VIPs found differing from what was programmed, and rewritten, since adoption.
    pub fn repairs(&self) -> u64 {
        self.repairs
    }

    /// Do the maps hold what `vip`'s entry says: its VIP entry, its slots, and the backend
    /// entries of its serving and draining backends?
    fn programmed_as_believed(&self, vip: Ipv4Addr) -> Result<bool, Error> {
        let Some(entry) = self.services.get(&vip) else {
            return Ok(true);
        };
        let want = VipService {
            service_id: entry.id,
            backend_count: entry.backends.len() as u32,
        };
        if found(self.vips.get(&octets(vip), 0), VIPS_MAP)? != Some(want) {
            return Ok(false);
        }
        for (slot, (id, _)) in entry.backends.iter().enumerate() {
            let key = SlotKey {
                service_id: entry.id,
                slot: slot as u32,
            };
            if found(self.slots.get(&key, 0), SLOTS_MAP)? != Some(*id) {
                return Ok(false);
            }
        }
        let backends = entry
            .backends
            .iter()
            .map(|(id, ip)| (*id, *ip))
            .chain(entry.draining.iter().map(|(ip, id)| (*id, *ip)));
        for (id, ip) in backends {
            let want = Backend {
                ip: octets(ip),
                service_id: entry.id,
            };
            if found(self.backends.get(&id, 0), BACKENDS_MAP)? != Some(want) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Plans every entry of `vip` as this load balancer programmed it, in the usual order.
    fn plan_rewrite(&mut self, vip: Ipv4Addr) {
        let Some(entry) = self.services.get(&vip) else {
            return;
        };
        let w = &mut self.writes;
        let backends = entry
            .backends
            .iter()
            .map(|(id, ip)| (*id, *ip))
            .chain(entry.draining.iter().map(|(ip, id)| (*id, *ip)));
        for (id, ip) in backends {
            let backend = Backend {
                ip: octets(ip),
                service_id: entry.id,
            };
            w.backends.push(id, backend);
        }
        for (slot, (id, _)) in entry.backends.iter().enumerate() {
            let key = SlotKey {
                service_id: entry.id,
                slot: slot as u32,
            };
            w.slots.push(key, *id);
        }
        let service = VipService {
            service_id: entry.id,
            backend_count: entry.backends.len() as u32,
        };
        w.vips.push(octets(vip), service);
    }

    /// Reads the VIP, slot and backend maps whole (one lookup per backend ID: slow, for
    /// tests and inspection).
    pub fn map_contents(&self) -> Result<LbMapContents, Error> {
        let mut contents = LbMapContents::default();
        for item in self.vips.iter() {
            let (raw, service) = item.map_err(map_error(VIPS_MAP))?;
            contents.vips.insert(addr(raw), service);
        }
        for item in self.slots.iter() {
            let (key, id) = item.map_err(map_error(SLOTS_MAP))?;
            contents.slots.insert((key.service_id, key.slot), id);
        }
        for id in 1..MAX_BACKENDS {
            let backend = self.backends.get(&id, 0).map_err(map_error(BACKENDS_MAP))?;
            if backend != Backend::default() {
                contents.backends.insert(id, backend);
            }
        }
        Ok(contents)
    }
}

/// A lookup's value, `None` when the key is absent.
fn found<V>(lookup: Result<V, MapError>, name: &'static str) -> Result<Option<V>, Error> {
    match lookup {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(map_error(name)(e)),
    }
}
