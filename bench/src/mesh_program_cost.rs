//! Per-packet cost of the published ports' programs (the ingress routing mesh and host mode)
//! on each of their paths, measured by the kernel with BPF_PROG_TEST_RUN: the underlay XDP
//! program (`shoal_xdp`) against the do-nothing XDP floor, and the reply program
//! (`shoal_tc_mesh_reply`) against the tc parse-and-pass floor, on the same frames.
//!
//! The maps are programmed as the agent does (`LoadBalancer::apply` for the frontends and
//! their backends, `Mesh::apply` for the node's settings, addresses, ports and VTEPs), and as
//! the `mesh_programs` tests do: TCP 8080 -> 80 in ingress mode on one task whose VTEP is this
//! node, TCP 8090 -> 80 in ingress mode on one task on another node, UDP 5353 -> 53 in host
//! mode on one local task. The benchmark runs in a network namespace of its own with an
//! underlay interface (`u0`, the node's address, the other node as a permanent neighbour): the
//! other node's task is reached from it (`bpf_fib_lookup` with the test run's ingress
//! interface; `XDP_TX`), the local one through the node's own VXLAN socket (`XDP_PASS`).
//!
//! The forward path rewrites the frame and grows it by the 50 bytes of VXLAN, and the reply
//! path un-NATs it, so neither can be repeated on one buffer: like `lb-program-cost`'s single
//! runs, each of `FLOWS` distinct flows is sent once (repeat 1) through every path, floor
//! included. Frames the mesh passes untouched are repeated, as in `program-cost`.
//!
//! Every measurement checks the verdicts and output frames, and from the mesh's events and
//! the load balancer's counters that every run took the path it is named after.

use std::{net::Ipv4Addr, ops::Range, path::Path, time::Duration};

use anyhow::{Context as _, ensure};
use etherparse::PacketBuilder;
use shoal_common::{
    lb::mac_for_ip,
    mesh::{
        MODE_HOST, MODE_INGRESS, MeshConfig, MeshEvent, PortKey, PublishedPort, VXLAN_OVERHEAD,
        host_frontend,
    },
    programs,
};
use shoal_dataplane::{Dataplane, LbTable, MeshTable, TestRunOutcome, netns::run_in};
use shoal_tests::{names::unique_prefix, netns::Underlay};

use crate::{
    program_cost::{REPEAT, ROUNDS, median_ns},
    support::{cost_header, cost_line, median_run_ns},
};

/// The node (where ports are published, and its VTEP) and the outside client.
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 11);
const OTHER_NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 12);
/// The other node's MAC: the next hop toward its VTEP.
const OTHER_NODE_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x12];
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 100);
const NODE_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x11];
const CLIENT_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x64];
/// The node's address on `ingress`, the service's VIP there, and its one task (on this node).
const INGRESS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
const INGRESS_VIP: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 254);
const TASK: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 5);
/// Another service's VIP on `ingress`, and its one task, on the other node.
const REMOTE_VIP: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 253);
const REMOTE_TASK: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 6);
const REMOTE_PUBLISHED: u16 = 8090;
/// A host-mode task, at its gateway-bridge address.
const HOST_TASK: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 5);
const PUBLISHED: u16 = 8080;
const TARGET: u16 = 80;
const HOST_PUBLISHED: u16 = 5353;
const HOST_TARGET: u16 = 53;
/// A port the node does not publish (ssh, say).
const UNPUBLISHED: u16 = 22;
const VXLAN_PORT: u16 = 4789;
const VNI: u32 = 4096;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
/// Single runs: distinct flows (client ports from `FIRST_PORT`), each sent once per path.
/// Six flow entries each (forward and reply of the two ingress flows and the host-mode one):
/// the ingress flows are confirmed by their client's ACK, the host-mode ones (one datagram
/// each way) stay unconfirmed; under each table's capacity, so none is evicted.
const FLOWS: u16 = 20_000;
const FIRST_PORT: u16 = 20_000;
/// What a data segment or datagram carries (about an HTTP request, a DNS answer).
const PAYLOAD: [u8; 100] = [b'x'; 100];
const ISN: u32 = 1_000;
const TASK_ISN: u32 = 5_000;

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;
/// IPv4 source and destination in an untagged Ethernet frame.
const IP_SRC: Range<usize> = 26..30;
const IP_DST: Range<usize> = 30..34;

