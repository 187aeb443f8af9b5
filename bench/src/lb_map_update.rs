//! How long programming the VIP load balancer takes: a full table of 10,000 VIPs x 10
//! backends, and one service's change (a backend added, then removed) with 100 and with
//! 10,000 VIPs in place. shoal, into a private (unpinned) `Dataplane`: the full load is one
//! `LoadBalancer::apply` of the whole table (what the agent does on start), with its writes
//! batched and, for comparison, one entry per syscall; a change is
//! `LoadBalancer::apply_service` of the one service (what the agent calls on a change) and,
//! for comparison, `apply` of the whole table with that service changed (what it called
//! before). The peer: the same table as kube-proxy's nftables mode would write it (`nft_lb`),
//! loaded with `nft -f` in a scratch network namespace, and the same change written as
//! kube-proxy writes it (the one service's chain flushed and refilled).
//!
//! Then, each at 100 and 10,000 with the ratio printed, the other things one service or
//! endpoint change programs (issue 23, "O(1) changes"):
//! - DNS records: one task added to and removed from one service, with 100 and 10,000
//!   services in the embedded DNS server's records, through `RecordsView::update` (what the
//!   agent hands the server on a change) and, for comparison, the whole records built again
//!   and swapped in (what it did before).
//! - FDB entries: one remote endpoint added to and removed from an overlay sandbox holding
//!   100 and 10,000 (1,000 nodes x 10 tasks) remote endpoints, real netlink in a throwaway
//!   netns, through `add_remote_endpoint` / `remove_remote_endpoint` (what the agent calls on
//!   a change); and the background check's read of the sandbox, and the re-adding of every
//!   endpoint it did every 5 s before.
//! - Published ports: one port published and withdrawn again, with 100 and 10,000 ports
//!   published, through `Mesh::set_port` (one write) and through `Mesh::apply` of the whole
//!   table with that port added or removed (what the agent calls on a change: it compares in
//!   memory with what it programmed, then writes the one entry).

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use shoal_common::mesh::{MODE_INGRESS_CLIENT, PortKey, PublishedPort};
use shoal_dataplane::lb::ApplyReport;
use shoal_dataplane::netns::run_in;
use shoal_dataplane::overlay::{
    DEFAULT_MTU, DEFAULT_VXLAN_PORT, OverlaySpec, RemoteEndpoint, add_remote_endpoint,
    add_remote_endpoints, ensure_sandbox, mac_for_ip, remote_endpoint_entries,
    remove_remote_endpoint, remove_sandbox,
};
use shoal_dataplane::{Dataplane, LbTable, MeshTable};
use shoal_dns::{EndpointRecord, NetworkInfo, Records, RecordsView};
use shoal_tests::netns::Netns;

use crate::nft_lb;

const LARGE: u32 = 10_000;
const SMALL: u32 = 100;
const BACKENDS: u32 = 10;
/// Full loads per system (each into an empty data path or netns); the median is shown.
const FULL_RUNS: usize = 3;
/// Adds and removes of one backend per size and system; the medians are shown.
const CHANGES: usize = 10;
/// The same through `apply_service`, microseconds each.
const SERVICE_CHANGES: usize = 100;
/// Pause before a size's changes are timed.
const SETTLE: Duration = Duration::from_secs(2);

