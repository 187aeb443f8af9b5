//! The VIP load balancer's per-service changes, checked on the maps' contents as the kernel
//! holds them: a change to one service writes that service's entries and leaves every other
//! VIP's exactly as they were; a removal takes exactly that service's entries; a full
//! reconcile after a restart, and the background check without one, repair entries changed
//! behind the load balancer's back (by a second instance adopting the same pinned maps).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use shoal_dataplane::{Dataplane, LbTable, lb::LbMapContents};

use crate::support::Pins;

const SERVICES: u32 = 40;
const BACKENDS: u32 = 3;

fn vip(service: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 201, 0, 0)) + service)
}

/// Backend `j` of `service`: 8 addresses per service, so none is shared.
fn backend(service: u32, j: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 1)) + service * 8 + j)
}

fn table() -> LbTable {
    (0..SERVICES)
        .map(|i| (vip(i), (0..BACKENDS).map(|j| backend(i, j)).collect()))
        .collect()
}

/// Each VIP's backends in slot order as the programs resolve them, for a table.
fn resolved_table(table: &LbTable) -> BTreeMap<Ipv4Addr, Vec<Option<Ipv4Addr>>> {
    table
        .iter()
        .map(|(vip, backends)| (*vip, backends.iter().map(|ip| Some(*ip)).collect()))
        .collect()
}

/// The entries of every VIP but `except`: its VIP entry, its slots and the backend entries of
/// its service.
fn others(contents: &LbMapContents, except: Ipv4Addr) -> LbMapContents {
    let id = contents.vips.get(&except).map(|s| s.service_id);
    LbMapContents {
        vips: contents
            .vips
            .iter()
            .filter(|(vip, _)| **vip != except)
            .map(|(vip, s)| (*vip, *s))
            .collect(),
        slots: contents
            .slots
            .iter()
            .filter(|((service, _), _)| Some(*service) != id)
            .map(|(k, v)| (*k, *v))
            .collect(),
        backends: contents
            .backends
            .iter()
            .filter(|(_, b)| Some(b.service_id) != id)
            .map(|(k, v)| (*k, *v))
            .collect(),
    }
}

#[test]
fn a_change_to_one_service_leaves_every_other_vips_entries_untouched() {
    let mut dp = Dataplane::load(None).unwrap();
    dp.lb_mut().apply(&table()).unwrap();
    let before = dp.lb().map_contents().unwrap();
    assert_eq!(before.resolved(), resolved_table(&table()));

    // --- 1. one backend added to one service
    let changed = vip(SERVICES / 2);
    let mut grown = table()[&changed].clone();
    grown.insert(backend(SERVICES / 2, BACKENDS));
    let report = dp
        .lb_mut()
        .apply_service(changed, &grown, &BTreeSet::new())
        .unwrap();
    assert_eq!(
        (report.backends_added, report.backends_removed),
        (1, 0),
        "{report:?}"
    );
    let after = dp.lb().map_contents().unwrap();
    assert_eq!(
        others(&after, changed),
        others(&before, changed),
        "another VIP's entries changed"
    );
    let resolved = after.resolved();
    assert_eq!(
        resolved[&changed],
        grown.iter().map(|ip| Some(*ip)).collect::<Vec<_>>(),
        "the changed VIP's backends"
    );
    // The backends it kept keep their IDs (their flows go on).
    let ids = |c: &LbMapContents| -> BTreeMap<Ipv4Addr, u32> {
        let id = c.vips[&changed].service_id;
        c.backends
            .iter()
            .filter(|(_, b)| b.service_id == id)
            .map(|(backend_id, b)| (Ipv4Addr::from(b.ip.to_ne_bytes()), *backend_id))
            .collect()
    };
    let (ids_before, ids_after) = (ids(&before), ids(&after));
    for (ip, id) in &ids_before {
        assert_eq!(ids_after.get(ip), Some(id), "backend {ip} changed its ID");
    }

    // --- 2. the same again writes nothing; back to the table, through the full apply
    let again = dp
        .lb_mut()
        .apply_service(changed, &grown, &BTreeSet::new())
        .unwrap();
    assert_eq!(again, Default::default());
    dp.lb_mut().apply(&table()).unwrap();
    let back = dp.lb().map_contents().unwrap();
    assert_eq!(others(&back, changed), others(&before, changed));
    assert_eq!(back.resolved(), resolved_table(&table()));
}

