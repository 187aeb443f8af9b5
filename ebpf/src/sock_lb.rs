//! Node-local clients of published ports, balanced at the socket (Cilium's socket LB): a
//! process on the node connecting to `localhost:P`, `127.0.0.1:P` or one of the node's own
//! addresses on a published port `P` is connected straight to a task of the service (the same
//! round robin and backend set as the routing mesh), once, at `connect(2)`; its packets then
//! need no NAT at all. XDP never sees such traffic: it does not come from the wire.
//!
//! `getpeername(2)` on such a socket answers with the address it asked for, as Cilium's
//! `getpeername4` hook does (the origin is kept by socket cookie).
//!
//! The programs are attached to the cgroup v2 root, so it runs for every socket of the host; it
//! acts only in the node's own network namespace (its cookie, written by the agent), so several
//! nodes on one host (the tests, the demo) each serve their own.

use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::map,
    maps::{Array, LruHashMap},
    programs::SockAddrContext,
};
use shoal_common::mesh::PortKey;

use crate::{
    lb::{self, maps::SHOAL_LB_VIPS},
    mesh::maps::{SHOAL_MESH_ADDRS, SHOAL_MESH_PORTS},
};

/// The cookie of the node's network namespace (index 0), written by the agent; 0: off.
#[map]
pub static SHOAL_SOCK_NETNS: Array<u64> = Array::with_max_entries(1, 0);

/// What a balanced socket asked to connect to (`user_ip4`, `user_port` as given), by socket
/// cookie: `getpeername(2)` answers with it, so the client sees the address it used.
/// Least-recently-used entries go first (a closed socket's is never asked for again).
#[map]
pub static SHOAL_SOCK_ORIGINS: LruHashMap<u64, [u32; 2]> = LruHashMap::with_max_entries(65536, 0);

/// Whether the socket is in the node's own network namespace (the only one served).
#[inline(always)]
fn in_node_netns(ctx: &SockAddrContext) -> bool {
    let Some(&ours) = SHOAL_SOCK_NETNS.get(0) else {
        return false;
    };
    // SAFETY: a helper call on this program's own context.
    ours != 0 && ours == unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) }
}

/// `connect(2)` of an IPv4 socket: a node-local connection to a published port goes to a task.
#[inline(always)]
pub fn connect4(ctx: &SockAddrContext) {
    let addr = ctx.sock_addr;
    if !in_node_netns(ctx) {
        return;
    }
    // SAFETY: the kernel's context for this call, readable and (these two fields) writable.
    let (dst, port, protocol) = unsafe { ((*addr).user_ip4, (*addr).user_port, (*addr).protocol) };
    // 127.0.0.0/8, or an address of this node (network order as loaded).
    let loopback = dst.to_ne_bytes()[0] == 127;
    // SAFETY (map gets below): values are copied out at once.
    if !loopback && unsafe { SHOAL_MESH_ADDRS.get(&dst) }.is_none() {
        return;
    }
    let key = PortKey {
        // The port is in network order in the low 16 bits.
        port: port as u16,
        proto: protocol as u8,
        pad: 0,
    };
    let Some(published) = (unsafe { SHOAL_MESH_PORTS.get(&key) }).copied() else {
        return;
    };
    let Some(vip) = (unsafe { SHOAL_LB_VIPS.get(&published.frontend) }).copied() else {
        return;
    };
    let Some(backend) = lb::pick_backend(&vip, 0) else {
        // No task: left alone, the node refuses it as a closed port would.
        return;
    };
    // SAFETY: a helper call on this program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(addr.cast()) };
    // Without room the peer name is the task's: the connection works all the same.
    let _ = SHOAL_SOCK_ORIGINS.insert(&cookie, &[dst, port], 0);
    // SAFETY: as above.
    unsafe {
        (*addr).user_ip4 = backend.nat_ip;
        (*addr).user_port = u32::from(published.target_port);
    }
}

/// `getpeername(2)` of an IPv4 socket: a balanced one answers with the address it connected
/// to (`localhost:P`), not the task's.
#[inline(always)]
pub fn getpeername4(ctx: &SockAddrContext) {
    if !in_node_netns(ctx) {
        return;
    }
    let addr = ctx.sock_addr;
    // SAFETY: a helper call on this program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(addr.cast()) };
    // SAFETY: copied out at once.
    let Some(&[ip, port]) = (unsafe { SHOAL_SOCK_ORIGINS.get(&cookie) }) else {
        return;
    };
    // SAFETY: the kernel's context for this call, writable there.
    unsafe {
        (*addr).user_ip4 = ip;
        (*addr).user_port = port;
    }
}
