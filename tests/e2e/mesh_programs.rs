//! The published ports' programs on crafted frames (BPF_PROG_TEST_RUN): the underlay XDP
//! program (ingress mode: NAT both ways and VXLAN to the task's node; host mode: DNAT to the
//! local task) and the reply program (tc) that undoes it, outputs compared with frames built
//! by etherparse (whose checksums are computed from scratch, so they check the programs'
//! incremental updates). Also what must pass untouched, what is dropped and counted, closed
//! flows forgotten while quiet open ones stay, new flows confirmed by the client's ACK of its
//! task's SYN-ACK (not by the SYN-ACK alone), and a SYN flood from spoofed sources churning
//! only the unconfirmed table, never an established flow's entries. The maps are programmed
//! through the same `LoadBalancer` and `Mesh` the agent uses.

use std::{collections::BTreeSet, net::Ipv4Addr};

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use shoal_common::{
    mesh::{
        MODE_HOST, MODE_INGRESS, MODE_INGRESS_CLIENT, MeshConfig, MeshEvent, PortKey,
        PublishedPort, host_frontend,
    },
    programs,
};
use shoal_dataplane::{Dataplane, LbTable, MeshTable};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const TC_ACT_REDIRECT: u32 = 7;

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 11);
const OTHER_NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 12);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 100);
const INGRESS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
const INGRESS_VIP: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 254);
/// On this node, then on the other one (slot order is address order).
const LOCAL_TASK: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 5);
const REMOTE_TASK: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 6);
const HOST_TASK: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 5);
const NODE_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x11];
const CLIENT_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x64];
const VNI: u32 = 4096;

fn mac(ip: Ipv4Addr) -> [u8; 6] {
    shoal_common::lb::mac_for_ip(ip.octets())
}

/// The inner source MAC of what the mesh sends into `ingress`.
fn mesh_mac() -> [u8; 6] {
    shoal_common::mesh::mesh_source_mac(INGRESS_ADDR.octets())
}

fn raw(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// A dataplane with: TCP 8080 -> 80 in ingress mode over a local and a remote task, UDP 5353
/// -> 53 in host mode on a local task, TCP and UDP 8081 in ingress mode with no task at all,
/// UDP 8082 whose frontend the load balancer does not know, and TCP 8083 -> 80 over the same
/// tasks as 8080 with the client's address kept. The `ingress` MTU is 1450.
fn mesh() -> Dataplane {
    mesh_with_mtu(1450)
}

/// [`mesh`] with `ingress_mtu` as the `ingress` network's MTU (0: not set).
fn mesh_with_mtu(ingress_mtu: u16) -> Dataplane {
    let mut dp = Dataplane::load(None).expect("load");
    let host_key = Ipv4Addr::from(host_frontend(5353, 17));
    let no_task_vip = Ipv4Addr::new(10, 255, 255, 253);
    let table: LbTable = [
        (INGRESS_VIP, BTreeSet::from([LOCAL_TASK, REMOTE_TASK])),
        (host_key, BTreeSet::from([HOST_TASK])),
        (no_task_vip, BTreeSet::new()),
    ]
    .into();
    dp.lb_mut().apply(&table).expect("lb table");
    let published =
        |frontend: Ipv4Addr, target, mode| PublishedPort::new(frontend.octets(), target, mode);
    let mesh = MeshTable {
        config: MeshConfig {
            ingress_ip: raw(INGRESS_ADDR),
            vtep_ip: raw(NODE),
            underlay_ifindex: 1,
            vni: VNI,
            vxlan_port: 4789u16.to_be(),
            ingress_mtu,
        },
        addrs: BTreeSet::from([NODE]),
        ports: [
            (
                PortKey::new(8080, 6),
                published(INGRESS_VIP, 80, MODE_INGRESS),
            ),
            (PortKey::new(5353, 17), published(host_key, 53, MODE_HOST)),
            (
                PortKey::new(8081, 6),
                published(no_task_vip, 80, MODE_INGRESS),
            ),
            (
                PortKey::new(8081, 17),
                published(no_task_vip, 80, MODE_INGRESS),
            ),
            (
                PortKey::new(8083, 6),
                published(INGRESS_VIP, 80, MODE_INGRESS_CLIENT),
            ),
            // A frontend the load balancer does not hold (yet) at all.
            (
                PortKey::new(8082, 17),
                published(Ipv4Addr::new(10, 255, 255, 252), 80, MODE_INGRESS),
            ),
        ]
        .into(),
        vteps: [(LOCAL_TASK, NODE), (REMOTE_TASK, OTHER_NODE)].into(),
        ingress_ifindex: 0,
    };
    dp.mesh_mut().apply(&mesh).expect("mesh table");
    assert_eq!(dp.mesh().table().unwrap(), mesh, "maps read back");
    dp
}

/// A TCP segment on the wire.
#[derive(Clone, Copy)]
struct Seg {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    syn: bool,
    ack: bool,
    /// The acknowledgment number, when `ack`.
    ack_no: u32,
    fin: bool,
}

impl Seg {
    fn syn(src: Ipv4Addr, sport: u16, dport: u16) -> Seg {
        Seg {
            src,
            dst: NODE,
            sport,
            dport,
            seq: 1000 + u32::from(sport),
            syn: true,
            ack: false,
            ack_no: 0,
            fin: false,
        }
    }

    /// The local task's SYN-ACK (ISN `seq`) to the node's ingress address, NAT port `dport`.
    fn syn_ack_from_task(dport: u16, seq: u32) -> Seg {
        Seg {
            src: LOCAL_TASK,
            dst: INGRESS_ADDR,
            sport: 80,
            dport,
            seq,
            syn: true,
            ack: true,
            ack_no: 77,
            fin: false,
        }
    }

    /// The IP packet alone (what the reply program's output is compared on: the MACs are the
    /// neighbour subsystem's business at redirect time).
    fn ip_packet(&self) -> Vec<u8> {
        self.frame([0; 6], [0; 6], b"")[14..].to_vec()
    }

    /// As the local task sends it into `ingress`.
    fn as_task_sends(&self) -> Vec<u8> {
        self.frame(mac(LOCAL_TASK), mac(INGRESS_ADDR), b"")
    }

    /// The client's next segment after its SYN, acknowledging nothing the task sent (what a
    /// blind spoofer sends).
    fn data(self) -> Seg {
        Seg {
            seq: self.seq + 1,
            syn: false,
            ack: true,
            ack_no: 77,
            ..self
        }
    }

    /// The client's next segment after its SYN, acknowledging the task's SYN-ACK (ISN
    /// `task_isn`): the handshake's ACK, which confirms the flow.
    fn acking(self, task_isn: u32) -> Seg {
        Seg {
            ack_no: task_isn + 1,
            ..self.data()
        }
    }

    fn frame(&self, src_mac: [u8; 6], dst_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(self.src.octets(), self.dst.octets(), 64)
            .tcp(self.sport, self.dport, self.seq, 64240);
        if self.syn {
            b = b.syn();
        }
        if self.ack {
            b = b.ack(self.ack_no);
        }
        if self.fin {
            b = b.fin();
        }
        let mut frame = Vec::new();
        b.write(&mut frame, payload).unwrap();
        frame
    }

    /// As the client sends it to the node.
    fn as_client_sends(&self) -> Vec<u8> {
        self.frame(CLIENT_MAC, NODE_MAC, b"")
    }
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, macs: ([u8; 6], [u8; 6])) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut frame = Vec::new();
    b.write(&mut frame, b"query").unwrap();
    frame
}

