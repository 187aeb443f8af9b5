//! The answers of published-port flows (tc ingress on the node's ingress interface, and on
//! host-mode tasks' gateway-bridge ports): `task:target -> NAT address` becomes `node:P ->
//! client` again and goes straight out of the underlay, past the node's routing and
//! masquerade. Everything else passes untouched.
//!
//! tc, not XDP, on purpose: answers come from local sockets (a task's, or out of a VXLAN
//! device) with partial checksums, which only the skb helpers keep right.
//!
//! An answer of an unconfirmed flow is un-NAT-ed all the same, and recorded in its reply entry
//! (answered; for TCP the task's ISN): what the client's next packet needs to confirm the
//! flow, in the XDP program.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect_neigh,
    programs::TcContext,
};
use shoal_common::mesh::MeshEvent;

use super::{
    maps::{answered, config, count_event, find_flow, touch},
    returns, task_icmp,
};
use crate::lb::{
    self,
    headers::{
        IP_DST, IP_SRC, Ipv4Flow, L4_DST_PORT, L4_SRC_PORT, PROTO_TCP, TCP_FLAGS, TCP_SEQ, TCP_SYN,
    },
    nat,
};

const PASS: i32 = TC_ACT_OK as i32;
const DROP: i32 = TC_ACT_SHOT as i32;

#[inline(always)]
pub fn from_backend(ctx: &TcContext) -> i32 {
    let Some(config) = config() else {
        return PASS;
    };
    let Some((mut flow, mut key)) = lb::as_reply(ctx) else {
        // Not TCP or UDP: an ICMP error about a flow's packet, from its task?
        return task_icmp::from_task(ctx, &config);
    };
    // On a task's gateway-bridge port, an answer of a client-kept flow goes by its note, the
    // latest word on where the client's flow came in: a reply entry of this node for the same
    // `task -> client:port` may be an earlier flow's, through this node, still lingering.
    if let Some(path) = returns::on_gateway_port(ctx, &key) {
        if returns::as_task(ctx, &mut flow, &mut key, &path).is_err() {
            return DROP;
        }
        if let Some(verdict) = returns::steer(ctx, &path, &config) {
            return verdict;
        }
    }
    let Some(found) = find_flow(&key) else {
        return PASS;
    };
    let (state, entry, unconfirmed) = found;
    let closing = lb::closing_of(ctx, &flow);
    touch(entry, closing, crate::clock::now());
    if unconfirmed {
        record_answer(ctx, &flow, entry);
    }
    count_event(MeshEvent::Replied);
    lb::maps::count_traffic(
        state.service_id,
        state.backend_id,
        u64::from(ctx.len()),
        false,
    );
    let rewritten = nat::rewrite_addr(ctx, &flow, IP_SRC, flow.src_ip, state.local_ip)
        .and_then(|()| nat::rewrite_addr(ctx, &flow, IP_DST, flow.dst_ip, state.peer_ip))
        .and_then(|()| nat::rewrite_port(ctx, &flow, L4_SRC_PORT, flow.src_port, state.local_port))
        .and_then(|()| nat::rewrite_port(ctx, &flow, L4_DST_PORT, flow.dst_port, state.peer_port));
    if rewritten.is_err() {
        return DROP;
    }
    // The neighbour subsystem fills in both MACs toward the client (or its gateway).
    // SAFETY: plain helper call, no parameters.
    unsafe { bpf_redirect_neigh(config.underlay_ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

/// The task's answer to an unconfirmed flow (see `shoal_common::mesh`): any UDP datagram, or a
/// TCP SYN-ACK, whose ISN the client's ACK must then acknowledge.
#[inline(always)]
fn record_answer(ctx: &TcContext, flow: &Ipv4Flow, entry: *mut shoal_common::mesh::MeshFlow) {
    if flow.proto != PROTO_TCP {
        answered(entry, None);
        return;
    }
    if let (Ok(flags), Ok(seq)) = (
        ctx.load::<u8>(flow.l4 + TCP_FLAGS),
        ctx.load::<u32>(flow.l4 + TCP_SEQ),
    ) && flags & TCP_SYN != 0
    {
        answered(entry, Some(seq));
    }
}
