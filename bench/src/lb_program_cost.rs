//! Per-packet cost of the VIP load balancer's tc programs on each of their paths (new flow,
//! established flow, reply, traffic that is not theirs), measured by the kernel with
//! BPF_PROG_TEST_RUN against a minimal parse-and-pass tc program (the floor).
//!
//! BPF_PROG_TEST_RUN runs a program `repeat` times on one skb, and the NAT rewrites that skb:
//! after one DNAT the frame is addressed to the backend, so repeating a frame to a VIP would
//! measure the pass-through path from the second run on. Two setups get around it:
//!
//! - Repeated runs (as `program-cost`): two VIPs that are each other's only backend, and one
//!   client with a flow to each. A data segment to one VIP is rewritten to the other, whose
//!   flow is just as established, so every run takes the whole established path (VIP lookup,
//!   flow lookup, liveness check, counters, DNAT with checksums), and two runs give the frame
//!   back byte for byte. The reply path works the same way with the two reply entries.
//! - Single runs: a flow is new only once, so the new-flow path cannot be repeated. Each of
//!   `FLOWS` distinct flows is sent once (repeat 1) through every path, and the kernel's time
//!   for that one run is kept; the floor is measured the same way, on the same frames.
//!
//! Every measurement also checks, from the load balancer's own counters, that each run took
//! the path it is named after.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, ensure};
use etherparse::PacketBuilder;
use shoal_common::{
    lb::{LbEvent, mac_for_ip},
    programs,
};
use shoal_dataplane::{Dataplane, LbTable};

use crate::{
    program_cost::{REPEAT, ROUNDS, median_ns},
    support::{cost_header as header, cost_line as line, median_run_ns},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
/// Repeated runs: two VIPs, each the other's only backend.
const PING: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 254);
const PONG: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 253);
/// Single runs: a service as the agent programs one, a VIP and three tasks.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 254);
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 0, 1, 2),
    Ipv4Addr::new(10, 0, 1, 3),
    Ipv4Addr::new(10, 0, 1, 4),
];
/// A task that is no VIP: task-to-task traffic the programs must pass untouched.
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);
const PORT: u16 = 8080;
const CLIENT_PORT: u16 = 40000;
/// Single runs: distinct flows (client ports from `FIRST_PORT`), each sent once per path. Two
/// flow entries each, well under the flow map's capacity, so none is evicted.
const FLOWS: u16 = 20_000;
const FIRST_PORT: u16 = 20_000;
/// What a data segment carries (about an HTTP request).
const PAYLOAD: [u8; 100] = [b'x'; 100];
const ISN: u32 = 1_000;
/// The kernel's IPv4 destination offset in an untagged Ethernet frame.
const IP_DST: std::ops::Range<usize> = 30..34;

pub fn run() -> anyhow::Result<()> {
    let mut dataplane = Dataplane::load(None).context("loading the eBPF programs")?;
    let table: LbTable = [
        (PING, [PONG].into()),
        (PONG, [PING].into()),
        (VIP, BACKENDS.into()),
    ]
    .into();
    dataplane
        .lb_mut()
        .apply(&table)
        .context("programming the VIPs")?;
    let dp = &dataplane;
    repeated(dp)?;
    println!();
    single(dp)
}

/// Large repeat counts on the two VIPs that are each other's backend.
fn repeated(dp: &Dataplane) -> anyhow::Result<()> {
    // One flow to each VIP, from the same client port: each DNATs to the other VIP.
    for (vip, backend) in [(PING, PONG), (PONG, PING)] {
        let syn = tcp(CLIENT, vip, CLIENT_PORT, PORT, true);
        let out = dp.test_run(programs::TC_INGRESS, &syn, 1)?;
        ensure!(
            out.return_value == TC_ACT_OK && out.data_out[IP_DST] == backend.octets(),
            "the SYN to {vip} was not DNAT-ed to {backend}"
        );
    }
    let data = tcp(CLIENT, PING, CLIENT_PORT, PORT, false);
    let reply = tcp(PONG, CLIENT, PORT, CLIENT_PORT, false);
    for (program, frame) in [(programs::TC_INGRESS, &data), (programs::TC_EGRESS, &reply)] {
        ensure!(
            dp.test_run(program, frame, 2)?.data_out == *frame,
            "{program}: two runs did not give the frame back (the ping-pong is broken)"
        );
    }
    let runs = u64::from(REPEAT) * ROUNDS as u64;
    let rows = [
        Row {
            path: "established: data segment to a VIP",
            program: programs::TC_INGRESS,
            frame: data,
            counts: Counted {
                packets: runs,
                ..Counted::default()
            },
        },
        Row {
            path: "reply: backend -> client (reverse NAT)",
            program: programs::TC_EGRESS,
            frame: reply,
            counts: Counted {
                packets: runs,
                replies: runs,
                ..Counted::default()
            },
        },
        Row {
            path: "not a VIP: task -> task",
            program: programs::TC_INGRESS,
            frame: tcp(CLIENT, OTHER, CLIENT_PORT, PORT, false),
            counts: Counted::default(),
        },
        Row {
            // A connection the socket-level balancer (shoal_connect4) sent straight to its
            // backend: its segments carry the backend's address, no VIP, and must cost the
            // parse floor plus the one VIP lookup that misses.
            path: "socket-balanced: established (not a VIP)",
            program: programs::TC_INGRESS,
            frame: tcp(CLIENT, BACKENDS[0], CLIENT_PORT, PORT, false),
            counts: Counted::default(),
        },
        Row {
            path: "not a reply: task -> task",
            program: programs::TC_EGRESS,
            frame: tcp(OTHER, CLIENT, PORT, CLIENT_PORT, false),
            counts: Counted::default(),
        },
    ];
    println!(
        "lb-program-cost, repeated: median of {ROUNDS} x {REPEAT} runs on one frame \
         ({}-byte TCP segment), floor {} on the same frame",
        rows[0].frame.len(),
        programs::TC_PARSE_FLOOR
    );
    header("ns/packet");
    for row in rows {
        let before = Counted::read(dp)?;
        let floor = median_ns(dp, programs::TC_PARSE_FLOOR, &row.frame)?;
        let measured = median_ns(dp, row.program, &row.frame)?;
        expect(dp, before, row.counts, row.path)?;
        line(row.path, row.program, measured, floor);
    }
    Ok(())
}

