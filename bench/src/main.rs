//! shoal's benchmarks. Each one measures shoal and a floor or a real peer in the same run, on
//! the same machine, and prints the ratio. Timing goals live here, never in tests.
//!
//! Usage: `shoal-bench <benchmark>` (as root). See bench/README.md for what each number means.
//!
//! # Layout
//! - `dns`: the embedded DNS server vs dnsmasq and unbound (dnsperf), and record propagation.
//! - `program_cost`: per-packet cost of each eBPF program against a do-nothing floor.
//! - `lb_program_cost`: per-packet cost of each load-balancer path (new flow, established,
//!   reply, pass-through) against the same floor.
//! - `mesh_program_cost`: per-packet cost of the published ports' XDP and reply programs on
//!   each path (new connection, established, host mode, reply, pass-through) against floors.
//! - `mesh_throughput`: requests/s and connections/s from outside to a published port vs
//!   nftables DNAT + masquerade and HAProxy on the same node.
//! - `lb_map_update`: programming 10,000 VIPs x 10 backends, and one change, vs `nft -f`.
//! - `leader_beat`: the leader's work per heartbeat and per Raft write, 100 vs 10,000 services.
//! - `vip_throughput`: connections/s and requests/s through a VIP vs nftables DNAT and HAProxy.
//! - `overlay_throughput`: iperf3 TCP task to task over VXLAN vs node to node on the underlay.
//! - `raft_writes`: Raft write throughput and commit latency with 3 managers.
//! - `scheduler`: the orchestrator placing 1,000 replicas on 100 simulated nodes.
//! - `service_create`: `service create --replicas 50` to all running, on 3 real nodes.
//! - `sock_lb_cost`: what the socket-level balancer adds to a `connect(2)` it does not balance.
//! - `support`: helpers the benchmarks share (commands in a netns, services on the fixture,
//!   program-cost tables, wrk rounds and the HAProxy peer);
//!   `nft_lb`: the kube-proxy-style nftables peer of the load balancer.
//! - `connect_loop`: the throughput benchmarks' connection-rate client (`shoal-bench
//!   connect-loop`, run by them inside a peer's netns; not a benchmark of its own).
//! - `zero_downtime`: failed requests during rolling updates, scale-down, drain and late
//!   binding, shoal's stop order vs an instant withdraw-and-kill.
#![allow(clippy::print_stdout, reason = "a benchmark's output is its report")]

mod connect_loop;
mod dns;
mod gossip;
mod lb_map_update;
mod lb_program_cost;
mod leader_beat;
mod mesh_program_cost;
mod mesh_throughput;
mod nft_lb;
mod overlay_throughput;
mod program_cost;
mod raft_writes;
mod scheduler;
mod service_create;
mod sock_lb_cost;
mod support;
mod vip_throughput;
mod zero_downtime;

use std::process::ExitCode;

const BENCHMARKS: &[(&str, &str)] = &[
    (
        "dns",
        "embedded DNS qps and p99 vs dnsmasq and unbound (dnsperf, task netns), record propagation",
    ),
    (
        "gossip",
        "network DB: endpoint change -> all members, p50/max, 3/100/1,000 members on loopback",
    ),
    (
        "lb-map-update",
        "programming 10,000 VIPs x 10 backends, and one change at 100/10,000, vs nft -f",
    ),
    (
        "lb-program-cost",
        "per-packet cost of each LB path (new flow, established, reply, not a VIP) vs a floor",
    ),
    (
        "leader-beat",
        "the leader's work per heartbeat and per Raft write, 100 vs 10,000 services (in process)",
    ),
    (
        "mesh-program-cost",
        "per-packet cost of each published-port path (XDP forward, host mode, reply) vs floors",
    ),
    (
        "mesh-throughput",
        "conns/s and requests/s to a published port vs nftables DNAT and HAProxy (wrk, 3 nodes)",
    ),
    (
        "overlay-throughput",
        "TCP task to task across nodes over the overlay vs the bare underlay (iperf3, netns)",
    ),
    (
        "program-cost",
        "per-packet cost of each eBPF program vs a do-nothing floor (BPF_PROG_TEST_RUN)",
    ),
    (
        "raft-writes",
        "Raft write throughput and p50/p99 commit latency, 3 managers (netns cluster)",
    ),
    (
        "scheduler",
        "orchestrator placements/s for 1,000 replicas on 100 nodes, constraint floor, steady pass",
    ),
    (
        "service-create",
        "service create --replicas 50 to all running on 3 nodes, vs unshare x50 (netns cluster)",
    ),
    (
        "sock-lb-cost",
        "UDP connect(2) with the socket-level balancer attached vs without, per kind of address",
    ),
    (
        "vip-throughput",
        "conns/s and requests/s through a VIP vs nftables DNAT and HAProxy (wrk, 3 nodes)",
    ),
    (
        "zero-downtime",
        "failed requests during updates, scale-down, drain, late binding vs instant stop (3 nodes)",
    ),
];

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_default();
    let result = match name.as_str() {
        "connect-loop" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            connect_loop::run(&args)
        }
        "dns" => dns::run(),
        "gossip" => gossip::run(),
        "lb-map-update" => lb_map_update::run(),
        "lb-program-cost" => lb_program_cost::run(),
        "leader-beat" => leader_beat::run(),
        "mesh-program-cost" => mesh_program_cost::run(),
        "mesh-throughput" => mesh_throughput::run(),
        "overlay-throughput" => overlay_throughput::run(),
        "program-cost" => program_cost::run(),
        "raft-writes" => raft_writes::run(),
        "scheduler" => scheduler::run(),
        "service-create" => service_create::run(),
        "sock-lb-cost" => sock_lb_cost::run(),
        "vip-throughput" => vip_throughput::run(),
        "zero-downtime" => zero_downtime::run(),
        _ => {
            eprintln!("usage: shoal-bench <benchmark>");
            for (name, what) in BENCHMARKS {
                eprintln!("  {name:<18} {what}");
            }
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
