//! Published ports: the underlay XDP program's half (new connections balanced, NAT-ed and sent
//! on toward their task) and the reply program's (answers un-NAT-ed and sent to the client).
//! Layouts and the whole path: `shoal_common::mesh`.
//!
//! # Layout
//! - `maps`: the maps, the counters, the flow-entry helpers.
//! - `flows`: which flow a client's packet belongs to; new flows opened unconfirmed, and
//!   confirmed when the client answers its task.
//! - `packet`: direct packet access and checksum updates for XDP.
//! - `encap`: VXLAN encapsulation and the verdict that sends the frame on.
//! - `reply`: the tc program on the node's ingress interface and host-mode gateway ports.
//! - `reset`: the TCP reset and the ICMP port unreachable for connections no task can take.
//! - `returns`: on a task's node, answers of client-kept flows steered back to the node that
//!   received them.
//! - `icmp`: ICMP errors about a flow's answers, from the client's side, sent on to its task.
//! - `task_icmp`: ICMP errors a task sends about a flow's packets, sent on to the client.

mod encap;
mod flows;
mod icmp;
pub mod maps;
mod packet;
mod reply;
mod reset;
mod returns;
mod task_icmp;

pub use reply::from_backend;
pub use returns::note_arrival;

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use shoal_common::mesh::{
    DEFAULT_INGRESS_MTU, MODE_HOST, MeshConfig, MeshEvent, MeshFlow, PublishedPort,
    is_ingress_mode, mesh_source_mac,
};

use crate::lb;
use flows::{TcpSegment, Tracked};
use maps::{SHOAL_MESH_ADDRS, count_event};
use packet::{
    ETH_P_IP, IP, IP_FRAG_MASK, Ipv4Header, L4, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Ports, TCP_ACK,
    TCP_CHECK, TCP_FLAGS, TCP_MIN, TCP_SEQ, UDP_CHECK, UDP_MIN, read, update, word, write,
};

const PASS: u32 = xdp_action::XDP_PASS;
const DROP: u32 = xdp_action::XDP_DROP;

/// A frame arriving on the underlay. Anything that is not TCP or UDP to a published port on
/// one of this node's addresses passes untouched, VXLAN and gossip included.
#[inline(always)]
pub fn from_underlay(ctx: &XdpContext) -> u32 {
    if read::<u16>(ctx, 12) != Some(ETH_P_IP) {
        return PASS;
    }
    let Some(ip) = read::<Ipv4Header>(ctx, IP) else {
        return PASS;
    };
    // IP options and fragments carry their ports elsewhere or not at all: the kernel gets
    // them (and refuses them: nothing listens on a published port).
    if ip.ver_ihl != 0x45 || ip.frag & IP_FRAG_MASK != 0 {
        return PASS;
    }
    // SAFETY (map gets below): values are copied out at once.
    let to_node = || unsafe { SHOAL_MESH_ADDRS.get(&ip.dst) }.is_some();
    if ip.proto == PROTO_ICMP {
        return if to_node() {
            icmp_error(ctx, &ip)
        } else {
            PASS
        };
    }
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return PASS;
    }
    let Some(ports) = read::<Ports>(ctx, L4) else {
        return PASS;
    };
    // The port first: most packets a node gets are for ports nothing publishes (its own
    // services, VXLAN, gossip), and pay this one (array) lookup only.
    let Some(published) = maps::published(ports.dst, ip.proto) else {
        return PASS;
    };
    if !to_node() {
        return PASS;
    }
    let Some(config) = maps::config() else {
        return PASS;
    };
    match forward(ctx, &ip, &ports, &published, &config) {
        Ok(verdict) => verdict,
        Err(event) => {
            count_event(event);
            // A connection no task can take is refused, as a closed port would (a reset, or
            // a port unreachable); the rest of what cannot be served is dropped.
            match (ip.proto, event) {
                (PROTO_TCP, MeshEvent::NoBackend | MeshEvent::BackendGone) => {
                    reset::reply_with_reset(ctx)
                }
                (PROTO_UDP, MeshEvent::NoBackend) => reset::reply_with_unreachable(ctx),
                // Path MTU discovery: the client learns what the overlay takes.
                (_, MeshEvent::TooBig) => reset::reply_with_frag_needed(ctx, ingress_mtu(&config)),
                _ => DROP,
            }
        }
    }
}

/// An ICMP packet to one of the node's addresses: an error about a published port's flow goes
/// on to its task (`icmp`), anything else to the kernel.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, ip: &Ipv4Header) -> u32 {
    let Some(config) = maps::config() else {
        return PASS;
    };
    match icmp::from_client(ctx, ip, &config) {
        None => PASS,
        Some(Ok(verdict)) => {
            count_event(MeshEvent::IcmpError);
            verdict
        }
        Some(Err(event)) => {
            count_event(event);
            DROP
        }
    }
}