#[test]
fn a_removal_removes_exactly_that_services_entries() {
    let mut dp = Dataplane::load(None).unwrap();
    dp.lb_mut().apply(&table()).unwrap();
    let before = dp.lb().map_contents().unwrap();
    let gone = vip(7);
    let id = before.vips[&gone].service_id;

    let report = dp.lb_mut().remove_service(gone).unwrap();
    assert_eq!(
        (report.vips_removed, report.backends_removed),
        (1, BACKENDS as usize),
        "{report:?}"
    );
    let after = dp.lb().map_contents().unwrap();
    assert_eq!(
        after,
        others(&before, gone),
        "the maps after removing {gone} (service {id}) are not the others' entries, unchanged"
    );
    assert_eq!(
        dp.lb_mut().remove_service(gone).unwrap(),
        Default::default(),
        "removing a VIP that is not there"
    );
    assert_eq!(dp.lb().map_contents().unwrap(), after);
}

/// Changes `vip`'s entries through a second load balancer on the same pinned maps: what the
/// first one did not do and does not know of.
fn change_behind_its_back(pins: &Pins, vip: Ipv4Addr, backends: &[Ipv4Addr]) {
    let mut intruder = Dataplane::load(Some(&pins.dir())).unwrap();
    let backends: BTreeSet<Ipv4Addr> = backends.iter().copied().collect();
    intruder
        .lb_mut()
        .apply_service(vip, &backends, &BTreeSet::new())
        .unwrap();
}

#[test]
fn a_full_reconcile_after_a_restart_repairs_entries_changed_behind_its_back() {
    let pins = Pins::new();
    let table = table();
    let mut dp = Dataplane::load(Some(&pins.dir())).unwrap();
    dp.lb_mut().apply(&table).unwrap();
    let kept = dp.lb().map_contents().unwrap();

    // --- 1. behind its back: one VIP's backends replaced, another VIP gone
    let (changed, removed) = (vip(3), vip(11));
    change_behind_its_back(&pins, changed, &[Ipv4Addr::new(10, 9, 9, 9)]);
    {
        let mut intruder = Dataplane::load(Some(&pins.dir())).unwrap();
        intruder.lb_mut().remove_service(removed).unwrap();
    }
    let tampered = dp.lb().map_contents().unwrap().resolved();
    assert_eq!(tampered[&changed], vec![Some(Ipv4Addr::new(10, 9, 9, 9))]);
    assert!(!tampered.contains_key(&removed));

    // --- 2. restart: the new load balancer adopts the maps and reconciles the whole table
    drop(dp);
    let mut dp = Dataplane::load(Some(&pins.dir())).unwrap();
    dp.lb_mut().apply(&table).unwrap();
    let repaired = dp.lb().map_contents().unwrap();
    assert_eq!(repaired.resolved(), resolved_table(&table));
    // Only what was tampered with was rewritten: every other VIP kept its entries and IDs.
    assert_eq!(
        others(&others(&repaired, changed), removed),
        others(&others(&kept, changed), removed),
        "an untouched VIP's entries changed in the reconcile"
    );
    // No backend entry is left over from the tampering.
    let named: BTreeSet<u32> = repaired.slots.values().copied().collect();
    let stray: Vec<_> = repaired
        .backends
        .iter()
        .filter(|(id, _)| !named.contains(id))
        .collect();
    assert!(stray.is_empty(), "backend entries no slot names: {stray:?}");
}

#[test]
fn the_background_check_repairs_entries_changed_while_it_runs() {
    let pins = Pins::new();
    let table = table();
    let mut dp = Dataplane::load(Some(&pins.dir())).unwrap();
    dp.lb_mut().apply(&table).unwrap();

    // --- 1. nothing changed: a check from the start finds nothing, and goes in steps
    let first = dp.lb_mut().check(None, 16).unwrap();
    assert_eq!((first.checked, first.repaired), (16, 0), "{first:?}");
    assert_eq!(first.next, Some(vip(15)));
    let rest = dp.lb_mut().check(first.next, 1000).unwrap();
    assert_eq!(
        (rest.checked, rest.repaired, rest.next),
        (SERVICES as usize - 16, 0, None),
        "{rest:?}"
    );

    // --- 2. behind its back: one VIP's backends replaced, and a VIP it never had added
    let changed = vip(25);
    change_behind_its_back(&pins, changed, &[Ipv4Addr::new(10, 9, 9, 9)]);
    change_behind_its_back(&pins, Ipv4Addr::new(10, 202, 0, 1), &[]);
    let check = dp.lb_mut().check(None, 1000).unwrap();
    assert_eq!(
        (check.checked, check.repaired),
        (SERVICES as usize, 2),
        "{check:?}"
    );
    assert_eq!(dp.lb().repairs(), 2);
    let repaired = dp.lb().map_contents().unwrap();
    assert_eq!(repaired.resolved(), resolved_table(&table));

    // --- 3. and once repaired, nothing more to do
    let again = dp.lb_mut().check(None, 1000).unwrap();
    assert_eq!(again.repaired, 0, "{again:?}");
}