pub fn run() -> anyhow::Result<()> {
    let large = table(LARGE);
    let small = table(SMALL);
    let netns = Netns::create(&format!("shoal-bench-nft-{}", std::process::id()));
    let ns = Path::new(&netns.path()).to_path_buf();

    // shoal: full loads, each into a fresh data path, batched and one entry per syscall in
    // turn; the last batched one stays for the changes.
    let mut shoal_full = Vec::new();
    let mut shoal_full_single = Vec::new();
    let mut dataplane = None;
    for _ in 0..FULL_RUNS {
        for batched in [false, true] {
            let mut dp = Dataplane::load(None).context("loading the eBPF programs")?;
            dp.lb_mut().set_batched(batched);
            let started = Instant::now();
            let report = dp.lb_mut().apply(&large).context("full load")?;
            let took = started.elapsed();
            let want = ApplyReport {
                vips_added: LARGE as usize,
                backends_added: (LARGE * BACKENDS) as usize,
                ..ApplyReport::default()
            };
            ensure!(report == want, "full load applied {report:?}");
            dp.lb_mut().set_batched(true);
            if batched {
                shoal_full.push(took);
                dataplane = Some(dp);
            } else {
                shoal_full_single.push(took);
            }
        }
    }
    let mut dp = dataplane.context("no full load ran")?;
    let shoal_large = shoal_changes(&mut dp, &large, LARGE)?;
    drop(dp);
    let mut dp = Dataplane::load(None).context("loading the eBPF programs")?;
    dp.lb_mut().apply(&small).context("loading 100 VIPs")?;
    let shoal_small = shoal_changes(&mut dp, &small, SMALL)?;
    drop(dp);

    // nftables: the same, in the scratch netns.
    let mut nft_full = Vec::new();
    for run in 0..FULL_RUNS {
        if run > 0 {
            nft_lb::apply(&ns, &nft_lb::delete())?;
        }
        nft_full.push(nft_lb::apply(&ns, &nft_lb::ruleset(&large)).context("full load")?);
    }
    let nft_large = nft_changes(&ns, &large, LARGE)?;
    nft_lb::apply(&ns, &nft_lb::delete())?;
    nft_lb::apply(&ns, &nft_lb::ruleset(&small)).context("loading 100 VIPs")?;
    let nft_small = nft_changes(&ns, &small, SMALL)?;
    let nft_empty = (0..CHANGES)
        .map(|_| nft_lb::apply(&ns, ""))
        .collect::<anyhow::Result<Vec<_>>>()?;
    drop(netns);

    println!(
        "lb-map-update: VIPs x {BACKENDS} backends; shoal: private Dataplane, full load = \
         LoadBalancer::apply, change = apply_service (and apply of the whole table); \
         nftables: nft -f in a scratch netns, kube-proxy layout"
    );
    println!(
        "{:<56} {:>10} {:>10} {:>10}",
        "", "shoal", "nftables", "shoal/nft"
    );
    let row = |what: &str, shoal: &[Duration], nft: &[Duration]| {
        let (shoal, nft) = (median(shoal), median(nft));
        println!(
            "{what:<56} {:>10} {:>10} {:>10.4}",
            format!("{shoal:.2?}"),
            format!("{nft:.2?}"),
            shoal.as_secs_f64() / nft.as_secs_f64()
        );
        (shoal, nft)
    };
    row(
        &format!("full load, {LARGE} x {BACKENDS} (median of {FULL_RUNS})"),
        &shoal_full,
        &nft_full,
    );
    row(
        &format!("full load, one entry per syscall (median of {FULL_RUNS})"),
        &shoal_full_single,
        &nft_full,
    );
    type Pick = fn(&Changes) -> &[Duration];
    for (what, shoal_pick, nft_pick) in [
        (
            "one backend added, apply_service",
            Changes::service_added as Pick,
            Changes::added as Pick,
        ),
        (
            "one backend removed, apply_service",
            Changes::service_removed,
            Changes::removed,
        ),
        (
            "one backend added, apply (whole table)",
            Changes::added,
            Changes::added,
        ),
        (
            "one backend removed, apply (whole table)",
            Changes::removed,
            Changes::removed,
        ),
    ] {
        let sizes = [
            (SMALL, &shoal_small, &nft_small),
            (LARGE, &shoal_large, &nft_large),
        ];
        let [at_small, at_large] = sizes.map(|(services, shoal, nft)| {
            row(
                &format!("{what}, {services} VIPs"),
                shoal_pick(shoal),
                nft_pick(nft),
            )
        });
        println!(
            "{:<56} {:>10.2} {:>10.2}",
            format!("{what}: {LARGE} / {SMALL} VIPs"),
            at_large.0.as_secs_f64() / at_small.0.as_secs_f64(),
            at_large.1.as_secs_f64() / at_small.1.as_secs_f64()
        );
    }
    println!(
        "{:<56} {:>10} {:>10}",
        "nft -f of an empty script (the process)",
        "",
        format!("{:.2?}", median(&nft_empty))
    );
    println!(
        "(changes: medians of {SERVICE_CHANGES} through apply_service, {CHANGES} otherwise; \
         nftables has one way to change a service)"
    );

    dns_records()?;
    fdb_entries()?;
    published_ports()?;
    Ok(())
}