pub fn run() -> anyhow::Result<()> {
    let underlay = underlay();
    let ifindex = underlay.ifindex;
    run_in(Path::new(&underlay.netns.path()), || {
        let dp = mesh().context("programming the mesh")?;
        repeated(&dp)?;
        println!();
        single(&dp, ifindex)
    })?
}

/// A namespace with the node's underlay: `u0` with the node's address, the other node a
/// permanent neighbour on it.
fn underlay() -> Underlay {
    let underlay = Underlay::create(
        &format!("{}-mesh-cost", unique_prefix()),
        &format!("{NODE}/24"),
    );
    underlay.set_neighbour(OTHER_NODE, OTHER_NODE_MAC);
    underlay
}

/// A dataplane publishing TCP 8080 -> 80 (ingress, one task on this node's VTEP) and UDP
/// 5353 -> 53 (host mode, one local task) on `NODE`.
fn mesh() -> anyhow::Result<Dataplane> {
    let mut dp = Dataplane::load(None).context("loading the eBPF programs")?;
    let host_key = Ipv4Addr::from(host_frontend(HOST_PUBLISHED, PROTO_UDP));
    let table: LbTable = [
        (INGRESS_VIP, [TASK].into()),
        (REMOTE_VIP, [REMOTE_TASK].into()),
        (host_key, [HOST_TASK].into()),
    ]
    .into();
    dp.lb_mut()
        .apply(&table)
        .context("programming the frontends")?;
    let published =
        |frontend: Ipv4Addr, target, mode| PublishedPort::new(frontend.octets(), target, mode);
    let mesh = MeshTable {
        config: MeshConfig {
            ingress_ip: raw(INGRESS_ADDR),
            vtep_ip: raw(NODE),
            underlay_ifindex: 1,
            vni: VNI,
            vxlan_port: VXLAN_PORT.to_be(),
            ingress_mtu: 1450,
        },
        addrs: [NODE].into(),
        ports: [
            (
                PortKey::new(PUBLISHED, PROTO_TCP),
                published(INGRESS_VIP, TARGET, MODE_INGRESS),
            ),
            (
                PortKey::new(REMOTE_PUBLISHED, PROTO_TCP),
                published(REMOTE_VIP, TARGET, MODE_INGRESS),
            ),
            (
                PortKey::new(HOST_PUBLISHED, PROTO_UDP),
                published(host_key, HOST_TARGET, MODE_HOST),
            ),
        ]
        .into(),
        vteps: [(TASK, NODE), (REMOTE_TASK, OTHER_NODE)].into(),
        ingress_ifindex: 0,
    };
    dp.mesh_mut()
        .apply(&mesh)
        .context("programming the published ports")?;
    Ok(dp)
}

