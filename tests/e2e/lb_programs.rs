//! The VIP load balancer's tc programs on crafted frames (BPF_PROG_TEST_RUN), each output
//! compared byte for byte with the frame it must be: DNAT round robin, the reply path, flows
//! kept and re-balanced, resets, ARP, and everything that must pass untouched or be dropped
//! and counted. The maps are programmed through the same `LoadBalancer` the agent uses.

use std::{collections::BTreeSet, net::Ipv4Addr};

use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder};
use shoal_common::{lb::LbEvent, programs};
use shoal_dataplane::{Dataplane, LbTable};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 19, 254);
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 10, 19, 2),
    Ipv4Addr::new(10, 10, 19, 3),
    Ipv4Addr::new(10, 10, 19, 4),
];
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 10, 19, 10);

fn mac(ip: Ipv4Addr) -> [u8; 6] {
    shoal_common::lb::mac_for_ip(ip.octets())
}

/// A TCP segment as a task sends or receives it.
#[derive(Clone)]
struct Tcp {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    sport: u16,
    dport: u16,
    seq: u32,
    /// `None`: no ACK flag.
    ack: Option<u32>,
    syn: bool,
    ip_options: Vec<u8>,
    payload: Vec<u8>,
}

impl Tcp {
    /// A client's SYN to the VIP, from `sport`.
    fn syn_to_vip(sport: u16) -> Tcp {
        Tcp {
            src: CLIENT,
            dst: VIP,
            src_mac: mac(CLIENT),
            dst_mac: mac(VIP),
            sport,
            dport: 80,
            seq: 1000 + u32::from(sport),
            ack: None,
            syn: true,
            ip_options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// `backend`'s SYN-ACK (ISN 5000) to the client's `dport`, acknowledging `ack`.
    fn syn_ack_from(backend: Ipv4Addr, dport: u16, ack: u32) -> Tcp {
        Tcp {
            src: backend,
            dst: CLIENT,
            src_mac: mac(backend),
            dst_mac: mac(CLIENT),
            sport: 80,
            dport,
            seq: 5000,
            ack: Some(ack),
            syn: true,
            ip_options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// The next segment of the same connection: an ACK carrying data.
    fn data(&self) -> Tcp {
        Tcp {
            seq: self.seq + 1,
            ack: Some(77),
            syn: false,
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            ..self.clone()
        }
    }

    /// The same segment after DNAT to `backend`.
    fn to_backend(&self, backend: Ipv4Addr) -> Tcp {
        Tcp {
            dst: backend,
            dst_mac: mac(backend),
            ..self.clone()
        }
    }

    fn frame(&self) -> Vec<u8> {
        let mut ip =
            Ipv4Header::new(0, 64, IpNumber::TCP, self.src.octets(), self.dst.octets()).unwrap();
        ip.options = self.ip_options.as_slice().try_into().unwrap();
        let mut tcp = PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .tcp(self.sport, self.dport, self.seq, 64240);
        if self.syn {
            tcp = tcp.syn();
        }
        if let Some(ack) = self.ack {
            tcp = tcp.ack(ack);
        }
        let mut frame = Vec::new();
        tcp.write(&mut frame, &self.payload).unwrap();
        frame
    }
}

/// A UDP datagram from the client to `dst` (`checksum: false` zeroes the checksum: "none").
fn udp_frame(dst: Ipv4Addr, sport: u16, checksum: bool) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(mac(CLIENT), mac(dst))
        .ipv4(CLIENT.octets(), dst.octets(), 64)
        .udp(sport, 53);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"ping").unwrap();
    if !checksum {
        let udp_check = 14 + 20 + 6;
        frame[udp_check..udp_check + 2].copy_from_slice(&[0, 0]);
    }
    frame
}

/// The reset the programs must send back for `seg` (RFC 9293 3.10.7.1), from the VIP.
fn reset_for(seg: &Tcp) -> Vec<u8> {
    let consumed = seg.payload.len() as u32 + u32::from(seg.syn);
    let builder = PacketBuilder::ethernet2(seg.dst_mac, seg.src_mac)
        .ipv4(seg.dst.octets(), seg.src.octets(), 64)
        .tcp(seg.dport, seg.sport, seg.ack.unwrap_or(0), 0)
        .rst();
    let builder = match seg.ack {
        Some(_) => builder,
        None => builder.ack(seg.seq + consumed),
    };
    let mut frame = Vec::new();
    builder.write(&mut frame, &[]).unwrap();
    frame
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&mac(CLIENT));
    frame.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac(CLIENT));
    frame.extend_from_slice(&CLIENT.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// A private data path (no pins) whose VIP has `backends`.
fn balancer(backends: &[Ipv4Addr]) -> Dataplane {
    let mut dp = Dataplane::load(None).unwrap();
    set_backends(&mut dp, backends);
    dp
}

fn set_backends(dp: &mut Dataplane, backends: &[Ipv4Addr]) {
    let table: LbTable = [(VIP, backends.iter().copied().collect::<BTreeSet<_>>())].into();
    dp.lb_mut().apply(&table).unwrap();
}

/// Runs the task-side ingress program (what a task sends) on `frame`.
fn send(dp: &Dataplane, frame: &[u8]) -> (u32, Vec<u8>) {
    let out = dp.test_run(programs::TC_INGRESS, frame, 1).unwrap();
    (out.return_value, out.data_out)
}

/// Runs the task-side egress program (what a task receives) on `frame`.
fn receive(dp: &Dataplane, frame: &[u8]) -> (u32, Vec<u8>) {
    let out = dp.test_run(programs::TC_EGRESS, frame, 1).unwrap();
    (out.return_value, out.data_out)
}

fn event(dp: &Dataplane, which: LbEvent) -> u64 {
    dp.lb()
        .events()
        .unwrap()
        .into_iter()
        .find(|(e, _)| *e == which)
        .map(|(_, n)| n)
        .unwrap()
}

#[test]
fn new_flows_to_a_vip_are_dnat_ed_round_robin() {
    let dp = balancer(&BACKENDS);
    for i in 0..6u16 {
        let syn = Tcp::syn_to_vip(40000 + i);
        let (verdict, out) = send(&dp, &syn.frame());
        let backend = BACKENDS[usize::from(i) % 3];
        assert_eq!(verdict, TC_ACT_OK, "SYN {i}");
        assert_eq!(
            out,
            syn.to_backend(backend).frame(),
            "SYN {i} must go to {backend}, with the destination MAC and both checksums fixed"
        );
    }
    let counters = dp.lb().counters().unwrap();
    let vip_total = counters.iter().find(|c| c.backend.is_none()).unwrap();
    assert_eq!(
        (vip_total.counters.packets, vip_total.counters.flows),
        (6, 6)
    );
    for backend in BACKENDS {
        let c = counters
            .iter()
            .find(|c| c.backend == Some(backend))
            .unwrap();
        assert_eq!((c.counters.packets, c.counters.flows), (2, 2), "{backend}");
    }
}

#[test]
fn a_flow_stays_on_its_backend_and_replies_come_from_the_vip() {
    let dp = balancer(&BACKENDS);
    let syn = Tcp::syn_to_vip(41000);
    let (_, first) = send(&dp, &syn.frame());
    assert_eq!(first, syn.to_backend(BACKENDS[0]).frame());
    // Other clients' new flows move the cursor on; this flow's segments do not.
    send(&dp, &Tcp::syn_to_vip(41001).frame());
    for _ in 0..3 {
        let data = syn.data();
        let (verdict, out) = send(&dp, &data.frame());
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(out, data.to_backend(BACKENDS[0]).frame());
    }
    // A retransmitted SYN (same ISN) keeps its backend too.
    assert_eq!(
        send(&dp, &syn.frame()).1,
        syn.to_backend(BACKENDS[0]).frame()
    );

    // The backend's SYN-ACK reaches the client with the VIP as its source.
    let syn_ack = Tcp::syn_ack_from(BACKENDS[0], 41000, syn.seq + 1);
    let (verdict, out) = receive(&dp, &syn_ack.frame());
    assert_eq!(verdict, TC_ACT_OK);
    let from_vip = Tcp {
        src: VIP,
        src_mac: mac(VIP),
        ..syn_ack.clone()
    };
    assert_eq!(out, from_vip.frame(), "reply must be reverse-NAT-ed");
    assert_eq!(event(&dp, LbEvent::ReplyNat), 1);

    // A backend talking to the client on its own (no balanced flow) is left alone.
    let unrelated = Tcp {
        dport: 41999,
        ..syn_ack
    };
    assert_eq!(receive(&dp, &unrelated.frame()).1, unrelated.frame());
}

#[test]
fn a_reused_port_with_a_new_isn_is_balanced_again() {
    let dp = balancer(&BACKENDS);
    let first = Tcp::syn_to_vip(42000);
    assert_eq!(
        send(&dp, &first.frame()).1,
        first.to_backend(BACKENDS[0]).frame()
    );
    let again = Tcp {
        seq: first.seq + 100_000,
        ..first
    };
    assert_eq!(
        send(&dp, &again.frame()).1,
        again.to_backend(BACKENDS[1]).frame()
    );
}

#[test]
fn udp_to_a_vip_is_balanced_and_a_missing_checksum_stays_missing() {
    let dp = balancer(&BACKENDS);
    for (i, checksum) in [(0u16, true), (1, false)] {
        let frame = udp_frame(VIP, 50000 + i, checksum);
        let (verdict, out) = send(&dp, &frame);
        assert_eq!(verdict, TC_ACT_OK);
        let backend = BACKENDS[usize::from(i)];
        let mut expected = udp_frame(backend, 50000 + i, checksum);
        expected[0..6].copy_from_slice(&mac(backend));
        assert_eq!(out, expected, "datagram {i} (checksum {checksum})");
    }
    // The same 5-tuple stays on its backend.
    let (_, out) = send(&dp, &udp_frame(VIP, 50000, true));
    assert_eq!(out, udp_frame(BACKENDS[0], 50000, true));
}

#[test]
fn ip_options_move_the_l4_header_and_are_kept() {
    let dp = balancer(&BACKENDS);
    let syn = Tcp {
        // NOP, NOP, NOP, end of options: one 4-byte word.
        ip_options: vec![1, 1, 1, 0],
        ..Tcp::syn_to_vip(43000)
    };
    let (verdict, out) = send(&dp, &syn.frame());
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, syn.to_backend(BACKENDS[0]).frame());
}

#[test]
fn traffic_not_for_a_vip_passes_untouched() {
    let dp = balancer(&BACKENDS);
    let direct = Tcp {
        dst: BACKENDS[1],
        dst_mac: mac(BACKENDS[1]),
        ..Tcp::syn_to_vip(44000)
    };
    let ping = {
        let b = PacketBuilder::ethernet2(mac(CLIENT), mac(BACKENDS[0]))
            .ipv4(CLIENT.octets(), BACKENDS[0].octets(), 64)
            .icmpv4_echo_request(1, 1);
        let mut f = Vec::new();
        b.write(&mut f, b"ping").unwrap();
        f
    };
    let ipv6 = {
        let b = PacketBuilder::ethernet2(mac(CLIENT), mac(VIP))
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(44001, 80, 1, 1000)
            .syn();
        let mut f = Vec::new();
        b.write(&mut f, &[]).unwrap();
        f
    };
    let mut other_arp = arp_request(BACKENDS[2]);
    other_arp.extend_from_slice(&[0; 18]);
    // A datagram to the VIP's neighbour with a truncated UDP header.
    let mut short = udp_frame(Ipv4Addr::new(10, 10, 19, 253), 45000, true);
    short.truncate(14 + 20 + 3);
    for (what, frame) in [
        ("TCP to a task", direct.frame()),
        ("ICMP to a task", ping),
        ("IPv6", ipv6),
        ("ARP for a task", other_arp),
        ("truncated, not for a VIP", short),
    ] {
        let (verdict, out) = send(&dp, &frame);
        assert_eq!(verdict, TC_ACT_OK, "{what}");
        assert_eq!(out, frame, "{what} must pass untouched");
        let (verdict, out) = receive(&dp, &frame);
        assert_eq!((verdict, out), (TC_ACT_OK, frame), "{what}, egress");
    }
    assert!(dp.lb().flow_entries().unwrap().is_empty());
}

#[test]
fn arp_requests_for_a_vip_are_answered_in_place() {
    let dp = balancer(&BACKENDS);
    let (verdict, out) = send(&dp, &arp_request(VIP));
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "the reply goes back to the asking task"
    );
    let mut reply = mac(CLIENT).to_vec();
    reply.extend_from_slice(&mac(VIP));
    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    reply.extend_from_slice(&mac(VIP));
    reply.extend_from_slice(&VIP.octets());
    reply.extend_from_slice(&mac(CLIENT));
    reply.extend_from_slice(&CLIENT.octets());
    assert_eq!(out, reply);
    assert_eq!(event(&dp, LbEvent::ArpReplied), 1);
}