/// Splits a VXLAN frame the XDP program built for a task on this node into its outer headers
/// (checked here: to our own VXLAN socket, from the client, since the kernel drops frames
/// from the wire with its own address as source) and the inner frame.
fn decapsulate(frame: &[u8], outer_macs: ([u8; 6], [u8; 6]), client: Ipv4Addr) -> Vec<u8> {
    let outer = SlicedPacket::from_ethernet(frame).expect("outer frame parses");
    let eth = outer.link.as_ref().unwrap().to_header().unwrap();
    let eth = eth.ethernet2().unwrap();
    assert_eq!(
        (eth.destination, eth.source),
        (outer_macs.0, outer_macs.1),
        "outer MACs"
    );
    let Some(etherparse::NetSlice::Ipv4(ip)) = &outer.net else {
        panic!("outer IPv4");
    };
    let ip = ip.header().to_header();
    assert_eq!(
        (Ipv4Addr::from(ip.source), Ipv4Addr::from(ip.destination)),
        (client, NODE),
        "outer addresses"
    );
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "outer IP checksum"
    );
    assert_eq!(
        usize::from(ip.total_len),
        frame.len() - 14,
        "outer IP length"
    );
    let Some(TransportSlice::Udp(udp)) = &outer.transport else {
        panic!("outer UDP");
    };
    assert_eq!(udp.destination_port(), 4789);
    assert_eq!(
        udp.source_port(),
        0xc000,
        "to our own socket: one source port, one conntrack entry per client"
    );
    assert_eq!(udp.checksum(), 0, "no outer UDP checksum");
    assert_eq!(usize::from(udp.length()), frame.len() - 34);
    let vxlan = &frame[42..50];
    assert_eq!(vxlan[0], 0x08, "VNI-valid flag");
    assert_eq!(
        u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]),
        VNI,
        "VNI"
    );
    frame[50..].to_vec()
}

fn event(dp: &Dataplane, which: MeshEvent) -> u64 {
    dp.mesh()
        .events()
        .unwrap()
        .into_iter()
        .find(|(e, _)| *e == which)
        .map_or(0, |(_, n)| n)
}

#[test]
fn ingress_connections_are_nated_and_sent_in_vxlan_and_replies_undone() {
    let dp = mesh();
    // --- 1. the first SYN goes to the local task: VXLAN to our own VTEP, passed to the kernel
    let syn = Seg::syn(CLIENT, 40000, 8080);
    let out = dp
        .test_run(programs::XDP_UNDERLAY, &syn.as_client_sends(), 1)
        .unwrap();
    assert_eq!(
        out.return_value, XDP_PASS,
        "a local task's frame goes to our VXLAN socket"
    );
    let inner = decapsulate(&out.data_out, (NODE_MAC, CLIENT_MAC), CLIENT);
    let nated = Seg {
        src: INGRESS_ADDR,
        dst: LOCAL_TASK,
        sport: 40000,
        dport: 80,
        ..syn
    };
    assert_eq!(
        inner,
        nated.frame(mesh_mac(), mac(LOCAL_TASK), b""),
        "inner frame: ingress address -> task:80, client's port kept, checksums right"
    );
    assert_eq!(event(&dp, MeshEvent::Forwarded), 1);

    // --- 2. the task's SYN-ACK, through the reply program: back to node:8080 -> client
    let syn_ack = Seg::syn_ack_from_task(40000, 5000);
    let out = dp
        .test_run(programs::TC_MESH_REPLY, &syn_ack.as_task_sends(), 1)
        .unwrap();
    assert_eq!(
        out.return_value, TC_ACT_REDIRECT,
        "answers are redirected to the underlay"
    );
    let undone = Seg {
        src: NODE,
        dst: CLIENT,
        sport: 8080,
        dport: 40000,
        ..syn_ack
    };
    // MACs are the neighbour subsystem's business at redirect time: only L3 and up is ours.
    assert_eq!(
        out.data_out[14..],
        undone.ip_packet()[..],
        "reply un-NAT-ed"
    );
    assert_eq!(event(&dp, MeshEvent::Replied), 1);

    // --- 3. the client's ACK of the SYN-ACK, with data, stays on its task and confirms the
    // flow
    let data = syn.acking(5000);
    let out = dp
        .test_run(
            programs::XDP_UNDERLAY,
            &data.frame(CLIENT_MAC, NODE_MAC, b"GET /"),
            1,
        )
        .unwrap();
    assert_eq!(out.return_value, XDP_PASS);
    let inner = decapsulate(&out.data_out, (NODE_MAC, CLIENT_MAC), CLIENT);
    assert_eq!(
        inner,
        Seg {
            src: INGRESS_ADDR,
            dst: LOCAL_TASK,
            sport: 40000,
            dport: 80,
            ..data
        }
        .frame(mesh_mac(), mac(LOCAL_TASK), b"GET /")
    );
    assert_eq!(event(&dp, MeshEvent::Forwarded), 1, "not a new flow");
    assert_eq!(event(&dp, MeshEvent::Confirmed), 1);

    // --- 4. the next connection is the remote task's turn. A test run has no ingress
    // interface to route from, so the route toward its node is missing: dropped, counted.
    let second = Seg::syn(CLIENT, 40001, 8080);
    let out = dp
        .test_run(programs::XDP_UNDERLAY, &second.as_client_sends(), 1)
        .unwrap();
    assert_eq!(out.return_value, XDP_DROP);
    assert_eq!(event(&dp, MeshEvent::NoRoute), 1);

    // --- 5. flow entries: forward and reply of the first connection, confirmed; the second
    // one's, unconfirmed
    assert_eq!(dp.mesh().unconfirmed_flow_entries().unwrap().len(), 2);
    let flows = dp.mesh().flow_entries().unwrap();
    assert_eq!(flows.len(), 2);
    let reply = flows
        .iter()
        .find(|(k, _)| k.src_ip == raw(LOCAL_TASK) && k.dst_ip == raw(INGRESS_ADDR))
        .expect("reply entry");
    assert_eq!(reply.1.peer_ip, raw(CLIENT));
    assert_eq!(reply.1.local_ip, raw(NODE));
}

#[test]
fn a_clashing_client_port_gets_another_nat_port() {
    let dp = mesh();
    let first = Seg::syn(CLIENT, 41000, 8080);
    assert_eq!(
        dp.test_run(programs::XDP_UNDERLAY, &first.as_client_sends(), 1)
            .unwrap()
            .return_value,
        XDP_PASS
    );
    // The remote task's turn (dropped here, see above), so the third SYN is the local task's.
    let _ = dp.test_run(
        programs::XDP_UNDERLAY,
        &Seg::syn(CLIENT, 41001, 8080).as_client_sends(),
        1,
    );
    // Another client, same port, same task: the NAT port must differ.
    let other_client = Ipv4Addr::new(192, 168, 7, 101);
    let clash = Seg::syn(other_client, 41000, 8080);
    let out = dp
        .test_run(programs::XDP_UNDERLAY, &clash.as_client_sends(), 1)
        .unwrap();
    assert_eq!(out.return_value, XDP_PASS);
    let inner = decapsulate(&out.data_out, (NODE_MAC, CLIENT_MAC), other_client);
    let parsed = SlicedPacket::from_ethernet(&inner).unwrap();
    let Some(TransportSlice::Tcp(tcp)) = parsed.transport else {
        panic!("inner TCP");
    };
    let nat_port = tcp.source_port();
    assert_ne!(
        nat_port, 41000,
        "two clients share one NAT address and port at one task"
    );
    assert!(nat_port >= 1024);
    assert_eq!(
        inner,
        Seg {
            src: INGRESS_ADDR,
            dst: LOCAL_TASK,
            sport: nat_port,
            dport: 80,
            ..clash
        }
        .frame(mesh_mac(), mac(LOCAL_TASK), b""),
        "checksums right with the new port"
    );
    // The answer to that NAT port goes to the second client, port 41000.
    let answer = Seg::syn_ack_from_task(nat_port, 9000);
    let out = dp
        .test_run(programs::TC_MESH_REPLY, &answer.as_task_sends(), 1)
        .unwrap();
    assert_eq!(out.return_value, TC_ACT_REDIRECT);
    let undone = Seg {
        src: NODE,
        dst: other_client,
        sport: 8080,
        dport: 41000,
        ..answer
    };
    assert_eq!(out.data_out[14..], undone.ip_packet()[..]);
}

