//! The mesh's maps, kernel side. Layouts and invariants: `shoal_common::mesh`. Userspace pins
//! them per node (or keeps them private in tests and benches).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use shoal_common::{
    lb::FlowKey,
    mesh::{
        FLOW_UNREPLIED, MAX_ADDRS, MAX_FLOW_ENTRIES, MAX_RETURN_ENTRIES, MAX_UNCONFIRMED_ENTRIES,
        MAX_VTEPS, MESH_EVENTS, MeshConfig, MeshEvent, MeshFlow, PORT_INDEX_LEN, PublishedPort,
        ReturnPath, port_index,
    },
};

#[map]
pub static SHOAL_MESH_CONFIG: Array<MeshConfig> = Array::with_max_entries(1, 0);

#[map]
pub static SHOAL_MESH_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_ADDRS, 0);

#[map]
pub static SHOAL_MESH_PORT_INDEX: Array<PublishedPort> = Array::with_max_entries(PORT_INDEX_LEN, 0);

/// What is published on `port` (network order, as loaded) for `proto`, if anything.
#[inline(always)]
pub fn published(port: u16, proto: u8) -> Option<PublishedPort> {
    let index = port_index(port, proto)?;
    SHOAL_MESH_PORT_INDEX
        .get(index)
        .copied()
        .filter(|p| p.mode != 0)
}

#[map]
pub static SHOAL_MESH_VTEPS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_VTEPS, 0);

#[map]
pub static SHOAL_MESH_FLOWS: LruHashMap<FlowKey, MeshFlow> =
    LruHashMap::with_max_entries(MAX_FLOW_ENTRIES, 0);

#[map]
pub static SHOAL_MESH_UNCONFIRMED: LruHashMap<FlowKey, MeshFlow> =
    LruHashMap::with_max_entries(MAX_UNCONFIRMED_ENTRIES, 0);

#[map]
pub static SHOAL_MESH_RETURNS: LruHashMap<FlowKey, ReturnPath> =
    LruHashMap::with_max_entries(MAX_RETURN_ENTRIES, 0);

#[map]
pub static SHOAL_MESH_INGRESS_IF: Array<u32> = Array::with_max_entries(1, 0);

/// Nodes whose route `encap` keeps (one per VTEP a flow was sent to; the LRU drops the least
/// recently used beyond).
const MAX_ROUTES: u32 = 4096;

/// The way to a task's node as `bpf_fib_lookup` found it (`encap::route`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CachedRoute {
    /// `clock::now()` of the lookup.
    pub found_at: u64,
    /// The interface the frame arrived on when it was looked up (policy routing may differ).
    pub in_ifindex: u32,
    pub out_ifindex: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

/// Routes toward VTEPs, private to the loaded programs (not pinned: a cache, which a new load
/// refills from its first packets).
#[map]
pub static SHOAL_MESH_ROUTES: LruHashMap<u32, CachedRoute> =
    LruHashMap::with_max_entries(MAX_ROUTES, 0);

#[map]
pub static SHOAL_MESH_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MESH_EVENTS, 0);

/// Counts one occurrence of `event` on this CPU.
#[inline(always)]
pub fn count_event(event: MeshEvent) {
    if let Some(n) = SHOAL_MESH_EVENTS.get_ptr_mut(event as u32) {
        // SAFETY: a valid per-CPU slot, written only by this CPU while the program runs.
        unsafe { *n += 1 };
    }
}

/// The mesh's settings; `None` until the agent wrote them (then nothing is published).
#[inline(always)]
pub fn config() -> Option<MeshConfig> {
    SHOAL_MESH_CONFIG
        .get(0)
        .copied()
        .filter(|c| c.vtep_ip != 0 && c.ingress_ip != 0)
}

/// Looks up a flow entry in `table` ([`SHOAL_MESH_FLOWS`] or [`SHOAL_MESH_UNCONFIRMED`]): a
/// copy of it, and where it is, to record packets in it.
#[inline(always)]
pub fn find_in(
    table: &LruHashMap<FlowKey, MeshFlow>,
    key: &FlowKey,
) -> Option<(MeshFlow, *mut MeshFlow)> {
    let entry = table.get_ptr_mut(key)?;
    // SAFETY: a valid entry of the map, copied out at once.
    Some((unsafe { *entry }, entry))
}

/// Looks up an entry of a confirmed flow, else of an unconfirmed one; `true` with the latter.
#[inline(always)]
pub fn find_flow(key: &FlowKey) -> Option<(MeshFlow, *mut MeshFlow, bool)> {
    if let Some((flow, entry)) = find_in(&SHOAL_MESH_FLOWS, key) {
        return Some((flow, entry, false));
    }
    find_in(&SHOAL_MESH_UNCONFIRMED, key).map(|(flow, entry)| (flow, entry, true))
}

/// Records a packet in an entry found by [`find_flow`] (time, closing flags), writing only
/// what changes: the clock moves once a jiffy, so a busy flow's packets mostly leave its
/// cache line clean. Racing writers can only set the same kinds of values, as for the VIP
/// flows.
#[inline(always)]
pub fn touch(entry: *mut MeshFlow, closing: u32, now: u64) {
    // SAFETY: a valid entry found in this program run, under RCU.
    unsafe {
        if (*entry).last_seen != now {
            (*entry).last_seen = now;
        }
        if (*entry).flags & closing != closing {
            (*entry).flags |= closing;
        }
    }
}

/// Records the task's answer in an unconfirmed flow's reply entry: no longer
/// [`FLOW_UNREPLIED`], and for a SYN-ACK the task's ISN (`syn_seq`, as on the wire), which the
/// client's ACK must acknowledge to confirm the flow.
#[inline(always)]
pub fn answered(entry: *mut MeshFlow, syn_seq: Option<u32>) {
    // SAFETY: as for `touch`; a racing answer on another CPU writes the same values.
    unsafe {
        if let Some(seq) = syn_seq {
            (*entry).tcp_isn = seq;
        }
        (*entry).flags &= !FLOW_UNREPLIED;
    }
}