#[test]
fn malformed_packets_and_fragments_to_a_vip_are_dropped_and_counted() {
    let dp = balancer(&BACKENDS);
    // TCP header cut after 10 bytes.
    let mut truncated = Tcp::syn_to_vip(46000).frame();
    truncated.truncate(14 + 20 + 10);
    // A first fragment (more fragments set) and a later one.
    let fragment = |offset: u16, more: bool| {
        let mut f = udp_frame(VIP, 46001, true);
        let flags_offset: u16 = (u16::from(more) << 13) | offset;
        f[14 + 6..14 + 8].copy_from_slice(&flags_offset.to_be_bytes());
        f
    };
    // ICMP other than an echo request (here a timestamp request, type 13).
    let timestamp = {
        let mut f = echo_request(CLIENT, VIP, b"ping");
        f[14 + 20] = 13;
        f
    };
    for (what, frame) in [
        ("truncated TCP", truncated),
        ("ICMP other than echo to the VIP", timestamp),
        ("first fragment", fragment(0, true)),
        ("later fragment", fragment(185, false)),
    ] {
        assert_eq!(send(&dp, &frame).0, TC_ACT_SHOT, "{what}");
    }
    assert_eq!(event(&dp, LbEvent::Malformed), 2);
    assert_eq!(event(&dp, LbEvent::Fragment), 2);
    assert!(dp.lb().flow_entries().unwrap().is_empty());
}

