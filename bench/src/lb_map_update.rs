//! How long programming the VIP load balancer takes: a full table of 10,000 VIPs x 10
//! backends, and one service's change (a backend added, then removed) with 100 and with
//! 10,000 VIPs in place. shoal: one `LoadBalancer::apply` of the whole desired table into a
//! private (unpinned) `Dataplane`, as the agent calls it. The peer: the same table as
//! kube-proxy's nftables mode would write it (`nft_lb`), loaded with `nft -f` in a scratch
//! network namespace, and the same change written as kube-proxy writes it (the one service's
//! chain flushed and refilled).

use std::{
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

pub fn run() -> anyhow::Result<()> {
    let large = table(LARGE);
    let small = table(SMALL);
    let netns = Netns::create(&format!("shoal-bench-nft-{}", std::process::id()));
    let ns = Path::new(&netns.path()).to_path_buf();

    // shoal: full loads, each into a fresh data path; the last one stays for the changes.
    let mut shoal_full = Vec::new();
    let mut dataplane = None;
    for _ in 0..FULL_RUNS {
        let mut dp = Dataplane::load(None).context("loading the eBPF programs")?;
        let started = Instant::now();
        let report = dp.lb_mut().apply(&large).context("full load")?;
        shoal_full.push(started.elapsed());
        let want = ApplyReport {
            vips_added: LARGE as usize,
            backends_added: (LARGE * BACKENDS) as usize,
            ..ApplyReport::default()
        };
        ensure!(report == want, "full load applied {report:?}");
        dataplane = Some(dp);
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
        "lb-map-update: VIPs x {BACKENDS} backends; shoal: one LoadBalancer::apply of the whole \
         table (private Dataplane); nftables: nft -f in a scratch netns, kube-proxy layout"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "", "shoal", "nftables", "shoal/nft"
    );
    let row = |what: &str, shoal: &[Duration], nft: &[Duration]| {
        let (shoal, nft) = (median(shoal), median(nft));
        println!(
            "{what:<44} {:>10} {:>10} {:>10.3}",
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
    let sizes = [
        (SMALL, &shoal_small, &nft_small),
        (LARGE, &shoal_large, &nft_large),
    ];
    for (what, pick) in [
        (
            "one backend added",
            Changes::added as fn(&Changes) -> &[Duration],
        ),
        ("one backend removed", Changes::removed),
    ] {
        let [at_small, at_large] = sizes.map(|(services, shoal, nft)| {
            row(
                &format!("{what}, {services} VIPs (median of {CHANGES})"),
                pick(shoal),
                pick(nft),
            )
        });
        println!(
            "{:<44} {:>10.1} {:>10.1}",
            format!("{what}: {LARGE} / {SMALL} VIPs"),
            at_large.0.as_secs_f64() / at_small.0.as_secs_f64(),
            at_large.1.as_secs_f64() / at_small.1.as_secs_f64()
        );
    }
    println!(
        "{:<44} {:>10} {:>10}",
        "nft -f of an empty script (the process)",
        "",
        format!("{:.2?}", median(&nft_empty))
    );
    Ok(())
}

/// Timed changes of one service: one backend added, then removed again.
struct Changes {
    added: Vec<Duration>,
    removed: Vec<Duration>,
}

impl Changes {
    fn added(&self) -> &[Duration] {
        &self.added
    }
    fn removed(&self) -> &[Duration] {
        &self.removed
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
    let (_, grown) = changed(table, services);
    let mut changes = Changes {
        added: Vec::new(),
        removed: Vec::new(),
    };
    for _ in 0..CHANGES {
        for (to, times, want) in [
            (&grown, &mut changes.added, (1, 0)),
            (table, &mut changes.removed, (0, 1)),
        ] {
            let started = Instant::now();
            let report = dp.lb_mut().apply(to).context("one-service change")?;
            times.push(started.elapsed());
            ensure!(
                (report.backends_added, report.backends_removed) == want
                    && report.vips_added + report.vips_removed == 0,
                "a one-backend change applied {report:?}"
            );
        }
    }
    Ok(changes)
}

fn nft_changes(netns: &Path, table: &LbTable, services: u32) -> anyhow::Result<Changes> {
    let (vip, grown) = changed(table, services);
    let added = format!(": {}", backend(services / 2, BACKENDS));
    let mut changes = Changes {
        added: Vec::new(),
        removed: Vec::new(),
    };
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