/// One run per flow and path, `FLOWS` flows to the three-backend VIP.
fn single(dp: &Dataplane) -> anyhow::Result<()> {
    let before = Counted::read(dp)?;
    let mut samples: [Vec<Duration>; 5] = Default::default();
    for port in (FIRST_PORT..).take(usize::from(FLOWS)) {
        let syn = tcp(CLIENT, VIP, port, PORT, true);
        samples[0].push(dp.test_run(programs::TC_PARSE_FLOOR, &syn, 1)?.duration);
        let new = dp.test_run(programs::TC_INGRESS, &syn, 1)?;
        let backend = Ipv4Addr::from(<[u8; 4]>::try_from(&new.data_out[IP_DST])?);
        ensure!(
            new.return_value == TC_ACT_OK && BACKENDS.contains(&backend),
            "the SYN from port {port} was not balanced"
        );
        samples[1].push(new.duration);
        let data = tcp(CLIENT, VIP, port, PORT, false);
        samples[2].push(dp.test_run(programs::TC_INGRESS, &data, 1)?.duration);
        let reply = tcp(backend, CLIENT, PORT, port, false);
        samples[3].push(dp.test_run(programs::TC_EGRESS, &reply, 1)?.duration);
        let other = tcp(CLIENT, OTHER, port, PORT, false);
        samples[4].push(dp.test_run(programs::TC_INGRESS, &other, 1)?.duration);
    }
    let flows = u64::from(FLOWS);
    let want = Counted {
        packets: 3 * flows,
        flows,
        replies: flows,
        ..Counted::default()
    };
    expect(dp, before, want, "single runs")?;

    let [floor, new, established, reply, other] = samples.map(|s| median_run_ns(&s));
    println!(
        "lb-program-cost, single runs: {FLOWS} distinct flows, each path run once per flow \
         (repeat 1), median over flows; floor {} once per flow",
        programs::TC_PARSE_FLOOR
    );
    header("ns/run");
    for (path, program, ns) in [
        (
            "new flow: SYN to a VIP (balanced)",
            programs::TC_INGRESS,
            new,
        ),
        (
            "established: first data segment",
            programs::TC_INGRESS,
            established,
        ),
        ("reply: first segment back", programs::TC_EGRESS, reply),
        ("not a VIP: task -> task", programs::TC_INGRESS, other),
    ] {
        line(path, program, ns, floor);
    }
    Ok(())
}

const TC_ACT_OK: u32 = 0;

/// A measured path: what runs on which frame, and what the counters must gain over it.
struct Row {
    path: &'static str,
    program: &'static str,
    frame: Vec<u8>,
    /// What the load balancer must count over the whole measurement (floor runs count
    /// nothing).
    counts: Counted,
}

/// Fails unless the load balancer counted exactly `want` since `before`: each run took the
/// path it was meant to.
fn expect(dp: &Dataplane, before: Counted, want: Counted, what: &str) -> anyhow::Result<()> {
    let after = Counted::read(dp)?;
    let counted = Counted {
        packets: after.packets - before.packets,
        flows: after.flows - before.flows,
        replies: after.replies - before.replies,
        other_events: after.other_events - before.other_events,
    };
    ensure!(
        counted == want,
        "{what}: the runs did not all take the intended path: counted {counted:?}, expected \
         {want:?}"
    );
    Ok(())
}

/// What the load balancer counted: packets and new flows over all VIPs, reverse NATs, and
/// every other event (resets, drops), which no measured path may cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counted {
    packets: u64,
    flows: u64,
    replies: u64,
    other_events: u64,
}

impl Counted {
    fn read(dp: &Dataplane) -> anyhow::Result<Counted> {
        let mut counted = Counted::default();
        for vip in dp.lb().counters()?.iter().filter(|c| c.backend.is_none()) {
            counted.packets += vip.counters.packets;
            counted.flows += vip.counters.flows;
        }
        for (event, n) in dp.lb().events()? {
            match event {
                LbEvent::ReplyNat => counted.replies += n,
                _ => counted.other_events += n,
            }
        }
        Ok(counted)
    }
}

/// A TCP segment between two tasks (MACs derived from the addresses, as shoal's): a SYN, or
/// an ACK carrying `PAYLOAD`.
fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(mac_for_ip(src.octets()), mac_for_ip(dst.octets()))
        .ipv4(src.octets(), dst.octets(), 64);
    let (builder, payload): (_, &[u8]) = if syn {
        (builder.tcp(sport, dport, ISN, 64240).syn(), &[])
    } else {
        (builder.tcp(sport, dport, ISN + 1, 64240).ack(1), &PAYLOAD)
    };
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot fail.
    let _ = builder.write(&mut frame, payload);
    frame
}