/// Frames the mesh passes untouched, `REPEAT` runs on one frame.
fn repeated(dp: &Dataplane) -> anyhow::Result<()> {
    let rows = [
        (
            "not published: TCP to node:22",
            programs::XDP_UNDERLAY,
            programs::XDP_FLOOR,
            tcp(CLIENT, NODE, 40_000, UNPUBLISHED, Segment::Data),
            XDP_PASS,
        ),
        (
            "VXLAN to the node (overlay traffic)",
            programs::XDP_UNDERLAY,
            programs::XDP_FLOOR,
            udp(OTHER_NODE, NODE, 50_000, VXLAN_PORT),
            XDP_PASS,
        ),
        (
            "not a mesh reply: task -> ingress addr",
            programs::TC_MESH_REPLY,
            programs::TC_PARSE_FLOOR,
            tcp(TASK, INGRESS_ADDR, TARGET, 40_000, Segment::Answer),
            TC_ACT_OK,
        ),
    ];
    println!(
        "mesh-program-cost, repeated: median of {ROUNDS} x {REPEAT} runs on one frame ({}-byte \
         TCP segment, {}-byte UDP datagram), floors {} and {} on the same frames",
        rows[0].3.len(),
        rows[1].3.len(),
        programs::XDP_FLOOR,
        programs::TC_PARSE_FLOOR,
    );
    cost_header("ns/packet");
    for (path, program, floor, frame, verdict) in rows {
        let before = Counted::read(dp)?;
        let out = dp.test_run(program, &frame, 1)?;
        ensure!(
            out.return_value == verdict && out.data_out == frame,
            "{path}: {program} did not pass the frame untouched (verdict {})",
            out.return_value
        );
        let floor_ns = median_ns(dp, floor, &frame)?;
        let measured = median_ns(dp, program, &frame)?;
        Counted::read(dp)?.expect_since(before, Counted::default(), path)?;
        ensure!(
            dp.mesh().flow_entries()?.is_empty(),
            "{path}: a flow was made"
        );
        cost_line(path, program, measured, floor_ns);
    }
    Ok(())
}

/// The measured paths of the single runs, in the order they run for each flow: name, program,
/// floor, and whether the frame arrives on the underlay interface (what `bpf_fib_lookup`
/// routes from; the local task's paths run as before, on no interface).
const PATHS: [(&str, &str, &str, bool); 10] = [
    (
        "ingress: new connection (SYN)",
        programs::XDP_UNDERLAY,
        programs::XDP_FLOOR,
        false,
    ),
    (
        "ingress reply: the task's SYN-ACK",
        programs::TC_MESH_REPLY,
        programs::TC_PARSE_FLOOR,
        false,
    ),
    (
        "ingress: the client's first ACK (confirms)",
        programs::XDP_UNDERLAY,
        programs::XDP_FLOOR,
        false,
    ),
    (
        "ingress: established (data segment)",
        programs::XDP_UNDERLAY,
        programs::XDP_FLOOR,
        false,
    ),
    (
        "ingress, remote task: new connection",
        programs::XDP_UNDERLAY,
        programs::XDP_FLOOR,
        true,
    ),
    (
        "ingress, remote task: its SYN-ACK",
        programs::TC_MESH_REPLY,
        programs::TC_PARSE_FLOOR,
        false,
    ),
    (
        "ingress, remote task: first ACK",
        programs::XDP_UNDERLAY,
        programs::XDP_FLOOR,
        true,
    ),
    (
        "ingress, remote task: established",
        programs::XDP_UNDERLAY,
        programs::XDP_FLOOR,
        true,
    ),
    (
        "host mode: new flow (UDP datagram)",
        programs::XDP_UNDERLAY,
        programs::XDP_FLOOR,
        false,
    ),
    (
        "host mode reply: the task's answer",
        programs::TC_MESH_REPLY,
        programs::TC_PARSE_FLOOR,
        false,
    ),
];

