//! Published ports: the underlay XDP program's half (new connections balanced, NAT-ed and sent
//! on toward their task) and the reply program's (answers un-NAT-ed and sent to the client).
//! Layouts and the whole path: `shoal_common::mesh`.
//!
//! # Layout
//! - `maps`: the maps, the counters, the flow-entry helpers.
//! - `packet`: direct packet access and checksum updates for XDP.
//! - `encap`: VXLAN encapsulation and the verdict that sends the frame on.
//! - `reply`: the tc program on the node's ingress interface and host-mode gateway ports.
//! - `reset`: the TCP reset for connections no task can take.

mod encap;
pub mod maps;
mod packet;
mod reply;
mod reset;

pub use reply::from_backend;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use shoal_common::{
    lb::{FLOW_FORWARD, FLOW_REPLY, FlowKey, VipService},
    mesh::{
        INGRESS_MTU, MODE_HOST, MODE_INGRESS, MeshConfig, MeshEvent, MeshFlow, PortKey,
        PublishedPort, mesh_source_mac,
    },
};

use crate::lb::{self, maps::SHOAL_LB_VIPS};
use maps::{
    SHOAL_MESH_ADDRS, SHOAL_MESH_FLOWS, SHOAL_MESH_PORTS, SHOAL_MESH_VTEPS, count_event, find_flow,
    touch,
};
use packet::{
    ETH_P_IP, IP, IP_FRAG_MASK, Ipv4Header, L4, PROTO_TCP, PROTO_UDP, Ports, TCP_CHECK, TCP_FLAGS,
    TCP_MIN, TCP_SEQ, UDP_CHECK, UDP_MIN, read, update, word, write,
};

const PASS: u32 = xdp_action::XDP_PASS;
const DROP: u32 = xdp_action::XDP_DROP;
/// `BPF_NOEXIST`: insert only if the key is free.
const NOEXIST: u64 = 1;
/// NAT ports tried for a new ingress connection: the client's own, then these many more.
const NAT_PORT_TRIES: u32 = 4;

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
    // SAFETY (map gets below): values are copied out at once.
    if unsafe { SHOAL_MESH_ADDRS.get(&ip.dst) }.is_none() {
        return PASS;
    }
    // IP options and fragments carry their ports elsewhere or not at all: the kernel gets
    // them (and refuses them: nothing listens on a published port).
    if ip.ver_ihl != 0x45 || ip.frag & IP_FRAG_MASK != 0 {
        return PASS;
    }
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return PASS;
    }
    let Some(ports) = read::<Ports>(ctx, L4) else {
        return PASS;
    };
    let port = PortKey {
        port: ports.dst,
        proto: ip.proto,
        pad: 0,
    };
    let Some(published) = (unsafe { SHOAL_MESH_PORTS.get(&port) }).copied() else {
        return PASS;
    };
    let Some(config) = maps::config() else {
        return PASS;
    };
    match forward(ctx, &ip, &ports, &published, &config) {
        Ok(verdict) => verdict,
        Err(event) => {
            count_event(event);
            // A connection no task can take is refused, as a closed port would; the rest of
            // what cannot be served is dropped.
            if ip.proto == PROTO_TCP
                && matches!(event, MeshEvent::NoBackend | MeshEvent::BackendGone)
            {
                return reset::reply_with_reset(ctx);
            }
            DROP
        }
    }
}