#[test]
fn a_vip_without_backends_refuses_tcp_with_a_reset_and_udp_with_port_unreachable() {
    let dp = balancer(&[]);
    let syn = Tcp::syn_to_vip(47000);
    let (verdict, out) = send(&dp, &syn.frame());
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "the reset goes back to the client"
    );
    assert_eq!(out, reset_for(&syn));
    // UDP, with and without a checksum, and with no payload at all (the frame grows).
    let mut empty = udp_frame(VIP, 47003, true);
    empty.truncate(14 + 20 + 8);
    empty[14 + 2..14 + 4].copy_from_slice(&28u16.to_be_bytes());
    empty[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&8u16.to_be_bytes());
    empty[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    fix_ipv4_checksum(&mut empty);
    for (what, datagram) in [
        ("UDP", udp_frame(VIP, 47001, true)),
        ("UDP without checksum", udp_frame(VIP, 47002, false)),
        ("empty UDP", empty),
    ] {
        let (verdict, out) = send(&dp, &datagram);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{what}: answered to the client");
        assert_eq!(
            out,
            crate::support::port_unreachable_for(&datagram),
            "{what}: port unreachable from the VIP"
        );
    }
    assert_eq!(event(&dp, LbEvent::NoBackend), 4);
    assert!(dp.lb().flow_entries().unwrap().is_empty(), "no flow made");
}