#[test]
fn host_mode_goes_to_the_local_task_with_the_client_address_kept() {
    let dp = mesh();
    let query = udp(CLIENT, NODE, 50000, 5353, (CLIENT_MAC, NODE_MAC));
    let out = dp.test_run(programs::XDP_UNDERLAY, &query, 1).unwrap();
    assert_eq!(
        out.return_value, XDP_PASS,
        "host mode: the kernel routes it to the task"
    );
    assert_eq!(
        out.data_out,
        udp(CLIENT, HOST_TASK, 50000, 53, (CLIENT_MAC, NODE_MAC)),
        "DNAT to the task's gateway address and port, source and MACs kept"
    );
    let answer = udp(
        HOST_TASK,
        CLIENT,
        53,
        50000,
        (mac(HOST_TASK), [2, 0, 0, 0, 0, 1]),
    );
    let out = dp.test_run(programs::TC_MESH_REPLY, &answer, 1).unwrap();
    assert_eq!(out.return_value, TC_ACT_REDIRECT);
    assert_eq!(
        out.data_out[14..],
        udp(
            NODE,
            CLIENT,
            5353,
            50000,
            (mac(HOST_TASK), [2, 0, 0, 0, 0, 1])
        )[14..],
        "the answer comes from node:5353"
    );
    // Without a checksum (0), it stays without one.
    let mut no_sum = udp(CLIENT, NODE, 50001, 5353, (CLIENT_MAC, NODE_MAC));
    no_sum[40..42].copy_from_slice(&[0, 0]);
    let out = dp.test_run(programs::XDP_UNDERLAY, &no_sum, 1).unwrap();
    assert_eq!(out.return_value, XDP_PASS);
    assert_eq!(&out.data_out[40..42], &[0, 0], "UDP checksum stays 'none'");
}

#[test]
fn client_kept_flows_keep_their_source_and_answers_go_back_to_their_node() {
    let mut dp = mesh();
    // --- 1. the SYN goes to the local task with only its destination rewritten; the inner
    // source MAC names this node (its ingress address), for the task's node to answer through
    let syn = Seg::syn(CLIENT, 40000, 8083);
    let out = dp
        .test_run(programs::XDP_UNDERLAY, &syn.as_client_sends(), 1)
        .unwrap();
    assert_eq!(out.return_value, XDP_PASS);
    let inner = decapsulate(&out.data_out, (NODE_MAC, CLIENT_MAC), CLIENT);
    let to_task = Seg {
        dst: LOCAL_TASK,
        dport: 80,
        ..syn
    };
    assert_eq!(
        inner,
        to_task.frame(mesh_mac(), mac(LOCAL_TASK), b""),
        "client:40000 -> task:80, checksums right"
    );

    // --- 2. the task's answer to the client, on this node: the reply entry is keyed
    // task -> client, and the answer leaves as node:8083 -> client
    let syn_ack = Seg {
        dst: CLIENT,
        dport: 40000,
        ..Seg::syn_ack_from_task(40000, 5000)
    };
    let out = dp
        .test_run(
            programs::TC_MESH_REPLY,
            &syn_ack.frame(mac(LOCAL_TASK), [2, 0, 0, 0, 0, 1], b""),
            1,
        )
        .unwrap();
    assert_eq!(out.return_value, TC_ACT_REDIRECT);
    let undone = Seg {
        src: NODE,
        sport: 8083,
        ..syn_ack
    };
    assert_eq!(out.data_out[14..], undone.ip_packet()[..], "from node:8083");
    assert_eq!(event(&dp, MeshEvent::Replied), 1);

    // --- 3. on the task's node: a flow another node received (its MAC says which) is noted
    // as it reaches the task; a source-NAT-ed one (the source is that node itself) is not
    // (A test run's skb is on loopback, ifindex 1: the ingress interface is another one.)
    let mut table = dp.mesh().table().unwrap();
    table.ingress_ifindex = 1000;
    dp.mesh_mut().apply(&table).unwrap();
    // This node received a flow of the same client port to the same task earlier (its reply
    // entry lingers); the round robin gives the remote task (no route here) a turn first.
    let remote = Seg::syn(CLIENT, 39999, 8083).as_client_sends();
    run(
        &dp,
        programs::XDP_UNDERLAY,
        &remote,
        XDP_DROP,
        "remote task",
    );
    let earlier = Seg::syn(CLIENT, 41000, 8083).as_client_sends();
    run(
        &dp,
        programs::XDP_UNDERLAY,
        &earlier,
        XDP_PASS,
        "an earlier flow",
    );
    let other_ingress = Ipv4Addr::new(10, 255, 0, 3);
    let other_mac = shoal_common::mesh::mesh_source_mac(other_ingress.octets());
    let arriving = Seg {
        dst: LOCAL_TASK,
        sport: 41000,
        dport: 80,
        ..Seg::syn(CLIENT, 41000, 80)
    };
    let out = dp
        .test_run(
            programs::TC_EGRESS,
            &arriving.frame(other_mac, mac(LOCAL_TASK), b""),
            1,
        )
        .unwrap();
    assert_eq!(out.return_value, 0, "passed to the task (TC_ACT_OK)");
    let natted = Seg {
        src: other_ingress,
        dst: LOCAL_TASK,
        sport: 42000,
        dport: 80,
        ..Seg::syn(other_ingress, 42000, 80)
    };
    dp.test_run(
        programs::TC_EGRESS,
        &natted.frame(other_mac, mac(LOCAL_TASK), b""),
        1,
    )
    .unwrap();
    let notes = dp.mesh().return_entries().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    let (key, path) = notes[0];
    assert_eq!(
        (
            Ipv4Addr::from(key.src_ip.to_ne_bytes()),
            u16::from_be(key.src_port),
            Ipv4Addr::from(key.dst_ip.to_ne_bytes()),
            u16::from_be(key.dst_port),
            Ipv4Addr::from(path.node.to_ne_bytes()),
            Ipv4Addr::from(path.task.to_ne_bytes()),
        ),
        (
            Ipv4Addr::UNSPECIFIED,
            80,
            CLIENT,
            41000,
            other_ingress,
            LOCAL_TASK
        ),
        "keyed without the answer's source, which the note gives"
    );

    // --- 4. the task's answer goes by the note, not by this node's lingering reply entry:
    // into this node's ingress interface, to the other node's ingress endpoint, addresses
    // untouched
    let answer = Seg {
        src: LOCAL_TASK,
        dst: CLIENT,
        sport: 80,
        dport: 41000,
        ..Seg::syn_ack_from_task(41000, 6000)
    };
    let out = dp
        .test_run(
            programs::TC_MESH_REPLY,
            &answer.frame(mac(LOCAL_TASK), [2, 0, 0, 0, 0, 1], b""),
            1,
        )
        .unwrap();
    assert_eq!(out.return_value, TC_ACT_REDIRECT);
    assert_eq!(
        out.data_out,
        answer.frame(mac(INGRESS_ADDR), mac(other_ingress), b""),
        "MACs: ours on `ingress` -> the receiving node's endpoint"
    );
    assert_eq!(event(&dp, MeshEvent::Returned), 1);
    assert_eq!(event(&dp, MeshEvent::Replied), 1, "not a reply of ours");

    // --- 5. UDP: a socket bound to 0.0.0.0 answers from its gateway-bridge address (its route
    // to the client): it gets the task's ingress address back, checksums right, and goes back
    let datagram = udp(CLIENT, LOCAL_TASK, 41001, 80, (other_mac, mac(LOCAL_TASK)));
    run(&dp, programs::TC_EGRESS, &datagram, 0, "UDP to the task");
    let udp_answer = udp(
        HOST_TASK,
        CLIENT,
        80,
        41001,
        (mac(HOST_TASK), [2, 0, 0, 0, 0, 1]),
    );
    let out = dp
        .test_run(programs::TC_MESH_REPLY, &udp_answer, 1)
        .unwrap();
    assert_eq!(out.return_value, TC_ACT_REDIRECT);
    assert_eq!(
        out.data_out,
        udp(
            LOCAL_TASK,
            CLIENT,
            80,
            41001,
            (mac(INGRESS_ADDR), mac(other_ingress))
        ),
        "as the task's ingress address, to the receiving node"
    );
    assert_eq!(event(&dp, MeshEvent::Returned), 2);

    // --- 6. on the ingress interface itself (where answers other nodes steer here arrive),
    // and without the ingress interface known, notes are not followed: this node's own reply
    // entry answers it, from node:8083
    for ingress_ifindex in [1, 0] {
        table.ingress_ifindex = ingress_ifindex;
        dp.mesh_mut().apply(&table).unwrap();
        let out = dp
            .test_run(
                programs::TC_MESH_REPLY,
                &answer.frame(mac(LOCAL_TASK), [2, 0, 0, 0, 0, 1], b""),
                1,
            )
            .unwrap();
        assert_eq!(
            out.return_value, TC_ACT_REDIRECT,
            "ingress ifindex {ingress_ifindex}"
        );
        assert_eq!(&out.data_out[26..30], &NODE.octets(), "from this node");
    }
    assert_eq!(event(&dp, MeshEvent::Returned), 2);
}