/// What a TCP segment means for flow tracking.
struct TcpSegment {
    opening: bool,
    seq: u32,
    closing: u32,
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
    if published.mode == MODE_INGRESS && u16::from_be(ip.tot_len) > INGRESS_MTU {
        return Err(MeshEvent::TooBig);
    }
    let tcp = if is_tcp {
        let flags: u8 = read(ctx, L4 + TCP_FLAGS).ok_or(MeshEvent::Malformed)?;
        Some(TcpSegment {
            opening: flags & lb::headers::TCP_SYN != 0 && flags & lb::headers::TCP_ACK_FLAG == 0,
            seq: read(ctx, L4 + TCP_SEQ).ok_or(MeshEvent::Malformed)?,
            closing: lb::closing_bits(flags),
        })
    } else {
        None
    };
    // SAFETY: copied out at once.
    let vip = unsafe { SHOAL_LB_VIPS.get(&published.frontend) }
        .copied()
        .ok_or(MeshEvent::NoBackend)?;
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let key = FlowKey {
        src_ip: ip.src,
        dst_ip: ip.dst,
        src_port: ports.src,
        dst_port: ports.dst,
        proto: ip.proto,
        direction: FLOW_FORWARD,
        pad: [0; 2],
    };
    let known = match find_flow(&key) {
        // A SYN with a new ISN on a known 5-tuple is a new connection (the port was reused).
        Some((flow, _))
            if tcp
                .as_ref()
                .is_some_and(|t| t.opening && t.seq != flow.tcp_isn) =>
        {
            forget_reply(&flow, ip, ports, config);
            None
        }
        Some((flow, entry)) if alive(&flow, &vip) => {
            touch(entry, tcp.as_ref().map_or(0, |t| t.closing), now);
            Some(flow)
        }
        Some((flow, _)) => {
            forget_reply(&flow, ip, ports, config);
            let _ = SHOAL_MESH_FLOWS.remove(&key);
            if tcp.is_some() {
                return Err(MeshEvent::BackendGone);
            }
            // UDP has no connection to break: the flow moves to a live task.
            None
        }
        None => None,
    };
    let (flow, new_flow) = match known {
        Some(flow) => (flow, false),
        None => {
            // Only the start of a connection is balanced.
            if tcp.as_ref().is_some_and(|t| !t.opening) {
                return Err(MeshEvent::BackendGone);
            }
            let isn = tcp.as_ref().map_or(0, |t| t.seq);
            let picked = lb::pick_backend(&vip, isn).ok_or(MeshEvent::NoBackend)?;
            let flow = open_flow(&key, ip, ports, published, config, &picked, now)?;
            count_event(MeshEvent::Forwarded);
            (flow, true)
        }
    };
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
    rewrite(ctx, ip, ports, &flow)?;
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
    )
}

/// Is the flow's task still a backend of the frontend, at the same address?
#[inline(always)]
fn alive(flow: &MeshFlow, vip: &VipService) -> bool {
    flow.service_id == vip.service_id
        && lb::backend_alive_at(flow.backend_id, flow.peer_ip, vip.service_id)
}

/// Stores the entries of a new flow onto `picked`: the reply entry first (it reserves the NAT
/// port), then the forward one.
#[inline(always)]
fn open_flow(
    key: &FlowKey,
    ip: &Ipv4Header,
    ports: &Ports,
    published: &PublishedPort,
    config: &MeshConfig,
    picked: &shoal_common::lb::FlowState,
    now: u64,
) -> Result<MeshFlow, MeshEvent> {
    let backend = picked.nat_ip;
    let (vtep, local_ip) = if published.mode == MODE_HOST {
        (0, ip.src)
    } else {
        // SAFETY: copied out at once.
        let vtep = unsafe { SHOAL_MESH_VTEPS.get(&backend) }
            .copied()
            .ok_or(MeshEvent::NoRoute)?;
        (vtep, config.ingress_ip)
    };
    let reply = MeshFlow {
        last_seen_ns: now,
        peer_ip: ip.src,
        local_ip: ip.dst,
        peer_port: ports.src,
        local_port: ports.dst,
        vtep: 0,
        backend_id: picked.backend_id,
        service_id: picked.service_id,
        tcp_isn: 0,
        flags: 0,
        mode: published.mode,
        pad: [0; 7],
    };
    let nat_port = reserve_reply(ip, ports, published, backend, local_ip, &reply)?;
    let forward = MeshFlow {
        peer_ip: backend,
        local_ip,
        peer_port: published.target_port,
        local_port: nat_port,
        vtep,
        tcp_isn: picked.tcp_isn,
        ..reply
    };
    let _ = SHOAL_MESH_FLOWS.insert(key, &forward, 0);
    Ok(forward)
}

