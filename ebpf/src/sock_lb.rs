//! Socket-level balancing (Cilium's socket LB): a TCP connect, a UDP connect or an unconnected
//! UDP datagram to a service address is sent to a chosen backend once, at the socket (the
//! same round robin and backend set as the tc and XDP paths: `lb::pick_backend`); the
//! connection's packets then need no NAT at all. Two kinds of sockets are served:
//!
//! - Node-local clients of published ports: a process in the node's own network namespace
//!   (its cookie, written by the agent) asking for `localhost:P`, `127.0.0.1:P` or one of the
//!   node's addresses on a published port `P` goes to `task:target`. XDP never sees such
//!   traffic: it does not come from the wire.
//! - The node's tasks asking for a VIP (any port: the port is kept, as on the tc path) go to
//!   `backend:port`, so the tc programs on their veths find nothing to NAT. Which sockets are
//!   the node's tasks': those of processes in a cgroup below the node's task subtree
//!   (`shoal-tasks/<node-id>`, its cgroup v2 ID written by the agent), found with
//!   `bpf_get_current_ancestor_cgroup_id`. Each node on a host (the tests run several) has a
//!   subtree and programs of its own, so each serves its own tasks only; the walk up the
//!   ancestors needs no level from the agent, which stays right inside a cgroup namespace or
//!   a container whose view of the hierarchy starts lower than the kernel's.
//!
//! What the socket asked for is kept by socket cookie and backend (`SHOAL_SOCK_ORIGINS`, LRU):
//! `getpeername(2)` and `recvfrom(2)` answer with it in place of the backend, as Cilium's
//! `getpeername4`/`recvmsg4` hooks do. An unconnected UDP socket's datagrams to one address
//! stay on one backend while it lives (`SHOAL_SOCK_UDP`, the tc path's UDP flow rule).
//!
//! The programs are attached to the cgroup v2 root, so they run for every socket of the host;
//! anything not ours (another namespace, another node's tasks, a service nothing serves, a
//! raw socket) is left untouched, for the tc path or the kernel.

use aya_ebpf::{
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::map,
    maps::{Array, LruHashMap},
    programs::SockAddrContext,
};
use shoal_common::{
    lb::VipService,
    sock_lb::{
        MAX_CGROUP_DEPTH, MAX_SOCK_ORIGINS, MAX_SOCK_UDP, SOCK_CONFIG_LEN, SOCK_CONFIG_NETNS,
        SOCK_CONFIG_TASK_CGROUP, SockBackend, SockOrigin, SockPeer,
    },
};

use crate::{
    lb::{self, maps::SHOAL_LB_VIPS},
    mesh::maps::{SHOAL_MESH_ADDRS, published},
};

const PROTO_TCP: u32 = 6;
const PROTO_UDP: u32 = 17;

/// The node's network namespace cookie and task cgroup ID (`SOCK_CONFIG_*`), from the agent.
#[map]
pub static SHOAL_SOCK_CONFIG: Array<u64> = Array::with_max_entries(SOCK_CONFIG_LEN, 0);

/// What a balanced socket asked for, by socket cookie and the backend it got.
#[map]
pub static SHOAL_SOCK_ORIGINS: LruHashMap<SockPeer, SockOrigin> =
    LruHashMap::with_max_entries(MAX_SOCK_ORIGINS, 0);

/// An unconnected UDP socket's backend for an address it sends to.
#[map]
pub static SHOAL_SOCK_UDP: LruHashMap<SockPeer, SockBackend> =
    LruHashMap::with_max_entries(MAX_SOCK_UDP, 0);

/// A service address the socket asked for, resolved: the VIP's service and the port its
/// backends serve on.
struct Service {
    vip: VipService,
    /// Network order.
    port: u16,
}

#[inline(always)]
fn config(index: u32) -> u64 {
    SHOAL_SOCK_CONFIG.get(index).copied().unwrap_or(0)
}

/// Whether the socket is in the node's own network namespace.
#[inline(always)]
fn in_node_netns(ctx: &SockAddrContext) -> bool {
    let ours = config(SOCK_CONFIG_NETNS);
    // SAFETY: a helper call on this program's own context.
    ours != 0 && ours == unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) }
}

/// Whether the calling process is one of the node's tasks: its cgroup (v2) is below the node's
/// task subtree.
#[inline(always)]
fn in_node_tasks() -> bool {
    let subtree = config(SOCK_CONFIG_TASK_CGROUP);
    if subtree == 0 {
        return false;
    }
    // Level 0 is the root, which is never the subtree.
    for level in 1..MAX_CGROUP_DEPTH {
        // SAFETY: a plain helper call; 0 past the process's own cgroup.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == subtree {
            return true;
        }
        if id == 0 {
            return false;
        }
    }
    false
}

/// The service behind `dst:port` (both network order) for this socket, if it is one of ours:
/// a published port asked for from the node itself, or a VIP asked for by one of its tasks.
#[inline(always)]
fn service_of(ctx: &SockAddrContext, dst: u32, port: u32, protocol: u32) -> Option<Service> {
    if in_node_netns(ctx) {
        // 127.0.0.0/8, or an address of this node.
        let loopback = dst.to_ne_bytes()[0] == 127;
        // SAFETY (map gets below): values are copied out at once.
        if !loopback && unsafe { SHOAL_MESH_ADDRS.get(&dst) }.is_none() {
            return None;
        }
        // The port is in network order in the low 16 bits.
        let published = published(port as u16, protocol as u8)?;
        let vip = unsafe { SHOAL_LB_VIPS.get(&published.frontend) }.copied()?;
        return Some(Service {
            vip,
            port: published.target_port,
        });
    }
    // The VIP first: it is what rules out nearly every socket of the host, cheaply. Most
    // addresses are known to be no VIP's from one array read (the VIP hints, as in the tc
    // programs), before the hash lookup.
    if !lb::maps::maybe_vip(dst) {
        return None;
    }
    let vip = unsafe { SHOAL_LB_VIPS.get(&dst) }.copied()?;
    if !in_node_tasks() {
        return None;
    }
    Some(Service {
        vip,
        port: port as u16,
    })
}

