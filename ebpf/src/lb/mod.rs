//! East-west service load balancing on the task-facing veths (the sandbox end of each task's
//! veth): packets a task sends to a VIP are balanced onto a backend (tc ingress), and the
//! backend's replies get the VIP back as their source (tc egress). Layouts and the
//! consistency rules between the agent and these programs: `shoal_common::lb`.
//!
//! # Layout
//! - `maps`: the maps and the counter updates.
//! - `headers`: offsets and parsing.
//! - `nat`: address and MAC rewrites with checksums.
//! - `arp`: the ARP responder for VIPs.
//! - `checksum`: the Internet checksum of the frames built on the stack.
//! - `reset`: the TCP reset sent for refused and orphaned connections.
//! - `unreachable`: the ICMP port unreachable sent for refused UDP datagrams.
//! - `echo`: ICMP echo requests to a VIP, answered in place.
//! - `icmp_error`: ICMP errors about a balanced flow, translated back to the VIP.

mod arp;
mod checksum;
mod echo;
pub(crate) mod headers;
mod icmp_error;
pub mod maps;
pub(crate) mod nat;
pub(crate) mod reset;
pub(crate) mod unreachable;

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_ktime_get_coarse_ns, bpf_redirect},
    programs::TcContext,
};
use headers::{
    ETH_P_ARP, ETH_P_IP, ETH_TYPE, IP, IP_DST, IP_PROTO, IP_SRC, Ipv4Flow, NotAFlow, PROTO_ICMP,
    PROTO_TCP, TCP_ACK_FLAG, TCP_FIN, TCP_FLAGS, TCP_RST, TCP_SEQ, TCP_SYN, ipv4_flow, mac_of,
};
use icmp_error::Translated;
use maps::{
    SHOAL_LB_BACKENDS, SHOAL_LB_CURSORS, SHOAL_LB_FLOWS, SHOAL_LB_SLOTS, SHOAL_LB_VIPS,
    count_event, count_traffic,
};
use shoal_common::lb::{
    FLOW_FIN, FLOW_FORWARD, FLOW_REPLY, FLOW_RST, FlowKey, FlowState, LbEvent, SlotKey, VipService,
};

const PASS: i32 = TC_ACT_OK as i32;
const DROP: i32 = TC_ACT_SHOT as i32;

/// The floor the load balancer is measured against: the Ethernet and IPv4/L4 header reads
/// every IPv4 packet costs (helper calls, so they are never optimized away), then pass.
#[inline(always)]
pub fn parse_only(ctx: &TcContext) -> i32 {
    if let Ok(ETH_P_IP) = ctx.load::<u16>(ETH_TYPE) {
        let _ = ipv4_flow(ctx);
    }
    PASS
}

/// A packet a task sent (tc ingress on the sandbox end of its veth).
#[inline(always)]
pub fn from_task(ctx: &TcContext) -> i32 {
    let Ok(ethertype) = ctx.load::<u16>(ETH_TYPE) else {
        return PASS;
    };
    if ethertype == ETH_P_ARP {
        return arp::answer_vip_request(ctx);
    }
    if ethertype != ETH_P_IP {
        return PASS;
    }
    // Only traffic to a VIP is ours; everything else passes untouched, however odd it is.
    let Ok(dst) = ctx.load::<u32>(IP_DST) else {
        return PASS;
    };
    // SAFETY: copied out at once (see aya's note on hash map aliasing).
    let Some(vip) = (unsafe { SHOAL_LB_VIPS.get(&dst) }).copied() else {
        forget_stale_reply(ctx);
        return PASS;
    };
    // ICMP to a VIP: an echo request is answered here (`echo`), anything else dropped.
    if let Ok(PROTO_ICMP) = ctx.load::<u8>(IP_PROTO) {
        return echo::answer(ctx);
    }
    let flow = match ipv4_flow(ctx) {
        Ok(flow) => flow,
        Err(NotAFlow::Fragment) => {
            count_event(LbEvent::Fragment);
            return DROP;
        }
        Err(NotAFlow::Truncated | NotAFlow::OtherProtocol) => {
            count_event(LbEvent::Malformed);
            return DROP;
        }
    };
    match balance(ctx, &flow, &vip) {
        Ok(verdict) => verdict,
        Err(_) => {
            count_event(LbEvent::Malformed);
            DROP
        }
    }
}

