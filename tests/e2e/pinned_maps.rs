//! A restarted agent re-adopts its pinned maps only when they are the maps this build's
//! programs expect: a map pinned by another build under a map's name (another capacity,
//! another type and value size) is replaced, and a map of this build's layout is kept, with
//! what it holds. The flow tables' sizes are the operator's (`--lb-flows`, `--mesh-flows`): a
//! new one takes effect at the next start, through the same check, and the entries of the
//! last run's tables are carried over into the new ones, also those the last run's programs
//! add while they still run.

use std::{net::Ipv4Addr, path::Path};

use aya::{
    EbpfLoader, Pod,
    maps::{HashMap, Map, MapData, MapInfo},
};
use shoal_common::{
    lb::{CURSORS_MAP, FLOWS_MAP, FlowKey, FlowState, MAX_FLOW_ENTRIES, VIPS_MAP, VipService},
    mesh::{self, MeshFlow, ReturnPath},
};
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
fn the_flow_tables_have_the_sizes_asked_and_a_new_size_replaces_them_at_the_next_load() {
    let pins = Pins::new();
    let dir = pins.dir();
    let small = TableSizes::new(4096, 2048).unwrap();
    let capacity_and_memory = |dp: &Dataplane, name: &str| {
        let table = dp
            .flow_tables()
            .unwrap()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap();
        (table.capacity, table.memory_bytes.unwrap())
    };

    let dp = Dataplane::load_sized(Some(&dir), small).unwrap();
    for (name, entries) in [
        (FLOWS_MAP, 4096),
        (mesh::FLOWS_MAP, 2048),
        (mesh::RETURNS_MAP, 1024),
    ] {
        assert_eq!(info(&dir, name).max_entries(), entries, "{name}");
        assert_eq!(
            capacity_and_memory(&dp, name).0,
            entries,
            "{name}: what shoal info shows"
        );
    }
    let (_, small_memory) = capacity_and_memory(&dp, FLOWS_MAP);
    let small_ids = [FLOWS_MAP, mesh::FLOWS_MAP].map(|name| info(&dir, name).id());
    drop(dp);

    // The same sizes again: the tables are re-adopted.
    drop(Dataplane::load_sized(Some(&dir), small).unwrap());
    assert_eq!(
        [FLOWS_MAP, mesh::FLOWS_MAP].map(|name| info(&dir, name).id()),
        small_ids,
        "re-adopted at the same size"
    );

    // The default sizes: the tables are replaced.
    let dp = Dataplane::load(Some(&dir)).unwrap();
    assert_eq!(info(&dir, FLOWS_MAP).max_entries(), MAX_FLOW_ENTRIES);
    assert_eq!(
        info(&dir, mesh::FLOWS_MAP).max_entries(),
        mesh::MAX_FLOW_ENTRIES
    );
    assert_eq!(
        info(&dir, mesh::RETURNS_MAP).max_entries(),
        mesh::MAX_RETURN_ENTRIES
    );
    let ids = [FLOWS_MAP, mesh::FLOWS_MAP].map(|name| info(&dir, name).id());
    assert!(ids[0] != small_ids[0] && ids[1] != small_ids[1], "replaced");
    let (capacity, memory) = capacity_and_memory(&dp, FLOWS_MAP);
    assert_eq!(capacity, MAX_FLOW_ENTRIES);
    assert!(
        memory > small_memory * 16,
        "{memory} bytes for {MAX_FLOW_ENTRIES} entries, {small_memory} for 4096"
    );
}

/// The flow table pinned at `dir/name`, opened as the programs see it.
fn table<V: Pod>(dir: &Path, name: &str) -> HashMap<MapData, FlowKey, V> {
    let map = Map::from_map_data(MapData::from_pin(dir.join(name)).unwrap()).unwrap();
    HashMap::try_from(map).unwrap()
}

