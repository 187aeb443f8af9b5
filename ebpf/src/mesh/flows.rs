//! Flow tracking for the underlay XDP program: which flow a client's packet belongs to (a
//! confirmed one, else an unconfirmed one), new flows opened in the unconfirmed table (backend
//! picked, NAT port reserved), and confirmation, which moves a flow into the confirmed table
//! once its client has shown it receives its task's answers. Why two tables:
//! `shoal_common::mesh`.

use shoal_common::{
    lb::{FLOW_FORWARD, FLOW_REPLY, FlowKey, FlowState},
    mesh::{
        CONFIRM_ACK_WINDOW, FLOW_UNREPLIED, MODE_HOST, MODE_INGRESS, MeshConfig, MeshEvent,
        MeshFlow, PublishedPort,
    },
};

use super::{
    maps::{
        SHOAL_MESH_FLOWS, SHOAL_MESH_UNCONFIRMED, SHOAL_MESH_VTEPS, count_event, find_in, touch,
    },
    packet::{Ipv4Header, Ports},
};
use crate::lb::{self, maps::SHOAL_LB_VIPS};

/// `BPF_NOEXIST`: insert only if the key is free.
const NOEXIST: u64 = 1;
/// NAT ports tried for a new ingress connection: the client's own, then these many more.
const NAT_PORT_TRIES: u32 = 4;

/// What a TCP segment means for flow tracking.
pub struct TcpSegment {
    /// A SYN without ACK: the start of a connection.
    pub opening: bool,
    /// Its sequence number (the ISN, when opening), as loaded.
    pub seq: u32,
    /// Its acknowledgment number as loaded, if it carries the ACK flag.
    pub ack: Option<u32>,
    /// `lb::FLOW_FIN` / `lb::FLOW_RST` if the segment carries them.
    pub closing: u32,
}

/// Where a client's packet goes: its flow, and whether this packet opened it.
pub struct Tracked {
    pub flow: MeshFlow,
    pub new_flow: bool,
}

/// The flow of the client's packet `key` (direction forward): a confirmed flow, else an
/// unconfirmed one (which this packet may confirm), else a new one in the unconfirmed table.
/// A flow whose task went away, or whose client's port began a new connection (a SYN with
/// another ISN), is forgotten first; TCP then fails (a reset), UDP moves to a live task.
/// Only a new flow looks its frontend up (the VIP's service and round robin): a flow's own
/// entry says which service and task it is on.
#[inline(always)]
pub fn track(
    key: &FlowKey,
    ip: &Ipv4Header,
    ports: &Ports,
    published: &PublishedPort,
    config: &MeshConfig,
    tcp: Option<&TcpSegment>,
    now: u64,
) -> Result<Tracked, MeshEvent> {
    let closing = tcp.map_or(0, |t| t.closing);
    if let Some((flow, entry)) = find_in(&SHOAL_MESH_FLOWS, key) {
        let reopened = tcp.is_some_and(|t| t.opening && t.seq != flow.tcp_isn);
        if !reopened && alive(&flow) {
            touch(entry, closing, now);
            return Ok(Tracked {
                flow,
                new_flow: false,
            });
        }
        forget(key, &flow, true);
        if !reopened && tcp.is_some() {
            return Err(MeshEvent::BackendGone);
        }
    }
    if let Some((flow, entry)) = find_in(&SHOAL_MESH_UNCONFIRMED, key) {
        let reopened = tcp.is_some_and(|t| t.opening && t.seq != flow.tcp_isn);
        if !reopened && alive(&flow) {
            touch(entry, closing, now);
            // A retransmitted SYN keeps its task, and confirms nothing.
            if !tcp.is_some_and(|t| t.opening) {
                confirm(key, &flow, tcp, closing, now);
            }
            return Ok(Tracked {
                flow,
                new_flow: false,
            });
        }
        forget(key, &flow, false);
        if !reopened && tcp.is_some() {
            return Err(MeshEvent::BackendGone);
        }
    }
    // Only the start of a connection is balanced.
    if tcp.is_some_and(|t| !t.opening) {
        return Err(MeshEvent::BackendGone);
    }
    // SAFETY: copied out at once.
    let vip = unsafe { SHOAL_LB_VIPS.get(&published.frontend) }
        .copied()
        .ok_or(MeshEvent::NoBackend)?;
    let picked = lb::pick_backend(&vip, tcp.map_or(0, |t| t.seq)).ok_or(MeshEvent::NoBackend)?;
    let flow = open(key, ip, ports, published, config, &picked, now)?;
    count_event(MeshEvent::Forwarded);
    Ok(Tracked {
        flow,
        new_flow: true,
    })
}