/// One run per flow and path, `FLOWS` flows, each path's floor on the same frame.
fn single(dp: &Dataplane, underlay_ifindex: u32) -> anyhow::Result<()> {
    let before = Counted::read(dp)?;
    let mut floors: [Vec<Duration>; PATHS.len()] = Default::default();
    let mut measured: [Vec<Duration>; PATHS.len()] = Default::default();
    for port in (FIRST_PORT..).take(usize::from(FLOWS)) {
        let frames = [
            tcp(CLIENT, NODE, port, PUBLISHED, Segment::Syn),
            tcp(TASK, INGRESS_ADDR, TARGET, port, Segment::SynAck),
            tcp(CLIENT, NODE, port, PUBLISHED, Segment::Data),
            tcp(CLIENT, NODE, port, PUBLISHED, Segment::Data),
            tcp(CLIENT, NODE, port, REMOTE_PUBLISHED, Segment::Syn),
            tcp(REMOTE_TASK, INGRESS_ADDR, TARGET, port, Segment::SynAck),
            tcp(CLIENT, NODE, port, REMOTE_PUBLISHED, Segment::Data),
            tcp(CLIENT, NODE, port, REMOTE_PUBLISHED, Segment::Data),
            udp(CLIENT, NODE, port, HOST_PUBLISHED),
            udp(HOST_TASK, CLIENT, HOST_TARGET, port),
        ];
        for (i, ((path, program, floor, routed), frame)) in PATHS.iter().zip(&frames).enumerate() {
            let on = routed.then_some(underlay_ifindex);
            floors[i].push(dp.test_run_on(floor, frame, 1, on)?.duration);
            let out = dp.test_run_on(program, frame, 1, on)?;
            check(i, &out, frame.len(), port).with_context(|| format!("{path}, port {port}"))?;
            measured[i].push(out.duration);
        }
    }
    let flows = u64::from(FLOWS);
    let want = Counted {
        forwarded: 3 * flows,
        replied: 3 * flows,
        confirmed: 2 * flows,
        flows: 3 * flows,
        packets: 10 * flows,
        other_events: 0,
    };
    Counted::read(dp)?.expect_since(before, want, "single runs")?;

    println!(
        "mesh-program-cost, single runs: {FLOWS} distinct flows (client ports), each path run \
         once per flow (repeat 1), median over flows; each path's floor once per flow on the \
         same frame"
    );
    cost_header("ns/run");
    for (i, (path, program, _, _)) in PATHS.iter().enumerate() {
        cost_line(
            path,
            program,
            median_run_ns(&measured[i]),
            median_run_ns(&floors[i]),
        );
    }
    Ok(())
}

/// Fails unless path `i` (of [`PATHS`]) gave the verdict and the frame it should have.
fn check(i: usize, out: &TestRunOutcome, len: usize, port: u16) -> anyhow::Result<()> {
    let ip = |frame: &[u8], at: Range<usize>| -> anyhow::Result<Ipv4Addr> {
        let octets: [u8; 4] = frame.get(at).context("short frame")?.try_into()?;
        Ok(Ipv4Addr::from(octets))
    };
    let data = &out.data_out;
    match i {
        // Ingress, the other node's task: NAT-ed, wrapped in VXLAN to its node, sent back out
        // on the underlay to the neighbour.
        4 | 6 | 7 => {
            let inner = data.get(VXLAN_OVERHEAD..).context("short frame")?;
            ensure!(
                out.return_value == XDP_TX
                    && data.len() == len + VXLAN_OVERHEAD
                    && data.get(0..6) == Some(&OTHER_NODE_MAC[..])
                    && ip(data, IP_DST)? == OTHER_NODE
                    && ip(inner, IP_DST)? == REMOTE_TASK
                    && inner.get(36..38) == Some(&TARGET.to_be_bytes()[..]),
                "not sent to {REMOTE_TASK}:{TARGET} in VXLAN via {OTHER_NODE} (verdict {})",
                out.return_value
            );
        }
        // Ingress: NAT-ed to the task and wrapped in VXLAN to our own VTEP.
        0 | 2 | 3 => {
            let inner = data.get(VXLAN_OVERHEAD..).context("short frame")?;
            ensure!(
                out.return_value == XDP_PASS
                    && data.len() == len + VXLAN_OVERHEAD
                    && ip(inner, IP_SRC)? == INGRESS_ADDR
                    && ip(inner, IP_DST)? == TASK
                    && inner.get(36..38) == Some(&TARGET.to_be_bytes()[..])
                    && inner.get(34..36) == Some(&port.to_be_bytes()[..]),
                "not forwarded to {TASK}:{TARGET} in VXLAN (verdict {})",
                out.return_value
            );
        }
        // Host mode: DNAT to the task, passed to the kernel.
        8 => ensure!(
            out.return_value == XDP_PASS
                && data.len() == len
                && ip(data, IP_SRC)? == CLIENT
                && ip(data, IP_DST)? == HOST_TASK,
            "not DNAT-ed to {HOST_TASK} (verdict {})",
            out.return_value
        ),
        // Replies: from node:published to the client, redirected to the underlay.
        _ => ensure!(
            out.return_value == TC_ACT_REDIRECT
                && ip(data, IP_SRC)? == NODE
                && ip(data, IP_DST)? == CLIENT,
            "not un-NAT-ed and redirected (verdict {})",
            out.return_value
        ),
    }
    Ok(())
}

