//! The load balancer's maps, kernel side. Layouts and invariants: `shoal_common::lb`.
//!
//! None is marked pinned here: userspace pins them per node (or keeps them private in tests
//! and benches). Each static's name is the map's name.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use shoal_common::lb::{
    Backend, FlowKey, FlowState, LB_EVENTS, LbCounters, LbEvent, MAX_BACKENDS, MAX_FLOW_ENTRIES,
    MAX_SERVICES, MAX_SLOTS, SlotKey, VIP_HINTS, VipService, vip_hint,
};

#[map]
pub static SHOAL_LB_VIPS: HashMap<u32, VipService> = HashMap::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static SHOAL_LB_VIP_HINTS: Array<u32> = Array::with_max_entries(VIP_HINTS, 0);

/// May `addr` be a VIP? False: it is none (see `shoal_common::lb::VIP_HINTS_MAP`).
///
/// A BPF-to-BPF call, not inlined: inlined into `lb::from_task`, LLVM 22's BPF backend spilled
/// an undefined register on one of that function's paths (a value it may leave undefined
/// there), which the verifier refuses as a read of an uninitialized register. The call costs
/// a few nanoseconds; the array lookup inside it is still inlined by the kernel.
#[inline(never)]
pub fn maybe_vip(addr: u32) -> bool {
    SHOAL_LB_VIP_HINTS
        .get(vip_hint(addr))
        .is_some_and(|count| *count != 0)
}

#[map]
pub static SHOAL_LB_SLOTS: HashMap<SlotKey, u32> = HashMap::with_max_entries(MAX_SLOTS, 0);

#[map]
pub static SHOAL_LB_BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map]
pub static SHOAL_LB_CURSORS: Array<u64> = Array::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static SHOAL_LB_FLOWS: LruHashMap<FlowKey, FlowState> =
    LruHashMap::with_max_entries(MAX_FLOW_ENTRIES, 0);

#[map]
pub static SHOAL_LB_SERVICE_STATS: PerCpuArray<LbCounters> =
    PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static SHOAL_LB_BACKEND_STATS: PerCpuArray<LbCounters> =
    PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

#[map]
pub static SHOAL_LB_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(LB_EVENTS, 0);

/// Counts one occurrence of `event` on this CPU.
#[inline(always)]
pub fn count_event(event: LbEvent) {
    if let Some(n) = SHOAL_LB_EVENTS.get_ptr_mut(event as u32) {
        // SAFETY: a valid per-CPU slot, written only by this CPU while the program runs.
        unsafe { *n += 1 };
    }
}

/// Adds one packet of `bytes` (and a new flow when `new_flow`) to a service's and a backend's
/// counters on this CPU.
#[inline(always)]
pub fn count_traffic(service_id: u32, backend_id: u32, bytes: u64, new_flow: bool) {
    for counters in [
        SHOAL_LB_SERVICE_STATS.get_ptr_mut(service_id),
        SHOAL_LB_BACKEND_STATS.get_ptr_mut(backend_id),
    ]
    .into_iter()
    .flatten()
    {
        // SAFETY: as above.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += bytes;
            (*counters).flows += u64::from(new_flow);
        }
    }
}