/// Is the flow's task still a backend of its service, at the same address? (A service
/// removed takes its backends with it; one published again on the port gets new flows.)
#[inline(always)]
fn alive(flow: &MeshFlow) -> bool {
    lb::backend_alive_at(flow.backend_id, flow.peer_ip, flow.service_id)
}

/// The key of a forward entry's reply entry: what the task sends back, `task:target ->
/// local_ip:local_port` (the NAT address with source NAT, else the client).
#[inline(always)]
fn reply_key(forward: &MeshFlow, proto: u8) -> FlowKey {
    FlowKey {
        src_ip: forward.peer_ip,
        dst_ip: forward.local_ip,
        src_port: forward.peer_port,
        dst_port: forward.local_port,
        proto,
        direction: FLOW_REPLY,
        pad: [0; 2],
    }
}

/// Removes both entries of a flow from its table (`confirmed`: [`SHOAL_MESH_FLOWS`], where
/// each removal is counted as [`MeshEvent::Forgotten`], so that the agent does not take them
/// for the LRU's).
#[inline(always)]
fn forget(key: &FlowKey, flow: &MeshFlow, confirmed: bool) {
    let reply = reply_key(flow, key.proto);
    if confirmed {
        for k in [&reply, key] {
            if SHOAL_MESH_FLOWS.remove(k).is_ok() {
                count_event(MeshEvent::Forgotten);
            }
        }
    } else {
        let _ = SHOAL_MESH_UNCONFIRMED.remove(&reply);
        let _ = SHOAL_MESH_UNCONFIRMED.remove(key);
    }
}

/// Moves an unconfirmed flow into the confirmed table if this packet of its client (`key`,
/// not a SYN) confirms it: its task has answered (for TCP with a SYN-ACK whose ISN this
/// segment acknowledges, within [`CONFIRM_ACK_WINDOW`]). The confirmed table gets both entries
/// before the unconfirmed one loses them, so the flow is always in one of the two.
#[inline(always)]
fn confirm(key: &FlowKey, forward: &MeshFlow, tcp: Option<&TcpSegment>, closing: u32, now: u64) {
    let reply_key = reply_key(forward, key.proto);
    let Some((reply, _)) = find_in(&SHOAL_MESH_UNCONFIRMED, &reply_key) else {
        return;
    };
    // Unanswered, or (after the LRU took this flow's reply entry) another client's.
    if reply.flags & FLOW_UNREPLIED != 0
        || reply.peer_ip != key.src_ip
        || reply.peer_port != key.src_port
    {
        return;
    }
    if let Some(t) = tcp {
        let Some(ack) = t.ack else {
            return;
        };
        let expected = u32::from_be(reply.tcp_isn).wrapping_add(1);
        if u32::from_be(ack).wrapping_sub(expected) > CONFIRM_ACK_WINDOW {
            return;
        }
    }
    let forward = MeshFlow {
        last_seen: now,
        flags: forward.flags | closing,
        ..*forward
    };
    if SHOAL_MESH_FLOWS.insert(&reply_key, &reply, 0).is_err()
        || SHOAL_MESH_FLOWS.insert(key, &forward, 0).is_err()
    {
        return;
    }
    let _ = SHOAL_MESH_UNCONFIRMED.remove(key);
    let _ = SHOAL_MESH_UNCONFIRMED.remove(&reply_key);
    count_event(MeshEvent::Confirmed);
}

