//! The network DB's push-pull TCP on 7946 against strangers: 200 connections from the outside
//! client, each announcing a 64 MiB frame and sending 8 MiB of garbage without the gossip key,
//! must not grow the agent's memory (nothing is allocated before the sealed header opens), and
//! the real members keep converging meanwhile.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use shoal_dataplane::netns::run_in;
use shoal_tests::{Cluster, agent::shoal_bin, task_net::http_from, wait_until};

use crate::support::{ok, running};

const PORT: u16 = 8080;
const CONNECTIONS: usize = 200;
/// What each connection claims to send: the largest frame push-pull accepts.
const ANNOUNCED: u32 = 64 << 20;
/// What each connection actually sends after the announcement.
const SENT: usize = 8 << 20;
/// How much the agent's peak RSS may grow under the flood.
const MAX_GROWTH_KIB: u64 = 50 << 10;

/// A `Vm*` line of /proc/<pid>/status, in KiB.
fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

/// One round: `CONNECTIONS` connections opened from `netns` at once, each announcing
/// `ANNOUNCED` bytes and writing `SENT` bytes of garbage (or until the agent closes it). All
/// are held open until every writer is done, so an agent that buffers them holds them all.
/// Returns how many connections were opened.
fn flood(netns: &Path, to: SocketAddr) -> usize {
    let streams: Vec<TcpStream> = run_in(netns, || {
        (0..CONNECTIONS)
            .filter_map(|_| TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok())
            .collect()
    })
    .unwrap();
    let opened = streams.len();
    let garbage: Vec<u8> = (0..64 << 10)
        .map(|i: u32| (i.wrapping_mul(37) >> 3) as u8)
        .collect();
    let held: Vec<TcpStream> = std::thread::scope(|s| {
        let writers: Vec<_> = streams
            .into_iter()
            .map(|mut stream| {
                let garbage = &garbage;
                s.spawn(move || {
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                    let mut left = SENT;
                    let mut result = stream.write_all(&ANNOUNCED.to_be_bytes());
                    while result.is_ok() && left > 0 {
                        let n = left.min(garbage.len());
                        result = stream.write_all(&garbage[..n]);
                        left -= n;
                    }
                    stream
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    drop(held);
    opened
}

#[test]
fn push_pull_flood_from_a_stranger_allocates_nothing_and_members_converge() {
    let cluster = Cluster::start(3);
    cluster.form_swarm(1);

    // --- 1. a 3-replica service on an overlay network, one task per node
    ok(&cluster, 0, &["network", "create", "alpha"]);
    let bin = shoal_bin().display().to_string();
    let port = PORT.to_string();
    let create = [
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "3",
        "--network",
        "alpha",
        "--",
        &bin,
        "whoami",
        "--port",
        &port,
    ];
    ok(&cluster, 0, &create);
    let web = running(&cluster, "web", 3);
    let pid = cluster.nodes[0].pid().expect("node1's agent runs");
    let hwm_before = vm_kib(pid, "VmHWM");
    let rss_before = vm_kib(pid, "VmRSS");

    // --- 2. the flood on node1:7946 from the outside client, round after round until step 3
    //        is done (at least one full round)
    let gossip = SocketAddr::new(cluster.nodes[0].address.into(), 7946);
    let client = cluster.client_ns().path();
    let stop = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    let opened = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let attacker = s.spawn(|| {
            while rounds.load(Ordering::Relaxed) == 0 || !stop.load(Ordering::Relaxed) {
                opened.fetch_add(flood(Path::new(&client), gossip), Ordering::Relaxed);
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        });

        // --- 3. meanwhile gossip carries a new endpoint to every member
        ok(
            &cluster,
            0,
            &["service", "update", "--detach", "--replicas", "4", "web"],
        );
        let web4 = running(&cluster, "web", 4);
        let newest = web4
            .iter()
            .find(|t| web.iter().all(|o| o.id != t.id))
            .unwrap();
        for from in &web {
            wait_until(
                Duration::from_secs(20),
                &format!("TCP from node{} to the new task", from.node + 1),
                || http_from(&from.netns(&cluster), newest.addr(PORT)).map_err(|e| e.to_string()),
            );
        }
        stop.store(true, Ordering::Relaxed);
        attacker.join().unwrap();
    });

    // --- 4. node1's agent is alive and its peak RSS barely moved
    cluster.nodes[0].info();
    let hwm_after = vm_kib(pid, "VmHWM");
    let rss_after = vm_kib(pid, "VmRSS");
    let growth = hwm_after.saturating_sub(hwm_before);
    eprintln!(
        "gossip flood: {} rounds, {} connections opened; node1 VmHWM {hwm_before} -> \
         {hwm_after} KiB (+{growth} KiB), VmRSS {rss_before} -> {rss_after} KiB",
        rounds.load(Ordering::Relaxed),
        opened.load(Ordering::Relaxed),
    );
    assert!(
        opened.load(Ordering::Relaxed) > 0,
        "no connection to {gossip} was ever opened"
    );
    assert!(
        growth <= MAX_GROWTH_KIB,
        "node1's peak RSS grew by {growth} KiB under the flood (at most {MAX_GROWTH_KIB} \
         allowed): {hwm_before} -> {hwm_after} KiB"
    );
}
