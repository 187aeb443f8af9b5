//! ICMP errors about a published port's flow, from the client's side of the network: a router
//! on the way to the client (or the client itself) answers one of the flow's answers, `node:P
//! -> client`, with fragmentation needed, destination unreachable or time exceeded. Only the
//! task can act on it (lower its path MTU, give up on the client), and the task knows the
//! flow as `task:T -> client` (or `-> ingress address:nat port` with source NAT), so the error
//! is translated into that view, as Linux's NAT does (`nf_nat_icmp_reply_translation`), and
//! sent on to the task the way the flow's packets are: path MTU discovery works through the
//! mesh in the answers' direction too, which is the one that carries the data of a download.
//!
//! What is rewritten: the quoted packet's source (`node:P` -> `task:T`) and destination (the
//! client, or the NAT address and port), with its IP checksum and, for UDP, its checksum; the
//! ICMP checksum over all of that; the outer destination (the task) and, in ingress mode, the
//! outer source (this node's ingress address: the task's side of the overlay knows it, and a
//! strict reverse-path filter in the task accepts it). Then the frame goes to the task: in
//! VXLAN to its node (ingress modes), or to the kernel (host mode).

use aya_ebpf::programs::XdpContext;
use shoal_common::{
    lb::{FLOW_FORWARD, FlowKey},
    mesh::{MODE_HOST, MeshConfig, MeshEvent, MeshFlow, mesh_source_mac},
};

use super::{
    encap,
    maps::find_flow,
    packet::{IP, Ipv4Header, L4, PROTO_TCP, PROTO_UDP, Ports, read, update, word, write},
};
use crate::lb;

const ICMP: usize = L4;
const ICMP_CHECK: usize = ICMP + 2;
/// The quoted packet: its IPv4 header (without options) and the first 8 bytes after it.
const INNER: usize = ICMP + 8;
const INNER_L4: usize = INNER + 20;
const INNER_UDP_CHECK: usize = INNER_L4 + 6;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;

/// An ICMP packet to one of the node's addresses: `None` if it is not an error about a flow of
/// a published port (it passes to the kernel); else where it went, or why it could not.
#[inline(always)]
pub fn from_client(
    ctx: &XdpContext,
    outer: &Ipv4Header,
    config: &MeshConfig,
) -> Option<Result<u32, MeshEvent>> {
    let kind: u8 = read(ctx, ICMP)?;
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
        return None;
    }
    let inner: Ipv4Header = read(ctx, INNER)?;
    if inner.ver_ihl != 0x45 || (inner.proto != PROTO_TCP && inner.proto != PROTO_UDP) {
        return None;
    }
    let ports: Ports = read(ctx, INNER_L4)?;
    // The quoted packet is an answer, `node:P -> client`: its flow's forward entry is keyed
    // the other way round.
    let key = FlowKey {
        src_ip: inner.dst,
        dst_ip: inner.src,
        src_port: ports.dst,
        dst_port: ports.src,
        proto: inner.proto,
        direction: FLOW_FORWARD,
        pad: [0; 2],
    };
    let (flow, _, _) = find_flow(&key)?;
    Some(translate(ctx, outer, &inner, &ports, &flow, config))
}

#[inline(always)]
fn translate(
    ctx: &XdpContext,
    outer: &Ipv4Header,
    inner: &Ipv4Header,
    ports: &Ports,
    flow: &MeshFlow,
    config: &MeshConfig,
) -> Result<u32, MeshEvent> {
    let malformed = MeshEvent::Malformed;
    // The quoted answer as the task sent it.
    let (src, sport) = (flow.peer_ip, flow.peer_port);
    let (dst, dport) = (flow.local_ip, flow.local_port);
    let addrs = [(inner.src, src), (inner.dst, dst)];
    let inner_check = update(inner.check, &addrs);
    let port_words = [
        (word(ports.src), word(sport)),
        (word(ports.dst), word(dport)),
    ];
    let icmp_check: u16 = read(ctx, ICMP_CHECK).ok_or(malformed)?;
    let mut new_icmp_check = update(icmp_check, &addrs);
    new_icmp_check = update(new_icmp_check, &port_words);
    new_icmp_check = update(new_icmp_check, &[(word(inner.check), word(inner_check))]);
    // A quoted UDP checksum covers the pseudo-header's addresses and the ports (0: none).
    if inner.proto == PROTO_UDP {
        let check: u16 = read(ctx, INNER_UDP_CHECK).ok_or(malformed)?;
        if check != 0 {
            let mut new = update(update(check, &addrs), &port_words);
            if new == 0 {
                new = 0xffff;
            }
            new_icmp_check = update(new_icmp_check, &[(word(check), word(new))]);
            if !write(ctx, INNER_UDP_CHECK, new) {
                return Err(malformed);
            }
        }
    }
    let quoted = Ipv4Header {
        check: inner_check,
        src,
        dst,
        ..*inner
    };
    let ingress = flow.mode != MODE_HOST;
    let outer_src = if ingress {
        config.ingress_ip
    } else {
        outer.src
    };
    let header = Ipv4Header {
        check: update(outer.check, &[(outer.src, outer_src), (outer.dst, src)]),
        src: outer_src,
        dst: src,
        ..*outer
    };
    let written = write(ctx, INNER, quoted)
        && write(
            ctx,
            INNER_L4,
            Ports {
                src: sport,
                dst: dport,
            },
        )
        && write(ctx, ICMP_CHECK, new_icmp_check)
        && write(ctx, IP, header);
    if !written {
        return Err(malformed);
    }
    if !ingress {
        // To the task's gateway-bridge address: the kernel routes it there.
        return Ok(aya_ebpf::bindings::xdp_action::XDP_PASS);
    }
    let client_macs = (
        read::<[u8; 6]>(ctx, 0).ok_or(malformed)?,
        read::<[u8; 6]>(ctx, 6).ok_or(malformed)?,
    );
    if !(write(ctx, 0, lb::headers::mac_of(src))
        && write(ctx, 6, mesh_source_mac(config.ingress_ip.to_ne_bytes())))
    {
        return Err(malformed);
    }
    encap::send_to_vtep(
        ctx,
        config,
        flow.vtep,
        outer.src ^ u32::from(dport),
        client_macs,
        outer.src,
        crate::clock::now(),
    )
}
