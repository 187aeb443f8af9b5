//! ICMP errors a task sends about a published port's flow (the reply program, tc): a UDP
//! datagram to a port nothing listens on is answered with a port unreachable, a packet too big
//! for the task's side with a fragmentation needed. The task quotes the packet as it got it
//! (`client:port -> task:T`, or from the NAT address with source NAT), so the error is
//! translated into the client's view, as Linux's NAT does: it comes from `node:P`'s node to
//! the client, quoting `client:port -> node:P`, with every checksum kept right, and leaves by
//! the underlay like the flow's answers. A UDP client then gets `ECONNREFUSED` at once
//! instead of waiting for its timeout.
//!
//! On a task's gateway-bridge port, an error about a client-kept flow another node received
//! is first sent back to that node (`returns`), where this same code translates it.

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_redirect_neigh, programs::TcContext};
use shoal_common::{
    lb::{FLOW_REPLY, FlowKey},
    mesh::{MeshConfig, MeshEvent, MeshFlow},
};

use super::{
    maps::{count_event, find_flow},
    returns,
};
use crate::lb::{
    checksum::{replace16, replace32},
    headers::{
        ETH_P_IP, IP, Ipv4Header, L4_NO_OPTIONS, PROTO_ICMP, PROTO_TCP, PROTO_UDP, ethertype,
        linear, read,
    },
};

const ICMP: usize = L4_NO_OPTIONS;
const ICMP_CHECK: usize = ICMP + 2;
/// The quoted packet: its IPv4 header (without options) and the first 8 bytes after it.
const INNER: usize = ICMP + 8;
const INNER_L4: usize = INNER + 20;
const INNER_UDP_CHECK: usize = INNER_L4 + 6;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;

/// A frame from a task that is no TCP or UDP answer: if it is an ICMP error about a published
/// port's flow, translated and sent to the client (or to the node that received the flow);
/// anything else passes.
#[inline(always)]
pub fn from_task(ctx: &TcContext, config: &MeshConfig) -> i32 {
    translate(ctx, config).unwrap_or(TC_ACT_OK as i32)
}

#[inline(always)]
fn translate(ctx: &TcContext, config: &MeshConfig) -> Option<i32> {
    if ethertype(ctx)? != ETH_P_IP || !linear(ctx, INNER_L4 + 8, INNER_L4 + 8) {
        return None;
    }
    let outer: Ipv4Header = read(ctx, IP)?;
    if outer.ver_ihl != 0x45 || outer.proto != PROTO_ICMP {
        return None;
    }
    let kind: u8 = read(ctx, ICMP)?;
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
        return None;
    }
    let inner: Ipv4Header = read(ctx, INNER)?;
    if inner.ver_ihl != 0x45 || (inner.proto != PROTO_TCP && inner.proto != PROTO_UDP) {
        return None;
    }
    let ports: [u16; 2] = read(ctx, INNER_L4)?;
    // The flow's reply key: what the task's answers to the quoted packet carry.
    let key = FlowKey {
        src_ip: inner.dst,
        dst_ip: inner.src,
        src_port: ports[1],
        dst_port: ports[0],
        proto: inner.proto,
        direction: FLOW_REPLY,
        pad: [0; 2],
    };
    if let Some(path) = returns::on_gateway_port(ctx, &key)
        && let Some(verdict) = returns::steer(ctx, &path, config)
    {
        return Some(verdict);
    }
    let (flow, _, _) = find_flow(&key)?;
    if rewrite(ctx, &outer, &inner, ports, &flow).is_err() {
        return Some(aya_ebpf::bindings::TC_ACT_SHOT as i32);
    }
    count_event(MeshEvent::IcmpError);
    // SAFETY: plain helper call, no parameters.
    Some(unsafe { bpf_redirect_neigh(config.underlay_ifindex, core::ptr::null_mut(), 0, 0) } as i32)
}

/// The error as the client must see it: from the node it asked, quoting `client:port ->
/// node:P`. `flow` is the reply entry (peer: the client, local: the node's address and port).
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    outer: &Ipv4Header,
    inner: &Ipv4Header,
    ports: [u16; 2],
    flow: &MeshFlow,
) -> Result<(), i64> {
    let quoted = Ipv4Header {
        src: flow.peer_ip,
        dst: flow.local_ip,
        check: replace32(
            replace32(inner.check, inner.src, flow.peer_ip),
            inner.dst,
            flow.local_ip,
        ),
        ..*inner
    };
    let new_ports = [flow.peer_port, flow.local_port];
    let icmp_check: u16 = read(ctx, ICMP_CHECK).ok_or(-1i64)?;
    let mut check = replace32(icmp_check, inner.src, quoted.src);
    check = replace32(check, inner.dst, quoted.dst);
    check = replace16(check, ports[0], new_ports[0]);
    check = replace16(check, ports[1], new_ports[1]);
    check = replace16(check, inner.check, quoted.check);
    // A quoted UDP checksum covers the pseudo-header's addresses and the ports (0: none).
    if inner.proto == PROTO_UDP {
        let udp: u16 = read(ctx, INNER_UDP_CHECK).ok_or(-1i64)?;
        if udp != 0 {
            let mut new = replace32(replace32(udp, inner.src, quoted.src), inner.dst, quoted.dst);
            new = replace16(
                replace16(new, ports[0], new_ports[0]),
                ports[1],
                new_ports[1],
            );
            if new == 0 {
                new = 0xffff;
            }
            check = replace16(check, udp, new);
            ctx.store(INNER_UDP_CHECK, &new, 0)?;
        }
    }
    let header = Ipv4Header {
        src: flow.local_ip,
        dst: flow.peer_ip,
        check: replace32(
            replace32(outer.check, outer.src, flow.local_ip),
            outer.dst,
            flow.peer_ip,
        ),
        ..*outer
    };
    ctx.store(INNER, &quoted, 0)?;
    ctx.store(INNER_L4, &new_ports, 0)?;
    ctx.store(ICMP_CHECK, &check, 0)?;
    ctx.store(IP, &header, 0)
}