/// A task opening a TCP connection straight to another task (not through a VIP) from a port
/// an earlier, closed VIP flow to that task used: the old flow's reply entry (still lingering
/// before the agent forgets it) would rewrite this connection's replies to come from the
/// VIP. It goes now. Only SYNs pay for the lookup.
#[inline(always)]
fn forget_stale_reply(ctx: &TcContext) {
    // The cheapest checks first: this runs for every packet not sent to a VIP.
    match (ctx.load::<u8>(IP), ctx.load::<u8>(IP_PROTO)) {
        (Ok(ver_ihl), Ok(PROTO_TCP)) => {
            let flags = ctx.load::<u8>(IP + usize::from(ver_ihl & 0x0f) * 4 + TCP_FLAGS);
            if !matches!(flags, Ok(f) if f & TCP_SYN != 0 && f & TCP_ACK_FLAG == 0) {
                return;
            }
        }
        _ => return,
    }
    let Ok(flow) = ipv4_flow(ctx) else {
        return;
    };
    let reply = FlowKey {
        src_ip: flow.dst_ip,
        dst_ip: flow.src_ip,
        src_port: flow.dst_port,
        dst_port: flow.src_port,
        proto: PROTO_TCP,
        direction: FLOW_REPLY,
        pad: [0; 2],
    };
    let _ = SHOAL_LB_FLOWS.remove(&reply);
}

/// What to do with the TCP flags of a segment for flow tracking.
struct TcpSegment {
    /// A SYN without ACK: the start of a connection.
    opening: bool,
    /// Its sequence number (the ISN, when opening), as loaded.
    seq: u32,
    /// [`FLOW_FIN`] / [`FLOW_RST`] if the segment carries them.
    closing: u32,
}

/// An IPv4 TCP/UDP packet's headers, and the key of the reply entry it would belong to
/// (its 5-tuple as seen, direction [`FLOW_REPLY`]); `None` for anything else. What the
/// reply hooks (VIP and published ports) look up for every packet.
#[inline(always)]
pub(crate) fn as_reply(ctx: &TcContext) -> Option<(Ipv4Flow, FlowKey)> {
    if ctx.load::<u16>(ETH_TYPE).ok()? != ETH_P_IP {
        return None;
    }
    let flow = ipv4_flow(ctx).ok()?;
    let key = FlowKey {
        src_ip: flow.src_ip,
        dst_ip: flow.dst_ip,
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        proto: flow.proto,
        direction: FLOW_REPLY,
        pad: [0; 2],
    };
    Some((flow, key))
}

/// The flow-entry flags (FIN, RST) the packet carries: 0 for UDP.
#[inline(always)]
pub(crate) fn closing_of(ctx: &TcContext, flow: &Ipv4Flow) -> u32 {
    if flow.proto == PROTO_TCP {
        ctx.load::<u8>(flow.l4 + TCP_FLAGS).map_or(0, closing_bits)
    } else {
        0
    }
}

/// The flow-entry flags a TCP segment's flags set.
#[inline(always)]
pub(crate) fn closing_bits(tcp_flags: u8) -> u32 {
    let mut bits = 0;
    if tcp_flags & TCP_FIN != 0 {
        bits |= FLOW_FIN;
    }
    if tcp_flags & TCP_RST != 0 {
        bits |= FLOW_RST;
    }
    bits
}

/// Looks up a flow entry: a copy of it, and where it is, to record packets in it.
#[inline(always)]
fn find_flow(key: &FlowKey) -> Option<(FlowState, *mut FlowState)> {
    let entry = SHOAL_LB_FLOWS.get_ptr_mut(key)?;
    // SAFETY: a valid entry of the map, copied out at once.
    Some((unsafe { *entry }, entry))
}

/// Records a packet in an entry found by [`find_flow`]: when it was seen, and how the flow is
/// closing.
#[inline(always)]
fn touch(entry: *mut FlowState, closing: u32) {
    // SAFETY: a valid entry (found just before, in this program run, under RCU); a racing
    // writer on another CPU can only set the same kind of values (a time, more flags), and a
    // torn time is corrected by the next packet.
    unsafe {
        (*entry).last_seen_ns = bpf_ktime_get_coarse_ns();
        (*entry).flags |= closing;
    }
}

