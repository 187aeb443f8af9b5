//! One server's three runs in one round (saturation, fixed rate, one in flight), what they
//! yield, and the CPU time and context switches they cost the server.

use std::{net::Ipv4Addr, path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use super::{
    CLIENTS, FIXED_QPS, FIXED_SECONDS, SATURATE_SECONDS,
    load::{Stats, dnsperf, per_query_latencies, serial},
    resolver::Resolver,
};
use crate::support::median;

/// One server's results in one round.
#[derive(Clone, Copy, Default)]
pub(super) struct Round {
    /// Saturation run: answers per second, queries lost or answered other than NOERROR, and
    /// the server process's CPU time (share of one core, and per answered query).
    pub(super) qps: f64,
    pub(super) sat_bad: u64,
    pub(super) cpu_percent: f64,
    pub(super) cpu_us_per_query: f64,
    /// Context switches of the server's threads per answered query (saturation run).
    pub(super) switches_per_query: f64,
    /// Fixed-rate run, in microseconds, and queries lost.
    pub(super) avg_us: f64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) max_us: f64,
    pub(super) fixed_lost: u64,
    /// Serial run (our own client, one query in flight): answers per second, median round trip.
    pub(super) serial_qps: f64,
    pub(super) serial_p50_us: f64,
}

impl Round {
    pub(super) fn median(rounds: &[Round]) -> Round {
        let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        Round {
            qps: m(|r| r.qps),
            sat_bad: rounds.iter().map(|r| r.sat_bad).sum(),
            cpu_percent: m(|r| r.cpu_percent),
            cpu_us_per_query: m(|r| r.cpu_us_per_query),
            switches_per_query: m(|r| r.switches_per_query),
            avg_us: m(|r| r.avg_us),
            p50_us: m(|r| r.p50_us),
            p99_us: m(|r| r.p99_us),
            max_us: m(|r| r.max_us),
            fixed_lost: rounds.iter().map(|r| r.fixed_lost).sum(),
            serial_qps: m(|r| r.serial_qps),
            serial_p50_us: m(|r| r.serial_p50_us),
        }
    }
}

/// The three runs against one server (process `pid`, whose CPU time is read around the
/// saturation run).
pub(super) fn measure(
    netns: &Path,
    server: Ipv4Addr,
    pid: u32,
    ticks: f64,
    queries: &Path,
    names: &[&str],
    resolver: &mut Resolver,
) -> anyhow::Result<Round> {
    let before = Usage::of(pid, ticks)?;
    let started = Instant::now();
    let saturated = dnsperf(
        netns,
        server,
        queries,
        &[
            "-c",
            &CLIENTS.to_string(),
            "-l",
            &SATURATE_SECONDS.to_string(),
        ],
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    let used = Usage::of(pid, ticks)?.since(&before);
    let sat = Stats::parse(&saturated)?;
    let answered = sat.completed.max(1) as f64;

    let fixed = dnsperf(
        netns,
        server,
        queries,
        &[
            "-c",
            "1",
            "-Q",
            &FIXED_QPS.to_string(),
            "-l",
            &FIXED_SECONDS.to_string(),
            "-v",
        ],
    )?;
    let stats = Stats::parse(&fixed)?;
    let (mut latencies, timed_out) = per_query_latencies(&fixed);
    if latencies.is_empty() {
        bail!("no latency reported at {FIXED_QPS} qps:\n{fixed}");
    }
    latencies.sort_by(f64::total_cmp);

    let (serial_qps, mut round_trips) = serial(resolver, server, names)?;
    round_trips.sort_by(f64::total_cmp);
    Ok(Round {
        qps: sat.qps,
        sat_bad: sat.lost + sat.completed.saturating_sub(sat.noerror),
        cpu_percent: used.cpu / elapsed * 100.0,
        cpu_us_per_query: used.cpu / answered * 1e6,
        switches_per_query: used.switches / answered,
        avg_us: latencies.iter().sum::<f64>() / latencies.len() as f64 * 1e6,
        p50_us: percentile(&latencies, 0.50) * 1e6,
        p99_us: percentile(&latencies, 0.99) * 1e6,
        max_us: latencies.last().copied().unwrap_or(f64::NAN) * 1e6,
        fixed_lost: stats.lost.max(timed_out),
        serial_qps,
        serial_p50_us: percentile(&round_trips, 0.50) * 1e6,
    })
}

/// What a process has used so far: CPU time (user + system, all threads, exited ones
/// included), and context switches, voluntary or not, of its live threads.
pub(super) struct Usage {
    pub(super) cpu: f64,
    switches: f64,
}

impl Usage {
    pub(super) fn of(pid: u32, ticks: f64) -> anyhow::Result<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start at field 3; utime is 14,
        // stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| -> anyhow::Result<f64> {
            Ok(fields
                .get(n - 3)
                .with_context(|| format!("/proc/{pid}/stat: no field {n}"))?
                .parse::<f64>()?)
        };
        let mut switches = 0.0;
        for thread in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
            let status = std::fs::read_to_string(thread.path().join("status")).unwrap_or_default();
            switches += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum::<f64>();
        }
        Ok(Usage {
            cpu: (field(14)? + field(15)?) / ticks,
            switches,
        })
    }

    pub(super) fn since(&self, before: &Usage) -> Usage {
        Usage {
            cpu: self.cpu - before.cpu,
            switches: self.switches - before.switches,
        }
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
pub(super) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The value at quantile `q` of sorted `v`.
fn percentile(v: &[f64], q: f64) -> f64 {
    let at = ((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1));
    v.get(at).copied().unwrap_or(f64::NAN)
}