/// The first 28 bytes (IP header and 8 bytes of TCP) of a 1450-byte segment `src:sport ->
/// dst:dport`: what an ICMP error quotes of it.
fn quoted(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut packet = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 63)
        .tcp(sport, dport, 7000, 64240)
        .ack(1)
        .write(&mut packet, &[0u8; 1410])
        .unwrap();
    packet.truncate(28);
    packet
}

/// An ICMP fragmentation needed (next-hop MTU 1400) from `from` to `to`, quoting `quote`.
fn frag_needed(from: Ipv4Addr, to: Ipv4Addr, macs: ([u8; 6], [u8; 6]), quote: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(from.octets(), to.octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut frame, quote)
        .unwrap();
    frame
}

#[test]
fn icmp_errors_about_answers_reach_their_task_in_its_own_terms() {
    let dp = mesh();
    let router = Ipv4Addr::new(192, 168, 7, 1);
    // One flow of each ingress kind, both on the local task (round robin: the remote task's
    // turn comes in between, with no route in a test run).
    let kept = Seg::syn(CLIENT, 40000, 8083);
    run(
        &dp,
        programs::XDP_UNDERLAY,
        &kept.as_client_sends(),
        XDP_PASS,
        "kept",
    );
    run(
        &dp,
        programs::XDP_UNDERLAY,
        &Seg::syn(CLIENT, 40001, 8080).as_client_sends(),
        XDP_DROP,
        "remote",
    );
    let natted = Seg::syn(CLIENT, 40002, 8080);
    run(
        &dp,
        programs::XDP_UNDERLAY,
        &natted.as_client_sends(),
        XDP_PASS,
        "natted",
    );

    for (port, sport, task_sees) in [
        (8083, 40000, (CLIENT, 40000)),
        (8080, 40002, (INGRESS_ADDR, 40002)),
    ] {
        // A router on the client's side cannot pass an answer node:P -> client on: it says
        // so to the node, quoting the answer.
        let error = frag_needed(
            router,
            NODE,
            (CLIENT_MAC, NODE_MAC),
            &quoted(NODE, CLIENT, port, sport),
        );
        let out = dp.test_run(programs::XDP_UNDERLAY, &error, 1).unwrap();
        assert_eq!(
            out.return_value, XDP_PASS,
            "{port}: to the local task, over VXLAN"
        );
        let inner = decapsulate(&out.data_out, (NODE_MAC, CLIENT_MAC), router);
        assert_eq!(
            inner,
            frag_needed(
                INGRESS_ADDR,
                LOCAL_TASK,
                (mesh_mac(), mac(LOCAL_TASK)),
                &quoted(LOCAL_TASK, task_sees.0, 80, task_sees.1)
            ),
            "{port}: the error as the task knows the flow, every checksum right"
        );
    }
    assert_eq!(event(&dp, MeshEvent::IcmpError), 2);

    // An error about no flow of ours (another port, or no such client) is the kernel's.
    for quote in [
        quoted(NODE, CLIENT, 22, 40000),
        quoted(NODE, CLIENT, 8083, 40009),
    ] {
        let error = frag_needed(router, NODE, (CLIENT_MAC, NODE_MAC), &quote);
        let out = dp.test_run(programs::XDP_UNDERLAY, &error, 1).unwrap();
        assert_eq!(out.return_value, XDP_PASS);
        assert_eq!(out.data_out, error, "untouched");
    }
    assert_eq!(event(&dp, MeshEvent::IcmpError), 2);
}

#[test]
fn icmp_errors_from_the_task_reach_the_client_about_its_own_packet() {
    let dp = mesh();
    let kept = Seg::syn(CLIENT, 40000, 8083);
    run(
        &dp,
        programs::XDP_UNDERLAY,
        &kept.as_client_sends(),
        XDP_PASS,
        "kept",
    );
    let remote = Seg::syn(CLIENT, 40001, 8080).as_client_sends();
    run(&dp, programs::XDP_UNDERLAY, &remote, XDP_DROP, "remote");
    let natted = Seg::syn(CLIENT, 40002, 8080);
    run(
        &dp,
        programs::XDP_UNDERLAY,
        &natted.as_client_sends(),
        XDP_PASS,
        "natted",
    );

    // The task quotes the packet as it got it: from the client (kept) or from the node's
    // ingress address (source NAT); the client gets it from the node, about client -> node:P.
    for (port, sport, task_saw) in [(8083, 40000, CLIENT), (8080, 40002, INGRESS_ADDR)] {
        let error = frag_needed(
            LOCAL_TASK,
            task_saw,
            (mac(LOCAL_TASK), [2, 0, 0, 0, 0, 1]),
            &quoted(task_saw, LOCAL_TASK, sport, 80),
        );
        let out = dp.test_run(programs::TC_MESH_REPLY, &error, 1).unwrap();
        assert_eq!(out.return_value, TC_ACT_REDIRECT, "{port}: to the underlay");
        let expected = frag_needed(
            NODE,
            CLIENT,
            (mac(LOCAL_TASK), [2, 0, 0, 0, 0, 1]),
            &quoted(CLIENT, NODE, sport, port),
        );
        assert_eq!(
            out.data_out[14..],
            expected[14..],
            "{port}: from the node, quoting the client's own packet, checksums right"
        );
    }
    assert_eq!(event(&dp, MeshEvent::IcmpError), 2);

    // About no flow of ours: untouched.
    let error = frag_needed(
        LOCAL_TASK,
        CLIENT,
        (mac(LOCAL_TASK), [2, 0, 0, 0, 0, 1]),
        &quoted(CLIENT, LOCAL_TASK, 40009, 80),
    );
    let out = dp.test_run(programs::TC_MESH_REPLY, &error, 1).unwrap();
    assert_eq!((out.return_value, out.data_out), (0, error));
}

