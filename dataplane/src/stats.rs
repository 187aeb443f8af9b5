//! Typed read access to the per-CPU packet counters (map `SHOAL_STATS`).

use aya::maps::{Map, PerCpuArray};
use shoal_common::stats::{PacketCounters, STATS_MAP, StatsSlot};

use crate::error::Error;

/// Totals of every hook, summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookCounters {
    totals: [PacketCounters; StatsSlot::ALL.len()],
}

impl HookCounters {
    /// Totals for one hook.
    pub fn get(&self, slot: StatsSlot) -> PacketCounters {
        self.totals[slot as usize]
    }

    /// Every hook with its totals, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (StatsSlot, PacketCounters)> + '_ {
        StatsSlot::ALL
            .into_iter()
            .map(|slot| (slot, self.get(slot)))
    }

    pub(crate) fn read(map: &Map) -> Result<Self, Error> {
        let map_error = |e| Error::Map {
            name: STATS_MAP,
            source: Box::new(e),
        };
        let array: PerCpuArray<_, PacketCounters> =
            PerCpuArray::try_from(map).map_err(map_error)?;
        let mut counters = HookCounters::default();
        for slot in StatsSlot::ALL {
            let per_cpu = array.get(&(slot as u32), 0).map_err(map_error)?;
            for cpu in per_cpu.iter() {
                counters.totals[slot as usize].add(cpu);
            }
        }
        Ok(counters)
    }
}
