//! The embedded DNS server (127.0.0.11:53 in every task) against dnsmasq and unbound, and how
//! fast its records follow the cluster.
//!
//! Queries per second and latency: a 1-node swarm runs `web` (10 replicas, vip) and `rr`
//! (5 replicas, dnsrr) on an overlay network. Inside one task's network namespace, dnsmasq
//! (127.0.0.12) and unbound (127.0.0.13) serve the same names, from local records, that shoal
//! answers from the network DB, and dnsperf, also in that namespace, measures the three back to
//! back with the same query file and client settings, round after round.
//!
//! Record propagation: a 3-node swarm (1 manager) scales `web` up and down. A task on node1
//! polls `tasks.web` every millisecond while `bridge monitor fdb` follows node1's sandbox: the
//! FDB entry of a remote task and its DNS record both follow the same network DB event, so
//! their time difference is what the DNS path adds on top of the network DB.
//!
//! # Layout
//! - `throughput`: the queries-per-second and latency benchmark: its swarm, rounds and report.
//! - `measure`: one server's three runs in one round, and the CPU time and context switches
//!   they cost it.
//! - `load`: the query senders: dnsperf and its report, and our own one-in-flight client.
//! - `peers`: the names under test, and dnsmasq and unbound serving them in a task's netns.
//! - `propagation`: the record propagation benchmark: scaling `web`, DNS polls vs FDB events.
//! - `resolver`: a minimal DNS client (A queries over UDP), for checking answers and polling.

mod load;
mod measure;
mod peers;
mod propagation;
mod resolver;
mod throughput;

use std::{net::Ipv4Addr, time::Duration};

use anyhow::Context as _;

/// Rounds of the three servers back to back; every number is the median over rounds.
const ROUNDS: usize = 3;
/// Saturation run: dnsperf with this many clients, no rate limit, for this long.
const SATURATE_SECONDS: u32 = 5;
const CLIENTS: u32 = 4;
/// Latency run: a fixed rate well under every server's capacity, each answer's latency
/// reported by dnsperf (`-v`).
const FIXED_QPS: u32 = 2_000;
const FIXED_SECONDS: u32 = 4;
/// How long the agent's CPU use at rest is sampled before the runs.
const IDLE_SAMPLE: Duration = Duration::from_secs(3);
/// Serial run: our own client, one query in flight at a time: the round trip with no queueing.
const SERIAL_SECONDS: u32 = 2;

const NETWORK: &str = "bench_net";
const WEB_REPLICAS: usize = 10;
const RR_REPLICAS: usize = 5;
const WHOAMI_PORT: &str = "8080";

const SHOAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const DNSMASQ: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12);
const UNBOUND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 13);
const SERVERS: [(&str, Ipv4Addr); 3] =
    [("shoal", SHOAL), ("dnsmasq", DNSMASQ), ("unbound", UNBOUND)];
/// The peers' TTL, as shoal's.
const TTL: u32 = 600;

/// Propagation: `web` is scaled between these, one task per node at the low end.
const PROPAGATION_LOW: usize = 3;
const PROPAGATION_HIGH: usize = 9;
const PROPAGATION_ROUNDS: usize = 3;
const POLL: Duration = Duration::from_millis(1);

/// Bound on every wait (tasks running, records answered, a scale converging).
const TIMEOUT: Duration = Duration::from_secs(60);
/// After DNS shows the new set, how long FDB events of remote tasks are still awaited (the
/// agent also re-syncs sandboxes from the network DB every 5 s).
const FDB_GRACE: Duration = Duration::from_secs(10);

pub fn run() -> anyhow::Result<()> {
    print!(
        "{}",
        throughput::throughput().context("queries per second and latency")?
    );
    println!();
    print!(
        "{}",
        propagation::propagation().context("record propagation")?
    );
    Ok(())
}