#[test]
fn other_traffic_passes_untouched() {
    let dp = mesh();
    let frames = [
        (
            "unpublished port",
            Seg::syn(CLIENT, 40000, 22).as_client_sends(),
        ),
        (
            "another host's address",
            Seg {
                dst: OTHER_NODE,
                ..Seg::syn(CLIENT, 40000, 8080)
            }
            .as_client_sends(),
        ),
        (
            "UDP to a TCP-only port",
            udp(CLIENT, NODE, 40000, 8080, (CLIENT_MAC, NODE_MAC)),
        ),
        (
            "VXLAN",
            udp(OTHER_NODE, NODE, 50000, 4789, (CLIENT_MAC, NODE_MAC)),
        ),
        ("runt", vec![0u8; 14]),
        ("ARP", {
            let mut f = vec![0xffu8; 6];
            f.extend_from_slice(&CLIENT_MAC);
            f.extend_from_slice(&[0x08, 0x06]);
            f.extend_from_slice(&[0u8; 28]);
            f
        }),
        ("IP options", {
            // Published port, but with a header the fast path does not parse: the kernel's.
            let mut f = Seg::syn(CLIENT, 40000, 8080).as_client_sends();
            f[14] = 0x46;
            f
        }),
    ];
    for (what, frame) in frames {
        let out = dp.test_run(programs::XDP_UNDERLAY, &frame, 1).unwrap();
        assert_eq!(out.return_value, XDP_PASS, "{what}");
        assert_eq!(out.data_out, frame, "{what} must pass untouched");
    }
    let answer = Seg::syn(LOCAL_TASK, 80, 9).frame(mac(LOCAL_TASK), NODE_MAC, b"");
    let out = dp.test_run(programs::TC_MESH_REPLY, &answer, 1).unwrap();
    assert_eq!(
        out.return_value, 0,
        "a packet of no published flow passes the reply hook"
    );
    assert_eq!(out.data_out, answer);
    assert!(dp.mesh().flow_entries().unwrap().is_empty(), "no flow made");
}

/// A client's SYN to TCP 8080 carrying data, `ip_len` bytes as an IPv4 packet.
fn syn_of_size(sport: u16, ip_len: usize) -> (Seg, Vec<u8>) {
    let seg = Seg::syn(CLIENT, sport, 8080);
    let payload = vec![0x5a; ip_len - 20 - 20];
    let frame = seg.frame(CLIENT_MAC, NODE_MAC, &payload);
    assert_eq!(frame.len(), 14 + ip_len, "etherparse adds no TCP option");
    (seg, payload)
}

#[test]
fn the_ingress_size_limit_is_the_configured_ingress_mtu() {
    // --- 1. `ingress` at MTU 1300: 1400 bytes is over it, as 1460 is over the default 1450
    let dp = mesh_with_mtu(1300);
    for (sport, ip_len) in [(41000, 1400), (41001, 1301)] {
        let (seg, payload) = syn_of_size(sport, ip_len);
        let before = event(&dp, MeshEvent::TooBig);
        let frame = seg.frame(CLIENT_MAC, NODE_MAC, &payload);
        let out = dp.test_run(programs::XDP_UNDERLAY, &frame, 1).unwrap();
        // Path MTU discovery: a fragmentation needed naming 1300 goes straight back.
        assert_eq!(
            out.return_value, XDP_TX,
            "{ip_len} bytes over an ingress MTU of 1300: answered"
        );
        assert_eq!(
            out.data_out,
            crate::support::frag_needed_for(&frame, 1300),
            "{ip_len} bytes: fragmentation needed, MTU 1300, from the node"
        );
        assert_eq!(
            event(&dp, MeshEvent::TooBig),
            before + 1,
            "{ip_len} bytes: counted too_big"
        );
    }
    assert!(
        dp.mesh().flow_entries().unwrap().is_empty(),
        "no flow made for a packet too big"
    );

    // --- 2. 1250 bytes fits: NAT-ed and sent in VXLAN to the (local) task, payload intact
    let (seg, payload) = syn_of_size(41002, 1250);
    let out = dp
        .test_run(
            programs::XDP_UNDERLAY,
            &seg.frame(CLIENT_MAC, NODE_MAC, &payload),
            1,
        )
        .unwrap();
    assert_eq!(out.return_value, XDP_PASS, "1250 bytes: forwarded");
    let nated = Seg {
        src: INGRESS_ADDR,
        dst: LOCAL_TASK,
        sport: 41002,
        dport: 80,
        ..seg
    };
    assert_eq!(
        decapsulate(&out.data_out, (NODE_MAC, CLIENT_MAC), CLIENT),
        nated.frame(mesh_mac(), mac(LOCAL_TASK), &payload),
        "1250 bytes: the inner frame"
    );
    assert_eq!(event(&dp, MeshEvent::Forwarded), 1);
    // Exactly the MTU fits too. It is the remote task's turn, which a test run cannot route
    // (no ingress interface for `bpf_fib_lookup`): balanced, NAT-ed, then dropped as
    // `no_route`, past the size check.
    let (seg, payload) = syn_of_size(41003, 1300);
    let out = dp
        .test_run(
            programs::XDP_UNDERLAY,
            &seg.frame(CLIENT_MAC, NODE_MAC, &payload),
            1,
        )
        .unwrap();
    assert_eq!(out.return_value, XDP_DROP, "1300 bytes: to the remote task");
    assert_eq!(event(&dp, MeshEvent::NoRoute), 1, "1300 bytes: balanced");
    assert_eq!(event(&dp, MeshEvent::TooBig), 2, "1300 bytes: not too big");
    // The local task's turn again: 1300 bytes forwarded.
    let (seg, payload) = syn_of_size(41004, 1300);
    let out = dp
        .test_run(
            programs::XDP_UNDERLAY,
            &seg.frame(CLIENT_MAC, NODE_MAC, &payload),
            1,
        )
        .unwrap();
    assert_eq!(out.return_value, XDP_PASS, "1300 bytes: forwarded");
    // Counted when balanced: the remote task's turn too.
    assert_eq!(event(&dp, MeshEvent::Forwarded), 3);

    // --- 3. host mode is not on `ingress`: its limit does not apply there
    let big_udp = {
        let b = PacketBuilder::ethernet2(CLIENT_MAC, NODE_MAC)
            .ipv4(CLIENT.octets(), NODE.octets(), 64)
            .udp(41005, 5353);
        let mut frame = Vec::new();
        b.write(&mut frame, &[0u8; 1400]).unwrap();
        frame
    };
    let out = dp.test_run(programs::XDP_UNDERLAY, &big_udp, 1).unwrap();
    assert_eq!(
        out.return_value, XDP_PASS,
        "host mode: 1428 bytes forwarded"
    );
    assert_eq!(
        event(&dp, MeshEvent::TooBig),
        2,
        "host mode: nothing too big"
    );

    // --- 4. an MTU of 0 (maps an older agent wrote) is the default, 1450
    let dp = mesh_with_mtu(0);
    for (sport, ip_len, verdict) in [(41010, 1451, XDP_TX), (41011, 1450, XDP_PASS)] {
        let (seg, payload) = syn_of_size(sport, ip_len);
        let out = dp
            .test_run(
                programs::XDP_UNDERLAY,
                &seg.frame(CLIENT_MAC, NODE_MAC, &payload),
                1,
            )
            .unwrap();
        assert_eq!(out.return_value, verdict, "no MTU set: {ip_len} bytes");
    }
}

