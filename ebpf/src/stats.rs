//! The per-CPU counters map and the one function that updates it.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use shoal_common::stats::{PacketCounters, STATS_SLOTS, StatsSlot};

/// See `shoal_common::stats::STATS_MAP` for the layout. The static's name is the map's name.
/// Not marked pinned here: userspace pins it per node, or keeps it private (tests, benches).
#[map]
static SHOAL_STATS: PerCpuArray<PacketCounters> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);

/// Adds one packet of `bytes` to `slot` on this CPU. Per-CPU slots need no atomics.
#[inline(always)]
pub fn count(slot: StatsSlot, bytes: u64) {
    if let Some(counters) = SHOAL_STATS.get_ptr_mut(slot as u32) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU array, so it is valid
        // and only this CPU writes it while this program runs.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += bytes;
        }
    }
}