/// Stores the reply entry `task:target -> local_ip:port` and returns the port. In ingress mode
/// the port is the NAT port: the client's own if free at that task, else one of a few others
/// derived from the client; in host mode it is the client's.
#[inline(always)]
fn reserve_reply(
    ip: &Ipv4Header,
    ports: &Ports,
    published: &PublishedPort,
    backend: u32,
    local_ip: u32,
    reply: &MeshFlow,
) -> Result<u16, MeshEvent> {
    let tries = if published.mode == MODE_HOST {
        1
    } else {
        NAT_PORT_TRIES + 1
    };
    let mut i = 0;
    while i < tries {
        let port = if i == 0 {
            ports.src
        } else {
            nat_port_candidate(ip.src, ports.src, i)
        };
        let key = FlowKey {
            src_ip: backend,
            dst_ip: local_ip,
            src_port: published.target_port,
            dst_port: port,
            proto: ip.proto,
            direction: FLOW_REPLY,
            pad: [0; 2],
        };
        if SHOAL_MESH_FLOWS.insert(&key, reply, NOEXIST).is_ok() {
            return Ok(port);
        }
        // Taken: by an earlier flow of this very client to this port (a reused port, or a
        // forward entry the LRU lost)? Then it is ours to take over.
        let ours = find_flow(&key).is_some_and(|(e, _)| {
            e.peer_ip == reply.peer_ip
                && e.peer_port == reply.peer_port
                && e.local_ip == reply.local_ip
                && e.local_port == reply.local_port
        });
        if ours || published.mode == MODE_HOST {
            let _ = SHOAL_MESH_FLOWS.insert(&key, reply, 0);
            return Ok(port);
        }
        i += 1;
    }
    Err(MeshEvent::NatPortsExhausted)
}

/// The `i`-th alternative NAT port for a client (network order, never below 1024).
#[inline(always)]
fn nat_port_candidate(client: u32, client_port: u16, i: u32) -> u16 {
    let h = (client ^ (u32::from(client_port) << 16) ^ i.wrapping_mul(0x9e37_79b9))
        .wrapping_mul(0x85eb_ca6b);
    let port = (h >> 16) as u16;
    (if port < 1024 { port | 0x8000 } else { port }).to_be()
}

/// Removes the reply entry of an old flow on the same 5-tuple (port reuse, or a gone task).
#[inline(always)]
fn forget_reply(flow: &MeshFlow, ip: &Ipv4Header, ports: &Ports, config: &MeshConfig) {
    let (dst_ip, dst_port) = if flow.mode == MODE_HOST {
        (ip.src, ports.src)
    } else {
        (config.ingress_ip, flow.local_port)
    };
    let key = FlowKey {
        src_ip: flow.peer_ip,
        dst_ip,
        src_port: flow.peer_port,
        dst_port,
        proto: ip.proto,
        direction: FLOW_REPLY,
        pad: [0; 2],
    };
    let _ = SHOAL_MESH_FLOWS.remove(&key);
}

/// Rewrites the packet for its task: destination `task:target`, and in ingress mode source
/// `ingress address:NAT port` and the inner MACs (the task's, and [`mesh_source_mac`]). Checksums are
/// updated incrementally (frames from the wire carry full checksums).
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    ip: &Ipv4Header,
    ports: &Ports,
    flow: &MeshFlow,
) -> Result<(), MeshEvent> {
    let (new_src, new_sport) = if flow.mode == MODE_HOST {
        (ip.src, ports.src)
    } else {
        (flow.local_ip, flow.local_port)
    };
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
        mesh_source_mac(new_src.to_ne_bytes()),
    );
    if written && write(ctx, 0, dst_mac) && write(ctx, 6, src_mac) {
        Ok(())
    } else {
        Err(MeshEvent::Malformed)
    }
}