#[inline(always)]
fn balance(ctx: &TcContext, flow: &Ipv4Flow, vip: &VipService) -> Result<i32, i64> {
    let tcp = if flow.proto == PROTO_TCP {
        let flags: u8 = ctx.load(flow.l4 + TCP_FLAGS)?;
        Some(TcpSegment {
            opening: flags & TCP_SYN != 0 && flags & TCP_ACK_FLAG == 0,
            seq: ctx.load(flow.l4 + TCP_SEQ)?,
            closing: closing_bits(flags),
        })
    } else {
        None
    };
    let key = FlowKey {
        src_ip: flow.src_ip,
        dst_ip: flow.dst_ip,
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        proto: flow.proto,
        direction: FLOW_FORWARD,
        pad: [0; 2],
    };
    let known = find_flow(&key);
    let mut new_flow = false;
    let state = match known {
        // A SYN with a new ISN on a known 5-tuple is a new connection (the port was reused).
        Some((state, _))
            if tcp
                .as_ref()
                .is_some_and(|t| t.opening && t.seq != state.tcp_isn) =>
        {
            forget_reply(flow, &state);
            None
        }
        Some((state, entry)) if backend_alive(&state, vip) => {
            touch(entry, tcp.as_ref().map_or(0, |t| t.closing));
            Some(state)
        }
        Some((state, _)) => {
            count_event(LbEvent::BackendGone);
            forget_reply(flow, &state);
            let _ = SHOAL_LB_FLOWS.remove(&key);
            if tcp.is_some() {
                return Ok(reset::reply_with_reset(ctx, flow));
            }
            // UDP has no connection to break: the flow moves to a live backend.
            None
        }
        None => None,
    };
    let state = match state {
        Some(state) => state,
        None => {
            // Only the start of a connection may be balanced: a mid-stream TCP segment with no
            // flow entry (its backend was removed, or the entry evicted) is reset.
            if tcp.as_ref().is_some_and(|t| !t.opening) {
                count_event(LbEvent::BackendGone);
                return Ok(reset::reply_with_reset(ctx, flow));
            }
            let Some(state) = pick_backend(vip, tcp.as_ref().map_or(0, |t| t.seq)) else {
                // Refused at once, as a closed port would: a reset, or a port unreachable.
                count_event(LbEvent::NoBackend);
                return Ok(if tcp.is_some() {
                    reset::reply_with_reset(ctx, flow)
                } else {
                    unreachable::reply_with_unreachable(ctx, flow)
                });
            };
            remember(&key, flow, &state);
            new_flow = true;
            state
        }
    };
    count_traffic(
        state.service_id,
        state.backend_id,
        u64::from(ctx.len()),
        new_flow,
    );
    if state.nat_ip == flow.src_ip {
        return hairpin(ctx, flow);
    }
    nat::rewrite_addr(ctx, flow, IP_DST, flow.dst_ip, state.nat_ip)?;
    nat::set_dst_mac(ctx, &mac_of(state.nat_ip))?;
    Ok(PASS)
}

/// A task balanced onto itself. The bridge never sends a frame back out of the port it came
/// in on, and a reply from `self` to `self` would stay on the task's loopback; so both
/// directions are turned into `VIP -> task` and sent straight back: the client sees the VIP as
/// its peer, and the server sees the VIP as its client (IPVS in a Docker task does the same).
/// Both directions arrive here as `task -> VIP` (the forward entry and the one
/// [`remember`] stores for the server's side).
#[inline(always)]
fn hairpin(ctx: &TcContext, flow: &Ipv4Flow) -> Result<i32, i64> {
    let (task, vip) = (flow.src_ip, flow.dst_ip);
    nat::rewrite_addr(ctx, flow, IP_SRC, task, vip)?;
    nat::rewrite_addr(ctx, flow, IP_DST, vip, task)?;
    nat::set_src_mac(ctx, &mac_of(vip))?;
    nat::set_dst_mac(ctx, &mac_of(task))?;
    // SAFETY: plain helper call on this skb's own interface.
    Ok(unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) } as i32)
}

/// Is the flow's backend still the service's, at the same address?
#[inline(always)]
fn backend_alive(state: &FlowState, vip: &VipService) -> bool {
    state.service_id == vip.service_id
        && backend_alive_at(state.backend_id, state.nat_ip, vip.service_id)
}

/// Does backend `id` still hold `ip` for `service_id`?
#[inline(always)]
pub(crate) fn backend_alive_at(id: u32, ip: u32, service_id: u32) -> bool {
    SHOAL_LB_BACKENDS
        .get(id)
        .is_some_and(|b| b.ip == ip && b.service_id == service_id)
}

