//! The task's node's half of a client-kept flow (see `shoal_common::mesh`): the flow's packets
//! arrive on `ingress` with the client's own address as source, and the task answers the
//! client by its default route, the gateway bridge. Those answers must go back through the
//! node that received the flow, the one the client is talking to, and only that node can say
//! `node:P` again.
//!
//! - [`note_arrival`] (tc egress of a task's veth): a packet the mesh brought carries the
//!   receiving node in its source MAC (`02:43:<its ingress address>`); the answer's flow key is
//!   noted with that address.
//! - [`steer`] (the reply program, tc ingress of the task's gateway-bridge port): an answer
//!   with a note is sent into this node's ingress interface, addressed to the receiving node's
//!   ingress endpoint, and the `ingress` overlay carries it there.

use aya_ebpf::{helpers::bpf_redirect, programs::TcContext};
use shoal_common::{
    lb::{FLOW_REPLY, FlowKey, mac_for_ip},
    mesh::MeshEvent,
};

use super::maps::{SHOAL_MESH_INGRESS_IF, SHOAL_MESH_RETURNS, config, count_event};
use crate::lb::{
    headers::{ETH_SRC, Ipv4Flow, PROTO_TCP, TCP_ACK_FLAG, TCP_FLAGS, TCP_SYN},
    nat,
};

/// The first two bytes of [`shoal_common::mesh::mesh_source_mac`].
const MESH_MAC_PREFIX: [u8; 2] = [0x02, 0x43];

/// A packet `flow` reaching a task: if the routing mesh brought it with the client's address
/// kept, notes which node received it, under the key of the task's answer. TCP notes at the
/// SYN (a connection's later packets find the note there); UDP at every datagram whose note
/// differs (one lookup otherwise).
#[inline(always)]
pub fn note_arrival(ctx: &TcContext, flow: &Ipv4Flow) {
    // One read: the prefix says whether it is the mesh's, the rest which node.
    let Ok(mac) = ctx.load::<[u8; 6]>(ETH_SRC) else {
        return;
    };
    if mac[..2] != MESH_MAC_PREFIX {
        return;
    }
    let node = u32::from_ne_bytes([mac[2], mac[3], mac[4], mac[5]]);
    // Source NAT (`source=snat`): the task answers that node's own address, no note needed.
    if node == flow.src_ip {
        return;
    }
    let key = answer_key(flow);
    let noted = if flow.proto == PROTO_TCP {
        // Only a SYN (without ACK) opens a connection.
        ctx.load::<u8>(flow.l4 + TCP_FLAGS)
            .is_ok_and(|f| f & TCP_SYN == 0 || f & TCP_ACK_FLAG != 0)
    } else {
        // SAFETY: copied out at once.
        (unsafe { SHOAL_MESH_RETURNS.get(&key) }) == Some(&node)
    };
    if !noted {
        let _ = SHOAL_MESH_RETURNS.insert(&key, &node, 0);
    }
}

/// The key of the task's answers to `flow` (a packet toward the task).
#[inline(always)]
fn answer_key(flow: &Ipv4Flow) -> FlowKey {
    FlowKey {
        src_ip: flow.dst_ip,
        dst_ip: flow.src_ip,
        src_port: flow.dst_port,
        dst_port: flow.src_port,
        proto: flow.proto,
        direction: FLOW_REPLY,
        pad: [0; 2],
    }
}

/// A task's answer `key` (which no reply entry of this node matched): if it belongs to a
/// client-kept flow another node received, it goes there, into this node's ingress interface
/// with that node's ingress endpoint as destination MAC. `None`: not ours, it passes.
#[inline(always)]
pub fn steer(ctx: &TcContext, key: &FlowKey) -> Option<i32> {
    // SAFETY: copied out at once.
    let node = unsafe { SHOAL_MESH_RETURNS.get(key) }.copied()?;
    let ifindex = SHOAL_MESH_INGRESS_IF.get(0).copied().filter(|i| *i != 0)?;
    let config = config()?;
    // Our own flow would have had its reply entry here; without it there is nowhere to go.
    if node == config.ingress_ip {
        return None;
    }
    let to = mac_for_ip(node.to_ne_bytes());
    let from = mac_for_ip(config.ingress_ip.to_ne_bytes());
    if nat::set_dst_mac(ctx, &to).is_err() || nat::set_src_mac(ctx, &from).is_err() {
        return None;
    }
    count_event(MeshEvent::Returned);
    // SAFETY: plain helper call.
    Some(unsafe { bpf_redirect(ifindex, 0) } as i32)
}
