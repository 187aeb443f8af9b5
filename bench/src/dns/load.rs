//! The query senders: dnsperf in a task's netns and its report, and our own client with one
//! query in flight.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{SERIAL_SECONDS, resolver::Resolver};
use crate::support::{nsenter, output};

/// Our own client, one query in flight (send, block on the answer, next name) for
/// `SERIAL_SECONDS`: answers per second and each round trip in seconds. Unlike `dnsperf -q 1`,
/// whose sender sleeps while its window is full, nothing here waits but the answer.
pub(super) fn serial(
    resolver: &mut Resolver,
    server: Ipv4Addr,
    names: &[&str],
) -> anyhow::Result<(f64, Vec<f64>)> {
    let mut round_trips = Vec::new();
    let started = Instant::now();
    let limit = Duration::from_secs(SERIAL_SECONDS.into());
    for name in names.iter().cycle() {
        let sent = Instant::now();
        if sent - started >= limit {
            break;
        }
        resolver.lookup(server, name)?;
        round_trips.push(sent.elapsed().as_secs_f64());
    }
    let qps = round_trips.len() as f64 / started.elapsed().as_secs_f64();
    Ok((qps, round_trips))
}

/// dnsperf in `netns` against `server`, returning its report.
pub(super) fn dnsperf(
    netns: &Path,
    server: Ipv4Addr,
    queries: &Path,
    args: &[&str],
) -> anyhow::Result<String> {
    let out = output(
        nsenter(netns, "dnsperf")
            .args(["-s", &server.to_string(), "-d"])
            .arg(queries)
            .args(["-t", "1"])
            .args(args)
            .stdin(Stdio::null()),
    )
    .context("is dnsperf installed? run scripts/setup.sh")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The summary dnsperf prints at the end.
pub(super) struct Stats {
    pub(super) completed: u64,
    pub(super) lost: u64,
    pub(super) noerror: u64,
    pub(super) qps: f64,
}

impl Stats {
    pub(super) fn parse(report: &str) -> anyhow::Result<Stats> {
        let field = |label: &str| {
            report
                .lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .and_then(|rest| rest.split_whitespace().next())
                .with_context(|| format!("no {label:?} in dnsperf's report:\n{report}"))
        };
        let noerror = report
            .lines()
            .find_map(|l| l.trim().strip_prefix("Response codes:"))
            .and_then(|codes| {
                let words: Vec<&str> = codes.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "NOERROR")?;
                words.get(at + 1)?.parse().ok()
            })
            .unwrap_or(0);
        Ok(Stats {
            completed: field("Queries completed:")?.parse()?,
            lost: field("Queries lost:")?.parse()?,
            noerror,
            qps: field("Queries per second:")?.parse()?,
        })
    }
}

/// Seconds per answered query from `dnsperf -v` (`> NOERROR web A 0.000123`), and how many
/// timed out (`> T web A`).
pub(super) fn per_query_latencies(report: &str) -> (Vec<f64>, u64) {
    let mut latencies = Vec::new();
    let mut timed_out = 0;
    for line in report.lines().filter_map(|l| l.strip_prefix("> ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"T") {
            timed_out += 1;
        } else if let Some(seconds) = words.last().and_then(|w| w.parse::<f64>().ok()) {
            latencies.push(seconds);
        }
    }
    (latencies, timed_out)
}
