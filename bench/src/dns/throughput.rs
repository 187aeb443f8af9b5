//! Queries per second and latency: the 1-node swarm, the rounds of the three servers back to
//! back, and the report.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Context as _;
use shoal_tests::{Cluster, task_net::task_netns};

use super::{
    CLIENTS, DNSMASQ, FIXED_QPS, IDLE_SAMPLE, NETWORK, ROUNDS, RR_REPLICAS, SERVERS, SHOAL,
    UNBOUND, WEB_REPLICAS, WHOAMI_PORT,
    measure::{Round, Usage, clock_ticks, measure},
    peers::{Peers, wait_answers, zone},
    resolver::Resolver,
};
use crate::support::{cli, create_whoami, network_id, running, version, vip};

pub(super) fn throughput() -> anyhow::Result<String> {
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);
    cli(&cluster, 0, &["network", "create", NETWORK])?;
    create_whoami(
        &cluster,
        Some(NETWORK),
        "web",
        WEB_REPLICAS,
        WHOAMI_PORT,
        &[],
    )?;
    create_whoami(
        &cluster,
        Some(NETWORK),
        "rr",
        RR_REPLICAS,
        WHOAMI_PORT,
        &["--endpoint-mode", "dnsrr"],
    )?;
    let web = running(&cluster, "web", WEB_REPLICAS)?;
    let rr = running(&cluster, "rr", RR_REPLICAS)?;
    let network = network_id(&cluster, NETWORK)?;
    let vip = vip(&cluster, "web", &network)?;
    let zone = zone(&[("web", Some(vip), &web), ("rr", None, &rr)]);
    let asker = &web[0];
    let netns = task_netns(&cluster.nodes[asker.node].state_dir(), &asker.id);
    let agent = cluster.nodes[asker.node]
        .pid()
        .context("the agent is not running")?;

    let mut resolver = Resolver::new(&netns)?;
    wait_answers(&mut resolver, SHOAL, &zone, "shoal")?;
    let mut peers = Peers::start(&netns, &zone)?;
    wait_answers(&mut resolver, DNSMASQ, &zone, "dnsmasq").map_err(|e| peers.explain(e))?;
    wait_answers(&mut resolver, UNBOUND, &zone, "unbound").map_err(|e| peers.explain(e))?;
    let queries = peers.dir.join("queries.txt");
    let names: Vec<&str> = zone.keys().map(String::as_str).collect();
    let ticks = clock_ticks();
    // The agent's own background work, which its CPU time below includes.
    let before = Usage::of(agent, ticks)?;
    std::thread::sleep(IDLE_SAMPLE);
    let idle = Usage::of(agent, ticks)?.since(&before).cpu / IDLE_SAMPLE.as_secs_f64() * 100.0;

    let mut rounds: BTreeMap<&str, Vec<Round>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for (name, addr) in SERVERS {
            let pid = if name == "shoal" {
                agent
            } else {
                peers.pid(name)?
            };
            let round = measure(&netns, addr, pid, ticks, &queries, &names, &mut resolver)
                .with_context(|| format!("measuring {name}"))
                .map_err(|e| peers.explain(e))?;
            rounds.entry(name).or_default().push(round);
        }
    }
    // The embedded server must still answer everything right after being flooded.
    wait_answers(&mut resolver, SHOAL, &zone, "shoal, after the runs")?;
    peers.check().map_err(|e| peers.explain(e))?;
    let versions = [version("dnsmasq", "--version"), version("unbound", "-V")];
    let dnsperf = version("dnsperf", "-h");
    drop(peers);
    drop(cluster);

    let medians: BTreeMap<&str, Round> = rounds
        .iter()
        .map(|(name, rounds)| (*name, Round::median(rounds)))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dns: shoal's embedded server vs {} and {}, all in one task's netns on 1 node; {} names \
         ({NETWORK}: web x{WEB_REPLICAS} vip, rr x{RR_REPLICAS} dnsrr); {dnsperf}; median of \
         {ROUNDS} rounds",
        versions[0],
        versions[1],
        zone.len()
    );
    let _ = writeln!(
        out,
        "{:<16} {:>42} | {:>37} | {:>16}",
        "",
        format!("dnsperf, {CLIENTS} clients, no limit"),
        format!("dnsperf -v at {FIXED_QPS} qps"),
        "1 in flight"
    );
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>5} {:>6} {:>8} {:>11} | {:>6} {:>6} {:>6} {:>7} {:>7} | {:>7} {:>8}",
        "server",
        "qps",
        "bad",
        "CPU %",
        "CPU us/q",
        "switches/q",
        "avg us",
        "p50",
        "p99",
        "max",
        "lost",
        "qps",
        "p50 us"
    );
    let row = |name: &str, r: &Round, bad: String, lost: String, ratio: bool| {
        let p = if ratio { 2 } else { 1 };
        let q = if ratio { 2 } else { 0 };
        format!(
            "{name:<16} {:>8.q$} {bad:>5} {:>6.q$} {:>8.p$} {:>11.2} | {:>6.p$} {:>6.p$} {:>6.p$} \
             {:>7.q$} {lost:>7} | {:>7.q$} {:>8.p$}\n",
            r.qps,
            r.cpu_percent,
            r.cpu_us_per_query,
            r.switches_per_query,
            r.avg_us,
            r.p50_us,
            r.p99_us,
            r.max_us,
            r.serial_qps,
            r.serial_p50_us,
        )
    };
    for (name, _) in SERVERS {
        let r = medians.get(name).copied().unwrap_or_default();
        out.push_str(&row(
            name,
            &r,
            r.sat_bad.to_string(),
            r.fixed_lost.to_string(),
            false,
        ));
    }
    let shoal = medians.get("shoal").copied().unwrap_or_default();
    for peer in ["dnsmasq", "unbound"] {
        let p = medians.get(peer).copied().unwrap_or_default();
        let ratio = Round {
            qps: shoal.qps / p.qps,
            cpu_percent: shoal.cpu_percent / p.cpu_percent,
            cpu_us_per_query: shoal.cpu_us_per_query / p.cpu_us_per_query,
            switches_per_query: shoal.switches_per_query / p.switches_per_query,
            avg_us: shoal.avg_us / p.avg_us,
            p50_us: shoal.p50_us / p.p50_us,
            p99_us: shoal.p99_us / p.p99_us,
            max_us: shoal.max_us / p.max_us,
            serial_qps: shoal.serial_qps / p.serial_qps,
            serial_p50_us: shoal.serial_p50_us / p.serial_p50_us,
            ..Round::default()
        };
        out.push_str(&row(
            &format!("shoal / {peer}"),
            &ratio,
            String::new(),
            String::new(),
            true,
        ));
    }
    let _ = writeln!(
        out,
        "shoal's CPU is the whole agent's, which uses {idle:.1}% of a core at rest"
    );
    let goal = shoal.qps / medians.get("dnsmasq").map_or(f64::NAN, |d| d.qps);
    let _ = writeln!(
        out,
        "goal: shoal >= 1.5x dnsmasq qps: {goal:.2}x ({})",
        if goal >= 1.5 { "met" } else { "not met" }
    );
    let _ = writeln!(out, "per round (qps / p99 us / CPU us per query):");
    for (name, _) in SERVERS {
        let line: Vec<String> = rounds
            .get(name)
            .map(|rs| {
                rs.iter()
                    .map(|r| format!("{:.0} / {:.0} / {:.1}", r.qps, r.p99_us, r.cpu_us_per_query))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(out, "  {name:<8} {}", line.join(", "));
    }
    Ok(out)
}