/// The mesh's table with `ports` TCP ports published from 20,000 up (their frontends need not
/// exist for the maps).
fn mesh_table(ports: u32) -> MeshTable {
    let mut table = MeshTable::default();
    for i in 0..ports {
        table.ports.insert(
            PortKey::new(20_000 + i as u16, 6),
            PublishedPort::new([10, 255, 255, 254], 80, MODE_INGRESS_CLIENT),
        );
    }
    table
}

/// Published ports: one port published, then withdrawn, with 100 and 10,000 in place.
fn published_ports() -> anyhow::Result<()> {
    let extra = PortKey::new(8080, 6);
    let port = PublishedPort::new([10, 255, 255, 253], 80, MODE_INGRESS_CLIENT);
    let mut rows = Vec::new();
    for ports in [SMALL, LARGE] {
        let mut dp = Dataplane::load(None).context("loading the eBPF programs")?;
        let table = mesh_table(ports);
        let started = Instant::now();
        dp.mesh_mut().apply(&table).context("full load")?;
        let full = started.elapsed();
        let (mut set_added, mut set_removed) = (Vec::new(), Vec::new());
        for _ in 0..SERVICE_CHANGES {
            for (value, times) in [(Some(port), &mut set_added), (None, &mut set_removed)] {
                let started = Instant::now();
                dp.mesh_mut().set_port(extra, value)?;
                times.push(started.elapsed());
            }
        }
        let mut grown = table.clone();
        grown.ports.insert(extra, port);
        let (mut apply_added, mut apply_removed) = (Vec::new(), Vec::new());
        for _ in 0..SERVICE_CHANGES {
            for (to, times) in [(&grown, &mut apply_added), (&table, &mut apply_removed)] {
                let started = Instant::now();
                dp.mesh_mut().apply(to)?;
                times.push(started.elapsed());
            }
        }
        ensure!(
            dp.mesh().table()?.ports.len() == ports as usize,
            "the maps do not hold the {ports} ports"
        );
        rows.push((full, [set_added, set_removed, apply_added, apply_removed]));
    }
    scaling_header("Published ports (the mesh's port index): one port published, then withdrawn");
    let [(small_full, small), (large_full, large)] =
        <[_; 2]>::try_from(rows).map_err(|_| anyhow::anyhow!("two sizes"))?;
    for (i, what) in [
        "one port published, Mesh::set_port",
        "one port withdrawn, Mesh::set_port",
        "one port published, Mesh::apply (whole table, agent)",
        "one port withdrawn, Mesh::apply (whole table, agent)",
    ]
    .into_iter()
    .enumerate()
    {
        scaling_row(what, &small[i], &large[i]);
    }
    scaling_row(
        "full load (first Mesh::apply: reads the index)",
        &[small_full],
        &[large_full],
    );
    println!("(medians of {SERVICE_CHANGES} changes; the full load once)");
    Ok(())
}

/// One row of the sections below: the medians at 100 and 10,000 and their ratio.
fn scaling_row(what: &str, small: &[Duration], large: &[Duration]) {
    let (small, large) = (median(small), median(large));
    println!(
        "{what:<56} {:>10} {:>10} {:>9.2}x",
        format!("{small:.2?}"),
        format!("{large:.2?}"),
        large.as_secs_f64() / small.as_secs_f64()
    );
}

fn scaling_header(what: &str) {
    println!();
    println!("{what}");
    println!(
        "{:<56} {:>10} {:>10} {:>10}",
        "",
        SMALL.to_string(),
        LARGE.to_string(),
        format!("{LARGE}/{SMALL}")
    );
}

/// Tasks per service in the DNS records.
const DNS_TASKS: u32 = 2;

