//! The task's node's half of a client-kept flow (see `shoal_common::mesh`): the flow's packets
//! arrive on `ingress` with the client's own address as source, and the task answers the
//! client by its default route, the gateway bridge. Those answers must go back through the
//! node that received the flow, the one the client is talking to, and only that node can say
//! `node:P` again.
//!
//! - [`note_arrival`] (tc egress of a task's veth): a packet the mesh brought carries the
//!   receiving node in its source MAC (`02:43:<its ingress address>`); the answer's flow key
//!   (without its source address) is noted with that node and the task's address.
//! - [`on_gateway_port`], [`as_task`] and [`steer`] (the reply program, tc ingress of the
//!   task's gateway-bridge port): an answer with a note gets the task's `ingress` address back
//!   as its source if it left with another (a UDP socket bound to `0.0.0.0` answers from the
//!   gateway bridge's), and is then either a flow this node received (its reply entry is
//!   here) or sent into this node's ingress interface, addressed to the receiving node's
//!   ingress endpoint, and the `ingress` overlay carries it there. The note decides, not a
//!   reply entry of this node: with the client's address kept, flows of one client port to
//!   one task through two nodes have the same `task -> client:port`, and this node's entry
//!   may be an earlier one's, lingering until the agent forgets it.

use aya_ebpf::{helpers::bpf_redirect, programs::TcContext};
use shoal_common::{
    lb::{FLOW_REPLY, FlowKey, mac_for_ip},
    mesh::{MeshConfig, MeshEvent, ReturnPath},
};

use super::maps::{SHOAL_MESH_INGRESS_IF, SHOAL_MESH_RETURNS, count_event};
use crate::lb::{
    headers::{ETH_SRC, IP_SRC, Ipv4Flow, PROTO_TCP, TCP_ACK_FLAG, TCP_SYN, read},
    nat,
};

/// The first two bytes of [`shoal_common::mesh::mesh_source_mac`].
const MESH_MAC_PREFIX: [u8; 2] = [0x02, 0x43];

/// A packet `flow` reaching a task: if the routing mesh brought it with the client's address
/// kept, notes which node received it, under the key of the task's answers. TCP notes at the
/// SYN (a connection's later packets find the note there); UDP at every datagram whose note
/// differs (one lookup otherwise). Everything else pays one 6-byte read.
#[inline(always)]
pub fn note_arrival(ctx: &TcContext, flow: &Ipv4Flow) {
    // One read: the prefix says whether it is the mesh's, the rest which node.
    let Some(mac) = read::<[u8; 6]>(ctx, ETH_SRC) else {
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
    let key = answer_key(flow.dst_port, flow.src_ip, flow.src_port, flow.proto);
    let path = ReturnPath {
        node,
        task: flow.dst_ip,
    };
    let noted = if flow.proto == PROTO_TCP {
        // Only a SYN (without ACK) opens a connection.
        flow.tcp_flags & TCP_SYN == 0 || flow.tcp_flags & TCP_ACK_FLAG != 0
    } else {
        // SAFETY: copied out at once.
        (unsafe { SHOAL_MESH_RETURNS.get(&key) }) == Some(&path)
    };
    if !noted {
        let _ = SHOAL_MESH_RETURNS.insert(&key, &path, 0);
    }
}

/// The key of a task's answers from port `task_port` to `client:client_port`, without the
/// answer's source address (see [`ReturnPath::task`]).
#[inline(always)]
fn answer_key(task_port: u16, client: u32, client_port: u16, proto: u8) -> FlowKey {
    FlowKey {
        src_ip: 0,
        dst_ip: client,
        src_port: task_port,
        dst_port: client_port,
        proto,
        direction: FLOW_REPLY,
        pad: [0; 2],
    }
}

/// The note of a task's answer `key` (a reply key as the answer left), if the program runs on
/// a gateway-bridge port (not on the node's ingress interface, where the answers other nodes
/// steer here arrive: its notes are for this node's own tasks) and there is one.
#[inline(always)]
pub fn on_gateway_port(ctx: &TcContext, key: &FlowKey) -> Option<ReturnPath> {
    let ingress_if = SHOAL_MESH_INGRESS_IF.get(0).copied().unwrap_or(0);
    // SAFETY: reading a field of the skb the program was given.
    if unsafe { (*ctx.skb.skb).ifindex } == ingress_if {
        return None;
    }
    let key = answer_key(key.src_port, key.dst_ip, key.dst_port, key.proto);
    // SAFETY: copied out at once.
    unsafe { SHOAL_MESH_RETURNS.get(&key) }.copied()
}

/// Gives the answer `flow` the task's `ingress` address as its source, if it left with another
/// (checksums kept right); `flow` and `key` then say so too.
#[inline(always)]
pub fn as_task(
    ctx: &TcContext,
    flow: &mut Ipv4Flow,
    key: &mut FlowKey,
    path: &ReturnPath,
) -> Result<(), i64> {
    if flow.src_ip != path.task {
        nat::rewrite_addr(ctx, flow, IP_SRC, flow.src_ip, path.task)?;
        flow.src_ip = path.task;
        key.src_ip = path.task;
    }
    Ok(())
}

/// Sends a task's answer of a client-kept flow another node received back there: into this
/// node's ingress interface, with that node's ingress endpoint as destination MAC. `None`:
/// this node received it (its reply entry is here), or the ingress interface is unknown.
#[inline(always)]
pub fn steer(ctx: &TcContext, path: &ReturnPath, config: &MeshConfig) -> Option<i32> {
    // Our own flow would have had its reply entry here; without it there is nowhere to go.
    if path.node == config.ingress_ip {
        return None;
    }
    let ifindex = SHOAL_MESH_INGRESS_IF.get(0).copied().filter(|i| *i != 0)?;
    let to = mac_for_ip(path.node.to_ne_bytes());
    let from = mac_for_ip(config.ingress_ip.to_ne_bytes());
    if nat::set_dst_mac(ctx, &to).is_err() || nat::set_src_mac(ctx, &from).is_err() {
        return None;
    }
    count_event(MeshEvent::Returned);
    // SAFETY: plain helper call.
    Some(unsafe { bpf_redirect(ifindex, 0) } as i32)
}
