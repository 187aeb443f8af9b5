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
pub(crate) mod checksum;
mod echo;
pub(crate) mod headers;
mod icmp_error;
pub mod maps;
pub(crate) mod nat;
pub(crate) mod reset;
pub(crate) mod unreachable;

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    ptr::NonNull,
};

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect,
    programs::TcContext,
};
use headers::{
    ETH_P_ARP, ETH_P_IP, Ipv4Flow, Ipv4Header, NotAFlow, PROTO_ICMP, PROTO_TCP, TCP_ACK_FLAG,
    TCP_FIN, TCP_RST, TCP_SYN, ethertype, ipv4_flow, ipv4_header,
};
use icmp_error::Translated;
use maps::{
    SHOAL_LB_BACKENDS, SHOAL_LB_CURSORS, SHOAL_LB_FLOWS, SHOAL_LB_SLOTS, SHOAL_LB_VIPS,
    count_event, count_traffic, maybe_vip,
};
use nat::Side;
use shoal_common::lb::{
    FLOW_FIN, FLOW_FORWARD, FLOW_REPLY, FLOW_RST, FlowKey, FlowState, LbEvent, SlotKey, VipService,
};

const PASS: i32 = TC_ACT_OK as i32;
const DROP: i32 = TC_ACT_SHOT as i32;

/// What the tc programs read of every packet, once, whatever path it then takes.
enum Parsed {
    /// An ARP frame.
    Arp,
    /// An IPv4 packet: its fixed header, and its TCP/UDP headers or why it has none.
    Ipv4(Ipv4Header, Result<Ipv4Flow, NotAFlow>),
    /// Anything else (IPv6, an IPv4 frame too short for its header).
    Other,
}

/// The one parse of [`from_task`] and [`to_task`] (and of the floor, [`parse_only`]): the
/// ethertype, the IPv4 header, the ports and TCP flags and sequence number, read in place.
#[inline(always)]
fn parse(ctx: &TcContext) -> Parsed {
    match ethertype(ctx) {
        Some(ETH_P_IP) => match ipv4_header(ctx) {
            Some(ip) => {
                let flow = ipv4_flow(ctx, &ip);
                Parsed::Ipv4(ip, flow)
            }
            None => Parsed::Other,
        },
        Some(ETH_P_ARP) => Parsed::Arp,
        _ => Parsed::Other,
    }
}

/// The floor the load balancer is measured against: the same parse as the real programs
/// ([`parse`]: direct reads, a pull when the headers are not linear), then pass. The verdict
/// depends on every field read, so none of the reads is optimized away (in the real programs
/// every one is used); it is always `TC_ACT_OK` for a real packet.
#[inline(always)]
pub fn parse_only(ctx: &TcContext) -> i32 {
    if let Parsed::Ipv4(ip, Ok(flow)) = parse(ctx) {
        let folded = ip.dst
            ^ flow.src_ip
            ^ u32::from(flow.src_port)
            ^ (u32::from(flow.dst_port) << 16)
            ^ flow.tcp_seq
            ^ u32::from(flow.tcp_flags);
        // An impossible packet (ver_ihl 0 never parses): keeps `folded` live.
        if folded == 0 && ip.ver_ihl == 0 {
            return DROP;
        }
    }
    PASS
}