/// An Ethernet/IPv4/ICMP echo request (id 7, sequence 3) from `src` to `dst`.
fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac(src), mac(dst))
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(7, 3);
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

#[test]
fn an_echo_request_to_a_vip_is_answered_in_place() {
    // With backends or without: the VIP is there as long as its service is.
    for backends in [&[][..], &BACKENDS[..]] {
        let dp = balancer(backends);
        for payload in [&b""[..], b"ping", &[0xa5; 1000]] {
            let (verdict, out) = send(&dp, &echo_request(CLIENT, VIP, payload));
            assert_eq!(verdict, TC_ACT_REDIRECT, "the reply goes back to the task");
            // The reply as a host would build it: from the VIP (and its MAC), same id,
            // sequence, payload and IP header fields; both checksums valid.
            let want = {
                let b = PacketBuilder::ethernet2(mac(VIP), mac(CLIENT))
                    .ipv4(VIP.octets(), CLIENT.octets(), 64)
                    .icmpv4_echo_reply(7, 3);
                let mut f = Vec::new();
                b.write(&mut f, payload).unwrap();
                f
            };
            assert_eq!(out, want, "{} bytes of payload", payload.len());
        }
        assert!(dp.lb().flow_entries().unwrap().is_empty(), "no flow made");
        assert_eq!(event(&dp, LbEvent::Malformed), 0);
    }
}

