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

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use shoal_dataplane::lb::ApplyReport;
use shoal_dataplane::{Dataplane, LbTable};
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
    Ok(())
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