/// The reset a closed port would send for `seg` (RFC 9293 3.10.7.1), from the node.
fn reset_for(seg: &Seg, payload_len: u32) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(NODE_MAC, CLIENT_MAC)
        .ipv4(seg.dst.octets(), seg.src.octets(), 64)
        .tcp(
            seg.dport,
            seg.sport,
            if seg.ack { seg.ack_no } else { 0 },
            0,
        )
        .rst();
    let b = if seg.ack {
        b
    } else {
        b.ack(seg.seq + payload_len + u32::from(seg.syn))
    };
    let mut frame = Vec::new();
    b.write(&mut frame, &[]).unwrap();
    frame
}

#[test]
fn bad_and_unservable_packets_are_dropped_or_refused_and_counted() {
    let dp = mesh();
    let dropped = [(
        "truncated TCP header",
        Seg::syn(CLIENT, 40000, 8080).as_client_sends()[..14 + 20 + 10].to_vec(),
        MeshEvent::Malformed,
    )];
    for (what, frame, counted) in dropped {
        let before = event(&dp, counted);
        let out = dp.test_run(programs::XDP_UNDERLAY, &frame, 1).unwrap();
        assert_eq!(out.return_value, XDP_DROP, "{what}");
        assert_eq!(
            event(&dp, counted),
            before + 1,
            "{what}: {counted:?} counted"
        );
    }
    // Larger than the ingress MTU (1450 here): a fragmentation needed, sent back, counted.
    let big = Seg::syn(CLIENT, 40001, 8080).frame(CLIENT_MAC, NODE_MAC, &[0u8; 1420]);
    let out = dp.test_run(programs::XDP_UNDERLAY, &big, 1).unwrap();
    assert_eq!(out.return_value, XDP_TX, "larger than the ingress MTU");
    assert_eq!(out.data_out, crate::support::frag_needed_for(&big, 1450));
    assert_eq!(event(&dp, MeshEvent::TooBig), 1);
    // What no task can take is refused at once, as a closed port would: a reset, sent back.
    let mid_stream = Seg::syn(CLIENT, 40002, 8080).data();
    let no_task = Seg::syn(CLIENT, 40003, 8081);
    let refused = [
        (
            "mid-stream segment of no known flow",
            mid_stream,
            b"GET /".as_slice(),
            MeshEvent::BackendGone,
        ),
        (
            "a port with no task",
            no_task,
            b"".as_slice(),
            MeshEvent::NoBackend,
        ),
    ];
    for (what, seg, payload, counted) in refused {
        let before = event(&dp, counted);
        let out = dp
            .test_run(
                programs::XDP_UNDERLAY,
                &seg.frame(CLIENT_MAC, NODE_MAC, payload),
                1,
            )
            .unwrap();
        assert_eq!(out.return_value, XDP_TX, "{what}");
        assert_eq!(
            out.data_out,
            reset_for(&seg, payload.len() as u32),
            "{what}: the reset"
        );
        assert_eq!(
            event(&dp, counted),
            before + 1,
            "{what}: {counted:?} counted"
        );
    }
    // A datagram no task can take gets a port unreachable from node:P, as a closed port's.
    let mut empty = udp(CLIENT, NODE, 40005, 8081, (CLIENT_MAC, NODE_MAC));
    empty.truncate(14 + 20 + 8);
    empty[14 + 2..14 + 4].copy_from_slice(&28u16.to_be_bytes());
    empty[14 + 20 + 4..14 + 20 + 8].copy_from_slice(&[0, 8, 0, 0]);
    let mut ip = etherparse::Ipv4Header::from_slice(&empty[14..]).unwrap().0;
    ip.header_checksum = ip.calc_header_checksum();
    empty[14..34].copy_from_slice(&ip.to_bytes());
    for (what, datagram) in [
        (
            "UDP to a port with no task",
            udp(CLIENT, NODE, 40004, 8081, (CLIENT_MAC, NODE_MAC)),
        ),
        ("an empty datagram (the frame grows)", empty),
        (
            "UDP to a port whose frontend is unknown",
            udp(CLIENT, NODE, 40006, 8082, (CLIENT_MAC, NODE_MAC)),
        ),
    ] {
        let before = event(&dp, MeshEvent::NoBackend);
        let out = dp.test_run(programs::XDP_UNDERLAY, &datagram, 1).unwrap();
        assert_eq!(out.return_value, XDP_TX, "{what}");
        assert_eq!(
            out.data_out,
            crate::support::port_unreachable_for(&datagram),
            "{what}: the port unreachable"
        );
        assert_eq!(
            event(&dp, MeshEvent::NoBackend),
            before + 1,
            "{what}: no_backend counted"
        );
    }
    // A reset is never answered with one.
    let mut rst = no_task.as_client_sends();
    rst[14 + 20 + 13] = 0x04;
    assert_eq!(
        dp.test_run(programs::XDP_UNDERLAY, &rst, 1)
            .unwrap()
            .return_value,
        XDP_DROP
    );
    assert!(dp.mesh().flow_entries().unwrap().is_empty(), "no flow made");
}

/// Runs `frame` through `program` and checks the verdict.
fn run(dp: &Dataplane, program: &'static str, frame: &[u8], verdict: u32, what: &str) {
    let out = dp.test_run(program, frame, 1).unwrap();
    assert_eq!(out.return_value, verdict, "{what}");
}

/// The local task's answer `task_isn` to `syn`, then the client's ACK of it: the handshake's
/// last two steps through the mesh, which confirm the flow.
fn complete_handshake(dp: &Dataplane, syn: Seg, task_isn: u32) {
    let syn_ack = Seg::syn_ack_from_task(syn.sport, task_isn);
    run(
        dp,
        programs::TC_MESH_REPLY,
        &syn_ack.as_task_sends(),
        TC_ACT_REDIRECT,
        "SYN-ACK",
    );
    run(
        dp,
        programs::XDP_UNDERLAY,
        &syn.acking(task_isn).as_client_sends(),
        XDP_PASS,
        "the handshake's ACK",
    );
}

fn entries(dp: &Dataplane) -> (usize, usize) {
    (
        dp.mesh().flow_entries().unwrap().len(),
        dp.mesh().unconfirmed_flow_entries().unwrap().len(),
    )
}