/// A forward flow's key, told apart by its source port.
fn key(port: u16) -> FlowKey {
    FlowKey {
        src_ip: u32::from(Ipv4Addr::new(10, 0, 0, 2)).to_be(),
        dst_ip: u32::from(Ipv4Addr::new(10, 0, 0, 100)).to_be(),
        src_port: port.to_be(),
        dst_port: 80u16.to_be(),
        proto: 6,
        ..FlowKey::default()
    }
}

/// A VIP flow's entry on `backend`, last seen at `at`.
fn vip_flow(backend: u32, at: u64) -> FlowState {
    FlowState {
        backend_id: backend,
        last_seen: at,
        ..FlowState::default()
    }
}

#[test]
fn a_resized_flow_table_keeps_its_entries_and_those_the_old_programs_add_until_they_go() {
    let pins = Pins::new();
    let dir = pins.dir();
    let before = Dataplane::load_sized(Some(&dir), TableSizes::new(4096, 4096).unwrap()).unwrap();
    // Flows in the three tables an operator sizes, as the programs write them; the last run's
    // tables stay open here, as its programs keep them while they run.
    let mut old_vip = table::<FlowState>(&dir, FLOWS_MAP);
    let mut old_mesh = table::<MeshFlow>(&dir, mesh::FLOWS_MAP);
    let mut old_returns = table::<ReturnPath>(&dir, mesh::RETURNS_MAP);
    for port in 1..=100 {
        old_vip.insert(key(port), vip_flow(1, 10), 0).unwrap();
    }
    let mesh_flow = MeshFlow {
        backend_id: 7,
        ..MeshFlow::default()
    };
    old_mesh.insert(key(1), mesh_flow, 0).unwrap();
    let return_path = ReturnPath { node: 1, task: 2 };
    old_returns.insert(key(1), return_path, 0).unwrap();
    let old_id = info(&dir, FLOWS_MAP).id();

    // The next start, with other sizes, while the last run's programs still run (`before`'s
    // are loaded and use the old tables).
    let mut after = Dataplane::load(Some(&dir)).unwrap();
    assert_ne!(info(&dir, FLOWS_MAP).id(), old_id, "a new table");
    let new_vip = table::<FlowState>(&dir, FLOWS_MAP);
    assert_eq!(new_vip.iter().count(), 100, "every VIP flow carried over");
    assert_eq!(new_vip.get(&key(1), 0).unwrap(), vip_flow(1, 10));
    assert_eq!(
        table::<MeshFlow>(&dir, mesh::FLOWS_MAP)
            .get(&key(1), 0)
            .unwrap(),
        mesh_flow
    );
    assert_eq!(
        table::<ReturnPath>(&dir, mesh::RETURNS_MAP)
            .get(&key(1), 0)
            .unwrap(),
        return_path
    );

    // The old programs open a flow, and see a later segment of another; the new programs
    // open a flow the old ones also saw (the new one's entry is theirs).
    old_vip.insert(key(200), vip_flow(2, 20), 0).unwrap();
    old_vip.insert(key(2), vip_flow(1, 30), 0).unwrap();
    let mut new_vip = table::<FlowState>(&dir, FLOWS_MAP);
    new_vip.insert(key(300), vip_flow(3, 40), 0).unwrap();
    old_vip.insert(key(300), vip_flow(4, 41), 0).unwrap();
    assert_eq!(after.carry_over(), 3, "still carried: the old programs run");
    assert_eq!(new_vip.get(&key(200), 0).unwrap(), vip_flow(2, 20));
    assert_eq!(new_vip.get(&key(2), 0).unwrap(), vip_flow(1, 30));
    assert_eq!(
        new_vip.get(&key(300), 0).unwrap(),
        vip_flow(3, 40),
        "the new programs' entry kept"
    );

    // The last run's programs go: a last copy, and the old tables are released.
    old_vip.insert(key(201), vip_flow(2, 50), 0).unwrap();
    drop(before);
    assert_eq!(after.carry_over(), 0, "released once no program uses them");
    assert_eq!(new_vip.get(&key(201), 0).unwrap(), vip_flow(2, 50));
    assert_eq!(new_vip.iter().count(), 103);
}