/// DNS records: one task added to one service, then removed, with `services` services (each
/// `DNS_TASKS` tasks with a VIP, on one network) in the records.
fn dns_records() -> anyhow::Result<()> {
    let network = || NetworkInfo {
        id: "net1".into(),
        name: "bench".into(),
    };
    let mut rows = Vec::new();
    for services in [SMALL, LARGE] {
        let endpoints: Vec<EndpointRecord> = (0..services)
            .flat_map(|s| (0..DNS_TASKS).map(move |t| dns_endpoint(s, t)))
            .collect();
        let started = Instant::now();
        let view = RecordsView::new(Records::new(vec![network()], endpoints.clone()));
        let built = started.elapsed();
        let added = dns_endpoint(services / 2, DNS_TASKS);
        let (mut delta_added, mut delta_removed) = (Vec::new(), Vec::new());
        for _ in 0..SERVICE_CHANGES {
            let started = Instant::now();
            view.update(|r| r.upsert_endpoint(added.clone()));
            delta_added.push(started.elapsed());
            ensure!(
                view.update(|r| r.endpoint_count()) == endpoints.len() + 1,
                "the task was not added"
            );
            let started = Instant::now();
            view.update(|r| r.remove_endpoint(&added.network_id, &added.task_id));
            delta_removed.push(started.elapsed());
            ensure!(
                view.update(|r| r.endpoint_count()) == endpoints.len(),
                "the task was not removed"
            );
        }
        let mut grown = endpoints.clone();
        grown.push(added.clone());
        let (mut whole_added, mut whole_removed) = (Vec::new(), Vec::new());
        for _ in 0..CHANGES {
            for (to, times) in [(&grown, &mut whole_added), (&endpoints, &mut whole_removed)] {
                let started = Instant::now();
                view.replace(Records::new(vec![network()], to.clone()));
                times.push(started.elapsed());
            }
        }
        rows.push((
            built,
            [delta_added, delta_removed, whole_added, whole_removed],
        ));
    }
    scaling_header(&format!(
        "DNS records: services x {DNS_TASKS} tasks (VIP mode, one network) in the embedded \
         DNS server's records; one task added to one service, then removed"
    ));
    let [(small_built, small), (large_built, large)] =
        <[_; 2]>::try_from(rows).map_err(|_| anyhow::anyhow!("two sizes"))?;
    for (i, what) in [
        "one task added, RecordsView::update (delta)",
        "one task removed, RecordsView::update (delta)",
        "one task added, Records::new + replace (as before)",
        "one task removed, Records::new + replace (as before)",
    ]
    .into_iter()
    .enumerate()
    {
        scaling_row(what, &small[i], &large[i]);
    }
    scaling_row(
        "full build (Records::new, at start)",
        &[small_built],
        &[large_built],
    );
    println!("(medians of {SERVICE_CHANGES} delta changes and {CHANGES} rebuilds; the build once)");
    Ok(())
}

/// Task `task` of service `service`: addresses from 10.10.0.2 up, VIPs from 10.20.0.2 up.
fn dns_endpoint(service: u32, task: u32) -> EndpointRecord {
    let name = format!("svc{service}");
    let id = format!("task{service}x{task}");
    EndpointRecord {
        network_id: "net1".into(),
        task_id: id.clone(),
        ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 10, 0, 2)) + service * 4 + task),
        vip: Some(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 20, 0, 2)) + service,
        )),
        aliases: vec![
            format!("{name}.{}.{id}", task + 1),
            format!("{name}.{}", task + 1),
        ],
        service: name,
        service_aliases: Vec::new(),
    }
}

/// Remote tasks per node in the FDB measurement: 10,000 endpoints are 1,000 nodes.
const FDB_TASKS_PER_NODE: u32 = 10;

/// A node netns with an underlay address and a sandbox in it, removed on drop.
struct FdbTopology {
    node: Netns,
    sandbox_dir: std::path::PathBuf,
    sandbox: std::path::PathBuf,
}

impl Drop for FdbTopology {
    fn drop(&mut self) {
        if let Err(e) = remove_sandbox(&self.sandbox) {
            eprintln!(
                "lb-map-update: removing sandbox {}: {e}",
                self.sandbox.display()
            );
        }
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.sandbox_dir)
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir(&self.sandbox_dir);
        // The node netns goes with `self.node`.
    }
}

