//! The VIP hints (`shoal_common::lb::VIP_HINTS_MAP`): per value of an address's last 16 bits,
//! how many VIPs end with it. The task-facing program reads its entry (an array read the
//! kernel inlines) before the VIP hash lookup, so a packet to no VIP (every answer a server
//! task sends, every connection it makes to another task directly, or that the socket-level
//! balancer already addressed to its backend) mostly costs that one read.
//!
//! An entry is raised before a VIP entry is written, and lowered after one is removed: a
//! program never finds a VIP whose hint says there is none (a hint that says "maybe" for a
//! VIP just removed costs only the hash lookup that misses).

use std::collections::{HashMap, HashSet};

use aya::maps::{Array, MapData};
use shoal_common::lb::{VIP_HINTS, VIP_HINTS_MAP, vip_hint};

use super::batch::{Batch, update_array};
use crate::error::Error;

pub(super) struct VipHints {
    map: Array<MapData, u32>,
    /// The VIPs counted (addresses as the map keys hold them).
    counted: HashSet<u32>,
    /// The non-zero entries as written.
    counts: HashMap<u32, u32>,
    /// Scratch: the entries a change writes.
    batch: Batch<u32, u32>,
}

impl VipHints {
    pub(super) fn new(map: Array<MapData, u32>) -> VipHints {
        VipHints {
            map,
            counted: HashSet::new(),
            counts: HashMap::new(),
            batch: Batch::default(),
        }
    }

    /// Makes the hints count exactly `vips`, every entry written (what an adopted map held is
    /// not trusted: an older agent may not have kept it): on adoption and after a failed write.
    pub(super) fn reset(
        &mut self,
        vips: impl IntoIterator<Item = u32>,
        batched: bool,
    ) -> Result<(), Error> {
        self.counted = vips.into_iter().collect();
        self.counts.clear();
        for vip in &self.counted {
            *self.counts.entry(vip_hint(*vip)).or_default() += 1;
        }
        self.batch.clear();
        for index in 0..VIP_HINTS {
            let count = self.counts.get(&index).copied().unwrap_or(0);
            self.batch.push(index, count);
        }
        update_array(batched, &mut self.map, VIP_HINTS_MAP, &self.batch)
    }

    /// Counts `vips`, about to be written (those already counted are left as they are).
    pub(super) fn raise<'a>(
        &mut self,
        vips: impl IntoIterator<Item = &'a u32>,
        batched: bool,
    ) -> Result<(), Error> {
        self.count(vips, true, batched)
    }

    /// Stops counting `vips`, just removed.
    pub(super) fn lower<'a>(
        &mut self,
        vips: impl IntoIterator<Item = &'a u32>,
        batched: bool,
    ) -> Result<(), Error> {
        self.count(vips, false, batched)
    }

    /// Counts `vips` in (`raise`) or out, and writes the entries that changed.
    fn count<'a>(
        &mut self,
        vips: impl IntoIterator<Item = &'a u32>,
        raise: bool,
        batched: bool,
    ) -> Result<(), Error> {
        self.batch.clear();
        for vip in vips {
            let changed = if raise {
                self.counted.insert(*vip)
            } else {
                self.counted.remove(vip)
            };
            if !changed {
                continue;
            }
            let index = vip_hint(*vip);
            let count = self.counts.entry(index).or_default();
            *count = if raise { *count + 1 } else { *count - 1 };
            let count = *count;
            if count == 0 {
                self.counts.remove(&index);
            }
            self.batch.push(index, count);
        }
        update_array(batched, &mut self.map, VIP_HINTS_MAP, &self.batch)
    }

    /// The entries as the map holds them now, non-zero only (for tests).
    pub(super) fn read(&self) -> Result<HashMap<u32, u32>, Error> {
        let mut entries = HashMap::new();
        for (index, count) in self.map.iter().enumerate() {
            let count = count.map_err(crate::maps::map_error(VIP_HINTS_MAP))?;
            if count != 0 {
                entries.insert(index as u32, count);
            }
        }
        Ok(entries)
    }
}