/// Stores the entries of a new flow onto `picked` in the unconfirmed table: the reply entry
/// first (it reserves the NAT port), then the forward one.
#[inline(always)]
fn open(
    key: &FlowKey,
    ip: &Ipv4Header,
    ports: &Ports,
    published: &PublishedPort,
    config: &MeshConfig,
    picked: &FlowState,
    now: u64,
) -> Result<MeshFlow, MeshEvent> {
    let backend = picked.nat_ip;
    let vtep = if published.mode == MODE_HOST {
        0
    } else {
        // SAFETY: copied out at once.
        unsafe { SHOAL_MESH_VTEPS.get(&backend) }
            .copied()
            .ok_or(MeshEvent::NoRoute)?
    };
    let local_ip = if published.mode == MODE_INGRESS {
        config.ingress_ip
    } else {
        ip.src
    };
    let reply = MeshFlow {
        last_seen: now,
        peer_ip: ip.src,
        local_ip: ip.dst,
        peer_port: ports.src,
        local_port: ports.dst,
        vtep: 0,
        backend_id: picked.backend_id,
        service_id: picked.service_id,
        tcp_isn: 0,
        flags: FLOW_UNREPLIED,
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
        flags: 0,
        ..reply
    };
    let _ = SHOAL_MESH_UNCONFIRMED.insert(key, &forward, 0);
    Ok(forward)
}

/// Does reply entry `e` belong to the client of `reply` (a flow of the same client and port)?
#[inline(always)]
fn same_client(e: &MeshFlow, reply: &MeshFlow) -> bool {
    e.peer_ip == reply.peer_ip
        && e.peer_port == reply.peer_port
        && e.local_ip == reply.local_ip
        && e.local_port == reply.local_port
}

/// Stores the reply entry `task:target -> local_ip:port` in the unconfirmed table and returns
/// the port. With source NAT the port is the NAT port: the client's own if free at that task
/// in both tables, else one of a few others derived from the client; otherwise it is the
/// client's (whose address is kept: an entry of the same key is an older flow's, taken over).
#[inline(always)]
fn reserve_reply(
    ip: &Ipv4Header,
    ports: &Ports,
    published: &PublishedPort,
    backend: u32,
    local_ip: u32,
    reply: &MeshFlow,
) -> Result<u16, MeshEvent> {
    let keeps_client = published.mode != MODE_INGRESS;
    let tries = if keeps_client { 1 } else { NAT_PORT_TRIES + 1 };
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
        // Held by a confirmed flow of another client?
        let taken = !keeps_client
            && find_in(&SHOAL_MESH_FLOWS, &key).is_some_and(|(e, _)| !same_client(&e, reply));
        if !taken {
            if SHOAL_MESH_UNCONFIRMED.insert(&key, reply, NOEXIST).is_ok() {
                return Ok(port);
            }
            // Taken: by an earlier flow of this very client to this port (a reused port, or a
            // forward entry the LRU lost)? Then it is ours to take over.
            let ours =
                find_in(&SHOAL_MESH_UNCONFIRMED, &key).is_some_and(|(e, _)| same_client(&e, reply));
            if ours || keeps_client {
                let _ = SHOAL_MESH_UNCONFIRMED.insert(&key, reply, 0);
                return Ok(port);
            }
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

/// A forward key of `ip`/`ports` as the client sent them.
#[inline(always)]
pub fn forward_key(ip: &Ipv4Header, ports: &Ports) -> FlowKey {
    FlowKey {
        src_ip: ip.src,
        dst_ip: ip.dst,
        src_port: ports.src,
        dst_port: ports.dst,
        proto: ip.proto,
        direction: FLOW_FORWARD,
        pad: [0; 2],
    }
}