#[test]
fn a_full_load_large_enough_for_two_writer_threads_is_written_whole() {
    // 500 x 10 = 5,000 new backends: past the size from which a change writes its counters and
    // its backend entries on two threads.
    let table: LbTable = (0..500u32)
        .map(|i| {
            let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 203, 0, 0)) + i);
            let backends = (0..10u32)
                .map(|j| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 2, 0, 1)) + i * 16 + j))
                .collect();
            (vip, backends)
        })
        .collect();
    let mut dp = Dataplane::load(None).unwrap();
    let report = dp.lb_mut().apply(&table).unwrap();
    assert_eq!((report.vips_added, report.backends_added), (500, 5000));
    let contents = dp.lb().map_contents().unwrap();
    assert_eq!(contents.resolved(), resolved_table(&table));
    assert_eq!(contents.backends.len(), 5000, "backend entries");
    assert_eq!(contents.slots.len(), 5000, "slots");
}

/// What the VIP hints should hold for `vips`: per index (the last two octets), how many.
fn hints_of<'a>(
    vips: impl IntoIterator<Item = &'a Ipv4Addr>,
) -> std::collections::HashMap<u32, u32> {
    let mut hints = std::collections::HashMap::new();
    for vip in vips {
        let index = shoal_common::lb::vip_hint(u32::from_ne_bytes(vip.octets()));
        *hints.entry(index).or_default() += 1;
    }
    hints
}

#[test]
fn the_vip_hints_count_the_vips_through_changes_removals_and_a_restart() {
    let pins = Pins::new();
    let mut dp = Dataplane::load(Some(&pins.dir())).unwrap();
    // Two VIPs share their last two octets with another VIP (10.201.0.x and 10.202.0.x):
    // one index counts two.
    let mut table = table();
    let twin = Ipv4Addr::new(10, 202, 0, 5);
    table.insert(twin, [backend(90, 0)].into());
    dp.lb_mut().apply(&table).unwrap();
    let hints = dp.lb().vip_hints().unwrap();
    assert_eq!(hints, hints_of(table.keys()));
    assert_eq!(
        hints[&shoal_common::lb::vip_hint(u32::from_ne_bytes(twin.octets()))],
        2
    );

    // One VIP of the pair goes: its index still counts the other.
    dp.lb_mut().remove_service(vip(5)).unwrap();
    table.remove(&vip(5));
    assert_eq!(dp.lb().vip_hints().unwrap(), hints_of(table.keys()));
    // A VIP added alone, then every VIP gone through a full apply: all entries back to 0.
    let added = Ipv4Addr::new(10, 203, 7, 7);
    dp.lb_mut()
        .apply_service(added, &[backend(91, 0)].into(), &BTreeSet::new())
        .unwrap();
    table.insert(added, [backend(91, 0)].into());
    assert_eq!(dp.lb().vip_hints().unwrap(), hints_of(table.keys()));

    // A restart adopts the maps and rewrites every entry from the VIPs they hold, whatever
    // the hints map held (here a stray entry written behind its back).
    drop(dp);
    {
        let pin = pins.dir().join(shoal_common::lb::VIP_HINTS_MAP);
        let data = aya::maps::MapData::from_pin(pin).unwrap();
        let mut map =
            aya::maps::Array::<_, u32>::try_from(aya::maps::Map::from_map_data(data).unwrap())
                .unwrap();
        map.set(4242, 9, 0).unwrap();
    }
    let mut dp = Dataplane::load(Some(&pins.dir())).unwrap();
    assert_eq!(dp.lb().vip_hints().unwrap(), hints_of(table.keys()));
    dp.lb_mut().apply(&LbTable::new()).unwrap();
    assert_eq!(dp.lb().vip_hints().unwrap(), Default::default());
}