/// FDB entries: one remote endpoint added, then removed, in a sandbox with 100 and with
/// 10,000 remote endpoints (`FDB_TASKS_PER_NODE` per node).
fn fdb_entries() -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for endpoints in [SMALL, LARGE] {
        let pid = std::process::id();
        let sandbox_dir = Path::new("/run/shoal").join(format!("bench-fdb-{pid}"));
        let topo = FdbTopology {
            node: Netns::create(&format!("shoal-bench-fdb-{pid}")),
            sandbox: sandbox_dir.join("ov"),
            sandbox_dir,
        };
        let local_vtep = Ipv4Addr::new(172, 16, 0, 1);
        topo.node
            .ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"]);
        topo.node
            .ip(&["addr", "add", "172.16.0.1/12", "dev", "ul0"]);
        topo.node.ip(&["link", "set", "ul0", "up"]);
        let spec = OverlaySpec {
            vni: 4100,
            subnet: "10.0.0.0/16".parse().context("subnet")?,
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            vxlan_port: DEFAULT_VXLAN_PORT,
            local_vtep,
            mtu: DEFAULT_MTU,
        };
        let node = Path::new(&topo.node.path()).to_path_buf();
        let sandbox = run_in(&node, || ensure_sandbox(&node, &topo.sandbox, &spec))
            .context("entering the node netns")?
            .context("creating the sandbox")?;
        let remote: Vec<RemoteEndpoint> = (0..endpoints).map(fdb_endpoint).collect();
        let started = Instant::now();
        add_remote_endpoints(&sandbox, &remote).context("programming the endpoints")?;
        let programmed = started.elapsed();
        let started = Instant::now();
        let present = remote_endpoint_entries(&sandbox).context("listing the endpoints")?;
        let listed = started.elapsed();
        ensure!(
            present.len() == remote.len() && present.iter().all(|(_, complete)| *complete),
            "{} of {} endpoints programmed",
            present.len(),
            remote.len()
        );
        // One task of a node already there (its FDB entry points at a known VTEP).
        let (ip, mac, _) = fdb_endpoint(endpoints + 5);
        let vtep = fdb_endpoint(endpoints / 2).2;
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for _ in 0..SERVICE_CHANGES {
            let started = Instant::now();
            add_remote_endpoint(&sandbox, ip, mac, vtep).context("adding one endpoint")?;
            added.push(started.elapsed());
            let started = Instant::now();
            remove_remote_endpoint(&sandbox, ip, mac, vtep).context("removing one endpoint")?;
            removed.push(started.elapsed());
        }
        // Checked once, outside the timing: the endpoint came and went.
        add_remote_endpoint(&sandbox, ip, mac, vtep)?;
        let with = remote_endpoint_entries(&sandbox)?;
        ensure!(
            with.contains(&((ip, mac, vtep), true)),
            "the endpoint was not programmed"
        );
        remove_remote_endpoint(&sandbox, ip, mac, vtep)?;
        ensure!(
            remote_endpoint_entries(&sandbox)?.len() == remote.len(),
            "the endpoint was not removed"
        );
        // What the background check did every 5 s before: every endpoint added again, one
        // netlink connection each, then the FDB listed.
        let started = Instant::now();
        for &(ip, mac, vtep) in &remote {
            add_remote_endpoint(&sandbox, ip, mac, vtep).context("re-adding")?;
        }
        remote_endpoint_entries(&sandbox)?;
        let old_sync = started.elapsed();
        rows.push((added, removed, programmed, listed, old_sync));
        drop(topo);
    }
    scaling_header(&format!(
        "FDB entries: remote endpoints in one overlay sandbox ({FDB_TASKS_PER_NODE} per node: \
         {SMALL} = {} nodes, {LARGE} = {} nodes), each an FDB entry and two neighbour entries",
        SMALL / FDB_TASKS_PER_NODE,
        LARGE / FDB_TASKS_PER_NODE
    ));
    let [small, large] = <[_; 2]>::try_from(rows).map_err(|_| anyhow::anyhow!("two sizes"))?;
    scaling_row(
        "one endpoint added, add_remote_endpoint",
        &small.0,
        &large.0,
    );
    scaling_row(
        "one endpoint removed, remove_remote_endpoint",
        &small.1,
        &large.1,
    );
    scaling_row(
        "all programmed, add_remote_endpoints (sandbox created)",
        &[small.2],
        &[large.2],
    );
    scaling_row(
        "background check's read (FDB + neighbour dumps)",
        &[small.3],
        &[large.3],
    );
    scaling_row(
        "old background sync (re-add every endpoint, then list)",
        &[small.4],
        &[large.4],
    );
    println!(
        "(medians of {SERVICE_CHANGES} adds and removes; the rest once; real netlink in a \
         throwaway netns)"
    );
    Ok(())
}