#[test]
fn an_icmp_error_about_a_balanced_flow_comes_back_from_the_vip() {
    use crate::support::{frag_needed_for, port_unreachable_for};
    let dp = balancer(&BACKENDS);
    // A backend's kernel refuses the NAT-ed datagram (with and without a UDP checksum): the
    // client gets the port unreachable the VIP itself would have sent.
    for (sport, checksum) in [(48000, true), (48001, false)] {
        let datagram = udp_frame(VIP, sport, checksum);
        let (verdict, nated) = send(&dp, &datagram);
        assert_eq!(verdict, TC_ACT_OK);
        assert_ne!(nated[30..34], VIP.octets(), "balanced onto a backend");
        let (verdict, out) = receive(&dp, &port_unreachable_for(&nated));
        assert_eq!(verdict, TC_ACT_OK, "passed on to the client");
        assert_eq!(
            out,
            port_unreachable_for(&datagram),
            "UDP (checksum {checksum}): from the VIP, quoting the datagram as sent"
        );
    }
    // Fragmentation needed on the way to a TCP backend: path MTU discovery works.
    let syn = Tcp::syn_to_vip(48002).frame();
    let (_, nated) = send(&dp, &syn);
    let (verdict, out) = receive(&dp, &frag_needed_for(&nated, 1400));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, frag_needed_for(&syn, 1400), "TCP: from the VIP");
    assert_eq!(event(&dp, LbEvent::ReplyNat), 3);
    // An error about a flow that was never balanced passes untouched.
    let direct = udp_frame(BACKENDS[2], 48003, true);
    let error = port_unreachable_for(&direct);
    assert_eq!(receive(&dp, &error), (TC_ACT_OK, error));
    assert_eq!(event(&dp, LbEvent::ReplyNat), 3);
}

/// Recomputes the IPv4 header checksum of an Ethernet frame (no IP options).
fn fix_ipv4_checksum(frame: &mut [u8]) {
    let mut header = Ipv4Header::from_slice(&frame[14..]).unwrap().0;
    header.header_checksum = header.calc_header_checksum();
    frame[14..34].copy_from_slice(&header.to_bytes());
}

#[test]
fn a_removed_backend_resets_its_flows_and_leaves_the_others_alone() {
    let mut dp = balancer(&BACKENDS);
    let flows: Vec<Tcp> = (0..3).map(|i| Tcp::syn_to_vip(48000 + i)).collect();
    for (flow, backend) in flows.iter().zip(BACKENDS) {
        assert_eq!(send(&dp, &flow.frame()).1, flow.to_backend(backend).frame());
    }
    let udp = udp_frame(VIP, 48100, true);
    send(&dp, &udp); // slot 0: BACKENDS[0]
    // --- scale down: the first backend goes
    set_backends(&mut dp, &BACKENDS[1..]);
    let orphan = flows[0].data();
    let (verdict, out) = send(&dp, &orphan.frame());
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, reset_for(&orphan), "the orphaned flow fails fast");
    for (flow, backend) in flows[1..].iter().zip(&BACKENDS[1..]) {
        let data = flow.data();
        assert_eq!(
            send(&dp, &data.frame()).1,
            data.to_backend(*backend).frame(),
            "a flow to a backend that stays is untouched"
        );
    }
    // UDP has no connection to break: its flow moves to a live backend.
    let (verdict, out) = send(&dp, &udp);
    assert_eq!(verdict, TC_ACT_OK);
    let moved = &out[14 + 16..14 + 20];
    assert!(
        BACKENDS[1..].iter().any(|b| b.octets() == moved),
        "UDP moved to {moved:?}"
    );
    assert!(event(&dp, LbEvent::BackendGone) >= 2);
    // A segment of a connection the balancer never saw open is reset, not guessed at.
    let stranger = Tcp::syn_to_vip(48999).data();
    assert_eq!(send(&dp, &stranger.frame()).1, reset_for(&stranger));
}

