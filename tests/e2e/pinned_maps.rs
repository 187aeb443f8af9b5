//! A restarted agent re-adopts its pinned maps only when they are the maps this build's
//! programs expect: a map pinned by another build under a map's name (another capacity,
//! another type and value size) is replaced, and a map of this build's layout is kept, with
//! what it holds. The VIP flow table's size is the operator's (`--lb-flows`): a new one takes
//! effect at the next start, through the same check.

use std::{net::Ipv4Addr, path::Path};

use aya::{EbpfLoader, maps::MapInfo};
use shoal_common::lb::{CURSORS_MAP, FLOWS_MAP, MAX_FLOW_ENTRIES, VIPS_MAP, VipService};
use shoal_dataplane::{Dataplane, LbTable, TableSizes, object};

use crate::support::Pins;

fn info(dir: &Path, name: &str) -> MapInfo {
    MapInfo::from_pin(dir.join(name)).unwrap()
}

#[test]
fn maps_pinned_with_another_layout_are_replaced_and_this_layouts_kept() {
    let pins = Pins::new();
    let dir = pins.dir();
    std::fs::create_dir_all(&dir).unwrap();

    // Another build's maps, pinned where this one's go: the VIP flow table with a sixteenth
    // of its capacity (re-adopted as it is, it would silently hold fewer flows), and the
    // round-robin cursors (an array of u64) under the VIPs' name (re-adopted, the programs
    // would fail verification and the agent could not start).
    let mut stale = EbpfLoader::new();
    stale
        .map_max_entries(FLOWS_MAP, MAX_FLOW_ENTRIES / 16)
        .map_pin_path(FLOWS_MAP, dir.join(FLOWS_MAP))
        .map_pin_path(CURSORS_MAP, dir.join(VIPS_MAP));
    drop(stale.load(object::bytes().unwrap()).unwrap());
    assert_eq!(info(&dir, FLOWS_MAP).max_entries(), MAX_FLOW_ENTRIES / 16);
    assert_eq!(info(&dir, VIPS_MAP).value_size(), 8, "the cursors' u64");

    let mut dp = Dataplane::load(Some(&dir)).expect("loading over another build's pins");
    assert_eq!(
        info(&dir, FLOWS_MAP).max_entries(),
        MAX_FLOW_ENTRIES,
        "the flow table at this build's capacity"
    );
    assert_eq!(
        info(&dir, VIPS_MAP).value_size() as usize,
        std::mem::size_of::<VipService>(),
        "the VIPs' map of this build"
    );

    // A map of this build's layout is re-adopted: the same map (its ID), what it holds kept.
    let vip = Ipv4Addr::new(10, 202, 0, 1);
    let table: LbTable = [(vip, [Ipv4Addr::new(10, 2, 0, 1)].into())].into();
    dp.lb_mut().apply(&table).unwrap();
    let ids = (info(&dir, FLOWS_MAP).id(), info(&dir, VIPS_MAP).id());
    drop(dp);
    let dp = Dataplane::load(Some(&dir)).unwrap();
    assert_eq!(
        (info(&dir, FLOWS_MAP).id(), info(&dir, VIPS_MAP).id()),
        ids,
        "this build's own pins re-adopted, not replaced"
    );
    assert!(
        dp.lb().map_contents().unwrap().vips.contains_key(&vip),
        "the VIP programmed before the restart is still in the map"
    );
}

#[test]
fn the_vip_flow_table_has_the_size_asked_and_a_new_size_replaces_it_at_the_next_load() {
    let pins = Pins::new();
    let dir = pins.dir();
    let small = TableSizes::new(4096).unwrap();
    let capacity_and_memory = |dp: &Dataplane| {
        let table = dp
            .flow_tables()
            .unwrap()
            .into_iter()
            .find(|t| t.name == FLOWS_MAP)
            .unwrap();
        (table.capacity, table.memory_bytes.unwrap())
    };

    let dp = Dataplane::load_sized(Some(&dir), small).unwrap();
    assert_eq!(info(&dir, FLOWS_MAP).max_entries(), 4096);
    let (capacity, small_memory) = capacity_and_memory(&dp);
    assert_eq!(capacity, 4096, "what shoal info shows");
    let small_id = info(&dir, FLOWS_MAP).id();
    drop(dp);

    // The same size again: the table is re-adopted.
    drop(Dataplane::load_sized(Some(&dir), small).unwrap());
    assert_eq!(
        info(&dir, FLOWS_MAP).id(),
        small_id,
        "re-adopted at the same size"
    );

    // The default size: the table is replaced.
    let dp = Dataplane::load(Some(&dir)).unwrap();
    assert_eq!(info(&dir, FLOWS_MAP).max_entries(), MAX_FLOW_ENTRIES);
    assert_ne!(info(&dir, FLOWS_MAP).id(), small_id, "replaced");
    let (capacity, memory) = capacity_and_memory(&dp);
    assert_eq!(capacity, MAX_FLOW_ENTRIES);
    assert!(
        memory > small_memory * 16,
        "{memory} bytes for {MAX_FLOW_ENTRIES} entries, {small_memory} for 4096"
    );
}