/// The largest IP packet the ingress overlay takes (0 in the map: an older agent's, 1450).
#[inline(always)]
fn ingress_mtu(config: &MeshConfig) -> u16 {
    match config.ingress_mtu {
        0 => DEFAULT_INGRESS_MTU,
        mtu => mtu,
    }
}

#[inline(always)]
fn forward(
    ctx: &XdpContext,
    ip: &Ipv4Header,
    ports: &Ports,
    published: &PublishedPort,
    config: &MeshConfig,
) -> Result<u32, MeshEvent> {
    let is_tcp = ip.proto == PROTO_TCP;
    let l4_min = if is_tcp { TCP_MIN } else { UDP_MIN };
    if ctx.data() + L4 + l4_min > ctx.data_end() {
        return Err(MeshEvent::Malformed);
    }
    if is_ingress_mode(published.mode) && u16::from_be(ip.tot_len) > ingress_mtu(config) {
        return Err(MeshEvent::TooBig);
    }
    let tcp = if is_tcp {
        let flags: u8 = read(ctx, L4 + TCP_FLAGS).ok_or(MeshEvent::Malformed)?;
        let acking = flags & lb::headers::TCP_ACK_FLAG != 0;
        Some(TcpSegment {
            opening: flags & lb::headers::TCP_SYN != 0 && !acking,
            seq: read(ctx, L4 + TCP_SEQ).ok_or(MeshEvent::Malformed)?,
            ack: if acking {
                Some(read(ctx, L4 + TCP_ACK).ok_or(MeshEvent::Malformed)?)
            } else {
                None
            },
            closing: lb::closing_bits(flags),
        })
    } else {
        None
    };
    let now = crate::clock::now();
    let key = flows::forward_key(ip, ports);
    let Tracked { flow, new_flow } =
        flows::track(&key, ip, ports, published, config, tcp.as_ref(), now)?;
    let client_macs = (
        read::<[u8; 6]>(ctx, 0).ok_or(MeshEvent::Malformed)?,
        read::<[u8; 6]>(ctx, 6).ok_or(MeshEvent::Malformed)?,
    );
    lb::maps::count_traffic(
        flow.service_id,
        flow.backend_id,
        (ctx.data_end() - ctx.data()) as u64,
        new_flow,
    );
    rewrite(ctx, ip, ports, &flow, config.ingress_ip)?;
    if flow.mode == MODE_HOST {
        // To the task's gateway-bridge address: the kernel routes it there.
        return Ok(PASS);
    }
    encap::send_to_vtep(
        ctx,
        config,
        flow.vtep,
        ip.src ^ u32::from(ports.src),
        client_macs,
        ip.src,
        now,
    )
}

/// Rewrites the packet for its task: destination `task:target`; with source NAT the source
/// `ingress address:NAT port`; in both ingress modes the inner MACs (the task's, and
/// [`mesh_source_mac`] of this node's `ingress_ip`, which tells the task's node where the flow
/// came in). Checksums are updated incrementally (frames from the wire carry full checksums).
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    ip: &Ipv4Header,
    ports: &Ports,
    flow: &MeshFlow,
    ingress_ip: u32,
) -> Result<(), MeshEvent> {
    // The forward entry's new source: the NAT address, or the client itself.
    let (new_src, new_sport) = (flow.local_ip, flow.local_port);
    let (new_dst, new_dport) = (flow.peer_ip, flow.peer_port);
    let addrs = [(ip.src, new_src), (ip.dst, new_dst)];
    let mut header = *ip;
    header.check = update(ip.check, &addrs);
    header.src = new_src;
    header.dst = new_dst;
    let check_at = L4
        + if ip.proto == PROTO_TCP {
            TCP_CHECK
        } else {
            UDP_CHECK
        };
    let check: u16 = read(ctx, check_at).ok_or(MeshEvent::Malformed)?;
    // UDP without a checksum stays without one.
    if ip.proto == PROTO_TCP || check != 0 {
        let mut new_check = update(
            check,
            &[
                addrs[0],
                addrs[1],
                (word(ports.src), word(new_sport)),
                (word(ports.dst), word(new_dport)),
            ],
        );
        if ip.proto == PROTO_UDP && new_check == 0 {
            new_check = 0xffff;
        }
        write(ctx, check_at, new_check);
    }
    let written = write(ctx, IP, header)
        && write(
            ctx,
            L4,
            Ports {
                src: new_sport,
                dst: new_dport,
            },
        );
    if flow.mode == MODE_HOST {
        return if written {
            Ok(())
        } else {
            Err(MeshEvent::Malformed)
        };
    }
    let (dst_mac, src_mac) = (
        lb::headers::mac_of(new_dst),
        mesh_source_mac(ingress_ip.to_ne_bytes()),
    );
    if written && write(ctx, 0, dst_mac) && write(ctx, 6, src_mac) {
        Ok(())
    } else {
        Err(MeshEvent::Malformed)
    }
}