#[test]
fn a_task_balanced_onto_itself_talks_to_itself_through_the_vip() {
    let dp = balancer(&BACKENDS);
    let me = BACKENDS[0];
    // The client is the first backend, and slot 0 comes first.
    let syn = Tcp {
        src: me,
        src_mac: mac(me),
        ..Tcp::syn_to_vip(49000)
    };
    let (verdict, out) = send(&dp, &syn.frame());
    assert_eq!(verdict, TC_ACT_REDIRECT, "sent straight back to the task");
    let bounced = Tcp {
        src: VIP,
        src_mac: mac(VIP),
        dst: me,
        dst_mac: mac(me),
        ..syn.clone()
    };
    assert_eq!(
        out,
        bounced.frame(),
        "the server sees the VIP as its client"
    );
    // The server's answer goes to the VIP too, and comes back from it.
    let syn_ack = Tcp {
        sport: 80,
        dport: 49000,
        seq: 9000,
        ack: Some(syn.seq + 1),
        ..syn.clone()
    };
    let (verdict, out) = send(&dp, &syn_ack.frame());
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let answer = Tcp {
        src: VIP,
        src_mac: mac(VIP),
        dst: me,
        dst_mac: mac(me),
        ..syn_ack
    };
    assert_eq!(out, answer.frame(), "the client sees the VIP as its peer");
}

#[test]
fn closed_flows_are_forgotten_and_quiet_open_ones_kept() {
    let mut dp = balancer(&BACKENDS);
    let closing = Tcp::syn_to_vip(50100);
    let open = Tcp::syn_to_vip(50101);
    send(&dp, &closing.frame());
    send(&dp, &open.frame());
    // The client closes, then the backend (its FIN comes back through the egress program).
    let client_fin = {
        let b = PacketBuilder::ethernet2(mac(CLIENT), mac(VIP))
            .ipv4(CLIENT.octets(), VIP.octets(), 64)
            .tcp(50100, 80, closing.seq + 1, 64240)
            .ack(77)
            .fin();
        let mut f = Vec::new();
        b.write(&mut f, &[]).unwrap();
        f
    };
    assert_eq!(send(&dp, &client_fin).0, TC_ACT_OK);
    let backend_fin = {
        let b = PacketBuilder::ethernet2(mac(BACKENDS[0]), mac(CLIENT))
            .ipv4(BACKENDS[0].octets(), CLIENT.octets(), 64)
            .tcp(80, 50100, 77, 64240)
            .ack(closing.seq + 2)
            .fin();
        let mut f = Vec::new();
        b.write(&mut f, &[]).unwrap();
        f
    };
    assert_eq!(receive(&dp, &backend_fin).0, TC_ACT_OK);
    assert_eq!(
        dp.lb().flow_entries().unwrap().len(),
        4,
        "two flows, two entries each"
    );

    // Right away nothing goes (a last ACK may still come); once quiet, the closed flow goes
    // and the open one, quiet as long, stays.
    let now = shoal_dataplane::lb::monotonic_now_ns();
    assert_eq!(dp.lb_mut().expire_flows(now).unwrap(), 0);
    let later = now + shoal_dataplane::lb::CLOSED_FLOW_LINGER + 1_000_000_000;
    assert_eq!(dp.lb_mut().expire_flows(later).unwrap(), 2);
    let left: Vec<u16> = dp
        .lb()
        .flow_entries()
        .unwrap()
        .iter()
        .map(|(k, _)| {
            if k.direction == 0 {
                u16::from_be(k.src_port)
            } else {
                u16::from_be(k.dst_port)
            }
        })
        .collect();
    assert_eq!(
        left,
        [50101, 50101],
        "only the open flow's entries are left"
    );
    // It still works.
    let data = open.data();
    assert_eq!(
        send(&dp, &data.frame()).1,
        data.to_backend(BACKENDS[1]).frame()
    );
}