/// The next backend of `service` in the round robin, as where the socket goes. `None`: no
/// backend; the socket is left alone (the tc path, or the node as a closed port, refuses it).
#[inline(always)]
fn pick(service: &Service) -> Option<SockBackend> {
    let state = lb::pick_backend(&service.vip, 0)?;
    Some(SockBackend {
        ip: state.nat_ip,
        port: service.port,
        pad: 0,
        backend_id: state.backend_id,
        service_id: state.service_id,
    })
}

/// Keeps what the socket asked for, by its cookie and its backend. Without room the peer is
/// the backend's address: the traffic flows all the same.
#[inline(always)]
fn remember_origin(cookie: u64, backend: &SockBackend, dst: u32, port: u32) {
    let key = SockPeer {
        cookie,
        ip: backend.ip,
        port: backend.port,
        pad: 0,
    };
    let origin = SockOrigin {
        ip: dst,
        port: port as u16,
        pad: 0,
    };
    let _ = SHOAL_SOCK_ORIGINS.insert(&key, &origin, 0);
}

/// Sends the socket's connection or datagram to `backend`.
#[inline(always)]
fn redirect(ctx: &SockAddrContext, backend: &SockBackend) {
    // SAFETY: the kernel's context for this call; these two fields are writable in connect4
    // and sendmsg4.
    unsafe {
        (*ctx.sock_addr).user_ip4 = backend.ip;
        (*ctx.sock_addr).user_port = u32::from(backend.port);
    }
}

/// `connect(2)` of an IPv4 TCP or UDP socket: a service address goes to a backend.
#[inline(always)]
pub fn connect4(ctx: &SockAddrContext) {
    let addr = ctx.sock_addr;
    // SAFETY: the kernel's context for this call, readable.
    let (dst, port, protocol) = unsafe { ((*addr).user_ip4, (*addr).user_port, (*addr).protocol) };
    if protocol != PROTO_TCP && protocol != PROTO_UDP {
        return;
    }
    let Some(service) = service_of(ctx, dst, port, protocol) else {
        return;
    };
    let Some(backend) = pick(&service) else {
        return;
    };
    // SAFETY: a helper call on this program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(addr.cast()) };
    remember_origin(cookie, &backend, dst, port);
    redirect(ctx, &backend);
}

/// `sendmsg(2)` with an address on an IPv4 UDP socket: a datagram to a service address goes
/// to the backend this socket's datagrams to it go to, while that backend lives; else to the
/// next in the round robin.
#[inline(always)]
pub fn sendmsg4(ctx: &SockAddrContext) {
    let addr = ctx.sock_addr;
    // SAFETY: as in `connect4`.
    let (dst, port, protocol) = unsafe { ((*addr).user_ip4, (*addr).user_port, (*addr).protocol) };
    if protocol != PROTO_UDP {
        return;
    }
    let Some(service) = service_of(ctx, dst, port, protocol) else {
        return;
    };
    // SAFETY: a helper call on this program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(addr.cast()) };
    let key = SockPeer {
        cookie,
        ip: dst,
        port: port as u16,
        pad: 0,
    };
    // SAFETY: copied out at once.
    let kept = unsafe { SHOAL_SOCK_UDP.get(&key) }.copied().filter(|b| {
        b.service_id == service.vip.service_id
            && b.port == service.port
            && lb::backend_alive_at(b.backend_id, b.ip, b.service_id)
    });
    let backend = match kept {
        Some(backend) => backend,
        None => {
            let Some(backend) = pick(&service) else {
                return;
            };
            let _ = SHOAL_SOCK_UDP.insert(&key, &backend, 0);
            remember_origin(cookie, &backend, dst, port);
            backend
        }
    };
    redirect(ctx, &backend);
}

/// The origin a balanced socket keeps for the peer address in `ctx`, put in its place.
#[inline(always)]
fn restore_origin(ctx: &SockAddrContext) {
    let addr = ctx.sock_addr;
    // SAFETY: the kernel's context for this call, readable; a helper call on it.
    let (ip, port, cookie) = unsafe {
        (
            (*addr).user_ip4,
            (*addr).user_port,
            bpf_get_socket_cookie(addr.cast()),
        )
    };
    let key = SockPeer {
        cookie,
        ip,
        port: port as u16,
        pad: 0,
    };
    // SAFETY: copied out at once.
    let Some(origin) = unsafe { SHOAL_SOCK_ORIGINS.get(&key) }.copied() else {
        return;
    };
    // SAFETY: the kernel's context, writable in getpeername4 and recvmsg4.
    unsafe {
        (*addr).user_ip4 = origin.ip;
        (*addr).user_port = u32::from(origin.port);
    }
}

/// `getpeername(2)` of an IPv4 socket: a balanced one answers with the address it asked for
/// (`localhost:P`, `VIP:port`), not the backend's. Only sockets these programs balanced have
/// an entry (cookies are unique on the host), so no scope check is needed.
#[inline(always)]
pub fn getpeername4(ctx: &SockAddrContext) {
    restore_origin(ctx);
}

/// `recvmsg(2)` with an address on an IPv4 UDP socket: a datagram from a backend the socket
/// was balanced to comes from the address the socket sent to.
#[inline(always)]
pub fn recvmsg4(ctx: &SockAddrContext) {
    restore_origin(ctx);
}