#[test]
fn closed_mesh_flows_are_forgotten_and_quiet_open_ones_kept() {
    let mut dp = mesh();
    // Two connections to the local task (slots 0 and 2; slot 1 is the remote task's turn,
    // which a test run cannot route, and never answers).
    let closing = Seg::syn(CLIENT, 42000, 8080);
    run(
        &dp,
        programs::XDP_UNDERLAY,
        &closing.as_client_sends(),
        XDP_PASS,
        "SYN",
    );
    let _ = dp.test_run(
        programs::XDP_UNDERLAY,
        &Seg::syn(CLIENT, 42001, 8080).as_client_sends(),
        1,
    );
    let open = Seg::syn(CLIENT, 42002, 8080);
    run(
        &dp,
        programs::XDP_UNDERLAY,
        &open.as_client_sends(),
        XDP_PASS,
        "SYN",
    );
    complete_handshake(&dp, closing, 5000);
    complete_handshake(&dp, open, 6000);
    // The client closes, then the task (its FIN goes through the reply program).
    let fin = Seg {
        fin: true,
        ..closing.acking(5000)
    }
    .as_client_sends();
    run(&dp, programs::XDP_UNDERLAY, &fin, XDP_PASS, "client's FIN");
    let task_fin = Seg {
        syn: false,
        fin: true,
        ..Seg::syn_ack_from_task(42000, 5000)
    }
    .as_task_sends();
    run(
        &dp,
        programs::TC_MESH_REPLY,
        &task_fin,
        TC_ACT_REDIRECT,
        "task's FIN",
    );
    // Two confirmed flows; the unroutable one, unanswered, stored its entries too.
    assert_eq!(entries(&dp), (4, 2));

    // Right away nothing goes (a last ACK may still come); once quiet, the closed flow goes,
    // and the unconfirmed one, and the open one, quiet as long, stays.
    let now = shoal_dataplane::lb::monotonic_now_ns();
    assert_eq!(dp.mesh_mut().expire_flows(now).unwrap(), 0);
    let later = now + shoal_dataplane::lb::CLOSED_FLOW_LINGER + 1_000_000_000;
    assert_eq!(
        dp.mesh_mut().expire_flows(later).unwrap(),
        4,
        "the closed flow's two entries, the unconfirmed flow's two"
    );
    assert_eq!(entries(&dp), (2, 0));
    let open_left = dp
        .mesh()
        .flow_entries()
        .unwrap()
        .iter()
        .any(|(k, _)| k.direction == 0 && u16::from_be(k.src_port) == 42002);
    assert!(open_left, "a quiet open connection is never cut");
    assert_eq!(event(&dp, MeshEvent::Expired), 2);
    assert_eq!(event(&dp, MeshEvent::UnconfirmedExpired), 2);
    assert_eq!(event(&dp, MeshEvent::Evicted), 0);
    assert_eq!(event(&dp, MeshEvent::UnconfirmedEvicted), 0);
}

#[test]
fn the_clients_ack_of_the_task_answer_confirms_a_flow_not_the_answer_alone() {
    let dp = mesh();
    // --- 1. a SYN opens an unconfirmed flow; its retransmission keeps it and its task
    let syn = Seg::syn(CLIENT, 43000, 8080);
    for _ in 0..2 {
        run(
            &dp,
            programs::XDP_UNDERLAY,
            &syn.as_client_sends(),
            XDP_PASS,
            "SYN",
        );
    }
    assert_eq!(entries(&dp), (0, 2));
    assert_eq!(event(&dp, MeshEvent::Forwarded), 1);

    // --- 2. the task's SYN-ACK is un-NAT-ed, but confirms nothing: a task answers a spoofed
    // SYN just the same
    let syn_ack = Seg::syn_ack_from_task(43000, 7000);
    run(
        &dp,
        programs::TC_MESH_REPLY,
        &syn_ack.as_task_sends(),
        TC_ACT_REDIRECT,
        "SYN-ACK",
    );
    assert_eq!(entries(&dp), (0, 2));

    // --- 3. an ACK that does not acknowledge the SYN-ACK (a blind spoofer's) is forwarded
    // on the unconfirmed flow, and confirms nothing either
    run(
        &dp,
        programs::XDP_UNDERLAY,
        &syn.data().as_client_sends(),
        XDP_PASS,
        "blind ACK",
    );
    assert_eq!(entries(&dp), (0, 2));
    assert_eq!(event(&dp, MeshEvent::Confirmed), 0);

    // --- 4. the client's ACK of the SYN-ACK moves both entries to the confirmed table
    let ack = syn.acking(7000);
    let out = dp
        .test_run(programs::XDP_UNDERLAY, &ack.as_client_sends(), 1)
        .unwrap();
    assert_eq!(out.return_value, XDP_PASS);
    let inner = decapsulate(&out.data_out, (NODE_MAC, CLIENT_MAC), CLIENT);
    assert_eq!(
        inner,
        Seg {
            src: INGRESS_ADDR,
            dst: LOCAL_TASK,
            sport: 43000,
            dport: 80,
            ..ack
        }
        .frame(mesh_mac(), mac(LOCAL_TASK), b""),
        "forwarded as before"
    );
    assert_eq!(entries(&dp), (2, 0));
    assert_eq!(event(&dp, MeshEvent::Confirmed), 1);
    assert_eq!(event(&dp, MeshEvent::Forwarded), 1, "the same flow");
    // The task's next answer finds its reply entry there.
    let answer = Seg {
        syn: false,
        seq: 7001,
        ..syn_ack
    };
    run(
        &dp,
        programs::TC_MESH_REPLY,
        &answer.as_task_sends(),
        TC_ACT_REDIRECT,
        "answer",
    );

    // --- 5. UDP: the client's next datagram after its task's answer confirms the flow
    let query = udp(CLIENT, NODE, 50000, 5353, (CLIENT_MAC, NODE_MAC));
    run(&dp, programs::XDP_UNDERLAY, &query, XDP_PASS, "query");
    run(&dp, programs::XDP_UNDERLAY, &query, XDP_PASS, "query again");
    assert_eq!(entries(&dp), (2, 2), "not answered yet: unconfirmed");
    let answer = udp(
        HOST_TASK,
        CLIENT,
        53,
        50000,
        (mac(HOST_TASK), [2, 0, 0, 0, 0, 1]),
    );
    run(
        &dp,
        programs::TC_MESH_REPLY,
        &answer,
        TC_ACT_REDIRECT,
        "UDP answer",
    );
    assert_eq!(entries(&dp), (2, 2), "answered, not confirmed yet");
    run(&dp, programs::XDP_UNDERLAY, &query, XDP_PASS, "next query");
    assert_eq!(entries(&dp), (4, 0));
    assert_eq!(event(&dp, MeshEvent::Confirmed), 2);
}

/// The address of the `i`-th spoofed source of a flood (198.18.0.0/15, the benchmarking
/// range: never a real client).
fn spoofed(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i)
}