#[test]
fn a_direct_connection_reusing_a_closed_vip_flows_port_is_left_alone() {
    let dp = balancer(&BACKENDS);
    let via_vip = Tcp::syn_to_vip(50200);
    send(&dp, &via_vip.frame());
    // Later the client connects straight to that backend from the same port.
    let direct = Tcp {
        seq: 777,
        ..via_vip.to_backend(BACKENDS[0])
    };
    assert_eq!(send(&dp, &direct.frame()).1, direct.frame());
    let syn_ack = Tcp::syn_ack_from(BACKENDS[0], 50200, 778);
    assert_eq!(
        receive(&dp, &syn_ack.frame()).1,
        syn_ack.frame(),
        "the backend's answer to the direct connection must not be rewritten to the VIP"
    );
}

/// `count` new connections to the VIP from distinct clients (`10.20.0.0/16` from `first`):
/// each is balanced (NAT-ed to a backend), whatever the table holds.
fn new_connections_from(dp: &Dataplane, first: u32, count: u32) {
    for i in first..first + count {
        let syn = Tcp {
            src: Ipv4Addr::from(0x0a14_0000 + i),
            src_mac: mac(Ipv4Addr::from(0x0a14_0000 + i)),
            ..Tcp::syn_to_vip(40000)
        };
        let (verdict, out) = send(dp, &syn.frame());
        assert_eq!(verdict, TC_ACT_OK, "connection {i}");
        let dst = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
        assert!(BACKENDS.contains(&dst), "connection {i} went to {dst}");
    }
}

#[test]
fn a_full_flow_table_takes_its_oldest_entries_and_counts_them() {
    let mut dp = balancer(&BACKENDS);
    let capacity = shoal_common::lb::MAX_FLOW_ENTRIES;
    // Two entries per connection: this many fill the table.
    let filling = capacity / 2;
    new_connections_from(&dp, 0, filling);
    let entries = dp.lb().flow_entries().unwrap().len() as u32;
    assert!(entries > capacity * 9 / 10, "{entries} entries");
    // The first expiry round sees them (open TCP: nothing to expire)...
    dp.lb_mut()
        .expire_flows(shoal_dataplane::lb::monotonic_now_ns())
        .unwrap();
    assert_eq!(event(&dp, LbEvent::Evicted), 0);
    // ... 10,000 more connections are all balanced, the LRU taking the oldest entries, and
    // the next round counts what it took.
    new_connections_from(&dp, filling, 10_000);
    dp.lb_mut()
        .expire_flows(shoal_dataplane::lb::monotonic_now_ns())
        .unwrap();
    // 20,000 entries needed room, less what was free; the kernel's LRU frees in batches (up
    // to 128 entries a CPU at a time), so a few more may go.
    let evicted = event(&dp, LbEvent::Evicted);
    let needed = 20_000 - u64::from(capacity - entries);
    assert!(
        (needed..=needed + 1_024).contains(&evicted),
        "{evicted} evicted, {needed} needed"
    );
    assert_eq!(event(&dp, LbEvent::Expired), 0, "open connections stay");
    // The newest connections are all there.
    let flows = dp.lb().flow_entries().unwrap();
    let newest = flows
        .iter()
        .filter(|(k, _)| u32::from_be_bytes(k.src_ip.to_ne_bytes()) >= 0x0a14_0000 + filling)
        .count();
    assert_eq!(newest, 10_000, "the newest forward entries kept");
}