/// What the mesh and the load balancer counted: new flows balanced (`Forwarded`), answers
/// un-NAT-ed (`Replied`), flows confirmed (`Confirmed`), every other mesh event (drops; no measured path may cause one), and
/// the load balancer's packets and new flows over all frontends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counted {
    forwarded: u64,
    replied: u64,
    /// Flows confirmed (the client's ACK of the SYN-ACK): ingress TCP only, as the host-mode
    /// UDP flows see one datagram each way.
    confirmed: u64,
    other_events: u64,
    packets: u64,
    flows: u64,
}

impl Counted {
    fn read(dp: &Dataplane) -> anyhow::Result<Counted> {
        let mut counted = Counted::default();
        for (event, n) in dp.mesh().events()? {
            match event {
                MeshEvent::Forwarded => counted.forwarded += n,
                MeshEvent::Replied => counted.replied += n,
                MeshEvent::Confirmed => counted.confirmed += n,
                _ => counted.other_events += n,
            }
        }
        for frontend in dp.lb().counters()?.iter().filter(|c| c.backend.is_none()) {
            counted.packets += frontend.counters.packets;
            counted.flows += frontend.counters.flows;
        }
        Ok(counted)
    }

    /// Fails unless exactly `want` was counted since `before`: each run took its path.
    fn expect_since(self, before: Counted, want: Counted, what: &str) -> anyhow::Result<()> {
        let counted = Counted {
            forwarded: self.forwarded - before.forwarded,
            replied: self.replied - before.replied,
            confirmed: self.confirmed - before.confirmed,
            other_events: self.other_events - before.other_events,
            packets: self.packets - before.packets,
            flows: self.flows - before.flows,
        };
        ensure!(
            counted == want,
            "{what}: the runs did not all take the intended path: counted {counted:?}, \
             expected {want:?}"
        );
        Ok(())
    }
}

fn raw(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The MAC a frame from `ip` carries: the client's and the node's on the underlay, the
/// derived one of shoal's endpoints otherwise.
fn mac(ip: Ipv4Addr) -> [u8; 6] {
    match ip {
        CLIENT => CLIENT_MAC,
        NODE => NODE_MAC,
        _ => mac_for_ip(ip.octets()),
    }
}

/// Which TCP segment.
#[derive(Clone, Copy)]
enum Segment {
    /// The client's SYN.
    Syn,
    /// The task's SYN-ACK.
    SynAck,
    /// The client's ACK carrying `PAYLOAD`.
    Data,
    /// The task's ACK carrying `PAYLOAD`.
    Answer,
}

fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, segment: Segment) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(mac(src), mac(dst)).ipv4(src.octets(), dst.octets(), 64);
    let (builder, payload): (_, &[u8]) = match segment {
        Segment::Syn => (builder.tcp(sport, dport, ISN, 64240).syn(), &[]),
        Segment::SynAck => (
            builder
                .tcp(sport, dport, TASK_ISN, 64240)
                .syn()
                .ack(ISN + 1),
            &[],
        ),
        Segment::Data => (
            builder.tcp(sport, dport, ISN + 1, 64240).ack(TASK_ISN + 1),
            &PAYLOAD,
        ),
        Segment::Answer => (
            builder.tcp(sport, dport, TASK_ISN + 1, 64240).ack(ISN + 1),
            &PAYLOAD,
        ),
    };
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot fail.
    let _ = builder.write(&mut frame, payload);
    frame
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(mac(src), mac(dst))
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut frame = Vec::with_capacity(builder.size(PAYLOAD.len()));
    // Writing into a Vec cannot fail.
    let _ = builder.write(&mut frame, &PAYLOAD);
    frame
}