/// A packet a task sent (tc ingress on the sandbox end of its veth).
#[inline(always)]
pub fn from_task(ctx: &TcContext) -> i32 {
    let (ip, flow) = match parse(ctx) {
        Parsed::Ipv4(ip, flow) => (ip, flow),
        Parsed::Arp => return arp::answer_vip_request(ctx),
        Parsed::Other => return PASS,
    };
    // Only traffic to a VIP is ours; everything else passes untouched, however odd it is.
    // Most of it is known to be no VIP's from one array read.
    if !maybe_vip(ip.dst) {
        if let Ok(flow) = &flow {
            forget_stale_reply(flow);
        }
        return PASS;
    }
    // A segment of an established flow needs no VIP lookup: its entry names its service and
    // backend, and the backend entry says whether that still holds (a VIP that goes takes its
    // backends with it).
    let known = match &flow {
        Ok(flow) => flow_entry(&forward_key(flow)),
        Err(_) => None,
    };
    if let (Ok(flow), Some(entry)) = (&flow, known)
        && let state = read_entry(entry)
        && goes_on(flow, &state)
    {
        touch(entry.as_ptr(), &state, closing_of(ctx, flow));
        return forward(ctx, flow, &state, false).unwrap_or_else(|_| {
            count_event(LbEvent::Malformed);
            DROP
        });
    }
    // SAFETY: copied out at once (see aya's note on hash map aliasing).
    let Some(vip) = (unsafe { SHOAL_LB_VIPS.get(&ip.dst) }).copied() else {
        if let Ok(flow) = &flow {
            forget_stale_reply(flow);
        }
        return PASS;
    };
    // ICMP to a VIP: an echo request is answered here (`echo`), anything else dropped.
    if ip.proto == PROTO_ICMP {
        return echo::answer(ctx);
    }
    let flow = match flow {
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
    match balance(ctx, &flow, &vip, known) {
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
/// VIP. It goes now. Only SYNs pay for the lookup: every other packet not sent to a VIP costs
/// the one VIP lookup that missed.
#[inline(always)]
fn forget_stale_reply(flow: &Ipv4Flow) {
    if flow.proto != PROTO_TCP || !opening(flow.tcp_flags) {
        return;
    }
    let reply = FlowKey {
        src_ip: flow.dst_ip,
        dst_ip: flow.src_ip,
        src_port: flow.dst_port,
        dst_port: flow.src_port,
        proto: PROTO_TCP,
        direction: FLOW_REPLY,
        pad: [0; 2],
    };
    forget(&reply);
}

/// A SYN without ACK: the start of a connection.
#[inline(always)]
fn opening(tcp_flags: u8) -> bool {
    tcp_flags & TCP_SYN != 0 && tcp_flags & TCP_ACK_FLAG == 0
}

/// What to do with the TCP flags of a segment for flow tracking.
struct TcpSegment {
    /// A SYN without ACK: the start of a connection.
    opening: bool,
    /// Its sequence number (the ISN, when opening), as loaded.
    seq: u32,
}

/// An IPv4 TCP/UDP packet's headers, and the key of the reply entry it would belong to
/// (its 5-tuple as seen, direction [`FLOW_REPLY`]); `None` for anything else. What the
/// reply hooks (VIP and published ports) look up for every packet.
#[inline(always)]
pub(crate) fn as_reply(ctx: &TcContext) -> Option<(Ipv4Flow, FlowKey)> {
    match parse(ctx) {
        Parsed::Ipv4(_, Ok(flow)) => Some((flow, reply_key_of(&flow))),
        _ => None,
    }
}

/// The key of the reply entry `flow` would belong to.
#[inline(always)]
fn reply_key_of(flow: &Ipv4Flow) -> FlowKey {
    FlowKey {
        src_ip: flow.src_ip,
        dst_ip: flow.dst_ip,
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        proto: flow.proto,
        direction: FLOW_REPLY,
        pad: [0; 2],
    }
}

/// The flow-entry flags (FIN, RST) the packet carries: 0 for UDP. (From the parse: the
/// context is no longer read.)
#[inline(always)]
pub(crate) fn closing_of(_ctx: &TcContext, flow: &Ipv4Flow) -> u32 {
    if flow.proto == PROTO_TCP {
        closing_bits(flow.tcp_flags)
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
    let entry = flow_entry(key)?;
    Some((read_entry(entry), entry.as_ptr()))
}

/// Where a flow entry is. (A bare pointer: an `Option` of it is a nullable pointer, where an
/// `Option` of a copy would leave its payload undefined when `None`, and LLVM may then spill
/// any register for it, which the verifier refuses as a read of an uninitialized one.)
#[inline(always)]
fn flow_entry(key: &FlowKey) -> Option<NonNull<FlowState>> {
    NonNull::new(SHOAL_LB_FLOWS.get_ptr_mut(key)?)
}

/// A copy of a flow entry found by [`flow_entry`].
#[inline(always)]
fn read_entry(entry: NonNull<FlowState>) -> FlowState {
    // SAFETY: a valid entry of the map (found in this program run, under RCU), copied out.
    unsafe { *entry.as_ptr() }
}

/// Records a packet in an entry found by [`find_flow`] (`state`, its copy): when it was seen,
/// and how the flow is closing. The entry is written only when that changes: the clock
/// ticks once a jiffy, so most packets of a busy flow find both as they are, and leave the
/// entry's cache line clean for the other CPUs that read it.
#[inline(always)]
fn touch(entry: *mut FlowState, state: &FlowState, closing: u32) {
    let now = crate::clock::now();
    if now == state.last_seen && state.flags & closing == closing {
        return;
    }
    // SAFETY: a valid entry (found just before, in this program run, under RCU); a racing
    // writer on another CPU can only set the same kind of values (a time, more flags), and a
    // torn time is corrected by the next packet.
    unsafe {
        (*entry).last_seen = now;
        (*entry).flags |= closing;
    }
}

/// The key of `flow`'s forward entry (its 5-tuple as the client sent it).
#[inline(always)]
fn forward_key(flow: &Ipv4Flow) -> FlowKey {
    FlowKey {
        src_ip: flow.src_ip,
        dst_ip: flow.dst_ip,
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        proto: flow.proto,
        direction: FLOW_FORWARD,
        pad: [0; 2],
    }
}

/// Does the flow of this entry (`state`) go on with this packet, as it is? Not for a SYN with
/// a new ISN (the port was reused: a new connection), nor once its backend is gone.
#[inline(always)]
fn goes_on(flow: &Ipv4Flow, state: &FlowState) -> bool {
    let new_connection =
        flow.proto == PROTO_TCP && opening(flow.tcp_flags) && flow.tcp_seq != state.tcp_isn;
    !new_connection && backend_alive_at(state.backend_id, state.nat_ip, state.service_id)
}

/// Sends a packet of a flow to a VIP on to its backend (`state`): counted, then DNAT-ed (or
/// turned round, for a task balanced onto itself).
#[inline(always)]
fn forward(
    ctx: &TcContext,
    flow: &Ipv4Flow,
    state: &FlowState,
    new_flow: bool,
) -> Result<i32, i64> {
    count_traffic(
        state.service_id,
        state.backend_id,
        u64::from(ctx.len()),
        new_flow,
    );
    if state.nat_ip == flow.src_ip {
        return hairpin(ctx, flow);
    }
    nat::nat_addr(ctx, flow, Side::Dst, flow.dst_ip, state.nat_ip)?;
    Ok(PASS)
}

/// A packet to a VIP that is not of a flow going on: balanced if it opens one, else refused
/// or reset. `known`: its forward entry, as found.
#[inline(always)]
fn balance(
    ctx: &TcContext,
    flow: &Ipv4Flow,
    vip: &VipService,
    known: Option<NonNull<FlowState>>,
) -> Result<i32, i64> {
    let tcp = if flow.proto == PROTO_TCP {
        Some(TcpSegment {
            opening: opening(flow.tcp_flags),
            seq: flow.tcp_seq,
        })
    } else {
        None
    };
    let key = forward_key(flow);
    match known.map(read_entry) {
        // A SYN with a new ISN on a known 5-tuple is a new connection (the port was reused).
        Some(state)
            if tcp
                .as_ref()
                .is_some_and(|t| t.opening && t.seq != state.tcp_isn) =>
        {
            forget_reply(flow, &state);
        }
        // Not going on (`goes_on`): its backend is gone.
        Some(state) => {
            count_event(LbEvent::BackendGone);
            forget_reply(flow, &state);
            forget(&key);
            if tcp.is_some() {
                return Ok(reset::reply_with_reset(ctx, flow));
            }
            // UDP has no connection to break: the flow moves to a live backend.
        }
        None => {}
    }
    // Only the start of a connection may be balanced: a mid-stream TCP segment with no flow
    // entry (its backend was removed, or the entry evicted) is reset.
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
    forward(ctx, flow, &state, true)
}

/// A task balanced onto itself. The bridge never sends a frame back out of the port it came
/// in on, and a reply from `self` to `self` would stay on the task's loopback; so both
/// directions are turned into `VIP -> task` and sent straight back: the client sees the VIP as
/// its peer, and the server sees the VIP as its client (IPVS in a Docker task does the same).
/// Both directions arrive here as `task -> VIP` (the forward entry and the one
/// [`remember`] stores for the server's side).
#[inline(always)]
fn hairpin(ctx: &TcContext, flow: &Ipv4Flow) -> Result<i32, i64> {
    nat::swap_addrs(ctx, flow)?;
    // SAFETY: plain helper call on this skb's own interface.
    Ok(unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) } as i32)
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
        last_seen: crate::clock::now(),
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
    forget(&reply_key(flow, state));
}

/// Removes a flow entry, counted (so the agent does not take it for the LRU's eviction).
#[inline(always)]
fn forget(key: &FlowKey) {
    if SHOAL_LB_FLOWS.remove(key).is_ok() {
        count_event(LbEvent::Forgotten);
    }
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
/// flow (`icmp_error`). A packet that is neither costs the parse and one flow lookup.
#[inline(always)]
pub fn to_task(ctx: &TcContext) -> i32 {
    let (ip, flow) = match parse(ctx) {
        Parsed::Ipv4(ip, flow) => (ip, flow),
        Parsed::Arp | Parsed::Other => return PASS,
    };
    let flow = match flow {
        Ok(flow) => flow,
        // Not TCP or UDP: only then is it worth asking whether it is an ICMP error to
        // translate (the common packet pays nothing for it).
        Err(_) if ip.proto == PROTO_ICMP => {
            return match icmp_error::translate(ctx) {
                Translated::NotOurs => PASS,
                Translated::Done => {
                    count_event(LbEvent::ReplyNat);
                    PASS
                }
                Translated::Failed => DROP,
            };
        }
        Err(_) => return PASS,
    };
    // A published port's flow with the client's address kept: where it came in.
    crate::mesh::note_arrival(ctx, &flow);
    let Some((state, entry)) = find_flow(&reply_key_of(&flow)) else {
        return PASS;
    };
    touch(entry, &state, closing_of(ctx, &flow));
    count_event(LbEvent::ReplyNat);
    count_traffic(
        state.service_id,
        state.backend_id,
        u64::from(ctx.len()),
        false,
    );
    match nat::nat_addr(ctx, &flow, Side::Src, flow.src_ip, state.nat_ip) {
        Ok(()) => PASS,
        Err(_) => DROP,
    }
}