/// The next backend of the service in round-robin order, as a forward flow state.
#[inline(always)]
pub(crate) fn pick_backend(vip: &VipService, tcp_isn: u32) -> Option<FlowState> {
    if vip.backend_count == 0 {
        return None;
    }
    let cursor = SHOAL_LB_CURSORS.get_ptr_mut(vip.service_id)?;
    // SAFETY: a valid array slot; every CPU updates it only through this atomic fetch-add
    // (BPF_FETCH, ISA v3: see ebpf/link-bpf-v3.sh), so the round robin is exact across CPUs.
    // SeqCst, not Relaxed: LLVM 22 lowers a relaxed atomicrmw add to BPF's non-fetching
    // `lock +=` even when the old value is used, and silently returns the addend instead.
    let n = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(cursor, 1) };
    let slot = SlotKey {
        service_id: vip.service_id,
        slot: (n % u64::from(vip.backend_count)) as u32,
    };
    // SAFETY: copied out at once.
    let backend_id = unsafe { SHOAL_LB_SLOTS.get(&slot) }.copied()?;
    let backend = SHOAL_LB_BACKENDS.get(backend_id)?;
    if backend.service_id != vip.service_id || backend.ip == 0 {
        return None;
    }
    Some(FlowState {
        nat_ip: backend.ip,
        backend_id,
        service_id: vip.service_id,
        tcp_isn,
        // SAFETY: plain helper call.
        last_seen_ns: unsafe { bpf_ktime_get_coarse_ns() },
        flags: 0,
        pad: 0,
    })
}

/// Stores the forward entry and the reply entry that undoes the NAT. For a task balanced onto
/// itself, the second entry is another forward one: its server side answers `task -> VIP`.
#[inline(always)]
fn remember(key: &FlowKey, flow: &Ipv4Flow, state: &FlowState) {
    let _ = SHOAL_LB_FLOWS.insert(key, state, 0);
    if state.nat_ip == flow.src_ip {
        let server_side = FlowKey {
            src_port: flow.dst_port,
            dst_port: flow.src_port,
            ..*key
        };
        let _ = SHOAL_LB_FLOWS.insert(
            &server_side,
            &FlowState {
                tcp_isn: 0,
                ..*state
            },
            0,
        );
        return;
    }
    let reply = FlowState {
        nat_ip: flow.dst_ip,
        ..*state
    };
    let _ = SHOAL_LB_FLOWS.insert(&reply_key(flow, state), &reply, 0);
}

#[inline(always)]
fn forget_reply(flow: &Ipv4Flow, state: &FlowState) {
    let _ = SHOAL_LB_FLOWS.remove(&reply_key(flow, state));
}

/// The key of the backend's replies to the client.
#[inline(always)]
fn reply_key(flow: &Ipv4Flow, state: &FlowState) -> FlowKey {
    FlowKey {
        src_ip: state.nat_ip,
        dst_ip: flow.src_ip,
        src_port: flow.dst_port,
        dst_port: flow.src_port,
        proto: flow.proto,
        direction: FLOW_REPLY,
        pad: [0; 2],
    }
}

/// A packet on its way to a task (tc egress on the sandbox end of its veth): a backend's reply
/// to a balanced flow gets the VIP back as its source, and so does an ICMP error about such a
/// flow (`icmp_error`).
#[inline(always)]
pub fn to_task(ctx: &TcContext) -> i32 {
    let Some((flow, key)) = as_reply(ctx) else {
        // Not TCP or UDP: only then is it worth asking whether it is an ICMP error to
        // translate (the common packet pays nothing for it).
        return match ctx.load::<u8>(IP_PROTO) {
            Ok(PROTO_ICMP) if ctx.load::<u16>(ETH_TYPE) == Ok(ETH_P_IP) => {
                match icmp_error::translate(ctx) {
                    Translated::NotOurs => PASS,
                    Translated::Done => {
                        count_event(LbEvent::ReplyNat);
                        PASS
                    }
                    Translated::Failed => DROP,
                }
            }
            _ => PASS,
        };
    };
    // A published port's flow with the client's address kept: where it came in.
    crate::mesh::note_arrival(ctx, &flow);
    let Some((state, entry)) = find_flow(&key) else {
        return PASS;
    };
    touch(entry, closing_of(ctx, &flow));
    count_event(LbEvent::ReplyNat);
    count_traffic(
        state.service_id,
        state.backend_id,
        u64::from(ctx.len()),
        false,
    );
    let rewritten = nat::rewrite_addr(ctx, &flow, IP_SRC, flow.src_ip, state.nat_ip)
        .and_then(|()| nat::set_src_mac(ctx, &mac_of(state.nat_ip)));
    match rewritten {
        Ok(()) => PASS,
        Err(_) => DROP,
    }
}