#[test]
fn a_syn_flood_from_spoofed_sources_never_displaces_an_established_flow() {
    let mut dp = mesh();
    // --- 1. an established connection (confirmed), then quiet
    let established = Seg::syn(CLIENT, 44000, 8080);
    run(
        &dp,
        programs::XDP_UNDERLAY,
        &established.as_client_sends(),
        XDP_PASS,
        "SYN",
    );
    complete_handshake(&dp, established, 8000);
    assert_eq!(entries(&dp), (2, 0));
    let confirmed_before = dp.mesh().flow_entries().unwrap();
    let now = shoal_dataplane::lb::monotonic_now_ns();
    assert_eq!(dp.mesh_mut().expire_flows(now).unwrap(), 0);

    // --- 2. SYNs from distinct spoofed sources: more entries than the unconfirmed table
    // holds. The local task answers the ones it gets (as a real one does), which confirms
    // nothing. Half of them are the remote task's (dropped here, their entries stored).
    let capacity = shoal_common::mesh::MAX_UNCONFIRMED_ENTRIES as usize;
    let flood = capacity * 5 / 8;
    let send_syns = |dp: &Dataplane, range: std::ops::Range<usize>| {
        for i in range {
            let syn = Seg::syn(spoofed(i as u32), 1024 + (i % 60_000) as u16, 8080);
            let out = dp
                .test_run(programs::XDP_UNDERLAY, &syn.as_client_sends(), 1)
                .unwrap();
            if out.return_value == XDP_PASS && i % 64 == 0 {
                // The task's SYN-ACK, to the NAT port the mesh chose.
                let inner = decapsulate(&out.data_out, (NODE_MAC, CLIENT_MAC), syn.src);
                let nat_port = u16::from_be_bytes([inner[34], inner[35]]);
                let syn_ack = Seg::syn_ack_from_task(nat_port, 9000);
                let _ = dp.test_run(programs::TC_MESH_REPLY, &syn_ack.as_task_sends(), 1);
            }
        }
    };
    // In two waves with an expiry round between (at once: nothing expires), so the agent's
    // count sees what the LRU takes from the first wave.
    send_syns(&dp, 0..flood / 2);
    assert_eq!(dp.mesh_mut().expire_flows(now).unwrap(), 0);
    send_syns(&dp, flood / 2..flood);
    let (confirmed, unconfirmed) = entries(&dp);
    assert_eq!(
        dp.mesh().flow_entries().unwrap(),
        confirmed_before,
        "the established flow's entries, untouched, and nothing else confirmed"
    );
    assert_eq!(confirmed, 2);
    assert!(
        unconfirmed <= capacity,
        "{unconfirmed} unconfirmed entries, above the table's {capacity}"
    );
    assert_eq!(
        event(&dp, MeshEvent::Confirmed),
        1,
        "only the real handshake"
    );

    // --- 3. the established connection goes on, both ways
    let data = established.acking(8000);
    let out = dp
        .test_run(
            programs::XDP_UNDERLAY,
            &data.frame(CLIENT_MAC, NODE_MAC, b"GET /"),
            1,
        )
        .unwrap();
    assert_eq!(out.return_value, XDP_PASS, "established data forwarded");
    let answer = Seg {
        syn: false,
        seq: 8001,
        ..Seg::syn_ack_from_task(44000, 8000)
    };
    run(
        &dp,
        programs::TC_MESH_REPLY,
        &answer.as_task_sends(),
        TC_ACT_REDIRECT,
        "established answer",
    );

    // --- 4. seconds later the agent's expiry forgets the whole flood, and counts it: what
    // the LRU took from the first wave, and what expiry removed
    let later = shoal_dataplane::lb::monotonic_now_ns()
        + shoal_dataplane::mesh::UNCONFIRMED_TCP_IDLE
        + 1_000_000_000;
    let removed = dp.mesh_mut().expire_flows(later).unwrap();
    assert_eq!(removed, unconfirmed, "every unconfirmed entry");
    assert_eq!(entries(&dp), (2, 0), "the established flow alone is left");
    assert_eq!(
        event(&dp, MeshEvent::UnconfirmedExpired),
        unconfirmed as u64
    );
    let evicted = event(&dp, MeshEvent::UnconfirmedEvicted);
    let overflow = (2 * flood - capacity) as u64;
    assert!(
        evicted >= overflow / 2 && evicted <= (2 * flood) as u64,
        "{evicted} unconfirmed entries counted as evicted, {overflow} over the capacity"
    );
    assert_eq!(
        event(&dp, MeshEvent::Evicted),
        0,
        "no established entry lost"
    );
}

/// The next hop's MAC toward the other node, as the test's underlay neighbour table says, and
/// the one it changes to.
const OTHER_NODE_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x12];
const OTHER_NODE_NEW_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x13];

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// A SYN from `CLIENT` (ports from `next_port` on) that the round robin gives the remote task:
/// the local task's turns pass to the kernel. Returns its segment and the program's output.
fn remote_syn(
    dp: &Dataplane,
    ifindex: u32,
    next_port: &mut u16,
) -> (Seg, shoal_dataplane::TestRunOutcome) {
    for _ in 0..2 {
        let syn = Seg::syn(CLIENT, *next_port, 8080);
        *next_port += 1;
        let out = dp
            .test_run_on(
                programs::XDP_UNDERLAY,
                &syn.as_client_sends(),
                1,
                Some(ifindex),
            )
            .unwrap();
        if out.return_value != XDP_PASS {
            return (syn, out);
        }
    }
    panic!("two SYNs in a row went to the local task");
}

/// The outer Ethernet header and destination of a frame sent toward the remote task's node.
fn outer_macs_and_dst(frame: &[u8]) -> ([u8; 6], [u8; 6], Ipv4Addr) {
    let outer = SlicedPacket::from_ethernet(frame).expect("outer frame parses");
    let eth = outer.link.as_ref().unwrap().to_header().unwrap();
    let eth = eth.ethernet2().unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &outer.net else {
        panic!("outer IPv4");
    };
    let dst = Ipv4Addr::from(ip.header().to_header().destination);
    (eth.destination, eth.source, dst)
}

#[test]
fn a_remote_task_is_reached_over_its_nodes_route_which_is_kept_and_followed_when_it_changes() {
    use shoal_tests::{names::unique_prefix, netns::Underlay, wait::wait_until};
    use std::{path::Path, time::Duration};

    // --- an underlay to route over: u0 with the node's address, the other node's neighbour
    let underlay = Underlay::create(&format!("{}-route", unique_prefix()), "192.168.7.11/24");
    underlay.set_neighbour(OTHER_NODE, OTHER_NODE_MAC);
    let ifindex = underlay.ifindex;

    shoal_dataplane::netns::run_in(Path::new(&underlay.netns.path()), || {
        let dp = mesh();
        let mut port = 42000;

        // --- 1. the remote task's SYN leaves again on u0 (XDP_TX), to its node's VTEP, with
        //        the neighbour's MAC and u0's
        let (syn, out) = remote_syn(&dp, ifindex, &mut port);
        assert_eq!(out.return_value, XDP_TX);
        let (dst_mac, src_mac, dst) = outer_macs_and_dst(&out.data_out);
        assert_eq!(dst, OTHER_NODE);
        assert_eq!(dst_mac, OTHER_NODE_MAC);
        assert_eq!(mac_text(src_mac), underlay.mac);
        assert_eq!(event(&dp, MeshEvent::NoRoute), 0);

        // --- 2. the neighbour moves: new flows follow it within a few seconds (the kept route
        //        is looked up again once it is a second old)
        underlay.set_neighbour(OTHER_NODE, OTHER_NODE_NEW_MAC);
        wait_until(Duration::from_secs(5), "the new next hop", || {
            let (_, out) = remote_syn(&dp, ifindex, &mut port);
            let (dst_mac, _, _) = outer_macs_and_dst(&out.data_out);
            if out.return_value == XDP_TX && dst_mac == OTHER_NODE_NEW_MAC {
                Ok(())
            } else {
                Err(format!("verdict {}, MAC {dst_mac:02x?}", out.return_value))
            }
        });

        // --- 3. an underlay whose MTU is below what `ingress` lets through: its route is not
        //        kept, each packet is looked up with its size, so a large one is dropped as
        //        before the cache, and a small one still goes
        underlay.netns.ip(&["link", "set", "u0", "mtu", "1000"]);
        let large = syn.data().frame(CLIENT_MAC, NODE_MAC, &[b'x'; 1200]);
        let small = syn.data().frame(CLIENT_MAC, NODE_MAC, b"GET /");
        wait_until(Duration::from_secs(5), "large segments dropped", || {
            let before = event(&dp, MeshEvent::NoRoute);
            let out = dp
                .test_run_on(programs::XDP_UNDERLAY, &large, 1, Some(ifindex))
                .unwrap();
            if out.return_value == XDP_DROP && event(&dp, MeshEvent::NoRoute) == before + 1 {
                Ok(())
            } else {
                Err(format!("verdict {}", out.return_value))
            }
        });
        let out = dp
            .test_run_on(programs::XDP_UNDERLAY, &small, 1, Some(ifindex))
            .unwrap();
        assert_eq!(out.return_value, XDP_TX, "a small segment of the same flow");
        assert_eq!(outer_macs_and_dst(&out.data_out).2, OTHER_NODE);
    })
    .unwrap();
}