/// Remote endpoint `i`: task address 10.0.0.2 up, behind node `i / FDB_TASKS_PER_NODE`
/// (VTEPs 172.16.1.0 up).
fn fdb_endpoint(i: u32) -> RemoteEndpoint {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 2)) + i);
    let vtep = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 1, 0)) + i / FDB_TASKS_PER_NODE);
    (ip, mac_for_ip(ip), vtep)
}

/// Timed changes of one service: one backend added, then removed again; for shoal both
/// through `apply_service` and through `apply` of the whole table (`added`, `removed`).
#[derive(Default)]
struct Changes {
    added: Vec<Duration>,
    removed: Vec<Duration>,
    service_added: Vec<Duration>,
    service_removed: Vec<Duration>,
}

impl Changes {
    fn added(&self) -> &[Duration] {
        &self.added
    }
    fn removed(&self) -> &[Duration] {
        &self.removed
    }
    fn service_added(&self) -> &[Duration] {
        &self.service_added
    }
    fn service_removed(&self) -> &[Duration] {
        &self.service_removed
    }
}

/// The service whose backend comes and goes, and the table with that backend added.
fn changed(table: &LbTable, services: u32) -> (Ipv4Addr, LbTable) {
    let vip = vip(services / 2);
    let mut grown = table.clone();
    grown
        .entry(vip)
        .or_default()
        .insert(backend(services / 2, BACKENDS));
    (vip, grown)
}

fn shoal_changes(dp: &mut Dataplane, table: &LbTable, services: u32) -> anyhow::Result<Changes> {
    let (vip, grown) = changed(table, services);
    let none = BTreeSet::new();
    let mut changes = Changes::default();
    let check = |report: ApplyReport, want: (usize, usize)| -> anyhow::Result<()> {
        ensure!(
            (report.backends_added, report.backends_removed) == want
                && report.vips_added + report.vips_removed == 0,
            "a one-backend change applied {report:?}"
        );
        Ok(())
    };
    // Settled first: the kernel frees the maps of the data paths dropped before in the
    // background, which would otherwise compete with the first changes.
    std::thread::sleep(SETTLE);
    for _ in 0..SERVICE_CHANGES {
        for (to, times, want) in [
            (&grown, &mut changes.service_added, (1, 0)),
            (table, &mut changes.service_removed, (0, 1)),
        ] {
            let started = Instant::now();
            let report = dp
                .lb_mut()
                .apply_service(vip, &to[&vip], &none)
                .context("one-service change")?;
            times.push(started.elapsed());
            check(report, want)?;
        }
    }
    for _ in 0..CHANGES {
        for (to, times, want) in [
            (&grown, &mut changes.added, (1, 0)),
            (table, &mut changes.removed, (0, 1)),
        ] {
            let started = Instant::now();
            let report = dp.lb_mut().apply(to).context("whole-table change")?;
            times.push(started.elapsed());
            check(report, want)?;
        }
    }
    Ok(changes)
}

fn nft_changes(netns: &Path, table: &LbTable, services: u32) -> anyhow::Result<Changes> {
    let (vip, grown) = changed(table, services);
    let added = format!(": {}", backend(services / 2, BACKENDS));
    let mut changes = Changes::default();
    for round in 0..CHANGES {
        for (to, times, present) in [
            (&grown, &mut changes.added, true),
            (table, &mut changes.removed, false),
        ] {
            let script = nft_lb::set_service(vip, &to[&vip]);
            times.push(nft_lb::apply(netns, &script).context("one-service change")?);
            // Listing one chain fetches the whole ruleset (6-7 s at 10,000 VIPs), so a large
            // table is checked once; nft exits non-zero on any failed transaction anyway.
            if services <= SMALL || (round == 0 && present) {
                let listed = nft_lb::list_service(netns, vip)?;
                ensure!(
                    listed.contains(&added) == present,
                    "the change did not take effect:\n{listed}"
                );
            }
        }
    }
    Ok(changes)
}

/// `services` VIPs (10.200.0.0 up), each with `BACKENDS` backends of its own.
fn table(services: u32) -> LbTable {
    (0..services)
        .map(|i| (vip(i), (0..BACKENDS).map(|j| backend(i, j)).collect()))
        .collect()
}

fn vip(service: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + service)
}

/// Backend `j` of `service`: 16 addresses per service from 10.0.0.1 (room for the one a
/// change adds), so no two services share one.
fn backend(service: u32, j: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + service * 16 + j)
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}
